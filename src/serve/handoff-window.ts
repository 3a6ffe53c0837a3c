/**
 * Flow control of the hand-offs to one worker: how many unacknowledged
 * connections it may have (its window), and from when it may get more
 * (its back-off). Pure state, no I/O and no timer: the dispatcher asks and
 * reports, and keeps the timer.
 *
 * A worker at its RLIMIT_NOFILE receives a hand-off truncated (MSG_CTRUNC:
 * the kernel drops the fds that do not fit) and reports it LOST. Sending it
 * the same batch again would fail the same way for ever, and sending again
 * at once is a storm. So each LOST halves the window (down to one
 * connection: a worker with one free slot still gets work) and closes it
 * for a back-off (10 ms doubling to 1 s while LOSTs go on, as accept's
 * back-off does: a worker that stays full costs about one hand-off a
 * second, one that frees fds gets work again within that second). An
 * acknowledgement of a batch sent after the last LOST shows the worker had
 * room: the back-off ends and the window doubles back, up to its maximum.
 * (Acknowledgements of batches sent before that LOST say nothing new: the
 * worker may send them after the LOST.)
 */

/** Connections a worker may have unacknowledged: past this a worker
 * (stopped, or overwhelmed) gets no more until it catches up. */
export const MAX_UNACKED = 1024;
const BACKOFF_MIN_MS = 10;
const BACKOFF_MAX_MS = 1000;

export class HandoffWindow {
  /** How many unacknowledged connections the worker may have now (1..max). */
  size: number;
  readonly #max: number;
  #backoffMs = 0;
  /** No hand-off before this time (Date.now() ms); 0: none. */
  #until = 0;
  /** The batch number of the last LOST, if any. */
  #lostBatch: number | null = null;

  constructor(max = MAX_UNACKED) {
    this.size = max;
    this.#max = max;
  }

  /** Until when (Date.now() ms) no hand-off may go; at or before `now`: open. */
  get until(): number {
    return this.#until;
  }

  /** How many more connections may go now, with `pending` unacknowledged. */
  room(pending: number, now: number): number {
    return now < this.#until ? 0 : Math.max(0, this.size - pending);
  }

  /** Batch number `batch`, of `n` connections, arrived without its fds. */
  lost(batch: number, n: number, now: number): void {
    this.size = Math.max(1, Math.min(this.size, n) >> 1);
    this.#backoffMs = this.#backoffMs === 0 ? BACKOFF_MIN_MS : Math.min(this.#backoffMs * 2, BACKOFF_MAX_MS);
    this.#until = now + this.#backoffMs;
    this.#lostBatch = batch;
  }

  /** Connections of batch number `batch` (the latest acknowledged) arrived with their fds. */
  acked(batch: number): void {
    if (this.#lostBatch === null) return;
    // Batch numbers wrap at 2^32: compare them as serial numbers.
    if (((batch - this.#lostBatch) | 0) <= 0) return;
    this.#backoffMs = 0;
    this.#until = 0;
    this.size = Math.min(this.size * 2, this.#max);
    if (this.size === this.#max) this.#lostBatch = null;
  }

  /** The current back-off (ms), 0 when none: for the log. */
  get backoffMs(): number {
    return this.#backoffMs;
  }
}
