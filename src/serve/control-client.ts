/**
 * The client of the control socket (`fdpass status`, `fdpass upgrade`, the
 * tests): one request on a connection of its own.
 *
 * Nothing is sent, and no answer believed, before the server is known to be
 * this user's: the default directory must be trusted (control-path.ts), and
 * the process listening must run as this uid or root (SO_PEERCRED of a
 * connected socket names whoever called listen()). A socket another user
 * put at the path, or an abstract name another user bound, is refused with
 * FDPASS_ERR_PEER_REFUSED instead of answering with a forged document.
 */
import { UnixSocket } from '../socket/socket';
import { displayAddress } from '../socket/address';
import { Channel } from '../channel/channel';
import { PeerRefusedError } from '../errors';
import { checkControlPath } from './control-path';
import type { Status } from './status';

export function queryStatus(file: string, timeout = 5000): Promise<Status> {
  return controlRequest<Status>(file, 'status', timeout);
}

/** One request of `type` (status, reload, upgrade); its answer, or the
 * primary's error as a RemoteError. */
export async function controlRequest<T>(file: string, type: string, timeout = 5000): Promise<T> {
  checkControlPath(file);
  const sock = await UnixSocket.connect(file, { type: 'seqpacket', timeout });
  try {
    checkServer(sock, file);
  } catch (err) {
    sock.close();
    throw err;
  }
  const ch = new Channel(sock, { timeout });
  try {
    const reply = await ch.request<T>(type);
    reply.message.close();
    return reply.payload;
  } finally {
    ch.close();
  }
}

/** Throws unless the listening end of `sock` belongs to this uid or root. */
function checkServer(sock: UnixSocket, file: string): void {
  const me = process.getuid!();
  const peer = sock.peerCredentials();
  if (peer.uid !== me && peer.uid !== 0) {
    throw new PeerRefusedError(`control socket ${displayAddress(file)} is served by uid ${peer.uid} (pid ${peer.pid}), not ${me}: refusing it`);
  }
}
