/**
 * Helpers for testing `fdpass serve` as a real process tree: start the CLI
 * with arguments, wait until it reports up (parsing its listeners, control
 * socket and pid from stderr), follow its JSON lifecycle events, query its
 * status, make HTTP/HTTPS requests over new connections (agent: false) or
 * over one held keep-alive connection, run client loops, find which process
 * owns a TCP socket (ss, and /proc), account for the fds of the primary and
 * of every worker, and stop it.
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
import { FIXTURES, openFds, childEnv, type Deferrer } from './fds';

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
    this.process = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? childEnv() });
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

  /** The fd tables of the primary and of each worker, now. */
  async treeFds(): Promise<TreeFds> {
    const st = await this.status();
    return this.#snapshot(st);
  }

  #snapshot(st: Status): TreeFds {
    const workers = new Map<number, Map<number, string>>();
    for (const w of st.workers) {
      if (w.pid === undefined || w.state === 'dead') continue;
      try {
        workers.set(w.pid, openFds(w.pid));
      } catch {
        // gone meanwhile
      }
    }
    return { primary: openFds(this.pid), workers };
  }

  /**
   * Waits until the server is idle (no connection in flight, waiting or
   * live in a worker; every worker ready, none draining) and its fd tables
   * hold still, and returns them: the baseline for expectNoFdLeak(). Take it
   * after a few requests, so that what the runtime opens lazily is open.
   */
  async idleFds(timeout = 10_000): Promise<TreeFds> {
    const deadline = Date.now() + timeout;
    const st = await this.waitStatus(isIdle, timeout, 'idle (nothing in flight, no live connection)');
    // No more status queries from here: each is a connection of its own.
    let last = this.#snapshot(st);
    for (;;) {
      await sleep(20);
      const now = this.#snapshot(st);
      if (sameTree(last, now)) return now;
      if (Date.now() > deadline) assert.fail(`fd tables of fdpass serve did not hold still within ${timeout} ms`);
      last = now;
    }
  }

  /**
   * Fails unless, once idle, neither the primary nor any worker holds an fd
   * beyond `before` (idleFds()). fds are compared by kind ('socket',
   * 'pipe', 'anon_inode:[eventfd]', a path), as multisets: the primary
   * against its own baseline (a respawned worker's channel is a new socket
   * of the same kind), each worker against its own, or, for a worker
   * started since (a respawn, a reload), against a worker of the baseline:
   * workers start alike. Gives asynchronous closes up to `timeout` ms.
   */
  async expectNoFdLeak(before: TreeFds, timeout = 10_000): Promise<TreeFds> {
    const deadline = Date.now() + timeout;
    const st = await this.waitStatus(isIdle, timeout, 'idle (nothing in flight, no live connection)');
    for (;;) {
      const now = this.#snapshot(st);
      const leaks = treeLeaks(before, now);
      if (leaks.length === 0) return now;
      if (Date.now() > deadline) assert.fail(`fdpass serve leaked fds once idle:\n${leaks.join('\n')}`);
      await sleep(25);
    }
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

// ---- fds of the whole tree -----------------------------------------------------

/** Open fds (fd -> readlink target) of the primary and of each worker (by pid). */
export interface TreeFds {
  primary: Map<number, string>;
  workers: Map<number, Map<number, string>>;
}

/** Nothing in flight, nothing waiting, no live connection, every worker ready. */
function isIdle(st: Status): boolean {
  return st.primary.inflight === 0 && st.primary.waiting === 0 &&
    st.workers.length > 0 && st.workers.every((w) => w.state === 'ready' && w.live === 0 && w.unacked === 0);
}

/** 'socket:[123]' -> 'socket', 'pipe:[9]' -> 'pipe'; anything else as it is. */
export function fdKind(target: string): string {
  return target.replace(/^(socket|pipe):\[\d+\]$/, '$1');
}

/** Counts of each kind of fd. */
export function fdKinds(fds: Map<number, string>): Map<string, number> {
  const m = new Map<string, number>();
  for (const t of fds.values()) m.set(fdKind(t), (m.get(fdKind(t)) ?? 0) + 1);
  return m;
}

/**
 * What a Node process opens lazily and keeps for good, not counted as a
 * leak: libuv opens /dev/null on the first stream it creates (its reserve
 * fd for accept at EMFILE, uv__stream_init), so a worker has it from its
 * first connection on (the primary, which spawns with pipes, from the start).
 */
export const WORKER_LAZY_FDS: ReadonlyMap<string, number> = new Map([['/dev/null', 1]]);

/** fds of `after` beyond those of `before` (and beyond `lazy`), by kind: ['2 x socket', ...]. */
export function extraFds(before: Map<number, string>, after: Map<number, string>, lazy?: ReadonlyMap<string, number>): string[] {
  const b = fdKinds(before);
  const out: string[] = [];
  for (const [kind, n] of fdKinds(after)) {
    const extra = n - (b.get(kind) ?? 0) - (lazy?.get(kind) ?? 0);
    if (extra > 0) out.push(`${extra} x ${kind}`);
  }
  return out;
}

/** What the primary and each worker of `now` hold beyond `before`, one line each. */
export function treeLeaks(before: TreeFds, now: TreeFds): string[] {
  const out: string[] = [];
  const p = extraFds(before.primary, now.primary);
  if (p.length) out.push(`  primary: ${p.join(', ')} (${before.primary.size} fds before, ${now.primary.size} now)`);
  const model = before.workers.values().next().value as Map<number, string> | undefined;
  for (const [pid, fds] of now.workers) {
    const base = before.workers.get(pid) ?? model;
    if (!base) continue;
    const extra = extraFds(base, fds, WORKER_LAZY_FDS);
    if (extra.length) out.push(`  worker ${pid}${before.workers.has(pid) ? '' : ' (new)'}: ${extra.join(', ')} (${base.size} fds before, ${fds.size} now)`);
  }
  return out;
}

function sameTree(a: TreeFds, b: TreeFds): boolean {
  const same = (x: Map<number, string>, y: Map<number, string>) => x.size === y.size && [...x].every(([fd, t]) => y.get(fd) === t);
  if (!same(a.primary, b.primary) || a.workers.size !== b.workers.size) return false;
  for (const [pid, fds] of a.workers) {
    const o = b.workers.get(pid);
    if (!o || !same(fds, o)) return false;
  }
  return true;
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

// ---- bounded load on new connections, told apart by outcome ---------------------------

/** One request on a new connection, as the client saw it. */
export interface Attempt {
  ok: boolean;
  /** The worker pid in the body (fixture apps and the demo app put it there). */
  worker?: number;
  status?: number;
  /** Why it failed: an errno code ('ECONNRESET', 'ECONNREFUSED'), 'EOF' (closed
   * before a whole response), 'TIMEOUT', or 'STATUS' (not a 200). */
  code?: string;
  /** The client's port: matches the journal of test/fixtures/apps/journal.js. */
  localPort?: number;
  /** The TCP handshake completed (the kernel queued the connection). */
  connected: boolean;
  /** Response bytes received. */
  bytes: number;
  start: number;
  end: number;
}

const CRLF2 = Buffer.from('\r\n\r\n');

/**
 * GET `path` over a new TCP or Unix connection with `Connection: close`,
 * spoken by hand (no agent, no parser: cheap enough for hundreds of
 * thousands in a row). Never rejects: the outcome is in the Attempt.
 */
export function attempt(l: ServeListener, path = '/', timeout = 10_000): Promise<Attempt> {
  return new Promise((resolve) => {
    const a: Attempt = { ok: false, connected: false, bytes: 0, start: Date.now(), end: 0 };
    const chunks: Buffer[] = [];
    const s = l.path ? net.connect(l.path) : net.connect(l.port!, l.host!);
    let settled = false;
    const finish = (code?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      a.end = Date.now();
      const buf = Buffer.concat(chunks);
      a.bytes = buf.length;
      if (!code) {
        const head = buf.subarray(0, Math.max(0, buf.indexOf(CRLF2))).toString('latin1');
        const status = /^HTTP\/1\.[01] (\d{3})/.exec(head);
        const len = /\r\ncontent-length: *(\d+)/i.exec(head);
        const bodyStart = buf.indexOf(CRLF2) + 4;
        if (!status || !len || bodyStart < 4 || buf.length - bodyStart < Number(len[1])) code = 'EOF';
        else {
          a.status = Number(status[1]);
          const w = /"worker":(\d+)/.exec(buf.toString('utf8', bodyStart));
          if (w) a.worker = Number(w[1]);
          if (a.status !== 200) code = 'STATUS';
        }
      }
      a.ok = !code;
      if (code) a.code = code;
      s.destroy();
      resolve(a);
    };
    const timer = setTimeout(() => finish('TIMEOUT'), timeout);
    s.on('connect', () => {
      a.connected = true;
      a.localPort = s.localPort;
      s.write(`GET ${path} HTTP/1.1\r\nHost: fdpass.test\r\nConnection: close\r\n\r\n`);
    });
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => finish());
    s.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? 'ERROR'));
    s.on('close', () => finish());
  });
}

