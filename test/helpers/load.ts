/**
 * Client load: concurrent loops making one request after another, each on a
 * new connection (attempt()), bounded by a count or stopped by the caller,
 * with the outcomes counted and the failures kept for the caller to explain.
 */
import * as assert from 'node:assert/strict';
import { attempt, type Attempt, type Endpoint } from './http';
import { sleep, waitFor } from './wait';

export interface LoadOptions {
  /** Concurrent client loops. */
  loops: number;
  /** Stop after this many attempts in all (default: until stop()). */
  total?: number;
  /** The request path, or a function giving one per attempt. */
  path?: string | (() => string);
  /** Per-request deadline (ms, default 10 s). */
  timeout?: number;
  /** A refused connect ends that loop and is not a failure (the listener closed). */
  refusedEnds?: boolean;
  /** Keep the Attempt of every success too (default: only counts). */
  keepAll?: boolean;
}

/**
 * `loops` client loops, each making one request after another on new
 * connections, until `total` attempts or stop(). Counts successes (per
 * worker too) and keeps every failed Attempt; after a failure a loop pauses
 * 5 ms, so that a server that refuses everything is not hammered in a
 * tight loop.
 */
export class ConnectionLoad {
  ok = 0;
  attempts = 0;
  /** Loops ended by a refused connect (refusedEnds). */
  refused = 0;
  readonly failures: Attempt[] = [];
  /** Every success, in order of completion (keepAll only). */
  readonly successes: Attempt[] = [];
  readonly byWorker = new Map<number, number>();
  readonly done: Promise<void>;
  readonly started = Date.now();
  #stopped = false;

  constructor(e: Endpoint, o: LoadOptions) {
    const pathOf = typeof o.path === 'function' ? o.path : () => (o.path as string | undefined) ?? '/';
    const loop = async () => {
      while (!this.#stopped && (o.total === undefined || this.attempts < o.total)) {
        this.attempts++;
        const a = await attempt(e, pathOf(), o.timeout);
        if (a.ok) {
          this.ok++;
          if (a.worker !== undefined) this.byWorker.set(a.worker, (this.byWorker.get(a.worker) ?? 0) + 1);
          if (o.keepAll) this.successes.push(a);
        } else if (o.refusedEnds && a.code === 'ECONNREFUSED') {
          this.refused++;
          return;
        } else {
          this.failures.push(a);
          await sleep(5);
        }
      }
    };
    this.done = Promise.all(Array.from({ length: o.loops }, loop)).then(() => undefined);
  }

  /** Failures by kind: 'ECONNRESET' -> 3, ... */
  failureKinds(): Map<string, number> {
    return tally(this.failures.map((a) => String(a.code)));
  }

  /** Waits until at least `n` requests have been answered. */
  async waitOk(n: number, timeout = 10_000): Promise<void> {
    await waitFor(() => this.ok >= n, {
      timeout,
      what: `${n} requests answered`,
      detail: () => `only ${this.ok}; failures: ${describe(this.failures)}`,
    });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.done;
  }
}

function describe(failures: Attempt[]): string {
  return failures.length ? failures.slice(0, 10).map((a) => `${a.code} (connected ${a.connected}, ${a.bytes} bytes)`).join(', ') : 'none';
}

/** `total` requests, each on a new connection, `concurrency` at a time;
 * returns how many each worker pid answered. Fails if any request failed. */
export async function hammer(e: Endpoint, total: number, concurrency = 32): Promise<Map<number, number>> {
  const load = new ConnectionLoad(e, { loops: concurrency, total });
  await load.done;
  assert.equal(load.failures.length, 0, `${load.failures.length} of ${total} requests to ${e.address} failed: ${describe(load.failures)}`);
  return load.byWorker;
}

/** Counts values: value -> occurrences. */
export function tally<T>(values: Iterable<T>): Map<T, number> {
  const m = new Map<T, number>();
  for (const v of values) m.set(v, (m.get(v) ?? 0) + 1);
  return m;
}
