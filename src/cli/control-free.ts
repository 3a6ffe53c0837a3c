/**
 * `fdpass serve` makes sure its control socket is free before it binds a
 * listener or starts a worker: a second serve with the same control socket
 * (two with the default one, say) is refused at once, rather than after its
 * listeners were bound and its workers started. The check is a bind of the
 * path, let go at once (bind.ts decides: a stale socket file of this uid is
 * replaced, a live one or another uid's is EADDRINUSE). A serve that starts
 * in between still loses, at its own bind later.
 */
import { UnixServer } from '../socket/server';

export async function checkControlFree(file: string): Promise<void> {
  let probe: UnixServer;
  try {
    probe = await UnixServer.listen(file, { type: 'seqpacket', mode: 0o600 });
  } catch (err) {
    if ((err as { code?: string }).code !== 'EADDRINUSE') throw err;
    throw Object.assign(new Error(`control socket ${file} is in use (another fdpass serve?): ` +
      'give this one its own --control PATH'), { code: 'EADDRINUSE', cause: err });
  }
  await probe.close();
}
