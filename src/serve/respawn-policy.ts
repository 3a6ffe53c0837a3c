/**
 * The respawn policy of `fdpass serve`, as a pure function: how soon a dead
 * worker's slot gets a new one, and whether that is a crash loop.
 *
 * A ready worker killed from outside (SIGKILL by an operator or the OOM
 * killer, SIGTERM...) says nothing about the app: it is replaced at once. A
 * worker that never became ready, or that ended by itself (an exit status,
 * a crash signal such as SIGSEGV or SIGABRT) or was killed by the primary
 * for misbehaving (not ready in time, a protocol error, its channel closed)
 * within 5 s, crashed: it is respawned after 100 ms, doubling to 30 s while
 * its slot keeps crashing; from 5 crashes in a row on, a crash loop is
 * reported. A spawn that fails (EMFILE) is retried the same way. A worker
 * that ran longer than 5 s before ending starts the count again.
 */

/** How a worker ended, as far as the policy cares. */
export interface Ending {
  wasReady: boolean;
  /** The primary killed it (then it is never a kill from outside). */
  killedByUs: boolean;
  exitSignal: string | null;
  startedAt: number;
}

export interface Respawn {
  cause: 'killed' | 'crashed' | 'spawn-failed';
  /** The slot's crashes in a row, this one included. */
  crashes: number;
  /** How long to wait before the new worker is spawned (ms). */
  delay: number;
  /** Whether to report a crash loop. */
  crashLoop: boolean;
}

/** Signals that end a process from outside (an operator, the OOM killer, a
 * supervisor): a ready worker ended by one is replaced at once, not throttled. */
const EXTERNAL_SIGNALS: ReadonlySet<string> = new Set(['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGHUP']);
/** A worker that dies younger than this, by itself, crashed. */
const YOUNG_MS = 5000;
/** Crashes in a row from which a crash loop is reported. */
const CRASH_LOOP = 5;
const DELAY_MIN_MS = 100;
const DELAY_MAX_MS = 30_000;

/**
 * The respawn of a slot whose worker ended as `dead` (null: the spawn
 * itself failed), after `crashes` crashes in a row, at time `now`.
 */
export function respawnPolicy(dead: Ending | null, crashes: number, now: number): Respawn {
  const external = dead !== null && dead.wasReady && !dead.killedByUs && dead.exitSignal !== null && EXTERNAL_SIGNALS.has(dead.exitSignal);
  if (external) return { cause: 'killed', crashes, delay: 0, crashLoop: false };
  const young = dead === null || now - dead.startedAt < YOUNG_MS;
  const n = young ? crashes + 1 : 0;
  return {
    cause: dead === null ? 'spawn-failed' : 'crashed',
    crashes: n,
    delay: n === 0 ? 0 : Math.min(DELAY_MIN_MS * 2 ** (n - 1), DELAY_MAX_MS),
    crashLoop: n >= CRASH_LOOP,
  };
}
