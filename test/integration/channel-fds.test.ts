/**
 * Channel: every documented way of attaching fds to a request, a post or a
 * reply delivers them, checked by identity on the other side (fstat dev:ino,
 * and a write through the received fd read back through the sender's file);
 * a shape that cannot carry its fds throws a TypeError at the call and sends
 * nothing, never a message without its fds.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { Channel, Fd, withFds, type ChannelMessage, type FdLike } from '../../src';
import { openFds } from '../helpers/fds';
import { trackFds, type Scope } from '../helpers/scope';
import { tmpDir, openFiles, fileId } from '../helpers/files';

interface Seen {
  payload: unknown;
  ids: string[];
}

/** A pair whose 'b' side records what each message brought (payload, dev:ino
 * of each fd) and writes `mark` through every fd it got. */
function pairOf(scope: Scope, type: 'seqpacket' | 'stream') {
  const [a, b] = Channel.pair({ type });
  scope.defer(() => a.close());
  scope.defer(() => b.close());
  const seen: Seen[] = [];
  const take = (payload: unknown, msg: ChannelMessage): Seen => {
    const s = { payload, ids: msg.fds.map((f) => fileId(f.fd)) };
    for (const f of msg.fds) fs.writeSync(f.fd, `${msg.type}|`, 0);
    seen.push(s);
    return s;
  };
  b.handle('req', take);
  b.handle('post', take);
  return { a, b, seen };
}

const TYPES = ['seqpacket', 'stream'] as const;

for (const type of TYPES) {
  test(`${type}: a request carries its fds every documented way`, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const files = openFiles(dir, 2, scope);
    const { a, seen } = pairOf(scope, type);
    const both = [files.fds[0]!, files.fds[1]!];
    const payload = { n: 1, s: 'x' };
    // The same files through open file descriptions of their own.
    const reopened = both.map((fd) => new Fd(fs.openSync(`/proc/self/fd/${fd}`, 'r+')));
    scope.defer(() => reopened.forEach((f) => f.close()));

    const ways: [string, () => Promise<ChannelMessage>][] = [
      ['options.fds', () => a.request('req', payload, { fds: both })],
      ['fds array as the third argument', () => a.request('req', payload, both)],
      ['withFds payload', () => a.request('req', withFds(payload, both))],
      ['withFds payload with options', () => a.request('req', withFds(payload, both), { timeout: 5000 })],
      ['Fd objects', () => a.request('req', payload, { fds: reopened })],
    ];
    for (const [way, call] of ways) {
      fs.ftruncateSync(files.fds[0]!, 0);
      const r = await call();
      r.message.close();
      const got = seen.at(-1)!;
      assert.deepEqual(got.payload, payload, `${way}: the payload as sent (not a wrapper)`);
      assert.deepEqual(got.ids, files.ids, `${way}: the same files, by dev:ino`);
      assert.deepEqual((r.payload as Seen).ids, files.ids, way);
      assert.equal(fs.readFileSync(files.paths[0]!, 'utf8'), 'req|', `${way}: written through the received fd`);
    }
    assert.equal(seen.length, ways.length);
  });

  test(`${type}: a post carries its fds (fds argument, withFds payload)`, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const files = openFiles(dir, 1, scope);
    const { a, b, seen } = pairOf(scope, type);
    await a.post('post', { p: 1 }, [files.fds[0]!]);
    await a.post('post', withFds({ p: 2 }, [files.fds[0]!]));
    // A post nobody handles goes to 'message' listeners, fds and all.
    const heard = new Promise<Seen>((resolve) => b.once('message', (m: ChannelMessage) => resolve({ payload: m.payload, ids: m.fds.map((f) => fileId(f.fd)) })));
    await a.post('unhandled', withFds({ p: 3 }, [files.fds[0]!]));
    assert.deepEqual(await heard, { payload: { p: 3 }, ids: files.ids });
    // The handled ones ran before the later message arrived.
    assert.deepEqual(seen, [{ payload: { p: 1 }, ids: files.ids }, { payload: { p: 2 }, ids: files.ids }]);
    assert.equal(fs.readFileSync(files.paths[0]!, 'utf8'), 'post|', 'written through the received fd');
  });

  test(`${type}: a reply carries fds (withFds, borrowed and transferred)`, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const files = openFiles(dir, 1, scope);
    const [a, b] = Channel.pair({ type });
    scope.defer(() => a.close());
    scope.defer(() => b.close());
    const own = path.join(dir, 'transferred');
    fs.writeFileSync(own, 'the handler opened me');
    b.handle('borrowed', () => withFds({ ok: 1 }, [files.fds[0]!]));
    b.handle('transferred', () => withFds({ ok: 2 }, [fs.openSync(own, 'r')], { transfer: true }));

    const r1 = await a.request('borrowed');
    assert.deepEqual(r1.payload, { ok: 1 });
    assert.deepEqual(r1.fds.map((f) => fileId(f.fd)), files.ids);
    fs.writeSync(r1.fds[0]!.fd, 'through the reply');
    r1.message.close();
    assert.equal(fs.readFileSync(files.paths[0]!, 'utf8'), 'through the reply');

    const r2 = await a.request('transferred');
    assert.deepEqual(r2.payload, { ok: 2 });
    assert.equal(fileId(r2.fds[0]!.fd), fileId(own));
    assert.equal(fs.readFileSync(r2.fds[0]!.fd, 'utf8'), 'the handler opened me');
    r2.message.close();
    // The handler's copy went with the reply: nothing here names the file now.
    await new Promise((r) => setImmediate(r));
    assert.deepEqual([...openFds().values()].filter((target) => target === own), []);
  });
}

