/**
 * The built-in app of `fdpass serve`: answers each request with the
 * primary's pid, the pid of the worker that served it and how the
 * connection reached it.
 */
import type * as http from 'node:http';
import { connectionInfo } from './worker';

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
    url: req.url,
  };
  const text = JSON.stringify(body) + '\n';
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
