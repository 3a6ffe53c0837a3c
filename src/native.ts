/**
 * Loads the addon and describes exactly what it exports. Every function
 * returns a number >= 0 or a negative errno (see native/fdpass.h); turning
 * those into errors is the caller's job (errors.ts). A runtime the addon
 * cannot serve is refused before it is loaded (runtime.ts); an addon that
 * is missing or will not load is an AddonLoadError whose `cause` is
 * node-gyp-build's or require()'s error.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import nodeGypBuild = require('node-gyp-build');
import { AddonLoadError } from './errors';
import { checkRuntime } from './runtime';

export interface NativeConstants {
  readonly SOCK_STREAM: number;
  readonly SOCK_DGRAM: number;
  readonly SOCK_SEQPACKET: number;
  readonly AF_UNIX: number;
  readonly AF_INET: number;
  readonly AF_INET6: number;
  readonly MSG_TRUNC: number;
  readonly MSG_CTRUNC: number;
  readonly SHUT_RD: number;
  readonly SHUT_WR: number;
  readonly SHUT_RDWR: number;
  readonly FD_CLOEXEC: number;
  readonly MAX_FDS: number;
  readonly RECV_META: number;
  readonly RECV_ADDR: number;
  readonly SEND_META: number;
  readonly STOP_EOF: number;
  /** Fields of one receive record (RECV_META ints per message in recvmsgs' meta). */
  readonly RECV_OFF: number;
  readonly RECV_LEN: number;
  readonly RECV_STORED: number;
  readonly RECV_NFDS: number;
  readonly RECV_FLAGS: number;
  readonly RECV_HAS_CREDS: number;
  readonly RECV_PID: number;
  readonly RECV_UID: number;
  readonly RECV_GID: number;
  readonly RECV_ADDRLEN: number;
  /** Fields of one send record (SEND_META ints per message in sendmsgs' meta). */
  readonly SEND_LEN: number;
  readonly SEND_NFDS: number;
  readonly SEND_HAS_CREDS: number;
  readonly SEND_PID: number;
  readonly SEND_UID: number;
  readonly SEND_GID: number;
  /** Bytes of control-data scratch recvmsgs() needs. */
  readonly RECV_CTL: number;
  readonly SUN_PATH_MAX: number;
  readonly SOL_SOCKET: number;
  readonly SO_REUSEADDR: number;
  readonly IPPROTO_IPV6: number;
  readonly IPV6_V6ONLY: number;
  readonly IPPROTO_TCP: number;
  readonly TCP_NODELAY: number;
  readonly TCP_KEEPIDLE: number;
  readonly SO_KEEPALIVE: number;
  /** accept() only once the client has sent data (seconds to wait for it). */
  readonly TCP_DEFER_ACCEPT: number;
  /** The one errno Node's os.constants.errno lacks. */
  readonly ETOOMANYREFS: number;
  /** open(2) flag Node's fs.constants lacks: an fd that names a file
   * (a socket file, say) without opening it for I/O (bind.ts). */
  readonly O_PATH: number;
  /** handoff()'s io array (native/handoff.c), by int offset: the header's
   * fields, then the sections chan/sent (HANDOFF_MAX_WORKERS each) and
   * plan/fds (MAX_FDS each); HANDOFF_SIZE ints in all. */
  readonly HANDOFF_WORKERS: number;
  readonly HANDOFF_COUNT: number;
  readonly HANDOFF_FIRST_ID: number;
  readonly HANDOFF_LISTENER: number;
  readonly HANDOFF_MAX_WORKERS: number;
  readonly HANDOFF_CHAN: number;
  readonly HANDOFF_SENT: number;
  readonly HANDOFF_PLAN: number;
  readonly HANDOFF_FDS: number;
  readonly HANDOFF_SIZE: number;
}

/**
 * A libuv poll watcher, as JavaScript holds it: an opaque handle that stays
 * valid after the watcher closed (native/poll.c). Once closed, by pollClose()
 * or by the environment's teardown, pollSet() returns -EBADF and pollRef()
 * and pollClose() do nothing; so closing twice, or from inside the watcher's
 * own callback, is safe. Until it is closed a watcher holds its callback
 * strongly and keeps running even if the handle is dropped: close it, never
 * leave it to the garbage collector.
 */
export type PollHandle = { readonly __brand: 'PollHandle' };

/** Scratch arrays registered once for sendmsgs()/recvmsgs() (native/scratch.c):
 * an opaque handle that keeps them alive; never detach or transfer them. */
export type SendScratch = { readonly __brand: 'SendScratch' };
export type RecvScratch = { readonly __brand: 'RecvScratch' };

