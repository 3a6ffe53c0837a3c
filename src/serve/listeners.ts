/**
 * The listening sockets of `fdpass serve`, held by the primary alone.
 *
 *   --listen 127.0.0.1:8080        TCP over IPv4
 *   --listen [::1]:8443,tls        TCP over IPv6 (IPV6_V6ONLY, so [::]:80 and
 *                                  0.0.0.0:80 can both be bound), TLS done by
 *                                  the workers
 *   --listen unix:/run/app.sock    a Unix stream socket (mode 0600)
 *   --listen systemd[:NAME]        fds inherited by socket activation
 *   ...,name=NAME                  the name the worker app sees (default
 *                                  'http', or 'https' with tls)
 * Port 0 asks the kernel for a free port; the bound port is reported.
 *
 * A tcp or unix listener is not bound again when an inherited listening fd
 * (LISTEN_FDS: a socket unit, or the fd store of a previous run) has its
 * name and address (listener-match.ts): it is taken over, so that what
 * waited in its backlog meanwhile is served.
 */
import * as net from 'node:net';
import { native, K } from '../native';
import { check, invalidArg, ServeConfigError } from '../errors';
import { listenUnix, unlinkIfOurs } from '../socket/bind';
import { adoptSocket } from '../socket/adopt';
import { encodeAddress } from '../socket/address';
import { takeListenFds, type InheritedFd } from './inherited-fds';
import { matchListeners, type MatchSpec } from './listener-match';

export interface ListenerSpec {
  kind: 'tcp' | 'unix' | 'systemd';
  host?: string;
  port?: number;
  path?: string;
  /** systemd: the LISTEN_FDNAMES name to take ('' for all). */
  fdName?: string;
  tls: boolean;
  name?: string;
}

/** What the workers are told about a listener. */
export interface ListenerInfo {
  index: number;
  name: string;
  tls: boolean;
  kind: 'tcp' | 'unix' | 'systemd';
  /** '127.0.0.1:8080', '[::1]:8443', a path, ... */
  address: string;
  port?: number;
}

export interface Listener extends ListenerInfo {
  fd: number;
  /** Inherited (systemd): never unlinked, never shut down by us. */
  inherited: boolean;
  /** Pushed into systemd's fd store (fd-store.ts): like an inherited one,
   * it outlives this process, with its backlog, for the next run. */
  stored?: boolean;
  /** Handed out to another process (`_getsocks`: a new primary, HAProxy),
   * or taken over from one that may still hold it (takeover.ts, until the
   * old process was told to finish): this process only closes its copy,
   * never filters it, drains its backlog or unlinks its socket file. */
  shared?: boolean;
  /** Unix path socket created by us: its inode, to unlink on close. */
  ino?: number | null;
}

export function parseListen(spec: string): ListenerSpec {
  const [addr, ...opts] = spec.split(',');
  let tls = false;
  let name: string | undefined;
  for (const o of opts) {
    if (o === 'tls') tls = true;
    else if (o.startsWith('name=') && o.length > 5) name = o.slice(5);
    else throw invalidArg(`--listen ${spec}: unknown option '${o}' (tls, name=NAME)`);
  }
  if (!addr) throw invalidArg(`--listen ${spec}: no address`);
  if (addr === 'systemd' || addr.startsWith('systemd:')) {
    return { kind: 'systemd', fdName: addr.slice(8), tls, name };
  }
  if (addr.startsWith('unix:') || addr.startsWith('/')) {
    const path = addr.startsWith('unix:') ? addr.slice(5) : addr;
    encodeAddress(path);
    return { kind: 'unix', path, tls, name };
  }
  let host: string;
  let portText: string | undefined;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(addr);
  if (v6) {
    host = v6[1]!;
    portText = v6[2];
  } else {
    const i = addr.lastIndexOf(':');
    if (i >= 0 && addr.indexOf(':') !== i) throw invalidArg(`--listen ${spec}: write IPv6 addresses in brackets, [::1]:8443`);
    host = i >= 0 ? addr.slice(0, i) : addr;
    portText = i >= 0 ? addr.slice(i + 1) : undefined;
  }
  if (host === 'localhost') host = '127.0.0.1';
  if (!net.isIP(host)) throw invalidArg(`--listen ${spec}: '${host}' is not an IP address`);
  const port = portText === undefined ? (tls ? 443 : 80) : Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535 || (portText !== undefined && !/^\d+$/.test(portText))) {
    throw invalidArg(`--listen ${spec}: bad port '${portText}'`);
  }
  return { kind: 'tcp', host, port, tls, name };
}

/**
 * Opens every listener, taking over the `inherited` fds that match (default:
 * LISTEN_FDS, taken now); those no listener takes are closed (their `used`
 * stays false). On failure closes those already open and throws.
 */
