/**
 * SendQueue: the write side of one UnixSocket.
 *
 * - Fast path: with nothing queued, a message goes straight to the kernel
 *   (one native sendmsgs() call) and send() returns a settled promise.
 * - Otherwise it waits in a queue, and the queue goes out in batches: up to
 *   64 messages copied into one scratch buffer and sent by one native call.
 * - A short stream write keeps the rest of its message at the head of the
 *   queue; its fds went with the first byte and are never sent again.
 * - The kernel pushing back is waited out: EAGAIN on a connected socket by
 *   watching for POLLOUT (the owner arms it when waitsForWritable is true);
 *   ETOOMANYREFS, ENOBUFS, and EAGAIN towards an unconnected datagram
 *   receiver, none of which has an event, by retrying on a timer that
 *   backs off from 1 ms to 100 ms.
 * - A broken connection (EPIPE, ECONNRESET, ENOTCONN) fails every queued
 *   send and each later one; a message the kernel refuses alone (EPERM
 *   credentials, EMSGSIZE, a destination that is gone) rejects that message
 *   and the queue goes on.
 *
 * Ownership: send() borrows the caller's fds until its promise settles; the
 * kernel duplicates them, and they stay the caller's.
 */
import { native, K } from '../native';
import { errnoError, invalidArg, invalidFd, tooManyFds, unsupported, SocketClosedError } from '../errors';
import { EAGAIN, EBADF, ETOOMANYREFS, ENOBUFS, EPIPE, ECONNRESET, ENOTCONN } from '../errno';
import { encodeAddress, displayAddress } from './address';
import { copyBytes } from './bytes';
import { Fifo } from './fifo';
import { fdNumber, type FdLike } from './fd';
import { writeHeader, HEADER_SIZE, FLAG_CREDENTIALS, MAX_FDS, type Credentials } from './frame';
import type { SocketLimits } from './options';

export interface OutgoingMessage {
  /** Payload bytes. A raw SOCK_STREAM message with fds needs at least one. */
  data?: string | Uint8Array;
  /** 0..253 fds, borrowed until the promise settles: keep them open till then. */
  fds?: readonly FdLike[];
  /** Attach SCM_CREDENTIALS: true for this process's own, or explicit ones
   * (the kernel refuses others' with EPERM unless privileged). */
  credentials?: boolean | Credentials;
  /** Datagram sockets: the destination address. */
  to?: string;
}

export interface SendQueueOwner {
  /** waitsForWritable changed: re-arm the poll watcher. */
  update(): void;
  /** The queue is empty: every message sent so far has settled. */
  drained(): void;
}

// Scratch, one set per thread: a batch is built and sent in one go.
const SEND_BATCH = 64;
/** Messages up to this size are copied into SBUF. */
const SEND_INLINE = 64 * 1024;
const SBUF = Buffer.allocUnsafe(256 * 1024);
const SMETA = new Int32Array(SEND_BATCH * K.SEND_META);
const SFDS = new Int32Array(SEND_BATCH * MAX_FDS);
/** What the kernel took of a batch: SRESULT[SENT] messages whole, then
 * SRESULT[PARTIAL] bytes of the next one. */
const SRESULT = new Int32Array(2);
const SENT = 0;
const PARTIAL = 1;
const SCRATCH = native.sendScratch(SBUF, SMETA, SFDS, SRESULT);

// The fields of one send record (K.SEND_META ints per message).
const {
  SEND_META: META, SEND_LEN: LEN, SEND_NFDS: NFDS, SEND_HAS_CREDS: HAS_CREDS, SEND_PID: PID, SEND_UID: UID, SEND_GID: GID,
} = K;

const RETRY_MIN_MS = 1;
const RETRY_MAX_MS = 100;
const RESOLVED = Promise.resolve();
const NO_FDS = new Int32Array(0);
const NO_FD_LIST: readonly FdLike[] = [];

