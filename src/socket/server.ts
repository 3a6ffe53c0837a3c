/**
 * UnixServer: a listening AF_UNIX socket (SOCK_STREAM or SOCK_SEQPACKET).
 *
 * A path socket is created with mode 0600 (option `mode`) without a window in
 * which it has looser permissions. A socket file left by a dead process is
 * replaced; a live one is EADDRINUSE; a file that is not a socket is never
 * touched.
 *
 * Peers can be refused by credentials (SO_PEERCRED) before a byte is read.
 */
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import { native, K, type PollHandle } from '../native';
import { errnoError, check, invalidArg, unsupported, abortError, invalidFd, SocketClosedError, PeerRefusedError } from '../errors';
import { encodeAddress, isAbstract, displayAddress } from './address';
import { UnixSocket, typeNumber, typeName, type SocketOptions, type SocketType } from './socket';
import type { Credentials } from './frame';

export type AllowList =
  | ((peer: Credentials) => boolean)
  | { uids?: readonly number[]; gids?: readonly number[]; check?: (peer: Credentials) => boolean };

export interface ServerOptions extends SocketOptions {
  /** 'stream' (default) or 'seqpacket'. */
  type?: SocketType;
  /** listen(2) backlog, default 511. */
  backlog?: number;
  /** File mode of a path socket, default 0o600. */
  mode?: number;
  /**
   * Who may connect, by SO_PEERCRED. A peer passes if its uid is in `uids`
   * or its gid in `gids` (when given) and `check` returns true (when given).
   * Default: anyone who can reach a path socket (its file mode guards it);
   * for an abstract name, which has no permissions, only this process's uid
   * and root.
   */
  allow?: AllowList;
}

const EADDRINUSE = -98;
const ECONNREFUSED = -111;
const EAGAIN = -11;
const EMFILE = -24;
const ENFILE = -23;
const ENOBUFS = -105;
const ENOMEM = -12;
const ACCEPT_BATCH = new Int32Array(64);
const CRED = new Int32Array(3);

type Waiter = { resolve: (s: UnixSocket | null) => void; reject: (e: Error) => void };

export class UnixServer extends EventEmitter {
  readonly address: string;
  readonly type: SocketType;
  #fd: number;
  #poll: PollHandle | null = null;
  #polling = false;
  #closed = false;
  #refed = true;
  #backoff: NodeJS.Timeout | null = null;
  #backoffMs = 0;
  #ino: number | null;
  readonly #options: SocketOptions;
  readonly #allow: ((c: Credentials) => boolean) | null;
  #queue: UnixSocket[] = [];
  #waiters: Waiter[] = [];
  #iterators = 0;

