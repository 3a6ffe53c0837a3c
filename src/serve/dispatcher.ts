/**
 * Dispatcher: where each accepted connection goes, and the primary's copy
 * of its fd until a worker has it (Node cluster's RoundRobinHandle keeps
 * its handle until NODE_HANDLE_ACK the same way).
 *
 * Ownership: an accepted fd is the dispatcher's from accept() until the
 * worker it was handed to acknowledges it (ACK). The hand-off only borrows
 * it (the kernel puts a duplicate in the message); until the ack it sits in
 * that worker's `inflight` ledger, and the ack closes it. Nothing is lost
 * in between:
 * - LOST (the CONNS message reached the worker without its fds: MSG_CTRUNC,
 *   the worker at its RLIMIT_NOFILE): those connections go to another
 *   worker, or wait; the worker that lost them gets smaller batches after a
 *   back-off (its HandoffWindow, handoff-window.ts), so that a worker out of
 *   fd slots costs no storm of hand-offs and one with a few slots left
 *   still gets work;
 * - a worker gone (dead, killed, its channel broken): takeBack() hands its
 *   unacknowledged connections to the others;
 * - no worker can take a connection (none ready, all full, or all backing
 *   off): it waits, in order, and goes as soon as a worker has room: with
 *   the next dispatch (an accept, an ack, a worker ready), or when a
 *   back-off ends (one timer). Past MAX_UNACKED waiting, the owner is told
 *   to stop accepting (`backpressure`): the kernel's backlog holds the rest
 *   meanwhile.
 * Which worker gets a connection is the strategy's pick (strategies.ts),
 * over the candidates the owner gives (the serving generation's ready
 * workers), within each one's window; each worker gets what was picked for
 * it in one message. Connections come in by accepted() (the owner
 * accepted them), or by acceptFast(), which accepts and sends in one native
 * call (fast-handoff.ts) where that changes nothing of the above.
 */
import { performance } from 'node:perf_hooks';
import { native } from '../native';
import type { UnixSocket } from '../socket/socket';
import { MAX_FDS } from '../socket/frame';
import { encodeConns } from './protocol';
import { addressKey, pickMany, pickWorker, type Strategy, type WorkerLoad } from './strategies';
import { CHANS, FAST_MAX_WORKERS, FDS, handOff, PLAN, SENT } from './fast-handoff';
import { errorCode, Throttled, type Log } from './log';
import { MAX_UNACKED, type HandoffWindow } from './handoff-window';

/** An accepted connection, held by the dispatcher until acknowledged. */
export interface Conn {
  id: number;
  /** The primary's copy of the connection's fd. */
  fd: number;
  listener: number;
  /** The strategy's key: the client address hash (hash strategy), else 0. */
  hash: number;
  /** The hand-off message (per worker, from 1) that carried it last. */
  batch: number;
  /** When that message went (performance.now() ms): least-connections'
   * age of a worker's oldest unacknowledged hand-off. */
  sent: number;
}

/** What the dispatcher needs of a worker: its channel and its ledger. */
export interface Target {
  readonly slot: number;
  readonly pid: number | undefined;
  readonly sock: UnixSocket;
  /** Handed and not acknowledged yet, by id: the fds are still ours. */
  readonly inflight: Map<number, Conn>;
  /** CONNS messages sent to it (modulo 2^32): the numbering LOST refers to. */
  batches: number;
  /** Connections handed to it, re-dispatches included. */
  handed: number;
  /** Of those, how many came back (LOST): it never had them. */
  returned: number;
  /** Of those, how many it reported closed (its cumulative count, modulo
   * 2^32, from its last ACK or LOAD). */
  closed: number;
  acked: number;
  /** The live connections it last reported (for the status). */
  live: number;
  /** How many it may have unacknowledged, and from when (LOST hand-offs). */
  readonly window: HandoffWindow;
}

export interface DispatcherHooks<W extends Target> {
  strategy: Strategy;
  /** The workers that may get connections now, in a stable order. */
  candidates(): W[];
  /** A hand-off could not be sent: the worker is to be taken as gone (which
   * calls takeBack()). */
  sendFailed(w: W, err: Error): void;
  /** Too many connections wait (true), or none any more (false). */
  backpressure(paused: boolean): void;
  /** The dispatcher closed fds of its own (acknowledged copies). */
  fdsClosed(): void;
  log: Log;
}

