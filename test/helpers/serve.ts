/**
 * `fdpass serve` as a real process tree: started with arguments, up once it
 * says so (its listeners, control socket and pid parsed from stderr), its
 * JSON lifecycle events followed, its status queried, the fd tables of the
 * primary and of every worker accounted for, and stopped. Every process
 * started with an owner (a Scope) is killed, its workers included, when the
 * test ends.
 */
import * as assert from 'node:assert/strict';
import { queryStatus } from '../../src/serve/control';
import type { LogEvent, Status } from '../../src';
import { treeFds, sameTree, treeLeaks, type TreeFds } from './fds';
import type { Endpoint } from './http';
import { CLI } from './paths';
import { Child, type ChildOptions, type ChildResult } from './process';
import { childrenOf } from './proc';
import { waitFor, waitSteady } from './wait';

export type { LogEvent, Status };

/** A listener as `fdpass serve` reports it: `fdpass: NAME on ADDRESS[ (tls)]`. */
export interface ServeListener extends Endpoint {
  name: string;
}

/** How a run of `fdpass serve` ended, with every lifecycle event it logged. */
export interface ServeResult extends ChildResult {
  events: LogEvent[];
}

export type ServeOptions = Pick<ChildOptions, 'owner' | 'prefix' | 'env' | 'fds' | 'uid' | 'gid'> & {
  /** How long to wait for the "up" line (default 15 s). */
  upTimeout?: number;
  /** The fdpass command to run (default the repository's bin/fdpass.js; a
   * readableCopy()'s for workers of another user). */
  cli?: string;
  /**
   * The workers' user when the test runs as root and ARGS has no --user:
   * default 'root', so that tests about anything but privileges keep their
   * workers as the test's user (and need not read the package as another
   * user); null passes no --user (a root primary's default: nobody).
   */
  user?: string | null;
};

const LISTENER_LINE = /^fdpass: (\S+) on (.+?)( \(tls\))?$/;
const UP_LINE = /^fdpass: (\d+) workers, (\S+); control socket (.+); pid (\d+)$/;

function parseListener(name: string, address: string, isTls: boolean): ServeListener {
  const v6 = /^\[(.+)\]:(\d+)$/.exec(address);
  if (v6) return { name, address, tls: isTls, host: v6[1], port: Number(v6[2]) };
  const v4 = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(address);
  if (v4) return { name, address, tls: isTls, host: v4[1], port: Number(v4[2]) };
  return { name, address, tls: isTls, path: address };
}

/** Nothing in flight, nothing waiting, no live connection, every worker ready. */
function isIdle(st: Status): boolean {
  return st.primary.inflight === 0 && st.primary.waiting === 0 &&
    st.workers.length > 0 && st.workers.every((w) => w.state === 'ready' && w.live === 0 && w.unacked === 0);
}

const IDLE = 'idle (nothing in flight, no live connection)';

/** A running `fdpass serve` (the primary; its workers are its children). */
export class ServeProcess extends Child {
  listeners: ServeListener[] = [];
  control = '';
  workers = 0;
  strategy = '';
  #up = false;
  #events: LogEvent[] = [];
  #pendingListeners: ServeListener[] = [];

  /** `prefix` (e.g. systemd-socket-activate ...) must exec fdpass, so that `pid` is the primary's. */
  constructor(args: readonly string[], options: ServeOptions = {}) {
    super([process.execPath, options.cli ?? CLI, 'serve', ...withUser(args, options)], {
      owner: options.owner, prefix: options.prefix, env: options.env, fds: options.fds, uid: options.uid, gid: options.gid, label: 'fdpass serve',
    });
    this.emitter.on('line', (line: string, stream: string) => {
      if (stream === 'stderr') this.#onLine(line);
    });
  }

