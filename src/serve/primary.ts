/**
 * The primary of `fdpass serve`: it alone holds the listening sockets,
 * accepts every connection and hands its fd to a worker process over a
 * SOCK_SEQPACKET socketpair (the worker's fd 3). It never reads a byte of a
 * connection.
 *
 * - Batching: each readiness event accepts until EAGAIN (up to 253), and each
 *   worker gets the connections picked for it in one message. At low load
 *   that is one connection, sent at once: nothing waits to fill a batch.
 * - Crash safety: the primary keeps its copy of every fd until the worker
 *   acknowledges it. A worker that dies (or is stopped and then killed)
 *   before acknowledging gives its connections back: they go to another
 *   worker; so do those of a hand-off that reached a worker without its fds
 *   (the worker at RLIMIT_NOFILE: MSG_CTRUNC, reported as LOST). A ready
 *   worker killed from outside is replaced at once; one that fails to start
 *   or dies by itself young is respawned with backoff, and a crash loop is
 *   reported and throttled.
 * - Out of fds (EMFILE on accept): accepting stops (the kernel's backlog
 *   holds the connections) and resumes as soon as the primary closes an fd
 *   (an acknowledgement, a worker gone) or after a backoff; a few spare fds
 *   are kept so that a worker can still be respawned.
 * - Strategies: round-robin, least-connections (the live counts workers
 *   report, plus what is still unacknowledged), hash of the client address.
 * - Lifecycle: shutdown() stops accepting (after taking what waits in the
 *   backlog, with new SYNs dropped meanwhile so that close() resets no one),
 *   lets workers finish, and resolves; reload() starts a new
 *   generation of workers and drains the old one once the new is ready.
 */
import { EventEmitter } from 'node:events';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import { native, type PollHandle } from '../native';
import { errnoError } from '../errors';
import { UnixSocket } from '../socket/socket';
import type { Message } from '../socket/message';
import { MAX_FDS } from '../socket/frame';
import { openListeners, closeListeners, publicInfo, type Listener, type ListenerSpec, type ListenerInfo } from './listeners';
import { decodeWorkerMessage, encodeConns, encodeShutdown, encodeStatusQuery, Op } from './protocol';
import { WORKER_ENV, type WorkerConfig } from './worker';

export type Strategy = 'round-robin' | 'least-connections' | 'hash';
export const STRATEGIES: readonly Strategy[] = ['round-robin', 'least-connections', 'hash'];

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
  /** Structured log sink; default one JSON line per event on stderr. */
  log?: (event: LogEvent) => void;
  /** Worker entry point; default the built-in worker-main. */
  workerScript?: string;
  /** Extra arguments for the worker's node (execArgv). */
  workerExecArgv?: string[];
  backlog?: number;
}

export interface LogEvent {
  time: string;
  event: string;
  [k: string]: unknown;
}

export type WorkerState = 'starting' | 'ready' | 'draining' | 'dead';

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
  };
  workers: WorkerStatus[];
}

type ResolvedOptions = Required<Pick<PrimaryOptions, 'workers' | 'strategy' | 'shutdownTimeout' | 'readyTimeout'>> & PrimaryOptions;

interface Conn {
  id: number;
  fd: number;
  listener: number;
  /** Client address hash (hash strategy), computed once. */
  hash: number;
  /** The hand-off message (per worker, from 1) that carried it last. */
  batch: number;
  /** How many workers reported it LOST (arrived without its fd). */
  losses: number;
}

interface WorkerRec {
  slot: number;
  generation: number;
  child: ChildProcess;
  sock: UnixSocket;
  state: WorkerState;
  pid: number | undefined;
  inflight: Map<number, Conn>;
  /** CONNS messages sent to it (modulo 2^32): the numbering LOST refers to. */
  batches: number;
  handed: number;
  acked: number;
  live: number;
  requests: number;
  startedAt: number;
  readyTimer: NodeJS.Timeout | null;
  killTimer: NodeJS.Timeout | null;
  failure: string | undefined;
  onReady: ((err?: Error) => void) | null;
  exited: Promise<void>;
  /** How it ended ('exit' event): for the crash-loop policy. */
  exitCode: number | null;
  exitSignal: NodeJS.Signals | null;
  /** The primary itself killed it (not ready in time, a protocol error, drained too long). */
  killedByUs: boolean;
  wasReady: boolean;
  loadWaiters: (() => void)[];
}

