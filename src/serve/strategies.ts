/**
 * How the primary of `fdpass serve` picks a worker for a connection: pure
 * functions of the candidate workers' counters and the connection's key, no
 * I/O and no state of their own (the round-robin cursor is the caller's:
 * passed in, and the next one handed back).
 *
 * Every strategy skips a worker that is full: whose pending hand-offs
 * reached `limit` (a stopped or overwhelmed worker gets no more until it
 * catches up), or its own lower limit (a worker out of fd slots, whose
 * window the dispatcher shrank: handoff-window.ts); when all are full the
 * answer is -1 and the connection waits.
 */

export type Strategy = 'round-robin' | 'least-connections' | 'hash';
export const STRATEGIES: readonly Strategy[] = ['round-robin', 'least-connections', 'hash'];

/** A candidate worker, as the strategies see it. */
export interface WorkerLoad {
  /** Connections handed to it and not acknowledged yet, plus those already
   * picked for it in the batch being built. */
  pending: number;
  /** Connections handed to it (pending ones included) and not reported
   * closed yet: what the primary knows at once, not what the worker last
   * said it holds. */
  open: number;
  /** Its own limit, where lower than the common one. */
  limit?: number;
  /** How long (ms) its oldest unacknowledged hand-off has waited for the
   * acknowledgement (0 or absent: none waits). A worker acknowledges each
   * batch on the loop turn that receives it, so one that has not for
   * STALLED_MS is busy in a long piece of work (least-connections). */
  unackedMs?: number;
}

/**
 * A worker whose oldest unacknowledged hand-off is this old (ms) is taken as
 * busy by least-connections. Well above a loop turn of a worker that is
 * keeping up, also one that serves the requests of a burst it was just
 * handed on a loaded machine: at 2 ms, 1 of 3 runs of the serve-balance
 * refill test (50 connections opened at once onto an emptied worker) gave
 * the emptied worker 7 of them, the rest going elsewhere once it was busy
 * answering the first ones. So this routes around requests that block a
 * worker for tens of milliseconds or more, not around 10 ms ones (for
 * those, measured, the count alone did as well: bench/serve.ts's paced run).
 */
export const STALLED_MS = 20;

/** Busy in a long request: a hand-off has waited STALLED_MS for its ACK
 * while the worker holds a connection it did acknowledge (one it can be
 * busy with). A worker whose open connections are all unacknowledged (one
 * just emptied and adopting a burst, one just started) is slow to
 * acknowledge for other reasons, and is not passed over. */
function stalled(w: WorkerLoad): boolean {
  return w.unackedMs !== undefined && w.unackedMs >= STALLED_MS && w.open > w.pending;
}

function full(w: WorkerLoad, limit: number): boolean {
  return w.pending >= limit || (w.limit !== undefined && w.pending >= w.limit);
}

export interface Pick {
  /** Index into the candidates, or -1 when every one is full (or none). */
  index: number;
  /** The round-robin cursor for the next pick. */
  cursor: number;
}

/**
 * Round-robin: the next candidate from `cursor` on that is not full. The
 * cursor moves past every candidate looked at, so a full worker's turn goes
 * to the next one rather than being saved up.
 */
export function roundRobin(loads: readonly WorkerLoad[], cursor: number, limit: number): Pick {
  const n = loads.length;
  for (let i = 0; i < n; i++) {
    const at = (cursor + i) % n;
    if (!full(loads[at]!, limit)) return { index: at, cursor: (at + 1) % n };
  }
  return { index: -1, cursor: n === 0 ? cursor : cursor % n };
}

/**
 * Least-connections: the candidate with the fewest open connections, as the
 * primary knows them at once: handed and not reported closed, the ones not
 * acknowledged yet and those picked in this batch included. So a burst
 * handed out before any worker reports spreads, and a worker busy in a long
 * request, which acknowledges and closes nothing while it is busy, is passed
 * over as soon as its count, which grows with each connection it is given,
 * passes the others'; or sooner, once a hand-off to it has waited
 * STALLED_MS for the acknowledgement (stalled()): a stalled worker gets nothing while
 * another one that is not stalled has room, whatever the counts (when all
 * are stalled, the counts decide). Ties go to the first from `cursor` on,
 * and the cursor moves by one per pick, so equal workers take turns.
 */
export function leastConnections(loads: readonly WorkerLoad[], cursor: number, limit: number): Pick {
  const n = loads.length;
  let best = -1;
  let bestLoad = Infinity;
  let bestStalled = true;
  for (let i = 0; i < n; i++) {
    const at = (cursor + i) % n;
    const w = loads[at]!;
    if (full(w, limit)) continue;
    const s = stalled(w);
    if ((bestStalled && !s) || (s === bestStalled && w.open < bestLoad)) {
      best = at;
      bestLoad = w.open;
      bestStalled = s;
    }
  }
  return { index: best, cursor: n === 0 ? cursor : (cursor + 1) % n };
}

/**
 * Hash: sticky by `key` (the client address hash) over the candidates in
 * their order; a full worker's share goes to the next one. The cursor is
 * not used and comes back unchanged.
 */
export function hashPick(loads: readonly WorkerLoad[], key: number, cursor: number, limit: number): Pick {
  const n = loads.length;
  for (let i = 0; i < n; i++) {
    const at = (key + i) % n;
    if (!full(loads[at]!, limit)) return { index: at, cursor };
  }
  return { index: -1, cursor };
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/**
 * The hash strategy's key of a client address, as text ('192.0.2.1',
 * '2001:db8::1'), or as NUL-terminated bytes of that text: FNV-1a of its
 * characters. The port is not part of it (a client's connections stick
 * together), and the same address gives the same key whether it comes from
 * the connection (getpeername) or from a PROXY header.
 */
export function addressKey(addr: string | Uint8Array): number {
  const text = typeof addr === 'string';
  let h = FNV_OFFSET;
  for (let i = 0; i < addr.length; i++) {
    const c = text ? addr.charCodeAt(i) : addr[i]!;
    if (c === 0) break;
    h = Math.imul(h ^ c, FNV_PRIME) >>> 0;
  }
  return h;
}

/** The strategy's pick for a connection with `key`. */
export function pickWorker(strategy: Strategy, loads: readonly WorkerLoad[], key: number, cursor: number, limit: number): Pick {
  switch (strategy) {
    case 'least-connections':
      return leastConnections(loads, cursor, limit);
    case 'hash':
      return hashPick(loads, key, cursor, limit);
    default:
      return roundRobin(loads, cursor, limit);
  }
}

/**
 * Picks for up to `max` connections in a row, all of key 0 (round-robin,
 * least-connections), each pick counting the ones before it (its load's
 * `pending` and `open` grow by one, as a dispatcher does between picks):
 * plan[j] is the j-th pick's candidate index and cursors[j] the cursor
 * after it, so that a caller that uses only the first n picks resumes from
 * cursors[n - 1]. Returns how many were picked: fewer than `max` once every
 * candidate is full. `loads` is updated.
 */
export function pickMany(strategy: Strategy, loads: WorkerLoad[], cursor: number, limit: number, max: number,
  plan: Int32Array, cursors: Int32Array): number {
  let c = cursor;
  for (let j = 0; j < max; j++) {
    const p = pickWorker(strategy, loads, 0, c, limit);
    if (p.index < 0) return j;
    const l = loads[p.index]!;
    l.pending++;
    l.open++;
    plan[j] = p.index;
    c = cursors[j] = p.cursor;
  }
  return max;
}
