/**
 * The hash strategy's key for connections on `proxy` listeners: the
 * client's address in the PROXY header, not the balancer's (which is the
 * same for every connection, and would send them all to one worker).
 *
 * The primary reads no byte of a connection: it peeks (recv with MSG_PEEK
 * and MSG_DONTWAIT), so the header stays queued for the worker, which
 * reads and checks it for real (proxy-header-read.ts). A v2 header is
 * peeked only up to its addresses (parseProxyHeader's `addressesOnly`).
 *
 * When the header is not all there yet, the connection is parked: the fd
 * stays the ProxyPeek's, a poll watcher waits for its bytes, and it goes
 * to the dispatcher as soon as they are in, or after PARK_MS at most. A
 * header that came in part is peeked again every RETRY_MS (the watcher
 * would report the bytes already there again and again). A connection
 * still without a header by then, one whose header is not valid or has no
 * client address (LOCAL, UNKNOWN), one the peer closed or reset, and every
 * connection past MAX_PARKED parked at once, gets its peer's key instead
 * (the balancer's address): it is dispatched at once, never dropped here;
 * its worker decides its fate. A listener we bind with `proxy` has
 * TCP_DEFER_ACCEPT (listeners.ts), so a connection usually reaches
 * accept() with its header already in and is not parked at all.
 *
 * Listeners without `proxy`, and every listener under another strategy,
 * never come here: their connections go straight to the dispatcher.
 *
 * Ownership: fds given to take() are the ProxyPeek's until it hands them
 * to the dispatcher (`out`); close() hands every parked one on at once.
 */
import { native } from '../native';
import { EAGAIN } from '../errno';
import { PollWatcher, READABLE } from '../socket/poll-watcher';
import { parseProxyHeader, PREFIX_MAX } from './proxy-protocol';
import { addressKey } from './strategies';
import { peerKey } from './dispatcher';

/** The longest a connection waits in the primary for its PROXY header (ms). */
export const PARK_MS = 100;
/** How often a header that came in part is peeked at again (ms). */
const RETRY_MS = 2;
/** Parked at once, at most; past this, connections go with their peer's key. */
export const MAX_PARKED = 1024;

export type KeyedOut = (fds: Int32Array, n: number, listener: number, keys: Uint32Array) => void;

/** What a peek found: the key, or that the header is not all in yet. */
const NOT_YET = -1;

const PEEK_BUF = Buffer.alloc(PREFIX_MAX);

interface Parked {
  fd: number;
  listener: number;
  watcher: PollWatcher;
  /** PARK_MS from when it was parked. */
  deadline: NodeJS.Timeout;
  /** Set while a part-header waits for its next peek. */
  retry: NodeJS.Timeout | null;
}

export class ProxyPeek {
  readonly #out: KeyedOut;
  readonly #parked = new Map<number, Parked>();
  #closed = false;
  /** Connections that were parked (the others went at once). */
  parkedTotal = 0;
  /** Connections that went with their peer's key for want of a client address. */
  fallbacks = 0;

  /** @param out  takes fds[0..n) with their keys (arrays reused after it returns) */
  constructor(out: KeyedOut) {
    this.#out = out;
  }

  /** Parked now. */
  get parked(): number {
    return this.#parked.size;
  }

  /** Takes fds[0..n) accepted on `listener`; each goes on now, with its
   * key, or once its header is in. */
  take(fds: Int32Array, n: number, listener: number): void {
    const out = new Int32Array(n);
    const keys = new Uint32Array(n);
    let m = 0;
    for (let i = 0; i < n; i++) {
      const fd = fds[i]!;
      const key = this.#closed || this.#parked.size >= MAX_PARKED ? this.#fallback(fd) : this.#peek(fd);
      if (key === NOT_YET) {
        if (this.#park(fd, listener)) continue;
        out[m] = fd;
        keys[m++] = this.#fallback(fd);
        continue;
      }
      out[m] = fd;
      keys[m++] = key;
    }
    if (m) this.#out(out, m, listener, keys);
  }

  /** Hands every parked connection on now, with its peer's key; later ones
   * are not parked (shutting down). */
  close(): void {
    this.#closed = true;
    for (const p of [...this.#parked.values()]) this.#release(p, this.#fallback(p.fd));
  }

  /** The client's key from the header, NOT_YET, or the peer's key. */
  #peek(fd: number): number {
    const r = native.recv(fd, PEEK_BUF, PEEK_BUF.length, true);
    if (r === EAGAIN) return NOT_YET;
    if (r <= 0) return this.#fallback(fd); // closed or failed: the worker will see
    const p = parseProxyHeader(PEEK_BUF.subarray(0, r), { addressesOnly: true });
    if (p.kind === 'more') return NOT_YET;
    if (p.kind === 'header' && p.header.source && p.header.family !== 'unix') return addressKey(p.header.source.address);
    return this.#fallback(fd);
  }

  #fallback(fd: number): number {
    this.fallbacks++;
    return peerKey(fd);
  }

  /** Parks `fd` until its header is in (false if it cannot be watched). */
  #park(fd: number, listener: number): boolean {
    const p: Parked = {
      fd, listener, retry: null,
      watcher: new PollWatcher(fd, () => this.#ready(p), () => this.#release(p, this.#fallback(fd))),
      deadline: setTimeout(() => this.#release(p, this.#fallback(fd)), PARK_MS),
    };
    if (p.watcher.set(READABLE) < 0) {
      p.watcher.close();
      clearTimeout(p.deadline);
      return false;
    }
    this.#parked.set(fd, p);
    this.parkedTotal++;
    return true;
  }

  #ready(p: Parked): void {
    const key = this.#peek(p.fd);
    if (key !== NOT_YET) {
      this.#release(p, key);
      return;
    }
    // Part of it is there: the watcher would fire for those bytes at once
    // again. Look again a little later.
    p.watcher.set(0);
    p.retry = setTimeout(() => {
      p.retry = null;
      if (p.watcher.set(READABLE) < 0) this.#release(p, this.#fallback(p.fd));
    }, RETRY_MS);
  }

  #release(p: Parked, key: number): void {
    if (this.#parked.get(p.fd) !== p) return;
    this.#parked.delete(p.fd);
    p.watcher.close();
    clearTimeout(p.deadline);
    if (p.retry) clearTimeout(p.retry);
    this.#out(Int32Array.of(p.fd), 1, p.listener, Uint32Array.of(key));
  }
}
