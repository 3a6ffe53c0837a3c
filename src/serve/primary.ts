/**
 * The primary of `fdpass serve`: it alone holds the listening sockets,
 * accepts every connection and hands its fd to a worker process over a
 * SOCK_SEQPACKET socketpair (the worker's fd 3). It never reads a byte of a
 * connection.
 *
 * This file is the orchestration: start, reload, shutdown, generations, and
 * the wiring between the parts, each of which does one job:
 * - listeners.ts: opening and closing the listening sockets;
 * - accept-loop.ts: accepting on all of them (back-off at EMFILE, resume
 *   as soon as the primary closes an fd, the drain on shutdown);
 * - dispatcher.ts: which worker gets each connection (strategies.ts), and
 *   the primary's copy of every fd until the worker acknowledges it (a dead
 *   worker's connections, or a hand-off that reached a worker without its
 *   fds, go to another worker; handoff-window.ts paces a worker out of fds);
 * - supervisor.ts: the worker processes (spawn, readiness, respawn with
 *   back-off, crash loops, drain, kill);
 * - spare-fds.ts: a few fds kept so that a worker can be respawned at
 *   RLIMIT_NOFILE; status.ts: the status document.
 *
 * Generations: reload() starts a new generation of workers; the serving
 * one serves (and is respawned) until all of the new one is ready, then
 * drains. A new generation that cannot start is stopped, and the serving
 * one stays. Reloads never overlap (coalescer.ts): a reload asked for while
 * one runs is queued, later ones join it, and each starts only once the
 * workers the previous one replaced have exited (at most two generations
 * at once). shutdown() stops accepting (after taking what waits in the
 * backlog), lets the workers finish, and resolves when they have exited.
 */
import { EventEmitter } from 'node:events';
import * as path from 'node:path';
import * as os from 'node:os';
import { ServeConfigError } from '../errors';
import { fdsFreed } from '../socket/acceptor';
import { openListeners, closeListeners, publicInfo, type Listener, type ListenerSpec } from './listeners';
import { AcceptLoop } from './accept-loop';
import { Dispatcher } from './dispatcher';
import { Supervisor, type WorkerRec } from './supervisor';
import { SpareFds } from './spare-fds';
import { buildStatus, RateMeter, type Status } from './status';
import { STRATEGIES, type Strategy } from './strategies';
import { makeLog, type Log, type LogEvent } from './log';
import { Coalescer } from './coalescer';

export { STRATEGIES, type Strategy } from './strategies';
export type { LogEvent } from './log';
export type { Status, WorkerStatus } from './status';
export type { WorkerState } from './supervisor';

export interface PrimaryOptions {
  listeners: ListenerSpec[];
  /** Default: the number of CPUs. */
  workers?: number;
  strategy?: Strategy;
  /** The APP module; default the built-in demo. */
  app?: string;
  cert?: string;
  key?: string;
  /** How long workers may take to finish in-flight work on shutdown/reload (ms, default 10 s). */
  shutdownTimeout?: number;
  /** How long a worker may take to become ready (ms, default 10 s). */
  readyTimeout?: number;
  /** How long a connection may take to complete its TLS handshake in a worker (ms, default 10 s). */
  handshakeTimeout?: number;
  /** Structured log sink; default one JSON line per event on stderr. */
  log?: (event: LogEvent) => void;
  /** Worker entry point; default the built-in worker-main. */
  workerScript?: string;
  /** Extra arguments for the worker's node (execArgv). */
  workerExecArgv?: string[];
  backlog?: number;
}

type ResolvedOptions = Required<Pick<PrimaryOptions, 'workers' | 'strategy' | 'shutdownTimeout' | 'readyTimeout'>> & PrimaryOptions;

export class Primary extends EventEmitter {
  /** The listening sockets, with their bound addresses. */
  readonly sockets: Listener[];
  readonly #opts: ResolvedOptions;
  readonly #log: Log;
  readonly #spares = new SpareFds();
  readonly #supervisor: Supervisor;
  readonly #dispatcher: Dispatcher<WorkerRec>;
  readonly #accept: AcceptLoop;
  readonly #rate: RateMeter;
  readonly #reloads = new Coalescer(() => this.#reloadNow());
  /** The newest generation number given out (the serving one is the supervisor's). */
  #newest = 1;
  #stopping = false;
  #started = false;
  #startedAt = Date.now();

