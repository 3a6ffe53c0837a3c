/**
 * The PROXY protocol from the balancer's side: headers made by hand (v1
 * lines and v2 binary headers, valid or not, for the parser's tests and
 * for clients that play a balancer), and a real HAProxy (Debian's package,
 * installed by scripts/debian-deps.sh from `npm test`'s pretest) in TCP mode
 * in front of `fdpass serve`, with `send-proxy` or `send-proxy-v2`.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Child } from './process';
import type { Deferrer } from './scope';
import { freePort } from './sockets';
import { waitFor } from './wait';

export const V2_SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`. */
export function proxyV1(src: string, dst: string, sport: number, dport: number): Buffer {
  return Buffer.from(`PROXY ${net.isIPv6(src) ? 'TCP6' : 'TCP4'} ${src} ${dst} ${sport} ${dport}\r\n`, 'latin1');
}

export interface V2Options {
  /** 0 LOCAL, 1 PROXY (default); anything else to test refusals. */
  command?: number;
  /** The version nibble (default 2). */
  version?: number;
  /** Family/transport byte; default from the addresses (0x11 or 0x21). */
  fam?: number;
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  /** Raw address block instead of src/dst (AF_UNIX, junk). */
  block?: Buffer;
  /** TLVs (or any bytes) after the address block. */
  tlvs?: Buffer;
  /** The length field, if not the true one. */
  length?: number;
}

/** A v2 header. */
export function proxyV2(o: V2Options = {}): Buffer {
  let block = o.block;
  let fam = o.fam;
  if (!block && o.src !== undefined) {
    const v6 = net.isIPv6(o.src);
    const addr = (a: string) => (v6 ? ipv6Bytes(a) : Buffer.from(a.split('.').map(Number)));
    const ports = Buffer.alloc(4);
    ports.writeUInt16BE(o.sport ?? 0, 0);
    ports.writeUInt16BE(o.dport ?? 0, 2);
    block = Buffer.concat([addr(o.src), addr(o.dst ?? (v6 ? '::' : '0.0.0.0')), ports]);
    fam ??= v6 ? 0x21 : 0x11;
  }
  const body = Buffer.concat([block ?? Buffer.alloc(0), o.tlvs ?? Buffer.alloc(0)]);
  const head = Buffer.alloc(4);
  head[0] = ((o.version ?? 2) << 4) | (o.command ?? 1);
  head[1] = fam ?? 0;
  head.writeUInt16BE(o.length ?? body.length, 2);
  return Buffer.concat([V2_SIG, head, body]);
}

/** A TLV: type, 16-bit length, value. */
export function tlv(type: number, value: Buffer | string): Buffer {
  const v = typeof value === 'string' ? Buffer.from(value) : value;
  const h = Buffer.alloc(3);
  h[0] = type;
  h.writeUInt16BE(v.length, 1);
  return Buffer.concat([h, v]);
}

function ipv6Bytes(a: string): Buffer {
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const parse = (s: string | undefined) => (s ? s.split(':').map((g) => parseInt(g, 16)) : []);
  const h = parse(head);
  const t = parse(tail);
  const groups = tail === undefined ? h : [...h, ...new Array(8 - h.length - t.length).fill(0), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

// ---- HAProxy -------------------------------------------------------------------------

/** The haproxy command, or null (with why) where it is not installed. */
export function haproxyCommand(): string | null {
  for (const c of ['/usr/sbin/haproxy', '/usr/bin/haproxy']) if (fs.existsSync(c)) return c;
  const r = spawnSync('sh', ['-c', 'command -v haproxy'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() ? r.stdout.trim() : null;
}

export const NO_HAPROXY = 'haproxy is not installed (Debian: apt-get install haproxy; npm test installs it when it runs as root)';

/** A route through HAProxy: where clients connect, and what it sends to the server. */
export interface Route {
  /** The frontend's address (bound by HAProxy). */
  host: string;
  port: number;
  /** The server behind it (an fdpass listener). */
  to: { host: string; port: number };
  send: 'send-proxy' | 'send-proxy-v2';
}

/** HAProxy in TCP mode, one frontend per route, each on a free port found now. */
export class HAProxy extends Child {
  readonly routes: Route[];

  private constructor(cmd: string, config: string, routes: Route[], owner: Deferrer) {
    super([cmd, '-f', config, '-db'], { owner, label: 'haproxy' });
    this.routes = routes;
  }

  /** Starts it with these routes and waits until every frontend accepts. */
  static async start(cmd: string, dir: string, routes: Omit<Route, 'port'>[], owner: Deferrer): Promise<HAProxy> {
    const full: Route[] = [];
    for (const r of routes) full.push({ ...r, port: await freePort(r.host) });
    const at = (h: string, p: number) => (net.isIPv6(h) ? `[${h}]:${p}` : `${h}:${p}`);
    const lines = [
      'global', '  maxconn 256',
      'defaults', '  mode tcp', '  timeout connect 2s', '  timeout client 10s', '  timeout server 10s',
      ...full.flatMap((r, i) => [
        `frontend f${i}`, `  bind ${at(r.host, r.port)}`, `  default_backend b${i}`,
        `backend b${i}`, `  server s${i} ${at(r.to.host, r.to.port)} ${r.send}`,
      ]),
    ];
    const config = path.join(dir, 'haproxy.cfg');
    fs.writeFileSync(config, lines.join('\n') + '\n');
    const h = new HAProxy(cmd, config, full, owner);
    for (const r of full) {
      await waitFor(() => {
        if (h.result) throw new Error(`haproxy exited (code ${h.result.code}) before it listened\nconfig:\n${lines.join('\n')}\nstderr:\n${h.stderr}`);
        return canConnect(r.host, r.port);
      }, { timeout: 10_000, interval: 20, what: `haproxy listening on ${at(r.host, r.port)}`, detail: () => `stderr:\n${h.stderr}` });
    }
    return h;
  }
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
