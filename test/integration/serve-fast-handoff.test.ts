/**
 * The primary's one-crossing hand-off (native/handoff.c, dispatcher.ts
 * acceptFast()), on a real TCP listener and real SEQPACKET channels, with a
 * Dispatcher whose workers are plain records: the CONNS bytes C builds are
 * exactly protocol.ts's, each worker gets the very connections planned for
 * it, a worker whose channel is full (sendmsg EAGAIN) gets its connections
 * later through the normal path with none lost, a worker gone with
 * hand-offs in flight has them re-dispatched, and no fd is left behind.
 */
import * as assert from 'node:assert/strict';
import * as net from 'node:net';
import { test } from 'node:test';
import { native, K } from '../../src/native';
import { EAGAIN } from '../../src/errno';
import { UnixSocket } from '../../src/socket/socket';
import type { Message } from '../../src/socket/message';
import { Dispatcher, type Target } from '../../src/serve/dispatcher';
import { HandoffWindow } from '../../src/serve/handoff-window';
import { decodePrimaryMessage, encodeConns, Op } from '../../src/serve/protocol';
import type { Strategy } from '../../src/serve/strategies';
import { trackFds, type Scope } from '../helpers/scope';
import { waitFor } from '../helpers/wait';

/** A TCP listener on 127.0.0.1 opened with the addon: its fd and port. */
function listener(scope: Scope): { fd: number; port: number } {
  const fd = native.socketInet(K.AF_INET);
  assert.ok(fd >= 0, `socketInet ${fd}`);
  scope.defer(() => native.close(fd));
  assert.equal(native.bindInet(fd, K.AF_INET, '127.0.0.1', 0), 0);
  assert.equal(native.listen(fd, 128), 0);
  const port = native.inetName(fd, false, Buffer.alloc(64));
  assert.ok(port > 0);
  return { fd, port };
}

interface Worker extends Target {
  /** The worker's end of the channel, and what came on it. */
  peer: UnixSocket;
  got: Message[];
}

function worker(scope: Scope, slot: number): Worker {
  const [mine, theirs] = UnixSocket.pair({ type: 'seqpacket' });
  scope.defer(() => {
    mine.close();
    theirs.close();
  });
  const w: Worker = {
    slot, pid: undefined, sock: mine, inflight: new Map(), batches: 0, handed: 0, returned: 0, closed: 0, acked: 0, live: 0,
    window: new HandoffWindow(), peer: theirs, got: [],
  };
  theirs.on('message', (m) => w.got.push(m));
  scope.defer(() => {
    for (const m of w.got) m.close();
  });
  return w;
}

function dispatcher(scope: Scope, strategy: Strategy, workers: Worker[], failed: Worker[] = []): Dispatcher<Worker> {
  const d = new Dispatcher<Worker>({
    strategy,
    candidates: () => workers.filter((w) => !failed.includes(w)),
    sendFailed: (w) => {
      failed.push(w);
      d.takeBack(w);
    },
    backpressure: () => {},
    fdsClosed: () => {},
    log: () => {},
  });
  scope.defer(() => {
    // The primary's copies still held, as the primary closes them at exit.
    for (const w of workers) for (const c of w.inflight.values()) native.close(c.fd);
    d.close();
  });
  return d;
}

/** n clients connected (in the listener's backlog: nobody accepted yet). */
async function clients(scope: Scope, port: number, n: number): Promise<net.Socket[]> {
  const out: net.Socket[] = [];
  for (let i = 0; i < n; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    scope.defer(() => s.destroy());
    await new Promise<void>((res, rej) => s.once('connect', res).once('error', rej));
    out.push(s);
  }
  return out;
}

/** The client port at the other end of a received connection's fd. */
function peerPort(fd: number): number {
  return native.inetName(fd, true, Buffer.alloc(64));
}

