/**
 * Other processes as /proc shows them: children, liveness, CPU time, RSS,
 * RLIMIT_NOFILE; and stopping a set of processes for the length of a test.
 * (Their fd tables: fds.ts.)
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { onCleanup, type Deferrer } from './scope';

/** Clock ticks per second of /proc/PID/stat's CPU times (USER_HZ). */
export const USER_HZ = 100;

/** The fields of /proc/PID/stat after the command name: [0] is the state, [1] the parent pid, ... */
function statFields(pid: number): string[] {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return f.slice(f.lastIndexOf(')') + 2).split(' ');
}

/** Live children of `pid` (from /proc/PID/task/PID/children, else a /proc scan). */
export function childrenOf(pid: number): number[] {
  try {
    const text = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
    return text ? text.split(/\s+/).map(Number) : [];
  } catch {
    const out: number[] = [];
    for (const name of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      try {
        if (Number(statFields(Number(name))[1]) === pid) out.push(Number(name));
      } catch {
        // gone
      }
    }
    return out;
  }
}

/** Whether a process exists (and is not a zombie). */
export function alive(pid: number): boolean {
  try {
    return statFields(pid)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** utime + stime of a process, in clock ticks (USER_HZ). */
export function cpuTicks(pid: number): number {
  const rest = statFields(pid);
  return Number(rest[11]) + Number(rest[12]);
}

/** stime alone (the CPU a process spent in the kernel), in clock ticks. */
export function sysTicks(pid: number): number {
  return Number(statFields(pid)[12]);
}

/** Resident set size of a process, in KiB (VmRSS). */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** A process's RLIMIT_NOFILE (soft, or hard), from /proc/PID/limits. */
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

/** SIGSTOP to each of `pids` now; SIGCONT (to those still there) when `owner` cleans up. */
export function suspend(owner: Deferrer, pids: readonly number[]): void {
  for (const pid of pids) process.kill(pid, 'SIGSTOP');
  onCleanup(owner, () => {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // gone
      }
    }
  });
}
