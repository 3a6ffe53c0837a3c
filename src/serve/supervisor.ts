/**
 * Supervisor: the worker processes of `fdpass serve`, from spawn to exit.
 *
 * - Spawn: a SOCK_SEQPACKET socketpair whose other end becomes the worker's
 *   fd 3 (our copy of that end is closed right after the spawn: the child
 *   has its own), with the worker's configuration in its environment and
 *   its generation's certificate and key as the first message on it. The
 *   primary's spare fds are given up for the moment of the spawn.
 * - Readiness: a worker is 'starting' until it says READY; one not ready
 *   within readyTimeout is killed, and its start fails (WorkerStartError).
 * - The worker protocol's control side (READY, FAILED, LOAD) is handled
 *   here; ACK and LOST go to the hooks (the dispatcher's business).
 * - The end: a worker whose process or channel ends is 'dead' at once (its
 *   channel closed) and the hooks hear of it (gone) so that its connections
 *   go elsewhere. A process that outlives its channel (it closed fd 3) is
 *   killed, by us: a failure of the worker for the respawn policy
 *   (respawn-policy.ts), not a kill from outside. The record is dropped
 *   when the process has exited, and a worker of the serving generation is
 *   replaced.
 * - Drain (SHUTDOWN, then SIGKILL if it takes too long; on hold during a
 *   shutdown: shutdown-hold.ts) and kill.
 *
 * Generations: each slot has at most one current worker, of the serving
 * generation (respawns keep it filled), and at most one next worker, of the
 * generation being started (startGeneration): that one takes over when all
 * of its generation is ready (promote), or is stopped if any cannot start
 * (abandon). Workers of other generations (draining, stopped) are in
 * `workers` until they exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { WorkerStartError } from '../errors';
import { UnixSocket } from '../socket/socket';
import type { Message } from '../socket/message';
import { decodeWorkerMessage, encodeShutdown, encodeStatusQuery, Op } from './protocol';
import { WORKER_ENV, type WorkerConfig } from './worker';
import type { Target } from './dispatcher';
import { HandoffWindow } from './handoff-window';
import { respawnPolicy } from './respawn-policy';
import { armDrainDeadline, armReleaseDeadline, type Drained } from './shutdown-hold';
import type { SpareFds } from './spare-fds';
import { errorCode, type Log } from './log';

export type WorkerState = 'starting' | 'ready' | 'draining' | 'dead';

export interface WorkerRec extends Target, Drained {
  readonly generation: number;
  readonly child: ChildProcess;
  state: WorkerState;
  pid: number | undefined;
  requests: number;
  startedAt: number;
  readyTimer: NodeJS.Timeout | null;
  killTimer: NodeJS.Timeout | null;
  /** Why it failed, as the worker said (FAILED) or as we decided. */
  failure: string | undefined;
  onReady: ((err?: Error) => void) | null;
  exited: Promise<void>;
  /** How it ended ('exit' event): for the crash-loop policy. */
  exitCode: number | null;
  exitSignal: NodeJS.Signals | null;
  /** The primary itself killed it (not ready in time, a protocol error,
   * its channel closed, drained too long, stopped while starting). */
  killedByUs: boolean;
  wasReady: boolean;
  loadWaiters: (() => void)[];
}

interface Slot {
  restarts: number;
  crashes: number;
  /** Its worker of the serving generation. */
  current: WorkerRec | null;
  /** Its worker of the generation being started. */
  next: WorkerRec | null;
  respawnTimer: NodeJS.Timeout | null;
}

export interface SupervisorOptions {
  workers: number;
  readyTimeout: number;
  shutdownTimeout: number;
  /** What every worker is told; its slot and generation are added. */
  config: Omit<WorkerConfig, 'slot' | 'generation'>;
  /** Worker entry point; default the built-in worker-main. */
  workerScript?: string;
  workerExecArgv?: string[];
  /** The TLS message (certificate and key) for a worker of `generation`,
   * sent first on its channel; none without tls listeners. */
  credentials?: (generation: number) => Buffer | undefined;
}

export interface SupervisorHooks {
  ready(w: WorkerRec): void;
  ack(w: WorkerRec, ids: Uint32Array, live: number, closed: number): void;
  lost(w: WorkerRec, batch: number): void;
  /** `w` is dead and its channel closed: its connections are to go elsewhere. */
  gone(w: WorkerRec): void;
  /** `w`'s process has exited; the record is dropped. */
  exited(w: WorkerRec): void;
}

/** How long a process whose channel ended gets to exit by itself (or to
 * be reported exited, if it was killed) before we kill it. */
const CHANNEL_GRACE_MS = 200;
/** The exit's reason in the log for a worker killed past its drain deadline. */
const DRAIN_KILLED = 'killed: still draining at its deadline';