interface Slot {
  restarts: number;
  crashes: number;
  current: WorkerRec | null;
  respawnTimer: NodeJS.Timeout | null;
}

/** Worker backpressure: past this many unacknowledged connections a worker
 * (stopped, or overwhelmed) gets no more until it catches up. */
const MAX_UNACKED = 1024;
/** fds kept open (on /dev/null) and given up just before spawning a worker,
 * which needs four for a moment (the socketpair and libuv's exec-error
 * pipe): without them a primary at RLIMIT_NOFILE could not replace a dead
 * worker, and the connections it holds would wait for ever. */
const SPARE_FDS = 6;
/** Signals that end a process from outside (an operator, the OOM killer, a
 * supervisor): a ready worker ended by one is replaced at once, not throttled. */
const EXTERNAL_SIGNALS: ReadonlySet<string> = new Set(['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGHUP']);
/** On shutdown, how long TCP handshakes already under way (an RTT) get to
 * complete once new ones are refused, before the listeners close. */
const HANDSHAKE_GRACE_MS = 50;
const ACCEPT_BUF = new Int32Array(MAX_FDS);
const CLOSE_BUF = new Int32Array(MAX_FDS);
const NAME_BUF = Buffer.alloc(64);
const EAGAIN = -11;

export class Primary extends EventEmitter {
  /** The listening sockets, with their bound addresses. */
  readonly sockets: Listener[];
  readonly #opts: ResolvedOptions;
  #slots: Slot[] = [];
  #workers = new Set<WorkerRec>();
  #generation = 1;
  #nextId = 1;
  #rr = 0;
  #waiting: Conn[] = [];
  #retryTimer: NodeJS.Timeout | null = null;
  #polls: (PollHandle | null)[] = [];
  /** Accepting is off while either holds: too many connections wait for a
   * worker, or accept() failed for want of fds (or memory) and backs off. */
  #pausedForLoad = false;
  #acceptBackoff: NodeJS.Timeout | null = null;
  #polling = false;
  #backoffMs = 0;
  /** The current run of failed accepts: since when, how many. */
  #acceptStreak: { since: number; errors: number } | null = null;
  /** accept-error and accept-resumed lines: when last logged, how many not since. */
  #acceptLog = { error: 0, errorsUnlogged: 0, resumed: 0, resumedUnlogged: 0 };
  #spares: number[] = [];
  #stopping = false;
  #started = false;
  #reloading = false;
  #startedAt = Date.now();
  #accepted = 0;
  #handed = 0;
  #acceptErrors = 0;
  #rate: { t: number; handed: number }[] = [];
  #rateTimer: NodeJS.Timeout;
  readonly #log: (e: LogEvent) => void;

  private constructor(listeners: Listener[], opts: ResolvedOptions) {
    super();
    this.sockets = listeners;
    this.#opts = opts;
    this.#log = opts.log ?? ((e) => process.stderr.write(JSON.stringify(e) + '\n'));
    this.#rateTimer = setInterval(() => this.#sampleRate(), 1000).unref();
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
    if (options.listeners.some((l) => l.tls) && (!options.cert || !options.key)) {
      throw Object.assign(new Error('a tls listener needs --cert and --key'), { code: 'FDPASS_ERR_NO_CERT' });
    }
    const listeners = await openListeners(options.listeners, options.backlog);
    const p = new Primary(listeners, {
      ...options, workers, strategy,
      shutdownTimeout: options.shutdownTimeout ?? 10_000,
      readyTimeout: options.readyTimeout ?? 10_000,
    });
    try {
      p.#logEvent('start', { pid: process.pid, workers, strategy, listeners: listeners.map(publicInfo) });
      p.#takeSpares();
      await p.#startGeneration();
      p.#started = true;
    } catch (err) {
      await p.shutdown();
      throw err;
    }
    p.#watchListeners();
    return p;
  }

  // ---- workers ------------------------------------------------------------

