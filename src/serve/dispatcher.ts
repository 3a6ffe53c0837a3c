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
 *   worker; once every ready worker has lost them they wait, and are tried
 *   again in 100 ms, so that workers at their limit cost no busy loop;
 * - a worker gone (dead, killed, its channel broken): takeBack() hands its
 *   unacknowledged connections to the others;
 * - no worker can take a connection (none ready, or all at MAX_UNACKED):
 *   it waits, in order, and goes with the next dispatch. Past MAX_UNACKED
 *   waiting, the owner is told to stop accepting (`backpressure`): the
 *   kernel's backlog holds the rest meanwhile.
 * Which worker gets a connection is the strategy's pick (strategies.ts),
 * over the candidates the owner gives (the serving generation's ready
 * workers); each worker gets what was picked for it in one message.
 */
import { native } from '../native';
import type { UnixSocket } from '../socket/socket';
import { MAX_FDS } from '../socket/frame';
import { encodeConns } from './protocol';
import { pickWorker, type Strategy, type WorkerLoad } from './strategies';
import { errorCode, type Log } from './log';

/** Worker backpressure: past this many unacknowledged connections a worker
 * (stopped, or overwhelmed) gets no more until it catches up; past this
 * many waiting, the primary stops accepting. */
export const MAX_UNACKED = 1024;
/** How long connections every ready worker lost wait before another try. */
const LOST_RETRY_MS = 100;

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
  /** How many workers reported it LOST (arrived without its fd). */
  losses: number;
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
  handed: number;
  acked: number;
  /** The live connections it last reported (least-connections). */
  live: number;
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

export class Dispatcher<W extends Target> {
  readonly #h: DispatcherHooks<W>;
  #waiting: Conn[] = [];
  #retryTimer: NodeJS.Timeout | null = null;
  #cursor = 0;
  #nextId = 1;
  #paused = false;
  #stopping = false;
  /** Connections handed out, counting every hand-off (re-dispatches too). */
  handed = 0;

  constructor(hooks: DispatcherHooks<W>) {
    this.#h = hooks;
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
   * dispatcher's from now on) and hands them out. */
  accepted(fds: Int32Array, n: number, listener: number): void {
    const hashed = this.#h.strategy === 'hash';
    const conns: Conn[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const fd = fds[i]!;
      conns[i] = { id: this.#nextId, fd, listener, hash: hashed ? clientHash(fd) : 0, batch: 0, losses: 0 };
      this.#nextId = this.#nextId >= 0xffffffff ? 1 : this.#nextId + 1;
    }
    this.#dispatch(conns);
  }

  /** Hands out what waits (a worker became ready, or caught up). */
  flush(): void {
    if (this.#waiting.length) this.#dispatch([]);
  }

  /** ACK from `w`: it adopted these connections; our copies are closed. */
  acked(w: W, ids: Uint32Array, live: number): void {
    let n = 0;
    for (const id of ids) {
      const c = w.inflight.get(id);
      if (!c) continue;
      w.inflight.delete(id);
      CLOSE_BUF[n++] = c.fd;
      if (n === CLOSE_BUF.length) {
        native.closeMany(CLOSE_BUF, 0, n);
        n = 0;
      }
    }
    if (n) native.closeMany(CLOSE_BUF, 0, n);
    w.acked += ids.length;
    w.live = live;
    this.flush();
    this.#h.fdsClosed();
  }

  /** LOST from `w`: its `batch`-th hand-off arrived without its fds (ours
   * are still open); those connections go to another worker. */
  lost(w: W, batch: number): void {
    const lost: Conn[] = [];
    for (const [id, c] of w.inflight) {
      if (c.batch !== batch) continue;
      w.inflight.delete(id);
      c.losses++;
      lost.push(c);
    }
    this.#h.log('handoff-lost', { slot: w.slot, pid: w.pid, batch, redispatched: lost.length });
    if (lost.length === 0) return;
    const ready = this.#h.candidates().length;
    const again = lost.filter((c) => c.losses < ready);
    const later = lost.filter((c) => c.losses >= ready);
    if (again.length) this.#dispatch(again, w);
    if (later.length) {
      for (const c of later) c.losses = 0;
      this.#waiting.push(...later);
      this.#retryTimer ??= setTimeout(() => {
        this.#retryTimer = null;
        if (!this.#stopping) this.flush();
      }, LOST_RETRY_MS);
    }
  }

  /** `w` is gone: what it never acknowledged goes to the other workers. */
  takeBack(w: W): void {
    if (w.inflight.size === 0) return;
    const orphans = [...w.inflight.values()];
    w.inflight.clear();
    this.#dispatch(orphans);
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

  /** Picks a worker for each connection (not `avoid`, if another is ready)
   * and sends each worker its batch. */
  #dispatch(conns: Conn[], avoid?: W): void {
    const todo = this.#waiting.length ? this.#waiting.splice(0).concat(conns) : conns;
    let ready = this.#h.candidates();
    if (avoid && ready.length > 1) ready = ready.filter((w) => w !== avoid);
    const loads: WorkerLoad[] = ready.map((w) => ({ pending: w.inflight.size, live: w.live }));
    const batches: Conn[][] = ready.map(() => []);
    const strategy = this.#h.strategy;
    for (const c of todo) {
      const p = pickWorker(strategy, loads, c.hash, this.#cursor, MAX_UNACKED);
      this.#cursor = p.cursor;
      if (p.index < 0) {
        this.#waiting.push(c);
        continue;
      }
      loads[p.index]!.pending++;
      batches[p.index]!.push(c);
    }
    for (let i = 0; i < ready.length; i++) {
      const b = batches[i]!;
      for (let j = 0; j < b.length; j += MAX_FDS) this.#send(ready[i]!, b.slice(j, j + MAX_FDS));
    }
    // Nowhere to put them: let the backlog hold the rest until a worker can.
    const paused = this.#waiting.length > MAX_UNACKED ? true : this.#waiting.length === 0 ? false : this.#paused;
    if (paused !== this.#paused) {
      this.#paused = paused;
      this.#h.backpressure(paused);
    }
  }

  #send(w: W, batch: Conn[]): void {
    const n = batch.length;
    const ids = new Uint32Array(n);
    const lis = new Uint16Array(n);
    const fds = new Array<number>(n);
    w.batches = (w.batches + 1) >>> 0;
    for (let i = 0; i < n; i++) {
      const c = batch[i]!;
      ids[i] = c.id;
      lis[i] = c.listener;
      fds[i] = c.fd;
      c.batch = w.batches;
      w.inflight.set(c.id, c);
    }
    w.handed += n;
    this.handed += n;
    // The fds are ours until the worker acks; the send only borrows them.
    w.sock.send({ data: encodeConns(ids, lis, n), fds }).catch((err: Error) => {
      this.#h.log('handoff-error', { slot: w.slot, pid: w.pid, error: errorCode(err) });
      this.#h.sendFailed(w, err);
    });
  }
}

/** FNV-1a of the client's IP address (not its port): the hash strategy's key. */
function clientHash(fd: number): number {
  const port = native.inetName(fd, true, NAME_BUF);
  if (port < 0) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < NAME_BUF.length && NAME_BUF[i] !== 0; i++) {
    h ^= NAME_BUF[i]!;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}
