/**
 * TCP sockets seen from outside: free ports, whether ::1 exists, many idle
 * connections at once, and which processes hold a socket (ss, and /proc).
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';

/** Binds `host`:`port` (0: any free port) and closes it again; resolves with the port, rejects if it cannot be bound. */
export async function listenAndClose(port: number, host = '127.0.0.1'): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((res, rej) => s.once('error', rej).listen(port, host, () => res()));
  const bound = (s.address() as net.AddressInfo).port;
  await new Promise<void>((res) => s.close(() => res()));
  return bound;
}

/** A port that was free a moment ago (bound to 0 and closed). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return listenAndClose(0, host);
}

/** Whether ::1 is configured and can be bound. */
export async function hasIPv6Loopback(): Promise<boolean> {
  try {
    if (!/^0{31}1 /m.test(fs.readFileSync('/proc/net/if_inet6', 'utf8'))) return false;
    await listenAndClose(0, '::1');
    return true;
  } catch {
    return false;
  }
}

/**
 * Opens `n` TCP connections to `host`:`port`, `batch` at a time, and sends
 * nothing on them. Never rejects: every socket is returned (the caller
 * destroys them), with the number whose connect failed.
 */
export async function connectIdle(host: string, port: number, n: number, batch = 100): Promise<{ sockets: net.Socket[]; errors: number }> {
  const sockets: net.Socket[] = [];
  let errors = 0;
  for (let i = 0; i < n; i += batch) {
    await Promise.all(Array.from({ length: Math.min(batch, n - i) }, () => new Promise<void>((resolve) => {
      const c = net.connect(port, host, () => resolve());
      c.on('error', () => {
        errors++;
        resolve();
      });
      sockets.push(c);
    })));
  }
  return { sockets, errors };
}

export interface SocketQuery {
  /** The server side's port. */
  localPort: number;
  /** The client's port: an established connection; without it, the listening socket. */
  peerPort?: number;
}

function portOf(addrPort: string): number {
  return Number(addrPort.slice(addrPort.lastIndexOf(':') + 1));
}

/** Pids holding the TCP socket, according to `ss -tnpH` (-l for a listener). */
export function socketOwnersSs(q: SocketQuery): number[] {
  const r = spawnSync('ss', [q.peerPort === undefined ? '-tlnpH' : '-tnpH'], { encoding: 'utf8' });
  assert.equal(r.status, 0, `ss failed: ${r.stderr}`);
  const pids = new Set<number>();
  for (const line of r.stdout.split('\n')) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 5) continue;
    const [state, , , local, peer] = cols as [string, string, string, string, string];
    if (q.peerPort === undefined ? state !== 'LISTEN' : state !== 'ESTAB') continue;
    if (portOf(local) !== q.localPort) continue;
    if (q.peerPort !== undefined && portOf(peer) !== q.peerPort) continue;
    for (const m of line.matchAll(/pid=(\d+)/g)) pids.add(Number(m[1]));
  }
  return [...pids].sort((a, b) => a - b);
}

/** The same from /proc: socket inodes in /proc/net/tcp{,6} matched against every /proc/PID/fd. */
export function socketOwnersProc(q: SocketQuery): number[] {
  const inodes = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10) continue;
      const local = parseInt(c[1]!.split(':')[1]!, 16);
      const peer = parseInt(c[2]!.split(':')[1]!, 16);
      const state = c[3]; // 0A LISTEN, 01 ESTABLISHED
      if (local !== q.localPort) continue;
      if (q.peerPort === undefined ? state !== '0A' : state !== '01' || peer !== q.peerPort) continue;
      inodes.add(`socket:[${c[9]}]`);
    }
  }
  const pids = new Set<number>();
  if (inodes.size === 0) return [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${name}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (inodes.has(fs.readlinkSync(`/proc/${name}/fd/${fd}`))) pids.add(Number(name));
      } catch {
        // closed meanwhile
      }
    }
  }
  return [...pids].sort((a, b) => a - b);
}
