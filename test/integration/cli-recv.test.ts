/**
 * `fdpass recv` against peers that send what it cannot use: no fd and no
 * peer may end or hang the receiver.
 * - --read of an O_PATH fd or a write-only fd: that fd's entry says
 *   readError EBADF, the others are read, recv exits 0;
 * - --write through the write end of a full pipe that nobody reads: the
 *   write gives up after its deadline (writeError ETIMEDOUT), recv exits 0
 *   promptly, and the sender's copy of the pipe is left blocking;
 * - --listen --count N: a peer that breaks the framing is reported on
 *   stderr and the next peer is served.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { test } from 'node:test';
import { UnixSocket } from '../../src';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { CLI } from '../helpers/paths';
import { Child } from '../helpers/process';
import { nextEvent } from '../helpers/wait';

/** Linux's O_PATH (fs.constants lacks it). */
const O_PATH = 0o10000000;

interface FdEntry { fd: number; kind: string; target: string; read?: string | null; readError?: string; wrote?: number; writeError?: string }
interface Line { data: string; fds: FdEntry[] }

/** `fdpass recv ARGS`, up once it says it listens; killed after 15 s. */
async function startRecv(scope: Parameters<typeof tmpDir>[0], args: string[]): Promise<Child> {
  const recv = new Child([process.execPath, CLI, 'recv', ...args], { owner: scope, timeout: 15_000, env: process.env, label: `fdpass recv ${args.join(' ')}` });
  await recv.waitOutput(/listening on/, { stream: 'stderr' });
  return recv;
}

const lines = (stdout: string) => stdout.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as Line);

test('recv --read: an O_PATH fd and a write-only fd get readError EBADF in their entries; the other fds are read and recv exits 0', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const sockPath = path.join(dir, 'r.sock');
  const file = path.join(dir, 'f.txt');
  fs.writeFileSync(file, 'readable\n');
  const recv = await startRecv(scope, ['--listen', sockPath, '--read']);

  const fds = [fs.openSync(file, O_PATH), fs.openSync(file, 'w'), fs.openSync(file, 'r')];
  scope.defer(() => fds.forEach((fd) => fs.closeSync(fd)));
  fs.writeFileSync(file, 'readable\n'); // opening it 'w' emptied it
  const sock = await UnixSocket.connect(sockPath);
  scope.defer(() => sock.close());
  await sock.send({ data: 'three', fds });
  const r = await recv.waitExit();
  assert.equal(r.code, 0, r.stderr);
  const [m] = lines(r.stdout);
  assert.equal(m!.data, 'three');
  assert.deepEqual(m!.fds.map((f) => [f.kind, f.target, f.read, f.readError]), [
    ['file', file, undefined, 'EBADF'],
    ['file', file, undefined, 'EBADF'],
    ['file', file, 'readable\n', undefined],
  ]);
  t.diagnostic(`recv: ${r.stdout.trim()}`);
});

/** A Python peer that fills a pipe, then sends its write end (blocking
 * again) and keeps the read end open without reading. */
const FULL_PIPE_PEER = `
import fcntl, os, socket, sys
r, w = os.pipe()
os.set_blocking(w, False)
n = 0
try:
    while True:
        n += os.write(w, b'x' * 65536)
except BlockingIOError:
    pass
os.set_blocking(w, True)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
socket.send_fds(s, [b'P'], [w])
print(n, flush=True)
sys.stdin.read()  # hold the read end until the test ends
print('blocking' if os.get_blocking(w) else 'nonblocking', flush=True)
`;

test('recv --write through a full pipe that nobody reads: gives up after its deadline (writeError ETIMEDOUT) instead of blocking for ever; the sender\'s pipe stays blocking', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const sockPath = path.join(dir, 'w.sock');
  const recv = await startRecv(scope, ['--listen', sockPath, '--raw', '--write', 'W']);
  const peer = new Child(['python3', '-c', FULL_PIPE_PEER, sockPath], { owner: scope, stdin: 'pipe', timeout: 20_000, env: process.env, label: 'full-pipe peer' });
  await peer.waitOutput(/^\d+$/m, { stream: 'stdout' });
  const t0 = Date.now();
  const r = await recv.waitExit();
  const ms = Date.now() - t0;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.signal, null, 'recv finished by itself, it was not killed by the test timeout');
  const [m] = lines(r.stdout);
  assert.equal(m!.fds.length, 1);
  assert.equal(m!.fds[0]!.kind, 'pipe');
  assert.equal(m!.fds[0]!.writeError, 'ETIMEDOUT');
  assert.equal(m!.fds[0]!.wrote, undefined, 'nothing went into the full pipe');
  assert.ok(ms < 5000, `recv took ${ms} ms`);
  peer.process.stdin!.end();
  const p = await peer.waitExit();
  assert.match(p.stdout, /^blocking$/m, 'the shared open file description is blocking again, as the sender left it');
  t.diagnostic(`pipe filled with ${p.stdout.split('\n')[0]} bytes; recv answered in ${ms} ms: ${r.stdout.trim()}`);
});

test('recv --listen --count 2: a peer that breaks the framing is reported on stderr, and the next peer is served', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const sockPath = path.join(dir, 'p.sock');
  const recv = await startRecv(scope, ['--listen', sockPath, '--count', '2']);

  // Not a frame: a bad magic byte.
  const bad = net.connect(sockPath);
  bad.on('error', () => {}); // recv cuts it off
  scope.defer(() => bad.destroy());
  await nextEvent(bad, 'connect');
  bad.write(Buffer.alloc(16, 0xff));
  await recv.waitOutput(/FDPASS_ERR_PROTOCOL/, { stream: 'stderr' });

  for (const data of ['one', 'two']) {
    const good = await UnixSocket.connect(sockPath);
    await good.send(data);
    await good.end();
  }
  const r = await recv.waitExit();
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(lines(r.stdout).map((m) => m.data), ['one', 'two']);
  const errors = r.stderr.split('\n').filter((l) => l.startsWith('fdpass: peer'));
  assert.equal(errors.length, 1, r.stderr);
  assert.match(errors[0]!, /^fdpass: peer pid \d+ uid \d+: .+: FDPASS_ERR_PROTOCOL$/);
  t.diagnostic(errors[0]!);
});
