/**
 * Baseline: Node's own fd passing, subprocess.send(message, handle). The
 * parent sends one handle per message, either a listening net.Server (the
 * faster case) or a connected net.Socket (keepOpen, so the same connection
 * goes again and again); the child receives each as a new object and closes
 * it. Node waits for the child's ACK of each handle before the next.
 * usage: node child-send.js server|socket [N]
 * Prints {"mode":"child.send","handle":...,"handles_per_s":...}.
 */
import * as net from 'node:net';
import { fork } from 'node:child_process';

const KIND = process.argv[2] === 'child' ? process.argv[4] : process.argv[2] ?? 'server';
const N = Number(process.argv[3] ?? 10000);

async function parent(): Promise<void> {
  const server = net.createServer(() => {});
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const port = (server.address() as net.AddressInfo).port;
  const sock = net.connect(port, '127.0.0.1');
  await new Promise((res) => sock.on('connect', res));
  const handle: net.Socket | net.Server = KIND === 'socket' ? sock : server;
  const c = fork(__filename, ['child', String(N), KIND!], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  await new Promise((res) => c.once('message', res)); // ready
  const t0 = process.hrtime.bigint();
  const done = new Promise<void>((res) => c.once('message', () => res()));
  // child.send queues internally and waits for each handle's ACK itself.
  for (let i = 0; i < N; i++) c.send('h', handle, { keepOpen: true });
  await done;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  c.kill();
  sock.destroy();
  server.close();
  console.log(JSON.stringify({ mode: 'child.send', handle: KIND, count: N, seconds: s, handles_per_s: N / s }));
}

function child(): void {
  let n = 0;
  process.on('message', (_m, handle: net.Socket | net.Server) => {
    if (handle instanceof net.Server) handle.close();
    else handle.destroy();
    if (++n === N) process.send!('done');
  });
  process.send!('ready');
}

if (process.argv[2] === 'child') child();
else parent().catch((err) => {
  console.error(err);
  process.exit(1);
});