const CLOSE_BUF = new Int32Array(MAX_FDS);
const NAME_BUF = Buffer.alloc(64);
// Scratch for building one CONNS message (send() copies what it keeps).
const SEND_IDS = new Uint32Array(MAX_FDS);
const SEND_LISTENERS = new Uint16Array(MAX_FDS);
// The fast path's scratch: the cursor after each planned pick, and each
// candidate's batch number of this hand-off.
const CURSORS = new Int32Array(MAX_FDS);
const BATCH_NO = new Float64Array(FAST_MAX_WORKERS);
/** The fast path plans this many picks at least, and doubles up to MAX_FDS
 * while readiness events fill the plan (a burst): planning costs one pick
 * per connection planned, used or not. */
const FAST_BATCH_MIN = 4;
const MAX_ID = 0xffffffff;

export class Dispatcher<W extends Target> {
  readonly #h: DispatcherHooks<W>;
  readonly #lostLog: Throttled;
  #waiting: Conn[] = [];
  /** Set for when the first back-off ends, while connections wait. */
  #retryTimer: NodeJS.Timeout | null = null;
  #retryAt = 0;
  #cursor = 0;
  #nextId = 1;
  #paused = false;
  #stopping = false;
  #fastBatch = FAST_BATCH_MIN;
  /** Connections handed out, counting every hand-off (re-dispatches too). */
  handed = 0;

  constructor(hooks: DispatcherHooks<W>) {
    this.#h = hooks;
    this.#lostLog = new Throttled('handoff-lost', hooks.log);
  }

