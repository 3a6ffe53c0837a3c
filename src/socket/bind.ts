/**
 * Binding and listening on AF_UNIX addresses: the one place that creates,
 * replaces and removes socket files.
 *
 * A path socket is created with its mode set before bind() (Linux creates
 * the file with the socket inode's mode less the umask), so it never has
 * looser permissions than asked, not even for a moment. A socket file left
 * by a dead process of this uid is replaced; a live one, or one of another
 * uid, is EADDRINUSE; a file that is not a socket is never touched. If
 * anything after bind() fails, the file this process created is removed
 * again; at close, it is removed only if it is still the one we created
 * (same inode), never a successor's.
 *
 * The directory may be writable by someone else (a shared /tmp, a
 * directory another user owns), who can swap any name in it at any moment
 * for a symlink to a file of ours or of root. So after bind() no call here
 * resolves the path with a following lookup (chmod(2), stat(2), connect(2)
 * on the path): the path is opened once with O_PATH | O_NOFOLLOW, which
 * pins whatever is there (a symlink itself, not its target), and everything
 * else goes through that fd: fstat() decides, and chmod() and connect()
 * use /proc/self/fd/N, which names exactly the pinned inode and is not
 * resolved further. What is pinned must be a socket owned by our euid with
 * one link (the file bind() just made); anything else is refused with
 * SocketFileReplacedError and left alone.
 *
 * Why not bind inside a private 0700 directory and link()/rename() the
 * socket into place? That would make the mode change unobservable, but the
 * socket would keep the private path as its name: getsockname(), a
 * connected peer's getpeername() and the sender address on datagrams would
 * all name a path that no longer exists (a datagram receiver could not
 * answer), and the private path is longer, so addresses near the 108-byte
 * limit would fail. Changing the umask around bind() is not an option in a
 * threaded process (it is process-wide, libuv's threads create files).
 *
 * What remains: a writer of the directory who renames another socket file
 * of ours (same euid, one link) into place between bind() and the fstat()
 * gets that file's mode set to the one asked for; and only when the umask
 * took bits away (a mode of 0600 under the usual umasks needs no chmod at
 * all). Nothing outside our own sockets is ever changed.
 */
import * as fs from 'node:fs';
import { native, K } from '../native';
import { check, errnoError, invalidArg, SocketFileReplacedError } from '../errors';
import { EADDRINUSE, ECONNREFUSED } from '../errno';
import { encodeAddress, isAbstract, displayAddress } from './address';
import { socketInfo } from './adopt';

export interface ListenOptions {
  /** File mode of a path socket, default 0o600. */
  mode?: number;
  /** listen(2) backlog, default 511. */
  backlog?: number;
  /** SO_PASSCRED before listen(): accepted sockets inherit it, and
   * messages queued before accept() carry credentials too. */
  passCredentials?: boolean;
}

/** A listening socket this process created: the fd (the caller's to close)
 * and, for a path, the socket file's inode (to unlink it on close). */
export interface ListeningSocket {
  fd: number;
  ino: number | null;
}

/**
 * socket(), bind() and listen() on a path or abstract name: the whole
 * listen sequence. On any failure nothing is left behind: no fd, no
 * socket file.
 */
export async function listenUnix(type: number, address: string, options: ListenOptions = {}): Promise<ListeningSocket> {
  const backlog = options.backlog ?? 511;
  const fd = check(native.socket(type), 'socket');
  let ino: number | null = null;
  try {
    if (options.passCredentials) check(native.setPassCred(fd, true), 'setsockopt');
    ino = await bindPath(fd, address, options.mode ?? 0o600);
    check(native.listen(fd, backlog), 'listen', displayAddress(address));
    return { fd, ino };
  } catch (err) {
    if (ino !== null) unlinkIfOurs(address, ino);
    native.close(fd);
    throw err;
  }
}

/**
 * Binds `fd` to `address`. For a path: replaces a stale socket file of ours,
 * refuses a live or foreign one (EADDRINUSE), and creates the file with
 * `mode` (see the file comment). Returns the socket file's inode (null for
 * abstract names). On failure the caller still owns `fd` and closes it; a
 * file at the path that is not the one we created is left alone.
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
  // umask: set the mode here, and no moment has looser permissions.
  fs.fchmodSync(fd, mode);
  check(native.bind(fd, addr), 'bind', address);
  return withPinned(address, false, (pin, st) => {
    if (!st || !st.isSocket() || st.uid !== process.geteuid!() || st.nlink > 1) {
      throw new SocketFileReplacedError(address, describe(st));
    }
    // Only when the umask took bits away (or an ACL changed them).
    if ((st.mode & 0o777) !== mode) {
      try {
        fs.chmodSync(procPath(pin), mode);
      } catch (err) {
        unlinkIfOurs(address, st.ino);
        throw err;
      }
    }
    return st.ino;
  });
}

/**
 * A socket file at the path: stale (nobody listens) if it is ours and a
 * connect() is refused; then it is removed. One of another uid is never
 * probed (a connect() would reach a stranger's server) nor removed.
 */
async function removeStale(fd: number, address: string): Promise<void> {
  // Any path that cannot be opened is left to bind() to report.
  const stale = withPinned(address, true, (pin, st) => {
    if (!st) return null;
    if (!st.isSocket() || st.uid !== process.geteuid!()) return false;
    const probe = check(native.socket(socketInfo(fd).type), 'socket');
    try {
      return native.connect(probe, encodeAddress(procPath(pin))) === ECONNREFUSED ? st.ino : false;
    } finally {
      native.close(probe);
    }
  });
  if (stale === false) throw errnoError(EADDRINUSE, 'bind', address);
  if (stale !== null) unlinkIfOurs(address, stale);
}

/**
 * Opens what is at `path` with O_PATH | O_NOFOLLOW (a symlink is pinned
 * itself, not followed) and calls `fn` with the fd and its fstat(); `st` is
 * null when nothing is there (or, with `quiet`, when the open fails for any
 * reason). The fd is closed when `fn` returns.
 */
function withPinned<T>(path: string, quiet: boolean, fn: (pin: number, st: fs.Stats | null) => T): T {
  let pin: number;
  try {
    pin = fs.openSync(path, K.O_PATH | fs.constants.O_NOFOLLOW);
  } catch (err) {
    if (quiet || (err as NodeJS.ErrnoException).code === 'ENOENT') return fn(-1, null);
    throw err;
  }
  try {
    return fn(pin, fs.fstatSync(pin));
  } finally {
    fs.closeSync(pin);
  }
}

/** The /proc path that names exactly the inode `fd` holds. */
function procPath(fd: number): string {
  return `/proc/self/fd/${fd}`;
}

function describe(st: fs.Stats | null): string {
  if (!st) return 'nothing';
  const kind = st.isSymbolicLink() ? 'a symlink' : st.isSocket() ? 'a socket' : st.isDirectory() ? 'a directory' : 'a file';
  return `${kind} owned by uid ${st.uid}${st.nlink > 1 ? ` with ${st.nlink} links` : ''}`;
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