/** What worker `w` got: each connection's id and the peer port of its fd. */
function received(w: Worker): { id: number; port: number }[] {
  const out: { id: number; port: number }[] = [];
  for (const m of w.got) {
    if (m.data[0] !== Op.Conns) continue;
    const msg = decodePrimaryMessage(m.data, m.fdCount);
    assert.equal(msg.op, Op.Conns);
    if (msg.op !== Op.Conns) continue;
    msg.ids.forEach((id, i) => out.push({ id, port: peerPort(m.fds[i]!.fd) }));
  }
  return out;
}

test('fast hand-off: C sends protocol.ts\'s CONNS bytes, each worker its planned connections, acked copies closed', async (t) => {
  const scope = await trackFds(t);
  const l = listener(scope);
  const ws = [worker(scope, 0), worker(scope, 1)];
  const d = dispatcher(scope, 'round-robin', ws);
  const cs = await clients(scope, l.port, 3);
  const n = d.acceptFast(l.fd, 7);
  assert.equal(n, 3);
  await waitFor(() => ws[0]!.got.length === 1 && ws[1]!.got.length === 1, { what: 'one CONNS each' });
  // Round-robin from the first: 0, 1, 0; ids from 1, in accept order.
  assert.deepEqual(ws[0]!.got[0]!.data, encodeConns([1, 3], [7, 7], 2));
  assert.deepEqual(ws[1]!.got[0]!.data, encodeConns([2], [7], 1));
  const ports = cs.map((c) => c.localPort);
  assert.deepEqual(received(ws[0]!), [{ id: 1, port: ports[0] }, { id: 3, port: ports[2] }]);
  assert.deepEqual(received(ws[1]!), [{ id: 2, port: ports[1] }]);
  // The ledgers: in flight until the ACK, which closes the primary's copies.
  assert.deepEqual([...ws[0]!.inflight.keys()], [1, 3]);
  assert.equal(ws[0]!.batches, 1);
  assert.equal(ws[0]!.handed, 2);
  assert.equal(d.handed, 3);
  d.acked(ws[0]!, Uint32Array.of(1, 3), 2, 0);
  d.acked(ws[1]!, Uint32Array.of(2), 1, 0);
  assert.equal(ws[0]!.inflight.size + ws[1]!.inflight.size, 0);
  // Nothing more waiting: accept's EAGAIN comes back as is.
  assert.equal(d.acceptFast(l.fd, 7), EAGAIN);
});

test('fast hand-off: least-connections plans as strategies.ts picks', async (t) => {
  const scope = await trackFds(t);
  const l = listener(scope);
  const ws = [worker(scope, 0), worker(scope, 1)];
  // Worker 0 holds 2 connections already (handed, not reported closed).
  ws[0]!.handed = 2;
  const d = dispatcher(scope, 'least-connections', ws);
  await clients(scope, l.port, 4);
  assert.equal(d.acceptFast(l.fd, 0), 4);
  await waitFor(() => ws[0]!.got.length + ws[1]!.got.length === 2, { what: 'the CONNS messages' });
  // Open counts 2/0: worker 1 gets two, then at 2/2 the tie is the
  // cursor's (it moved by one per pick: worker 0), then 3/2: worker 1.
  assert.equal(received(ws[1]!).length, 3);
  assert.equal(received(ws[0]!).length, 1);
});

test('fast hand-off: not with the hash strategy, nor while connections wait, nor behind a queued send', async (t) => {
  const scope = await trackFds(t);
  const l = listener(scope);
  const ws = [worker(scope, 0)];
  assert.equal(dispatcher(scope, 'hash', ws).acceptFast(l.fd, 0), undefined);
  const d = dispatcher(scope, 'round-robin', ws);
  // Nobody ready: the normal path accepts (and keeps them waiting).
  const none = dispatcher(scope, 'round-robin', []);
  assert.equal(none.acceptFast(l.fd, 0), undefined);
  // A send queued on the channel: order first.
  fill(scope, ws[0]!);
  void ws[0]!.sock.send(Buffer.from([Op.StatusQuery])).catch(() => {});
  assert.ok(ws[0]!.sock.pendingSends > 0);
  assert.equal(d.acceptFast(l.fd, 0), undefined);
});

/** Fills w's channel through a second socket on the same fd, so that the
 * channel's own send queue stays empty while the kernel's is full. */
