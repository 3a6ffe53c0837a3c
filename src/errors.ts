/**
 * Errors, shaped the way Node users expect them.
 *
 * - A failed system call becomes an ErrnoError like Node's own: negative
 *   `errno`, `code` from util.getSystemErrorName ('EMFILE'), `syscall`
 *   ('recvmsg'), `path` where there is one, message "recvmsg EMFILE".
 * - A library condition is an FdpassError subclass with a stable `code`
 *   (FDPASS_ERR_*) that is never renamed; the underlying error is its `cause`.
 * - Bad arguments are TypeError/RangeError thrown before any system call; they
 *   carry an FDPASS_ERR_* code too.
 */
import * as util from 'node:util';

export interface ErrnoError extends Error {
  errno: number;
  code: string;
  syscall: string;
  path?: string;
}

/** Builds a Node-style system error from a negative errno. */
export function errnoError(errno: number, syscall: string, path?: string): ErrnoError {
  const code = util.getSystemErrorName(errno);
  const err = new Error(path === undefined ? `${syscall} ${code}` : `${syscall} ${code} ${path}`) as ErrnoError;
  err.errno = errno;
  err.code = code;
  err.syscall = syscall;
  if (path !== undefined) err.path = path;
  Error.captureStackTrace(err, errnoError);
  return err;
}

/** An fs error as a Node-style system error saying what `what` failed on
 * ("read ENOENT /etc/x.key"); an error without an errno is passed on as it is. */
export function asSystemError(err: unknown, what: string, file: string): unknown {
  const errno = (err as NodeJS.ErrnoException).errno;
  return typeof errno === 'number' && errno < 0 ? errnoError(errno, what, file) : err;
}

/** Throws for a negative native result; returns non-negative ones. */
export function check(ret: number, syscall: string, path?: string): number {
  if (ret < 0) throw errnoError(ret, syscall, path);
  return ret;
}

export class FdpassError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** The socket was closed (by us) before or while the operation ran. */
export class SocketClosedError extends FdpassError {
  constructor(what = 'socket is closed', options?: { cause?: unknown }) {
    super('FDPASS_ERR_SOCKET_CLOSED', what, options);
  }
}

/** The control message was truncated (MSG_CTRUNC): the receiver had no room
 * for the fds (RLIMIT_NOFILE) or the buffer was short. The fds that did
 * arrive were closed. */
export class ControlTruncatedError extends FdpassError {
  readonly received: number;
  /** The message's bytes, which arrived whole (only fds were lost), so that
   * a consumer can tell which message failed: a Channel fails the request
   * whose reply this was. Undefined where fdpass does not have them. */
  readonly data: Buffer | undefined;
  constructor(received: number, expected?: number, data?: Buffer) {
    super('FDPASS_ERR_CONTROL_TRUNCATED',
      `control message truncated (MSG_CTRUNC): ${received} fd(s) arrived` +
      (expected === undefined ? '' : ` of ${expected}`) +
      '; they were closed (is the receiver at RLIMIT_NOFILE?)');
    this.received = received;
    this.data = data;
  }
}

/** A datagram or packet was larger than the receive buffer (MSG_TRUNC). */
export class MessageTruncatedError extends FdpassError {
  readonly size: number;
  constructor(size: number, limit: number) {
    super('FDPASS_ERR_MESSAGE_TRUNCATED',
      `message of ${size} bytes exceeds maxMessageSize ${limit}; it was discarded and its fds closed`);
    this.size = size;
  }
}

/**
 * What exactly a peer did wrong, for programs: stable strings, never renamed
 * (the message is prose for people and may change).
 * - framing (docs/protocol.md): 'bad-magic', 'bad-flags', 'too-many-fds'
 *   (a header claims more than 253), 'too-large' (payload over the limit),
 *   'fds-missing' (a header claims fds, none came with its first byte),
 *   'fd-count-mismatch', 'stray-fds' (fds on a byte where no frame starts),
 *   'held-fds' (too many fds held for incomplete frames), 'eof-mid-frame';
 * - limits this side set: 'unexpected-fds', 'fd-flood';
 * - messages above the framing: 'bad-channel-message', 'bad-worker-message'.
 */
export type ProtocolReason =
  | 'bad-magic' | 'bad-flags' | 'too-many-fds' | 'too-large' | 'fds-missing' | 'fd-count-mismatch'
  | 'stray-fds' | 'held-fds' | 'eof-mid-frame'
  | 'unexpected-fds' | 'fd-flood'
  | 'bad-channel-message' | 'bad-worker-message';

/** The peer broke the protocol; the connection is closed. `reason` says how,
 * for programs. The subclasses below are the peer breaking a limit this side
 * set, with codes of their own; `instanceof ProtocolError` holds for all of
 * them. */
