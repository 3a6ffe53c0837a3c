/**
 * Figures of the long runs and benchmarks in the form docs/reliability.md
 * and the README take them: the machine, numbers, medians and percentiles,
 * markdown tables, progress lines. The servers themselves are driven with
 * the test helpers (test/helpers/), so that a long run checks exactly what
 * its test checks, only longer.
 */
import * as os from 'node:os';

/** Date, CPU, kernel, Node and load average, for the report. */
export function machine(): string {
  const cpus = os.cpus();
  return `${new Date().toISOString()}; ${cpus[0]?.model ?? 'cpu'} x${cpus.length}; Linux ${os.release()}; Node ${process.version}; ` +
    `load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`;
}

export const mib = (kib: number): string => `${(kib / 1024).toFixed(1)} MiB`;
export const num = (n: number): string => Math.round(n).toLocaleString('en-US');

/** The value at `p` percent of `sorted` (ascending); NaN if empty. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : NaN;
}

export function median(xs: readonly number[]): number {
  return percentile([...xs].sort((a, b) => a - b), 50);
}

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
