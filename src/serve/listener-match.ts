/**
 * Which inherited listening socket serves which listener spec: pure code,
 * no I/O. The listening fds may come from systemd (LISTEN_FDS: socket
 * units, or the fd store a previous run filled) or from another process
 * handing its listeners over; whoever took them describes each one
 * (its name, and what getsockname() and SO_TYPE/SO_ACCEPTCONN say) and gets
 * back which fd goes to which spec and which fds nobody wants.
 *
 * The rules:
 * - An address spec (tcp, unix) takes one fd with the same listener name
 *   AND the same address: a listening SOCK_STREAM socket of the same family
 *   bound to the same host and port (a spec with port 0 takes any port:
 *   the one the previous run was given), or to the same Unix address. A
 *   name alone is not enough (two listeners may share one), nor is an
 *   address (the fd of another service, or of another listener name).
 * - A `systemd[:NAME]` spec then takes every fd left with that name (all
 *   that are left, without a name), whatever they are: it asked for them
 *   (whoever adopts them checks they are listeners).
 * - An fd that is the same socket as one taken before it (systemd passes a
 *   socket twice when a socket unit holds it and the fd store too) and
 *   every fd no spec takes are unused: the caller closes them.
 * Specs are served in order, so that the first of two identical specs gets
 * the first fd.
 */
import * as net from 'node:net';

/** A listener spec, as far as matching goes. */
export interface MatchSpec {
  kind: 'tcp' | 'unix' | 'systemd';
  /** The listener's name (what its fd is named by systemd: FDNAME). */
  name: string;
  host?: string;
  port?: number;
  /** unix: the sun_path bytes (socket/address.ts encodeAddress). */
  unixAddress?: Uint8Array;
  /** systemd: the fd name asked for ('' for all). */
  fdName?: string;
}

/** An inherited fd, as the taker found it. */
export interface ListeningFdInfo {
  fd: number;
  /** Its name (LISTEN_FDNAMES, FDNAME); '' when it has none. */
  name: string;
  /** Its address family; null when it is none of these (or not a socket). */
  family: 'inet' | 'inet6' | 'unix' | null;
  /** SOCK_STREAM. */
  stream: boolean;
  /** SO_ACCEPTCONN. */
  listening: boolean;
  /** inet: the bound host as inet_ntop() gives it, and port. */
  host?: string;
  port?: number;
  /** unix: the bound sun_path bytes. */
  unixAddress?: Uint8Array;
  /** What identifies the socket itself (fstat "dev:ino"), across dup()s. */
  id: string;
}

export interface ListenerMatch<T extends ListeningFdInfo> {
  /** For each spec (same order), the fds it takes: at most one for an
   * address spec, any number for a systemd one. */
  bySpec: T[][];
  /** The fds no spec takes (duplicates included), in the order given. */
  unused: T[];
}

export function matchListeners<T extends ListeningFdInfo>(specs: readonly MatchSpec[], fds: readonly T[]): ListenerMatch<T> {
  const seen = new Set<string>();
  const free: T[] = [];
  const unused: T[] = [];
  for (const f of fds) {
    if (seen.has(f.id)) unused.push(f);
    else {
      seen.add(f.id);
      free.push(f);
    }
  }
  const bySpec: T[][] = specs.map(() => []);
  specs.forEach((spec, i) => {
    if (spec.kind === 'systemd') return;
    const at = free.findIndex((f) => f.name === spec.name && sameAddress(spec, f));
    if (at >= 0) bySpec[i]!.push(...free.splice(at, 1));
  });
  specs.forEach((spec, i) => {
    if (spec.kind !== 'systemd') return;
    for (let j = 0; j < free.length;) {
      if (!spec.fdName || free[j]!.name === spec.fdName) bySpec[i]!.push(...free.splice(j, 1));
      else j++;
    }
  });
  unused.push(...free);
  unused.sort((a, b) => fds.indexOf(a) - fds.indexOf(b));
  return { bySpec, unused };
}

function sameAddress(spec: MatchSpec, f: ListeningFdInfo): boolean {
  if (!f.listening || !f.stream) return false;
  if (spec.kind === 'unix') {
    return f.family === 'unix' && f.unixAddress !== undefined && spec.unixAddress !== undefined &&
      Buffer.compare(Buffer.from(f.unixAddress), Buffer.from(spec.unixAddress)) === 0;
  }
  const v6 = net.isIPv6(spec.host ?? '');
  if (f.family !== (v6 ? 'inet6' : 'inet') || f.host === undefined) return false;
  if (spec.port !== 0 && f.port !== spec.port) return false;
  return canonicalHost(f.host, v6) === canonicalHost(spec.host!, v6);
}

/** One spelling per address ('0:0::1' and '::1' are the same): the URL
 * parser's, which compresses IPv6 as inet_ntop does. */
function canonicalHost(host: string, v6: boolean): string {
  if (!v6) return host;
  try {
    return new URL(`http://[${host}]/`).hostname;
  } catch {
    return host;
  }
}