function fill(scope: Scope, w: Worker): UnixSocket {
  const dup = native.dup(w.sock.fd);
  assert.ok(dup >= 0);
  const s = UnixSocket.fromFd(dup);
  scope.defer(() => s.close());
  const filler = Buffer.from([Op.StatusQuery]);
  while (s.pendingSends === 0) void s.send(filler).catch(() => {});
  return s;
}

test('fast hand-off: a worker whose channel is full (sendmsg EAGAIN) gets its connections later, none lost', async (t) => {
  const scope = await trackFds(t);
  const l = listener(scope);
  const ws = [worker(scope, 0), worker(scope, 1)];
  const d = dispatcher(scope, 'round-robin', ws);
  // Worker 0 is not reading: stop taking its messages until it is full.
  ws[0]!.peer.removeAllListeners('message');
  fill(scope, ws[0]!);
  assert.equal(ws[0]!.sock.pendingSends, 0);
  const cs = await clients(scope, l.port, 4);
  assert.equal(d.acceptFast(l.fd, 0), 4);
  // Worker 1's went at once; worker 0's wait in its channel's queue.
  assert.ok(ws[0]!.sock.pendingSends > 0, 'the refused hand-off is queued on the channel');
  assert.equal(d.waiting, 0);
  // Worker 0 reads again: its hand-off arrives after the filler.
  ws[0]!.peer.on('message', (m) => ws[0]!.got.push(m));
  const all = () => [...received(ws[0]!), ...received(ws[1]!)];
  await waitFor(() => all().length === 4, { what: 'all four connections' });
  assert.deepEqual(all().map((c) => c.port).sort(), cs.map((c) => c.localPort).sort());
  assert.equal(new Set(all().map((c) => c.id)).size, 4, 'each connection handed once');
  assert.equal(ws[0]!.inflight.size + ws[1]!.inflight.size, 4);
  for (const w of ws) d.acked(w, Uint32Array.from(w.inflight.keys()), 0, 0);
});

test('fast hand-off: a worker gone with hand-offs in flight, they go to the other', async (t) => {
  const scope = await trackFds(t);
  const l = listener(scope);
  const ws = [worker(scope, 0), worker(scope, 1)];
  const failed: Worker[] = [];
  const d = dispatcher(scope, 'round-robin', ws, failed);
  const cs = await clients(scope, l.port, 4);
  assert.equal(d.acceptFast(l.fd, 0), 4);
  await waitFor(() => ws[0]!.got.length === 1, { what: 'worker 0\'s CONNS' });
  // Worker 0 dies before acknowledging: what it got is never adopted.
  for (const m of ws[0]!.got.splice(0)) m.close();
  ws[0]!.peer.close();
  failed.push(ws[0]!);
  d.takeBack(ws[0]!);
  assert.equal(ws[0]!.inflight.size, 0);
  await waitFor(() => received(ws[1]!).length === 4, { what: 'all four at worker 1' });
  assert.deepEqual(received(ws[1]!).map((c) => c.port).sort(), cs.map((c) => c.localPort).sort());
  d.acked(ws[1]!, Uint32Array.from(ws[1]!.inflight.keys()), 0, 0);
  assert.equal(ws[1]!.inflight.size, 0);
});

test('fast hand-off: a broken channel (EPIPE) goes to sendFailed, its connections to the other worker', async (t) => {
  const scope = await trackFds(t);
  const l = listener(scope);
  const ws = [worker(scope, 0), worker(scope, 1)];
  const failed: Worker[] = [];
  const d = dispatcher(scope, 'round-robin', ws, failed);
  ws[0]!.peer.close();
  const cs = await clients(scope, l.port, 2);
  assert.equal(d.acceptFast(l.fd, 0), 2);
  await waitFor(() => failed.includes(ws[0]!) && received(ws[1]!).length === 2, { what: 'both at worker 1' });
  assert.deepEqual(received(ws[1]!).map((c) => c.port).sort(), cs.map((c) => c.localPort).sort());
  d.acked(ws[1]!, Uint32Array.from(ws[1]!.inflight.keys()), 0, 0);
});
