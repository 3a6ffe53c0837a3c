/**
 * UnixServer: a listening AF_UNIX socket (SOCK_STREAM or SOCK_SEQPACKET).
 *
 * A path socket is created with mode 0600 (option `mode`) without a window in
 * which it has looser permissions (bind.ts). A socket file left by a dead
 * process is replaced; a live one is EADDRINUSE; a file that is not a socket
 * is never touched; a file this server created is removed at close, and
 * when listen() fails.
 *
 * Peers can be refused by credentials (SO_PEERCRED) before a byte is read.
 * Accepting (acceptor.ts) runs only while somebody wants connections
 * (accept(), an iterator or a 'connection' listener: the Inbox, inbox.ts),
 * so that connections wait in the kernel's backlog rather than here. An
 * accept that fails (EMFILE, say) is emitted as 'error' and accepting backs
 * off, then resumes by itself: at once when this process frees an fd.
 *
 * Ownership: the server owns the listening fd and the connections it
 * accepted until they are handed out; each handed-out UnixSocket is its
 * receiver's to close.
 */
import { EventEmitter } from 'node:events';
import { native, K } from '../native';
import { errnoError, unsupported, SocketClosedError, PeerRefusedError } from '../errors';
import { encodeAddress, isAbstract, displayAddress } from './address';
import { Acceptor } from './acceptor';
import { adoptSocket } from './adopt';
import { compileAllow, type AllowCheck, type AllowList } from './allow';
import { listenUnix, unlinkIfOurs } from './bind';
import type { Credentials } from './frame';
import { closeFd } from './fd';
import { Inbox, type WaitOptions } from './inbox';
import { resolveOptions, typeName, typeNumber, type SocketOptions, type SocketType } from './options';
import { UnixSocket } from './socket';

/** Out of fds, who frees some for one more accept, per server (see
 * lendFdsForAccept()). */
const lenders = new WeakMap<UnixServer, (accept: () => number) => number>();

/**
 * For fdpass serve's control socket (not part of the public API): when
 * accept() on `server` fails for want of fds, `lend` runs one more accept,
 * of one connection, having freed a few fds for it (the primary's spares).
 * The connection comes as any other ('connection'); a failure is the
 * server's usual 'error' and back-off.
 */
export function lendFdsForAccept(server: UnixServer, lend: (accept: () => number) => number): void {
  lenders.set(server, lend);
}

export type { AllowList };

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

export type AcceptOptions = WaitOptions;

const CRED = new Int32Array(3);
const closeSocket = (s: UnixSocket) => s.close();

/** The events of a UnixServer and their listeners' arguments. */
export interface UnixServerEvents {
  /** An accepted connection, for 'connection' listeners (while there are
   * any, accept() and the iterator get none); the listener owns it. */
  connection: [socket: UnixSocket];
  /** A peer that `allow` refused; its connection was closed unread. */
  refused: [peer: Credentials, error: PeerRefusedError];
  /** accept(2) failed (EMFILE, say); the server keeps listening. */
  error: [error: Error];
  close: [];
}

export class UnixServer extends EventEmitter<UnixServerEvents> {
  readonly address: string;
  readonly type: SocketType;
  readonly #fd: number;
  #closed = false;
  readonly #ino: number | null;
  readonly #options: SocketOptions;
  readonly #allow: AllowCheck | null;
  readonly #acceptor: Acceptor;
  readonly #inbox: Inbox<UnixSocket>;