  #startGeneration(): Promise<void> {
    const gen = this.#generation;
    const starts: Promise<void>[] = [];
    for (let slot = 0; slot < this.#opts.workers; slot++) {
      if (!this.#slots[slot]) this.#slots[slot] = { restarts: 0, crashes: 0, current: null, respawnTimer: null };
      starts.push(this.#spawn(slot, gen));
    }
    return Promise.all(starts).then(() => undefined);
  }

  /** Starts a worker in `slot`; resolves when it is ready, rejects if it
   * cannot be started (EMFILE on the socketpair, say) or dies first. */
  #spawn(slot: number, generation: number): Promise<void> {
    // Give the spares up for the moment the spawn needs fds, take them back after.
    this.#releaseSpares();
    try {
      return this.#spawnNow(slot, generation);
    } catch (err) {
      this.#logEvent('worker-spawn-failed', { slot, generation, error: (err as { code?: string }).code ?? (err as Error).message });
      return Promise.reject(err);
    } finally {
      this.#takeSpares();
    }
  }

  #spawnNow(slot: number, generation: number): Promise<void> {
    const [mine, theirs] = UnixSocket.pair({ type: 'seqpacket' });
    const config: WorkerConfig = {
      primaryPid: process.pid, slot, generation,
      listeners: this.sockets.map(publicInfo),
      cert: this.#opts.cert && path.resolve(this.#opts.cert),
      key: this.#opts.key && path.resolve(this.#opts.key),
      app: this.#opts.app && path.resolve(this.#opts.app),
      reportLoad: this.#opts.strategy === 'least-connections',
    };
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
      handed: 0, acked: 0, live: 0, requests: 0, startedAt: Date.now(),
      readyTimer: null, killTimer: null, failure: undefined, onReady: null, loadWaiters: [],
      exitCode: null, exitSignal: null, killedByUs: false, wasReady: false,
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
    if (generation === this.#generation) this.#slots[slot]!.current = w;
    mine.on('message', (m: Message) => this.#onWorkerMessage(w, m));
    mine.on('error', () => this.#workerGone(w, 'channel error'));
    mine.on('close', () => this.#workerGone(w, 'channel closed'));
    child.once('error', (err) => this.#workerGone(w, err.message));
    child.once('exit', (code, signal) => this.#workerGone(w, signal ? `killed by ${signal}` : `exited with code ${code}`));
    this.#logEvent('worker-spawn', { slot, generation, pid: child.pid });
    return new Promise<void>((resolve, reject) => {
      w.onReady = (err) => (err ? reject(err) : resolve());
      w.readyTimer = setTimeout(() => {
        w.failure = `not ready within ${this.#opts.readyTimeout} ms`;
        this.#kill(w);
      }, this.#opts.readyTimeout);
    });
  }

  #onWorkerMessage(w: WorkerRec, m: Message): void {
    m.close(); // workers send no fds
    let msg;
    try {
      msg = decodeWorkerMessage(m.data);
    } catch (err) {
      this.#logEvent('worker-protocol-error', { slot: w.slot, pid: w.pid, error: (err as Error).message });
      this.#kill(w);
      return;
    }
    switch (msg.op) {
      case Op.Ack: {
        let n = 0;
        for (const id of msg.ids) {
          const c = w.inflight.get(id);
          if (!c) continue;
          w.inflight.delete(id);
          CLOSE_BUF[n++] = c.fd;
          if (n === CLOSE_BUF.length) {
            native.closeMany(CLOSE_BUF, 0, n);
            n = 0;
          }
        }
        if (n) native.closeMany(CLOSE_BUF, 0, n);
        w.acked += msg.ids.length;
        w.live = msg.live;
        if (this.#waiting.length) this.#dispatch([]);
        this.#fdsFreed();
        break;
      }
      case Op.Lost: {
        // Their fds never reached the worker; ours are still open.
        const lost: Conn[] = [];
        for (const [id, c] of w.inflight) {
          if (c.batch !== msg.batch) continue;
          w.inflight.delete(id);
          c.losses++;
          lost.push(c);
        }
        this.#logEvent('handoff-lost', { slot: w.slot, pid: w.pid, batch: msg.batch, redispatched: lost.length });
        if (lost.length) this.#redispatch(lost, w);
        break;
      }
      case Op.Load:
        w.live = msg.live;
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
        this.#logEvent('worker-ready', { slot: w.slot, generation: w.generation, pid: w.pid });
        w.onReady?.();
        w.onReady = null;
        if (this.#waiting.length) this.#dispatch([]);
        break;
      case Op.Failed:
        w.failure = msg.message;
        break;
    }
  }

  /** A worker's process or channel ended (called more than once; acts once). */
  #workerGone(w: WorkerRec, why: string): void {
    if (w.state === 'dead') return;
    const wasStarting = w.state === 'starting';
    const wasDraining = w.state === 'draining';
    w.state = 'dead';
    if (w.readyTimer) clearTimeout(w.readyTimer);
    w.sock.close();
    // Usually it is dying already (its end of the channel closed): not a kill
    // of ours for the crash-loop policy.
    if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    const slot = this.#slots[w.slot]!;
    const replace = slot.current === w;
    if (replace) slot.current = null;
    void w.exited.then(() => {
      if (w.killTimer) clearTimeout(w.killTimer);
      this.#workers.delete(w);
      this.emit('worker-exit', w);
      // A worker of the serving generation is replaced (once we know how it
      // ended); one that fails during the first start or a reload makes that
      // start fail instead.
      if (replace && slot.current === null && this.#started && !this.#stopping && !this.#reloading && w.generation === this.#generation) {
        this.#respawn(w.slot, w);
      }
    });
    // Connections it never acknowledged go to another worker.
    const orphans = [...w.inflight.values()];
    w.inflight.clear();
    const reason = w.failure ?? why;
    this.#logEvent(wasDraining ? 'worker-drained' : 'worker-exit', {
      slot: w.slot, generation: w.generation, pid: w.pid, reason, redispatched: orphans.length,
    });
    if (wasStarting && w.onReady) {
      w.onReady(Object.assign(new Error(`worker ${w.slot} (pid ${w.pid}) failed to start: ${reason}`), { code: 'FDPASS_ERR_WORKER_START' }));
      w.onReady = null;
    }
    if (orphans.length) this.#dispatch(orphans);
    this.#fdsFreed(); // its channel
  }

  /** SIGKILL for misbehaving (not ready in time, a protocol error, draining
   * too long): a crash, not a kill from outside, for the respawn policy. */
  #kill(w: WorkerRec): void {
    w.killedByUs = true;
    w.child.kill('SIGKILL');
  }

  /**
   * Respawn with backoff. A ready worker killed from outside (SIGKILL by an
   * operator or the OOM killer, SIGTERM...) says nothing about the app: it is
   * replaced at once. A worker that never became ready, or that ended by
   * itself (an exit status, a crash signal such as SIGSEGV or SIGABRT, or
   * killed by us for misbehaving) within 5 s, is a crash: respawned after
   * 100 ms doubling to 30 s while it keeps crashing; from 5 in a row on, a
   * crash loop is reported. A spawn that fails (EMFILE) is retried the same way.
   */
  #respawn(slot: number, dead: WorkerRec | null): void {
    const s = this.#slots[slot]!;
    if (s.respawnTimer || this.#stopping) return;
    const external = dead !== null && dead.wasReady && !dead.killedByUs && dead.exitSignal !== null && EXTERNAL_SIGNALS.has(dead.exitSignal);
    if (!external) {
      const young = dead === null || Date.now() - dead.startedAt < 5000;
      s.crashes = young ? s.crashes + 1 : 0;
    }
    const delay = external || s.crashes === 0 ? 0 : Math.min(100 * 2 ** (s.crashes - 1), 30_000);
    const cause = dead === null ? 'spawn-failed' : external ? 'killed' : 'crashed';
    this.#logEvent('worker-respawn', { slot, inMs: delay, cause, crashes: s.crashes, ...(dead ? { pid: dead.pid, code: dead.exitCode, signal: dead.exitSignal } : {}) });
    if (!external && s.crashes >= 5) {
      this.#logEvent('worker-crash-loop', { slot, crashes: s.crashes, nextAttemptMs: delay, reason: dead?.failure ?? 'spawn failed' });
    }
    s.respawnTimer = setTimeout(() => {
      s.respawnTimer = null;
      if (this.#stopping || s.current) return;
      s.restarts++;
      const started = this.#spawn(slot, this.#generation);
      // A worker that starts and then dies is respawned from #workerGone; one
      // that could not even be started has no record: try again from here.
      if (!s.current) this.#respawn(slot, null);
      started.catch(() => {});
    }, delay);
  }

  // ---- accepting and dispatching -------------------------------------------

  #watchListeners(): void {
    this.#polls = this.sockets.map((l) => {
      const h = native.pollOpen(l.fd, (ev) => this.#onAcceptable(l, ev));
      if (typeof h === 'number') throw errnoError(h, 'uv_poll_init');
      return h;
    });
    this.#updateAccepting();
  }

  /** Polls the listeners unless stopping, backing off, or too much waits. */
  #updateAccepting(): void {
    const on = !this.#stopping && !this.#pausedForLoad && this.#acceptBackoff === null;
    if (on === this.#polling) return;
    this.#polling = on;
    for (const h of this.#polls) if (h) native.pollSet(h, on ? 1 : 0);
  }

  #onAcceptable(l: Listener, events: number): void {
    if (events < 0) {
      // POLLERR (libuv says EBADF): report the socket's error and re-arm.
      const e = native.sockError(l.fd);
      if (e < 0) this.#logEvent('accept-error', { listener: l.address, error: errnoError(e, 'accept').code });
      if (this.#polling) for (const h of this.#polls) if (h) native.pollSet(h, 1);
      return;
    }
    this.#acceptFrom(l);
  }

  /** Accepts what waits on `l` (one batch) and hands it out: how many, or
   * the negative errno (EAGAIN: nothing waits). */
  #acceptFrom(l: Listener): number {
    const n = native.accept(l.fd, ACCEPT_BUF);
    if (n < 0) {
      if (n !== EAGAIN) this.#acceptFailed(l, n);
      return n;
    }
    this.#backoffMs = 0;
    if (this.#acceptStreak) {
      const st = this.#acceptStreak;
      this.#acceptStreak = null;
      const now = Date.now();
      const log = this.#acceptLog;
      if (now - log.resumed >= 1000) {
        this.#logEvent('accept-resumed', { listener: l.address, afterMs: now - st.since, errors: st.errors, ...(log.resumedUnlogged ? { suppressed: log.resumedUnlogged } : {}) });
        log.resumed = now;
        log.resumedUnlogged = 0;
      } else {
        log.resumedUnlogged++;
      }
    }
    this.#accepted += n;
    const conns: Conn[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const fd = ACCEPT_BUF[i]!;
      conns[i] = { id: this.#nextId, fd, listener: l.index, hash: this.#opts.strategy === 'hash' ? clientHash(fd) : 0, batch: 0, losses: 0 };
      this.#nextId = this.#nextId >= 0xffffffff ? 1 : this.#nextId + 1;
    }
    this.#dispatch(conns);
    return n;
  }

  /**
   * Out of fds (or memory) the listener stays readable and polling would
   * spin: stop accepting and try again as soon as the primary closes an fd
   * of its own (#fdsFreed), or after a backoff (doubling 10 ms .. 1 s) for
   * fds freed elsewhere (ENFILE: the whole system; ENOMEM). The kernel's
   * backlog holds the connections meanwhile. Every failure counts in acceptErrors;
   * the log gets one accept-error line a second at most (with how many it
   * left out), and an accept-resumed line when accepting works again.
   */
  #acceptFailed(l: Listener, r: number): void {
    this.#acceptErrors++;
    const code = errnoError(r, 'accept', l.address).code;
    const now = Date.now();
    const st = this.#acceptStreak ??= { since: now, errors: 0 };
    st.errors++;
    const log = this.#acceptLog;
    if (now - log.error >= 1000) {
      this.#logEvent('accept-error', { listener: l.address, error: code, ...(log.errorsUnlogged ? { suppressed: log.errorsUnlogged } : {}) });
      log.error = now;
      log.errorsUnlogged = 0;
    } else {
      log.errorsUnlogged++;
    }
    // Any other error (per connection, say ECONNABORTED-like ones) is retried
    // after the shortest backoff too: nothing may make the loop spin.
    if (this.#acceptBackoff === null) {
      this.#backoffMs = Math.min(Math.max(this.#backoffMs * 2, 10), 1000);
      this.#acceptBackoff = setTimeout(() => {
        this.#acceptBackoff = null;
        this.#updateAccepting();
      }, this.#backoffMs);
      this.#updateAccepting();
    }
  }

  /** The primary closed fds of its own: the spares come first (if some
   * were spent on a spawn at the limit), then, if accepting waits for fds, it
   * tries now. */
  #fdsFreed(): void {
    if (this.#spares.length < SPARE_FDS && !this.#stopping) this.#takeSpares();
    if (this.#acceptBackoff === null) return;
    clearTimeout(this.#acceptBackoff);
    this.#acceptBackoff = null;
    this.#updateAccepting();
  }

  // ---- spare fds ---------------------------------------------------------------

  #takeSpares(): void {
    while (this.#spares.length < SPARE_FDS) {
      try {
        this.#spares.push(fs.openSync('/dev/null', 'r'));
      } catch {
        return; // at the limit: fewer spares until fds free up
      }
    }
  }

  #releaseSpares(): void {
    for (const fd of this.#spares.splice(0)) fs.closeSync(fd);
  }

  // ---- dispatching ---------------------------------------------------------------

  /**
   * Connections a worker reported LOST go to another worker; once every
   * ready worker has lost one (all at their fd limit), it waits and is
   * tried again in 100 ms, so that workers at their limit cost no busy loop.
   */
  #redispatch(lost: Conn[], from: WorkerRec): void {
    const ready = this.#readyWorkers().length;
    const again = lost.filter((c) => c.losses < ready);
    const later = lost.filter((c) => c.losses >= ready);
    if (again.length) this.#dispatch(again, from);
    if (later.length) {
      for (const c of later) c.losses = 0;
      this.#waiting.push(...later);
      this.#retryTimer ??= setTimeout(() => {
        this.#retryTimer = null;
        if (this.#waiting.length && !this.#stopping) this.#dispatch([]);
      }, 100);
    }
  }

