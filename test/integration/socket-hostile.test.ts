/**
 * Hostile peers at the socket layer: fds sent to a socket that does not take
 * them (maxFdsPerMessage, a Channel handler's maxFds) are closed the moment
 * they arrive and the peer is cut off; a peer flooding 253 fds per message
 * cannot fill the receiver's fd table, whether the receiver waits it out
 * (read-ahead bounded by maxBufferedFds, the default) or cuts it off
 * (maxUnreadFds).
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  UnixSocket, UnixServer, Channel, ProtocolError, UnexpectedFdsError, FdFloodError, MAX_FDS, encodeFrame,
  type Message, type SocketType,
} from '../../src';
import { native, K } from '../../src/native';
import { trackFds } from '../helpers/scope';
import { openFds } from '../helpers/fds';
import { nextEvent, waitFor, waitSteady, within } from '../helpers/wait';
import { tmpDir, openFiles } from '../helpers/files';

/** How many fds of this process refer to `path`. */
const copiesOf = (path: string) => [...openFds().values()].filter((t) => t === path).length;

/** `f()` once it has returned the same value 5 times in a row, 10 ms apart (after 5 s: its value then). */
function settled(f: () => number): Promise<number> {
  return waitSteady(f, { times: 5, interval: 10, timeout: 5000 }).catch(() => f());
}

