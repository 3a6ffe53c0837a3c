/**
 * Helpers for testing `fdpass serve` as a real process tree: start the CLI
 * with arguments, wait until it reports up (parsing its listeners, control
 * socket and pid from stderr), follow its JSON lifecycle events, query its
 * status, make HTTP/HTTPS requests over new connections (agent: false) or
 * over one held keep-alive connection, run client loops, find which process
 * owns a TCP socket (ss, and /proc), and stop it.
 *
 * Every process started here is registered with an owner (a Scope) that
 * kills it, its workers included, when the test ends.
 */
import * as assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { queryStatus } from '../../src/serve/control';
import type { Status } from '../../src/serve/primary';
import { FIXTURES, type Deferrer } from './fds';

export const ROOT = path.resolve(FIXTURES, '..', '..');
export const CLI = path.join(ROOT, 'bin', 'fdpass.js');
export const DEV_CERT = path.join(ROOT, 'certs', 'dev-localhost.crt');
export const DEV_KEY = path.join(ROOT, 'certs', 'dev-localhost.key');
export const APPS = path.join(FIXTURES, 'apps');
/** The dev certificate, as the CA that clients trust (its SANs: localhost, 127.0.0.1, ::1). */
export const DEV_CA = fs.readFileSync(DEV_CERT);

export type { Status };

export interface LogEvent {
  time: string;
  event: string;
  [k: string]: unknown;
}

/** A listener as `fdpass serve` reports it: `fdpass: NAME on ADDRESS[ (tls)]`. */
export interface ServeListener {
  name: string;
  address: string;
  tls: boolean;
  /** TCP: host (without brackets) and port. */
  host?: string;
  port?: number;
  /** Unix: the socket path. */
  path?: string;
}

export interface ServeResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  stdout: string;
  /** ms from spawn to exit. */
  ms: number;
}

export interface ServeOptions {
  /** Kills the process tree (if still running) when this owner cleans up. */
  owner?: Deferrer;
  /** Run through this command first (e.g. systemd-socket-activate ...); it must exec. */
  prefix?: string[];
  env?: NodeJS.ProcessEnv;
  /** How long to wait for the "up" line (default 15 s). */
  upTimeout?: number;
}

const LISTENER_LINE = /^fdpass: (\S+) on (.+?)( \(tls\))?$/;
const UP_LINE = /^fdpass: (\d+) workers, (\S+); control socket (.+); pid (\d+)$/;

function parseListener(name: string, address: string, isTls: boolean): ServeListener {
  const v6 = /^\[(.+)\]:(\d+)$/.exec(address);
  if (v6) return { name, address, tls: isTls, host: v6[1], port: Number(v6[2]) };
  const v4 = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(address);
  if (v4) return { name, address, tls: isTls, host: v4[1], port: Number(v4[2]) };
  return { name, address, tls: isTls, path: address };
}

/** A running `fdpass serve` (the primary; its workers are its children). */
export class ServeProcess {
  readonly process: ChildProcess;
  /** The primary's pid (the prefix command, if any, must exec it). */
  readonly pid: number;
  readonly exited: Promise<ServeResult>;
  listeners: ServeListener[] = [];
  control = '';
  workers = 0;
  strategy = '';
  #events: LogEvent[] = [];
  #eventWaiters: { pred: (e: LogEvent) => boolean; resolve: (e: LogEvent) => void }[] = [];
  #stderr = '';
  #stdout = '';
  #lineBuf = '';
  #pendingListeners: ServeListener[] = [];
  #up: Promise<void>;
  #markUp!: () => void;
  #result: ServeResult | null = null;
  readonly #started = Date.now();