export class ProtocolError extends FdpassError {
  readonly reason: ProtocolReason;
  constructor(reason: ProtocolReason, message: string, code = 'FDPASS_ERR_PROTOCOL', options?: { cause?: unknown }) {
    super(code, `protocol error: ${message}`, options);
    this.reason = reason;
  }
}

/**
 * The peer attached more fds to one message than this side takes
 * (`maxFdsPerMessage` on the socket, `maxFds` on a Channel handler). They
 * were closed the moment they arrived, before any user code saw them, and
 * the connection is closed (a datagram socket drops just that datagram).
 */
export class UnexpectedFdsError extends ProtocolError {
  /** fds that arrived with the message (the peer may have sent more). */
  readonly received: number;
  readonly limit: number;
  constructor(received: number, limit: number, what: string) {
    super('unexpected-fds', `peer sent ${received} fd(s) in one message; ${what} takes ${limit === 0 ? 'none' : `at most ${limit}`}; ` +
      'they were closed', 'FDPASS_ERR_UNEXPECTED_FDS');
    this.received = received;
    this.limit = limit;
  }
}

/**
 * The peer sent fds faster than the consumer took them, past `maxUnreadFds`:
 * every fd it left unread was closed and the connection is closed (a
 * datagram socket drops the datagrams over the cap instead).
 */
export class FdFloodError extends ProtocolError {
  readonly limit: number;
  /** fds closed unread because of the flood. */
  readonly closed: number;
  constructor(limit: number, closed: number) {
    super('fd-flood', `peer flooded fds: more than maxUnreadFds ${limit} were waiting unread; the ${closed} fd(s) it left unread were closed`,
      'FDPASS_ERR_FD_FLOOD');
    this.limit = limit;
    this.closed = closed;
  }
}

/** What is wrong with a channel message that does not decode (codec.ts):
 * too short for its header, an unknown version or kind, a type length out
 * of range or past the end, a type that is not UTF-8, a body that is not
 * JSON, a request or reply with id 0. */
export type ChannelDecodeProblem = 'short' | 'version' | 'kind' | 'type-length' | 'type-utf8' | 'json' | 'no-id';

/** A channel message that does not decode: reason 'bad-channel-message',
 * and `problem` says which rule it broke. The channel is closed. */
export class ChannelDecodeError extends ProtocolError {
  readonly problem: ChannelDecodeProblem;
  constructor(problem: ChannelDecodeProblem, message: string) {
    super('bad-channel-message', `bad channel message: ${message}`);
    this.problem = problem;
  }
}

/** A peer that the allow-list refused. */
export class PeerRefusedError extends FdpassError {
  constructor(message: string) {
    super('FDPASS_ERR_PEER_REFUSED', message);
  }
}

/**
 * After bind(), the path no longer names the socket file this process
 * created (someone who can write to the directory swapped it for a symlink
 * or another file, or removed it). Nothing at the path was changed or
 * removed, and the socket was closed.
 */
export class SocketFileReplacedError extends FdpassError {
  readonly path: string;
  constructor(path: string, found: string) {
    super('FDPASS_ERR_SOCKET_FILE_REPLACED',
      `bind ${path}: the socket file was replaced before its mode was set (found ${found}); ` +
      'someone else can write to its directory: use a directory only you can write to');
    this.path = path;
  }
}

/** A wait ran out of time. */
export class TimeoutError extends FdpassError {
  constructor(message: string) {
    super('FDPASS_ERR_TIMEOUT', message);
  }
}

/** The channel peer answered a request with an error. */
export class RemoteError extends FdpassError {
  readonly remoteCode: string | undefined;
  constructor(message: string, remoteCode?: string) {
    super('FDPASS_ERR_REMOTE', message);
    this.remoteCode = remoteCode;
  }
}

/** The channel got a message of a type nobody handles, or of a bad shape. */
export class ChannelMessageError extends FdpassError {
  constructor(message: string) {
    super('FDPASS_ERR_CHANNEL_MESSAGE', message);
  }
}

/** No handler for a request's type: what a Channel answers such a request
 * with (the requester sees it as a RemoteError whose remoteCode is this
 * code). */
export class NoHandlerError extends FdpassError {
  readonly type: string;
  constructor(type: string) {
    super('FDPASS_ERR_NO_HANDLER', `no handler for '${type}'`);
    this.type = type;
  }
}

/** This runtime cannot run fdpass (not Linux, Node.js too old, a runtime
 * whose Node-API or libuv the addon cannot use). Thrown at load. */
export class UnsupportedRuntimeError extends FdpassError {
  constructor(message: string) {
    super('FDPASS_ERR_UNSUPPORTED_RUNTIME', message);
  }
}

/** The native addon could not be loaded (not built, or built for another
 * platform); `cause` is the loader's error. */
export class AddonLoadError extends FdpassError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('FDPASS_ERR_ADDON_LOAD', message, options);
  }
}

