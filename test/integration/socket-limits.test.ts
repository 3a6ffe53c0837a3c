/**
 * RLIMIT_NOFILE on either side of a socket.
 *
 * - MSG_CTRUNC: a receiver at its limit gets a message with more fds than it
 *   has room for. The kernel installs what fits, closes the rest and flags
 *   the message; fdpass must report FDPASS_ERR_CONTROL_TRUNCATED, close the
 *   fds that did arrive, and keep the socket usable.
 * - ETOOMANYREFS: an unprivileged sender may have no more fds in flight than
 *   its limit; fdpass must wait for the reader, not fail.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { UnixSocket, Channel, withFds, type SocketType } from '../../src';
import { trackFds } from '../helpers/scope';
import { assertNoFdLeak } from '../helpers/fds';
import { tmpDir, openFiles, fileId } from '../helpers/files';
import { spawnNode } from '../helpers/process';

// The child starts with about 25 fds (stdio, fd 3, the runtime's own), so a
// limit of 40 leaves it room for about 15: far fewer than the 50 we send.
const NOFILE = 40;
const MANY = 50;

interface CtruncReport {
  first: { error?: { name: string; code: string; received: number }; message?: string };
  second: { data: string; nfds: number; kinds: string[] };
  before: [number, string][];
  after: [number, string][];
}

for (const type of ['seqpacket', 'stream', 'dgram'] as SocketType[]) {
  test(`${type === 'stream' ? 'framed stream' : type}: a receiver at RLIMIT_NOFILE gets FDPASS_ERR_CONTROL_TRUNCATED, leaks nothing, and reads on`, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const files = openFiles(dir, 2, scope);
    const [mine, theirs] = UnixSocket.pair({ type });
    scope.defer(() => mine.close());
    const child = spawnNode('socket-peer.js', ['ctrunc'], { fds: [theirs.fd], nofile: NOFILE, owner: scope });
    theirs.close();
    const ready = await child.next<{ ready: boolean; fds: number }>();
    assert.equal(ready.ready, true);
    assert.ok(NOFILE - ready.fds < MANY, `the child has room for ${NOFILE - ready.fds} fds: the test would not truncate`);

    // Both go out before the child reads: the small one waits behind the big one.
    await mine.send({ data: 'too many', fds: new Array<number>(MANY).fill(files.fds[0]!) });
    await mine.send({ data: 'after', fds: [files.fds[1]!] });

    const r = await child.next<CtruncReport>();
    assert.equal(r.first.error?.code, 'FDPASS_ERR_CONTROL_TRUNCATED', JSON.stringify(r.first));
    assert.equal(r.first.error?.name, 'ControlTruncatedError');
    assert.ok(r.first.error!.received < MANY);
    assert.deepEqual(r.second, { data: 'after', nfds: 1, kinds: ['file'] });
    assertNoFdLeak(new Map(r.before), new Map(r.after), 'the child');
    await child.done();
  });
}

for (const type of ['seqpacket', 'stream'] as SocketType[]) {
  test(`Channel over ${type}: a reply with more fds than the requester has room for fails that request (FDPASS_ERR_CONTROL_TRUNCATED); posts and requests likewise; nothing leaks; the channel carries on`, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const files = openFiles(dir, 1, scope);
    const [mine, theirs] = UnixSocket.pair({ type });
    const ch = new Channel(mine);
    scope.defer(() => ch.close());
    const many = new Array<number>(MANY).fill(files.fds[0]!);
    ch.handle('many', () => withFds({ ok: true }, many));
    ch.handle('one', () => withFds({ ok: true }, [files.fds[0]!]));
    ch.handle('go', async () => {
      await ch.post('many-post', { n: MANY }, many);
      try {
        await ch.request('ask', undefined, { fds: many, timeout: 10_000 });
        return 'answered';
      } catch (e) {
        return (e as { remoteCode?: string }).remoteCode ?? (e as Error).message;
      }
    });
    const child = spawnNode('channel-peer.js', ['ctrunc'], { fds: [theirs.fd], nofile: NOFILE, owner: scope });
    theirs.close();
    const r = await child.next<{
      many: { name?: string; code?: string; received?: number; nfds?: number };
      one: { nfds: number; kind: string }; go: string; again: number; asked: number;
      errors: { code: string; received: number }[]; before: [number, string][]; after: [number, string][];
    }>();
    assert.equal(r.many.code, 'FDPASS_ERR_CONTROL_TRUNCATED', JSON.stringify(r.many));
    assert.equal(r.many.name, 'ControlTruncatedError');
    assert.ok(r.many.received! < MANY);
    assert.deepEqual(r.one, { nfds: 1, kind: 'file' });
    // The truncated request was answered with an error at once, not left to time out.
    assert.equal(r.go, 'FDPASS_ERR_CONTROL_TRUNCATED');
    assert.equal(r.asked, 0);
    assert.equal(r.again, 1);
    // The post and the request were reported in the child; the reply went to its request only.
    assert.deepEqual(r.errors.map((e) => e.code), ['FDPASS_ERR_CONTROL_TRUNCATED', 'FDPASS_ERR_CONTROL_TRUNCATED']);
    assertNoFdLeak(new Map(r.before), new Map(r.after), 'the child');
    await child.done();
  });
}

test('ETOOMANYREFS: an unprivileged sender over its in-flight fd limit waits for the reader instead of failing', { skip: process.getuid!() !== 0 && 'needs root to run a child as another user' }, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope, 0o755);
  const file = path.join(dir, 'shared.txt');
  fs.writeFileSync(file, 'x');
  fs.chmodSync(file, 0o644);
  const MESSAGES = 20;
  const PER = 10; // 200 fds in flight wanted; the limit is 64
  const [mine, theirs] = UnixSocket.pair();
  scope.defer(() => mine.close());
  const child = spawnNode('socket-peer.js', ['flood', JSON.stringify({ file, messages: MESSAGES, perMessage: PER, waitMs: 150 })], {
    fds: [theirs.fd], uid: 65534, gid: 65534, nofile: 64, owner: scope,
  });
  theirs.close();

  // Nobody reads yet: the kernel holds the fds in flight and refuses more.
  const stalled = await child.next<{ pending: number; settled: number }>();
  assert.ok(stalled.pending > 0, `nothing was held back: ${JSON.stringify(stalled)}`);
  assert.ok(stalled.settled < MESSAGES);

  const id = fileId(file);
  for (let i = 0; i < MESSAGES; i++) {
    const m = await mine.receive({ timeout: 5000 });
    assert.equal(m.text(), `flood ${i}`);
    assert.equal(m.fds.length, PER);
    assert.ok(m.fds.every((f) => fileId(f.fd) === id));
    m.close();
  }
  assert.deepEqual(await child.next(), { outcomes: [], ok: MESSAGES });
  await child.done();
});