  constructor(args: readonly string[], options: ServeOptions = {}) {
    const argv = [...(options.prefix ?? []), process.execPath, CLI, 'serve', ...args];
    this.process = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
    this.pid = this.process.pid!;
    this.#up = new Promise<void>((resolve) => (this.#markUp = resolve));
    this.process.stdout!.setEncoding('utf8').on('data', (s: string) => (this.#stdout += s));
    this.process.stderr!.setEncoding('utf8').on('data', (s: string) => this.#onStderr(s));
    // 'close': the primary has exited and every copy of its stdio pipes
    // (its workers inherit stderr) is closed, so the test holds no fd of it.
    this.exited = new Promise((resolve) => {
      this.process.on('close', (code, signal) => {
        this.#result = { code, signal, stderr: this.#stderr, stdout: this.#stdout, ms: Date.now() - this.#started };
        resolve(this.#result);
      });
    });
    if (options.owner) {
      const cleanup = () => this.kill();
      if (options.owner.defer) options.owner.defer(cleanup);
      else options.owner.after?.(cleanup);
    }
  }

  #onStderr(s: string): void {
    this.#stderr += s;
    this.#lineBuf += s;
    let nl: number;
    while ((nl = this.#lineBuf.indexOf('\n')) >= 0) {
      const line = this.#lineBuf.slice(0, nl);
      this.#lineBuf = this.#lineBuf.slice(nl + 1);
      this.#onLine(line);
    }
  }

  #onLine(line: string): void {
    if (line.startsWith('{')) {
      let e: LogEvent;
      try {
        e = JSON.parse(line) as LogEvent;
      } catch {
        return;
      }
      this.#events.push(e);
      this.#eventWaiters = this.#eventWaiters.filter((w) => {
        if (!w.pred(e)) return true;
        w.resolve(e);
        return false;
      });
      return;
    }
    const up = UP_LINE.exec(line);
    if (up) {
      this.workers = Number(up[1]);
      this.strategy = up[2]!;
      this.control = up[3]!;
      this.listeners = this.#pendingListeners;
      this.#markUp();
      return;
    }
    const l = LISTENER_LINE.exec(line);
    if (l) this.#pendingListeners.push(parseListener(l[1]!, l[2]!, Boolean(l[3])));
  }

  get stderr(): string {
    return this.#stderr;
  }

  get running(): boolean {
    return this.#result === null;
  }

  /** Resolves once the "N workers, ...; control socket ...; pid P" line is out;
   * rejects (with stderr) if the process exits first or `timeout` passes. */
  async waitUp(timeout = 15_000): Promise<this> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.#up,
        this.exited.then((r) => {
          throw new Error(`fdpass serve exited (code ${r.code}, signal ${r.signal}) before it was up\nstderr:\n${r.stderr}`);
        }),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`fdpass serve not up within ${timeout} ms\nstderr:\n${this.#stderr}`)), timeout);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
    return this;
  }

  /** The listener named `name` (or at `index`). */
  listener(which: string | number = 0): ServeListener {
    const l = typeof which === 'number' ? this.listeners[which] : this.listeners.find((x) => x.name === which);
    assert.ok(l, `no listener ${which} in ${JSON.stringify(this.listeners)}`);
    return l;
  }

  /** Resolves once stderr matches `re` (e.g. a line of a prefix command). */
  async waitStderr(re: RegExp, timeout = 10_000): Promise<void> {
    const deadline = Date.now() + timeout;
    while (!re.test(this.#stderr)) {
      if (!this.running) throw new Error(`exited before stderr matched ${re}\nstderr:\n${this.#stderr}`);
      if (Date.now() > deadline) throw new Error(`stderr did not match ${re} within ${timeout} ms\nstderr:\n${this.#stderr}`);
      await sleep(10);
    }
  }

  /** Lifecycle events so far (optionally of one kind). */
  events(name?: string): LogEvent[] {
    return name ? this.#events.filter((e) => e.event === name) : [...this.#events];
  }

  /** The first event (past or future) matching `pred`. */
  waitEvent(pred: (e: LogEvent) => boolean, timeout = 10_000, what = 'event'): Promise<LogEvent> {
    const seen = this.#events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise<LogEvent>((resolve, reject) => {
      const w = {
        pred,
        resolve: (e: LogEvent) => {
          clearTimeout(timer);
          resolve(e);
        },
      };
      const timer = setTimeout(() => {
        this.#eventWaiters = this.#eventWaiters.filter((x) => x !== w);
        reject(new Error(`no ${what} within ${timeout} ms\nstderr:\n${this.#stderr}`));
      }, timeout);
      this.#eventWaiters.push(w);
    });
  }

  /** Waits until `n` events match `pred`. */
  async waitEvents(pred: (e: LogEvent) => boolean, n: number, timeout = 10_000, what = 'events'): Promise<LogEvent[]> {
    const deadline = Date.now() + timeout;
    for (;;) {
      const got = this.#events.filter(pred);
      if (got.length >= n) return got;
      if (Date.now() > deadline) throw new Error(`${got.length} of ${n} ${what} within ${timeout} ms\nstderr:\n${this.#stderr}`);
      await sleep(10);
    }
  }

  /** The status, from the control socket (in-process client). */
  status(): Promise<Status> {
    return queryStatus(this.control);
  }

  /** Polls the status until `pred` holds (or fails after `timeout` with the last status). */
  async waitStatus(pred: (s: Status) => boolean, timeout = 10_000, what = 'status'): Promise<Status> {
    const deadline = Date.now() + timeout;
    for (;;) {
      const s = await this.status();
      if (pred(s)) return s;
      if (Date.now() > deadline) assert.fail(`${what} not reached within ${timeout} ms; last status: ${JSON.stringify(s)}`);
      await sleep(20);
    }
  }

  /** Pids of the primary's live children (its workers), from /proc. */
  childPids(): number[] {
    return childrenOf(this.pid);
  }

  signal(sig: NodeJS.Signals): void {
    this.process.kill(sig);
  }

  /** SIGTERM; resolves with the result once exited (fails after `timeout`). */
  async stop(timeout = 15_000): Promise<ServeResult> {
    if (this.#result) return this.#result;
    this.signal('SIGTERM');
    return withTimeout(this.exited, timeout, `fdpass serve did not exit within ${timeout} ms of SIGTERM`);
  }

  /** Kills the primary and its workers (SIGKILL; stopped ones too) and waits until gone. */
  async kill(): Promise<ServeResult> {
    if (!this.#result) {
      for (const pid of this.childPids()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      this.process.kill('SIGKILL');
    }
    return this.exited;
  }
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
    return await withTimeout(s.exited, timeout, `fdpass serve ${args.join(' ')} still running after ${timeout} ms`);
  } catch (err) {
    const r = await s.kill();
    throw new Error(`${(err as Error).message}\nstderr:\n${r.stderr}`);
  }
}