for (const type of ['seqpacket', 'stream'] as SocketType[]) {
  test(`${type}: maxFdsPerMessage 0: fds sent anyway are closed before any consumer sees them, FDPASS_ERR_UNEXPECTED_FDS, the peer is cut off`, async (t) => {
    const scope = await trackFds(t);
    const files = openFiles(tmpDir(scope), 1, scope, 'secret');
    const [rx, tx] = UnixSocket.pair({ type, maxFdsPerMessage: 0 });
    scope.defer(() => rx.close());
    scope.defer(() => tx.close());
    await tx.send('before');
    await tx.send({ data: 'with fds', fds: [files.fds[0]!, files.fds[0]!, files.fds[0]!] });
    await tx.send('after');

    const first = await rx.receive({ timeout: 5000 });
    assert.equal(first.text(), 'before');
    // All three copies were closed when they were read, not when the error is taken.
    assert.equal(copiesOf(files.paths[0]!), 1);
    await assert.rejects(rx.receive({ timeout: 5000 }), (e: Error) => {
      assert.ok(e instanceof UnexpectedFdsError && e instanceof ProtocolError);
      assert.equal(e.code, 'FDPASS_ERR_UNEXPECTED_FDS');
      assert.equal(e.received, 3);
      assert.equal(e.limit, 0);
      assert.match(e.message, /^protocol error: peer sent 3 fd\(s\) in one message; this socket \(maxFdsPerMessage\) takes none; they were closed$/);
      return true;
    });
    // What came after is never delivered; the socket is closed, and the peer sees it.
    await assert.rejects(rx.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_SOCKET_CLOSED' });
    assert.equal(rx.closed, true);
    await assert.rejects(tx.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_SOCKET_CLOSED' });
  });
}

test('a protocol error early in a receive batch: the fds of the reads after it are closed at once (they used to leak when a consumer was waiting)', async (t) => {
  const scope = await trackFds(t);
  const files = openFiles(tmpDir(scope), 1, scope, 'f');
  const fd = files.fds[0]!;
  const pair = new Int32Array(2);
  assert.equal(native.socketpair(K.SOCK_STREAM, pair), 0);
  const framed = UnixSocket.fromFd(pair[0]!);
  const raw = UnixSocket.fromFd(pair[1]!, { raw: true });
  scope.defer(() => raw.close());
  scope.defer(() => framed.close());
  const errors: string[] = [];
  const consumer = (async () => {
    try {
      for await (const m of framed) m.close();
    } catch (e) {
      errors.push((e as Error).message);
    }
  })();
  // One frame claiming no fds but sent with 4, then two well-formed frames
  // with fds: all three come in one receive batch.
  await raw.send({ data: encodeFrame(Buffer.alloc(3000), 0), fds: [fd, fd, fd, fd] });
  await raw.send({ data: encodeFrame(Buffer.from('x'), 1), fds: [fd] });
  await raw.send({ data: encodeFrame(Buffer.from('y'), 3), fds: [fd, fd, fd] });
  await consumer;
  assert.match(errors[0] ?? '', /4 fd\(s\) arrived with bytes inside the frame at stream offset 0/);
  assert.equal(copiesOf(files.paths[0]!), 1);
});

test('maxFdsPerMessage N: up to N fds pass, N + 1 is refused; bad values are a RangeError', async (t) => {
  const scope = await trackFds(t);
  const files = openFiles(tmpDir(scope), 3, scope);
  const [rx, tx] = UnixSocket.pair({ type: 'seqpacket', maxFdsPerMessage: 2 });
  scope.defer(() => rx.close());
  scope.defer(() => tx.close());
  await tx.send({ data: 'two', fds: files.fds.slice(0, 2) });
  await tx.send({ data: 'three', fds: files.fds });
  const m = await rx.receive({ timeout: 5000 });
  assert.equal(m.fdCount, 2);
  m.close();
  await assert.rejects(rx.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_UNEXPECTED_FDS', received: 3, limit: 2 });
  for (const bad of [-1, 254, 1.5]) {
    assert.throws(() => UnixSocket.pair({ maxFdsPerMessage: bad }), RangeError);
  }
  assert.throws(() => UnixSocket.pair({ maxUnreadFds: 100 }), /maxUnreadFds must be an integer from 253/);
  assert.throws(() => UnixSocket.pair({ maxUnreadFds: 1000, maxBufferedFds: 1000 }), /must be below maxBufferedFds/);
});

test('dgram: a datagram with fds the socket does not take is dropped, its fds closed, and the socket reads on', async (t) => {
  const scope = await trackFds(t);
  const files = openFiles(tmpDir(scope), 1, scope, 'secret');
  const [rx, tx] = UnixSocket.pair({ type: 'dgram', maxFdsPerMessage: 0 });
  scope.defer(() => rx.close());
  scope.defer(() => tx.close());
  await tx.send({ data: 'with fds', fds: [files.fds[0]!] });
  await tx.send('plain');
  await assert.rejects(rx.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_UNEXPECTED_FDS', received: 1 });
  assert.equal(copiesOf(files.paths[0]!), 1);
  assert.equal((await rx.receive({ timeout: 5000 })).text(), 'plain');
  assert.equal(rx.closed, false);
});

test('a server that takes no fds (maxFdsPerMessage: 0 in ServerOptions) cuts off a client that sends some', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const files = openFiles(dir, 1, scope, 'secret');
  const server = await UnixServer.listen(`${dir}/s.sock`, { maxFdsPerMessage: 0 });
  scope.defer(() => server.close());
  const client = await UnixSocket.connect(`${dir}/s.sock`);
  scope.defer(() => client.close());
  const conn = await server.accept({ timeout: 10_000 });
  scope.defer(() => conn.close());
  await client.send({ data: 'hello', fds: [files.fds[0]!] });
  await assert.rejects(conn.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_UNEXPECTED_FDS' });
  await assert.rejects(conn.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_SOCKET_CLOSED' });
  assert.equal(copiesOf(files.paths[0]!), 1);
  await assert.rejects(client.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_SOCKET_CLOSED' });
});

test('Channel: a handler that declares maxFds 0 never sees fds; a request carrying some closes them and the channel', async (t) => {
  const scope = await trackFds(t);
  const files = openFiles(tmpDir(scope), 2, scope, 'secret');
  const [a, b] = Channel.pair();
  scope.defer(() => a.close());
  scope.defer(() => b.close());
  let ran = 0;
  b.handle('status', () => ++ran, { maxFds: 0 });
  b.handle('one', (_p, msg) => msg.fds.length, { maxFds: 1 });
  assert.throws(() => b.handle('x', () => 0, { maxFds: 254 }), RangeError);
  assert.equal((await a.request('status')).payload, 1);
  const one = await a.request('one', undefined, { fds: [files.fds[1]!] });
  assert.equal(one.payload, 1);
  one.message.close();

  const errored = nextEvent<[UnexpectedFdsError]>(b, 'error');
  const closed = within(new Promise<void>((r) => b.once('close', () => r())), 10_000, "b's 'close'"); // (events.once would reject on 'error')
  await assert.rejects(a.request('status', undefined, { fds: [files.fds[0]!, files.fds[0]!] }), { code: 'FDPASS_ERR_SOCKET_CLOSED' });
  const [err] = await errored;
  await closed;
  assert.equal(err.code, 'FDPASS_ERR_UNEXPECTED_FDS');
  assert.match(err.message, /peer sent 2 fd\(s\) in one message; the handler of 'status' \(maxFds\) takes none/);
  assert.equal(ran, 1);
  assert.equal(copiesOf(files.paths[0]!), 1);
});

for (const type of ['seqpacket', 'stream'] as SocketType[]) {
  test(`${type}: a peer flooding 253 fds per message into a stalled consumer: read-ahead stops at maxBufferedFds, the peer waits, nothing is lost`, async (t) => {
    const scope = await trackFds(t);
    const files = openFiles(tmpDir(scope), 1, scope);
    const MAXBUF = 600;
    // 101 200 fds in all: more than the kernel queues for a stalled reader
    // (the socket buffer holds about 200 such messages; root has no
    // in-flight limit), so the sender has to wait.
    const COUNT = 400;
    const [rx, tx] = UnixSocket.pair({ type, maxBufferedFds: MAXBUF });
    scope.defer(() => rx.close());
    scope.defer(() => tx.close());
    const base = openFds().size;
    const fds = new Array<number>(MAX_FDS).fill(files.fds[0]!);
    const sends = Array.from({ length: COUNT }, () => tx.send({ data: 'flood', fds }));

    // A consumer that takes one message and then stalls.
    let release!: () => void;
    const stalled = new Promise<void>((r) => (release = r));
    let got = 0;
    let fdsGot = 0;
    const consumer = (async () => {
      for await (const m of rx) {
        got++;
        fdsGot += m.fdCount;
        m.close();
        if (got === 1) await stalled;
        if (got === COUNT) break;
      }
    })();
    // Read-ahead fills up to maxBufferedFds, then stops: wait for the first,
    // then make sure it stays there.
    await waitFor(() => openFds().size - base >= MAXBUF, { timeout: 10_000, what: 'read-ahead up to maxBufferedFds' });
    const held = await settled(() => openFds().size) - base;
    assert.ok(held >= MAXBUF, `read-ahead stopped early: ${held} fds`);
    // At most maxBufferedFds + one message unread (and, on a stream, one
    // incomplete frame): not the 101 200 that were sent.
    assert.ok(held <= MAXBUF + 2 * MAX_FDS, `the receiver holds ${held} fds`);
    assert.ok(tx.pendingSends > 0, 'the sender was not held back');
    release();
    await consumer;
    await Promise.all(sends);
    assert.equal(fdsGot, COUNT * MAX_FDS);
  });

  test(`${type}: maxUnreadFds: a peer flooding past the cap is cut off (FDPASS_ERR_FD_FLOOD) and every fd it left unread is closed`, async (t) => {
    const scope = await trackFds(t);
    const files = openFiles(tmpDir(scope), 1, scope);
    const CAP = 300;
    const [rx, tx] = UnixSocket.pair({ type, maxUnreadFds: CAP });
    scope.defer(() => rx.close());
    scope.defer(() => tx.close());
    const base = openFds().size;
    const fds = new Array<number>(MAX_FDS).fill(files.fds[0]!);
    const outcomes: string[] = [];
    const sends = Array.from({ length: 400 }, () => tx.send({ data: 'flood', fds }).then(() => outcomes.push('ok'), (e: { code: string }) => outcomes.push(e.code)));

    let release!: () => void;
    const stalled = new Promise<void>((r) => (release = r));
    const seen: (Message | Error)[] = [];
    const consumer = (async () => {
      try {
        for await (const m of rx) {
          seen.push(m);
          if (seen.length === 1) await stalled;
        }
      } catch (e) {
        seen.push(e as Error);
      }
    })();
    await Promise.all(sends);
    // The sender was cut off: the sends after the flood failed.
    assert.ok(outcomes.some((o) => o === 'EPIPE' || o === 'ECONNRESET'), outcomes.join(' '));
    // Only the message the stalled consumer holds: what it left unread (up
    // to the cap) was dropped with the flooding peer.
    const held = await settled(() => openFds().size) - base;
    assert.ok(held <= MAX_FDS, `the receiver holds ${held} fds`);
    release();
    await consumer;
    assert.equal(seen.length, 2);
    const err = seen[1] as FdFloodError;
    assert.ok(err instanceof FdFloodError && err instanceof ProtocolError, String(err));
    assert.equal(err.code, 'FDPASS_ERR_FD_FLOOD');
    assert.equal(err.limit, CAP);
    assert.ok(err.closed > MAX_FDS, `${err.closed} closed`);
    assert.match(err.message, /^protocol error: peer flooded fds: more than maxUnreadFds 300 were waiting unread; the \d+ fd\(s\) it left unread were closed$/);
    assert.equal((seen[0] as Message).fdCount, MAX_FDS);
    (seen[0] as Message).close();
    assert.equal(rx.closed, true);
  });

  test(`${type}: maxUnreadFds never cuts off a consumer that keeps up`, async (t) => {
    const scope = await trackFds(t);
    const files = openFiles(tmpDir(scope), 1, scope);
    const [rx, tx] = UnixSocket.pair({ type, maxUnreadFds: MAX_FDS });
    scope.defer(() => rx.close());
    scope.defer(() => tx.close());
    const fds = new Array<number>(MAX_FDS).fill(files.fds[0]!);
    const COUNT = 200;
    const sends = Array.from({ length: COUNT }, (_, i) => tx.send({ data: `m${i}`, fds: i % 2 ? fds : fds.slice(0, 7) }));
    let got = 0;
    for await (const m of rx) {
      assert.equal(m.text(), `m${got}`);
      m.close();
      if (++got === COUNT) break;
    }
    await Promise.all(sends);
  });
}
