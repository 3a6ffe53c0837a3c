// node examples/file-opener.js FILE
//
// Privilege separation with a channel: a child process opens files on
// request and answers with the open fd (nginx's channel idea, generalised).
// The parent never opens the file itself; it reads through the fd it got.
const { Channel, withFds } = require('..');
const fs = require('node:fs');

if (process.argv[2] === '--opener') {
  // The child: adopts the channel its parent gave it on fd 3.
  const ch = Channel.fromParent();
  ch.handle('open', ({ path }) => withFds({ opener: process.pid }, [fs.openSync(path, 'r')], { transfer: true }));
  ch.on('close', () => process.exit(0));
} else {
  const file = process.argv[2] ?? __filename;
  const { channel } = Channel.spawn(process.execPath, [__filename, '--opener']);
  channel
    .request('open', { path: file }, { timeout: 5000 })
    .then((reply) => {
      const [fd] = reply.fds;
      const head = Buffer.alloc(80);
      const n = fs.readSync(fd.fd, head, 0, head.length, 0);
      console.log(`pid ${reply.payload.opener} opened ${file}; we read through fd ${fd.fd}: ${JSON.stringify(head.toString('utf8', 0, n))}`);
      reply.message.close(); // closes the fd
      channel.close();
    })
    .catch((err) => {
      console.error(err);
      channel.close();
      process.exitCode = 1;
    });
}