  #onLine(line: string): void {
    if (line.startsWith('{')) {
      try {
        this.#events.push(JSON.parse(line) as LogEvent);
      } catch {
        // not an event
      }
      return;
    }
    const up = UP_LINE.exec(line);
    if (up) {
      this.workers = Number(up[1]);
      this.strategy = up[2]!;
      this.control = up[3]!;
      this.listeners = this.#pendingListeners;
      this.#up = true;
      return;
    }
    const l = LISTENER_LINE.exec(line);
    if (l) this.#pendingListeners.push(parseListener(l[1]!, l[2]!, Boolean(l[3])));
  }

  /** Resolves once the "N workers, ...; control socket ...; pid P" line is out;
   * fails (with stderr) if the process exits first or `timeout` passes. */
  async waitUp(timeout = 15_000): Promise<this> {
    await waitFor(() => {
      if (this.#up) return true;
      if (this.result) throw new Error(`fdpass serve exited (code ${this.result.code}, signal ${this.result.signal}) before it was up\nstderr:\n${this.stderr}`);
      return false;
    }, { timeout, what: 'fdpass serve up', wakeOn: [this.emitter, 'output'], detail: () => `stderr:\n${this.stderr}` });
    return this;
  }

  /** The listener named `name` (or at `index`). */
  listener(which: string | number = 0): ServeListener {
    const l = typeof which === 'number' ? this.listeners[which] : this.listeners.find((x) => x.name === which);
    assert.ok(l, `no listener ${which} in ${JSON.stringify(this.listeners)}`);
    return l;
  }

  /** Lifecycle events so far (optionally of one kind). */
  events(name?: string): LogEvent[] {
    return name ? this.#events.filter((e) => e.event === name) : [...this.#events];
  }

  /** The first event (past or future) matching `pred`. */
  waitEvent(pred: (e: LogEvent) => boolean, timeout = 10_000, what = 'event'): Promise<LogEvent> {
    return waitFor(() => this.#events.find(pred), { timeout, what, wakeOn: [this.emitter, 'line'], detail: () => `stderr:\n${this.stderr}` });
  }

  /** Waits until `n` events match `pred`. */
  waitEvents(pred: (e: LogEvent) => boolean, n: number, timeout = 10_000, what = 'events'): Promise<LogEvent[]> {
    return waitFor(() => {
      const got = this.#events.filter(pred);
      return got.length >= n && got;
    }, { timeout, what: `${n} ${what}`, wakeOn: [this.emitter, 'line'], detail: () => `${this.#events.filter(pred).length} seen; stderr:\n${this.stderr}` });
  }

  /** The status, from the control socket (in-process client). */
  status(): Promise<Status> {
    return queryStatus(this.control);
  }

  /** Polls the status until `pred` holds (fails after `timeout` with the last status). */
  waitStatus(pred: (s: Status) => boolean, timeout = 10_000, what = 'status'): Promise<Status> {
    let last: Status | undefined;
    return waitFor(async () => {
      last = await this.status();
      return pred(last) && last;
    }, { timeout, interval: 20, what, detail: () => `last status: ${JSON.stringify(last)}` });
  }

  /** Pids of the primary's live children (its workers), from /proc. */
  childPids(): number[] {
    return childrenOf(this.pid);
  }

  /** The fd tables of the primary and of each live worker of `st`. */
  #snapshot(st: Status): TreeFds {
    return treeFds(this.pid, st.workers.filter((w) => w.pid !== undefined && w.state !== 'dead').map((w) => w.pid!));
  }

  /** The fd tables of the primary and of each worker, now. */
  async treeFds(): Promise<TreeFds> {
    return this.#snapshot(await this.status());
  }

  /**
   * Waits until the server is idle (no connection in flight, waiting or
   * live in a worker; every worker ready, none draining) and its fd tables
   * hold still, and returns them: the baseline for expectNoFdLeak(). Take it
   * after a few requests, so that what the runtime opens lazily is open.
   */
  async idleFds(timeout = 10_000): Promise<TreeFds> {
    const st = await this.waitStatus(isIdle, timeout, IDLE);
    // No more status queries from here: each is a connection of its own.
    return waitSteady(() => this.#snapshot(st), { same: sameTree, interval: 20, timeout, what: 'fd tables of fdpass serve holding still', detail: () => '' });
  }

  /**
   * Once idle, what the primary or any worker holds beyond `before`
   * (idleFds()), by kind (treeLeaks()), one line each; gives asynchronous
   * closes up to `timeout` ms. An empty list: nothing leaked.
   */
  async fdLeaks(before: TreeFds, timeout = 10_000): Promise<string[]> {
    return (await this.#leaksOnceIdle(before, timeout)).leaks;
  }

  /** Fails unless fdLeaks() finds nothing; returns the fd tables it found. */
  async expectNoFdLeak(before: TreeFds, timeout = 10_000): Promise<TreeFds> {
    const { leaks, now } = await this.#leaksOnceIdle(before, timeout);
    if (leaks.length) assert.fail(`fdpass serve leaked fds once idle:\n${leaks.join('\n')}`);
    return now;
  }

  async #leaksOnceIdle(before: TreeFds, timeout: number): Promise<{ leaks: string[]; now: TreeFds }> {
    const st = await this.waitStatus(isIdle, timeout, IDLE);
    let last = { leaks: [] as string[], now: this.#snapshot(st) };
    await waitFor(() => {
      const now = this.#snapshot(st);
      last = { leaks: treeLeaks(before, now), now };
      return last.leaks.length === 0;
    }, { timeout, interval: 25 }).catch(() => {}); // the leaks of the last look are the answer
    return last;
  }

  /** Kills the primary and its workers (SIGKILL; stopped ones too) and waits until gone. */
  override async kill(): Promise<ChildResult> {
    if (this.running) {
      for (const pid of this.childPids()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
    }
    return super.kill('SIGKILL');
  }

}

/** ARGS with `--user USER` added (see ServeOptions.user). */
function withUser(args: readonly string[], o: ServeOptions): readonly string[] {
  const root = (o.uid ?? process.getuid!()) === 0;
  if (o.user === null || !root || args.some((a) => a === '--user' || a.startsWith('--user='))) return args;
  return ['--user', o.user ?? 'root', ...args];
}

/** Starts `fdpass serve ARGS` and waits until it is up; kills it if it does not get there. */
export async function startServe(args: readonly string[], options: ServeOptions = {}): Promise<ServeProcess> {
  const s = new ServeProcess(args, options);
  try {
    return await s.waitUp(options.upTimeout);
  } catch (err) {
    await s.kill();
    throw err;
  }
}

/** Runs `fdpass serve ARGS` expecting it to exit by itself (a start-up failure);
 * kills it and fails if it is still running after `timeout`. */
export async function runServe(args: readonly string[], options: ServeOptions & { timeout?: number } = {}): Promise<ServeResult> {
  const s = new ServeProcess(args, options);
  const timeout = options.timeout ?? 15_000;
  try {
    await s.waitExit(timeout, `exit of fdpass serve ${args.join(' ')}`);
  } catch (err) {
    await s.kill();
    throw err;
  }
  return { ...s.result!, events: s.events() };
}
