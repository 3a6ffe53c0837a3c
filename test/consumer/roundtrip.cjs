// An fd round trip between two processes with the installed fdpass, loaded
// with require(): the parent listens on a Unix socket, the child (this file
// again) connects and sends the fd of a file it opened read-only; the parent
// checks that the fd it got is that very file (dev/ino) and reads it.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { UnixSocket, UnixServer } = require('fdpass');

async function parent() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdpass-consumer-'));
  const file = path.join(dir, 'hello.txt');
  fs.writeFileSync(file, 'hello through a passed fd\n');
  const address = path.join(dir, 's.sock');
  const server = await UnixServer.listen(address);
  const child = spawn(process.execPath, [__filename, 'child', address, file], { stdio: 'inherit', timeout: 20_000 });
  const conn = await server.accept({ timeout: 20_000 });
  const msg = await conn.receive({ timeout: 20_000 });
  const fd = msg.fds[0].fd;
  const got = fs.fstatSync(fd);
  const want = fs.statSync(file);
  if (got.ino !== want.ino || got.dev !== want.dev) throw new Error('the fd is not the file the child opened');
  const text = fs.readFileSync(fd, 'utf8');
  if (text !== 'hello through a passed fd\n') throw new Error(`read ${JSON.stringify(text)}`);
  console.log(`cjs: fd ${fd} from pid ${child.pid}: ${text.trim()}`);
  msg.close();
  conn.close();
  await server.close();
  await new Promise((resolve) => child.on('exit', resolve));
  fs.rmSync(dir, { recursive: true, force: true });
  if (child.exitCode !== 0) throw new Error(`child exited ${child.exitCode ?? child.signalCode}`);
}

async function sender(address, file) {
  const sock = await UnixSocket.connect(address);
  const fd = fs.openSync(file, 'r');
  await sock.send({ data: 'one fd', fds: [fd] });
  fs.closeSync(fd);
  await sock.end();
}

(process.argv[2] === 'child' ? sender(process.argv[3], process.argv[4]) : parent()).catch((err) => {
  console.error(err);
  process.exit(1);
});
