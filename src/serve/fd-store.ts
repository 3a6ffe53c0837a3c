/**
 * systemd's file descriptor store (FileDescriptorStoreMax=, FDSTORE in the
 * environment): the primary pushes every listener into it (FDSTORE=1 with
 * FDNAME=<listener name>, the fd attached), so that the manager holds the
 * listening sockets while no primary runs. `systemctl restart` then refuses
 * no connection that reached the kernel: the next run gets the same sockets
 * back through LISTEN_FDS/LISTEN_FDNAMES (inherited-fds.ts), takes each one
 * for the listener of the same name and address (listener-match.ts) instead
 * of binding again, and accepts what waited in their backlogs meanwhile.
 * A listener in the store is never unlinked nor filtered on shutdown
 * (Listener.stored, listeners.ts's outlivesUs()).
 *
 * Entries that no listener takes any more (a --listen that was changed)
 * would keep completing handshakes that nobody accepts: they are taken out
 * first (FDSTOREREMOVE=1, by name; a name that a listener still uses is
 * pushed again right after, and the manager keeps one entry per socket).
 *
 * Each fd is sent as a dup of our own, closed once the send settles, so the
 * listener's own fd is never borrowed by a send that may be queued.
 */
import { native } from '../native';
import { errnoError } from '../errors';
import type { SdNotify } from './sd-notify';
import type { Listener } from './listeners';
import type { Log } from './log';

/** systemd's fdname_is_valid(): printable ASCII without ':', at most 255 bytes. */
export function validFdName(name: string): boolean {
  return /^[\x20-\x39\x3b-\x7e]{1,255}$/.test(name);
}

/**
 * Pushes `listeners` (at most `max`, the FDSTORE the manager allows) after
 * removing the entries named `stale`. Each listener that the manager took
 * is marked `stored`.
 */
export function storeListeners(notify: SdNotify, max: number, listeners: readonly Listener[], stale: readonly string[], log: Log): void {
  for (const name of new Set(stale)) if (validFdName(name)) void notify.send({ FDSTOREREMOVE: 1, FDNAME: name });
  let pushed = 0;
  for (const l of listeners) {
    const skip = !validFdName(l.name) ? 'not a valid FDNAME (printable ASCII, no colon)'
      : pushed >= max ? `the fd store holds ${max} (FileDescriptorStoreMax)` : null;
    if (skip) {
      log('fdstore-skipped', { listener: l.address, name: l.name, reason: skip });
      continue;
    }
    const fd = native.dup(l.fd);
    if (fd < 0) {
      log('fdstore-skipped', { listener: l.address, name: l.name, reason: errnoError(fd, 'dup').message });
      continue;
    }
    pushed++;
    void notify.send({ FDSTORE: 1, FDNAME: l.name }, [fd]).then((ok) => {
      if (ok) l.stored = true;
    }).finally(() => native.close(fd));
  }
}
