/**
 * What a worker of `fdpass serve` tells the primary about the connections it
 * was handed: ACKs (after which the primary closes its copies), and its
 * load: live connections,
 * requests served, and connections closed since adopted (cumulative, modulo
 * 2^32), from which the primary's least-connections strategy counts what is
 * open (handed - closed) without waiting for a report.
 *
 * Closes go out with the next ACK, or at the end of the loop turn in a LOAD
 * when no ACK carried them (a busy worker gets hand-offs every turn, and
 * then sends no LOAD at all). Only when the primary asked for load reports.
 */
import type { UnixSocket } from '../socket/socket';
import { encodeAck, encodeLoad } from './protocol';

/** Most ids in one ACK message. */
const ACK_IDS = 16384;

/**
 * When ACKs go. The contract: a connection is acknowledged before this
 * process reads a byte of it, so that a worker dying after it consumed a
 * request never has that connection handed to another worker (which would
 * wait for a request that is gone). Its fds are this process's from the
 * moment recvmsg returned them: a death before or after adoption resets
 * them alike. So the first CONNS of a loop turn is acknowledged at once,
 * before its connections are adopted: the primary's wake-up (closing its
 * copies) then runs on another CPU while this one adopts, instead of after
 * the adoption, on the path to the first read. Later CONNS of the same turn
 * (a receive batch of several) are acknowledged together at the end of the
 * turn (a microtask): one message for the batch. Reads start on a later
 * turn in both cases (net.Socket and the PROXY header reader start reading
 * when the event loop next polls).
 */

export class WorkerReport {
  readonly #sock: UnixSocket;
  readonly #reportLoad: boolean;
  readonly #live: () => number;
  #acks: number[] = [];
  #ackScheduled = false;
  /** An ACK went out at once in this loop turn (cleared by a microtask). */
  #ackedThisTurn = false;
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
   * fds are this process's now) and are about to be adopted: acknowledged
   * at once if they are the loop turn's first, else at its end (see above). */
  arrived(ids: ArrayLike<number>, n: number): void {
    if (n === 0) return;
    if (!this.#ackedThisTurn && n <= ACK_IDS) {
      this.#ackedThisTurn = true;
      queueMicrotask(() => (this.#ackedThisTurn = false));
      // Not adopted yet: counted live as they will be in a moment.
      this.#sock.send(encodeAck(ids, n, this.#live() + n, this.#closed)).catch(() => {});
      this.#reportedClosed = this.#closed;
      return;
    }
    for (let i = 0; i < n; i++) this.#acks.push(ids[i]!);
    if (this.#ackScheduled) return;
    this.#ackScheduled = true;
    queueMicrotask(() => this.#flushAcks());
  }

  /** An adopted connection is gone (closed, refused, or never served). */
  closed(): void {
    this.#closed = (this.#closed + 1) >>> 0;
    if (this.#loadScheduled || !this.#reportLoad) return;
    this.#loadScheduled = true;
    setImmediate(() => {
      this.#loadScheduled = false;
      if (this.#closed !== this.#reportedClosed) this.sendLoad();
    });
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
