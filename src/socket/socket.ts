/**
 * UnixSocket: one AF_UNIX socket of any type, sending and receiving messages
 * that carry bytes, fds and credentials.
 *
 * - SOCK_STREAM speaks the fdpass framing (frame.ts) unless `raw` is set, so
 *   that each message keeps its own fds however the kernel splits reads.
 * - SOCK_SEQPACKET and SOCK_DGRAM keep boundaries themselves: one packet, one
 *   message.
 *
 * Ownership: send() borrows the caller's fds until its promise settles; they
 * stay open and the caller's, and must not be closed before then (when the
 * kernel takes the message at once, the common case, that is before send()
 * returns). Received fds belong to the Message until taken.
 */
import { EventEmitter } from 'node:events';
import { native, K, type PollHandle } from '../native';
import {
  errnoError, check, invalidArg, invalidFd, tooManyFds, unsupported, abortError,
  SocketClosedError, ControlTruncatedError, MessageTruncatedError, ProtocolError, TimeoutError,
  UnexpectedFdsError, FdFloodError,
  type ErrnoError,
} from '../errors';
import { encodeAddress, decodeAddress, displayAddress } from './address';
import { fdNumber, type FdLike } from './fd';
import { FrameDecoder, writeHeader, HEADER_SIZE, FLAG_CREDENTIALS, MAX_FDS, type Credentials } from './frame';
import { Message } from './message';

export type SocketType = 'stream' | 'seqpacket' | 'dgram';

export interface SocketOptions {
  /** Default 'stream'. */
  type?: SocketType;
  /** SOCK_STREAM only: plain sendmsg/recvmsg without framing, to talk to
   * programs that do not speak fdpass (each read is one message). */
  raw?: boolean;
  /** Turn on SO_PASSCRED: every received message carries the sender's
   * pid/uid/gid as checked by the kernel. */
  passCredentials?: boolean;
  /** Largest message accepted: the framed payload limit on streams (default
   * 64 MiB), the packet size on SEQPACKET/DGRAM (default 256 KiB; a larger
   * packet is reported as FDPASS_ERR_MESSAGE_TRUNCATED, not cut silently). */
  maxMessageSize?: number;
  /** Framed streams: most fds a peer may have in flight for frames not yet
   * complete before it is cut off (default 4096). */
  maxHeldFds?: number;
  /** Messages buffered for a slow consumer before reading pauses and the
   * kernel's queue pushes back on the sender (default 1024). */
  highWaterMark?: number;
  /** Received fds buffered (not yet handed to a consumer) before reading
   * pauses (default 2048, or a quarter of RLIMIT_NOFILE when that is lower,
   * but at least one full message; a batch may add up to 253 more).
   * Read-ahead must not fill this process's fd table: that would truncate
   * what follows.
   * Pausing is backpressure: the peer waits, nothing is dropped. */
  maxBufferedFds?: number;
  /**
   * Most fds one message may carry, 0..253 (default 253: only the kernel's
   * limit). For a socket that takes no fds, 0. A message with more has its
   * fds closed the moment it is read, before any consumer sees it; it is
   * reported as FDPASS_ERR_UNEXPECTED_FDS (UnexpectedFdsError, a
   * ProtocolError) after the messages read before it, and the connection is
   * closed. A datagram socket drops just that datagram and reads on: any
   * sender can reach it, and there is no connection to close.
   */
  maxFdsPerMessage?: number;
  /**
   * A hard cap on received fds waiting for this socket's consumer (buffered
   * messages plus a frame being received), for peers that are not trusted
   * to behave. Unset by default: a consumer that falls behind then only
   * pauses reading at maxBufferedFds, the peer waits (backpressure) and
   * nothing is lost, which is what a trusted peer wants.
   *
   * When set, falling behind by more than this is a flood: reading does not
   * pause for fds; once fds left unread through a whole event-loop turn plus
   * what arrives next exceed the cap, the connection is shut down, every fd
   * it left unread is closed (the messages waiting for the consumer too: they
   * are the flooding peer's backlog), and FDPASS_ERR_FD_FLOOD (FdFloodError,
   * a ProtocolError) is the next thing the consumer gets. (Within one turn,
   * reading stops short of the cap so that a consumer that keeps up is never
   * cut off.) This process then never holds more than about cap + 253 unread
   * fds for the connection, and nothing once it is cut off; the flooding
   * peer is gone instead of parked. Size it for the largest burst the
   * consumer may legitimately fall behind by; at least 253. A datagram
   * socket drops the datagrams over the cap instead and reads on.
   * maxBufferedFds, if given too, must be larger (it defaults to the larger
   * of 2048 and the cap + 1).
   */
  maxUnreadFds?: number;
}

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

export interface ReceiveOptions {
  signal?: AbortSignal;
  /** Milliseconds; rejects with FDPASS_ERR_TIMEOUT. */
  timeout?: number;
}

const TYPES: Record<SocketType, number> = {
  stream: K.SOCK_STREAM,
  seqpacket: K.SOCK_SEQPACKET,
  dgram: K.SOCK_DGRAM,
};
export function typeNumber(type: SocketType | undefined): number {
  const t = TYPES[type ?? 'stream'];
  if (t === undefined) throw invalidArg(`type must be 'stream', 'seqpacket' or 'dgram', got ${String(type)}`);
  return t;
}
export function typeName(n: number): SocketType {
  if (n === K.SOCK_STREAM) return 'stream';
  if (n === K.SOCK_SEQPACKET) return 'seqpacket';
  if (n === K.SOCK_DGRAM) return 'dgram';
  throw unsupported(`socket type ${n} is not supported`);
}