export interface ConnectionLoadOptions {
  /** Concurrent client loops. */
  loops: number;
  /** Stop after this many attempts in all (default: until stop()). */
  total?: number;
  /** The request path, or a function giving one per attempt. */
  path?: string | (() => string);
  /** Per-request timeout (ms, default 10 s). */
  timeout?: number;
  /** A refused connect ends that loop and is not a failure (the listener closed). */
  refusedEnds?: boolean;
  /** Keep the Attempt of every success too (default: only counts). */
  keepAll?: boolean;
}

/**
 * Client loops making one request after another, each on a new connection,
 * until `total` attempts or stop(). Counts successes per worker and keeps
 * every failed Attempt, for the caller to explain.
 */
export class ConnectionLoad {
  ok = 0;
  attempts = 0;
  refused = 0;
  readonly failures: Attempt[] = [];
  readonly successes: Attempt[] = [];
  readonly byWorker = new Map<number, number>();
  readonly done: Promise<void>;
  readonly started = Date.now();
  #stopped = false;

  constructor(l: ServeListener, o: ConnectionLoadOptions) {
    const pathOf = typeof o.path === 'function' ? o.path : () => (o.path as string | undefined) ?? '/';
    const loop = async () => {
      while (!this.#stopped && (o.total === undefined || this.attempts < o.total)) {
        this.attempts++;
        const a = await attempt(l, pathOf(), o.timeout);
        if (a.ok) {
          this.ok++;
          if (a.worker !== undefined) this.byWorker.set(a.worker, (this.byWorker.get(a.worker) ?? 0) + 1);
          if (o.keepAll) this.successes.push(a);
        } else if (o.refusedEnds && a.code === 'ECONNREFUSED') {
          this.refused++;
          return;
        } else {
          this.failures.push(a);
        }
      }
    };
    this.done = Promise.all(Array.from({ length: o.loops }, loop)).then(() => undefined);
  }

