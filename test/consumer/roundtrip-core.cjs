// An fd round trip between two processes with the installed fdpass, as
// roundtrip.cjs, .mjs and .mts run it with the module they loaded: the
// parent listens on a Unix socket, the child (the same script, argument
// 'child') connects and sends the fd of a file it opened read-only; the
// parent checks that the fd it got is that very file (dev/ino) and reads it.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');

const TEXT = 'hello through a passed fd\n';

/** `fdpass`: the loaded module; `script`: the file to run as the child;
 * `receive(conn)`: how the parent takes the one message. */
async function roundTrip(fdpass, name, script, receive = (conn) => conn.receive({ timeout: 20_000 })) {
  if (process.argv[2] === 'child') return send(fdpass, process.argv[3], process.argv[4]);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdpass-consumer-'));
  const file = path.join(dir, 'hello.txt');
  fs.writeFileSync(file, TEXT);
  const address = path.join(dir, 's.sock');
  const server = await fdpass.UnixServer.listen(address);
  const child = spawn(process.execPath, [script, 'child', address, file], { stdio: 'inherit', timeout: 20_000 });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const conn = await server.accept({ timeout: 20_000 });
  const msg = await receive(conn);
  const fd = msg.fds[0].fd;
  const got = fs.fstatSync(fd);
  const want = fs.statSync(file);
  if (got.ino !== want.ino || got.dev !== want.dev) throw new Error('the fd is not the file the child opened');
  const text = fs.readFileSync(fd, 'utf8');
  if (text !== TEXT) throw new Error(`read ${JSON.stringify(text)}`);
  console.log(`${name}: fd ${fd} from pid ${child.pid}: ${text.trim()}`);
  msg.close();
  conn.close();
  await server.close();
  await exited;
  fs.rmSync(dir, { recursive: true, force: true });
  if (child.exitCode !== 0) throw new Error(`child exited ${child.exitCode ?? child.signalCode}`);
}

async function send(fdpass, address, file) {
  const sock = await fdpass.UnixSocket.connect(address);
  const fd = fs.openSync(file, 'r');
  try {
    await sock.send({ data: 'one fd', fds: [fd] });
  } finally {
    fs.closeSync(fd);
  }
  await sock.end();
}

module.exports = { roundTrip };
