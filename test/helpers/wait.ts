/**
 * Waiting with a deadline: the one polling loop of the test helpers, the
 * benchmarks and the long runs. Every wait names what it waits for, so that
 * a timeout says what did not happen (and, through `detail`, what was seen
 * instead) rather than "timed out".
 *
 * No node:test import: fixture scripts and the long runs use this too.
 */
import * as assert from 'node:assert/strict';
import { once, type EventEmitter } from 'node:events';

export function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms));
}

export interface WaitOptions {
  /** Give up after this many ms (default 10 s). */
  timeout?: number;
  /** Check again after this many ms (default 10). */
  interval?: number;
  /** What is awaited, for the error: "`what` not reached within N ms". */
  what?: string;
  /** More for the error, asked for only on timeout (the last status, stderr...). */
  detail?: () => string;
  /** Check again at once whenever this emitter emits this event, not only every `interval`. */
  wakeOn?: [EventEmitter, string];
}

/**
 * Calls `probe` until it returns something other than undefined, null or
 * false, and resolves with that. Fails (AssertionError) once `timeout` has
 * passed; a probe that throws ends the wait with its error (for conditions
 * that can no longer come true, such as a process that exited).
 */
export async function waitFor<T>(probe: () => T | undefined | null | false | Promise<T | undefined | null | false>, o: WaitOptions = {}): Promise<T> {
  const timeout = o.timeout ?? 10_000;
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() >= deadline) {
      const detail = o.detail?.();
      assert.fail(`${o.what ?? 'condition'} not reached within ${timeout} ms${detail ? `; ${detail}` : ''}`);
    }
    await pause(Math.min(o.interval ?? 10, Math.max(1, deadline - Date.now())), o.wakeOn);
  }
}

/**
 * `p`, or an AssertionError naming `what` if it has not settled within
 * `timeout` ms: a deadline for a wait that has none of its own (a promise
 * built on an event that events.once would not do, say).
 */
export function within<T>(p: Promise<T>, timeout: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new assert.AssertionError({ message: `${what} not reached within ${timeout} ms` })), timeout);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/**
 * The arguments of `emitter`'s next `event` (events.once: an 'error' event
 * rejects); fails (AssertionError) after `timeout` ms (default 10 s) without
 * one.
 */
export async function nextEvent<T extends unknown[] = unknown[]>(emitter: EventEmitter, event: string, o: { timeout?: number; what?: string } = {}): Promise<T> {
  const timeout = o.timeout ?? 10_000;
  try {
    return await once(emitter, event, { signal: AbortSignal.timeout(timeout) }) as T;
  } catch (err) {
    if ((err as Error).name !== 'AbortError') throw err;
    return assert.fail(`${o.what ?? `'${event}' event`} not reached within ${timeout} ms`);
  }
}

/**
 * Waits until `read()` gives the same value (by `same`, default ===) `times`
 * times in a row after the first, `interval` ms apart, and resolves with it:
 * for what settles rather than reaches a known value (an fd table while
 * asynchronous closes finish, a read-ahead that stops by itself).
 */
export function waitSteady<T>(read: () => T | Promise<T>, o: WaitOptions & { times?: number; same?: (a: T, b: T) => boolean } = {}): Promise<T> {
  const same = o.same ?? ((a: T, b: T) => a === b);
  const times = o.times ?? 1;
  let last: { v: T } | undefined;
  let run = 0;
  return waitFor(async () => {
    const v = await read();
    run = last && same(last.v, v) ? run + 1 : 0;
    last = { v };
    return run >= times ? { v } : undefined;
  }, { interval: 10, ...o, what: o.what ?? 'a steady value', detail: o.detail ?? (() => `last: ${JSON.stringify(last?.v)}`) })
    .then((r) => r.v);
}

function pause(ms: number, wakeOn?: [EventEmitter, string]): Promise<void> {
  if (!wakeOn) return sleep(ms);
  const [emitter, event] = wakeOn;
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      emitter.off(event, done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    emitter.on(event, done);
  });
}
