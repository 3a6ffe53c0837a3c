/**
 * The status document of `fdpass serve` (what `fdpass status` and the
 * control socket's 'status' request return), and the hand-off rate it
 * reports: sampled once a second, averaged over the last ten seconds.
 */
import type { ListenerInfo } from './listeners';
import type { Strategy } from './strategies';
import type { WorkerRec, WorkerState } from './supervisor';
import type { TakeoverInfo } from './takeover';

export interface WorkerStatus {
  slot: number;
  pid: number | undefined;
  generation: number;
  state: WorkerState;
  handed: number;
  acked: number;
  unacked: number;
  live: number;
  requests: number;
  restarts: number;
}

export interface Status {
  primary: {
    pid: number;
    uptimeSeconds: number;
    strategy: Strategy;
    generation: number;
    accepted: number;
    handed: number;
    inflight: number;
    waiting: number;
    handoffRatePerSecond: number;
    acceptErrors: number;
    listeners: ListenerInfo[];
    /** How this primary started by taking over from another process
     * (--takeover, `fdpass upgrade`): when, from whom; null if it bound. */
    takeover: TakeoverInfo | null;
    /** Where it answers `_getsocks` (--expose-listeners); null if nowhere. */
    exposeListeners: string | null;
  };
  workers: WorkerStatus[];
}

/** What the primary knows, for status(). */
export interface StatusInput {
  startedAt: number;
  strategy: Strategy;
  generation: number;
  accepted: number;
  handed: number;
  waiting: number;
  handoffRate: number;
  acceptErrors: number;
  listeners: ListenerInfo[];
  workers: Iterable<WorkerRec>;
  restarts(slot: number): number;
  takeover: TakeoverInfo | null;
  exposeListeners: string | null;
}

export function buildStatus(s: StatusInput): Status {
  const all = [...s.workers].sort((a, b) => a.generation - b.generation || a.slot - b.slot);
  let inflight = 0;
  for (const w of all) inflight += w.inflight.size;
  return {
    primary: {
      pid: process.pid,
      uptimeSeconds: Math.round((Date.now() - s.startedAt) / 1000),
      strategy: s.strategy,
      generation: s.generation,
      accepted: s.accepted,
      handed: s.handed,
      inflight,
      waiting: s.waiting,
      handoffRatePerSecond: Math.round(s.handoffRate),
      acceptErrors: s.acceptErrors,
      listeners: s.listeners,
      takeover: s.takeover,
      exposeListeners: s.exposeListeners,
    },
    workers: all.map((w) => ({
      slot: w.slot, pid: w.pid, generation: w.generation, state: w.state,
      handed: w.handed, acked: w.acked, unacked: w.inflight.size, live: w.live, requests: w.requests,
      restarts: s.restarts(w.slot),
    })),
  };
}

/** Samples a growing count once a second; rate() is its growth per second
 * over the last ten seconds (up to now). */
export class RateMeter {
  readonly #read: () => number;
  readonly #samples: { t: number; n: number }[] = [];
  readonly #timer: NodeJS.Timeout;

  constructor(read: () => number) {
    this.#read = read;
    this.#timer = setInterval(() => {
      this.#samples.push({ t: Date.now(), n: this.#read() });
      if (this.#samples.length > 11) this.#samples.shift();
    }, 1000).unref();
  }

  rate(): number {
    const first = this.#samples[0];
    const now = Date.now();
    return first && now > first.t ? ((this.#read() - first.n) * 1000) / (now - first.t) : 0;
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
