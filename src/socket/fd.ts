/**
 * Owned file descriptors.
 *
 * Every fd that fdpass receives is wrapped at once in an Fd, its one owner.
 * The owner closes it (close(), `using`), or hands it on in one call, after
 * which it no longer closes anything: release() gives the raw number to the
 * caller, toSocket()/toReadStream()/toWriteStream() give it to Node.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import { native } from '../native';
import { errnoError, invalidFd } from '../errors';
import { fdsFreed } from './acceptor';

export type FdKind = 'file' | 'directory' | 'socket' | 'pipe' | 'char' | 'block' | 'symlink' | 'unknown';

export class Fd {
  #fd: number;

  /** Takes ownership of `fd`: from now on this object closes it. */
  constructor(fd: number) {
    if (!Number.isInteger(fd) || fd < 0) throw invalidFd(`not an fd number: ${String(fd)}`);
    this.#fd = fd;
  }

  /** The fd number, still owned by this object. Throws once closed or handed on. */
  get fd(): number {
    if (this.#fd < 0) throw invalidFd('this Fd was closed or handed on');
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Closes the fd. Safe to call twice. */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    closeFd(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Gives up ownership: the caller must close the returned number. */
  release(): number {
    const fd = this.fd;
    this.#fd = -1;
    return fd;
  }

  /** A new owned Fd for the same open file (close-on-exec). */
  dup(): Fd {
    const r = native.dup(this.fd);
    if (r < 0) throw errnoError(r, 'fcntl');
    return new Fd(r);
  }

  stat(): fs.Stats {
    return fs.fstatSync(this.fd);
  }

  /** What the fd refers to, from fstat(2). */
  kind(): FdKind {
    return kindOf(this.stat());
  }

  /** The target shown by /proc/self/fd: a path, 'socket:[ino]', 'pipe:[ino]'... */
  target(): string {
    return fs.readlinkSync(`/proc/self/fd/${this.fd}`);
  }

  /**
   * Hands the fd to a new net.Socket (TCP or Unix stream sockets and pipes;
   * Node refuses other kinds with "Unsupported fd type"). Node owns it then.
   */
  toSocket(options: Omit<net.SocketConstructorOpts, 'fd'> = {}): net.Socket {
    const sock = new net.Socket({ readable: true, writable: true, ...options, fd: this.fd });
    this.#fd = -1;
    return sock;
  }

  /** Hands the fd to an fs.ReadStream that closes it when done. */
  toReadStream(options: { start?: number; end?: number; highWaterMark?: number } = {}): fs.ReadStream {
    const s = fs.createReadStream('', { ...options, fd: this.fd, autoClose: true });
    this.#fd = -1;
    return s;
  }

  /** Hands the fd to an fs.WriteStream that closes it when done. */
  toWriteStream(options: { start?: number; highWaterMark?: number } = {}): fs.WriteStream {
    const s = fs.createWriteStream('', { ...options, fd: this.fd, autoClose: true, flags: 'a' });
    this.#fd = -1;
    return s;
  }

  toJSON(): { fd: number } {
    return { fd: this.#fd };
  }
}

/**
 * Closes an fd that an fdpass owner held (a socket's, an Fd's, a message's)
 * and tells acceptors starved of fds that one is free (acceptor.ts).
 */
export function closeFd(fd: number): void {
  native.close(fd);
  fdsFreed();
}

/** closeFd() for fds[start, start + count), in one native call (a lone fd
 * through close(), whose one integer argument is the cheaper crossing). */
export function closeFds(fds: Int32Array, start: number, count: number): void {
  if (count === 1) native.close(fds[start]!);
  else native.closeMany(fds, start, count);
  fdsFreed();
}

export function kindOf(st: fs.Stats): FdKind {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isSocket()) return 'socket';
  if (st.isFIFO()) return 'pipe';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isSymbolicLink()) return 'symlink';
  return 'unknown';
}

/** Anything that names an open fd: a number, or an object holding one. */
export type FdLike =
  | number
  | Fd
  | { readonly fd: number }
  | net.Socket
  | net.Server
  | dgram.Socket
  | { readonly _handle?: { readonly fd?: number } | null };

/**
 * The fd number behind an FdLike, borrowed: ownership does not change.
 * net.Socket, net.Server and dgram.Socket keep it in their handle.
 */
export function fdNumber(x: FdLike): number {
  let n: unknown;
  if (typeof x === 'number') n = x;
  else if (x instanceof Fd) n = x.fd;
  else if (x instanceof dgram.Socket) n = dgramHandle(x)?.fd;
  else if (x !== null && typeof x === 'object') {
    const handle = (x as { _handle?: { fd?: unknown } | null })._handle;
    if ('fd' in x && typeof (x as { fd: unknown }).fd === 'number') n = (x as { fd: number }).fd;
    else if (handle && typeof handle.fd === 'number') n = handle.fd;
    else throw invalidFd(`${x.constructor?.name ?? 'object'} has no open fd (is it closed or not yet bound?)`);
  }
  if (x !== null && typeof x === 'object' && (n === undefined || n === -1)) {
    throw invalidFd(`${x.constructor?.name ?? 'object'} has no open fd (is it closed or not yet bound?)`);
  }
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 0x7fffffff) {
    throw invalidFd(`not an fd: ${typeof x === 'number' ? x : typeof x}`);
  }
  return n;
}

/** dgram.Socket keeps its handle under a symbol (its `_handle` getter is
 * deprecated, DEP0112). */
function dgramHandle(s: dgram.Socket): { fd?: number } | undefined {
  const sym = Object.getOwnPropertySymbols(s).find((k) => k.description === 'state symbol');
  const state = sym ? (s as unknown as Record<symbol, { handle?: { fd?: number } }>)[sym] : undefined;
  return state?.handle ?? undefined;
}
