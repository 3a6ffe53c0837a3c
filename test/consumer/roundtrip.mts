// roundtrip.cjs's fd round trip in TypeScript (strict, ES module), compiled
// with the TypeScript that fdpass pins against the installed package's
// declarations (skipLibCheck off): the message comes through a typed
// 'message' listener.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { UnixSocket, UnixServer, type Message, type FdpassError } from 'fdpass';

async function parent(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdpass-consumer-'));
  const file = path.join(dir, 'hello.txt');
  fs.writeFileSync(file, 'hello through a passed fd\n');
  const address = path.join(dir, 's.sock');
  const server = await UnixServer.listen(address);
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'child', address, file], { stdio: 'inherit', timeout: 20_000 });
  const conn: UnixSocket = await server.accept({ timeout: 20_000 });
  const msg = await new Promise<Message>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message within 20 s')), 20_000);
    conn.once('message', (m: Message) => {
      clearTimeout(timer);
      resolve(m);
    });
  });
  const fd = msg.fds[0]!.fd;
  const got = fs.fstatSync(fd);
  const want = fs.statSync(file);
  if (got.ino !== want.ino || got.dev !== want.dev) throw new Error('the fd is not the file the child opened');
  const text = fs.readFileSync(fd, 'utf8');
  if (text !== 'hello through a passed fd\n') throw new Error(`read ${JSON.stringify(text)}`);
  console.log(`typescript: fd ${fd} from pid ${child.pid}: ${text.trim()}`);
  msg.close();
  conn.close();
  await server.close();
  await new Promise((resolve) => child.on('exit', resolve));
  fs.rmSync(dir, { recursive: true, force: true });
  if (child.exitCode !== 0) throw new Error(`child exited ${child.exitCode ?? child.signalCode}`);
}

async function sender(address: string, file: string): Promise<void> {
  const sock = await UnixSocket.connect(address);
  const fd = fs.openSync(file, 'r');
  try {
    await sock.send({ data: 'one fd', fds: [fd] });
  } catch (err) {
    const code: FdpassError['code'] | string | undefined = (err as { code?: string }).code;
    throw new Error(`send failed: ${code}`, { cause: err });
  } finally {
    fs.closeSync(fd);
  }
  await sock.end();
}

await (process.argv[2] === 'child' ? sender(process.argv[3]!, process.argv[4]!) : parent());