  private constructor(listeners: Listener[], opts: ResolvedOptions) {
    super();
    this.sockets = listeners;
    this.#opts = opts;
    this.#log = makeLog(opts.log);
    this.#dispatcher = new Dispatcher<WorkerRec>({
      strategy: opts.strategy,
      candidates: () => this.#candidates(),
      sendFailed: (w, err) => this.#supervisor.gone(w, `hand-off failed: ${err.message}`),
      backpressure: () => this.#updateAccepting(),
      fdsClosed: () => this.#fdsFreed(),
      log: this.#log,
    });
    this.#supervisor = new Supervisor({
      workers: opts.workers,
      readyTimeout: opts.readyTimeout,
      shutdownTimeout: opts.shutdownTimeout,
      workerScript: opts.workerScript,
      workerExecArgv: opts.workerExecArgv,
      config: {
        primaryPid: process.pid,
        listeners: listeners.map(publicInfo),
        cert: opts.cert && path.resolve(opts.cert),
        key: opts.key && path.resolve(opts.key),
        app: opts.app && path.resolve(opts.app),
        reportLoad: opts.strategy === 'least-connections',
        handshakeTimeout: opts.handshakeTimeout,
      },
    }, this.#spares, {
      ready: () => this.#dispatcher.flush(),
      ack: (w, ids, live, closed) => this.#dispatcher.acked(w, ids, live, closed),
      lost: (w, batch) => this.#dispatcher.lost(w, batch),
      gone: (w) => {
        // Connections it never acknowledged go to another worker; its
        // channel's fd is closed.
        this.#dispatcher.takeBack(w);
        this.#fdsFreed();
      },
      exited: (w) => this.emit('worker-exit', w),
    }, this.#log);
    this.#accept = new AcceptLoop(listeners, (fds, n, l, peers) => this.#dispatcher.accepted(fds, n, l.index, peers), this.#log,
      { peers: opts.strategy === 'hash' });
    this.#rate = new RateMeter(() => this.#dispatcher.handed);
  }

  /**
   * Opens the listeners, starts the workers and resolves once all of the
   * first generation are ready. Rejects (closing everything) if a listener
   * cannot be opened or a worker cannot start.
   */
  static async start(options: PrimaryOptions): Promise<Primary> {
    const workers = options.workers ?? os.availableParallelism();
    if (!Number.isInteger(workers) || workers < 1 || workers > 1024) throw new RangeError(`workers must be 1..1024, got ${workers}`);
    const strategy = options.strategy ?? 'round-robin';
    if (!STRATEGIES.includes(strategy)) throw new RangeError(`strategy must be one of ${STRATEGIES.join(', ')}, got ${strategy}`);
    if (options.listeners.length === 0) throw new RangeError('at least one listener is needed');
    const hs = options.handshakeTimeout;
    if (hs !== undefined && (!Number.isInteger(hs) || hs < 1 || hs > 0x7fffffff)) {
      throw new RangeError(`handshakeTimeout must be milliseconds from 1 to ${0x7fffffff}, got ${hs}`);
    }
    if (options.listeners.some((l) => l.tls) && (!options.cert || !options.key)) {
      throw new ServeConfigError('FDPASS_ERR_NO_CERT', 'a tls listener needs --cert and --key');
    }
    const listeners = await openListeners(options.listeners, options.backlog);
    const p = new Primary(listeners, {
      ...options, workers, strategy,
      shutdownTimeout: options.shutdownTimeout ?? 10_000,
      readyTimeout: options.readyTimeout ?? 10_000,
    });
    try {
      p.#log('start', { pid: process.pid, workers, strategy, listeners: listeners.map(publicInfo) });
      p.#spares.take();
      await p.#supervisor.startGeneration(p.#newest);
      p.#supervisor.promote(p.#newest);
      p.#started = true;
    } catch (err) {
      await p.shutdown();
      throw err;
    }
    p.#updateAccepting();
    return p;
  }

  /**
   * The workers that get new connections: the serving generation's ready
   * ones (during a reload the new generation's get nothing until all of it
   * is ready, so a reload that fails has handed nothing to its workers);
   * failing those, any ready worker.
   */
  #candidates(): WorkerRec[] {
    const out: WorkerRec[] = [];
    for (const w of this.#supervisor.current()) if (w.state === 'ready') out.push(w);
    if (out.length === 0) {
      for (const w of this.#supervisor.workers) if (w.state === 'ready') out.push(w);
    }
    return out;
  }

  /** Accepts unless stopping, not started, or too many connections wait
   * (the acceptors add their own back-off on failures). */
  #updateAccepting(): void {
    this.#accept.setWanted(this.#started && !this.#stopping && !this.#dispatcher.paused);
  }

  /** The primary closed fds of its own (acknowledged copies, a dead
   * worker's channel): the spares come first (if some were spent on a spawn
   * at the limit), then accepting that waits for fds tries again now. */
  #fdsFreed(): void {
    if (this.#spares.short && !this.#stopping) this.#spares.take();
    fdsFreed();
  }

  // ---- lifecycle ------------------------------------------------------------

  /**
   * Graceful reload: a new generation of workers takes new connections once
   * all of it is ready; the old one stops getting any, finishes what it has
   * and exits. If the new generation cannot start, its workers are stopped
   * and the serving one stays (rejects with the WorkerStartError). Called
   * while a reload runs, it queues one more (calls meanwhile join that one),
   * and settles with the reload that served it.
   */
  reload(): Promise<void> {
    if (this.#stopping) return Promise.resolve();
    if (this.#reloads.next === 'queue') this.#log('reload-queued', { serving: this.#supervisor.serving });
    return this.#reloads.run();
  }

  async #reloadNow(): Promise<void> {
    if (this.#stopping) return;
    // The workers the previous reload replaced (or stopped) are gone first:
    // at most two generations run at once.
    await this.#supervisor.othersExited();
    if (this.#stopping) return;
    const generation = ++this.#newest;
    this.#log('reload', { generation, serving: this.#supervisor.serving });
    let old: WorkerRec[];
    try {
      await this.#supervisor.startGeneration(generation);
      old = this.#supervisor.promote(generation);
    } catch (err) {
      this.#supervisor.abandon(generation);
      this.#log('reload-failed', { generation, serving: this.#supervisor.serving, error: (err as Error).message });
      throw err;
    }
    for (const w of old) this.#supervisor.retire(w);
    this.#log('reload-done', { generation });
    this.#dispatcher.flush();
  }

  /**
   * Graceful shutdown: takes what waits in the listeners' backlogs and hands
   * it out (the spare fds go to those connections now), closes the
   * listeners, lets the workers finish their in-flight requests (up to
   * shutdownTimeout) and resolves when they have exited.
   */
  async shutdown(): Promise<void> {
    if (this.#stopping) {
      await this.#supervisor.allExited();
      return;
    }
    this.#stopping = true;
    this.#log('shutdown', { workers: this.#supervisor.workers.size });
    this.#updateAccepting();
    this.#supervisor.stopRespawning();
    this.#dispatcher.stop();
    this.#spares.release();
    await this.#accept.drain(Date.now() + this.#opts.shutdownTimeout, () => this.#inflight());
    this.#accept.close();
    closeListeners(this.sockets);
    this.#supervisor.stopAll();
    await this.#supervisor.allExited();
    this.#dispatcher.close();
    this.#spares.release();
    this.#rate.stop();
    this.#log('stopped', { handed: this.#dispatcher.handed });
  }

  #inflight(): number {
    let n = 0;
    for (const w of this.#supervisor.workers) n += w.inflight.size;
    return n;
  }

  // ---- status ----------------------------------------------------------------

  /** status(), after asking every worker for its current counts (waiting
   * at most `timeout` ms for the answers). */
  async freshStatus(timeout = 250): Promise<Status> {
    await this.#supervisor.askLoad(timeout);
    return this.status();
  }

  status(): Status {
    return buildStatus({
      startedAt: this.#startedAt,
      strategy: this.#opts.strategy,
      generation: this.#supervisor.serving,
      accepted: this.#accept.accepted,
      handed: this.#dispatcher.handed,
      waiting: this.#dispatcher.waiting,
      handoffRate: this.#rate.rate(),
      acceptErrors: this.#accept.errors,
      listeners: this.sockets.map(publicInfo),
      workers: this.#supervisor.workers,
      restarts: (slot) => this.#supervisor.restarts(slot),
    });
  }

  // ---- for the control socket (control.ts) ----------------------------------

  get log(): Log {
    return this.#log;
  }

  /** Runs `fn` (an accept at RLIMIT_NOFILE) with the spare fds given up;
   * takes back what is left after. */
  withSpareFds<T>(fn: () => T): T {
    return this.#stopping ? fn() : this.#spares.lend(fn);
  }

  /** A control connection closed: the spares come first. */
  fdsClosed(): void {
    this.#fdsFreed();
  }
}
