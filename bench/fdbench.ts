/**
 * The C baseline of the benchmarks (bench/c/fdbench.c): compiled here with
 * cc, and run for one JSON line of figures. Shared by bench/run.ts (the fd
 * path) and bench/serve.ts (the cost of a cross-CPU wake-up).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';

const ROOT = path.join(__dirname, '..', '..');

export type Row = Record<string, number | string>;

/** Compiles fdbench into build/bench; returns its path. */
export function compileFdbench(): string {
  const out = path.join(ROOT, 'build', 'bench', 'fdbench');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  execFileSync('cc', ['-O2', '-Wall', '-o', out, path.join(ROOT, 'bench', 'c', 'fdbench.c')], { stdio: 'inherit' });
  return out;
}

/** Runs a benchmark command and parses the JSON line it ends with. */
export function runJson(cmd: string, args: string[]): Row {
  const out = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 });
  const line = out.trim().split('\n').pop()!;
  return JSON.parse(line) as Row;
}