  /** How many connections wait for a worker. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** Whether accepting is to pause: too many connections wait. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Takes accepted fds[0..n) from listener `listener` (they are the
   * dispatcher's from now on) and hands them out. The hash strategy's keys
   * are `keys[0..n)` when given (proxy-peek.ts: the PROXY header's client),
   * else each connection's peer address (peerKey()). */
  accepted(fds: Int32Array, n: number, listener: number, keys?: Uint32Array): void {
    const hashed = this.#h.strategy === 'hash';
    const conns: Conn[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const fd = fds[i]!;
      conns[i] = { id: this.#nextId, fd, listener, hash: keys ? keys[i]! : hashed ? peerKey(fd) : 0, batch: 0, sent: 0 };
      this.#nextId = this.#nextId >= 0xffffffff ? 1 : this.#nextId + 1;
    }
    this.#dispatch(conns);
  }

  /**
   * A listener is readable: accepts and hands out in one native call
   * (fast-handoff.ts) when that cannot change who gets what, nor in which
   * order: round-robin or least-connections (the hash strategy needs each
   * peer's address), nothing waiting here, nothing queued on any
   * candidate's channel, and some room in the windows. The picks are the
   * strategy's (pickMany()), planned before the accept; the ledgers are
   * those of the normal path: each handed connection is in its worker's
   * `inflight` until the ACK. A connection whose message did not go (the
   * worker's channel full, EAGAIN; or broken) takes the normal path at
   * once: queued on a channel, or sendFailed().
   *
   * Returns how many connections were accepted (all of them now handed or
   * on the normal path), a -errno from accept (EAGAIN: none waiting), or
   * undefined when the fast path does not apply: then the caller accepts
   * and calls accepted().
   */
  acceptFast(fd: number, listener: number): number | undefined {
    const strategy = this.#h.strategy;
    if (strategy === 'hash' || this.#waiting.length) return undefined;
    const ready = this.#h.candidates();
    const nw = ready.length;
    if (nw === 0 || nw > FAST_MAX_WORKERS) return undefined;
    for (let k = 0; k < nw; k++) {
      const w = ready[k]!;
      if (w.sock.closed || w.sock.pendingSends !== 0) return undefined;
      CHANS[k] = w.sock.fd;
    }
    const { loads, room } = loadsOf(ready, Date.now());
    if (room === 0) return undefined;
    if (this.#nextId + this.#fastBatch > MAX_ID) this.#nextId = 1;
    const planned = pickMany(strategy, loads, this.#cursor, MAX_UNACKED, Math.min(room, this.#fastBatch), PLAN, CURSORS);
    if (planned === 0) return undefined;
    const first = this.#nextId;
    const n = handOff(fd, listener, first, nw, planned);
    if (n <= 0) return n;
    this.#fastBatch = n === planned ? Math.min(planned * 2, MAX_FDS) : FAST_BATCH_MIN;
    this.#cursor = CURSORS[n - 1]!;
    this.#nextId = first + n > MAX_ID ? 1 : first + n;
    for (let k = 0; k < nw; k++) if (SENT[k]! > 0) BATCH_NO[k] = this.#handing(ready[k]!, SENT[k]!);
    const sent = performance.now();
    let back: Conn[] | null = null;
    for (let i = 0; i < n; i++) {
      const k = PLAN[i]!;
      const c: Conn = { id: first + i, fd: FDS[i]!, listener, hash: 0, batch: 0, sent };
      if (SENT[k]! > 0) {
        c.batch = BATCH_NO[k]!;
        ready[k]!.inflight.set(c.id, c);
      } else {
        (back ??= []).push(c);
      }
    }
    if (back) this.#dispatch(back);
    return n;
  }

  /** Hands out what waits (a worker became ready, or caught up). */
  flush(): void {
    if (this.#waiting.length) this.#dispatch([]);
  }

  /** ACK from `w`: it adopted these connections; our copies are closed.
   * `live` and `closed` are its counts as it sent the ACK. */
  acked(w: W, ids: Uint32Array, live: number, closed: number): void {
    let n = 0;
    let latest: number | null = null;
    for (const id of ids) {
      const c = w.inflight.get(id);
      if (!c) continue;
      w.inflight.delete(id);
      if (latest === null || ((c.batch - latest) | 0) > 0) latest = c.batch;
      CLOSE_BUF[n++] = c.fd;
      if (n === CLOSE_BUF.length) {
        native.closeMany(CLOSE_BUF, 0, n);
        n = 0;
      }
    }
    if (n) native.closeMany(CLOSE_BUF, 0, n);
    w.acked += ids.length;
    w.live = live;
    w.closed = closed;
    if (latest !== null) w.window.acked(latest);
    this.flush();
    this.#h.fdsClosed();
  }

  /** LOST from `w`: its `batch`-th hand-off arrived without its fds (ours
   * are still open). `w` gets smaller batches after a back-off; those
   * connections go first, to another worker or when one has room. */
  lost(w: W, batch: number): void {
    const lost: Conn[] = [];
    for (const [id, c] of w.inflight) {
      if (c.batch !== batch) continue;
      w.inflight.delete(id);
      lost.push(c);
    }
    if (lost.length === 0) return;
    w.returned += lost.length;
    w.window.lost(batch, lost.length, Date.now());
    this.#lostLog.emit({ slot: w.slot, pid: w.pid, batch, redispatched: lost.length, window: w.window.size, backoffMs: w.window.backoffMs });
    this.#requeue(lost);
  }

  /** `w` is gone: what it never acknowledged goes to the other workers. */
  takeBack(w: W): void {
    if (w.inflight.size === 0) return;
    const orphans = [...w.inflight.values()];
    w.inflight.clear();
    this.#requeue(orphans);
  }

  /** Connections handed out before any that wait: they go first. */
  #requeue(conns: Conn[]): void {
    this.#waiting = this.#waiting.length ? conns.concat(this.#waiting) : conns;
    this.#dispatch([]);
  }

  /** The end: closes what still waits (no worker will take it), and no
   * more retries by timer. (Until then a back-off's retry still runs:
   * during a shutdown, connections taken back from a dead worker wait for
   * a draining one at its fd limit: shutdown-hold.ts.) */
  close(): void {
    this.#stopping = true;
    for (const c of this.#waiting.splice(0)) native.close(c.fd);
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
  }

  /** Picks a worker for each connection (those waiting first), within
   * each worker's window, and sends each worker its batch; what no worker
   * has room for waits. */
  #dispatch(conns: Conn[]): void {
    const ready = this.#h.candidates();
    const now = Date.now();
    const plan = loadsOf(ready, now);
    const loads = plan.loads;
    let room = plan.room;
    if (room === 0) {
      // Nobody has room: no pass over what waits (it may be long).
      if (conns.length) this.#waiting.push(...conns);
      this.#settle(ready, now);
      return;
    }
    const todo = this.#waiting.length ? this.#waiting.concat(conns) : conns;
    this.#waiting = [];
    const batches: Conn[][] = ready.map(() => []);
    const strategy = this.#h.strategy;
    let i = 0;
    for (; i < todo.length && room > 0; i++) {
      const c = todo[i]!;
      const p = pickWorker(strategy, loads, c.hash, this.#cursor, MAX_UNACKED);
      this.#cursor = p.cursor;
      if (p.index < 0) break;
      const l = loads[p.index]!;
      l.pending++;
      l.open++;
      room--;
      batches[p.index]!.push(c);
    }
    if (i < todo.length) this.#waiting = todo.slice(i);
    for (let k = 0; k < ready.length; k++) {
      const b = batches[k]!;
      if (b.length <= MAX_FDS) {
        if (b.length) this.#send(ready[k]!, b);
        continue;
      }
      for (let j = 0; j < b.length; j += MAX_FDS) this.#send(ready[k]!, b.slice(j, j + MAX_FDS));
    }
    this.#settle(ready, now);
  }

  /** After a dispatch: accepting pauses while too many wait; while any
   * wait, a timer is set for when the first back-off ends. */
  #settle(ready: W[], now: number): void {
    // Nowhere to put them: let the backlog hold the rest until a worker can.
    const paused = this.#waiting.length > MAX_UNACKED ? true : this.#waiting.length === 0 ? false : this.#paused;
    if (paused !== this.#paused) {
      this.#paused = paused;
      this.#h.backpressure(paused);
    }
    if (this.#waiting.length === 0 || this.#stopping) return;
    let at = Infinity;
    for (const w of ready) if (w.window.until > now) at = Math.min(at, w.window.until);
    if (at === Infinity || (this.#retryTimer && this.#retryAt <= at)) return;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryAt = at;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      if (!this.#stopping) this.flush();
    }, at - now);
  }

  /** `n` connections go to `w` in its next CONNS message: its number. */
  #handing(w: W, n: number): number {
    w.batches = (w.batches + 1) >>> 0;
    w.handed += n;
    this.handed += n;
    return w.batches;
  }

  #send(w: W, batch: Conn[]): void {
    const n = batch.length;
    const fds = new Array<number>(n);
    this.#handing(w, n);
    const sent = performance.now();
    for (let i = 0; i < n; i++) {
      const c = batch[i]!;
      SEND_IDS[i] = c.id;
      SEND_LISTENERS[i] = c.listener;
      fds[i] = c.fd;
      c.batch = w.batches;
      c.sent = sent;
      w.inflight.set(c.id, c);
    }
    // The fds are ours until the worker acks; the send only borrows them.
    w.sock.send({ data: encodeConns(SEND_IDS, SEND_LISTENERS, n), fds }).catch((err: Error) => {
      this.#h.log('handoff-error', { slot: w.slot, pid: w.pid, error: errorCode(err) });
      this.#h.sendFailed(w, err);
    });
  }
}

/** The strategies' view of the candidates (strategies.ts), each within
 * its window, and how many connections they have room for in all. */
function loadsOf(ready: readonly Target[], now: number): { loads: WorkerLoad[]; room: number } {
  let room = 0;
  const at = performance.now();
  const loads: WorkerLoad[] = new Array(ready.length);
  for (let k = 0; k < ready.length; k++) {
    const w = ready[k]!;
    const r = w.window.room(w.inflight.size, now);
    room += r;
    // The ledger is in hand-off order: its first entry waited longest.
    const oldest = w.inflight.size ? w.inflight.values().next().value! : null;
    loads[k] = { pending: w.inflight.size, open: openAt(w), limit: w.inflight.size + r, unackedMs: oldest ? at - oldest.sent : 0 };
  }
  return { loads, room };
}

/** Connections handed to `w` and not reported closed (pending ones included):
 * the counters are modulo 2^32 on the worker's side. */
function openAt(w: Target): number {
  return (w.handed - w.returned - w.closed) >>> 0;
}

/** The hash strategy's key of a connection's peer address (0 for a Unix
 * socket's peer). */
export function peerKey(fd: number): number {
  const port = native.inetName(fd, true, NAME_BUF);
  return port < 0 ? 0 : addressKey(NAME_BUF);
}