  /** @internal Use UnixServer.listen() or UnixServer.fromFd(). */
  constructor(fd: number, address: string, type: SocketType, ino: number | null, options: ServerOptions) {
    super();
    this.#fd = fd;
    this.address = address;
    this.type = type;
    this.#ino = ino;
    this.#options = options;
    this.#allow = compileAllow(options.allow, address);
    this.on('newListener', (e) => {
      if (e === 'connection') queueMicrotask(() => this.#pump());
    });
    this.on('removeListener', (e) => {
      if (e === 'connection') queueMicrotask(() => this.#updatePoll());
    });
  }

  /** Binds and listens on `address` (a path, or '\0name' for abstract). */
  static listen(address: string, options: ServerOptions = {}): Promise<UnixServer> {
    // Bad arguments throw here, synchronously, before any system call.
    const typeNum = typeNumber(options.type);
    if (typeNum === K.SOCK_DGRAM) throw unsupported('a datagram socket does not listen: use UnixSocket.datagram({ bind })');
    const backlog = options.backlog ?? 511;
    if (!Number.isInteger(backlog) || backlog < 0) throw new RangeError(`backlog must be a non-negative integer, got ${backlog}`);
    encodeAddress(address);
    return UnixServer.#listen(address, typeNum, backlog, options);
  }

  static async #listen(address: string, typeNum: number, backlog: number, options: ServerOptions): Promise<UnixServer> {
    const fd = check(native.socket(typeNum), 'socket');
    try {
      // Accepted sockets inherit SO_PASSCRED, and messages queued before
      // accept() then carry credentials too.
      if (options.passCredentials) check(native.setPassCred(fd, true), 'setsockopt');
      const ino = await bindPath(fd, address, options.mode ?? 0o600);
      try {
        check(native.listen(fd, backlog), 'listen', displayAddress(address));
      } catch (err) {
        if (ino !== null) unlinkIfOurs(address, ino);
        throw err;
      }
      return new UnixServer(fd, address, typeName(typeNum), ino, options);
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  /** Adopts an inherited listening socket (systemd socket activation, say).
   * The server owns the fd from now on; its path is never unlinked. */
  static fromFd(fd: number, options: Omit<ServerOptions, 'type' | 'mode' | 'backlog'> = {}): UnixServer {
    if (!Number.isInteger(fd) || fd < 0) throw invalidFd(`not an fd: ${String(fd)}`);
    const info = new Int32Array(3);
    check(native.sockInfo(fd, info), 'getsockopt');
    if (info[0] !== K.AF_UNIX) throw unsupported(`fd ${fd} is not an AF_UNIX socket`);
    if (!info[2]) throw unsupported(`fd ${fd} is not listening`);
    check(native.setBlocking(fd, false), 'fcntl');
    const buf = Buffer.allocUnsafe(K.SUN_PATH_MAX);
    const n = native.sockName(fd, buf, false);
    const address = n > 0 ? buf.subarray(0, n).toString('utf8') : '';
    return new UnixServer(fd, address, typeName(info[1]!), null, options);
  }

  get fd(): number {
    if (this.#closed) throw new SocketClosedError('server is closed');
    return this.#fd;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Resolves with the next accepted (and allowed) connection. */
  accept(options: { signal?: AbortSignal } = {}): Promise<UnixSocket> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const s = this.#queue.shift();
    if (s) return Promise.resolve(s);
    if (this.#closed) return Promise.reject(new SocketClosedError('server is closed'));
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const i = this.#waiters.indexOf(w);
        if (i >= 0) this.#waiters.splice(i, 1);
        this.#updatePoll();
        reject(abortError(signal));
      };
      const w: Waiter = {
        resolve: (sock) => {
          signal?.removeEventListener('abort', onAbort);
          if (sock) resolve(sock);
          else reject(new SocketClosedError('server is closed'));
        },
        reject,
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(w);
      this.#updatePoll();
    });
  }

  /** Iterates over connections until the server closes. */
  [Symbol.asyncIterator](): AsyncIterableIterator<UnixSocket> {
    let done = false;
    this.#iterators++;
    const finish = () => {
      if (!done) {
        done = true;
        this.#iterators--;
        this.#updatePoll();
      }
    };
    return {
      next: async () => {
        if (done) return { value: undefined, done: true };
        try {
          return { value: await this.accept(), done: false };
        } catch (err) {
          finish();
          if (err instanceof SocketClosedError) return { value: undefined, done: true };
          throw err;
        }
      },
      return: async () => {
        finish();
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
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

  #wantAccept(): boolean {
    return !this.#closed && this.#backoff === null &&
      (this.#waiters.length > 0 || this.#iterators > 0 || this.listenerCount('connection') > 0);
  }

  #updatePoll(): void {
    if (this.#closed) return;
    const want = this.#wantAccept();
    if (want === this.#polling) return;
    if (!this.#poll) {
      const h = native.pollOpen(this.#fd, (ev) => this.#onPoll(ev));
      if (typeof h === 'number') {
        this.emit('error', errnoError(h, 'uv_poll_init'));
        return;
      }
      this.#poll = h;
      if (!this.#refed) native.pollRef(h, false);
    }
    native.pollSet(this.#poll, want ? 1 : 0);
    this.#polling = want;
  }

  #onPoll(events: number): void {
    if (events < 0) {
      // POLLERR (reported by libuv as UV_EBADF, watcher stopped): take the
      // real error with SO_ERROR, report it, and watch again.
      this.#polling = false;
      const e = native.sockError(this.#fd);
      if (e < 0) this.emit('error', errnoError(e, 'accept', displayAddress(this.address)));
      this.#updatePoll();
      return;
    }
    const n = native.accept(this.#fd, ACCEPT_BATCH);
    if (n < 0) {
      if (n === EAGAIN) return;
      this.#acceptFailed(n);
      return;
    }
    this.#backoffMs = 0;
    for (let i = 0; i < n; i++) this.#admit(ACCEPT_BATCH[i]!);
    this.#pump();
  }

  /**
   * accept(2) failed. Out of fds or memory the listener stays readable, so
   * polling on would spin: stop for a while (doubling up to 1 s), report,
   * and try again. Connections wait in the kernel's backlog meanwhile.
   */
  #acceptFailed(r: number): void {
    const err = errnoError(r, 'accept', displayAddress(this.address));
    if (r === EMFILE || r === ENFILE || r === ENOBUFS || r === ENOMEM) {
      this.#backoffMs = Math.min(Math.max(this.#backoffMs * 2, 10), 1000);
      this.#updatePollOff();
      this.#backoff = setTimeout(() => {
        this.#backoff = null;
        this.#updatePoll();
      }, this.#backoffMs);
    }
    this.emit('error', err);
  }

  #updatePollOff(): void {
    if (this.#poll && this.#polling) native.pollSet(this.#poll, 0);
    this.#polling = false;
  }

  #admit(fd: number): void {
    if (this.#allow) {
      const r = native.peerCred(fd, CRED);
      const peer = { pid: CRED[0]!, uid: CRED[1]! >>> 0, gid: CRED[2]! >>> 0 };
      if (r < 0 || !this.#allow(peer)) {
        native.close(fd);
        this.emit('refused', peer, new PeerRefusedError(
          `refused peer pid ${peer.pid} uid ${peer.uid} gid ${peer.gid} on ${displayAddress(this.address)}`));
        return;
      }
    }
    try {
      this.#queue.push(new UnixSocket(fd, this.type, this.#options));
    } catch (err) {
      native.close(fd);
      this.emit('error', err);
    }
  }

  #pump(): void {
    while (this.#queue.length > 0) {
      const w = this.#waiters.shift();
      if (w) {
        w.resolve(this.#queue.shift()!);
        continue;
      }
      if (this.listenerCount('connection') === 0) break;
      this.emit('connection', this.#queue.shift()!);
    }
    this.#updatePoll();
  }

  /**
   * Stops listening, closes the fd, unlinks the socket file if it is still
   * the one this server created, and closes connections accepted but not yet
   * handed out. Connections already handed out are their owners' to close.
   */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    if (this.#backoff) clearTimeout(this.#backoff);
    if (this.#poll) native.pollClose(this.#poll);
    this.#poll = null;
    native.close(this.#fd);
    if (this.#ino !== null) unlinkIfOurs(this.address, this.#ino);
    for (const s of this.#queue.splice(0)) s.close();
    for (const w of this.#waiters.splice(0)) w.resolve(null);
    return new Promise((resolve) => process.nextTick(() => {
      this.emit('close');
      resolve();
    }));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * Binds `fd` to `address`. For a path: replaces a stale socket file, refuses
 * a live one (EADDRINUSE), and creates the file with `mode` atomically.
 * Returns the socket file's inode (null for abstract names).
 */
export async function bindPath(fd: number, address: string, mode: number): Promise<number | null> {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) throw invalidArg(`mode must be a permission mode like 0o600, got ${mode}`);
  const addr = encodeAddress(address);
  if (isAbstract(address)) {
    check(native.bind(fd, addr), 'bind', displayAddress(address));
    return null;
  }
  await removeStale(fd, address);
  // Linux creates the socket file with the socket inode's mode less the
  // umask, so a fchmod() before bind() leaves no window with looser
  // permissions; the chmod() after restores bits the umask took away.
  fs.fchmodSync(fd, mode);
  check(native.bind(fd, addr), 'bind', address);
  try {
    fs.chmodSync(address, mode);
    return fs.statSync(address).ino;
  } catch (err) {
    fs.rmSync(address, { force: true });
    throw err;
  }
}

/** A socket file nobody listens on is stale: remove it. */
async function removeStale(fd: number, address: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(address);
  } catch {
    return;
  }
  if (!st.isSocket()) throw errnoError(EADDRINUSE, 'bind', address);
  const info = new Int32Array(3);
  check(native.sockInfo(fd, info), 'getsockopt');
  const probe = check(native.socket(info[1]!), 'socket');
  let r: number;
  try {
    r = native.connect(probe, encodeAddress(address));
  } finally {
    native.close(probe);
  }
  if (r === ECONNREFUSED) {
    fs.rmSync(address, { force: true });
    return;
  }
  throw errnoError(EADDRINUSE, 'bind', address);
}

/** Unlinks a socket file if it is still the one this process bound (same
 * inode): a successor's socket at the same path is left alone. */
export function unlinkIfOurs(address: string, ino: number): void {
  try {
    if (fs.lstatSync(address).ino === ino) fs.unlinkSync(address);
  } catch {
    // already gone
  }
}

function compileAllow(allow: AllowList | undefined, address: string): ((c: Credentials) => boolean) | null {
  if (allow === undefined) {
    if (!isAbstract(address)) return null;
    const me = process.getuid!();
    return (c) => c.uid === me || c.uid === 0;
  }
  if (typeof allow === 'function') return allow;
  if (typeof allow !== 'object' || allow === null) throw invalidArg('allow must be a function or { uids, gids, check }');
  const uids = allow.uids ? new Set(allow.uids) : null;
  const gids = allow.gids ? new Set(allow.gids) : null;
  const fn = allow.check;
  return (c) => {
    if ((uids || gids) && !(uids?.has(c.uid) || gids?.has(c.gid))) return false;
    return fn ? fn(c) : true;
  };
}
