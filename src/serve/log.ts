/**
 * The structured log of `fdpass serve`: one event per line, each with its
 * time and name (worker-spawn, accept-error, reload-done, ...). Every part
 * of the primary logs through the one `Log` the primary makes. Events that
 * can repeat at the rate of a fault (accept-error, handoff-lost) go through
 * a Throttled line: one a second at most, with how many were left out.
 */

export interface LogEvent {
  time: string;
  event: string;
  [k: string]: unknown;
}

export type Log = (event: string, fields: Record<string, unknown>) => void;

/** A Log writing to `sink`; default one JSON line per event on stderr. */
export function makeLog(sink?: (e: LogEvent) => void): Log {
  const out = sink ?? ((e: LogEvent) => process.stderr.write(JSON.stringify(e) + '\n'));
  return (event, fields) => out({ time: new Date().toISOString(), event, ...fields });
}

/** The `code` of an error, else its message: what log lines report. */
export function errorCode(err: unknown): string {
  return (err as { code?: string }).code ?? (err as Error).message;
}

/** At most one line of a Throttled event per this long. */
const THROTTLE_MS = 1000;

/** A log event sent at most once per second; the ones left out are
 * counted and reported with the next line (`suppressed`). */
export class Throttled {
  #last = 0;
  #unlogged = 0;

  constructor(readonly event: string, readonly log: Log) {}

  emit(fields: Record<string, unknown>): void {
    const now = Date.now();
    if (now - this.#last < THROTTLE_MS) {
      this.#unlogged++;
      return;
    }
    this.log(this.event, { ...fields, ...(this.#unlogged ? { suppressed: this.#unlogged } : {}) });
    this.#last = now;
    this.#unlogged = 0;
  }
}