/** `fdpass serve`: the configuration cannot work (a TLS listener without a
 * certificate, say). Nothing was started. The codes: NO_CERT (a tls
 * listener and no --cert/--key), BAD_CERT (a certificate and key that TLS
 * refuses; `cause` says why), NO_SYSTEMD_FDS, BAD_APP (an APP that exports
 * nothing servable), NO_SERVER (a listener the worker has no server for),
 * NOT_A_WORKER (Worker.fromPrimary() in a process the primary did not start);
 * for the workers' user (--user USER[:GROUP]): NO_SUCH_USER, NO_SUCH_GROUP,
 * CANNOT_SWITCH_USER (the primary is not root, so its workers cannot run as
 * another user). */
export class ServeConfigError extends FdpassError {
  constructor(code: 'FDPASS_ERR_NO_CERT' | 'FDPASS_ERR_BAD_CERT' | 'FDPASS_ERR_NO_SYSTEMD_FDS' | 'FDPASS_ERR_BAD_APP' | 'FDPASS_ERR_NO_SERVER' | 'FDPASS_ERR_NOT_A_WORKER'
    | 'FDPASS_ERR_NO_SUCH_USER' | 'FDPASS_ERR_NO_SUCH_GROUP' | 'FDPASS_ERR_CANNOT_SWITCH_USER',
    message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** A worker of `fdpass serve` did not become ready (it exited, was too
 * slow, or could not be spawned). */
export class WorkerStartError extends FdpassError {
  readonly slot: number;
  constructor(slot: number, pid: number | undefined, reason: string) {
    super('FDPASS_ERR_WORKER_START', `worker ${slot} (pid ${pid}) failed to start: ${reason}`);
    this.slot = slot;
  }
}

/** A directory that fdpass would trust with a socket (the default control
 * directory of `fdpass serve`) is not safe: not a real directory, owned by
 * another uid, or writable by group or others. Whoever can write there can
 * put a socket of their own in its place. */
export class UntrustedDirectoryError extends FdpassError {
  readonly path: string;
  constructor(path: string, problems: readonly string[]) {
    super('FDPASS_ERR_UNTRUSTED_DIR', `control directory ${path} is ${problems.join(' and ')}: refusing it`);
    this.path = path;
  }
}

/** Why a takeover over the `_getsocks` protocol failed (TakeoverError's
 * `reason`, stable for programs): 'connect' (nothing listens at the path),
 * 'peer' (the listening process is another uid's), 'no-listeners' (the
 * peer closed before the count: nothing exposed, or HAProxy without
 * `expose-fd listeners`), 'bad-count', 'too-many-fds', 'missing-fds' (fewer
 * fds than announced), 'bad-records', 'timeout', 'closed' (the peer closed
 * mid-way or the socket failed). */
export type TakeoverReason = 'connect' | 'peer' | 'no-listeners' | 'bad-count' | 'too-many-fds' | 'missing-fds' | 'bad-records' | 'timeout' | 'closed';

/** Taking listeners over from another process (`fdpass serve --takeover`)
 * failed; every fd received was closed before this was thrown. */
export class TakeoverError extends FdpassError {
  readonly reason: TakeoverReason;
  constructor(reason: TakeoverReason, message: string, options?: { cause?: unknown }) {
    super('FDPASS_ERR_TAKEOVER', message, options);
    this.reason = reason;
  }
}

/** `fdpass upgrade` (or SIGUSR2) could not replace the primary: the new one
 * could not be started, exited, or did not take over in time. The old
 * primary serves on. */
export class UpgradeError extends FdpassError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('FDPASS_ERR_UPGRADE', message, options);
  }
}

type ArgErrorCtor = typeof TypeError | typeof RangeError;
function argError(Ctor: ArgErrorCtor, code: string, message: string): Error & { code: string } {
  const e = new Ctor(message) as Error & { code: string };
  e.code = code;
  return e;
}

export const invalidArg = (message: string) => argError(TypeError, 'FDPASS_ERR_INVALID_ARG', message);
export const invalidFd = (message: string) => argError(TypeError, 'FDPASS_ERR_INVALID_FD', message);
export const tooManyFds = (n: number, max: number) =>
  argError(RangeError, 'FDPASS_ERR_TOO_MANY_FDS', `${n} fds in one message; the kernel allows at most ${max} (SCM_MAX_FD)`);
export const pathTooLong = (addr: string, n: number, max: number) =>
  argError(RangeError, 'FDPASS_ERR_PATH_TOO_LONG', `address ${JSON.stringify(addr)} is ${n} bytes; sun_path holds at most ${max}`);
export const unsupported = (message: string) => argError(TypeError, 'FDPASS_ERR_UNSUPPORTED', message);

/** Node's AbortError shape: name 'AbortError', code 'ABORT_ERR'. */
export function abortError(signal?: AbortSignal): Error {
  const e = new Error('The operation was aborted', { cause: signal?.reason }) as Error & { code: string };
  e.name = 'AbortError';
  e.code = 'ABORT_ERR';
  return e;
}
