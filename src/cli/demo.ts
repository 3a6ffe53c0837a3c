/**
 * `fdpass demo` (what `npm start` runs until the dispatch server lands): the
 * seed articles' scenarios, live, narrated on stdout.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { UnixSocket } from '../socket/socket';
import { UnixServer } from '../socket/server';

export async function demo(_args: string[]): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fdpass-demo-'));
  const say = (s: string) => process.stdout.write(s + '\n');
  try {
    // 1. socketpair: the parent passes a file's fd to a child, which writes through it.
    const file = path.join(dir, 'example.txt');
    const [mine, theirs] = UnixSocket.pair({ type: 'seqpacket' });
    const child = spawn(process.execPath, ['-e', CHILD], { stdio: ['ignore', 'inherit', 'inherit', theirs.fd] });
    theirs.close();
    const fd = fs.openSync(file, 'w');
    await mine.send({ data: 'FD', fds: [fd] });
    fs.closeSync(fd); // the child's copy stays open
    await new Promise((res) => child.on('exit', res));
    mine.close();
    say(`1. socketpair: parent ${process.pid} sent fd ${fd} of ${file}; child wrote: ${JSON.stringify(fs.readFileSync(file, 'utf8'))}`);

    // 2. named DGRAM socket between two sockets (as unrelated processes would).
    const dpath = path.join(dir, 'process_a');
    const a = await UnixSocket.datagram({ bind: dpath });
    const b = await UnixSocket.datagram();
    const f2 = fs.openSync(file, 'r');
    await b.send({ fds: [f2], to: dpath });
    fs.closeSync(f2);
    {
      using m = await a.receive();
      say(`2. dgram ${dpath}: zero-byte datagram carried fd -> received as fd ${m.fds[0]!.fd} (${m.fds[0]!.target()})`);
    }
    a.close();
    b.close();

    // 3. named STREAM socket: one message with an array of 4 fds.
    const spath = path.join(dir, 'my_socket');
    const server = await UnixServer.listen(spath);
    const client = await UnixSocket.connect(spath);
    const conn = await server.accept();
    const names = ['example.txt', 'log1.txt', 'log2.txt', 'log3.txt'];
    const fds = names.map((n) => fs.openSync(path.join(dir, n), 'a+'));
    await conn.send({ data: 'X', fds });
    for (const n of fds) fs.closeSync(n);
    {
      using m = await client.receive();
      say(`3. stream ${spath}: ${m.fds.length} fds in one message -> ${m.fds.map((f) => `${f.fd}:${path.basename(f.target())}`).join(' ')}`);
      say(`   credentials of the peer (SO_PEERCRED): ${JSON.stringify(client.peerCredentials())}`);
    }
    client.close();
    conn.close();
    await server.close();
    say('Run `fdpass recv --listen /tmp/x.sock --read` and `fdpass send --connect /tmp/x.sock FILE` to try it yourself.');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const CHILD = `
const { UnixSocket } = require(${JSON.stringify(path.join(__dirname, '..', 'index.js'))});
const fs = require('fs');
const s = UnixSocket.fromFd(3);
s.receive().then((m) => {
  const f = m.fds[0];
  fs.writeSync(f.fd, 'Hello from child ' + process.pid + '\\n');
  m.close();
  s.close();
});
`;
