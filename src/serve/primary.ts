/**
 * The primary of `fdpass serve`: it alone holds the listening sockets,
 * accepts every connection and hands its fd to a worker process over a
 * SOCK_SEQPACKET socketpair (the worker's fd 3). It never reads a byte of a
 * connection (on a `proxy` listener under the hash strategy it peeks at the
 * PROXY header, leaving it queued for the worker: proxy-peek.ts).
 *
 * This file is the orchestration: start, reload, shutdown, generations, and
 * the wiring between the parts, each of which does one job:
 * - listeners.ts: opening and closing the listening sockets;
 * - accept-loop.ts: accepting on all of them (back-off at EMFILE, resume
 *   as soon as the primary closes an fd, the drain on shutdown);
 * - dispatcher.ts: which worker gets each connection (strategies.ts), and
 *   the primary's copy of every fd until the worker acknowledges it (a dead
 *   worker's connections, or a hand-off that reached a worker without its
 *   fds, go to another worker; handoff-window.ts paces a worker out of fds;
 *   fast-handoff.ts: accept and hand-off in one native call when it can);
 * - supervisor.ts: the worker processes (spawn, readiness, respawn with
 *   back-off, crash loops, drain, kill); shutdown-hold.ts: during a
 *   shutdown, workers that drain but still take what the primary takes
 *   back from a worker that died, until nothing is left to place;
 * - spare-fds.ts: a few fds kept so that a worker can be respawned at
 *   RLIMIT_NOFILE; status.ts: the status document;
 * - privileges.ts: the workers' user (resolved here, switched to in each
 *   worker); tls-credentials.ts: the certificate and key, read here and
 *   handed to each generation's workers as bytes;
 * - systemd-service.ts: READY/RELOADING/STOPPING/STATUS/WATCHDOG and the fd
 *   store, under a service manager (NOTIFY_SOCKET);
 * - takeover.ts: the listeners taken over from a running process instead
 *   of bound (--takeover), which is told to finish once this one serves;
 *   handover.ts: this one's listeners handed out (--expose-listeners) and
 *   upgrade() (a new primary from this one's command line takes over).
 *
 * Generations: reload() starts a new generation of workers; the serving
 * one serves (and is respawned) until all of the new one is ready, then
 * drains; a new generation that cannot start is stopped. Reloads never
 * overlap (coalescer.ts): one asked for while one runs is queued, later
 * ones join it, each starts once the workers the previous one replaced
 * have exited. shutdown(): see there.
 */
import { EventEmitter } from 'node:events';
import * as path from 'node:path';
import { abortError } from '../errors';
import { fdsFreed } from '../socket/acceptor';
import { closeListeners, publicInfo, type Listener } from './listeners';
import { takeListenFds, type InheritedFd } from './inherited-fds';
import { openTakingOver, type Takeover, type TakeoverInfo } from './takeover';
import { Handover } from './handover';
import type { Credentials } from '../socket/frame';
import { identityLabel } from './privileges';
import { workerPreloadArgs } from './drop-privileges';
import { SystemdService } from './systemd-service';
import { AcceptLoop } from './accept-loop';
import { Dispatcher } from './dispatcher';
import { Supervisor, type WorkerRec } from './supervisor';
import { ShutdownHold, DRAIN_GRACE_MS } from './shutdown-hold';
import { SpareFds } from './spare-fds';
import { buildStatus, RateMeter, type Status } from './status';
import { makeLog, type Log } from './log';
import { Coalescer } from './coalescer';
import { resolvePrimaryOptions, type PrimaryOptions, type ResolvedOptions } from './primary-options';
import { ProxyPeek } from './proxy-peek';

