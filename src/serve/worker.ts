/**
 * The worker side of `fdpass serve`: connections handed over by the primary
 * are fed, in one call, into the user's own net/http/https/tls servers, by
 * listener name:
 *
 *   const worker = Worker.fromPrimary();          // fd 3 and the environment
 *   worker.serve({ http: httpServer, https: httpsServer });
 *
 * A server for a TLS listener that is a plain net/http server gets the
 * connection after the TLS handshake, done here with the listener's cert:
 * the primary never reads a byte of a connection.
 *
 * Each batch of fds is adopted at once (net.Socket owns each fd from then
 * on) and acknowledged in one message, after which the primary closes its
 * copies. Until then the primary keeps them, so a worker that dies before
 * acknowledging loses nothing: the primary hands them to another worker.
 * A batch that arrives without its fds (this process at RLIMIT_NOFILE: the
 * kernel drops what does not fit, MSG_CTRUNC) is reported LOST by its
 * number, and the primary hands those connections to another worker.
 *
 * A connection that goes into a TLS handshake (on a tls listener, or into
 * the app's tls.Server) is closed if the handshake has not completed within
 * `handshakeTimeout` (handshake-deadline.ts).
 *
 * On a `proxy` listener the PROXY header is read off the raw fd first
 * (proxy-header-read.ts), within the TLS handshake's deadline (one for both);
 * the app sees the client (showClient(), connectionInfo().proxy). Refused
 * connections are logged (client-log.ts).
 *
 * Signals: once ready, a worker started by the primary leaves SIGTERM,
 * SIGINT and SIGHUP to the primary. They reach a worker when they are sent
 * to the whole process group (systemd's default KillMode=control-group,
 * Ctrl-C in a terminal, `timeout`): the primary got them too and decides
 * (SIGTERM/SIGINT: it sends SHUTDOWN and the worker drains; SIGHUP: a
 * reload). Dying on them would cut every request in flight. A worker whose
 * primary is gone (the channel's end) drains and exits by itself.
 * SIGUSR1 is ignored from the start: Node would take it as "open the
 * inspector" (a debugger port any local user could reach).
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import * as http from 'node:http';
import { EventEmitter } from 'node:events';
import { UnixSocket } from '../socket/socket';
import type { Message } from '../socket/message';
import { native } from '../native';
import { decodePrimaryMessage, encodeJson, encodeLost, Op } from './protocol';
import { WorkerReport } from './worker-report';
import type { ListenerInfo } from './listeners';
import { ServeConfigError } from '../errors';
import type { WorkerIdentity } from './privileges';
import { openAccepted } from './accepted-socket';
import { armHandshakeDeadline, handshakeDone, validHandshakeTimeout, HANDSHAKE_TIMEOUT_MS, MAX_HANDSHAKE_TIMEOUT_MS } from './handshake-deadline';
import { ProxyHeaderRead, showClient } from './proxy-header-read';
import type { ProxyHeader } from './proxy-protocol';
import { ClientLog } from './client-log';
import { WorkerDrain } from './worker-drain';
import { makeLog, type Log } from './log';

/** Environment of a worker started by the primary. */
export const WORKER_ENV = 'FDPASS_WORKER';

export interface WorkerConfig {
  primaryPid: number;
  slot: number;
  generation: number;
  listeners: ListenerInfo[];
  /** Who the worker runs as: the preload (drop-privileges.ts) switches to
   * it before the worker script runs. The certificate and key of tls
   * listeners are not here: they come as bytes over the channel (TLS). */
  identity?: WorkerIdentity;
  /** The APP module (absolute path); none: the built-in demo. */
  app?: string;
  /** Report live connection counts as they change (least-connections needs them). */
  reportLoad?: boolean;
  /** ms a connection may take to complete its TLS handshake (default 10 s). */
  handshakeTimeout?: number;
}

