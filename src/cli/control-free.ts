/**
 * `fdpass serve` makes sure its control socket is free before it binds a
 * listener or starts a worker: a second serve with the same control socket
 * (two with the default one, say) is refused at once, rather than after its
 * listeners were bound and its workers started. In use means that something
 * listens there: a connect() is answered (or is refused for being of
 * another socket type). Nothing there, or a socket file nobody listens on
 * (bind.ts replaces a stale one of ours), is free; anything else is left to
 * the control socket's own bind() to report. A serve that starts in between
 * still loses, at that bind(). (A serve that takes over from another,
 * --takeover, skips the check: the one it replaces holds the socket until it
 * hands over.)
 */
import { UnixSocket } from '../socket/socket';

export async function checkControlFree(file: string): Promise<void> {
  try {
    (await UnixSocket.connect(file, { type: 'seqpacket' })).close();
  } catch (err) {
    if ((err as { code?: string }).code !== 'EPROTOTYPE') return;
  }
  throw Object.assign(new Error(`control socket ${file} is in use (another fdpass serve?): ` +
    'give this one its own --control PATH'), { code: 'EADDRINUSE' });
}
