/**
 * Allow-lists: who may reach a socket, by the credentials the kernel checked
 * (SO_PEERCRED for a connection, SCM_CREDENTIALS for a datagram). One
 * compiled form shared by UnixServer (connections, server.ts) and datagram
 * sockets (receiver.ts).
 */
import { invalidArg } from '../errors';
import type { Credentials } from './frame';

/**
 * A peer passes if its uid is in `uids` or its gid in `gids` (when either is
 * given) and `check` returns true (when given); or if the function returns
 * true.
 */
export type AllowList =
  | ((peer: Credentials) => boolean)
  | { uids?: readonly number[]; gids?: readonly number[]; check?: (peer: Credentials) => boolean };

export type AllowCheck = (peer: Credentials) => boolean;

/**
 * Compiles `allow` to one check. Without an allow-list, `sameUidByDefault`
 * says whether only this process's uid and root pass (a socket with no file
 * permissions to guard it: an abstract name) or everyone does (null: no
 * check). Throws a TypeError for a malformed allow-list, before any syscall.
 */
export function compileAllow(allow: AllowList | undefined, sameUidByDefault: boolean): AllowCheck | null {
  if (allow === undefined) {
    if (!sameUidByDefault) return null;
    const me = process.getuid!();
    return (c) => c.uid === me || c.uid === 0;
  }
  if (typeof allow === 'function') return allow;
  if (typeof allow !== 'object' || allow === null) throw invalidArg('allow must be a function or { uids, gids, check }');
  const uids = allow.uids ? new Set(allow.uids) : null;
  const gids = allow.gids ? new Set(allow.gids) : null;
  const fn = allow.check;
  return (c) => {
    if ((uids || gids) && !(uids?.has(c.uid) || gids?.has(c.gid))) return false;
    return fn ? fn(c) : true;
  };
}