/** How a connection reached this worker. */
export interface ConnectionInfo {
  /** The listener it was accepted on. */
  listener: ListenerInfo;
  /** The primary's id for it. */
  id: number;
  /** How many connections came in the same hand-off message. */
  batch: number;
  primaryPid: number;
  /** The PROXY protocol header it came with (`proxy` listeners). */
  proxy?: ProxyHeader;
}

type Target = net.Server | ((socket: net.Socket, info: ConnectionInfo) => void);

const INFO = Symbol('fdpass.connectionInfo');
/** On a connection as adopted (the raw socket): what its HTTP server is doing with it. */
const HTTP = Symbol('fdpass.httpState');
/** On a TLS socket made here: the raw socket under it. */
const RAW = Symbol('fdpass.raw');

/** Sent to the process group, they are the primary's business (see above). */
const GROUP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
/** The handler that keeps them from killing the worker: nothing to do. */
function leftToPrimary(): void {}

interface HttpState {
  /** The socket the HTTP server reads (the TLS socket over a tls listener). */
  socket: net.Socket;
  /** The response in progress, or null once the last one is finished (idle keep-alive). */
  res: http.ServerResponse | null;
}

type Adopted = net.Socket & { [HTTP]?: HttpState };

/** How a socket (plain or TLS, or an http request's socket) reached us. */
export function connectionInfo(socket: net.Socket): ConnectionInfo | undefined {
  const s = socket as net.Socket & { [INFO]?: ConnectionInfo; _parent?: net.Socket };
  return s[INFO] ?? s._parent?.[INFO as never];
}

export class Worker extends EventEmitter {
  readonly config: WorkerConfig;
  #sock: UnixSocket;
  #targets = new Map<string, Target>();
  /** From the primary's TLS message (the first on the channel, if any). */
  #tlsContext: tls.SecureContext | null = null;
  #live = new Set<net.Socket>();
  /** Connections whose PROXY header is being read (their fds are the readers'). */
  #headerReads = new Set<ProxyHeaderRead>();
  readonly #clientLog: ClientLog;
  readonly #report: WorkerReport;
  /** Set by the first drain (SHUTDOWN, the primary gone, drain()). */
  #drain: WorkerDrain | null = null;
  /** The drain is over: this process exits. */
  #exiting = false;
  #servers = new Set<net.Server>();
  /** CONNS messages received, whole or not (modulo 2^32): LOST names one by this. */
  #batches = 0;
  /** Started by the primary (fromPrimary()): the process is ours to run. */
  #ownProcess = false;

