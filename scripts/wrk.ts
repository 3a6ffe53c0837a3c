/**
 * wrk (Debian's HTTP load generator), for the serve benchmark and the long
 * runs: found or installed, run asynchronously (the caller can act
 * meanwhile), its report parsed.
 */
import { spawnSync, execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { Child } from '../test/helpers/process';

/** Fails unless wrk is on PATH; with `install`, installs the Debian package first. */
export function ensureWrk(o: { install?: boolean } = {}): void {
  if (spawnSync('wrk', ['--version']).error === undefined) return;
  if (!o.install) throw new Error('wrk not found (Debian: apt-get install wrk)');
  execFileSync('sh', [path.join(__dirname, '..', '..', 'scripts', 'debian-deps.sh'), 'wrk'], { stdio: 'inherit' });
  if (spawnSync('wrk', ['--version']).error !== undefined) throw new Error('wrk not found and could not be installed (Debian: apt-get install wrk)');
}

export interface WrkResult {
  requests: number;
  seconds: number;
  rps: number;
  /** Median latency in µs (wrk --latency), else NaN. */
  p50us: number;
  /** 99th percentile latency in µs (wrk --latency), else NaN. */
  p99us: number;
  connectErrors: number;
  readErrors: number;
  writeErrors: number;
  timeouts: number;
  non2xx: number;
  /** The command line, as run. */
  command: string;
  output: string;
}

/** Requests that failed, of every kind wrk counts (socket errors and non-2xx responses). */
export function wrkFailures(r: WrkResult): number {
  return r.connectErrors + r.readErrors + r.writeErrors + r.timeouts + r.non2xx;
}

const UNIT = { us: 1, ms: 1e3, s: 1e6 } as const;

/** A percentile of wrk's --latency distribution, in µs (NaN when absent). */
function percentile(out: string, p: number): number {
  const m = new RegExp(`\\s${p}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
  return m ? Number(m[1]) * UNIT[m[2] as keyof typeof UNIT] : NaN;
}

/** Runs `wrk ARGS URL` to completion; rejects if it exits non-zero. */
export async function wrk(args: string[], url: string): Promise<WrkResult> {
  const argv = [...args, url];
  const r = await new Child(['wrk', ...argv], { env: process.env }).exited;
  const out = r.stdout + r.stderr;
  if (r.code !== 0) throw new Error(`wrk exited ${r.code ?? r.signal}:\n${out}`);
  const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const dur = /requests in ([\d.]+)(m?s|m)/.exec(out);
  return {
    requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? 0),
    seconds: dur ? Number(dur[1]) * (dur[2] === 'ms' ? 0.001 : dur[2] === 'm' ? 60 : 1) : NaN,
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0),
    p50us: percentile(out, 50),
    p99us: percentile(out, 99),
    connectErrors: Number(errs?.[1] ?? 0),
    readErrors: Number(errs?.[2] ?? 0),
    writeErrors: Number(errs?.[3] ?? 0),
    timeouts: Number(errs?.[4] ?? 0),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
    command: `wrk ${argv.join(' ')}`,
    output: out,
  };
}
