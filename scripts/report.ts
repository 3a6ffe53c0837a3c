/**
 * The frame of a long run (LongRun) and its figures in the form
 * docs/reliability.md and the README take them: the machine, numbers,
 * medians and percentiles, markdown tables, progress lines. The servers themselves are driven with
 * the test helpers (test/helpers/), so that a long run checks exactly what
 * its test checks, only longer.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

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

/**
 * A long run of scripts/: a temp dir of its own (removed at the end), a
 * markdown report that the run fills in (`out`) and the checks that failed
 * (`failures`). main() prints the report with its result line on stdout;
 * the exit status is 1 if a check failed, or if the run crashed (its stack
 * on stderr, with the report so far).
 */
export class LongRun {
  readonly dir: string;
  readonly out: string[] = [];
  readonly failures: string[] = [];
  readonly #name: string;

  constructor(name: string) {
    this.#name = name;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `fdpass-${name}-`));
  }

  /** Runs `body`; `passed` is the result line when no check failed. */
  main(body: () => Promise<void>, passed = 'Result: every check passed.'): void {
    body().then(() => {
      this.out.push(this.failures.length ? `**FAILED**: ${this.failures.join('; ')}` : passed, '');
      process.exitCode = this.failures.length ? 1 : 0;
    }, (err: Error) => {
      process.stderr.write(`${this.#name}: ${err.stack ?? err}\n`);
      process.exitCode = 1;
    }).finally(() => {
      fs.rmSync(this.dir, { recursive: true, force: true });
      process.stdout.write(this.out.join('\n') + '\n');
    });
  }
}