export class Supervisor {
  readonly #opts: SupervisorOptions;
  readonly #spares: SpareFds;
  readonly #h: SupervisorHooks;
  readonly #log: Log;
  readonly #slots: Slot[] = [];
  readonly #workers = new Set<WorkerRec>();
  #serving = 0;
  #stopping = false;

  constructor(opts: SupervisorOptions, spares: SpareFds, hooks: SupervisorHooks, log: Log) {
    this.#opts = opts;
    this.#spares = spares;
    this.#h = hooks;
    this.#log = log;
    for (let slot = 0; slot < opts.workers; slot++) this.#slots.push({ restarts: 0, crashes: 0, current: null, next: null, respawnTimer: null });
  }

  /** Every worker not yet exited, of any generation and state. */
  get workers(): ReadonlySet<WorkerRec> {
    return this.#workers;
  }

  /** The serving generation (0 until the first one is promoted). */
  get serving(): number {
    return this.#serving;
  }

  /** The current worker of each slot that has one, in slot order: the
   * serving generation's. */
  current(): WorkerRec[] {
    const out: WorkerRec[] = [];
    for (const s of this.#slots) if (s.current) out.push(s.current);
    return out;
  }

  restarts(slot: number): number {
    return this.#slots[slot]?.restarts ?? 0;
  }

  /** Starts `generation` (newer than any before): a next worker in every
   * slot. Resolves when all are ready, rejects (WorkerStartError) as soon
   * as one cannot start; either way the caller then promotes or abandons it. */
  startGeneration(generation: number): Promise<void> {
    const starts: Promise<void>[] = [];
    for (let slot = 0; slot < this.#slots.length; slot++) starts.push(this.#spawn(slot, generation));
    return Promise.all(starts).then(() => undefined);
  }

  /**
   * `generation`, all ready, becomes the serving one: each slot's next
   * worker its current one (a respawn pending for the slot is dropped).
   * Returns the workers of other generations still running, for the caller
   * to retire. Throws (WorkerStartError) if one of the next workers died
   * after it was ready: then nothing changed, and the caller abandons it.
   */
  promote(generation: number): WorkerRec[] {
    this.#slots.forEach((s, slot) => {
      const w = s.next;
      if (w?.generation !== generation || w.state !== 'ready') throw new WorkerStartError(slot, w?.pid, w?.failure ?? 'not ready with its generation');
    });
    for (const s of this.#slots) {
      if (s.respawnTimer) clearTimeout(s.respawnTimer);
      s.respawnTimer = null;
      s.current = s.next;
      s.next = null;
    }
    this.#serving = generation;
    return [...this.#workers].filter((w) => w.generation !== generation && w.state !== 'dead');
  }

  /** `generation` will not serve: its workers are retired (those ready
   * may have been given connections when no other worker was: they drain). */
  abandon(generation: number): void {
    for (const s of this.#slots) if (s.next?.generation === generation) s.next = null;
    for (const w of this.#workers) if (w.generation === generation) this.retire(w);
  }

  /** Ends a worker that is not to serve: one still starting has no
   * connection and is killed; any other drains (on `hold`: drain()). */
  retire(w: WorkerRec, hold = false): void {
    if (w.state === 'starting') this.kill(w);
    else this.drain(w, hold);
  }

  /** Resolves when every worker that is not a slot's current one (retired,
   * draining, abandoned, dying) has exited. */
  async othersExited(): Promise<void> {
    for (;;) {
      const others = [...this.#workers].filter((w) => this.#slots[w.slot]?.current !== w);
      if (others.length === 0) return;
      await Promise.all(others.map((w) => w.exited));
    }
  }

  /** Starts a worker in `slot`; resolves when it is ready, rejects if it
   * cannot be started (EMFILE on the socketpair, say) or dies first. */
  #spawn(slot: number, generation: number): Promise<void> {
    try {
      // The spawn needs fds: the spares are given up for it.
      return this.#spares.lend(() => this.#spawnNow(slot, generation));
    } catch (err) {
      this.#log('worker-spawn-failed', { slot, generation, error: errorCode(err) });
      return Promise.reject(err);
    }
  }

  #spawnNow(slot: number, generation: number): Promise<void> {
    const [mine, theirs] = UnixSocket.pair({ type: 'seqpacket' });
    const config: WorkerConfig = { ...this.#opts.config, slot, generation };
    const script = this.#opts.workerScript ?? path.join(__dirname, 'worker-main.js');
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [...(this.#opts.workerExecArgv ?? []), script], {
        stdio: ['ignore', 'inherit', 'inherit', theirs.fd],
        env: { ...process.env, [WORKER_ENV]: JSON.stringify(config) },
      });
    } catch (err) {
      mine.close();
      throw err;
    } finally {
      theirs.close();
    }
    const w: WorkerRec = {
      slot, generation, child, sock: mine, state: 'starting', pid: child.pid, inflight: new Map(), batches: 0,
      handed: 0, returned: 0, closed: 0, acked: 0, live: 0, window: new HandoffWindow(), requests: 0, startedAt: Date.now(),
      readyTimer: null, killTimer: null, failure: undefined, onReady: null, loadWaiters: [],
      exitCode: null, exitSignal: null, killedByUs: false, wasReady: false, held: false, drainedAt: 0,
      // A spawn that fails (EMFILE, EAGAIN) emits 'error' and never 'exit'.
      exited: new Promise((res) => {
        child.once('exit', (code, signal) => {
          w.exitCode = code;
          w.exitSignal = signal;
          res();
        });
        child.once('error', () => child.pid === undefined && res());
      }),
    };
    this.#workers.add(w);
    // A respawn fills the serving generation's place; a new generation's
    // worker waits for promote().
    if (generation === this.#serving) this.#slots[slot]!.current = w;
    else this.#slots[slot]!.next = w;
    const tls = this.#opts.credentials?.(generation);
    if (tls) mine.send(tls).catch(() => {}); // a worker that is gone already is noticed below
    mine.on('message', (m: Message) => this.#onMessage(w, m));
    mine.on('error', () => this.gone(w, 'channel error'));
    mine.on('close', () => this.gone(w, 'channel closed'));
    child.once('error', (err) => this.gone(w, err.message));
    child.once('exit', (code, signal) => this.gone(w, signal ? `killed by ${signal}` : `exited with code ${code}`));
    this.#log('worker-spawn', { slot, generation, pid: child.pid });
    return new Promise<void>((resolve, reject) => {
      w.onReady = (err) => (err ? reject(err) : resolve());
      w.readyTimer = setTimeout(() => {
        w.failure = `not ready within ${this.#opts.readyTimeout} ms`;
        this.kill(w);
      }, this.#opts.readyTimeout);
    });
  }

  #onMessage(w: WorkerRec, m: Message): void {
    m.close(); // workers send no fds
    let msg;
    try {
      msg = decodeWorkerMessage(m.data);
    } catch (err) {
      this.#log('worker-protocol-error', { slot: w.slot, pid: w.pid, error: (err as Error).message });
      this.kill(w);
      return;
    }
    switch (msg.op) {
      case Op.Ack:
        this.#h.ack(w, msg.ids, msg.live, msg.closed);
        break;
      case Op.Lost:
        this.#h.lost(w, msg.batch);
        break;
      case Op.Load:
        w.live = msg.live;
        w.closed = msg.closed;
        w.requests = msg.requests;
        for (const f of w.loadWaiters.splice(0)) f();
        break;
      case Op.Ready:
        if (w.state !== 'starting') break;
        w.state = 'ready';
        w.wasReady = true;
        w.pid = msg.pid;
        if (w.readyTimer) clearTimeout(w.readyTimer);
        w.readyTimer = null;
        this.#log('worker-ready', { slot: w.slot, generation: w.generation, pid: w.pid });
        w.onReady?.();
        w.onReady = null;
        this.#h.ready(w);
        break;
      case Op.Failed:
        w.failure = msg.message;
        break;
    }
  }

  /** A worker's process or channel ended, or a hand-off to it failed
   * (called more than once; acts once). */
  gone(w: WorkerRec, why: string): void {
    if (w.state === 'dead') return;
    const wasDraining = w.state === 'draining';
    w.state = 'dead';
    if (w.readyTimer) clearTimeout(w.readyTimer);
    w.sock.close();
    if (w.child.exitCode === null && w.child.signalCode === null) {
      // Its channel ended first. Usually the process is dying already (a
      // kill from outside closes its fds before its exit is reported); one
      // still alive after the grace closed its channel itself, and is
      // killed by us, as a failure.
      if (w.killTimer) clearTimeout(w.killTimer);
      w.killTimer = setTimeout(() => {
        if (w.child.exitCode === null && w.child.signalCode === null && !isZombie(w.child.pid)) this.kill(w);
      }, CHANNEL_GRACE_MS);
    }
    const slot = this.#slots[w.slot]!;
    const replace = slot.current === w;
    if (replace) slot.current = null;
    void w.exited.then(() => {
      if (w.killTimer) clearTimeout(w.killTimer);
      this.#workers.delete(w);
      this.#h.exited(w);
      // A worker of the serving generation is replaced (once we know how it
      // ended); one that fails during the start of a generation makes that
      // start fail instead.
      if (replace && slot.current === null && !this.#stopping && w.generation === this.#serving) this.#respawn(w.slot, w);
    });
    const reason = (w.failure ??= why);
    this.#log(wasDraining ? 'worker-drained' : 'worker-exit', {
      slot: w.slot, generation: w.generation, pid: w.pid, reason, redispatched: w.inflight.size,
    });
    // Its start fails, whatever it was doing (even drained while starting).
    if (w.onReady) {
      w.onReady(new WorkerStartError(w.slot, w.pid, reason));
      w.onReady = null;
    }
    this.#h.gone(w);
  }

  /** SIGKILL for misbehaving (not ready in time, a protocol error, its
   * channel closed, draining too long) or not wanted (stopped while
   * starting): a crash, not a kill from outside, for the respawn policy. */
  kill(w: WorkerRec, why?: string): void {
    if (why) w.failure ??= why; // the exit's log line gives it as the reason
    w.killedByUs = true;
    w.child.kill('SIGKILL');
  }

  /** Respawn with back-off (respawn-policy.ts): a ready worker killed from
   * outside at once, a crash after a growing delay. */
  #respawn(slot: number, dead: WorkerRec | null): void {
    const s = this.#slots[slot]!;
    if (s.respawnTimer || this.#stopping) return;
    const { cause, crashes, delay, crashLoop } = respawnPolicy(dead, s.crashes, Date.now());
    s.crashes = crashes;
    this.#log('worker-respawn', { slot, inMs: delay, cause, crashes, ...(dead ? { pid: dead.pid, code: dead.exitCode, signal: dead.exitSignal } : {}) });
    if (crashLoop) this.#log('worker-crash-loop', { slot, crashes, nextAttemptMs: delay, reason: dead ? dead.failure : 'spawn failed' });
    s.respawnTimer = setTimeout(() => {
      s.respawnTimer = null;
      if (this.#stopping || s.current) return;
      s.restarts++;
      const started = this.#spawn(slot, this.#serving);
      // A worker that starts and then dies is respawned from gone(); one
      // that could not even be started has no record: try again from here.
      if (!s.current) this.#respawn(slot, null);
      started.catch(() => {});
    }, delay);
  }

  /** Asks `w` to finish what it has and exit (SHUTDOWN; with `hold`, to
   * stay for hand-offs until release()); past the shutdown timeout and a
   * grace period it is killed (shutdown-hold.ts), and whatever it never
   * acknowledged goes elsewhere then. */
  drain(w: WorkerRec, hold = false): void {
    if (w.state === 'dead' || w.state === 'draining') return;
    w.state = 'draining';
    w.held = hold;
    w.drainedAt = Date.now();
    w.sock.send(encodeShutdown(this.#opts.shutdownTimeout, hold)).catch(() => {});
    armDrainDeadline(w, this.#opts.shutdownTimeout, () => this.kill(w, DRAIN_KILLED));
  }

  /** The shutdown's hold ends: every held worker is told SHUTDOWN without HOLD. */
  release(): void {
    for (const w of this.#workers) {
      if (!w.held || w.state !== 'draining') continue;
      w.held = false;
      w.sock.send(encodeShutdown(this.#opts.shutdownTimeout)).catch(() => {});
      armReleaseDeadline(w, this.#opts.shutdownTimeout, () => this.kill(w, DRAIN_KILLED));
    }
  }

  /** No more respawns from now on (shutting down). */
  stopRespawning(): void {
    this.#stopping = true;
    for (const s of this.#slots) if (s.respawnTimer) clearTimeout(s.respawnTimer);
  }

  /** Ends every worker: those still starting get no traffic and are
   * killed; the others drain (on `hold`: shutdown-hold.ts). */
  stopAll(hold = false): void {
    this.stopRespawning();
    for (const w of this.#workers) this.retire(w, hold);
  }

  /** Resolves when every worker has exited. */
  async allExited(): Promise<void> {
    while (this.#workers.size > 0) await Promise.all([...this.#workers].map((w) => w.exited));
  }

  /** Asks the ready and draining workers for their counts (LOAD); resolves
   * when all have answered, or after `timeout` ms for those that have not. */
  async askLoad(timeout: number): Promise<void> {
    const asks = [...this.#workers].filter((w) => w.state === 'ready' || w.state === 'draining').map((w) =>
      new Promise<void>((resolve) => {
        const t = setTimeout(resolve, timeout);
        w.loadWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
        w.sock.send(encodeStatusQuery()).catch(() => resolve());
      }));
    await Promise.all(asks);
  }
}

/** Whether `pid` (our child, not yet reaped) has exited: a zombie. */
function isZombie(pid: number | undefined): boolean {
  if (pid === undefined) return true;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] === 'Z';
  } catch {
    return true; // gone
  }
}
