/**
 * A worker's reading of the PROXY protocol header that starts every
 * connection of a `proxy` listener, on the raw fd, before anything else
 * (net.Socket, TLS, HTTP) reads from it; and what the app then sees.
 *
 * Exactly the header's bytes leave the socket, never one more: the reader
 * peeks (MSG_PEEK), asks the pure parser (proxy-protocol.ts), and receives
 * only what the parser says is header. While the parser wants more, every
 * byte peeked is header (its end lies beyond them), so they are received
 * and kept; once it knows the header, it receives up to its end. A v2
 * header's TLVs are received and dropped, never stored: a reader holds at
 * most the header's first PREFIX_MAX bytes. So the client's first bytes (a
 * ClientHello, a request) stay queued in the kernel for the net.Socket
 * that takes the fd next, as if no header had been there.
 *
 * The first read is tried on the next turn of the event loop (after the
 * worker's ACK of the hand-off has gone out: until then the primary may
 * give the connection to another worker, which must find the header still
 * there), then whenever the fd is readable.
 *
 * A connection whose header is not valid, or not complete within the
 * deadline (the handshake timeout: handshake-deadline.ts; a header trickled
 * byte by byte does not extend it), or that closes or fails first, is
 * closed here, and `done` says why. One with a valid header is handed back
 * with it: the fd is the caller's again.
 *
 * Ownership: the fd is the reader's from construction until `done` gets a
 * header (then the caller's) or it fails or is cancelled (then closed).
 */
import type * as net from 'node:net';
import { getSystemErrorName } from 'node:util';
import { native } from '../native';
import { EAGAIN } from '../errno';
import { PollWatcher, READABLE } from '../socket/poll-watcher';
import { parseProxyHeader, PREFIX_MAX, type ProxyHeader } from './proxy-protocol';

export type HeaderReadResult =
  | { ok: true; header: ProxyHeader; /** ms left of the deadline */ remainingMs: number }
  | { ok: false; reason: string; /** the peer (the balancer), 'ADDRESS:PORT', or '' */ peer: string };

/** Peeks and receives go through this; a header's start is copied out. */
const SCRATCH = Buffer.alloc(Math.max(PREFIX_MAX, 4096));
const NAME_BUF = Buffer.alloc(64);

export class ProxyHeaderRead {
  readonly #fd: number;
  readonly #done: (r: HeaderReadResult) => void;
  readonly #watcher: PollWatcher;
  readonly #deadlineAt: number;
  readonly #timer: NodeJS.Timeout;
  #first: NodeJS.Immediate | null;
  /** Header bytes received so far (before the parser could answer). */
  #have: Buffer = Buffer.alloc(0);
  /** Once the header is known: it, and how many of its bytes (TLVs) are still to drop. */
  #header: ProxyHeader | null = null;
  #skip = 0;
  #over = false;

  /**
   * @param timeoutMs  how long the whole header may take (from now)
   * @param done       called once, unless cancel() comes first
   */
  constructor(fd: number, timeoutMs: number, done: (r: HeaderReadResult) => void) {
    this.#fd = fd;
    this.#done = done;
    this.#deadlineAt = Date.now() + timeoutMs;
    this.#watcher = new PollWatcher(fd, () => this.#read(), (errno) => this.#fail(errno ? getSystemErrorName(errno) : 'socket error'));
    this.#timer = setTimeout(() => this.#fail(`no complete header within ${timeoutMs} ms`), timeoutMs);
    // The worker lives for its channel to the primary, not for its clients.
    this.#timer.unref();
    this.#first = setImmediate(() => {
      this.#first = null;
      this.#read();
    });
  }

  /** Stops and closes the connection (the worker is going); `done` is not called. */
  cancel(): void {
    if (this.#over) return;
    this.#finish();
    native.close(this.#fd);
  }

  #read(): void {
    while (!this.#over) {
      if (this.#header) {
        const r = native.recv(this.#fd, SCRATCH, Math.min(this.#skip, SCRATCH.length), false);
        if (r === EAGAIN) break;
        if (r <= 0) return this.#failRecv(r);
        this.#skip -= r;
        if (this.#skip === 0) return this.#succeed(this.#header);
        continue;
      }
      const r = native.recv(this.#fd, SCRATCH, SCRATCH.length, true);
      if (r === EAGAIN) break;
      if (r <= 0) return this.#failRecv(r);
      const seen = this.#have.length ? Buffer.concat([this.#have, SCRATCH.subarray(0, r)]) : Buffer.from(SCRATCH.subarray(0, r));
      const p = parseProxyHeader(seen, { addressesOnly: true });
      if (p.kind === 'error') return this.#fail(p.reason);
      // All of it is header while the parser wants more; else up to its end.
      const take = p.kind === 'more' ? r : Math.min(p.header.length, seen.length) - this.#have.length;
      const got = native.recv(this.#fd, SCRATCH, take, false);
      if (got !== take) return got < 0 ? this.#failRecv(got) : this.#fail(`received ${got} of ${take} peeked bytes`);
      if (p.kind === 'more') {
        this.#have = seen;
        continue;
      }
      this.#header = p.header;
      this.#skip = p.header.length - (this.#have.length + take);
      if (this.#skip === 0) return this.#succeed(p.header);
    }
    if (!this.#over && this.#watcher.set(READABLE) < 0) this.#fail('cannot watch the socket');
  }

  #failRecv(r: number): void {
    if (r < 0) return this.#fail(getSystemErrorName(r));
    const got = this.#header ? `${this.#header.length - this.#skip} of its ${this.#header.length} bytes` : `${this.#have.length} bytes`;
    this.#fail(`closed by the peer after ${got} of the header`);
  }

  #succeed(header: ProxyHeader): void {
    this.#finish();
    this.#done({ ok: true, header, remainingMs: Math.max(1, this.#deadlineAt - Date.now()) });
  }

  #fail(reason: string): void {
    if (this.#over) return;
    this.#finish();
    const port = native.inetName(this.#fd, true, NAME_BUF);
    const peer = port < 0 ? '' : `${NAME_BUF.toString('latin1', 0, NAME_BUF.indexOf(0))}:${port}`;
    native.close(this.#fd);
    this.#done({ ok: false, reason, peer });
  }

  #finish(): void {
    this.#over = true;
    this.#watcher.close();
    clearTimeout(this.#timer);
    if (this.#first) clearImmediate(this.#first);
    this.#first = null;
  }
}

/**
 * What the app sees of a connection with a PROXY header: `remoteAddress`,
 * `remotePort` and `remoteFamily` of `socket` are the client's from the
 * header (the connection's own, the balancer's, stay where the header has
 * no client address: LOCAL, UNKNOWN, UNSPEC, AF_UNIX). Set on the socket
 * itself, over net.Socket's getters: on the raw socket, and on a TLS socket
 * built over it (whose getters would ask the kernel). The local address
 * stays the connection's own; the balancer's destination is in the header.
 */
export function showClient(socket: net.Socket, header: ProxyHeader): void {
  const src = header.source;
  if (!src || (header.family !== 'IPv4' && header.family !== 'IPv6')) return;
  const own = { configurable: true, enumerable: true };
  Object.defineProperty(socket, 'remoteAddress', { ...own, value: src.address });
  Object.defineProperty(socket, 'remotePort', { ...own, value: src.port });
  Object.defineProperty(socket, 'remoteFamily', { ...own, value: header.family });
}
