/**
 * Acceptor: the accept loop of one listening socket, shared by UnixServer
 * and the primary of `fdpass serve` (one per listener).
 *
 * - Each readiness event accepts a batch (accept4 until EAGAIN or the batch
 *   is full, in one native call) and hands the new fds to `onAccept`, which
 *   owns them from then on.
 * - Accepting is on only while the owner wants connections (setWanted) and
 *   no back-off is running. Nothing is lost while it is off: connections
 *   wait in the kernel's backlog.
 * - A failed accept() never makes the loop spin. Out of fds (EMFILE,
 *   ENFILE), buffers or memory, the listener stays readable, so polling on
 *   would burn a core: accepting stops for a back-off (10 ms doubling to
 *   1 s) and the error goes to `onError`. Any other error backs off the same
 *   way (nothing tells us it will not repeat). Out of fds, it also resumes
 *   as soon as this process closes an fd through one of fdpass's owners
 *   (fdsFreed()): a server at RLIMIT_NOFILE accepts again the moment a
 *   connection closes, not up to a second later.
 * - After a run of failures, the first batch that works calls `onResume`.
 */
import { native } from '../native';
import { EAGAIN, EMFILE, ENFILE } from '../errno';
import { MAX_FDS } from './frame';
import { PollWatcher, READABLE } from './poll-watcher';

export interface AcceptorHandlers {
  /** New connections: fds[0..n). They are the handler's from now on; the
   * array is reused after the call returns. */
  onAccept(fds: Int32Array, n: number): void;
  /** accept(2) failed (never EAGAIN), or the listener reported an error
   * (POLLERR); accepting backs off and resumes by itself. */
  onError(errno: number): void;
  /** Accepting works again after failures: since when (ms) and how many. */
  onResume?(afterMs: number, errors: number): void;
  /** Where given, tried first for each batch: accepts on the listener and
   * hands the connections on itself (the primary's one-crossing hand-off,
   * src/serve/dispatcher.ts acceptFast()). Returns how many it accepted
   * (they are its own, onAccept does not see them), a -errno from accept
   * (handled as accept's: EAGAIN, or a failure and its back-off), or
   * undefined to have this batch accepted the usual way. */
  acceptFast?(): number | undefined;
  /** Out of fds (accept failed with EMFILE or ENFILE): where given, one
   * more accept, of one connection, runs inside it, with whatever fds the
   * owner frees for it meanwhile (fdpass serve's control socket borrows the
   * primary's spare fds, so that `fdpass status` is answered at
   * RLIMIT_NOFILE). Returns what `accept` returns, or undefined when no
   * fds were lent (the failure stands). */
  lendFds?(accept: () => number): number | undefined;
}

const BACKOFF_MIN_MS = 10;
const BACKOFF_MAX_MS = 1000;
/** One batch at a time in this thread: handlers take the fds before return. */
const ACCEPTED = new Int32Array(MAX_FDS);
/** Room for the one connection accepted with lent fds. */
const ONE = ACCEPTED.subarray(0, 1);
/** Acceptors backing off for want of fds, to wake when fds are freed. */
const starved = new Set<Acceptor>();

/**
 * This process closed fds it owned: acceptors backing off for want of fds
 * try again now. Cheap when nobody is starved; owners of fds (sockets,
 * messages, the primary's acknowledged connections) call it as they close.
 */
export function fdsFreed(): void {
  if (starved.size === 0) return;
  for (const a of [...starved]) a.resume();
}

export class Acceptor {
  readonly #fd: number;
  readonly #h: AcceptorHandlers;
  readonly #watcher: PollWatcher;
  #wanted = false;
  #closed = false;
  #backoff: NodeJS.Timeout | null = null;
  #backoffMs = 0;
  #refed = true;
  /** The current run of failures: since when, how many. */
  #streak: { since: number; errors: number } | null = null;

  /** `fd` stays its owner's: close the acceptor before closing it. */
  constructor(fd: number, handlers: AcceptorHandlers) {
    this.#fd = fd;
    this.#h = handlers;
    this.#watcher = new PollWatcher(fd, () => this.acceptOnce(), (e) => {
      // A listener error (POLLERR): report it, and take it as a failed
      // accept so that a persistent one cannot spin either.
      if (e < 0) this.#failed(e);
      else this.#update();
    });
  }

  /** Whether the owner wants connections now. */
  setWanted(on: boolean): void {
    this.#wanted = on;
    this.#update();
  }

  /** Whether a back-off after a failed accept is running. */
  get backingOff(): boolean {
    return this.#backoff !== null;
  }

  /**
   * Accepts one batch now, whatever the state (the primary drains its
   * backlogs this way on shutdown): how many were accepted and handed to
   * onAccept, or a negative errno (EAGAIN: none waiting). A failure other
   * than EAGAIN starts a back-off and goes to onError.
   */
  acceptOnce(): number {
    if (this.#closed) return EAGAIN;
    const fast = this.#h.acceptFast?.();
    let n = fast ?? native.accept(this.#fd, ACCEPTED);
    if ((n === EMFILE || n === ENFILE) && fast === undefined && this.#h.lendFds) {
      n = this.#h.lendFds(() => native.accept(this.#fd, ONE)) ?? n;
    }
    if (n < 0) {
      if (n !== EAGAIN) this.#failed(n);
      return n;
    }
    this.#backoffMs = 0;
    if (this.#streak) {
      const s = this.#streak;
      this.#streak = null;
      this.#h.onResume?.(Date.now() - s.since, s.errors);
    }
    if (fast === undefined) this.#h.onAccept(ACCEPTED, n);
    return n;
  }

  /** Ends a back-off now (fdsFreed() calls it for fd exhaustion). */
  resume(): void {
    starved.delete(this);
    if (this.#backoff === null) return;
    clearTimeout(this.#backoff);
    this.#backoff = null;
    this.#update();
  }

  ref(on: boolean): void {
    this.#refed = on;
    this.#watcher.ref(on);
    if (this.#backoff) {
      if (on) this.#backoff.ref();
      else this.#backoff.unref();
    }
  }

  /** Stops accepting for good; the fd stays open (its owner closes it). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    starved.delete(this);
    if (this.#backoff) clearTimeout(this.#backoff);
    this.#backoff = null;
    this.#watcher.close();
  }

  #failed(errno: number): void {
    const st = this.#streak ??= { since: Date.now(), errors: 0 };
    st.errors++;
    if (this.#backoff === null && !this.#closed) {
      this.#backoffMs = Math.min(Math.max(this.#backoffMs * 2, BACKOFF_MIN_MS), BACKOFF_MAX_MS);
      this.#backoff = setTimeout(() => {
        this.#backoff = null;
        starved.delete(this);
        this.#update();
      }, this.#backoffMs);
      if (!this.#refed) this.#backoff.unref();
      if (errno === EMFILE || errno === ENFILE) starved.add(this);
      this.#update();
    }
    this.#h.onError(errno);
  }

  #update(): void {
    if (this.#closed) return;
    const want = this.#wanted && this.#backoff === null ? READABLE : 0;
    const r = this.#watcher.set(want);
    // The watcher could not be armed (uv_poll_init failed: out of memory or
    // fds): report it and try again after a back-off.
    if (r < 0) this.#failed(r);
  }
}
