/**
 * A worker's drain (SHUTDOWN), as state: until when its connections may
 * run, and whether the primary still holds it. Pure state, no I/O and no
 * timer: worker.ts's drain loop asks (step()) and acts.
 *
 * A plain SHUTDOWN: what is live gets `timeout` ms; the worker exits as
 * soon as nothing is live, or at the deadline (what is live then is cut).
 * A SHUTDOWN with HOLD (protocol.ts): the same, but the primary may still
 * hand over connections (those it took back from a worker that died during
 * the shutdown): each one that comes moves the deadline to `timeout` ms
 * after its arrival, and the worker does not exit, even with nothing live,
 * until released (a SHUTDOWN without HOLD, or the primary gone): a deadline
 * passed while held cuts what is live and the worker waits on. The primary
 * bounds the wait (supervisor.ts: SIGKILL past its deadlines).
 */
export type DrainStep = 'wait' | 'cut' | 'exit';

export class WorkerDrain {
  /** The primary may still hand over connections: do not exit yet. */
  held: boolean;
  /** What is live past this (Date.now() ms) is cut. */
  deadline: number;
  readonly #timeout: number;

  constructor(timeout: number, hold: boolean, now: number) {
    this.#timeout = timeout;
    this.held = hold;
    this.deadline = now + timeout;
  }

  /** Connections came while held: they get the whole timeout. */
  arrived(now: number): void {
    if (this.held) this.deadline = Math.max(this.deadline, now + this.#timeout);
  }

  /** The release (SHUTDOWN without HOLD, or the primary gone): exit once
   * nothing is live, by `timeout` ms from now at the latest. */
  release(timeout: number, now: number): void {
    this.held = false;
    this.deadline = Math.min(this.deadline, now + timeout);
  }

  /** What to do now with `live` connections: wait (and ask again), cut
   * what is live (past the deadline, still held), or cut it and exit. */
  step(live: number, now: number): DrainStep {
    if (now >= this.deadline) return this.held ? (live > 0 ? 'cut' : 'wait') : 'exit';
    return live === 0 && !this.held ? 'exit' : 'wait';
  }
}