// ---- shared scratch ---------------------------------------------------------
// One set per thread: JavaScript runs one receive at a time, and everything is
// copied out of these before any user code runs.
const RECV_BATCH = 64;
const RBUF = Buffer.allocUnsafe(4 * 1024 * 1024);
const RMETA = new Int32Array(RECV_BATCH * K.RECV_META);
const RFDS = new Int32Array(32 * (MAX_FDS + 1));
const RADDR = Buffer.allocUnsafe(RECV_BATCH * K.RECV_ADDR);
const RSTATUS = new Int32Array(2);
const RCTL = Buffer.alloc(K.RECV_CTL); // its own (aligned) ArrayBuffer: larger than the pool

const SEND_BATCH = 64;
const SEND_INLINE = 64 * 1024; // messages up to this size are copied into SBUF
const SBUF = Buffer.allocUnsafe(256 * 1024);
const SMETA = new Int32Array(SEND_BATCH * K.SEND_META);
const SFDS = new Int32Array(SEND_BATCH * MAX_FDS);
const SRESULT = new Int32Array(2);

const EAGAIN = -11;
const EBADF = -9;
const EINTR = -4;
const ETOOMANYREFS = -109;
const ENOBUFS = -105;
const EPIPE = -32;
const ECONNRESET = -104;
const ENOTCONN = -107;
const ECONNREFUSED = -111;

const POLL_READ = 1;
const POLL_WRITE = 2;
const RETRY_MIN_MS = 1;
const RETRY_MAX_MS = 100;

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

type Waiter = { resolve: (m: Message | null) => void; reject: (e: Error) => void };

const RESOLVED = Promise.resolve();

export class UnixSocket extends EventEmitter {
  /** SOCK_STREAM, SOCK_SEQPACKET or SOCK_DGRAM. */
  readonly type: SocketType;
  /** Stream without framing. */
  readonly raw: boolean;
  #fd: number;
  #poll: PollHandle | null = null;
  #pollEvents = 0;
  #refed = true;
  #closed = false;
  #eof = false;
  #ended = false;
  #failed = false;
  readonly #framed: boolean;
  readonly #maxSize: number;
  readonly #hwm: number;
  readonly #maxFds: number;
  readonly #maxPerMsg: number;
  readonly #maxUnread: number | undefined;
  /** fds held by messages in #inbox. */
  #inboxFds = 0;
  readonly #decoder: FrameDecoder | null;
  // write side
  #queue: Pending[] = [];
  #flushScheduled = false;
  #writeBlocked = false;
  #retryTimer: NodeJS.Timeout | null = null;
  #retryDelay = RETRY_MIN_MS;
  #writeError: Error | null = null;
  #drainWaiters: (() => void)[] = [];
  // read side
  #inbox: (Message | Error)[] = [];
  #waiters: Waiter[] = [];
  #iterators = 0;
  #passCred: boolean;
  #disarmScheduled = false;
  #disarmNow = false;

