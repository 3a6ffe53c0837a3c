/**
 * fd tables and leak accounting, of this process and of others
 * (/proc/PID/fd).
 *
 * This process: a test "leaks" when an fd number appears that was not there
 * before, or an fd number now names a different file. Two kinds of fds are
 * not the test's:
 *
 * - the directory fd that readdir(/proc/<pid>/fd) itself holds, which is gone
 *   by the time its link is read (or points at /proc/<pid>/fd);
 * - fds the Node runtime opens lazily and keeps for the life of the process:
 *   the first child_process.spawn() leaves a /dev/null fd open for good
 *   (measured on Node 20: one fd, whatever the stdio options); libuv's
 *   io_uring, where enabled, appears on first fs use. warmUp() triggers these
 *   once before the first snapshot and records them, so that a later first
 *   use cannot be mistaken for a leak either. Nothing else is ignored.
 *
 * A process tree (`fdpass serve`: a primary and its workers): fds are
 * compared by kind, as multisets (see treeLeaks()).
 *
 * This module does not import node:test, so that fixture scripts (plain
 * child processes) can use openFds() too.
 */
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { waitFor } from './wait';

// ---- one process ------------------------------------------------------------

/** Open fds of a process: fd number -> readlink target ('socket:[123]', a path...). */
export function openFds(pid: number | 'self' = 'self'): Map<number, string> {
  const dir = `/proc/${pid}/fd`;
  const out = new Map<number, string>();
  for (const name of fs.readdirSync(dir)) {
    let target: string;
    try {
      target = fs.readlinkSync(`${dir}/${name}`);
    } catch {
      continue; // closed in between: readdir's own fd
    }
    if (/^\/proc\/(\d+|self)\/fd$/.test(target)) continue;
    out.set(Number(name), target);
  }
  return out;
}

/** The RLIMIT_NOFILE at which a process with these fds can open exactly
 * `room` more (open fds above it, inherited ones say, stay open and take no slot). */
export function limitLeaving(fds: Map<number, string>, room: number): number {
  let free = 0;
  let limit = 0;
  while (free < room || fds.has(limit)) {
    if (!fds.has(limit)) free++;
    limit++;
  }
  return limit;
}

/** The number of entries of /proc/PID/fd (for 'self', readdir's own fd included). */
export function fdCount(pid: number | 'self' = 'self'): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** Whether two fd tables are the same: the same numbers naming the same files. */
export function sameFds(a: Map<number, string>, b: Map<number, string>): boolean {
  return a.size === b.size && [...a].every(([fd, target]) => b.get(fd) === target);
}

/** fd -> target opened by the runtime during warmUp(). */
const runtimeFds = new Map<number, string>();
let warmedUp: Promise<void> | null = null;

/**
 * Makes the runtime open what it opens lazily (a spawned child with ignored
 * and piped stdio, sync spawn, fs promises, timers), once per process.
 */
