// node examples/pass-fd.js: the README's ten lines, runnable.
const { UnixSocket } = require('..');
const fs = require('node:fs');

async function main() {
  const [parent, child] = UnixSocket.pair({ type: 'seqpacket' });
  const fd = fs.openSync('/tmp/fdpass-example.txt', 'w');
  await parent.send({ data: 'FD', fds: [fd] }); // settles when the kernel has it
  fs.closeSync(fd);                              // ours to close; the receiver has its own
  const msg = await child.receive();             // msg.fds: owned Fd objects
  fs.writeSync(msg.fds[0].fd, 'Hello from the other side\n');
  msg.close();                                   // closes the received fd
  parent.close(); child.close();
  console.log(fs.readFileSync('/tmp/fdpass-example.txt', 'utf8').trim());
}
main();