test('withFds with { transfer: true } on a request or a post: the channel closes the fds once sent', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const [a, b] = Channel.pair();
  scope.defer(() => a.close());
  scope.defer(() => b.close());
  const file = path.join(dir, 'given');
  fs.writeFileSync(file, 'given away');
  const ids: string[] = [];
  b.handle('req', (_p, msg) => ids.push(fileId(msg.fds[0]!.fd)));
  const posted = new Promise<void>((resolve) => b.handle('post', (_p, msg) => {
    ids.push(fileId(msg.fds[0]!.fd));
    resolve();
  }));
  (await a.request('req', withFds(null, [fs.openSync(file, 'r')], { transfer: true }))).message.close();
  await a.post('post', withFds(null, [fs.openSync(file, 'r')], { transfer: true }));
  await posted;
  assert.deepEqual(ids, [fileId(file), fileId(file)]);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual([...openFds().values()].filter((target) => target === file), [], 'no copy left on either side');
});

test('shapes that cannot carry fds throw a TypeError at the call and send nothing', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const files = openFiles(dir, 1, scope);
  const fd = files.fds[0]!;
  const [a, b] = Channel.pair();
  scope.defer(() => a.close());
  scope.defer(() => b.close());
  let arrived = 0;
  b.handle('t', () => ++arrived);
  b.on('message', () => arrived++);

  const owned = new Fd(fs.openSync(files.paths[0]!, 'r'));
  scope.defer(() => owned.close());
  const invalidArg = (what: RegExp) => ({ name: 'TypeError', code: 'FDPASS_ERR_INVALID_ARG', message: what });
  const calls: [string, () => unknown, RegExp][] = [
    ['withFds and options.fds', () => a.request('t', withFds(1, [fd]), { fds: [fd] }), /both/],
    ['withFds and an fds array', () => a.request('t', withFds(1, [fd]), [fd]), /both/],
    ['post: withFds and fds', () => a.post('t', withFds(1, [fd]), [fd]), /both/],
    ['withFds inside a request payload', () => a.request('t', { file: withFds(1, [fd]) }), /inside/],
    ['withFds inside a post payload', () => a.post('t', [withFds(1, [fd])]), /inside/],
    ['withFds inside withFds', () => a.request('t', withFds(withFds(1, [fd]), [])), /inside/],
    ['a bare fd as request options', () => a.request('t', 1, fd as never), /array/],
    ['an Fd as request options', () => a.request('t', 1, owned as never), /array/],
    ['options.fds not an array', () => a.request('t', 1, { fds: fd as never }), /array/],
    ['post fds not an array', () => a.post('t', 1, fd as never), /array/],
    ['withFds fds not an array', () => withFds(1, fd as never), /array/],
  ];
  for (const [what, call, message] of calls) {
    assert.throws(call, invalidArg(message), what);
  }
  // fds that name no open fd: FDPASS_ERR_INVALID_FD, as UnixSocket.send() says.
  for (const bad of [{}, -1, 'x', 1.5] as unknown as FdLike[]) {
    assert.throws(() => a.request('t', 1, [bad]), { name: 'TypeError', code: 'FDPASS_ERR_INVALID_FD' });
    assert.throws(() => a.post('t', 1, [bad]), { name: 'TypeError', code: 'FDPASS_ERR_INVALID_FD' });
  }
  // Nothing went out, no request is left pending, and the channel works.
  assert.equal((await a.request('t')).payload, 1);
  assert.equal(arrived, 1);
});

test('a handler answer that cannot carry its fds fails the request with the reason, at once', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const files = openFiles(dir, 1, scope);
  const [a, b] = Channel.pair();
  scope.defer(() => a.close());
  scope.defer(() => b.close());
  const errors: Error[] = [];
  b.on('error', (e: Error) => errors.push(e));
  b.handle('nested', () => ({ file: withFds(1, [files.fds[0]!]) }));
  b.handle('bad-fd', () => withFds(1, [{} as FdLike]));
  const t0 = Date.now();
  await assert.rejects(a.request('nested', undefined, { timeout: 3000 }),
    { code: 'FDPASS_ERR_REMOTE', remoteCode: 'FDPASS_ERR_INVALID_ARG', message: /inside/ });
  await assert.rejects(a.request('bad-fd', undefined, { timeout: 3000 }),
    { code: 'FDPASS_ERR_REMOTE', remoteCode: 'FDPASS_ERR_INVALID_FD' });
  assert.ok(Date.now() - t0 < 2000, 'answered, not timed out');
  assert.deepEqual(errors, []);
});

test('no handler: the error reply carries FDPASS_ERR_NO_HANDLER', async (t) => {
  await trackFds(t);
  const [a, b] = Channel.pair();
  try {
    await assert.rejects(a.request('nobody'), { code: 'FDPASS_ERR_REMOTE', remoteCode: 'FDPASS_ERR_NO_HANDLER', message: /no handler for 'nobody'/ });
  } finally {
    a.close();
    b.close();
  }
});