export function warmUp(): Promise<void> {
  warmedUp ??= (async () => {
    const before = openFds();
    spawnSync(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    await new Promise<void>((resolve) => {
      const c = spawn(process.execPath, ['-e', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
      c.on('close', () => resolve());
    });
    await fs.promises.readFile(__filename);
    await new Promise((r) => setTimeout(r, 1));
    for (const [fd, target] of openFds()) {
      if (before.get(fd) !== target) runtimeFds.set(fd, target);
    }
  })();
  return warmedUp;
}

export interface FdLeak {
  fd: number;
  target: string;
  was?: string;
}

/** fds in `after` that were not in `before` (or now name something else). */
export function findFdLeaks(before: Map<number, string>, after: Map<number, string>): FdLeak[] {
  const leaks: FdLeak[] = [];
  for (const [fd, target] of after) {
    const was = before.get(fd);
    if (was === target) continue;
    if (runtimeFds.get(fd) === target) continue;
    leaks.push(was === undefined ? { fd, target } : { fd, target, was });
  }
  return leaks;
}

/**
 * findFdLeaks() against a fresh snapshot, counting only fds still there in a
 * second snapshot `settleMs` later (same number, same file). Other threads of
 * the runtime open files for an instant: glibc's malloc reads
 * /proc/sys/vm/overcommit_memory the first time it shrinks a thread's arena,
 * at a moment no test controls (seen once in CI, in the middle of a fuzz
 * case). A leaked fd stays open; that one is gone microseconds later.
 */
export async function settledFdLeaks(before: Map<number, string>, settleMs = 20): Promise<FdLeak[]> {
  const first = findFdLeaks(before, openFds());
  if (first.length === 0) return first;
  await new Promise((r) => setTimeout(r, settleMs));
  const now = openFds();
  return first.filter((l) => now.get(l.fd) === l.target);
}

/** Throws an AssertionError naming every leaked fd. */
export function assertNoFdLeak(before: Map<number, string>, after: Map<number, string>, what = 'this process'): void {
  const leaks = findFdLeaks(before, after);
  if (leaks.length === 0) return;
  const list = leaks.slice(0, 20).map((l) => `  fd ${l.fd} -> ${l.target}${l.was ? ` (was ${l.was})` : ''}`).join('\n');
  assert.fail(`${what} leaked ${leaks.length} fd(s):\n${list}${leaks.length > 20 ? '\n  ...' : ''}`);
}

/**
 * Like assertNoFdLeak on a fresh snapshot, but gives fds that are closed
 * asynchronously (a child's stdio pipes, a stream's handle) up to `graceMs`.
 */
export async function expectNoFdLeak(before: Map<number, string>, graceMs = 1000): Promise<void> {
  await new Promise((r) => setImmediate(r));
  await waitFor(() => findFdLeaks(before, openFds()).length === 0, { timeout: graceMs, what: 'no fd leaked' })
    .catch(() => assertNoFdLeak(before, openFds()));
}

// ---- a process tree, by kind of fd ------------------------------------------------

/** Open fds (fd -> readlink target) of a primary and of each of its workers (by pid). */
export interface TreeFds {
  primary: Map<number, string>;
  workers: Map<number, Map<number, string>>;
}

/** The fd tables of `primary` and of each of `workers` (one that is gone meanwhile is left out). */
export function treeFds(primary: number, workers: Iterable<number>): TreeFds {
  const out = new Map<number, Map<number, string>>();
  for (const pid of workers) {
    try {
      out.set(pid, openFds(pid));
    } catch {
      // gone meanwhile
    }
  }
  return { primary: openFds(primary), workers: out };
}

export function sameTree(a: TreeFds, b: TreeFds): boolean {
  if (!sameFds(a.primary, b.primary) || a.workers.size !== b.workers.size) return false;
  for (const [pid, fds] of a.workers) {
    const o = b.workers.get(pid);
    if (!o || !sameFds(fds, o)) return false;
  }
  return true;
}

/** 'socket:[123]' -> 'socket', 'pipe:[9]' -> 'pipe'; anything else as it is. */
export function fdKind(target: string): string {
  return target.replace(/^(socket|pipe):\[\d+\]$/, '$1');
}

/** Counts of each kind of fd. */
export function fdKinds(fds: Map<number, string>): Map<string, number> {
  const m = new Map<string, number>();
  for (const t of fds.values()) m.set(fdKind(t), (m.get(fdKind(t)) ?? 0) + 1);
  return m;
}

/**
 * What a Node process opens lazily and keeps for good, not counted as a
 * leak: libuv opens /dev/null on the first stream it creates (its reserve
 * fd for accept at EMFILE, uv__stream_init), so a worker has it from its
 * first connection on (the primary, which spawns with pipes, from the start).
 */
export const WORKER_LAZY_FDS: ReadonlyMap<string, number> = new Map([['/dev/null', 1]]);

/** fds of `after` beyond those of `before` (and beyond `lazy`), by kind: ['2 x socket', ...]. */
export function extraFds(before: Map<number, string>, after: Map<number, string>, lazy?: ReadonlyMap<string, number>): string[] {
  const b = fdKinds(before);
  const out: string[] = [];
  for (const [kind, n] of fdKinds(after)) {
    const extra = n - (b.get(kind) ?? 0) - (lazy?.get(kind) ?? 0);
    if (extra > 0) out.push(`${extra} x ${kind}`);
  }
  return out;
}

/**
 * What the primary and each worker of `now` hold beyond `before`, one line
 * each. The primary is compared with its own baseline (a respawned worker's
 * channel is a new socket of the same kind), each worker with its own, or,
 * for a worker started since (a respawn, a reload), with a worker of the
 * baseline: workers start alike.
 */
export function treeLeaks(before: TreeFds, now: TreeFds): string[] {
  const out: string[] = [];
  const p = extraFds(before.primary, now.primary);
  if (p.length) out.push(`  primary: ${p.join(', ')} (${before.primary.size} fds before, ${now.primary.size} now)`);
  const model = before.workers.values().next().value as Map<number, string> | undefined;
  for (const [pid, fds] of now.workers) {
    const base = before.workers.get(pid) ?? model;
    if (!base) continue;
    const extra = extraFds(base, fds, WORKER_LAZY_FDS);
    if (extra.length) out.push(`  worker ${pid}${before.workers.has(pid) ? '' : ' (new)'}: ${extra.join(', ')} (${base.size} fds before, ${fds.size} now)`);
  }
  return out;
}