  /** @param log  where refused connections are logged (default: JSON lines on stderr) */
  constructor(sock: UnixSocket, config: WorkerConfig, log: Log = makeLog()) {
    super();
    this.#sock = sock;
    this.config = config;
    this.#clientLog = new ClientLog(log);
    this.#report = new WorkerReport(sock, Boolean(config.reportLoad), () => this.liveConnections);
    sock.on('message', (m: Message) => this.#onMessage(m));
    sock.on('error', (err) => this.#onChannelError(err));
    // The primary is gone: nobody will hand us more; finish and go.
    sock.on('end', () => void this.drain(10_000));
  }

  /** In a process started by the primary: the channel on fd 3 and the config
   * in the environment. */
  static fromPrimary(): Worker {
    const raw = process.env[WORKER_ENV];
    if (!raw) throw new ServeConfigError('FDPASS_ERR_NOT_A_WORKER', `${WORKER_ENV} is not set: this process was not started by fdpass serve`);
    delete process.env[WORKER_ENV];
    const worker = new Worker(UnixSocket.fromFd(3), JSON.parse(raw) as WorkerConfig);
    worker.#ownProcess = true;
    if (!process.listeners('SIGUSR1').includes(leftToPrimary)) process.on('SIGUSR1', leftToPrimary);
    return worker;
  }

  /**
   * Where connections go, by listener name ('http', 'https', or the name in
   * `--listen ...,name=NAME`): a net/http/https/tls server, or a function.
   * `'*'` takes what no other entry names. Call once, then ready().
   */
  serve(targets: Record<string, Target>): this {
    for (const [name, t] of Object.entries(targets)) {
      this.#targets.set(name, t);
      if (t instanceof EventEmitter) this.#watch(t as net.Server);
    }
    return this;
  }

  /** Tells the primary this worker takes connections; from then on, in a
   * worker started by the primary, SIGTERM, SIGINT and SIGHUP are left to
   * the primary. (Not before: a worker still starting has nothing in flight,
   * and the primary stops one with SIGTERM.) */
  ready(): Promise<void> {
    for (const l of this.config.listeners) {
      if (!this.#targets.has(l.name) && !this.#targets.has('*')) {
        throw new ServeConfigError('FDPASS_ERR_NO_SERVER', `no server for listener '${l.name}' (${l.address}); serve({ ${JSON.stringify(l.name)}: server })`);
      }
    }
    if (!validHandshakeTimeout(this.#handshakeTimeout)) {
      throw new RangeError(`handshakeTimeout must be a whole number of ms from 1 to ${MAX_HANDSHAKE_TIMEOUT_MS}, got ${this.config.handshakeTimeout}`);
    }
    return this.#sock.send(encodeJson(Op.Ready, { pid: process.pid })).then(() => {
      if (!this.#ownProcess) return;
      for (const sig of GROUP_SIGNALS) if (!process.listeners(sig).includes(leftToPrimary)) process.on(sig, leftToPrimary);
    });
  }

  /** Tells the primary this worker cannot start, and why. */
  failed(message: string): Promise<void> {
    return this.#sock.send(encodeJson(Op.Failed, { message }));
  }

  get liveConnections(): number {
    return this.#live.size + this.#headerReads.size;
  }

  get #handshakeTimeout(): number {
    return this.config.handshakeTimeout ?? HANDSHAKE_TIMEOUT_MS;
  }

  #watch(server: net.Server): void {
    if (this.#servers.has(server)) return;
    this.#servers.add(server);
    // An http(s) server starts checking headersTimeout/requestTimeout when it
    // listens; these never listen(). Run that step (and only it: no
    // 'listening' event for the app) so slow clients are still cut off.
    for (const f of server.listeners('listening')) {
      if (f.name === 'setupConnectionsTracking') (f as () => void).call(server);
    }
    // The app's tls.Server does the handshake of what it is given: its end
    // is where the deadline set at adoption goes.
    if (server instanceof tls.Server) {
      server.prependListener('secureConnection', (s: tls.TLSSocket) => {
        const raw = this.#adoptedOf(s);
        if (!raw) return;
        handshakeDone(raw);
        const header = connectionInfo(raw)?.proxy;
        if (header) showClient(s, header);
      });
    }
    // Servers here never listen(), so Node's own connection tracking (and
    // with it closeIdleConnections()) is not set up: track requests per
    // connection ourselves, for drain().
    // First in line, so that a draining worker's `Connection: close` is set
    // before the app's handler writes the head.
    server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.#report.requests++;
      const conn = this.#adoptedOf(req.socket);
      if (!conn) return;
      const state: HttpState = { socket: req.socket, res };
      conn[HTTP] = state;
      if (this.#drain && !res.headersSent) res.setHeader('connection', 'close');
      res.once('finish', () => {
        if (state.res === res) state.res = null;
      });
    });
  }

  /** The adopted socket under `s` (itself, or the raw one under a TLS socket). */
  #adoptedOf(s: net.Socket): Adopted | undefined {
    const x = s as net.Socket & { [RAW]?: net.Socket; _parent?: net.Socket };
    for (const c of [x, x[RAW], x._parent]) if (c && this.#live.has(c)) return c;
    return undefined;
  }