export { STRATEGIES, type Strategy } from './strategies';
export type { LogEvent } from './log';
export type { Status, WorkerStatus } from './status';
export type { WorkerState } from './supervisor';
export type { TakeoverOptions, TakeoverInfo } from './takeover';
export type { PrimaryOptions } from './primary-options';


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
  /** Shutting down: whether the workers are still to stay for hand-offs. */
  readonly #hold = new ShutdownHold(() => this.#inflight() + this.#dispatcher.waiting, () => this.#supervisor.release());
  /** The hash strategy's keys on `proxy` listeners (null: none such). */
  readonly #peek: ProxyPeek | null;
  /** Under a service manager (NOTIFY_SOCKET), what it is told. */
  readonly #service: SystemdService | null;
  /** The newest generation number given out (the serving one is the supervisor's). */
  #newest = 1;
  #stopping = false;
  /** The shutdown under way (shutdown()), once asked for. */
  #shutdownDone: Promise<void> | null = null;
  #started = false;
  #startedAt = Date.now();
  readonly #handover: Handover;
  /** The takeover this primary started with. */
  #takeover: TakeoverInfo | null = null;
  /** A successor took over: this one stops without telling the service
   * manager it stops (the service goes on, in the successor). */
  #succeeded = false;
  /** What a successor binds, released before it serves alone. */
  readonly #releases: ((successor: Credentials) => Promise<void>)[] = [];

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
      workerExecArgv: [...workerPreloadArgs(), ...(opts.workerExecArgv ?? [])],
      credentials: (generation) => opts.credentials.message(generation),
      config: {
        primaryPid: process.pid,
        listeners: listeners.map(publicInfo),
        identity: opts.identity.identity,
        app: opts.app && path.resolve(opts.app),
        reportLoad: opts.strategy === 'least-connections',
        handshakeTimeout: opts.handshakeTimeout,
      },
    }, this.#spares, {
      ready: () => this.#dispatcher.flush(),
      ack: (w, ids, live, closed) => {
        this.#dispatcher.acked(w, ids, live, closed);
        this.#hold.check();
      },
      lost: (w, batch) => {
        this.#dispatcher.lost(w, batch);
        this.#hold.check();
      },
      gone: (w) => {
        // Connections it never acknowledged go to another worker (during a
        // shutdown, one on hold); its channel's fd is closed.
        this.#dispatcher.takeBack(w);
        this.#fdsFreed();
        this.#hold.check();
      },
      exited: (w) => this.emit('worker-exit', w),
    }, this.#log);
    const peek = opts.strategy === 'hash' && listeners.some((l) => l.proxy)
      ? new ProxyPeek((fds, n, listener, keys) => this.#dispatcher.accepted(fds, n, listener, keys))
      : null;
    this.#peek = peek;
    this.#accept = new AcceptLoop(listeners, (fds, n, l) => {
      if (peek && l.proxy) peek.take(fds, n, l.index);
      else this.#dispatcher.accepted(fds, n, l.index);
    }, this.#log, {
      // Round-robin and least-connections: accept and hand out in one
      // native call where the dispatcher can (dispatcher.ts acceptFast()).
      fast: opts.strategy === 'hash' ? undefined : (fd, l) => this.#dispatcher.acceptFast(fd, l.index),
    });
    this.#rate = new RateMeter(() => this.#dispatcher.handed);
    // Before any worker is spawned: they must not inherit NOTIFY_SOCKET.
    this.#service = SystemdService.fromEnv(this, opts.workers, this.#log);
    this.#handover = new Handover({
      listeners,
      log: this.#log,
      stopping: () => this.#stopping,
      upgradeTimeout: opts.readyTimeout + 20_000,
      // Its own shutdown's worst case (shutdown-hold.ts), then SIGKILL.
      upgradeStopGrace: 2 * (opts.shutdownTimeout + DRAIN_GRACE_MS) + 5000,
      upgradeCommand: opts.upgradeCommand,
      // The successor talks to the service manager in its turn.
      upgradeEnv: () => ({ ...process.env, ...this.#service?.successorEnv() }),
      release: async (successor) => {
        this.#succeeded = true;
        // The manager follows the successor before this one exits.
        await this.#service?.mainPid(successor.pid);
        for (const fn of this.#releases) await fn(successor);
      },
      finish: (successor) => {
        this.emit('taken-over', successor);
        void this.shutdown();
      },
    });
  }

  /**
   * Opens the listeners, starts the workers and resolves once all of the
   * first generation are ready. Rejects (closing everything) if a listener
   * cannot be opened or a worker cannot start.
   */
  static async start(options: PrimaryOptions): Promise<Primary> {
    // Nothing is opened for a user or a certificate that cannot be used.
    const resolved = resolvePrimaryOptions(options);
    const { signal } = options;
    // The AbortError of an abort once started, not the signal's DOMException.
    if (signal?.aborted) throw abortError(signal);
    const inherited = takeListenFds();
    const { listeners, takeover } = await openTakingOver(options.listeners, options.backlog, inherited, options.takeover);
    const p = new Primary(listeners, resolved);
    // From here on an abort is a graceful shutdown, whatever start() is doing.
    const onAbort = () => void p.shutdown();
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await p.#start(options, takeover, inherited);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** start()'s part once the listeners are open and the primary exists. */
  async #start(options: PrimaryOptions, takeover: Takeover | null, inherited: InheritedFd[]): Promise<Primary> {
    const { workers, strategy, identity } = this.#opts;
    try {
      if (this.#stopping) throw abortError(options.signal);
      this.#log('start', {
        pid: process.pid, workers, strategy, listeners: this.sockets.map(publicInfo),
        inherited: this.sockets.filter((l) => l.inherited).map((l) => l.address), user: identityLabel(identity.identity),
      });
      if (identity.defaulted) {
        this.#log('worker-user', { user: identityLabel(identity.identity), why: 'the primary runs as root and no user was given (--user root keeps root)' });
      }
      takeover?.adopted(this.sockets, this.#log);
      this.#service?.storeListeners(this.sockets, inherited);
      this.#spares.take();
      await this.#supervisor.startGeneration(this.#newest);
      if (this.#stopping) throw abortError(options.signal);
      this.#supervisor.promote(this.#newest);
      this.#started = true;
      // Taking over, READY (and MAINPID) go out once the old process has
      // made this one the main pid.
      if (!takeover) this.#service?.ready();
    } catch (err) {
      // The old process serves on: it sees the takeover connection close.
      takeover?.abandon();
      await this.shutdown();
      throw options.signal?.aborted ? abortError(options.signal) : err;
    }
    this.#updateAccepting();
    if (takeover) {
      await takeover.finishOld(this.#log);
      this.#takeover = takeover.info;
      // Aborted meanwhile: STOPPING=1 went out already.
      if (!this.#stopping) this.#service?.ready();
    }
    if (options.exposeListeners && !this.#stopping) {
      await this.#handover.expose(options.exposeListeners, takeover !== null).catch(async (err: unknown) => {
        await this.shutdown();
        throw err;
      });
    }
    return this;
  }

  /**
   * The workers that get new connections: the serving generation's ready
   * ones (during a reload the new generation's get nothing until all of it
   * is ready, so a reload that fails has handed nothing to its workers);
   * failing those, any ready worker; failing those (shutting down), any
   * worker draining on hold (shutdown-hold.ts).
   */
  #candidates(): WorkerRec[] {
    const out: WorkerRec[] = [];
    for (const w of this.#supervisor.current()) if (w.state === 'ready') out.push(w);
    if (out.length === 0) {
      for (const w of this.#supervisor.workers) if (w.state === 'ready') out.push(w);
    }
    if (out.length === 0) {
      for (const w of this.#supervisor.workers) if (w.state === 'draining' && w.held) out.push(w);
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
    this.#service?.reloading();
    const done = this.#reloads.run();
    done.then(() => this.#service?.reloaded(), (err: unknown) => this.#service?.reloaded(err));
    return done;
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
      // The certificate and key are read again: a reload picks up new ones.
      this.#opts.credentials.load(generation);
      await this.#supervisor.startGeneration(generation);
      old = this.#supervisor.promote(generation);
      this.#opts.credentials.keepOnly(generation);
    } catch (err) {
      this.#supervisor.abandon(generation);
      this.#opts.credentials.keepOnly(this.#supervisor.serving);
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
   * shutdownTimeout; what a worker that dies meanwhile never acknowledged
   * goes to one still draining: shutdown-hold.ts) and resolves when they
   * have exited. Called again, it returns the same promise: the whole of
   * the first one (a caller that exits on it cuts nothing short).
   */
  shutdown(): Promise<void> {
    return this.#shutdownDone ??= this.#shutdown();
  }

  async #shutdown(): Promise<void> {
    this.#stopping = true;
    this.#log('shutdown', { pid: process.pid, workers: this.#supervisor.workers.size, shared: this.sockets.filter((l) => l.shared).map((l) => l.address) });
    if (!this.#succeeded) this.#service?.stopping();
    this.#updateAccepting();
    this.#supervisor.stopRespawning();
    this.#spares.release();
    // A new primary that has not taken over yet stops with this one.
    const upgradeEnded = this.#handover.abandonUpgrade();
    // Before any listener closes: its sends borrow the listener fds.
    await this.#handover.close();
    // Once that one is gone the listeners are this one's alone (not shared),
    // so their backlog is drained here, not reset when the last copy closes.
    await upgradeEnded;
    // No worker ever ready: left in the backlog (served by the next start if
    // the listener outlives us, systemd's) rather than taken and reset.
    if (this.#started) await this.#accept.drain(Date.now() + this.#opts.shutdownTimeout, () => this.#inflight());
    this.#peek?.close();
    this.#accept.close();
    closeListeners(this.sockets);
    // While anything is unplaced, the workers stay for it (shutdown-hold.ts).
    this.#supervisor.stopAll(this.#hold.start());
    await this.#supervisor.allExited();
    // Taken back from a worker that died, with no live worker left to take it.
    const unserved = this.#dispatcher.waiting;
    if (unserved) this.#log('shutdown-unserved', { closed: unserved, why: 'no live worker left to take them' });
    this.#dispatcher.close();
    this.#spares.release();
    this.#rate.stop();
    await this.#service?.close();
    const peek = this.#peek && { proxyParked: this.#peek.parkedTotal, proxyPeerKeys: this.#peek.fallbacks };
    this.#log('stopped', { pid: process.pid, handed: this.#dispatcher.handed, ...peek });
  }

  /**
   * Starts a new primary from this one's command line (upgradeCommand) that
   * takes over the listeners (handover.ts, upgrade.ts). Resolves with its
   * pid once it serves and this one is finishing ('taken-over'); rejects
   * with an UpgradeError, and this one serves on, if it cannot. Called
   * while an upgrade runs, it settles with that one.
   */
  upgrade(): Promise<number> {
    return this.#handover.upgrade();
  }

  /** Runs `fn` before a successor (a new primary that took over) serves
   * alone: to release what it will bind (the control socket). */
  releaseForSuccessor(fn: (successor: Credentials) => Promise<void>): void {
    this.#releases.push(fn);
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
      takeover: this.#takeover,
      exposeListeners: this.#handover.exposedAt,
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
