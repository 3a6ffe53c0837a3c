/**
 * Spare fds of the primary: a few fds kept open (on /dev/null) and given up
 * just before something needs fds the primary may not have. Spawning a
 * worker needs four for a moment (the socketpair and libuv's exec-error
 * pipe): without spares, a primary at RLIMIT_NOFILE (EMFILE on accept, its
 * fds all held by connections waiting for acknowledgement) could not
 * replace a dead worker, and the connections it holds would wait for ever.
 * On shutdown they go to the last accepts.
 *
 * The fds are this object's alone; nothing else ever sees their numbers.
 */
import * as fs from 'node:fs';

const SPARE_FDS = 6;

export class SpareFds {
  #fds: number[] = [];

  /** Fewer than the full set are held (some were given up, or the limit
   * was reached when taking them). */
  get short(): boolean {
    return this.#fds.length < SPARE_FDS;
  }

  /** Tops the set up; at the fd limit it stays short until fds free up. */
  take(): void {
    while (this.#fds.length < SPARE_FDS) {
      try {
        this.#fds.push(fs.openSync('/dev/null', 'r'));
      } catch {
        return;
      }
    }
  }

  /** Closes them all, so that the caller can use their fd numbers. */
  release(): void {
    for (const fd of this.#fds.splice(0)) fs.closeSync(fd);
  }

  /** Runs `fn` with the spares given up for it, and takes them back after. */
  lend<T>(fn: () => T): T {
    this.release();
    try {
      return fn();
    } finally {
      this.take();
    }
  }
}
