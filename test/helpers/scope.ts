/**
 * The per-test scope: a cleanup stack that runs when the test ends, followed
 * by the check that the test left no fd of this process open. Helpers that
 * acquire something (a process, a temp dir, open files) take an `owner` and
 * register their cleanup with it.
 */
import { openFds, warmUp, expectNoFdLeak } from './fds';

/** Something that runs cleanups: a Scope, or a node:test TestContext. */
export interface Deferrer {
  defer?(fn: () => unknown): void;
  after?(fn: () => unknown): void;
}

type Cleanup = () => unknown;

/** Runs `fn` when `owner` cleans up (nothing without an owner). */
export function onCleanup(owner: Deferrer | undefined, fn: Cleanup): void {
  if (!owner) return;
  if (owner.defer) owner.defer(fn);
  else owner.after?.(fn);
}

/**
 * Per-test fd tracking with its own cleanup stack. Created at the start of a
 * test: snapshots /proc/self/fd; when the test ends (t.after), runs the
 * deferred cleanups last-in first-out, then asserts that no fd was added.
 * (node:test runs t.after hooks first-in first-out, so a test that deferred
 * cleanups with t.after itself would be checked before them: use
 * scope.defer().)
 */
export class Scope {
  #cleanups: Cleanup[] = [];
  #before: Map<number, string>;

  constructor(before: Map<number, string>) {
    this.#before = before;
  }

  /** Runs `fn` at the end of the test, before the leak check (LIFO). */
  defer(fn: Cleanup): void {
    this.#cleanups.push(fn);
  }

  /** Runs the cleanups now (LIFO); errors are collected and rethrown. */
  async cleanup(): Promise<void> {
    const errors: unknown[] = [];
    while (this.#cleanups.length > 0) {
      const fn = this.#cleanups.pop()!;
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, 'several cleanups failed');
  }

  /** Runs the cleanups, then asserts that the test left no fd open. */
  async finish(): Promise<void> {
    await this.cleanup();
    await expectNoFdLeak(this.#before);
  }

  /** The snapshot taken when the scope was created. */
  get before(): Map<number, string> {
    return this.#before;
  }
}

/**
 * `const scope = await trackFds(t)` at the start of a test: warms the runtime
 * up (first call only), snapshots /proc/self/fd, and registers a t.after
 * that runs the scope's cleanups and then fails the test if an fd leaked.
 */
export async function trackFds(t: { after(fn: () => unknown): void }): Promise<Scope> {
  await warmUp();
  const scope = new Scope(openFds());
  t.after(() => scope.finish());
  return scope;
}
