/**
 * The structured log of `fdpass serve`: one event per line, each with its
 * time and name (worker-spawn, accept-error, reload-done, ...). Every part
 * of the primary logs through the one `Log` the primary makes.
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