/** Runs the fdpass CLI (any command) to completion. */
export function runCli(args: readonly string[], options: { uid?: number; gid?: number; timeout?: number } = {}): Promise<ServeResult> {
  let argv = [process.execPath, CLI, ...args];
  if (options.uid !== undefined) {
    argv = ['setpriv', `--reuid=${options.uid}`, `--regid=${options.gid ?? options.uid}`, '--clear-groups', '--', ...argv];
  }
  const started = Date.now();
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeout ?? 10_000);
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

// ---- requests -------------------------------------------------------------------

/** What the demo app answers (fixture apps answer a subset). */
export interface DemoBody {
  primary?: number;
  worker: number;
  listener?: string;
  tls?: boolean;
  via?: string;
  client?: string;
  url?: string;
}

export interface Reply {
  status: number;
  body: DemoBody;
  /** Response headers, lower-case names (HttpConnection only). */
  headers?: Record<string, string>;
  /** The client's local port (TCP). */
  localPort?: number;
}

export interface RequestOptions {
  path?: string;
  /** Bind the client to this address (hash strategy tests). */
  localAddress?: string;
  /** Give up (destroying the connection) after this many ms (default 10 s). */
  timeout?: number;
}

/**
 * One request over a new connection (agent: false, so `Connection: close`).
 * https verifies the server against the dev certificate as CA.
 */
export function request(l: ServeListener, options: RequestOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const common: http.RequestOptions = { agent: false, path: options.path ?? '/', method: 'GET' };
    if (l.path) common.socketPath = l.path;
    else {
      common.host = l.host;
      common.port = l.port;
      if (options.localAddress) common.localAddress = options.localAddress;
    }
    const req = l.tls ? https.request({ ...common, ca: DEV_CA }) : http.request(common);
    let localPort: number | undefined;
    req.on('socket', (s) => s.once('connect', () => (localPort = s.localPort)));
    req.setTimeout(options.timeout ?? 10_000, () => req.destroy(new Error(`request to ${l.address} timed out`)));
    req.on('error', reject);
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('error', reject);
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode!, body: JSON.parse(text) as DemoBody, localPort });
        } catch (err) {
          reject(new Error(`bad body from ${l.address} (${res.statusCode}): ${text}`, { cause: err }));
        }
      });
    });
    req.end();
  });
}

/**
 * One held connection for several requests in a row (HTTP/1.1 keep-alive),
 * spoken by hand so that the test knows it is the same connection throughout.
 */
