/**
 * Interop with programs that do not use fdpass: C programs doing the seed
 * articles' sendmsg/recvmsg (compiled here with cc), and Python's
 * socket.send_fds/recv_fds. Each direction, each socket type, through the
 * fdpass CLI (--raw) and through the library. fds are checked by identity:
 * the peer reports fstat dev/ino, we compare with the files we opened.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { before, test } from 'node:test';
import { UnixSocket, UnixServer, type SocketType } from '../../src';
import { trackFds } from '../helpers/scope';
import { tmpDir, fileId } from '../helpers/files';
import { FIXTURES, CLI } from '../helpers/paths';
import { Child, runCli } from '../helpers/process';

const PY = path.join(FIXTURES, 'py', 'peer.py');
const TYPES: SocketType[] = ['stream', 'seqpacket', 'dgram'];
let bin: string;

before(() => {
  bin = fs.mkdtempSync('/tmp/fdpass-cc-');
  for (const name of ['seed-socketpair', 'fd-peer']) {
    execFileSync('cc', ['-O2', '-Wall', '-o', path.join(bin, name), path.join(FIXTURES, 'c', `${name}.c`)], { stdio: 'inherit' });
  }
  process.on('exit', () => fs.rmSync(bin, { recursive: true, force: true }));
});

interface Proc {
  child: Child;
  /** Resolves with every stdout line parsed as JSON, once the process exits 0. */
  lines: Promise<Record<string, unknown>[]>;
  /** Resolves once the process has said it is listening. */
  ready: () => Promise<void>;
}

