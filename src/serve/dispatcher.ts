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
 * it in one message.
 */
import { performance } from 'node:perf_hooks';
import { native } from '../native';
import type { UnixSocket } from '../socket/socket';
import { MAX_FDS } from '../socket/frame';
import { encodeConns } from './protocol';
import { addressKey, pickWorker, type Strategy, type WorkerLoad } from './strategies';
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

  /** Shutting down: no more retries by timer (what waits still goes with
   * the next accept or acknowledgement). */
  stop(): void {
    this.#stopping = true;
  }

  /** The end: closes what still waits (no worker will take it). */
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
    const at = performance.now();
    let room = 0;
    const loads: WorkerLoad[] = ready.map((w) => {
      const r = w.window.room(w.inflight.size, now);
      room += r;
      // The ledger is in hand-off order: its first entry waited longest.
      const oldest = w.inflight.size ? w.inflight.values().next().value! : null;
      return { pending: w.inflight.size, open: openAt(w), limit: w.inflight.size + r, unackedMs: oldest ? at - oldest.sent : 0 };
    });
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

  #send(w: W, batch: Conn[]): void {
    const n = batch.length;
    const fds = new Array<number>(n);
    const sent = performance.now();
    w.batches = (w.batches + 1) >>> 0;
    for (let i = 0; i < n; i++) {
      const c = batch[i]!;
      SEND_IDS[i] = c.id;
      SEND_LISTENERS[i] = c.listener;
      fds[i] = c.fd;
      c.batch = w.batches;
      c.sent = sent;
      w.inflight.set(c.id, c);
    }
    w.handed += n;
    this.handed += n;
    // The fds are ours until the worker acks; the send only borrows them.
    w.sock.send({ data: encodeConns(SEND_IDS, SEND_LISTENERS, n), fds }).catch((err: Error) => {
      this.#h.log('handoff-error', { slot: w.slot, pid: w.pid, error: errorCode(err) });
      this.#h.sendFailed(w, err);
    });
  }
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