export class HttpConnection {
  readonly socket: net.Socket;
  #buf = Buffer.alloc(0);
  #waiter: { resolve: (r: Reply) => void; reject: (e: Error) => void } | null = null;
  #error: Error | null = null;
  #closed: Promise<void>;
  #closing = false;
  /** Resolves when the connection is closed: true if the server closed it, false if we did. */
  readonly closedByPeer: Promise<boolean>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.#closed = new Promise((res) => socket.once('close', () => res()));
    this.closedByPeer = this.#closed.then(() => !this.#closing);
    socket.on('data', (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      this.#parse();
    });
    socket.on('error', (err) => this.#fail(err));
    socket.on('close', () => this.#fail(new Error('connection closed')));
  }

  static open(l: ServeListener, options: { localAddress?: string } = {}): Promise<HttpConnection> {
    return new Promise((resolve, reject) => {
      const opts = l.path ? { path: l.path } : { host: l.host!, port: l.port!, localAddress: options.localAddress };
      const s = l.tls ? tls.connect({ ...opts, ca: DEV_CA, servername: l.host && net.isIP(l.host) ? undefined : l.host })
        : net.connect(opts);
      const ok = () => {
        s.off('error', reject);
        resolve(new HttpConnection(s));
      };
      s.once(l.tls ? 'secureConnect' : 'connect', ok);
      s.once('error', reject);
    });
  }

  get localPort(): number | undefined {
    return this.socket.localPort;
  }

  get(path = '/', timeout = 10_000): Promise<Reply> {
    if (this.#error) return Promise.reject(this.#error);
    assert.equal(this.#waiter, null, 'one request at a time');
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => this.#fail(new Error(`no reply within ${timeout} ms`)), timeout);
      this.#waiter = {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.socket.write(`GET ${path} HTTP/1.1\r\nHost: fdpass.test\r\nConnection: keep-alive\r\n\r\n`);
    });
  }

  #parse(): void {
    const end = this.#buf.indexOf('\r\n\r\n');
    if (end < 0 || !this.#waiter) return;
    const head = this.#buf.toString('latin1', 0, end);
    const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? NaN);
    if (!Number.isInteger(len)) return this.#fail(new Error(`no content-length in ${head}`));
    if (this.#buf.length < end + 4 + len) return;
    const body = this.#buf.toString('utf8', end + 4, end + 4 + len);
    this.#buf = this.#buf.subarray(end + 4 + len);
    const w = this.#waiter;
    this.#waiter = null;
    const headers: Record<string, string> = {};
    for (const line of head.split('\r\n').slice(1)) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    try {
      w.resolve({ status: Number(head.split(' ')[1]), body: JSON.parse(body) as DemoBody, headers, localPort: this.localPort });
    } catch (err) {
      w.reject(err as Error);
    }
  }

  #fail(err: Error): void {
    this.#error ??= err;
    const w = this.#waiter;
    this.#waiter = null;
    w?.reject(err);
  }

  /** Closes the connection and waits until its fd is closed. */
  async close(): Promise<void> {
    if (!this.socket.destroyed) this.#closing = true;
    this.socket.destroy();
    await this.#closed;
  }
}

/** `total` requests, each on a new connection, `concurrency` at a time;
 * returns how many each worker pid answered. Any failure rejects. */
