/**
 * The shutdown's hold (primary side): a graceful shutdown loses no
 * connection the primary accepted while a worker that can serve it exists.
 *
 * The primary keeps every fd until a worker acknowledges it, and takes back
 * what a worker that dies never acknowledged (dispatcher.ts). During a
 * shutdown the other workers are draining, so those connections need a
 * worker that drains but still takes hand-offs: while anything is unplaced
 * (handed and not acknowledged, or waiting for a worker), the workers are
 * told SHUTDOWN with HOLD (protocol.ts, worker-drain.ts): they drain and
 * stay; a held worker is a candidate for what the primary takes back
 * (primary.ts). Once nothing is unplaced, each gets the release (SHUTDOWN
 * without HOLD) and exits when it has finished.
 *
 * Deadlines (T the shutdown timeout, G DRAIN_GRACE_MS, from each worker's
 * drain): a draining worker is SIGKILLed at T + G, as before the hold
 * (what it never acknowledged goes to a held worker then), unless it is
 * held and responsive: nothing handed to it has waited G for its ACK. That
 * one waits for us, not we for it; it is killed as soon as a hand-off to it
 * has waited G (a worker that hung while idle, then got some), and at
 * 2 (T + G) in any case; once released, at T + G after the release if that
 * is sooner. So the workers are gone by T + G after they were told to
 * drain, plus the time the re-placed connections take to be served (up to
 * T, then G) when a worker hung with hand-offs; by 2 (T + G) at worst.
 */
import { performance } from 'node:perf_hooks';
import type { Target } from './dispatcher';

/** How long past its shutdown timeout a draining worker gets before SIGKILL. */
export const DRAIN_GRACE_MS = 2000;

/** What the deadlines need of a draining worker (supervisor.ts's record). */
export interface Drained extends Pick<Target, 'inflight'> {
  /** Told SHUTDOWN with HOLD, not released yet. */
  held: boolean;
  /** When it was told to drain (Date.now() ms). */
  drainedAt: number;
  /** Its SIGKILL, set here while it drains. */
  killTimer: NodeJS.Timeout | null;
}

/** `w` was told to drain (now): `kill` at T + G, unless it is held and
 * responsive then (see above), and at 2 (T + G) in any case. */
export function armDrainDeadline(w: Drained, timeout: number, kill: () => void): void {
  const check = (): void => {
    const left = keepHeld(w, timeout, Date.now());
    if (left > 0) w.killTimer = setTimeout(check, left);
    else kill();
  };
  if (w.killTimer) clearTimeout(w.killTimer);
  w.killTimer = setTimeout(check, timeout + DRAIN_GRACE_MS);
}

/** `w` was released (now): `kill` at T + G from now, or at 2 (T + G)
 * from its drain if that is sooner. */
export function armReleaseDeadline(w: Drained, timeout: number, kill: () => void): void {
  const at = Math.min(w.drainedAt + 2 * (timeout + DRAIN_GRACE_MS), Date.now() + timeout + DRAIN_GRACE_MS);
  if (w.killTimer) clearTimeout(w.killTimer);
  w.killTimer = setTimeout(kill, Math.max(0, at - Date.now()));
}

/** ms until `w` is next looked at, now that a deadline came: 0 to kill it
 * now. Kept while held and nothing handed to it has waited G for its ACK:
 * looked at again when the oldest such hand-off will have (every G while
 * there is none), until 2 (T + G). */
export function keepHeld(w: Drained, timeout: number, now: number): number {
  const end = w.drainedAt + 2 * (timeout + DRAIN_GRACE_MS);
  if (!w.held || now >= end) return 0;
  // The ledger is in hand-off order: its first entry waited longest.
  const oldest = w.inflight.size ? w.inflight.values().next().value! : null;
  const waited = oldest ? performance.now() - oldest.sent : 0;
  return waited >= DRAIN_GRACE_MS ? 0 : Math.min(end - now, Math.ceil(DRAIN_GRACE_MS - waited));
}

/** The primary's side of the hold: when to hold, when to release. */
export class ShutdownHold {
  readonly #unplaced: () => number;
  readonly #release: () => void;
  #holding = false;

  /**
   * @param unplaced  connections handed and not acknowledged, plus those
   *                  waiting for a worker
   * @param release   tells every held worker SHUTDOWN without HOLD
   */
  constructor(unplaced: () => number, release: () => void) {
    this.#unplaced = unplaced;
    this.#release = release;
  }

  /** The workers are to drain now: on hold (true) while anything is unplaced. */
  start(): boolean {
    this.#holding = this.#unplaced() > 0;
    return this.#holding;
  }

  /** Something was placed or taken back (an ACK, a LOST, a worker gone):
   * the release goes out once nothing is unplaced. */
  check(): void {
    if (!this.#holding || this.#unplaced() > 0) return;
    this.#holding = false;
    this.#release();
  }
}
