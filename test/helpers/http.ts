/**
 * The HTTP/1.1 client of the tests and long runs: GET over TCP, TLS
 * (verified against the dev certificate as CA) or a Unix socket, spoken by
 * hand so that the caller knows which connection carried what (a held
 * keep-alive connection stays one connection), whether the TCP handshake
 * completed, how many bytes came back, and the client's port (what the
 * journal of test/fixtures/apps/journal.js and `ss` match on). Cheap enough
 * for hundreds of thousands of requests in a row.
 *
 *   request()        one request on a new connection (Connection: close); rejects on failure
 *   attempt()        the same, never rejects: the outcome as data (for load loops)
 *   HttpConnection   one connection, several requests in a row (keep-alive)
 *
 * Every request has a deadline. Failures are Errors with a `code`: an errno
 * code ('ECONNREFUSED', 'ECONNRESET'), a TLS code, 'EOF' (closed before a
 * whole response) or 'TIMEOUT'.
 */
import * as assert from 'node:assert/strict';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { DEV_CA } from './paths';

/** Where to connect: a listener of `fdpass serve` (ServeListener) or any such address. */
export interface Endpoint {
  /** As shown in messages. */
  address: string;
  tls: boolean;
  /** TCP: host (without brackets) and port. */
  host?: string;
  port?: number;
  /** Unix: the socket path. */
  path?: string;
}

/** What the demo app answers (fixture apps answer a subset). */
export interface DemoBody {
  primary?: number;
  worker: number;
  listener?: string;
  tls?: boolean;
  via?: string;
  client?: string;
  /** What the PROXY header said (`proxy` listeners). */
  proxy?: string;
  url?: string;
}

export interface Response {
  status: number;
  /** Lower-case names. */
  headers: Record<string, string>;
  text: string;
  /** The client's local port (TCP). */
  localPort?: number;
}

/** A response whose body is the JSON of the demo app or a fixture app. */
export interface Reply extends Response {
  body: DemoBody;
}

const CRLF2 = Buffer.from('\r\n\r\n');

export interface ConnectOptions {
  /** Bind the client to this address (hash strategy tests) and port. */
  localAddress?: string;
  localPort?: number;
  /** Bytes sent first, in the clear, before TLS or the request (a PROXY protocol header). */
  preamble?: Uint8Array;
}

function failure(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}

/**
 * One connection (TCP, TLS or Unix), opened by the constructor; `ready`
 * resolves once it is usable (after the TLS handshake). One request at a
 * time; the first failure (an error, the peer's close, a deadline) fails
 * the request in progress and every later one.
 */
export class HttpConnection {
  readonly socket: net.Socket;
  /** Resolves once connected (TLS: handshake done); rejects with the first failure before that. */
  readonly ready: Promise<void>;
  /** Resolves when the connection is closed: true if the server closed it, false if we did. */
  readonly closedByPeer: Promise<boolean>;
  /** The TCP handshake completed (the kernel queued the connection). */
  connected = false;
  /** The client's port, from the moment it connected. */
  localPort: number | undefined;
  /** Response bytes received, in all. */
  bytes = 0;
  readonly #address: string;
  #buf: Buffer = Buffer.alloc(0);
  #waiter: { resolve: (r: Response) => void; reject: (e: Error) => void } | null = null;
  #error: Error | null = null;
  #eof = false;
  #closing = false;
  #readyFailed: (e: Error) => void = () => {};
  readonly #closed: Promise<void>;

