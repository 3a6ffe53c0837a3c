// Baseline for the serve benchmark: WORKERS independent processes, each
// listening on the same port with SO_REUSEPORT (net.Server's `reusePort`,
// Node >= 22.12), the kernel spreading connections by hash; no primary on the
// data path. usage: node reuseport-server.js PORT WORKERS
// (a child: node reuseport-server.js PORT --child)
const http = require('node:http');
const { fork } = require('node:child_process');
const [port, arg] = process.argv.slice(2);
if (arg === '--child') {
  http.createServer(require('./hello-app')).listen({ port: Number(port), host: '127.0.0.1', reusePort: true }, () => process.send('up'));
} else {
  const kids = [];
  let up = 0;
  for (let i = 0; i < Number(arg); i++) {
    const c = fork(__filename, [port, '--child']);
    c.on('message', () => {
      if (++up === Number(arg)) console.log(JSON.stringify({ ready: true, pid: process.pid }));
    });
    c.on('exit', (code) => {
      if (up < Number(arg)) {
        console.error(`reusePort child exited with ${code}`);
        process.exit(1);
      }
    });
    kids.push(c);
  }
  process.on('SIGTERM', () => {
    for (const c of kids) c.kill();
    process.exit(0);
  });
}