  async waitOk(n: number, timeout = 10_000): Promise<void> {
    const deadline = Date.now() + timeout;
    while (this.ok < n) {
      if (Date.now() > deadline) assert.fail(`only ${this.ok} of ${n} requests answered within ${timeout} ms`);
      await sleep(10);
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.done;
  }
}

/** A line of the journal of test/fixtures/apps/journal.js. */
export interface JournalEntry {
  pid: number;
  port: number;
  time: number;
}

export function readJournal(file: string): JournalEntry[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: JournalEntry[] = [];
  for (const line of text.split('\n')) {
    const [pid, port, time] = line.split(' ').map(Number);
    if (pid && port && time) out.push({ pid, port, time });
  }
  return out;
}

/**
 * Splits failed attempts: `inside` ones had been taken by a worker that was
 * then killed (the journal has that worker, the client's port, and a time
 * within the attempt): the request died with the process, as in any server.
 * Everything else is `lost`: a connection that failed although no killed
 * worker had taken it.
 */
export function explainFailures(failures: Attempt[], journal: JournalEntry[], killed: ReadonlySet<number>): { inside: Attempt[]; lost: Attempt[] } {
  const byPort = new Map<number, JournalEntry[]>();
  for (const e of journal) {
    let list = byPort.get(e.port);
    if (!list) byPort.set(e.port, (list = []));
    list.push(e);
  }
  const inside: Attempt[] = [];
  const lost: Attempt[] = [];
  for (const f of failures) {
    const hit = f.connected && f.localPort !== undefined &&
      (byPort.get(f.localPort) ?? []).some((e) => killed.has(e.pid) && e.time >= f.start - 1 && e.time <= f.end + 1);
    (hit ? inside : lost).push(f);
  }
  return { inside, lost };
}

// ---- chaos -------------------------------------------------------------------------

export interface Kill {
  pid: number;
  slot: number;
  time: number;
}

/**
 * kill -9 of a random ready worker every `everyMs`, `kills` times. When no
 * worker is ready (all replacements still starting, on a slow machine) the
 * kill waits for one, up to 10 s. Returns what it killed.
 */
export async function killWorkers(s: ServeProcess, kills: number, everyMs: number, random: () => number = Math.random): Promise<Kill[]> {
  const out: Kill[] = [];
  while (out.length < kills) {
    const next = Date.now() + everyMs;
    const st = await s.waitStatus((x) => x.workers.some((w) => w.state === 'ready'), 10_000, 'a ready worker to kill');
    const ready = st.workers.filter((w) => w.state === 'ready' && w.pid !== undefined);
    const w = ready[Math.floor(random() * ready.length)]!;
    try {
      process.kill(w.pid!, 'SIGKILL');
      out.push({ pid: w.pid!, slot: w.slot, time: Date.now() });
    } catch {
      continue; // exited meanwhile
    }
    await sleep(Math.max(0, next - Date.now()));
  }
  return out;
}

// ---- processes: CPU and memory ------------------------------------------------------

/** utime + stime of a process, in clock ticks (USER_HZ, 100 on Linux). */
export function cpuTicks(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return Number(rest[11]) + Number(rest[12]);
}

/** Resident set size of a process, in KiB (VmRSS). */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
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
