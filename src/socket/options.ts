/**
 * Socket options: what a UnixSocket (and the connections a UnixServer
 * accepts) may be told, checked once and resolved to the limits the send
 * queue and the receiver work with. Bad values are RangeErrors thrown before
 * any system call.
 */
import { native, K } from '../native';
import { invalidArg, unsupported } from '../errors';
import type { AllowList } from './allow';
import { MAX_FDS } from './frame';

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

export interface ConnectOptions extends SocketOptions {
  /** Milliseconds to keep retrying while the listener's backlog is full
   * (default 10 s); then FDPASS_ERR_TIMEOUT. */
  timeout?: number;
  signal?: AbortSignal;
}

export interface DatagramOptions extends Omit<SocketOptions, 'type' | 'raw'> {
  /** Bind to this address: to receive, and so that receivers see a sender
   * address. */
  bind?: string;
  /** Connect to this address: send() then needs no `to`. */
  connect?: string;
  /** File mode of a bound path, default 0o600. */
  mode?: number;
  /**
   * Whose datagrams to take, by SCM_CREDENTIALS (SO_PASSCRED is turned on
   * for it, before bind()); see UnixServer's `allow`. A datagram from anyone
   * else is dropped as it is read: its fds are closed before anything sees
   * them, it is counted (socket.refusedCount) and the socket emits
   * 'refused' (credentials, PeerRefusedError); reading goes on.
   * Default: for a socket bound to an abstract name (which has no
   * permissions: anyone can send to it) and not connected, only this
   * process's uid and root; otherwise nobody is filtered (a path is guarded
   * by its file mode; a connected socket takes datagrams from its peer only).
   * A socket that talks to a daemon of another uid from an abstract name
   * must allow that uid.
   */
  allow?: AllowList;
}

/** The options of one socket, checked and with defaults filled in. */
export interface SocketLimits {
  readonly type: SocketType;
  /** Stream without framing. */
  readonly raw: boolean;
  /** A stream speaking the fdpass framing. */
  readonly framed: boolean;
  readonly passCredentials: boolean;
  readonly maxMessageSize: number;
  readonly maxHeldFds: number;
  readonly highWaterMark: number;
  readonly maxBufferedFds: number;
  readonly maxFdsPerMessage: number;
  readonly maxUnreadFds: number | undefined;
}

/** The largest packet a SEQPACKET or DGRAM socket can take in one read: the
 * size of the receiver's buffer. */
export const MAX_PACKET = 4 * 1024 * 1024;

const TYPES: Record<SocketType, number> = {
  stream: K.SOCK_STREAM,
  seqpacket: K.SOCK_SEQPACKET,
  dgram: K.SOCK_DGRAM,
};

/** SOCK_* for a type name (default 'stream'). */
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

/** Checks `options` for a socket of `type` and fills in the defaults. */
export function resolveOptions(type: SocketType, options: SocketOptions): SocketLimits {
  const raw = type === 'stream' ? Boolean(options.raw) : false;
  const framed = type === 'stream' && !raw;
  const maxMessageSize = positiveInt(options.maxMessageSize, 'maxMessageSize', framed ? 64 * 1024 * 1024 : 256 * 1024);
  if (type !== 'stream' && maxMessageSize > MAX_PACKET) {
    throw new RangeError(`maxMessageSize for ${type} sockets is at most ${MAX_PACKET}`);
  }
  const highWaterMark = positiveInt(options.highWaterMark, 'highWaterMark', 1024);
  const maxFdsPerMessage = intInRange(options.maxFdsPerMessage, 'maxFdsPerMessage', 0, MAX_FDS, MAX_FDS);
  const maxUnreadFds = options.maxUnreadFds === undefined ? undefined
    : intInRange(options.maxUnreadFds, 'maxUnreadFds', MAX_FDS, 0x7fffffff, MAX_FDS);
  const maxBufferedFds = positiveInt(options.maxBufferedFds, 'maxBufferedFds',
    maxUnreadFds === undefined ? defaultBufferedFds() : Math.max(defaultBufferedFds(), maxUnreadFds + 1));
  if (maxUnreadFds !== undefined && maxUnreadFds >= maxBufferedFds) {
    throw new RangeError(`maxUnreadFds (${maxUnreadFds}) must be below maxBufferedFds (${maxBufferedFds}): reading would pause before the cap is reached`);
  }
  const maxHeldFds = positiveInt(options.maxHeldFds, 'maxHeldFds', 4096);
  return {
    type, raw, framed, passCredentials: Boolean(options.passCredentials),
    maxMessageSize, maxHeldFds, highWaterMark, maxBufferedFds, maxFdsPerMessage, maxUnreadFds,
  };
}

export function positiveInt(v: number | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${name} must be a positive integer, got ${String(v)}`);
  return v;
}

export function intInRange(v: number | undefined, name: string, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name} must be an integer from ${min} to ${max}, got ${String(v)}`);
  return v;
}

/** 2048, or a quarter of the soft RLIMIT_NOFILE when that is lower (at
 * least one full message's worth), read once: Node raises the soft limit
 * to the hard one at start-up, and later changes are rare. */
let bufferedFdsDefault = 0;
export function defaultBufferedFds(): number {
  if (bufferedFdsDefault === 0) {
    const limit = native.nofileLimit();
    bufferedFdsDefault = limit > 0 ? Math.max(MAX_FDS + 1, Math.min(2048, Math.floor(limit / 4))) : 2048;
  }
  return bufferedFdsDefault;
}
