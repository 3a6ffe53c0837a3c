/**
 * The built-in app of `fdpass serve`: answers each request with the
 * primary's pid, the pid of the worker that served it and how the
 * connection reached it (`client` is the client's address, from the PROXY
 * header on a `proxy` listener; `proxy` then says what the header said).
 */
import type * as http from 'node:http';
import * as net from 'node:net';
import { connectionInfo } from './worker';
import type { ProxyHeader } from './proxy-protocol';

export function demoHandler(req: http.IncomingMessage, res: http.ServerResponse): void {
  const info = connectionInfo(req.socket);
  const body = {
    primary: info?.primaryPid ?? null,
    worker: process.pid,
    listener: info ? `${info.listener.name} ${info.listener.address}` : null,
    tls: Boolean((req.socket as { encrypted?: boolean }).encrypted),
    via: info
      ? `accepted by the primary, handed over as fd in a batch of ${info.batch} (connection ${info.id}) over SOCK_SEQPACKET with SCM_RIGHTS`
      : 'not handed over by fdpass',
    client: req.socket.remoteAddress ? `${req.socket.remoteAddress}:${req.socket.remotePort}` : 'unix socket peer',
    ...(info?.proxy ? { proxy: proxyLine(info.proxy) } : {}),
    url: req.url,
  };
  const text = JSON.stringify(body) + '\n';
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** 'PROXY v2 TCP over IPv4 for 192.0.2.1:5555 to 198.51.100.1:443', 'PROXY v2 LOCAL'. */
function proxyLine(h: ProxyHeader): string {
  if (h.command === 'local') return `PROXY v${h.version} LOCAL`;
  if (!h.source || !h.dest) return `PROXY v${h.version} ${h.family === 'unspec' ? 'UNKNOWN' : h.family}`;
  const at = (e: { address: string; port?: number }) => (e.port === undefined ? e.address : net.isIPv6(e.address) ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`);
  return `PROXY v${h.version} ${h.transport} over ${h.family} for ${at(h.source)} to ${at(h.dest)}`;
}