interface Pending {
  bytes: Buffer;
  /** Bytes already taken by the kernel (a short stream write). */
  off: number;
  /** Borrowed fd numbers; null once they went with the first byte. */
  fds: Int32Array | null;
  creds: Credentials | null;
  to: Buffer | null;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class SendQueue {
  readonly #fd: number;
  readonly #o: SocketLimits;
  readonly #owner: SendQueueOwner;
  readonly #queue = new Fifo<Pending>();
  #flushScheduled = false;
  /** The kernel pushed back: wait for POLLOUT or the retry timer. */
  #blocked = false;
  #retryTimer: NodeJS.Timeout | null = null;
  #retryDelay = RETRY_MIN_MS;
  #refed = true;
  #closed = false;
  /** The connection broke: every later send rejects with this. */
  #error: Error | null = null;
  #drainWaiters: (() => void)[] = [];
  #sends = 0;

  constructor(fd: number, limits: SocketLimits, owner: SendQueueOwner) {
    this.#fd = fd;
    this.#o = limits;
    this.#owner = owner;
  }

  /** Messages waiting for the kernel to take them. */
  get length(): number {
    return this.#queue.length;
  }

  /** Messages given to send() so far, sent or not. */
  get sends(): number {
    return this.#sends;
  }

  /** Blocked on a full socket buffer: wants POLLOUT. */
  get waitsForWritable(): boolean {
    return this.#blocked && this.#retryTimer === null;
  }

  /** See UnixSocket.send(). */
  send(message: OutgoingMessage | string | Uint8Array): Promise<void> {
    const o = this.#o;
    const msg: OutgoingMessage = typeof message === 'string' || message instanceof Uint8Array ? { data: message } : message;
    if (msg === null || typeof msg !== 'object') throw invalidArg('send() takes a message object, a string or a Uint8Array');
    const data = toBytes(msg.data);
    const fdList = msg.fds ?? NO_FD_LIST;
    if (!Array.isArray(fdList)) throw invalidArg('fds must be an array');
    if (fdList.length > MAX_FDS) throw tooManyFds(fdList.length, MAX_FDS);
    const nfds = fdList.length;
    for (let i = 0; i < nfds; i++) SFDS[i] = fdNumber(fdList[i]!);
    const creds = credentialsOf(msg.credentials);
    let to: Buffer | null = null;
    if (msg.to !== undefined) {
      if (o.type !== 'dgram') throw unsupported(`'to' applies to datagram sockets, not ${o.type}`);
      to = encodeAddress(msg.to);
    }
    if (o.raw && nfds > 0 && data.length === 0) {
      throw invalidArg('a SOCK_STREAM message with fds needs at least one data byte');
    }
    if (o.framed && data.length > o.maxMessageSize) {
      throw new RangeError(`message of ${data.length} bytes exceeds maxMessageSize ${o.maxMessageSize}`);
    }
    if (this.#closed) return Promise.reject(new SocketClosedError());
    if (this.#error) return Promise.reject(this.#error);
    this.#sends++;

    // The bytes on the wire: the payload, behind a frame header when framed.
    // A framed message that may go out at once is built in the scratch
    // buffer; it gets a buffer of its own only if it has to wait.
    const fast = this.#queue.length === 0 && !this.#blocked;
    const size = o.framed ? HEADER_SIZE + data.length : data.length;
    let bytes: Buffer;
    if (!o.framed) bytes = data;
    else {
      bytes = fast && size <= SEND_INLINE ? SBUF : Buffer.allocUnsafe(size);
      writeHeader(bytes, 0, nfds, data.length, creds ? FLAG_CREDENTIALS : 0);
      copyBytes(bytes, HEADER_SIZE, data, 0, data.length);
    }

    if (fast) {
      // Straight to the kernel.
      setMeta(0, size, nfds, creds);
      const r = native.sendmsgs(SCRATCH, this.#fd, 1, to, bytes === SBUF ? null : bytes);
      if (r === 0) {
        this.#retryDelay = RETRY_MIN_MS;
        return RESOLVED;
      }
      if (bytes === SBUF && isRetryable(r)) bytes = Buffer.from(SBUF.subarray(0, size));
      if (r === EAGAIN && SRESULT[PARTIAL]! > 0) {
        // A short stream write: the fds went with the first byte.
        return this.#enqueue(bytes, SRESULT[PARTIAL]!, null, null, null);
      }
      if (!isRetryable(r)) {
        const err = sendError(r, SFDS.subarray(0, nfds), msg.to);
        if (err instanceof TypeError) throw err;
        if (isBroken(r)) this.#error = err;
        return Promise.reject(err);
      }
    }
    // Queue behind others (or retry later). The fds stay borrowed until the
    // promise settles, as a buffer handed to fs.write() does.
    return this.#enqueue(bytes, 0, nfds > 0 ? SFDS.slice(0, nfds) : null, creds, to);
  }

  /** Resolves once every queued message has gone to the kernel (or the
   * queue was failed or closed). */
  flush(): Promise<void> {
    if (this.#queue.length === 0) return RESOLVED;
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  /** POLLOUT: the socket has room again. */
  onWritable(): void {
    if (!this.waitsForWritable) return;
    this.#blocked = false;
    this.#owner.update();
    this.#flush();
  }

  /** The connection broke: queued sends reject with `err`, and so does
   * every later one. */
  fail(err: Error): void {
    this.#error = err;
    for (const p of this.#queue.clear()) settle(p, err);
    this.#maybeDrained();
  }

  /** The socket closed: queued sends reject with FDPASS_ERR_SOCKET_CLOSED;
   * flush() waiters resolve. Safe twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    const err = new SocketClosedError('socket closed before the message was sent');
    for (const p of this.#queue.clear()) settle(p, err);
    for (const f of this.#drainWaiters.splice(0)) f();
  }

  /** Whether a pending retry keeps the event loop alive. */
  ref(on: boolean): void {
    this.#refed = on;
    if (this.#retryTimer) {
      if (on) this.#retryTimer.ref();
      else this.#retryTimer.unref();
    }
  }

  #enqueue(bytes: Buffer, off: number, fds: Int32Array | null, creds: Credentials | null, to: Buffer | null): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ bytes, off, fds, creds, to, resolve, reject });
      if (!this.#blocked && !this.#flushScheduled) {
        this.#flushScheduled = true;
        queueMicrotask(() => {
          this.#flushScheduled = false;
          this.#flush();
        });
      }
    });
  }

  /** Sends queued messages in batches (one native call each) until the
   * queue is empty or the kernel pushes back. */
  #flush(): void {
    while (this.#queue.length > 0 && !this.#closed) {
      const q = this.#queue;
      const first = q.at(0)!;
      let count = 0;
      let data: Buffer;
      let foff = 0;
      if (first.bytes.length - first.off > SEND_INLINE) {
        data = first.bytes.subarray(first.off);
        foff = fillFds(first, 0);
        setMeta(0, data.length, foff, first.creds);
        count = 1;
      } else {
        let doff = 0;
        while (count < q.length && count < SEND_BATCH) {
          const p = q.at(count)!;
          const len = p.bytes.length - p.off;
          if (len > SEND_INLINE || doff + len > SBUF.length || !sameAddr(p.to, first.to)) break;
          const nfds = p.fds ? p.fds.length : 0;
          if (foff + nfds > SFDS.length) break;
          copyBytes(SBUF, doff, p.bytes, p.off, p.bytes.length);
          foff = fillFds(p, foff);
          setMeta(count, len, nfds, p.creds);
          doff += len;
          count++;
        }
        data = SBUF;
      }
      const r = native.sendmsgs(SCRATCH, this.#fd, count, first.to, data === SBUF ? null : data);
      const done = SRESULT[SENT]!;
      for (let i = 0; i < done; i++) settle(q.shift()!, null);
      if (r === 0) {
        this.#retryDelay = RETRY_MIN_MS;
        continue;
      }
      const head = q.at(0)!;
      if (SRESULT[PARTIAL]! > 0) {
        // The head went in part; its fds went with its first byte.
        head.off += SRESULT[PARTIAL]!;
        head.fds = null;
      }
      if (r === EAGAIN) {
        // Unconnected datagram senders get no writability event for a full
        // receiver queue: poll would spin. Retry on a timer instead.
        this.#block(head.to !== null);
        return;
      }
      if (r === ETOOMANYREFS || r === ENOBUFS) {
        // No event says when in-flight fds drain: back off and retry.
        this.#block(true);
        return;
      }
      if (isBroken(r)) {
        this.fail(errnoError(r, 'sendmsg'));
        return;
      }
      // This message alone is refused: reject it and go on with the rest.
      q.shift();
      settle(head, sendError(r, head.fds ?? NO_FDS, undefined));
    }
    this.#maybeDrained();
  }

  #block(timer: boolean): void {
    this.#blocked = true;
    if (timer) {
      const delay = this.#retryDelay;
      this.#retryDelay = Math.min(this.#retryDelay * 2, RETRY_MAX_MS);
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null;
        this.#blocked = false;
        this.#flush();
      }, delay);
      if (!this.#refed) this.#retryTimer.unref();
    } else {
      this.#owner.update();
    }
  }

  #maybeDrained(): void {
    if (this.#queue.length > 0) return;
    const w = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const f of w) f();
    this.#owner.drained();
  }
}

function setMeta(i: number, len: number, nfds: number, creds: Credentials | null): void {
  const m = i * META;
  SMETA[m + LEN] = len;
  SMETA[m + NFDS] = nfds;
  SMETA[m + HAS_CREDS] = creds ? 1 : 0;
  if (creds) {
    SMETA[m + PID] = creds.pid;
    SMETA[m + UID] = creds.uid | 0;
    SMETA[m + GID] = creds.gid | 0;
  }
}

function fillFds(p: Pending, foff: number): number {
  if (p.fds) {
    SFDS.set(p.fds, foff);
    foff += p.fds.length;
  }
  return foff;
}

function settle(p: Pending, err: Error | null): void {
  p.fds = null;
  if (err) p.reject(err);
  else p.resolve();
}

/** The kernel pushed back: try again later. */
function isRetryable(r: number): boolean {
  return r === EAGAIN || r === ETOOMANYREFS || r === ENOBUFS;
}

/** The connection is gone: no later send can work. */
function isBroken(r: number): boolean {
  return r === EPIPE || r === ECONNRESET || r === ENOTCONN;
}

/** The error for a refused message: an fd that is not open is the caller's
 * mistake (a TypeError), anything else a system error. */
function sendError(r: number, fds: Int32Array, to: string | undefined): Error {
  if (r === EBADF) {
    for (const fd of fds) {
      if (native.fdFlags(fd) < 0) return invalidFd(`fd ${fd} is not open`);
    }
  }
  return errnoError(r, 'sendmsg', to === undefined ? undefined : displayAddress(to));
}

function sameAddr(a: Buffer | null, b: Buffer | null): boolean {
  return a === b || (a !== null && b !== null && a.equals(b));
}

function toBytes(data: OutgoingMessage['data']): Buffer {
  if (data === undefined) return Buffer.alloc(0);
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (data instanceof Uint8Array) return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  throw invalidArg(`data must be a string or a Uint8Array, got ${typeof data}`);
}

function credentialsOf(c: OutgoingMessage['credentials']): Credentials | null {
  if (c === undefined || c === false) return null;
  if (c === true) return { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };
  if (typeof c === 'object' && c !== null && [c.pid, c.uid, c.gid].every((v) => Number.isInteger(v) && v >= 0)) {
    return { pid: c.pid, uid: c.uid, gid: c.gid };
  }
  throw invalidArg('credentials must be true or { pid, uid, gid } of non-negative integers');
}