  /** @internal Use UnixSocket.connect(), .pair(), .fromFd() or .datagram(). */
  constructor(fd: number, type: SocketType, options: SocketOptions = {}) {
    super();
    this.#fd = fd;
    this.type = type;
    this.raw = type === 'stream' ? Boolean(options.raw) : false;
    this.#framed = type === 'stream' && !this.raw;
    this.#maxSize = positiveInt(options.maxMessageSize, 'maxMessageSize',
      this.#framed ? 64 * 1024 * 1024 : 256 * 1024);
    if (!this.#framed && type !== 'stream' && this.#maxSize > RBUF.length) {
      throw new RangeError(`maxMessageSize for ${type} sockets is at most ${RBUF.length}`);
    }
    this.#hwm = positiveInt(options.highWaterMark, 'highWaterMark', 1024);
    this.#maxPerMsg = intInRange(options.maxFdsPerMessage, 'maxFdsPerMessage', 0, MAX_FDS, MAX_FDS);
    this.#maxUnread = options.maxUnreadFds === undefined ? undefined
      : intInRange(options.maxUnreadFds, 'maxUnreadFds', MAX_FDS, 0x7fffffff, MAX_FDS);
    this.#maxFds = positiveInt(options.maxBufferedFds, 'maxBufferedFds',
      this.#maxUnread === undefined ? defaultBufferedFds() : Math.max(defaultBufferedFds(), this.#maxUnread + 1));
    if (this.#maxUnread !== undefined && this.#maxUnread >= this.#maxFds) {
      throw new RangeError(`maxUnreadFds (${this.#maxUnread}) must be below maxBufferedFds (${this.#maxFds}): reading would pause before the cap is reached`);
    }
    this.#decoder = this.#framed
      ? new FrameDecoder({ maxPayload: this.#maxSize, maxHeldFds: positiveInt(options.maxHeldFds, 'maxHeldFds', 4096) })
      : null;
    this.#passCred = Boolean(options.passCredentials);
    if (this.#passCred) check(native.setPassCred(fd, true), 'setsockopt');
    this.on('newListener', (event) => {
      if (event === 'message') queueMicrotask(() => this.#pump());
    });
    this.on('removeListener', (event) => {
      if (event === 'message') queueMicrotask(() => this.#updatePoll());
    });
  }

  // ---- construction --------------------------------------------------------

  /** A connected pair (socketpair(2)). Hand one end to a child as an extra
   * stdio fd: `spawn(cmd, args, { stdio: ['inherit', 'inherit', 'inherit', b.fd] })`,
   * then close it here; the child adopts fd 3 with UnixSocket.fromFd(3). */
  static pair(options: SocketOptions = {}): [UnixSocket, UnixSocket] {
    const type = typeNumber(options.type);
    const out = new Int32Array(2);
    check(native.socketpair(type, out), 'socketpair');
    try {
      return [new UnixSocket(out[0]!, typeName(type), options), new UnixSocket(out[1]!, typeName(type), options)];
    } catch (err) {
      native.close(out[0]!);
      native.close(out[1]!);
      throw err;
    }
  }

  /** Connects to a listening socket (path, or '\0name' for abstract). A full
   * backlog (EAGAIN) is retried until `timeout` ms (default 10 s) pass. */
  static connect(address: string, options: SocketOptions & { timeout?: number; signal?: AbortSignal } = {}): Promise<UnixSocket> {
    // Bad arguments throw here, synchronously, before any system call.
    const type = typeNumber(options.type);
    const addr = encodeAddress(address);
    return UnixSocket.#connect(address, type, addr, options);
  }

  static async #connect(address: string, type: number, addr: Buffer, options: SocketOptions & { timeout?: number; signal?: AbortSignal }): Promise<UnixSocket> {
    const deadline = Date.now() + (options.timeout ?? 10_000);
    const fd = check(native.socket(type), 'socket');
    try {
      for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
        if (options.signal?.aborted) throw abortError(options.signal);
        const r = native.connect(fd, addr);
        if (r === 0) break;
        if (r !== EAGAIN && r !== EINTR) throw errnoError(r, 'connect', displayAddress(address));
        if (Date.now() >= deadline) throw new TimeoutError(`connect ${displayAddress(address)}: backlog full until timeout`);
        await new Promise((res) => setTimeout(res, delay));
      }
      return new UnixSocket(fd, typeName(type), options);
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  /** A SOCK_DGRAM socket, bound to `bind` when given (to receive, and so
   * that receivers see a sender address), connected to `connect` when given
   * (then send() needs no `to`). */
  static datagram(options: Omit<SocketOptions, 'type' | 'raw'> & { bind?: string; connect?: string; mode?: number } = {}): Promise<UnixSocket> {
    // Bad addresses throw here, synchronously, before any system call.
    if (options.bind !== undefined) encodeAddress(options.bind);
    if (options.connect !== undefined) encodeAddress(options.connect);
    return UnixSocket.#datagram(options);
  }

  static async #datagram(options: Omit<SocketOptions, 'type' | 'raw'> & { bind?: string; connect?: string; mode?: number }): Promise<UnixSocket> {
    const fd = check(native.socket(K.SOCK_DGRAM), 'socket');
    try {
      if (options.bind !== undefined) {
        const { bindPath } = await import('./server');
        await bindPath(fd, options.bind, options.mode ?? 0o600);
      }
      if (options.connect !== undefined) {
        check(native.connect(fd, encodeAddress(options.connect)), 'connect', displayAddress(options.connect));
      }
      return new UnixSocket(fd, 'dgram', options);
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  /**
   * Adopts an inherited or received socket fd (a child's fd 3, say). The new
   * UnixSocket owns it from now on and closes it; it is made non-blocking.
   */
  static fromFd(fd: number, options: Omit<SocketOptions, 'type'> = {}): UnixSocket {
    if (!Number.isInteger(fd) || fd < 0) throw invalidFd(`not an fd: ${String(fd)}`);
    const info = new Int32Array(3);
    check(native.sockInfo(fd, info), 'getsockopt');
    if (info[0] !== K.AF_UNIX) throw unsupported(`fd ${fd} is not an AF_UNIX socket`);
    if (info[2]) throw unsupported(`fd ${fd} is a listening socket: use UnixServer.fromFd()`);
    check(native.setBlocking(fd, false), 'fcntl');
    return new UnixSocket(fd, typeName(info[1]!), options);
  }

  // ---- introspection -------------------------------------------------------

  /** The socket's fd, still owned by this object (for spawn stdio, say). */
  get fd(): number {
    if (this.#closed) throw new SocketClosedError();
    return this.#fd;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Messages waiting for the kernel to take them. */
  get pendingSends(): number {
    return this.#queue.length;
  }

  /** SO_PEERCRED: the peer as of connect() or socketpair(), checked by the
   * kernel. It names whoever connected, not whoever holds the socket now. */
  peerCredentials(): Credentials {
    const out = new Int32Array(3);
    check(native.peerCred(this.fd, out), 'getsockopt');
    return { pid: out[0]!, uid: out[1]! >>> 0, gid: out[2]! >>> 0 };
  }

  get localAddress(): string {
    return this.#name(false);
  }

  get remoteAddress(): string {
    return this.#name(true);
  }

  #name(peer: boolean): string {
    const buf = Buffer.allocUnsafe(K.SUN_PATH_MAX);
    const n = native.sockName(this.fd, buf, peer);
    if (n < 0) {
      if (n === ENOTCONN) return '';
      throw errnoError(n, peer ? 'getpeername' : 'getsockname');
    }
    return decodeAddress(buf.subarray(0, n));
  }

  /** SO_PASSCRED on or off. */
  setPassCredentials(on: boolean): void {
    check(native.setPassCred(this.fd, on), 'setsockopt');
    this.#passCred = on;
  }

  ref(): this {
    this.#refed = true;
    if (this.#poll) native.pollRef(this.#poll, true);
    return this;
  }

  unref(): this {
    this.#refed = false;
    if (this.#poll) native.pollRef(this.#poll, false);
    return this;
  }

  // ---- sending ---------------------------------------------------------------

  /**
   * Sends one message. Settles once the kernel has taken it whole: a slow
   * reader makes this wait (backpressure), ETOOMANYREFS is waited out. Bad
   * arguments (and fds that are not open) throw at once; a socket that is
   * closed or broken rejects.
   */
  send(message: OutgoingMessage | string | Uint8Array): Promise<void> {
    const msg: OutgoingMessage = typeof message === 'string' || message instanceof Uint8Array ? { data: message } : message;
    if (msg === null || typeof msg !== 'object') throw invalidArg('send() takes a message object, a string or a Uint8Array');
    const data = toBytes(msg.data);
    const fdList = msg.fds ?? [];
    if (!Array.isArray(fdList)) throw invalidArg('fds must be an array');
    if (fdList.length > MAX_FDS) throw tooManyFds(fdList.length, MAX_FDS);
    const nfds = fdList.length;
    for (let i = 0; i < nfds; i++) SFDS[i] = fdNumber(fdList[i]!);
    const creds = credentialsOf(msg.credentials);
    let to: Buffer | null = null;
    if (msg.to !== undefined) {
      if (this.type !== 'dgram') throw unsupported(`'to' applies to datagram sockets, not ${this.type}`);
      to = encodeAddress(msg.to);
    }
    if (this.type === 'stream' && this.raw && nfds > 0 && data.length === 0) {
      throw invalidArg('a SOCK_STREAM message with fds needs at least one data byte');
    }
    if (this.#framed && data.length > this.#maxSize) {
      throw new RangeError(`message of ${data.length} bytes exceeds maxMessageSize ${this.#maxSize}`);
    }
    if (this.#closed) return Promise.reject(new SocketClosedError());
    if (this.#writeError) return Promise.reject(this.#writeError);

    // The bytes on the wire: the payload, behind a frame header when framed.
    // A framed message that may go out at once is built in the scratch
    // buffer; it gets a buffer of its own only if it has to wait.
    const fast = this.#queue.length === 0 && !this.#writeBlocked;
    const size = this.#framed ? HEADER_SIZE + data.length : data.length;
    let bytes: Buffer;
    if (!this.#framed) bytes = data;
    else {
      bytes = fast && size <= SEND_INLINE ? SBUF : Buffer.allocUnsafe(size);
      writeHeader(bytes, 0, nfds, data.length, creds ? FLAG_CREDENTIALS : 0);
      copyInto(bytes, HEADER_SIZE, data);
    }

    if (fast) {
      // Straight to the kernel.
      setMeta(0, size, nfds, creds);
      const r = native.sendmsgs(this.#fd, bytes, SMETA, SFDS, 1, to, SRESULT);
      if (r === 0) {
        this.#retryDelay = RETRY_MIN_MS;
        return RESOLVED;
      }
      if (bytes === SBUF && isRetryable(r)) bytes = Buffer.from(SBUF.subarray(0, size));
      if (r === EAGAIN && SRESULT[1]! > 0) {
        // A short stream write: the fds went with the first byte.
        return this.#enqueue(bytes, SRESULT[1]!, null, null, null);
      }
      if (!isRetryable(r)) {
        const err = this.#sendError(r, SFDS.subarray(0, nfds), msg.to);
        if (err instanceof TypeError) throw err;
        if (r === EPIPE || r === ECONNRESET || r === ENOTCONN) this.#writeError = err;
        return Promise.reject(err);
      }
    }
    // Queue behind others (or retry later). The fds stay borrowed until the
    // promise settles, as a buffer handed to fs.write() does.
    return this.#enqueue(bytes, 0, nfds > 0 ? SFDS.slice(0, nfds) : null, creds, to);
  }

  #enqueue(bytes: Buffer, off: number, fds: Int32Array | null, creds: Credentials | null, to: Buffer | null): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ bytes, off, fds, creds, to, resolve, reject });
      if (!this.#writeBlocked && !this.#flushScheduled) {
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
      const first = q[0]!;
      let count = 0;
      let data: Buffer;
      let foff = 0;
      if (first.bytes.length - first.off > SEND_INLINE) {
        data = first.bytes.subarray(first.off);
        foff = this.#fillFds(first, 0);
        setMeta(0, data.length, foff, first.creds);
        count = 1;
      } else {
        let doff = 0;
        while (count < q.length && count < SEND_BATCH) {
          const p = q[count]!;
          const len = p.bytes.length - p.off;
          if (len > SEND_INLINE || doff + len > SBUF.length || !sameAddr(p.to, first.to)) break;
          p.bytes.copy(SBUF, doff, p.off);
          const nfds = p.fds ? p.fds.length : 0;
          if (foff + nfds > SFDS.length) break;
          foff = this.#fillFds(p, foff);
          setMeta(count, len, nfds, p.creds);
          doff += len;
          count++;
        }
        data = SBUF.subarray(0, doff);
      }
      const r = native.sendmsgs(this.#fd, data, SMETA, SFDS, count, first.to, SRESULT);
      const done = SRESULT[0]!;
      for (let i = 0; i < done; i++) this.#settle(q.shift()!, null);
      if (r === 0) {
        this.#retryDelay = RETRY_MIN_MS;
        continue;
      }
      const head = q[0]!;
      if (SRESULT[1]! > 0) {
        // The head went in part; its fds went with its first byte.
        head.off += SRESULT[1]!;
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
      if (r === EPIPE || r === ECONNRESET || r === ENOTCONN) {
        this.#failWrites(errnoError(r, 'sendmsg'));
        return;
      }
      // This message alone is refused (EPERM credentials, EMSGSIZE, a
      // destination that is gone...): reject it and go on with the rest.
      q.shift();
      this.#settle(head, this.#sendError(r, head.fds ?? new Int32Array(0), undefined));
    }
    this.#maybeDrained();
  }

  #fillFds(p: Pending, foff: number): number {
    if (p.fds) {
      SFDS.set(p.fds, foff);
      foff += p.fds.length;
    }
    return foff;
  }

  #settle(p: Pending, err: Error | null): void {
    p.fds = null;
    if (err) p.reject(err);
    else p.resolve();
  }

  #block(timer: boolean): void {
    this.#writeBlocked = true;
    if (timer) {
      const delay = this.#retryDelay;
      this.#retryDelay = Math.min(this.#retryDelay * 2, RETRY_MAX_MS);
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null;
        this.#writeBlocked = false;
        this.#flush();
      }, delay);
      if (!this.#refed) this.#retryTimer.unref();
    } else {
      this.#updatePoll();
    }
  }

  #failWrites(err: Error): void {
    this.#writeError = err;
    const q = this.#queue;
    this.#queue = [];
    for (const p of q) this.#settle(p, err);
    this.#maybeDrained();
  }

  #maybeDrained(): void {
    if (this.#queue.length > 0) return;
    const w = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const f of w) f();
    if (this.#eof) this.#finishEnd();
  }

  #sendError(r: number, fds: Int32Array, to: string | undefined): Error {
    if (r === EBADF) {
      for (const fd of fds) {
        if (native.fdFlags(fd) < 0) return invalidFd(`fd ${fd} is not open`);
      }
    }
    return errnoError(r, 'sendmsg', to === undefined ? undefined : displayAddress(to));
  }

  /** Resolves once every queued message has gone to the kernel. */
  flush(): Promise<void> {
    if (this.#queue.length === 0) return RESOLVED;
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  // ---- receiving -------------------------------------------------------------

  /** Resolves with the next message. Rejects with FDPASS_ERR_SOCKET_CLOSED
   * once the peer has closed and everything was read. */
  receive(options: ReceiveOptions = {}): Promise<Message> {
    const { signal, timeout } = options;
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (this.#inbox.length > 0) return settleItem(this.#take());
    // EOF may have come in the same read as the messages just taken.
    if (this.#eof && !this.#closed) this.#finishEnd();
    if (this.#closed || this.#ended) return Promise.reject(new SocketClosedError('no more messages: the socket is closed'));
    return new Promise<Message>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const cleanup = () => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const waiter: Waiter = {
        resolve: (m) => {
          cleanup();
          if (m) resolve(m);
          else reject(new SocketClosedError('no more messages: the socket is closed'));
        },
        reject: (e) => {
          cleanup();
          reject(e);
        },
      };
      const drop = (err: Error) => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        cleanup();
        this.#updatePoll();
        reject(err);
      };
      const onAbort = () => drop(abortError(signal));
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeout !== undefined) timer = setTimeout(() => drop(new TimeoutError(`no message within ${timeout} ms`)), timeout);
      this.#waiters.push(waiter);
      this.#updatePoll();
    });
  }

  /**
   * Iterates over messages until the peer closes. Breaking out stops reading
   * (the socket stays open). A message-level error (a truncated control
   * message, say) is thrown by the loop; a new loop can carry on.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<Message> {
    let done = false;
    this.#iterators++;
    const finish = () => {
      if (!done) {
        done = true;
        this.#iterators--;
        this.#updatePoll();
      }
    };
    const next = (): Promise<IteratorResult<Message>> => {
      if (done) return Promise.resolve({ value: undefined, done: true });
      if (this.#inbox.length > 0) {
        const item = this.#take();
        if (item instanceof Error) {
          finish();
          return Promise.reject(item);
        }
        return Promise.resolve({ value: item, done: false });
      }
      if (this.#eof && !this.#closed) this.#finishEnd();
      if (this.#closed || this.#ended) {
        finish();
        return Promise.resolve({ value: undefined, done: true });
      }
      return new Promise((resolve, reject) => {
        this.#waiters.push({
          resolve: (m) => {
            if (m) resolve({ value: m, done: false });
            else {
              finish();
              resolve({ value: undefined, done: true });
            }
          },
          reject: (e) => {
            finish();
            reject(e);
          },
        });
        this.#updatePoll();
      });
    };
    return {
      next,
      return: () => {
        finish();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  #take(): Message | Error {
    const item = this.#inbox.shift()!;
    const full = this.#inbox.length === this.#hwm - 1 || this.#inboxFds >= this.#maxFds;
    if (item instanceof Message) this.#inboxFds -= item.fdCount;
    if (full) this.#updatePoll();
    // The fatal error was the last thing to hand out: close now rather than
    // when the consumer asks again (it may never).
    if (this.#failed && this.#inbox.length === 0) this.#finishEnd();
    return item;
  }

  #wantRead(): boolean {
    return !this.#closed && !this.#eof && this.#inbox.length < this.#hwm && this.#inboxFds < this.#maxFds &&
      (this.#waiters.length > 0 || this.#iterators > 0 || this.listenerCount('message') > 0);
  }

  #updatePoll(): void {
    if (this.#closed) return;
    let want = (this.#wantRead() ? POLL_READ : 0) | (this.#writeBlocked && !this.#retryTimer ? POLL_WRITE : 0);
    if (want === this.#pollEvents) return;
    if (this.#pollEvents & POLL_READ && !(want & POLL_READ) && this.#inbox.length < this.#hwm && !this.#eof && !this.#disarmNow) {
      // The last consumer is gone, but a request/response loop calls
      // receive() again as soon as its promise settles: keep watching until
      // the end of this loop turn rather than pay two epoll_ctl() calls per
      // message. (At most one wake-up finds nobody to read for.)
      if (!this.#disarmScheduled) {
        this.#disarmScheduled = true;
        setImmediate(() => {
          this.#disarmScheduled = false;
          this.#disarmNow = true;
          this.#updatePoll();
          this.#disarmNow = false;
        });
      }
      want |= POLL_READ;
      if (want === this.#pollEvents) return;
    }
    if (this.#poll === null) {
      if (want === 0) return;
      const h = native.pollOpen(this.#fd, (ev) => this.#onPoll(ev));
      if (typeof h === 'number') {
        this.#destroy(errnoError(h, 'uv_poll_init'));
        return;
      }
      this.#poll = h;
      if (!this.#refed) native.pollRef(h, false);
    }
    const r = native.pollSet(this.#poll, want);
    if (r < 0) {
      this.#destroy(errnoError(r, 'uv_poll_start'));
      return;
    }
    this.#pollEvents = want;
  }

  #onPoll(events: number): void {
    if (events < 0) {
      // libuv reports POLLERR (a pending socket error, ECONNRESET say) as
      // UV_EBADF and stops the watcher. Take the real error with SO_ERROR,
      // which clears it without consuming data: a reset peer breaks the
      // write side, and reading goes on to EOF; anything else is fatal.
      this.#pollEvents = 0;
      const e = native.sockError(this.#fd);
      if (e === ECONNRESET || e === EPIPE || e === ECONNREFUSED) {
        this.#failWrites(errnoError(e, 'sendmsg'));
      } else if (e < 0) {
        this.#destroy(errnoError(e, 'poll'));
        return;
      }
      events = POLL_READ;
    }
    if (events & POLL_WRITE && this.#writeBlocked && !this.#retryTimer) {
      this.#writeBlocked = false;
      this.#updatePoll();
      this.#flush();
    }
    if (events & POLL_READ) this.#read();
  }

  /** Drains the socket in batches (one native call per batch), then hands
   * what arrived to consumers. */
  #read(): void {
    for (let round = 0; round < 16 && this.#wantRead(); round++) {
      const dgram = this.type === 'dgram';
      const max = this.type === 'stream' ? 0 : this.#maxSize;
      // Room for what may still be buffered, but always for one full message.
      let room: number;
      if (this.#maxUnread === undefined) {
        room = Math.max(MAX_FDS + 1, Math.min(RFDS.length, this.#maxFds - this.#inboxFds));
      } else {
        // With a flood cap, read no further than the cap within one turn:
        // a consumer that keeps up takes the messages before the next one.
        // A turn that starts with the consumer still behind reads anyway;
        // if that crosses the cap, the peer is flooding (#overCap).
        const left = this.#maxUnread + 1 - this.#unreadFds();
        if (left < MAX_FDS + 1 && round > 0) break;
        room = Math.max(MAX_FDS + 1, Math.min(RFDS.length, left));
      }
      const fdsOut = room >= RFDS.length ? RFDS : RFDS.subarray(0, room);
      const n = native.recvmsgs(this.#fd, RBUF, RMETA, fdsOut, dgram ? RADDR : null, RECV_BATCH, max, RSTATUS, RCTL);
      if (n < 0) {
        if (n === EAGAIN) break;
        if (n === ECONNRESET && this.type !== 'dgram') {
          this.#onEof();
          break;
        }
        this.#destroy(errnoError(n, 'recvmsg'));
        return;
      }
      const stop = RSTATUS[0]!;
      const lateErr = RSTATUS[1]!;
      this.#takeBatch(n, dgram);
      if (this.#closed) return;
      if (this.#failed) break;
      if (stop === K.STOP_EOF) {
        this.#onEof();
        break;
      }
      if (lateErr < 0 && lateErr !== ECONNRESET) {
        this.#destroy(errnoError(lateErr, 'recvmsg'));
        return;
      }
      if (n < RECV_BATCH && this.type !== 'stream') break;
    }
    this.#pump();
  }

  #takeBatch(n: number, dgram: boolean): void {
    const stride = K.RECV_META;
    // One copy of the batch's bytes and fd numbers; messages are views.
    let used = 0;
    let nfdsAll = 0;
    for (let i = 0; i < n; i++) {
      used = RMETA[i * stride]! + RMETA[i * stride + 2]!;
      nfdsAll += RMETA[i * stride + 3]!;
    }
    const bytes = this.#decoder ? RBUF : Buffer.from(RBUF.subarray(0, used));
    const fdsAll = nfdsAll > 0 ? RFDS.slice(0, nfdsAll) : null;
    let foff = 0;
    for (let i = 0; i < n; i++) {
      const m = i * stride;
      const off = RMETA[m]!;
      const len = RMETA[m + 1]!;
      const stored = RMETA[m + 2]!;
      const nfds = RMETA[m + 3]!;
      const flags = RMETA[m + 4]!;
      const fdStart = foff;
      foff += nfds;
      if (this.#failed || this.#closed) {
        // The connection broke earlier in this batch: what came after it is
        // never delivered, and its fds are closed now, not at close().
        if (nfds > 0) native.closeMany(fdsAll!, fdStart, nfds);
        continue;
      }
      const creds = RMETA[m + 5] ? { pid: RMETA[m + 6]!, uid: RMETA[m + 7]! >>> 0, gid: RMETA[m + 8]! >>> 0 } : undefined;
      const ctrunc = (flags & K.MSG_CTRUNC) !== 0;
      // More fds than allowed (with MSG_CTRUNC, the peer sent more than
      // arrived): closed before anything else looks at them.
      let unexpected: UnexpectedFdsError | null = null;
      if (nfds > this.#maxPerMsg || (ctrunc && this.#maxPerMsg < MAX_FDS && nfds >= this.#maxPerMsg)) {
        if (nfds > 0) native.closeMany(fdsAll!, fdStart, nfds);
        unexpected = new UnexpectedFdsError(nfds, this.#maxPerMsg, 'this socket (maxFdsPerMessage)');
        if (!this.#decoder) {
          if (dgram) this.#inbox.push(unexpected);
          else this.#destroy(unexpected);
          continue;
        }
      }
      if (this.#decoder) {
        // On a stream the read may start with whole frames sent before the
        // offending one: the decoder still gets the bytes, with the fds
        // replaced by an empty truncated batch that marks where they were.
        this.#takeFrames(RBUF.subarray(off, off + stored), nfds > 0 && !unexpected ? fdsAll!.subarray(fdStart, fdStart + nfds) : null,
          ctrunc || unexpected !== null, creds, nfdsAll - foff, unexpected);
        continue;
      }
      if (ctrunc || len > stored || flags & K.MSG_TRUNC) {
        if (nfds > 0) native.closeMany(fdsAll!, fdStart, nfds);
        this.#inbox.push(ctrunc ? new ControlTruncatedError(nfds, undefined, bytes.subarray(off, off + stored)) : new MessageTruncatedError(len, this.#maxSize));
        continue;
      }
      if (nfds > 0 && this.#overCap(nfds)) {
        native.closeMany(fdsAll!, fdStart, nfds);
        if (dgram) this.#inbox.push(new FdFloodError(this.#maxUnread!, nfds));
        else this.#flood(nfdsAll - fdStart);
        continue;
      }
      const address = dgram ? decodeAddress(RADDR.subarray(i * K.RECV_ADDR, i * K.RECV_ADDR + RMETA[m + 9]!)) : undefined;
      this.#inbox.push(new Message(bytes, off, stored, fdsAll, fdStart, nfds, creds, address));
      this.#inboxFds += nfds;
    }
  }

  /** Received fds not yet taken by a consumer. */
  #unreadFds(): number {
    return this.#inboxFds + (this.#decoder?.heldFds ?? 0);
  }

  /** Whether `more` fds on top of those unread would cross maxUnreadFds. */
  #overCap(more: number): boolean {
    return this.#maxUnread !== undefined && this.#unreadFds() + more > this.#maxUnread;
  }

  /**
   * The peer flooded past maxUnreadFds. Its backlog is dropped with it: the
   * messages still waiting unread are closed now (keeping them would only
   * keep the flood's fds), then the error is all the consumer gets, and the
   * connection is shut down. `closing`: fds past the cap about to be closed.
   */
  #flood(closing: number): void {
    let dropped = 0;
    for (const item of this.#inbox) {
      if (item instanceof Message) {
        dropped += item.fdCount;
        item.close();
      }
    }
    this.#inbox = [];
    this.#inboxFds = 0;
    this.#destroy(new FdFloodError(this.#maxUnread!, closing + dropped));
  }

  /**
   * One read of a framed stream. `later`: fds of this receive batch that come
   * after this read. `unexpected`: the read brought more fds than
   * maxFdsPerMessage (closed already); the frames before the one they came
   * with are delivered, then this error.
   */
  #takeFrames(chunk: Buffer, fds: Int32Array | null, ctrunc: boolean, creds: Credentials | undefined, later: number,
    unexpected: UnexpectedFdsError | null): void {
    const dec = this.#decoder!;
    const frames = dec.push(chunk, fds ?? undefined, ctrunc, creds);
    for (let k = 0; k < frames.length; k++) {
      const f = frames[k]!;
      const n = f.fds.length;
      if (this.#failed) {
        if (n) native.closeMany(f.fds, 0, n);
        continue;
      }
      if (f.truncated && unexpected) {
        this.#destroy(unexpected);
        continue;
      }
      if (f.truncated) {
        if (n) native.closeMany(f.fds, 0, n);
        this.#inbox.push(new ControlTruncatedError(n, f.expectedFds, f.payload));
        continue;
      }
      if (n > 0 && this.#overCap(n)) {
        let closed = later + dec.heldFds;
        for (let j = k; j < frames.length; j++) closed += frames[j]!.fds.length;
        native.closeMany(f.fds, 0, n);
        this.#flood(closed);
        continue;
      }
      const credentials = f.flags & FLAG_CREDENTIALS ? f.credentials : undefined;
      this.#inbox.push(new Message(f.payload, 0, f.payload.length, n ? f.fds : null, 0, n, credentials));
      this.#inboxFds += n;
    }
    if (this.#failed) return;
    if (unexpected) this.#destroy(unexpected);
    else if (dec.error !== undefined) this.#destroy(new ProtocolError(dec.errorReason!, dec.error));
    else if (this.#overCap(0)) this.#flood(later + dec.heldFds);
  }

  /** Hands buffered messages to waiting receivers, iterators and 'message'
   * listeners, in order. */
  #pump(): void {
    while (this.#inbox.length > 0) {
      const head = this.#inbox[0]!;
      const w = this.#waiters.shift();
      if (w) {
        this.#take();
        if (head instanceof Error) w.reject(head);
        else w.resolve(head);
        continue;
      }
      if (this.#iterators > 0 || this.listenerCount('message') === 0) break;
      this.#take();
      if (head instanceof Error) this.emit('error', head);
      else this.emit('message', head);
    }
    if (this.#eof && this.#inbox.length === 0) this.#finishEnd();
    this.#updatePoll();
  }

  #onEof(): void {
    this.#eof = true;
    const held = this.#decoder?.takeHeldFds() ?? [];
    if (this.#decoder && (this.#decoder.bufferedBytes > 0 || held.length > 0)) {
      if (held.length) native.closeMany(Int32Array.from(held), 0, held.length);
      this.#inbox.push(new ProtocolError('eof-mid-frame', `peer closed in the middle of a frame (${this.#decoder.bufferedBytes} bytes, ${held.length} fds discarded)`));
    }
  }

  /** After EOF once every message was handed out: 'end', then close when
   * queued sends are done. */
  #finishEnd(): void {
    if (this.#ended || this.#inbox.length > 0) return;
    this.#ended = true;
    for (const w of this.#waiters.splice(0)) w.resolve(null);
    if (!this.#failed) this.emit('end');
    if (this.#queue.length === 0) this.close();
    else this.#drainWaiters.push(() => this.close());
  }

  // ---- teardown ------------------------------------------------------------

  /** Sends what is queued, then closes. */
  async end(): Promise<void> {
    if (this.#closed) return;
    await this.flush();
    this.close();
  }

  /**
   * Closes the socket now. Queued sends reject with FDPASS_ERR_SOCKET_CLOSED
   * and their fd copies are closed; received messages not yet taken are
   * closed with their fds. Safe to call twice.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    if (this.#poll) native.pollClose(this.#poll);
    this.#poll = null;
    native.close(this.#fd);
    const err = new SocketClosedError('socket closed before the message was sent');
    for (const p of this.#queue.splice(0)) this.#settle(p, err);
    for (const f of this.#drainWaiters.splice(0)) f();
    for (const item of this.#inbox.splice(0)) if (item instanceof Message) item.close();
    this.#inboxFds = 0;
    const held = this.#decoder?.takeHeldFds() ?? [];
    if (held.length) native.closeMany(Int32Array.from(held), 0, held.length);
    for (const w of this.#waiters.splice(0)) w.resolve(null);
    process.nextTick(() => this.emit('close'));
  }

  /**
   * A fatal error: stop reading and writing, hand out the messages that
   * arrived before it, then the error itself, then close. With no consumer
   * at all the error is emitted at once. fds that arrived after the error
   * are closed at once.
   */
  #destroy(err: Error): void {
    if (this.#closed || this.#failed) return;
    this.#failed = true;
    // A peer that broke the protocol (or a limit) is cut off now: it sees
    // EOF and its writes fail, even while our consumer has yet to get round
    // to the messages before the error.
    if (err instanceof ProtocolError) native.shutdown(this.#fd, K.SHUT_RDWR);
    const consumers = this.#waiters.length + this.#iterators + this.listenerCount('message');
    // Queue the error before failing the writes: with the inbox empty,
    // #failWrites() would end the socket as if at a clean EOF.
    if (consumers > 0) this.#inbox.push(err);
    this.#eof = true;
    // fds held for frames that will never complete are closed now, not when
    // the consumer gets round to the error.
    const held = this.#decoder?.takeHeldFds() ?? [];
    if (held.length) native.closeMany(Int32Array.from(held), 0, held.length);
    this.#failWrites(err);
    if (consumers === 0) {
      process.nextTick(() => this.emit('error', err));
      this.close();
      return;
    }
    this.#pump();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.end();
  }
}

function setMeta(i: number, len: number, nfds: number, creds: Credentials | null): void {
  const m = i * K.SEND_META;
  SMETA[m] = len;
  SMETA[m + 1] = nfds;
  SMETA[m + 2] = creds ? 1 : 0;
  if (creds) {
    SMETA[m + 3] = creds.pid;
    SMETA[m + 4] = creds.uid | 0;
    SMETA[m + 5] = creds.gid | 0;
  }
}

/** dst.set(src, off), with a plain loop for the small payloads where the
 * call costs more than the copy. */
function copyInto(dst: Buffer, off: number, src: Buffer): void {
  const n = src.length;
  if (n <= 64) for (let i = 0; i < n; i++) dst[off + i] = src[i]!;
  else dst.set(src, off);
}

function isRetryable(r: number): boolean {
  return r === EAGAIN || r === ETOOMANYREFS || r === ENOBUFS;
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

function intInRange(v: number | undefined, name: string, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name} must be an integer from ${min} to ${max}, got ${String(v)}`);
  return v;
}

/** 2048, or a quarter of the soft RLIMIT_NOFILE when that is lower (at
 * least one full message's worth), read once: Node raises the soft limit
 * to the hard one at start-up, and later changes are rare. */
let bufferedFdsDefault = 0;
function defaultBufferedFds(): number {
  if (bufferedFdsDefault === 0) {
    const limit = native.nofileLimit();
    bufferedFdsDefault = limit > 0 ? Math.max(MAX_FDS + 1, Math.min(2048, Math.floor(limit / 4))) : 2048;
  }
  return bufferedFdsDefault;
}

function positiveInt(v: number | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${name} must be a positive integer, got ${String(v)}`);
  return v;
}

function settleItem(item: Message | Error): Promise<Message> {
  return item instanceof Error ? Promise.reject(item) : Promise.resolve(item);
}

export type { ErrnoError };