  /** @internal Use UnixServer.listen() or UnixServer.fromFd(). Takes `fd`
   * over only if it does not throw. */
  constructor(fd: number, address: string, type: SocketType, ino: number | null, options: ServerOptions) {
    super();
    resolveOptions(type, options);
    this.#allow = compileAllow(options.allow, isAbstract(address));
    this.#fd = fd;
    this.address = address;
    this.type = type;
    this.#ino = ino;
    this.#options = options;
    this.#inbox = new Inbox<UnixSocket>(this, 'connection', {
      taken: () => {},
      changed: () => this.#acceptor.setWanted(!this.#closed && this.#inbox.consumers > 0),
      finished: () => {},
    }, { noun: 'connection', closed: 'server is closed' });
    this.#acceptor = new Acceptor(fd, {
      onAccept: (fds, n) => {
        for (let i = 0; i < n; i++) this.#admit(fds[i]!);
        this.#inbox.pump();
      },
      onError: (errno) => this.emit('error', errnoError(errno, 'accept', displayAddress(this.address))),
      lendFds: (accept) => lenders.get(this)?.(accept),
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
    resolveOptions(typeName(typeNum), options);
    compileAllow(options.allow, isAbstract(address));
    return UnixServer.#listen(address, typeNum, backlog, options);
  }

  static async #listen(address: string, typeNum: number, backlog: number, options: ServerOptions): Promise<UnixServer> {
    const { fd, ino } = await listenUnix(typeNum, address, { mode: options.mode, backlog, passCredentials: options.passCredentials });
    try {
      return new UnixServer(fd, address, typeName(typeNum), ino, options);
    } catch (err) {
      if (ino !== null) unlinkIfOurs(address, ino);
      native.close(fd);
      throw err;
    }
  }

  /** Adopts an inherited listening socket (systemd socket activation, say).
   * The server owns the fd from now on; its path is never unlinked. */
  static fromFd(fd: number, options: Omit<ServerOptions, 'type' | 'mode' | 'backlog'> = {}): UnixServer {
    const info = adoptSocket(fd, { unix: true, listening: true });
    const buf = Buffer.allocUnsafe(K.SUN_PATH_MAX);
    const n = native.sockName(fd, buf, false);
    const address = n > 0 ? buf.subarray(0, n).toString('utf8') : '';
    return new UnixServer(fd, address, typeName(info.type), null, options);
  }

  get fd(): number {
    if (this.#closed) throw new SocketClosedError('server is closed');
    return this.#fd;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Resolves with the next accepted (and allowed) connection. Rejects with
   * FDPASS_ERR_TIMEOUT after `timeout` ms, an AbortError when `signal`
   * aborts, FDPASS_ERR_SOCKET_CLOSED once the server is closed. */
  accept(options: AcceptOptions = {}): Promise<UnixSocket> {
    return this.#inbox.next(options);
  }

  /** Iterates over connections until the server closes. */
  [Symbol.asyncIterator](): AsyncIterableIterator<UnixSocket> {
    return this.#inbox.iterate();
  }

  ref(): this {
    this.#acceptor.ref(true);
    return this;
  }

  unref(): this {
    this.#acceptor.ref(false);
    return this;
  }

  /** A new connection: refused by the allow-list, or wrapped and buffered. */
  #admit(fd: number): void {
    if (this.#allow) {
      const r = native.peerCred(fd, CRED);
      const peer = { pid: CRED[0]!, uid: CRED[1]! >>> 0, gid: CRED[2]! >>> 0 };
      if (r < 0 || !this.#allow(peer)) {
        closeFd(fd);
        this.emit('refused', peer, new PeerRefusedError(
          `refused peer pid ${peer.pid} uid ${peer.uid} gid ${peer.gid} on ${displayAddress(this.address)}`));
        return;
      }
    }
    try {
      this.#inbox.push(new UnixSocket(fd, this.type, this.#options));
    } catch (err) {
      closeFd(fd);
      this.emit('error', err as Error);
    }
  }

  /**
   * Stops listening, closes the fd, unlinks the socket file if it is still
   * the one this server created, and closes connections accepted but not yet
   * handed out. Connections already handed out are their owners' to close.
   */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    this.#acceptor.close();
    closeFd(this.#fd);
    if (this.#ino !== null) unlinkIfOurs(this.address, this.#ino);
    this.#inbox.close(closeSocket);
    return new Promise((resolve) => process.nextTick(() => {
      this.emit('close');
      resolve();
    }));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