  /** Picks a worker for each connection (not `avoid`, if another is ready)
   * and sends each worker its batch. */
  #dispatch(conns: Conn[], avoid?: WorkerRec): void {
    const todo = this.#waiting.length ? this.#waiting.splice(0).concat(conns) : conns;
    const batches = new Map<WorkerRec, Conn[]>();
    let ready = this.#readyWorkers();
    if (avoid && ready.length > 1) ready = ready.filter((w) => w !== avoid);
    for (const c of todo) {
      const w = this.#pick(ready, c, batches);
      if (!w) {
        this.#waiting.push(c);
        continue;
      }
      let b = batches.get(w);
      if (!b) batches.set(w, (b = []));
      b.push(c);
    }
    for (const [w, b] of batches) {
      for (let i = 0; i < b.length; i += MAX_FDS) this.#send(w, b.slice(i, i + MAX_FDS));
    }
    // Nowhere to put them: let the backlog hold the rest until a worker can.
    if (this.#waiting.length > MAX_UNACKED) this.#pausedForLoad = true;
    else if (this.#waiting.length === 0) this.#pausedForLoad = false;
    this.#updateAccepting();
  }

  #readyWorkers(): WorkerRec[] {
    const out: WorkerRec[] = [];
    if (!this.#reloading) {
      for (const s of this.#slots) {
        const w = s.current;
        if (w && w.state === 'ready' && w.generation === this.#generation) out.push(w);
      }
    }
    if (out.length === 0) {
      // During a reload the previous generation serves until all of the new
      // one is ready (a new worker ready early gets nothing yet, so a reload
      // that fails and is rolled back has handed nothing to its workers).
      for (const w of this.#workers) if (w.state === 'ready' && w.generation < this.#generation) out.push(w);
    }
    if (out.length === 0) {
      for (const w of this.#workers) if (w.state === 'ready') out.push(w);
    }
    return out;
  }

  #pick(ready: WorkerRec[], c: Conn, batches: Map<WorkerRec, Conn[]>): WorkerRec | undefined {
    const n = ready.length;
    if (n === 0) return undefined;
    const pending = (w: WorkerRec) => w.inflight.size + (batches.get(w)?.length ?? 0);
    switch (this.#opts.strategy) {
      case 'least-connections': {
        let best: WorkerRec | undefined;
        let bestLoad = Infinity;
        for (let i = 0; i < n; i++) {
          const w = ready[(this.#rr + i) % n]!;
          const p = pending(w);
          if (p >= MAX_UNACKED) continue;
          const load = w.live + p;
          if (load < bestLoad) {
            best = w;
            bestLoad = load;
          }
        }
        this.#rr = (this.#rr + 1) % n;
        return best;
      }
      case 'hash': {
        // Sticky by client address over the ready workers, in slot order.
        for (let i = 0; i < n; i++) {
          const w = ready[(c.hash + i) % n]!;
          if (pending(w) < MAX_UNACKED) return w;
        }
        return undefined;
      }
      default: {
        for (let i = 0; i < n; i++) {
          const w = ready[this.#rr % n]!;
          this.#rr = (this.#rr + 1) % n;
          if (pending(w) < MAX_UNACKED) return w;
        }
        return undefined;
      }
    }
  }

  #send(w: WorkerRec, batch: Conn[]): void {
    const n = batch.length;
    const ids = new Uint32Array(n);
    const lis = new Uint16Array(n);
    const fds = new Array<number>(n);
    w.batches = (w.batches + 1) >>> 0;
    for (let i = 0; i < n; i++) {
      const c = batch[i]!;
      ids[i] = c.id;
      lis[i] = c.listener;
      fds[i] = c.fd;
      c.batch = w.batches;
      w.inflight.set(c.id, c);
    }
    w.handed += n;
    this.#handed += n;
    // The fds are ours until the worker acks; the send only borrows them.
    w.sock.send({ data: encodeConns(ids, lis, n), fds }).catch((err: Error) => {
      this.#logEvent('handoff-error', { slot: w.slot, pid: w.pid, error: (err as { code?: string }).code ?? err.message });
      this.#workerGone(w, `hand-off failed: ${err.message}`);
    });
  }

  // ---- lifecycle ------------------------------------------------------------

  /**
   * Graceful reload: a new generation of workers takes new connections once
   * all of it is ready; the old one stops getting any, finishes what it has
   * and exits. If the new generation cannot start, the old one stays.
   */
  async reload(): Promise<void> {
    if (this.#stopping) return;
    const old = [...this.#workers].filter((w) => w.state !== 'dead');
    this.#generation++;
    this.#logEvent('reload', { generation: this.#generation });
    this.#reloading = true;
    try {
      await this.#startGeneration();
    } catch (err) {
      this.#reloading = false;
      this.#logEvent('reload-failed', { generation: this.#generation, error: (err as Error).message });
      // Back to the old generation: stop what started of the new one.
      for (const w of this.#workers) if (w.generation === this.#generation) this.#drainWorker(w);
      this.#generation--;
      for (const w of old) if (this.#slots[w.slot]) this.#slots[w.slot]!.current = w;
      throw err;
    }
    this.#reloading = false;
    for (const w of old) this.#drainWorker(w);
    this.#logEvent('reload-done', { generation: this.#generation });
  }

  #drainWorker(w: WorkerRec): void {
    if (w.state === 'dead' || w.state === 'draining') return;
    w.state = 'draining';
    const t = this.#opts.shutdownTimeout;
    w.sock.send(encodeShutdown(t)).catch(() => {});
    // Past the timeout (and a grace period) it is killed; anything it never
    // acknowledged is re-dispatched then.
    w.killTimer = setTimeout(() => this.#kill(w), t + 2000);
  }

  /**
   * Graceful shutdown: takes what waits in the listeners' backlogs and hands
   * it out, closes the listeners, lets the workers finish their in-flight
   * requests (up to shutdownTimeout) and resolves when they have exited.
   */
  async shutdown(): Promise<void> {
    if (this.#stopping) {
      await this.#allExited();
      return;
    }
    this.#stopping = true;
    this.#logEvent('shutdown', { workers: this.#workers.size });
    for (const h of this.#polls) if (h) native.pollClose(h);
    this.#polls = [];
    this.#polling = false;
    if (this.#acceptBackoff) clearTimeout(this.#acceptBackoff);
    this.#acceptBackoff = null;
    for (const s of this.#slots) if (s.respawnTimer) clearTimeout(s.respawnTimer);
    await this.#drainBacklogs();
    closeListeners(this.sockets);
    // Workers still starting get no traffic: stop them; the ready ones drain.
    for (const w of this.#workers) {
      if (w.state === 'starting') w.child.kill('SIGTERM');
      else this.#drainWorker(w);
    }
    await this.#allExited();
    for (const c of this.#waiting.splice(0)) native.close(c.fd);
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#releaseSpares();
    clearInterval(this.#rateTimer);
    this.#logEvent('stopped', { handed: this.#handed });
  }

  /**
   * Nothing the kernel queued is refused: accepts it all and hands it out
   * before the listeners close. close() resets whatever completed its
   * handshake after the last accept(), so a TCP listener first stops
   * completing new ones (a socket filter drops bare SYNs: those clients
   * retry in a second and find the port closed); handshakes already under
   * way get HANDSHAKE_GRACE_MS, then the backlog is drained once more.
   * (Inherited listeners get no filter: systemd keeps them after we exit,
   * with their backlog.) Out of fds, it waits for the workers to acknowledge
   * what they were handed (which closes our copies), up to the shutdown
   * timeout; the spare fds go to connections now.
   */
  async #drainBacklogs(): Promise<void> {
    this.#releaseSpares();
    const deadline = Date.now() + this.#opts.shutdownTimeout;
    let filtered = false;
    for (const l of this.sockets) {
      if (l.fd >= 0 && l.kind === 'tcp' && !l.inherited && native.dropSyns(l.fd) === 0) filtered = true;
    }
    await this.#drainOnce(deadline);
    if (!filtered) return;
    await new Promise((res) => setTimeout(res, HANDSHAKE_GRACE_MS));
    await this.#drainOnce(deadline);
  }

  async #drainOnce(deadline: number): Promise<void> {
    for (const l of this.sockets) {
      while (l.fd >= 0) {
        const r = this.#acceptFrom(l);
        if (r > 0) continue;
        if (r === EAGAIN) break;
        let inflight = 0;
        for (const w of this.#workers) inflight += w.inflight.size;
        if (inflight === 0 || Date.now() >= deadline) break;
        await new Promise((res) => setTimeout(res, 5));
      }
    }
  }

  async #allExited(): Promise<void> {
    while (this.#workers.size > 0) await Promise.all([...this.#workers].map((w) => w.exited));
  }

  // ---- status ----------------------------------------------------------------

  #sampleRate(): void {
    this.#rate.push({ t: Date.now(), handed: this.#handed });
    if (this.#rate.length > 11) this.#rate.shift();
  }

  /** status(), after asking every worker for its current counts (waiting
   * at most `timeout` ms for the answers). */
  async freshStatus(timeout = 250): Promise<Status> {
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
    return this.status();
  }

  status(): Status {
    const first = this.#rate[0];
    const now = { t: Date.now(), handed: this.#handed };
    const rate = first && now.t > first.t ? ((now.handed - first.handed) * 1000) / (now.t - first.t) : 0;
    const workers: WorkerStatus[] = [...this.#workers]
      .sort((a, b) => a.generation - b.generation || a.slot - b.slot)
      .map((w) => ({
        slot: w.slot, pid: w.pid, generation: w.generation, state: w.state,
        handed: w.handed, acked: w.acked, unacked: w.inflight.size, live: w.live, requests: w.requests,
        restarts: this.#slots[w.slot]?.restarts ?? 0,
      }));
    let inflight = 0;
    for (const w of this.#workers) inflight += w.inflight.size;
    return {
      primary: {
        pid: process.pid,
        uptimeSeconds: Math.round((Date.now() - this.#startedAt) / 1000),
        strategy: this.#opts.strategy,
        generation: this.#generation,
        accepted: this.#accepted,
        handed: this.#handed,
        inflight,
        waiting: this.#waiting.length,
        handoffRatePerSecond: Math.round(rate),
        acceptErrors: this.#acceptErrors,
        listeners: this.sockets.map(publicInfo),
      },
      workers,
    };
  }

  #logEvent(event: string, fields: Record<string, unknown>): void {
    this.#log({ time: new Date().toISOString(), event, ...fields });
  }
}

/** FNV-1a of the client's IP address (not its port): the hash strategy's key. */
function clientHash(fd: number): number {
  const port = native.inetName(fd, true, NAME_BUF);
  if (port < 0) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < NAME_BUF.length && NAME_BUF[i] !== 0; i++) {
    h ^= NAME_BUF[i]!;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}
