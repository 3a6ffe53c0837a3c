/**
 * Bad input and failing system calls: argument errors are thrown before any
 * system call, one-shot operations reject with Node-style errors, and
 * listen() never destroys a file it should not.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { UnixSocket, UnixServer, type Message, type SocketType } from '../../src';
import { trackFds } from '../helpers/scope';
import { openFds } from '../helpers/fds';
import { tmpDir, openFiles } from '../helpers/files';
import { spawnNode } from '../helpers/process';
import { within } from '../helpers/wait';

test('an fd that is not a number, or not an fd number, is a TypeError thrown synchronously', async (t) => {
  const scope = await trackFds(t);
  const [a, b] = UnixSocket.pair();
  scope.defer(() => a.close());
  scope.defer(() => b.close());
  for (const bad of [-1, 1.5, 'x', NaN, 2 ** 31, null, {}]) {
    assert.throws(() => a.send({ data: 'x', fds: [bad as never] }), (e: Error & { code?: string }) =>
      e instanceof TypeError && e.code === 'FDPASS_ERR_INVALID_FD', `fd ${String(bad)}`);
  }
  assert.throws(() => a.send({ data: 'x', fds: 3 as never }), { name: 'TypeError', code: 'FDPASS_ERR_INVALID_ARG' });
  assert.throws(() => a.send({ data: 42 as never }), { name: 'TypeError', code: 'FDPASS_ERR_INVALID_ARG' });
  assert.throws(() => a.send({ data: 'x', credentials: { pid: -1, uid: 0, gid: 0 } }), { name: 'TypeError' });
  assert.throws(() => UnixSocket.pair({ type: 'raw' as never }), { name: 'TypeError', code: 'FDPASS_ERR_INVALID_ARG' });
  assert.throws(() => UnixSocket.fromFd(-1), { name: 'TypeError', code: 'FDPASS_ERR_INVALID_FD' });
  assert.equal(a.pendingSends, 0);
  await assert.rejects(b.receive({ timeout: 20 }), { code: 'FDPASS_ERR_TIMEOUT' });
});

test('a closed fd is a TypeError FDPASS_ERR_INVALID_FD thrown synchronously, for every socket type', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  for (const type of ['stream', 'seqpacket', 'dgram'] as SocketType[]) {
    const [a, b] = UnixSocket.pair({ type });
    try {
      const closed = fs.openSync(path.join(dir, 'f'), 'w');
      fs.closeSync(closed); // nothing else can take the number before the send below
      assert.equal(openFds().has(closed), false);
      assert.throws(() => a.send({ data: 'x', fds: [closed] }), { name: 'TypeError', code: 'FDPASS_ERR_INVALID_FD', message: `fd ${closed} is not open` });
      assert.equal(a.pendingSends, 0);
      await a.send('still fine');
      assert.equal((await b.receive({ timeout: 5000 })).text(), 'still fine');
    } finally {
      a.close();
      b.close();
    }
  }
});

test('addresses longer than sun_path are a RangeError FDPASS_ERR_PATH_TOO_LONG thrown synchronously', async (t) => {
  const scope = await trackFds(t);
  const long = '/tmp/' + 'x'.repeat(103); // 108 bytes: one too many for a path
  assert.equal(Buffer.byteLength(long), 108);
  const tooLong = { name: 'RangeError', code: 'FDPASS_ERR_PATH_TOO_LONG' };
  assert.throws(() => UnixSocket.connect(long), tooLong);
  assert.throws(() => UnixServer.listen(long), tooLong);
  assert.throws(() => UnixSocket.datagram({ bind: long }), tooLong);
  assert.throws(() => UnixSocket.datagram({ connect: long }), tooLong);
  assert.throws(() => UnixSocket.connect('\0' + 'y'.repeat(108)), tooLong); // abstract: 108 bytes without terminator
  assert.throws(() => UnixSocket.connect('/tmp/é' + 'x'.repeat(101)), tooLong); // bytes, not characters
  const d = await UnixSocket.datagram();
  scope.defer(() => d.close());
  assert.throws(() => d.send({ data: 'x', to: long }), tooLong);
  assert.throws(() => UnixSocket.connect(''), { name: 'TypeError', code: 'FDPASS_ERR_INVALID_ARG' });
  assert.throws(() => UnixServer.listen('/tmp/a', { type: 'dgram' }), { name: 'TypeError', code: 'FDPASS_ERR_UNSUPPORTED' });
});

test('a 107-byte path is the longest that works', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const p = path.join(dir, 'x'.repeat(107 - Buffer.byteLength(dir) - 1));
  assert.equal(Buffer.byteLength(p), 107);
  const server = await UnixServer.listen(p);
  scope.defer(() => server.close());
  assert.equal(server.address, p);
  const c = await UnixSocket.connect(p);
  scope.defer(() => c.close());
  const s = await server.accept({ timeout: 10_000 });
  scope.defer(() => s.close());
  assert.equal(c.remoteAddress, p);
  assert.equal(s.localAddress, p);
});

test('`to` on a stream is TypeError FDPASS_ERR_UNSUPPORTED; a raw stream message with fds needs data', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const files = openFiles(dir, 1, scope);
  for (const type of ['stream', 'seqpacket'] as SocketType[]) {
    const [a, b] = UnixSocket.pair({ type });
    scope.defer(() => a.close());
    scope.defer(() => b.close());
    assert.throws(() => a.send({ data: 'x', to: path.join(dir, 'nowhere') }), { name: 'TypeError', code: 'FDPASS_ERR_UNSUPPORTED' });
  }
  const [ra, rb] = UnixSocket.pair({ raw: true });
  scope.defer(() => ra.close());
  scope.defer(() => rb.close());
  assert.throws(() => ra.send({ fds: files.fds }), { name: 'TypeError', code: 'FDPASS_ERR_INVALID_ARG' });
  assert.throws(() => ra.send({ data: '', fds: files.fds }), { name: 'TypeError' });
  await ra.send({ data: '!', fds: files.fds });
  const m = await rb.receive({ timeout: 5000 });
  assert.equal(m.text(), '!');
  assert.equal(m.fdCount, 1);
  m.close();
  // Framed streams carry empty payloads with fds (the header is the data byte).
  const [fa, fb] = UnixSocket.pair();
  scope.defer(() => fa.close());
  scope.defer(() => fb.close());
  await fa.send({ fds: files.fds });
  const e = await fb.receive({ timeout: 5000 });
  assert.equal(e.data.length, 0);
  assert.equal(e.fdCount, 1);
  e.close();
});

test('send on a closed socket rejects FDPASS_ERR_SOCKET_CLOSED; close() is safe twice', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const files = openFiles(dir, 1, scope);
  for (const type of ['stream', 'seqpacket', 'dgram'] as SocketType[]) {
    const [a, b] = UnixSocket.pair({ type });
    a.close();
    a.close();
    assert.equal(a.closed, true);
    assert.throws(() => a.fd, { code: 'FDPASS_ERR_SOCKET_CLOSED' });
    await assert.rejects(a.send({ data: 'x', fds: files.fds }), { name: 'SocketClosedError', code: 'FDPASS_ERR_SOCKET_CLOSED' });
    await assert.rejects(a.receive({ timeout: 10_000 }), { code: 'FDPASS_ERR_SOCKET_CLOSED' });
    b.close();
  }
});

test('a send queued when the socket is closed rejects FDPASS_ERR_SOCKET_CLOSED', async (t) => {
  const scope = await trackFds(t);
  const [a, b] = UnixSocket.pair();
  scope.defer(() => b.close());
  const big = a.send(Buffer.alloc(4 * 1024 * 1024));
  const small = a.send('behind');
  assert.ok(a.pendingSends >= 1);
  a.close();
  await assert.rejects(big, { code: 'FDPASS_ERR_SOCKET_CLOSED' });
  await assert.rejects(small, { code: 'FDPASS_ERR_SOCKET_CLOSED' });
});

for (const type of ['stream', 'seqpacket'] as SocketType[]) {
  test(`${type}: messages that came with the peer's EOF are all delivered, then receive() rejects and iteration ends`, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const files = openFiles(dir, 1, scope);
    for (const how of ['receive', 'iterate'] as const) {
      const [a, b] = UnixSocket.pair({ type });
      scope.defer(() => b.close());
      await a.send({ data: 'one', fds: files.fds });
      await a.send('two');
      await a.send('three');
      a.close();
      await new Promise((r) => setTimeout(r, 20)); // let EOF queue up behind the messages
      const ended = within(new Promise<void>((resolve) => b.once('end', resolve)), 10_000, "b's 'end'");
      const got: string[] = [];
      if (how === 'receive') {
        for (let i = 0; i < 3; i++) {
          const m = await b.receive({ timeout: 5000 });
          got.push(m.text());
          m.close();
        }
        await assert.rejects(b.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_SOCKET_CLOSED' });
      } else {
        for await (const m of b) {
          got.push(m.text());
          m.close();
        }
      }
      assert.deepEqual(got, ['one', 'two', 'three'], how);
      await ended;
      assert.equal(b.closed, true, 'the socket closes itself after EOF');
    }
  });
}

test('connect to a missing path: ENOENT with syscall connect, a negative errno and the path', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const p = path.join(dir, 'missing.sock');
  await assert.rejects(UnixSocket.connect(p), (e: NodeJS.ErrnoException) => {
    assert.equal(e.code, 'ENOENT');
    assert.equal(e.syscall, 'connect');
    assert.equal(e.errno, -2);
    assert.equal(e.path, p);
    assert.equal(e.message, `connect ENOENT ${p}`);
    return true;
  });
  await assert.rejects(UnixSocket.connect('\0fdpass-nobody-listens-' + process.pid), { code: 'ECONNREFUSED', syscall: 'connect' });
  await assert.rejects(UnixSocket.datagram({ connect: p }), { code: 'ENOENT', syscall: 'connect' });
  const d = await UnixSocket.datagram();
  scope.defer(() => d.close());
  await assert.rejects(d.send({ data: 'x', to: p }), { code: 'ENOENT', syscall: 'sendmsg' });
});

test('listen on a live socket path: EADDRINUSE, and the live server keeps its file', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const p = path.join(dir, 's.sock');
  const live = await UnixServer.listen(p);
  scope.defer(() => live.close());
  const ino = fs.lstatSync(p).ino;
  await assert.rejects(UnixServer.listen(p), { code: 'EADDRINUSE', syscall: 'bind' });
  await assert.rejects(UnixServer.listen(p, { type: 'seqpacket' }), { code: 'EADDRINUSE' });
  await assert.rejects(UnixSocket.datagram({ bind: p }), { code: 'EADDRINUSE' });
  assert.equal(fs.lstatSync(p).ino, ino);
  const c = await UnixSocket.connect(p);
  scope.defer(() => c.close());
  await c.send('still here');
  // listen() probes a socket file by connecting to it: the live server
  // accepts that probe as a connection that ends at once. Skip past it.
  let probes = 0;
  for (;;) {
    const s = await live.accept({ timeout: 10_000 });
    try {
      const m = await s.receive({ timeout: 5000 });
      assert.equal(m.text(), 'still here');
      break;
    } catch (err) {
      assert.equal((err as { code?: string }).code, 'FDPASS_ERR_SOCKET_CLOSED');
      probes++;
    } finally {
      s.close();
    }
  }
  assert.ok(probes <= 1, `${probes} probe connections`);
});

test('listen on a stale socket file left by a killed process replaces it', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  for (const type of ['stream', 'seqpacket'] as SocketType[]) {
    const p = path.join(dir, `${type}.sock`);
    const child = spawnNode('socket-peer.js', ['listen', JSON.stringify({ address: p, type })], { owner: scope });
    assert.deepEqual(await child.next(), { ready: true, address: p });
    const r = await child.kill('SIGKILL');
    assert.equal(r.signal, 'SIGKILL');
    assert.equal(fs.lstatSync(p).isSocket(), true, 'the dead server left its file');
    await assert.rejects(UnixSocket.connect(p, { type }), { code: 'ECONNREFUSED' });

    const server = await UnixServer.listen(p, { type });
    scope.defer(() => server.close());
    const c = await UnixSocket.connect(p, { type });
    scope.defer(() => c.close());
    const s = await server.accept({ timeout: 10_000 });
    scope.defer(() => s.close());
    await c.send('new owner');
    assert.equal((await s.receive({ timeout: 5000 })).text(), 'new owner');
  }
});

test('listen on a path that is not a socket: EADDRINUSE, and the file is untouched', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const file = path.join(dir, 'precious.txt');
  fs.writeFileSync(file, 'do not delete me');
  fs.chmodSync(file, 0o640);
  const before = fs.lstatSync(file);
  await assert.rejects(UnixServer.listen(file), { code: 'EADDRINUSE', syscall: 'bind', path: file });
  await assert.rejects(UnixSocket.datagram({ bind: file }), { code: 'EADDRINUSE' });
  const sub = path.join(dir, 'subdir');
  fs.mkdirSync(sub);
  await assert.rejects(UnixServer.listen(sub), { code: 'EADDRINUSE' });
  const after = fs.lstatSync(file);
  assert.equal(fs.readFileSync(file, 'utf8'), 'do not delete me');
  assert.deepEqual([after.ino, after.mode, after.size, after.mtimeMs], [before.ino, before.mode, before.size, before.mtimeMs]);
  assert.equal(fs.statSync(sub).isDirectory(), true);
});

test('a raw peer sending garbage to a framed stream: FDPASS_ERR_PROTOCOL, and the fds it sent are closed', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const p = path.join(dir, 's.sock');
  const server = await UnixServer.listen(p);
  scope.defer(() => server.close());
  const marker = openFiles(dir, 3, scope, 'marker');
  const isMarker = (target: string) => marker.paths.includes(target);

  const raw = await UnixSocket.connect(p, { raw: true });
  scope.defer(() => raw.close());
  const framed = await server.accept({ timeout: 10_000 });
  scope.defer(() => framed.close());
  await raw.send({ data: 'GARBAGE, NOT A FRAME', fds: marker.fds });
  marker.close();
  assert.equal([...openFds().values()].filter(isMarker).length, 0);

  await assert.rejects(framed.receive({ timeout: 5000 }), (e: Error & { code: string }) => {
    assert.equal(e.code, 'FDPASS_ERR_PROTOCOL');
    assert.equal(e.name, 'ProtocolError');
    assert.match(e.message, /bad magic 0x47 at stream offset 0/);
    return true;
  });
  // The three fds came in with the garbage; none of them is open here now.
  assert.deepEqual([...openFds().values()].filter(isMarker), []);
  assert.equal(framed.closed, true);
  // The raw peer sees the connection go.
  await assert.rejects(raw.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_SOCKET_CLOSED' });
});

test('a framed peer that closes in the middle of a frame: FDPASS_ERR_PROTOCOL, fds closed', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const p = path.join(dir, 's.sock');
  const server = await UnixServer.listen(p);
  scope.defer(() => server.close());
  const marker = openFiles(dir, 1, scope, 'marker');
  const raw = await UnixSocket.connect(p, { raw: true });
  const framed = await server.accept({ timeout: 10_000 });
  scope.defer(() => framed.close());
  // A header that promises 100 bytes and one fd, then only 3 bytes.
  const header = Buffer.from([0xfd, 0, 1, 0, 100, 0, 0, 0]);
  await raw.send({ data: Buffer.concat([header, Buffer.from('abc')]), fds: marker.fds });
  marker.close();
  raw.close();
  const got: (Message | Error)[] = [];
  await assert.rejects(framed.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_PROTOCOL' });
  assert.deepEqual(got, []);
  assert.deepEqual([...openFds().values()].filter((x) => marker.paths.includes(x)), []);
});

for (const type of ['stream', 'seqpacket', 'dgram'] as SocketType[]) {
  test(`${type}: a peer process that dies: queued and later sends reject, receive() ends`, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const files = openFiles(dir, 1, scope);
    const [mine, theirs] = UnixSocket.pair({ type });
    scope.defer(() => mine.close());
    const child = spawnNode('socket-peer.js', ['hold'], { fds: [theirs.fd], owner: scope });
    theirs.close();
    assert.deepEqual(await child.next(), { ready: true, type });

    // Fill the peer's queue so that later sends wait, then kill the peer.
    const queued: Promise<void>[] = [];
    for (let i = 0; i < 64 && mine.pendingSends === 0; i++) {
      queued.push(mine.send({ data: Buffer.alloc(type === 'stream' ? 1024 * 1024 : 32 * 1024), fds: files.fds }));
    }
    assert.ok(mine.pendingSends > 0, 'the peer queue never filled');
    const outcomes = Promise.allSettled(queued);
    await child.kill('SIGKILL');

    const settled = await outcomes;
    const rejected = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
    assert.ok(rejected.length > 0);
    // A connected peer that is gone: EPIPE, or ECONNRESET when it died with
    // data unread. A datagram peer: ECONNREFUSED, then ENOTCONN (the kernel
    // disconnects the socket).
    const codes = type === 'dgram' ? ['ECONNREFUSED', 'ENOTCONN'] : ['EPIPE', 'ECONNRESET'];
    const isPeerGone = (e: unknown) => {
      const err = e as NodeJS.ErrnoException;
      assert.ok(codes.includes(err.code!), `${err.code}: ${err.message}`);
      assert.equal(err.syscall, 'sendmsg');
      assert.ok(err.errno! < 0);
      return true;
    };
    for (const r of rejected) isPeerGone(r.reason);
    await assert.rejects(mine.send({ data: 'anyone?', fds: files.fds }), isPeerGone);
    if (type !== 'dgram') {
      // Whatever the peer left unread is gone; the socket reports the end.
      await assert.rejects(mine.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_SOCKET_CLOSED' });
    }
  });
}
