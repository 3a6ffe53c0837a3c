/**
 * Shared by the long runs of `fdpass serve` (scripts/soak.ts, chaos.ts,
 * emfile.ts): options, wrk, the machine, resource limits, and figures in a
 * form docs/reliability.md takes as it is. The servers themselves are
 * driven with the test helpers (test/helpers/serve.ts), so that a long run
 * checks exactly what its test checks, only longer.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { spawn, spawnSync } from 'node:child_process';

/** `--name value` pairs over numeric defaults; anything else is an error. */
export function options<T extends Record<string, number>>(defaults: T, argv = process.argv.slice(2)): T {
  const out: Record<string, number> = { ...defaults };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i]!.replace(/^--/, '');
    const v = Number(argv[i + 1]);
    if (!(k in defaults) || !Number.isFinite(v) || v < 0) {
      throw new Error(`unknown option or bad value: ${argv[i]} ${argv[i + 1] ?? ''} (options: ${Object.keys(defaults).map((x) => `--${x}`).join(' ')})`);
    }
    out[k] = v;
  }
  return out as T;
}

/** One `--name N` flag among other arguments (roles, strings): its value,
 * or `dflt` when absent. For scripts whose argv is not flags only. */
export function argOf(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = Number(process.argv[i + 1]);
  if (!Number.isInteger(v) || v < 0) throw new Error(`--${name} needs a non-negative integer`);
  return v;
}

/** Date, CPU, kernel, Node and load average, for the report. */
export function machine(): string {
  const cpus = os.cpus();
  return `${new Date().toISOString()}; ${cpus[0]?.model ?? 'cpu'} x${cpus.length}; Linux ${os.release()}; Node ${process.version}; ` +
    `load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`;
}

export function ensureWrk(): void {
  if (spawnSync('wrk', ['--version']).error === undefined) return;
  throw new Error('wrk not found (Debian: apt-get install wrk)');
}

export interface WrkResult {
  requests: number;
  seconds: number;
  rps: number;
  connectErrors: number;
  readErrors: number;
  writeErrors: number;
  timeouts: number;
  non2xx: number;
  /** The command line, as run. */
  command: string;
  output: string;
}

/** Runs wrk to completion (asynchronously: the caller can act meanwhile). */
export function wrk(args: string[], url: string): Promise<WrkResult> {
  const argv = [...args, url];
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`wrk exited ${code}:\n${out}`));
      const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
      const dur = /requests in ([\d.]+)(m?s|m)/.exec(out);
      const seconds = dur ? Number(dur[1]) * (dur[2] === 'ms' ? 0.001 : dur[2] === 'm' ? 60 : 1) : NaN;
      resolve({
        requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? 0),
        seconds,
        rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0),
        connectErrors: Number(errs?.[1] ?? 0),
        readErrors: Number(errs?.[2] ?? 0),
        writeErrors: Number(errs?.[3] ?? 0),
        timeouts: Number(errs?.[4] ?? 0),
        non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
        command: `wrk ${argv.join(' ')}`,
        output: out,
      });
    });
  });
}

/** A process's RLIMIT_NOFILE (soft, or hard), from /proc/<pid>/limits. */
export function nofile(pid: number | 'self' = 'self', which: 'soft' | 'hard' = 'soft'): number {
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'));
  const v = m?.[which === 'soft' ? 1 : 2];
  return !v || v === 'unlimited' ? Infinity : Number(v);
}

/** The RLIMIT_NOFILE a process may get: `want`, or the hard limit if that
 * is lower and cannot be raised (no CAP_SYS_RESOURCE, as in containers). */
export function reachableNofile(want: number): number {
  if (want <= nofile('self', 'hard')) return want;
  const r = spawnSync('prlimit', [`--nofile=${want}:${want}`, '--', 'true']);
  return r.status === 0 ? want : nofile('self', 'hard');
}

/** Raises this process's RLIMIT_NOFILE towards `n` (prlimit); whether it got there. */
export function raiseNofile(n: number): boolean {
  if (nofile() >= n) return true;
  const to = reachableNofile(n);
  spawnSync('prlimit', ['--pid', String(process.pid), `--nofile=${to}:${to}`]);
  return nofile() >= n;
}

export const mib = (kib: number): string => `${(kib / 1024).toFixed(1)} MiB`;
export const num = (n: number): string => Math.round(n).toLocaleString('en-US');

/** Prints a line to stderr as the run goes. */
export function progress(line: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

/** A markdown table. */
export function table(header: string[], rows: (string | number)[][]): string {
  return [
    `| ${header.join(' | ')} |`,
    `|${header.map(() => '---').join('|')}|`,
    ...rows.map((r) => `| ${r.map(String).join(' | ')} |`),
  ].join('\n');
}
