/**
 * What a worker of `fdpass serve` tells the primary about the connections it
 * was handed: one ACK per loop turn for everything adopted in it (after
 * which the primary closes its copies), and its load: live connections,
 * requests served, and connections closed since adopted (cumulative, modulo
 * 2^32), from which the primary's least-connections strategy counts what is
 * open (handed - closed) without waiting for a report.
 *
 * Closes go out with the next ACK, or after LOAD_DELAY_MS in a LOAD when no
 * ACK carried them (a busy worker gets hand-offs every turn, and then sends
 * no LOAD at all). Only when the primary asked for load reports.
 */
import type { UnixSocket } from '../socket/socket';
import { encodeAck, encodeLoad } from './protocol';

/** How long (ms) a close may wait for an ACK to carry it before a LOAD
 * goes. Measured (bench/serve.ts paced run, A/B): no difference to the
 * least-connections tail against a LOAD at the end of the loop turn. */
const LOAD_DELAY_MS = 1;
/** Most ids in one ACK message. */
const ACK_IDS = 16384;

/**
 * When ACKs go. The contract: a connection is acknowledged before this
 * process reads a byte of it, so that a worker dying after it consumed a
 * request never has that connection handed to another worker (which would
 * wait for a request that is gone). Reads start when the event loop next
 * polls (net.Socket, and the PROXY header reader on its next turn), so one
 * ACK at the end of the loop turn (a microtask), after the turn's
 * connections are adopted, keeps it, and carries a whole receive batch.
 *
 * Acknowledging at once, before adoption (the fds are this process's from
 * the moment recvmsg returns them), was measured against this and is not
 * faster: idle p50 (`bench:serve`, wrk -t1 -c1, new connection each, 5-7
 * rounds) was 20 us worse with round-robin on Node 26 and even with
 * least-connections; on Node 20 within noise. The primary's wake-up then
 * lands in the middle of the adoption instead of at its end: on a shared
 * vCPU it preempts the worker just the same.
 */
export class WorkerReport {
  readonly #sock: UnixSocket;
  readonly #reportLoad: boolean;
  readonly #live: () => number;
  #acks: number[] = [];
  #ackScheduled = false;
  #loadScheduled = false;
  /** Requests served (the http servers' 'request' events). */
  requests = 0;
  #closed = 0;
  /** #closed as the primary last heard it (in an ACK or a LOAD). */
  #reportedClosed = 0;

  constructor(sock: UnixSocket, reportLoad: boolean, live: () => number) {
    this.#sock = sock;
    this.#reportLoad = reportLoad;
    this.#live = live;
  }

  /** The connections of one CONNS message, `ids[0..n)`, arrived (their
   * fds are this process's now): acknowledged at the end of the loop turn,
   * after they are adopted, before any is read. */
  arrived(ids: ArrayLike<number>, n: number): void {
    for (let i = 0; i < n; i++) this.#acks.push(ids[i]!);
    if (this.#ackScheduled || n === 0) return;
    this.#ackScheduled = true;
    queueMicrotask(() => this.#flushAcks());
  }

  /** An adopted connection is gone (closed, refused, or never served). */
  closed(): void {
    this.#closed = (this.#closed + 1) >>> 0;
    if (this.#loadScheduled || !this.#reportLoad) return;
    this.#loadScheduled = true;
    // The close goes with the next ACK (a worker that is handed connections
    // acknowledges every turn), or within LOAD_DELAY_MS in a LOAD of its
    // own: not one message, and one primary wake-up, per closed connection.
    setTimeout(() => {
      this.#loadScheduled = false;
      if (this.#closed !== this.#reportedClosed) this.sendLoad();
    }, LOAD_DELAY_MS).unref();
  }

  /** A LOAD now (the primary asked, or the worker is draining). */
  sendLoad(): void {
    if (this.#sock.closed) return;
    this.#sock.send(encodeLoad(this.#live(), this.requests, this.#closed)).catch(() => {});
    this.#reportedClosed = this.#closed;
  }

  #flushAcks(): void {
    this.#ackScheduled = false;
    const ids = this.#acks;
    this.#acks = [];
    for (let i = 0; i < ids.length; i += ACK_IDS) {
      const part = ids.slice(i, i + ACK_IDS);
      this.#sock.send(encodeAck(part, part.length, this.#live(), this.#closed)).catch(() => {});
    }
    this.#reportedClosed = this.#closed;
  }
}
