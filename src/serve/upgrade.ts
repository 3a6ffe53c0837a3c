/**
 * `fdpass upgrade` (or SIGUSR2), the old primary's side: start a new
 * primary from this one's command line (so that a new fdpass on disk is the
 * one that runs) with `--takeover PATH`, and learn how it went.
 *
 * The new primary takes the listeners from PATH (handover.ts serves them),
 * starts its workers and, once they are ready, asks this one to finish over
 * the takeover connection; handover.ts then calls taken(). Until then this
 * primary serves as if nothing happened. If the new primary exits first (a
 * command line it refuses, workers that never become ready, a crash), or
 * has not taken over within `timeout` (it is then stopped: SIGTERM, and
 * SIGKILL after KILL_GRACE_MS), the upgrade fails with an UpgradeError
 * saying so in one line, and this primary serves on. If this primary stops
 * first (SIGTERM, SIGINT...), the upgrade fails and the new primary is
 * stopped with it (abandon()).
 *
 * The new primary is this process's child (its stdin /dev/null, its stdout
 * and stderr this one's: the same log) until this one exits; then it is
 * reparented, as nginx's new master is after a binary upgrade.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UpgradeError } from '../errors';

/** How long a new primary that overran its time gets between SIGTERM and SIGKILL. */
const KILL_GRACE_MS = 5000;

/**
 * The arguments of `fdpass serve` for the new primary: `args` (this one's)
 * without their --takeover and --takeover-signal, then `--takeover PATH`.
 * `options` is serve's parseArgs option table (to tell values from flags).
 */
export function upgradeArgs(args: readonly string[], options: NonNullable<ParseArgsConfig['options']>, takeoverPath: string): string[] {
  const { tokens } = parseArgs({ args: [...args], options, allowPositionals: true, strict: false, tokens: true });
  const drop = new Set<number>();
  for (const t of tokens) {
    if (t.kind !== 'option' || (t.name !== 'takeover' && t.name !== 'takeover-signal')) continue;
    drop.add(t.index);
    // `--name value` spans two arguments; `--name=value` one.
    if (t.value !== undefined && !t.inlineValue) drop.add(t.index + 1);
  }
  const out = args.filter((_, i) => !drop.has(i));
  // Options go before a `--` that ends them.
  const end = out.indexOf('--');
  const add = ['--takeover', takeoverPath];
  return end < 0 ? [...out, ...add] : [...out.slice(0, end), ...add, ...out.slice(end)];
}

/** One upgrade under way: the new primary as a child process. */
export class UpgradeRun {
  readonly child: ChildProcess;
  /** Settles with the new primary's pid once it took over; rejects with an
   * UpgradeError if it cannot. */
  readonly done: Promise<number>;
  /** Settles once the child has exited (whatever the outcome). */
  readonly exited: Promise<void>;
  /** 'running' until it took over ('taken') or cannot ('failed'). */
  #state: 'running' | 'taken' | 'failed' = 'running';
  #settle!: { resolve: (pid: number) => void; reject: (err: Error) => void };
  readonly #timer: NodeJS.Timeout;

  /** Starts `argv` (argv[0] the executable) with `env`; it has `timeout`
   * ms to take over. */
  constructor(argv: readonly string[], env: NodeJS.ProcessEnv, timeout: number) {
    this.done = new Promise((resolve, reject) => (this.#settle = { resolve, reject }));
    // Nobody may be left waiting on an unhandled rejection: the caller
    // awaits done, and so does the coalescing of handover.ts.
    this.done.catch(() => {});
    this.child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'inherit', 'inherit'], env });
    this.exited = new Promise((resolve) => this.child.once('close', () => resolve()));
    this.child.once('error', (err) => this.#fail(`could not start the new primary: ${err.message}`, err));
    this.child.once('exit', (code, signal) => {
      clearTimeout(this.#timer);
      this.#fail(`the new primary (pid ${this.child.pid}) exited (${signal ?? `code ${code}`}) before taking over; this one serves on`);
    });
    this.#timer = setTimeout(() => {
      this.#fail(`the new primary (pid ${this.child.pid}) did not take over within ${timeout} ms: stopped; this one serves on`);
      this.#stop(KILL_GRACE_MS);
    }, timeout);
  }

  /**
   * This primary is stopping before the new one took over: the upgrade
   * fails with `message`, and the new primary is stopped too (SIGTERM, its
   * graceful shutdown; SIGKILL if it is still there `grace` ms later). It may
   * already serve the listeners it took, after a finish request this one
   * refused: left running, it would serve on without the control socket,
   * which this one still held when it started. Await `exited` for its end.
   */
  abandon(message: string, grace: number): void {
    if (this.#state !== 'running') return;
    this.#fail(message);
    this.#stop(grace);
  }

  /** The new primary's pid (undefined if it could not be spawned). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  get state(): 'running' | 'taken' | 'failed' {
    return this.#state;
  }

  /** The new primary asked this one to finish: the upgrade is done. */
  taken(): void {
    if (this.#state !== 'running') return;
    this.#state = 'taken';
    clearTimeout(this.#timer);
    // It outlives this process: nothing here waits for it any more.
    this.child.unref();
    this.#settle.resolve(this.child.pid!);
  }

  /** SIGTERM now, SIGKILL after `grace` ms (no-ops once it has exited). */
  #stop(grace: number): void {
    this.child.kill('SIGTERM');
    const kill = setTimeout(() => this.child.kill('SIGKILL'), grace);
    kill.unref();
    void this.exited.then(() => clearTimeout(kill));
  }

  #fail(message: string, cause?: unknown): void {
    if (this.#state !== 'running') return;
    this.#state = 'failed';
    clearTimeout(this.#timer);
    this.#settle.reject(new UpgradeError(message, cause === undefined ? undefined : { cause }));
  }
}