export async function hammer(l: ServeListener, total: number, concurrency = 32): Promise<Map<number, number>> {
  const byWorker = new Map<number, number>();
  let next = 0;
  const loop = async () => {
    while (next < total) {
      next++;
      const r = await request(l);
      assert.equal(r.status, 200);
      byWorker.set(r.body.worker, (byWorker.get(r.body.worker) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  return byWorker;
}

export interface LoopRecord {
  start: number;
  end: number;
  worker: number;
}

/**
 * `loops` concurrent client loops, each making one request after another on
 * new connections, until stop() — or, with `refusedEnds`, until a connect is
 * refused (the listener is closed), which ends that loop and is not a failure.
 * Every other error is a failure.
 */
export class LoadLoop {
  readonly records: LoopRecord[] = [];
  readonly failures: Error[] = [];
  refused = 0;
  readonly done: Promise<void>;
  #stopped = false;

  constructor(l: ServeListener, loops: number, options: { refusedEnds?: boolean; path?: string } = {}) {
    const loop = async () => {
      while (!this.#stopped) {
        const start = Date.now();
        try {
          const r = await request(l, { path: options.path });
          if (r.status !== 200) throw new Error(`status ${r.status}`);
          this.records.push({ start, end: Date.now(), worker: r.body.worker });
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (options.refusedEnds && code === 'ECONNREFUSED') {
            this.refused++;
            return;
          }
          this.failures.push(err as Error);
          await sleep(5);
        }
      }
    };
    this.done = Promise.all(Array.from({ length: loops }, loop)).then(() => undefined);
  }

  get ok(): number {
    return this.records.length;
  }

  /** Waits until at least `n` requests have been answered. */
  async waitOk(n: number, timeout = 10_000): Promise<void> {
    const deadline = Date.now() + timeout;
    while (this.ok < n) {
      if (Date.now() > deadline) assert.fail(`only ${this.ok} of ${n} requests answered within ${timeout} ms; failures: ${this.failures.map((e) => e.message).join('; ')}`);
      await sleep(10);
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.done;
  }
}

// ---- who owns a socket ---------------------------------------------------------------

export interface SocketQuery {
  /** The server side's port. */
  localPort: number;
  /** The client's port: an established connection; without it, the listening socket. */
  peerPort?: number;
}

/** Pids holding the TCP socket, according to `ss -tnpH` (-l for a listener). */
export function socketOwnersSs(q: SocketQuery): number[] {
  const r = spawnSync('ss', [q.peerPort === undefined ? '-tlnpH' : '-tnpH'], { encoding: 'utf8' });
  assert.equal(r.status, 0, `ss failed: ${r.stderr}`);
  const pids = new Set<number>();
  for (const line of r.stdout.split('\n')) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 5) continue;
    const [state, , , local, peer] = cols as [string, string, string, string, string];
    if (q.peerPort === undefined ? state !== 'LISTEN' : state !== 'ESTAB') continue;
    if (portOf(local) !== q.localPort) continue;
    if (q.peerPort !== undefined && portOf(peer) !== q.peerPort) continue;
    for (const m of line.matchAll(/pid=(\d+)/g)) pids.add(Number(m[1]));
  }
  return [...pids].sort((a, b) => a - b);
}

function portOf(addrPort: string): number {
  return Number(addrPort.slice(addrPort.lastIndexOf(':') + 1));
}

/** The same from /proc: socket inodes in /proc/net/tcp{,6} matched against every /proc/PID/fd. */
export function socketOwnersProc(q: SocketQuery): number[] {
  const inodes = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10) continue;
      const local = parseInt(c[1]!.split(':')[1]!, 16);
      const peer = parseInt(c[2]!.split(':')[1]!, 16);
      const state = c[3]; // 0A LISTEN, 01 ESTABLISHED
      if (local !== q.localPort) continue;
      if (q.peerPort === undefined ? state !== '0A' : state !== '01' || peer !== q.peerPort) continue;
      inodes.add(`socket:[${c[9]}]`);
    }
  }
  const pids = new Set<number>();
  if (inodes.size === 0) return [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${name}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (inodes.has(fs.readlinkSync(`/proc/${name}/fd/${fd}`))) pids.add(Number(name));
      } catch {
        // closed meanwhile
      }
    }
  }
  return [...pids].sort((a, b) => a - b);
}

// ---- processes and misc ----------------------------------------------------------------

/** Live children of `pid` (from /proc/PID/task/PID/children, else a /proc scan). */
export function childrenOf(pid: number): number[] {
  try {
    const text = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
    return text ? text.split(/\s+/).map(Number) : [];
  } catch {
    const out: number[] = [];
    for (const name of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      try {
        const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
        if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(name));
      } catch {
        // gone
      }
    }
    return out;
  }
}

/** Whether a process exists (and is not a zombie). */
export function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** The number of open fds of a process. */
export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** A port that was free a moment ago (bound to 0 and closed). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((res, rej) => s.once('error', rej).listen(0, host, () => res()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((res) => s.close(() => res()));
  return port;
}

/** Whether ::1 is configured and can be bound. */
export async function hasIPv6Loopback(): Promise<boolean> {
  try {
    if (!/^0{31}1 /m.test(fs.readFileSync('/proc/net/if_inet6', 'utf8'))) return false;
    const s = net.createServer();
    await new Promise<void>((res, rej) => s.once('error', rej).listen(0, '::1', () => res()));
    await new Promise<void>((res) => s.close(() => res()));
    return true;
  } catch {
    return false;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms));
}

async function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Counts values: value -> occurrences. */
export function tally<T>(values: Iterable<T>): Map<T, number> {
  const m = new Map<T, number>();
  for (const v of values) m.set(v, (m.get(v) ?? 0) + 1);
  return m;
}