  constructor(e: Endpoint, o: ConnectOptions = {}) {
    this.#address = e.address;
    const where = e.path !== undefined ? { path: e.path } : { host: e.host!, port: e.port!, localAddress: o.localAddress, localPort: o.localPort };
    const secure = { ca: DEV_CA, servername: e.host && !net.isIP(e.host) ? e.host : undefined };
    /** The TCP (or Unix) connection under it all. */
    let transport: net.Socket;
    if (o.preamble) {
      // The preamble goes in the clear, then TLS (if any) over the same connection.
      transport = net.connect(where);
      transport.write(o.preamble);
      this.socket = e.tls ? tls.connect({ ...secure, socket: transport }) : transport;
    } else {
      this.socket = transport = e.tls ? tls.connect({ ...where, ...secure }) : net.connect(where);
    }
    this.ready = new Promise<void>((resolve, reject) => {
      this.#readyFailed = reject;
      (e.tls ? this.socket : transport).once(e.tls ? 'secureConnect' : 'connect', () => resolve());
    });
    this.ready.catch(() => {}); // reported through the request that awaits it
    this.#closed = new Promise((res) => this.socket.once('close', () => res()));
    this.closedByPeer = this.#closed.then(() => !this.#closing);
    transport.once('connect', () => {
      this.connected = true;
      this.localPort = transport.localPort;
    });
    this.socket.on('data', (d: Buffer) => {
      this.bytes += d.length;
      this.#buf = this.#buf.length ? Buffer.concat([this.#buf, d]) : d;
      this.#parse();
    });
    this.socket.on('end', () => {
      this.#eof = true;
      this.#parse();
    });
    this.socket.on('error', (err) => this.#fail(err));
    if (transport !== this.socket) transport.on('error', (err) => this.#fail(err));
    this.socket.on('close', () => this.#fail(failure('EOF', `connection to ${this.#address} closed`)));
  }

  /** A connection, once ready (rejects, with the connection closed, if it cannot be had). */
  static async open(e: Endpoint, o: ConnectOptions = {}): Promise<HttpConnection> {
    const c = new HttpConnection(e, o);
    try {
      await c.ready;
    } catch (err) {
      await c.close();
      throw err;
    }
    return c;
  }

  /** GET `path` (keep-alive) and parse the JSON body; fails after `timeout` ms. */
  async get(path = '/', timeout = 10_000): Promise<Reply> {
    return jsonReply(await this.exchange(path, { timeout }), this.#address);
  }

  /** GET `path`, once ready; `close` asks the server to close the connection after the response. */
  exchange(path: string, o: { timeout?: number; close?: boolean } = {}): Promise<Response> {
    if (this.#error) return Promise.reject(this.#error);
    assert.equal(this.#waiter, null, 'one request at a time');
    const timeout = o.timeout ?? 10_000;
    return new Promise<Response>((resolve, reject) => {
      const timer = setTimeout(() => this.#fail(failure('TIMEOUT', `no reply from ${this.#address} within ${timeout} ms`)), timeout);
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
      this.ready.then(() => {
        if (this.#waiter) this.socket.write(`GET ${path} HTTP/1.1\r\nHost: fdpass.test\r\nConnection: ${o.close ? 'close' : 'keep-alive'}\r\n\r\n`);
      }, () => {}); // the failure reaches the waiter through #fail
    });
  }

  #parse(): void {
    if (!this.#waiter) return;
    const end = this.#buf.indexOf(CRLF2);
    if (end < 0) return;
    const head = this.#buf.toString('latin1', 0, end);
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(head);
    if (!status) return this.#fail(failure('EOF', `not an HTTP response from ${this.#address}: ${head.slice(0, 80)}`));
    const headers: Record<string, string> = {};
    for (const line of head.split('\r\n').slice(1)) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    // Without a content-length the body runs to the end of the connection.
    const len = headers['content-length'] === undefined ? (this.#eof ? this.#buf.length - end - 4 : NaN) : Number(headers['content-length']);
    if (!(this.#buf.length >= end + 4 + len)) return;
    const text = this.#buf.toString('utf8', end + 4, end + 4 + len);
    this.#buf = this.#buf.subarray(end + 4 + len);
    const w = this.#waiter;
    this.#waiter = null;
    w.resolve({ status: Number(status[1]), headers, text, localPort: this.localPort });
  }

  #fail(err: Error): void {
    this.#error ??= err;
    this.#readyFailed(err);
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

function jsonReply(r: Response, address: string): Reply {
  try {
    return { ...r, body: JSON.parse(r.text) as DemoBody };
  } catch (err) {
    throw new Error(`bad body from ${address} (${r.status}): ${r.text}`, { cause: err });
  }
}

export interface RequestOptions extends ConnectOptions {
  path?: string;
  /** Give up after this many ms, connecting included (default 10 s). */
  timeout?: number;
}

/** One request over a new connection (Connection: close); the connection is closed when this settles. */
export async function request(e: Endpoint, o: RequestOptions = {}): Promise<Reply> {
  const c = new HttpConnection(e, o);
  try {
    return jsonReply(await c.exchange(o.path ?? '/', { timeout: o.timeout, close: true }), e.address);
  } finally {
    await c.close();
  }
}

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

/** request(), but never rejects: the outcome is in the Attempt (any body; the worker pid if it names one). */
export async function attempt(e: Endpoint, path = '/', timeout = 10_000): Promise<Attempt> {
  const start = Date.now();
  const c = new HttpConnection(e);
  const a: Attempt = { ok: false, connected: false, bytes: 0, start, end: 0 };
  try {
    const r = await c.exchange(path, { timeout, close: true });
    a.status = r.status;
    const w = /"worker":(\d+)/.exec(r.text);
    if (w) a.worker = Number(w[1]);
    if (r.status === 200) a.ok = true;
    else a.code = 'STATUS';
  } catch (err) {
    a.code = (err as NodeJS.ErrnoException).code ?? 'ERROR';
  }
  a.end = Date.now();
  a.connected = c.connected;
  a.bytes = c.bytes;
  if (c.localPort !== undefined) a.localPort = c.localPort;
  await c.close();
  return a;
}
