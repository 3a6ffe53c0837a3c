/**
 * Coalescing of a job that must not overlap itself (the primary's reload):
 * at most one run at a time; a call while one runs queues one more run,
 * which starts once the running one has settled; calls while a run is
 * queued join that one. Every call settles, with the run that served it
 * (so ten calls in a row cost at most two runs, not ten).
 */
export class Coalescer {
  readonly #job: () => Promise<void>;
  #running: Promise<void> | null = null;
  #queued: Promise<void> | null = null;

  constructor(job: () => Promise<void>) {
    this.#job = job;
  }

  /** What a call now does: start a run, queue one, or join the queued one. */
  get next(): 'run' | 'queue' | 'join' {
    return this.#queued ? 'join' : this.#running ? 'queue' : 'run';
  }

  run(): Promise<void> {
    if (this.#queued) return this.#queued;
    if (!this.#running) return this.#start();
    const settled = () => {
      this.#queued = null;
      return this.#start();
    };
    this.#queued = this.#running.then(settled, settled);
    return this.#queued;
  }

  #start(): Promise<void> {
    const run: Promise<void> = this.#job().finally(() => {
      if (this.#running === run) this.#running = null;
    });
    this.#running = run;
    return run;
  }
}