export async function openListeners(specs: ListenerSpec[], backlog = 511, inherited: InheritedFd[] = takeListenFds()): Promise<Listener[]> {
  const out: Listener[] = [];
  try {
    try {
      const { bySpec } = matchListeners(specs.map(matchSpec), inherited);
      for (const [i, spec] of specs.entries()) {
        const fds = bySpec[i]!;
        if (spec.kind === 'systemd' && fds.length === 0) {
          throw new ServeConfigError('FDPASS_ERR_NO_SYSTEMD_FDS',
            `--listen systemd${spec.fdName ? ':' + spec.fdName : ''}: no such fd was passed (LISTEN_FDS/LISTEN_FDNAMES)`);
        }
        if (fds.length === 0) {
          out.push(await openOne(spec, out.length, backlog));
          continue;
        }
        for (const f of fds) {
          // Ours once described; one that is not a listener stays unused
          // and is closed below.
          out.push(describeInherited(f.fd, f.name, spec, out.length));
          f.used = true;
        }
      }
    } finally {
      // Inherited fds nobody asked for are not ours to keep.
      for (const f of inherited) if (!f.used) native.close(f.fd);
    }
    return out;
  } catch (err) {
    closeListeners(out);
    throw err;
  }
}

function listenerName(spec: ListenerSpec): string {
  return spec.name ?? (spec.tls ? 'https' : 'http');
}

export function matchSpec(spec: ListenerSpec): MatchSpec {
  return {
    kind: spec.kind, name: listenerName(spec), host: spec.host, port: spec.port, fdName: spec.fdName,
    unixAddress: spec.kind === 'unix' ? encodeAddress(spec.path!) : undefined,
  };
}

async function openOne(spec: ListenerSpec, index: number, backlog: number): Promise<Listener> {
  const name = listenerName(spec);
  if (spec.kind === 'unix') {
    // The one listen sequence (socket/bind.ts): if it fails, no fd and no
    // socket file are left.
    const { fd, ino } = await listenUnix(K.SOCK_STREAM, spec.path!, { mode: 0o600, backlog });
    return { index, name, tls: spec.tls, kind: 'unix', address: spec.path!, fd, inherited: false, ino };
  }
  const v6 = net.isIPv6(spec.host!);
  const family = v6 ? K.AF_INET6 : K.AF_INET;
  const shown = v6 ? `[${spec.host}]:${spec.port}` : `${spec.host}:${spec.port}`;
  const fd = check(native.socketInet(family), 'socket');
  try {
    check(native.setIntOpt(fd, K.SOL_SOCKET, K.SO_REUSEADDR, 1), 'setsockopt');
    if (v6) check(native.setIntOpt(fd, K.IPPROTO_IPV6, K.IPV6_V6ONLY, 1), 'setsockopt');
    check(native.bindInet(fd, family, spec.host!, spec.port!), 'bind', shown);
    check(native.listen(fd, backlog), 'listen', shown);
    const port = check(native.inetName(fd, false, NAME_BUF), 'getsockname');
    const address = v6 ? `[${spec.host}]:${port}` : `${spec.host}:${port}`;
    return { index, name, tls: spec.tls, kind: 'tcp', address, port, fd, inherited: false };
  } catch (err) {
    native.close(fd);
    throw err;
  }
}

const NAME_BUF = Buffer.alloc(64);

/**
 * An inherited listener, taken by `spec`: a systemd spec's (named by the
 * spec, else by its fd name), or an address spec's (which matched its
 * name and address: shown as if bound here).
 */
function describeInherited(fd: number, fdName: string, spec: ListenerSpec, index: number): Listener {
  const { family } = adoptSocket(fd, { unix: false, listening: true, what: `systemd fd ${fd} (${fdName || 'unnamed'})` });
  const name = spec.kind === 'systemd' ? spec.name ?? (fdName || (spec.tls ? 'https' : 'http')) : listenerName(spec);
  let address = spec.kind === 'unix' ? spec.path! : `systemd fd ${fd}`;
  let port: number | undefined;
  if (family === K.AF_INET || family === K.AF_INET6) {
    port = native.inetName(fd, false, NAME_BUF);
    const host = NAME_BUF.toString('latin1', 0, NAME_BUF.indexOf(0));
    address = family === K.AF_INET6 ? `[${host}]:${port}` : `${host}:${port}`;
  }
  return { index, name, tls: spec.tls, kind: spec.kind, address, port, fd, inherited: true };
}

/** Whether `l` lives on after this process closes its fd (inherited, or in
 * systemd's fd store): then it is never unlinked nor filtered on shutdown. */
export function outlivesUs(l: Listener): boolean {
  return l.inherited || l.stored === true || l.shared === true;
}

/** Closes listeners; unlinks the Unix socket files this process created
 * (unless they live on: the next run takes them over). */
export function closeListeners(listeners: Listener[]): void {
  for (const l of listeners) {
    if (l.fd < 0) continue;
    native.close(l.fd);
    l.fd = -1;
    if (l.kind === 'unix' && l.ino != null && !outlivesUs(l)) unlinkIfOurs(l.address, l.ino);
  }
}

export function publicInfo(l: Listener): ListenerInfo {
  return { index: l.index, name: l.name, tls: l.tls, kind: l.kind, address: l.address, port: l.port };
}
