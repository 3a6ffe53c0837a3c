/**
 * Binding and listening on AF_UNIX addresses: the one place that creates,
 * replaces and removes socket files.
 *
 * A path socket is created with its mode set before bind() (Linux creates
 * the file with the socket inode's mode less the umask), so it never has
 * looser permissions than asked, not even for a moment. A socket file left
 * by a dead process is replaced; a live one is EADDRINUSE; a file that is
 * not a socket is never touched. If anything after bind() fails, the file
 * this process created is removed again; at close, it is removed only if it
 * is still the one we created (same inode), never a successor's.
 */
import * as fs from 'node:fs';
import { native } from '../native';
import { check, errnoError, invalidArg } from '../errors';
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
  const probe = check(native.socket(socketInfo(fd).type), 'socket');
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

