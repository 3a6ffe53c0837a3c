/**
 * Message boundaries under load: many pipelined messages of varied sizes and
 * fd counts keep their own fds, and a slow reader pushes back on the sender
 * without unbounded queueing.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { UnixSocket, MAX_FDS, type Message, type SocketType } from '../../src';
import { trackFds } from '../helpers/scope';
import { tmpDir, fileId, openFiles } from '../helpers/files';
import { spawnNode } from '../helpers/process';

const MiB = 1024 * 1024;
const FD_COUNTS = [0, 1, 2, 0, 3, MAX_FDS, 1, 0, 7, 64, 0, 2, 1, 128, 0, 5, 31];

function payload(seq: number, size: number): Buffer {
  const b = Buffer.alloc(size, (seq * 31 + 7) & 0xff);
  if (size >= 4) b.writeUInt32LE(seq, 0);
  return b;
}

async function pipelined(t: { after(fn: () => unknown): void }, type: SocketType, sizes: number[], count: number): Promise<void> {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const POOL = 300;
  const files = openFiles(dir, POOL, scope);
  const maxSize = Math.max(...sizes);
  const [a, b] = UnixSocket.pair({ type, maxMessageSize: type === 'stream' ? undefined : maxSize });
  scope.defer(() => a.close());
  scope.defer(() => b.close());

  // Message i carries a run of distinct pool files starting at a moving
  // offset, so neighbouring messages carry different files in different
  // positions: a fd handed to the wrong message shows up by its inode.
  const expected: { size: number; ids: string[] }[] = [];
  const sends: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const nfds = FD_COUNTS[i % FD_COUNTS.length]!;
    const size = sizes[(i * 7) % sizes.length]!;
    const start = (i * 37) % POOL;
    const idx = Array.from({ length: nfds }, (_, k) => (start + k) % POOL);
    expected.push({ size, ids: idx.map((k) => files.ids[k]!) });
    sends.push(a.send({ data: payload(i, size), fds: idx.map((k) => files.fds[k]!) }));
  }
  assert.ok(a.pendingSends > 0, 'the kernel took everything at once: this test did not pipeline');

  const settled: number[] = [];
  sends.forEach((p, i) => void p.then(() => settled.push(i)));
  let i = 0;
  const check = (m: Message) => {
    try {
      const want = expected[i]!;
      assert.equal(m.data.length, want.size, `size of message ${i}`);
      assert.ok(m.data.equals(payload(i, want.size)), `payload of message ${i}`);
      assert.deepEqual(m.fds.map((f) => fileId(f.fd)), want.ids, `fds of message ${i}`);
    } finally {
      m.close();
    }
    i++;
  };
  for await (const m of b) {
    check(m);
    if (i === count) break;
  }
  await Promise.all(sends);
  assert.equal(a.pendingSends, 0);
  assert.deepEqual(settled, Array.from({ length: count }, (_, k) => k), 'sends settle in order');
  await assert.rejects(b.receive({ timeout: 20 }), { code: 'FDPASS_ERR_TIMEOUT' });
}

test('framed stream: pipelined messages of 0 B to 1 MiB with 0..253 fds each keep their own fds', (t) =>
  pipelined(t, 'stream', [1, 0, 17, MiB, 8, 4096, 1, 65535, 65537, 200_000, 3, MiB, 2], 250));

test('seqpacket: pipelined messages with 0..253 fds each keep their own fds', (t) =>
  pipelined(t, 'seqpacket', [1, 0, 17, 100_000, 8, 4096, 1, 65535, 65537, 3, 2], 250));

test('framed stream: 1-byte messages each with one fd, 2000 pipelined', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const files = openFiles(dir, 5, scope);
  const [a, b] = UnixSocket.pair();
  scope.defer(() => a.close());
  scope.defer(() => b.close());
  const N = 2000;
  const sends: Promise<void>[] = [];
  for (let i = 0; i < N; i++) sends.push(a.send({ data: Buffer.of(i & 0xff), fds: [files.fds[i % 5]!] }));
  let i = 0;
  for await (const m of b) {
    assert.equal(m.data.length, 1);
    assert.equal(m.data[0], i & 0xff);
    assert.equal(m.fds.length, 1);
    assert.equal(fileId(m.fds[0]!.fd), files.ids[i % 5]);
    m.close();
    if (++i === N) break;
  }
  await Promise.all(sends);
});

test('backpressure: 60k messages to a slow reader in a child: bounded queue, in order, sends settle in order', { timeout: 60_000 }, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const files = openFiles(dir, 1, scope);
  const WINDOWED = 50_000;
  const UNBOUNDED = 10_000;
  const TOTAL = WINDOWED + UNBOUNDED;
  const [mine, theirs] = UnixSocket.pair();
  scope.defer(() => mine.close());
  const child = spawnNode('socket-peer.js', ['slow-reader', JSON.stringify({ count: TOTAL, pauseEvery: 4000, pauseMs: 25 })], {
    fds: [theirs.fd], owner: scope, timeout: 50_000,
  });
  theirs.close();

  let sent = 0;
  let settled = 0;
  let outOfOrder = 0;
  let maxPending = 0;
  const body = Buffer.alloc(20, 0x5a);
  const send = (): Promise<void> => {
    const seq = sent++;
    body.writeUInt32LE(seq, 0);
    const p = mine.send({ data: body, fds: seq % 1000 === 0 ? files.fds : undefined });
    void p.then(() => {
      if (seq !== settled) outOfOrder++;
      settled++;
    });
    // The queue only ever holds messages whose promises are still pending.
    assert.ok(mine.pendingSends <= sent - settled, `pendingSends ${mine.pendingSends} > outstanding ${sent - settled}`);
    maxPending = Math.max(maxPending, mine.pendingSends);
    return p;
  };

  // A sender that waits once 256 messages are queued keeps the queue at 256.
  const WINDOW = 256;
  for (let i = 0; i < WINDOWED; i++) {
    const p = send();
    if (mine.pendingSends >= WINDOW) {
      await p;
      assert.equal(mine.pendingSends, 0);
    }
  }
  assert.ok(maxPending > 0, 'the reader never pushed back');
  assert.ok(maxPending <= WINDOW, `pendingSends reached ${maxPending}`);

  // A sender that never waits: the queue grows, and empties as sends settle.
  const rest: Promise<void>[] = [];
  for (let i = 0; i < UNBOUNDED; i++) rest.push(send());
  await Promise.all(rest);
  assert.equal(mine.pendingSends, 0);
  assert.equal(settled, TOTAL);
  assert.equal(outOfOrder, 0, 'sends settled out of order');

  assert.deepEqual(await child.next(), { received: TOTAL, fds: TOTAL / 1000 });
  await child.done();
});

test('queued sends borrow their fds until they settle; closing one early rejects that send alone', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const [a, b] = UnixSocket.pair();
  scope.defer(() => a.close());
  scope.defer(() => b.close());
  // Fill the socket so that the messages below are queued, not sent.
  const first = a.send(Buffer.alloc(MiB));
  assert.ok(a.pendingSends > 0);
  const sets = Array.from({ length: 20 }, (_, i) => openFiles(dir, 1, scope, `q${i}-`));
  const sends = sets.map((set, i) => {
    const p = a.send({ data: `m${i}`, fds: set.fds });
    // The caller gives its fd back once the send has settled.
    void p.then(() => set.close(), () => {});
    return p;
  });
  assert.equal(a.pendingSends, 21);
  // Misuse: one fd closed while its send is still queued. The library cannot
  // send a closed fd; it rejects that message and carries on with the rest.
  const bad = openFiles(dir, 1, undefined, 'bad');
  const badSend = a.send({ data: 'bad', fds: bad.fds });
  badSend.catch(() => {}); // checked below, once the others are through
  const late = openFiles(dir, 1, scope, 'late');
  const lateSend = a.send({ data: 'late', fds: late.fds });
  bad.close();

  assert.equal((await b.receive({ timeout: 5000 })).data.length, MiB);
  for (let i = 0; i < 20; i++) {
    const m = await b.receive({ timeout: 5000 });
    assert.equal(m.text(), `m${i}`);
    assert.deepEqual(m.fds.map((f) => fileId(f.fd)), sets[i]!.ids);
    m.close();
  }
  await Promise.all([first, ...sends]);
  await assert.rejects(badSend, { name: 'TypeError', code: 'FDPASS_ERR_INVALID_FD' });
  const m = await b.receive({ timeout: 5000 });
  assert.equal(m.text(), 'late');
  assert.deepEqual(m.fds.map((f) => fileId(f.fd)), late.ids);
  m.close();
  await lateSend;
});
