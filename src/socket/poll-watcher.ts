/**
 * PollWatcher: the one owner of a libuv poll watcher on a socket fd, used by
 * every socket, server and listener that waits for readiness.
 *
 * The native watcher is opened lazily (the first set() that asks for
 * events) and closed by close(); set() is a no-op when nothing changes, so
 * owners can call it after every state change without paying an
 * epoll_ctl() each time.
 *
 * POLLERR: libuv reports a pending socket error (a reset peer, a failed
 * listener) as UV_EBADF and stops the watcher. The watcher then takes the
 * real error with getsockopt(SO_ERROR), which also clears it without
 * consuming data, and hands it to `onError` (0 when the socket had none).
 * It is stopped at that point: the owner decides what the error means and
 * re-arms with set() if it carries on.
 *
 * The watcher does not own the fd: its owner closes the watcher first, then
 * the fd.
 */
import { native, type PollHandle } from '../native';

export const READABLE = 1;
export const WRITABLE = 2;

export class PollWatcher {
  readonly #fd: number;
  readonly #onReady: (events: number) => void;
  readonly #onError: (errno: number) => void;
  #handle: PollHandle | null = null;
  #events = 0;
  #refed = true;
  #closed = false;

  /**
   * @param onReady  called with READABLE | WRITABLE bits
   * @param onError  called with the socket's SO_ERROR (a negative errno, or
   *                 0 if none) after POLLERR; the watcher is stopped then
   */
  constructor(fd: number, onReady: (events: number) => void, onError: (errno: number) => void) {
    this.#fd = fd;
    this.#onReady = onReady;
    this.#onError = onError;
  }

  /** The events being watched now. */
  get events(): number {
    return this.#events;
  }

  /**
   * Watch for `events` (0 stops watching). Returns 0, or a negative errno
   * when libuv could not open or start the watcher (the events then stay
   * as they were).
   */
  set(events: number): number {
    if (this.#closed || events === this.#events) return 0;
    if (this.#handle === null) {
      const h = native.pollOpen(this.#fd, (ev) => this.#dispatch(ev));
      if (typeof h === 'number') return h;
      this.#handle = h;
      if (!this.#refed) native.pollRef(h, false);
    }
    const r = native.pollSet(this.#handle, events);
    if (r < 0) return r;
    this.#events = events;
    return 0;
  }

  /** Whether an armed watcher keeps the event loop alive (default true). */
  ref(on: boolean): void {
    this.#refed = on;
    if (this.#handle) native.pollRef(this.#handle, on);
  }

  /** Stops and frees the native watcher; safe twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#events = 0;
    if (this.#handle) native.pollClose(this.#handle);
    this.#handle = null;
  }

  #dispatch(events: number): void {
    if (this.#closed) return;
    if (events < 0) {
      this.#events = 0; // libuv stopped the watcher
      const e = native.sockError(this.#fd);
      this.#onError(e < 0 ? e : 0);
      return;
    }
    this.#onReady(events);
  }
}
