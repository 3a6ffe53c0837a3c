/**
 * Adopting an inherited or received socket fd (a child's fd 3, systemd's
 * LISTEN_FDS, a listener handed over by another process): the one place
 * that checks what the fd is before an owner object takes it.
 */
import { native, K } from '../native';
import { check, invalidFd, unsupported } from '../errors';

export interface SocketFdInfo {
  /** AF_UNIX, AF_INET or AF_INET6 (K.AF_*). */
  family: number;
  /** SOCK_STREAM, SOCK_SEQPACKET or SOCK_DGRAM (K.SOCK_*). */
  type: number;
  listening: boolean;
}

/** What kind of socket `fd` is (throws if it is not an open socket). */
export function socketInfo(fd: number): SocketFdInfo {
  if (!Number.isInteger(fd) || fd < 0) throw invalidFd(`not an fd: ${String(fd)}`);
  const info = new Int32Array(3);
  check(native.sockInfo(fd, info), 'getsockopt');
  return { family: info[0]!, type: info[1]!, listening: info[2] !== 0 };
}

/**
 * Checks that `fd` is a socket of the expected kind and makes it
 * non-blocking, ready for an owner object to take it. Throws (TypeError,
 * FDPASS_ERR_UNSUPPORTED or FDPASS_ERR_INVALID_FD) without touching the fd
 * when it is not; the caller still owns it then.
 *
 * @param expect.unix       only AF_UNIX will do
 * @param expect.listening  a listening socket (true) or a connected or
 *                          datagram one (false)
 * @param expect.what       how to name the fd in errors ('fd 3', 'systemd fd 3')
 */
export function adoptSocket(fd: number, expect: { unix: boolean; listening: boolean; what?: string }): SocketFdInfo {
  const info = socketInfo(fd);
  const what = expect.what ?? `fd ${fd}`;
  if (expect.unix && info.family !== K.AF_UNIX) throw unsupported(`${what} is not an AF_UNIX socket`);
  if (expect.listening && !info.listening) throw unsupported(`${what} is not listening`);
  if (!expect.listening && info.listening) throw unsupported(`${what} is a listening socket: use UnixServer.fromFd()`);
  check(native.setBlocking(fd, false), 'fcntl');
  return info;
}