/** Runs a peer (killed after 15 s); it says it is listening with `listening` on `stream`. */
function run(cmd: string, args: string[], stream: 'stdout' | 'stderr', listening: RegExp): Proc {
  const child = new Child([cmd, ...args], { timeout: 15_000, env: process.env, label: `${path.basename(cmd)} ${args.join(' ')}` });
  const lines = child.exited.then((r) => {
    if (r.code !== 0) throw new Error(`${child.label} exited ${r.code ?? r.signal}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    return r.stdout.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as Record<string, unknown>);
  });
  return { child, lines, ready: () => child.waitOutput(listening, { stream }) };
}

const node = (args: string[]) => run(process.execPath, [CLI, ...args], 'stderr', /listening on/);
const c = (args: string[]) => run(path.join(bin, 'fd-peer'), args, 'stdout', /"listening"/);
const py = (args: string[]) => run('python3', [PY, ...args], 'stdout', /"listening"/);

function makeFiles(dir: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => {
    const f = path.join(dir, `file${i}.txt`);
    fs.writeFileSync(f, `content of file ${i}\n`);
    return f;
  });
}

type Fds = { fd: number; dev?: number; ino?: number; read?: string | null; target?: string; kind?: string }[];
const messages = (lines: Record<string, unknown>[]) => lines.filter((l) => 'data' in l) as { data: string; fds: Fds }[];

test('seed 1: socketpair + fork in C, the child writes through the passed fd', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const file = path.join(dir, 'example.txt');
  execFileSync(path.join(bin, 'seed-socketpair'), [file]);
  assert.equal(fs.readFileSync(file, 'utf8'), 'Hello from child\n');
});

for (const type of TYPES) {
  for (const [peerName, peer] of [['C', c], ['Python', py]] as const) {
    test(`${type}: ${peerName} sends 4 fds (raw) -> fdpass recv --raw --read`, async (t) => {
      const scope = await trackFds(t);
      const dir = tmpDir(scope);
      const sock = path.join(dir, 's');
      const files = makeFiles(dir, 4);
      const recv = node(['recv', '--listen', sock, '--type', type, '--raw', '--read']);
      await recv.ready();
      const send = peer(['send', '--connect', sock, '--type', type, '--data', 'X', ...files]);
      await send.lines;
      const [m] = messages(await recv.lines);
      assert.equal(m!.data, 'X');
      assert.deepEqual(m!.fds.map((f) => f.target), files);
      assert.deepEqual(m!.fds.map((f) => f.read), files.map((_, i) => `content of file ${i}\n`));
      assert.ok(m!.fds.every((f) => f.kind === 'file'));
    });

    test(`${type}: fdpass send --raw 4 fds -> ${peerName} receives the same files`, async (t) => {
      const scope = await trackFds(t);
      const dir = tmpDir(scope);
      const sock = path.join(dir, 's');
      const files = makeFiles(dir, 4);
      const recv = peer(['recv', '--listen', sock, '--type', type, '--read']);
      await recv.ready();
      await node(['send', '--connect', sock, '--type', type, '--raw', '--data', 'X', ...files]).lines;
      const [m] = messages(await recv.lines);
      assert.equal(m!.data, 'X');
      assert.deepEqual(m!.fds.map((f) => `${f.dev}:${f.ino}`), files.map((f) => fileId(f)));
      assert.deepEqual(m!.fds.map((f) => f.read), files.map((_, i) => `content of file ${i}\n`));
    });
  }
}

test('library <-> C, both directions, one connection: a server in Node, fd-peer connecting', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const sock = path.join(dir, 'lib.sock');
  const files = makeFiles(dir, 2);
  // C sends to the library.
  const server = await UnixServer.listen(sock, { type: 'seqpacket' });
  scope.defer(() => server.close());
  const send = c(['send', '--connect', sock, '--type', 'seqpacket', '--data', 'hi', ...files]);
  const conn = await server.accept({ timeout: 10_000 });
  scope.defer(() => conn.close());
  const msg = await conn.receive({ timeout: 10_000 });
  assert.equal(msg.text(), 'hi');
  assert.deepEqual(msg.fds.map((f) => fileId(f.fd)), files.map((f) => fileId(f)));
  msg.close();
  await send.lines;

  // The library sends to C, over a named DGRAM socket.
  const dsock = path.join(dir, 'c.dgram');
  const recv = c(['recv', '--listen', dsock, '--type', 'dgram']);
  await recv.ready();
  const d = await UnixSocket.datagram();
  scope.defer(() => d.close());
  const fds = files.map((f) => fs.openSync(f, 'r'));
  await d.send({ data: '', fds, to: dsock });
  for (const fd of fds) fs.closeSync(fd);
  const [m] = messages(await recv.lines);
  assert.equal(m!.data, '');
  assert.deepEqual(m!.fds.map((f) => `${f.dev}:${f.ino}`), files.map((f) => fileId(f)));
});

test('fdpass CLI to fdpass CLI (framed): credentials, --write, abstract address, several peers', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const files = makeFiles(dir, 3);
  const name = `@fdpass-test-${process.pid}-${Date.now()}`;
  const recv = node(['recv', '--listen', name, '--count', '2', '--write', 'W', '--read']);
  await recv.ready();
  // --write: recv --write writes through the fds, which send opens read-only by default.
  const s1 = node(['send', '--connect', name, '--data', 'one', '--credentials', '--write', files[0]!]);
  const [sent] = await s1.lines;
  assert.deepEqual((sent as { sent: { files: string[] } }).sent.files, [files[0]]);
  await node(['send', '--connect', name, '--data', 'two', '--write', files[1]!, files[2]!]).lines;
  const [m1, m2] = messages(await recv.lines) as (ReturnType<typeof messages>[number] & { credentials?: { pid: number; uid: number } })[];
  assert.equal(m1!.data, 'one');
  assert.equal(m1!.credentials!.pid, s1.child.pid);
  assert.equal(m1!.credentials!.uid, process.getuid!());
  assert.equal(m2!.data, 'two');
  assert.equal(m2!.credentials, undefined); // not attached by the sender
  assert.equal(m2!.fds.length, 2);
  // --write went through the received fds into the very files.
  assert.equal(fs.readFileSync(files[0]!, 'utf8').startsWith('W'), true);
  assert.equal(m1!.fds[0]!.read, fs.readFileSync(files[0]!, 'utf8'));
});

test('CLI errors: one line on stderr, fdpass: <what failed>: <code>, non-zero exit', async () => {
  const cases: [string[], RegExp, number][] = [
    [['send', '--connect', '/nonexistent/dir/s.sock', '/etc/hostname'], /^fdpass: connect \/nonexistent\/dir\/s\.sock: ENOENT\n$/, 1],
    [['send', '--connect', '/tmp/x', '/nonexistent/dir/file'], /^fdpass: open \/nonexistent\/dir\/file: ENOENT\n$/, 1],
    [['recv', '--listen', '/' + 'a'.repeat(120)], /^fdpass: .*: FDPASS_ERR_PATH_TOO_LONG\n$/, 1],
    [['recv', '--connect', '/tmp/x', '--type', 'bogus'], /^fdpass: --type must be .*: EUSAGE\n/, 2],
    [['send', '--connect', '/tmp/x'], /^fdpass: name at least one FILE to send: EUSAGE\n/, 2],
    [['frobnicate'], /^fdpass: unknown command 'frobnicate': EUSAGE\n/, 2],
  ];
  for (const [args, re, code] of cases) {
    const { code: status, stderr: err } = await runCli(args);
    assert.equal(status, code, `${args.join(' ')}: ${err}`);
    assert.match(err, re, args.join(' '));
  }
});
