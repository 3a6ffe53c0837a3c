// roundtrip.cjs's fd round trip, with fdpass loaded by `import` (the
// package's ES module entry).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { UnixSocket, UnixServer } from 'fdpass';

async function parent() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdpass-consumer-'));
  const file = path.join(dir, 'hello.txt');
  fs.writeFileSync(file, 'hello through a passed fd\n');
  const address = path.join(dir, 's.sock');
  const server = await UnixServer.listen(address);
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'child', address, file], { stdio: 'inherit', timeout: 20_000 });
  const conn = await server.accept({ timeout: 20_000 });
  const msg = await conn.receive({ timeout: 20_000 });
  const fd = msg.fds[0].fd;
  const got = fs.fstatSync(fd);
  const want = fs.statSync(file);
  if (got.ino !== want.ino || got.dev !== want.dev) throw new Error('the fd is not the file the child opened');
  const text = fs.readFileSync(fd, 'utf8');
  if (text !== 'hello through a passed fd\n') throw new Error(`read ${JSON.stringify(text)}`);
  console.log(`esm: fd ${fd} from pid ${child.pid}: ${text.trim()}`);
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

await (process.argv[2] === 'child' ? sender(process.argv[3], process.argv[4]) : parent());