  /** Only CONNS messages carry fds: one that lost them (or came malformed
   * with fds) is reported LOST, so that the primary hands its connections on. */
  #onChannelError(err: Error): void {
    if ((err as { code?: string }).code === 'FDPASS_ERR_CONTROL_TRUNCATED') this.#lost();
    this.emit('error', err);
  }

  #lost(): void {
    this.#batches = (this.#batches + 1) >>> 0;
    this.#sock.send(encodeLost(this.#batches)).catch(() => {});
  }

  #onMessage(m: Message): void {
    let msg;
    try {
      msg = decodePrimaryMessage(m.data, m.fdCount);
    } catch (err) {
      const hadFds = m.fdCount > 0;
      m.close();
      if (hadFds) this.#lost();
      this.emit('error', err); // a ProtocolError saying what was wrong
      return;
    }
    if (msg.op === Op.Conns) {
      this.#batches = (this.#batches + 1) >>> 0;
      const { ids, listeners } = msg;
      const fds = m.fds;
      // Acknowledged once adopted, before any is read (worker-report.ts).
      this.#report.arrived(ids, ids.length);
      this.#drain?.arrived(Date.now());
      for (let i = 0; i < fds.length; i++) this.#adopt(fds[i]!.release(), ids[i]!, listeners[i]!, fds.length);
    } else if (msg.op === Op.Tls) {
      m.close();
      try {
        this.#tlsContext = tls.createSecureContext({ cert: msg.cert, key: msg.key });
      } catch (err) {
        this.emit('error', err);
      }
    } else if (msg.op === Op.Shutdown) {
      m.close();
      void this.#drainFor(msg.timeout, msg.hold);
    } else {
      m.close();
      this.#report.sendLoad();
    }
  }

  // One pair of listeners for every adopted socket (`this` is the socket),
  // not two closures per connection.
  readonly #onSocketClose = ((w: Worker) => function (this: net.Socket): void {
    w.#live.delete(this);
    w.#report.closed();
  })(this);

  readonly #onSocketError = ((w: Worker) => function (this: net.Socket, err: Error): void {
    w.#clientLog.socketError(connectionInfo(this)!.listener, this, err);
  })(this);

  #adopt(fd: number, id: number, index: number, batch: number): void {
    const listener = this.config.listeners[index];
    const target = listener && (this.#targets.get(listener.name) ?? this.#targets.get('*'));
    if (!listener || !target || this.#exiting) {
      native.close(fd);
      this.#report.closed();
      return;
    }
    const info: ConnectionInfo = { listener, id, batch, primaryPid: this.config.primaryPid };
    if (!listener.proxy) return this.#open(fd, target, info, this.#handshakeTimeout);
    const read = new ProxyHeaderRead(fd, this.#handshakeTimeout, (r) => {
      this.#headerReads.delete(read);
      if (r.ok) return this.#open(fd, target, { ...info, proxy: r.header }, r.remainingMs);
      this.#clientLog.proxyHeader(listener, r.peer, r.reason);
      this.#report.closed();
    });
    this.#headerReads.add(read);
  }

  /** Adopts `fd` into a net.Socket and gives it to `target` (through TLS
   * first on a tls listener), within `deadlineMs` for a TLS handshake. */
  #open(fd: number, target: Target, info: ConnectionInfo, deadlineMs: number): void {
    const listener = info.listener;
    const appTls = target instanceof tls.Server;
    const socket = openAccepted(fd, typeof target === 'function' ? null : target, listener.tls && !appTls);
    (socket as net.Socket & { [INFO]: ConnectionInfo })[INFO] = info;
    if (info.proxy) showClient(socket, info.proxy);
    this.#live.add(socket);
    socket.on('close', this.#onSocketClose);
    if (target instanceof http.Server) socket.on('error', this.#onSocketError);
    if (listener.tls || appTls) armHandshakeDeadline(socket, deadlineMs);
    if (listener.tls && !appTls) {
      this.#handshake(socket, listener, target, info);
      return;
    }
    this.#deliver(target, socket, info);
  }

  #deliver(target: Target, socket: net.Socket, info: ConnectionInfo): void {
    if (typeof target === 'function') target(socket, info);
    else target.emit('connection', socket);
  }

  /** TLS for a listener whose server speaks plain: handshake here, then hand
   * the decrypted stream over. */
  #handshake(raw: net.Socket, listener: ListenerInfo, target: Target, info: ConnectionInfo): void {
    const ctx = this.#tlsContext;
    if (!ctx) {
      raw.destroy();
      this.emit('error', new ServeConfigError('FDPASS_ERR_NO_CERT', `listener ${listener.address} is tls but no --cert/--key was given`));
      return;
    }
    const secure = new tls.TLSSocket(raw, { isServer: true, secureContext: ctx, ALPNProtocols: ['http/1.1'] });
    (secure as tls.TLSSocket & { [INFO]: ConnectionInfo })[INFO] = info;
    (secure as tls.TLSSocket & { [RAW]: net.Socket })[RAW] = raw;
    if (info.proxy) showClient(secure, info.proxy);
    secure.once('secure', () => {
      handshakeDone(raw);
      this.#deliver(target, secure, info);
    });
    secure.on('error', (err) => {
      this.#clientLog.socketError(listener, secure, err);
      secure.destroy();
    });
  }

  /**
   * While draining, HTTP connections go once their requests are answered: a
   * keep-alive connection between requests is closed now; one with a
   * response in progress gets `Connection: close` (if its headers are not out
   * yet) and is closed when idle. A connection that has not sent a request
   * yet is left to send it: it was handed to us, so it is answered. (Node's
   * closeIdleConnections() would close those too, and does nothing here
   * anyway: it needs a server that listen()ed.)
   */
  #closeIdle(): void {
    for (const conn of this.#live as Set<Adopted>) {
      const st = conn[HTTP];
      if (!st) continue;
      if (st.res === null) {
        st.socket.destroy();
        conn.destroy();
      } else if (!st.res.headersSent) {
        st.res.setHeader('connection', 'close');
      }
    }
  }

  /**
   * Drains: lets requests in flight finish (idle keep-alive connections
   * are closed, responses say `Connection: close`), and exits 0 once every connection
   * is gone or `timeout` ms have passed. (Called again while a drain runs,
   * it releases one the primary holds: worker-drain.ts.)
   */
  drain(timeout: number): Promise<void> {
    return this.#drainFor(timeout, false);
  }

  /** drain(); with `hold`, connections the primary still hands over are
   * taken, and the process stays until released (worker-drain.ts). */
  async #drainFor(timeout: number, hold: boolean): Promise<void> {
    if (this.#drain) {
      if (!hold && this.#drain.held) this.#drain.release(timeout, Date.now());
      return;
    }
    const drain = (this.#drain = new WorkerDrain(timeout, hold, Date.now()));
    // Not server.close(): these servers never listened, and with Node's
    // connection tracking on (see #watch) it would run closeIdleConnections(),
    // which on newer Nodes also destroys connections handed over but not yet
    // read: those must be answered. #closeIdle() spares them.
    for (;;) {
      this.#closeIdle();
      const step = drain.step(this.liveConnections, Date.now());
      if (step === 'exit') break;
      if (step === 'cut') this.#cut();
      await new Promise((res) => setTimeout(res, 20));
    }
    this.#exiting = true;
    this.#cut();
    this.#report.sendLoad();
    await this.#sock.end().catch(() => {});
    this.emit('drained');
    process.exit(0);
  }

  /** Past the drain's deadline: every connection still live is closed. */
  #cut(): void {
    for (const r of this.#headerReads) r.cancel();
    this.#headerReads.clear();
    for (const s of this.#live) s.destroy();
  }
}