export interface NativeBinding {
  socket(type: number): number;
  socketpair(type: number, out: Int32Array): number;
  bind(fd: number, addr: Uint8Array): number;
  connect(fd: number, addr: Uint8Array): number;
  listen(fd: number, backlog: number): number;
  accept(fd: number, out: Int32Array): number;
  shutdown(fd: number, how: number): number;
  close(fd: number): number;
  closeMany(fds: Int32Array, start: number, count: number): number;
  dup(fd: number): number;
  fdFlags(fd: number): number;
  setBlocking(fd: number, on: boolean): number;
  setCloexec(fd: number, on: boolean): number;
  nofileLimit(): number;
  sockInfo(fd: number, out: Int32Array): number;
  peerCred(fd: number, out: Int32Array): number;
  setPassCred(fd: number, on: boolean): number;
  sockError(fd: number): number;
  sockName(fd: number, out: Uint8Array, peer: boolean): number;
  /** Registers the send loop's scratch: the bytes, the records, the fds and the [sent, partial] result. */
  sendScratch(data: Uint8Array, meta: Int32Array, fds: Int32Array, result: Int32Array): SendScratch;
  /** Registers the receive loop's scratch: the bytes, the records, the fds, the senders' addresses,
   * the [stop, late error] status and the control-data buffer (RECV_CTL bytes). */
  recvScratch(buf: Uint8Array, meta: Int32Array, fds: Int32Array, addrs: Uint8Array, status: Int32Array,
    ctl: Uint8Array): RecvScratch;
  /** `data` null: the scratch's bytes; else one message's own buffer. */
  sendmsgs(scratch: SendScratch, fd: number, count: number, addr: Uint8Array | null, data: Uint8Array | null): number;
  recvmsgs(scratch: RecvScratch, fd: number, maxMsgs: number, maxMsgSize: number, maxFds: number, addrs: boolean): number;
  socketInet(family: number): number;
  setIntOpt(fd: number, level: number, name: number, value: number): number;
  /** getsockopt() of an int option into out[0]; 0 or -errno. */
  getIntOpt(fd: number, level: number, name: number, out: Int32Array): number;
  bindInet(fd: number, family: number, ip: string, port: number): number;
  inetName(fd: number, peer: boolean, out: Uint8Array): number;
  /** A socket filter on a TCP listener that drops new connections' SYNs. */
  dropSyns(fd: number): number;
  /** One non-blocking recv() of at most `len` bytes into buf (MSG_PEEK with
   * `peek`): the count, 0 when the peer closed, or -EAGAIN. */
  recv(fd: number, buf: Uint8Array, len: number, peek: boolean): number;
  /** prctl(PR_SET_NO_NEW_PRIVS, 1): execve() never grants privileges again. */
  noNewPrivs(): number;
  /** The passwd entry of a user name: out = [uid, primary gid]; -ENOENT if none. */
  getpwnam(name: string, out: Int32Array): number;
  /** The passwd entry of a uid: out = [uid, primary gid], its name in `name`
   * (the length is returned); -ENOENT if none. */
  getpwuid(uid: number, out: Int32Array, name: Uint8Array): number;
  /** The group entry of a group name: out = [gid]; -ENOENT if none. */
  getgrnam(name: string, out: Int32Array): number;
  /** `fdpass serve`'s hand-off of one readiness event (native/handoff.c):
   * accepts up to io[HANDOFF_COUNT] connections on `fd` and sends each
   * worker its CONNS message following io's plan; the count accepted
   * (their fds are the caller's, sent or not), or -errno when none was. */
  handoff(fd: number, io: Int32Array): number;
  /** Watches fd (not yet armed: see pollSet); cb gets 1/2 bits, or a -errno. */
  pollOpen(fd: number, cb: (events: number) => void): PollHandle | number;
  /** 1 readable, 2 writable, 0 stop; -EBADF once the watcher closed. */
  pollSet(h: PollHandle, events: number): number;
  /** Whether the watcher keeps the event loop alive; nothing once closed. */
  pollRef(h: PollHandle, on: boolean): void;
  /** Stops and releases the watcher; nothing once closed. */
  pollClose(h: PollHandle): void;
  readonly constants: NativeConstants;
}

/** The package's root: the directory of package.json, binding.gyp and prebuilds/. */
const ROOT = path.join(__dirname, '..', '..');

/**
 * The addon, as node-gyp-build finds it: a build from source
 * (build/Release, made by the install script where no prebuilt binary
 * fits) first, else the prebuilt binary for this platform, architecture
 * and libc (prebuilds/linux-x64/fdpass.glibc.node, ...).
 */
function load(): NativeBinding {
  checkRuntime();
  let file: string;
  try {
    file = nodeGypBuild.path(ROOT);
  } catch (err) {
    throw new AddonLoadError(missing(), { cause: err });
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(file) as NativeBinding;
  } catch (err) {
    throw new AddonLoadError(`cannot load the native addon ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** What to say when no addon fits: which prebuilt ones there are, and how
 * to build one. No "fdpass: " prefix: the CLI puts it in front of every
 * message. */
function missing(): string {
  let prebuilt: string[] = [];
  try {
    prebuilt = fs.readdirSync(path.join(ROOT, 'prebuilds')).sort();
  } catch {
    // none: a clone of the repository
  }
  const have = prebuilt.length ? `prebuilt ones are for ${prebuilt.join(', ')} (glibc) only, and ` : '';
  return `no native addon for ${process.platform}-${process.arch}: ${have}none was built from source ` +
    '(`npm rebuild fdpass` builds one, as `npm ci` does in a clone of the repository; ' +
    'it needs python3, make, a C/C++ compiler and the Node.js headers)';
}

export const native: NativeBinding = load();
export const K: NativeConstants = native.constants;
