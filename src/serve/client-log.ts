/**
 * A worker's log of connections refused before the app got anything from
 * them, one JSON line per event (log.ts), at most one a second per event
 * (Throttled: a client can cause these at any rate):
 *
 *   proxy-header-error  a `proxy` listener's connection without a valid
 *                       PROXY header in time (proxy-header-read.ts): the
 *                       reason, and the peer (the balancer)
 *   client-error        an HTTP request that Node's parser refused (HPE_*),
 *                       or a TLS handshake that failed (ERR_SSL_*), on a
 *                       connection the worker gave to an http server or did
 *                       the TLS of; a client that resets or goes is not
 *                       logged. When the refused bytes begin with a PROXY
 *                       header on a listener without `proxy`, `hint` says
 *                       so: they were refused like any other bad request
 *                       (the header is read nowhere else), but the likely
 *                       cause is a balancer's `send-proxy` aimed at the
 *                       wrong listener.
 */
import type * as net from 'node:net';
import { Throttled, type Log } from './log';
import type { ListenerInfo } from './listeners';
import { parseProxyHeader } from './proxy-protocol';

export class ClientLog {
  readonly #proxy: Throttled;
  readonly #client: Throttled;

  constructor(log: Log) {
    this.#proxy = new Throttled('proxy-header-error', log);
    this.#client = new Throttled('client-error', log);
  }

  proxyHeader(listener: ListenerInfo, peer: string, reason: string): void {
    this.#proxy.emit({ worker: process.pid, listener: shown(listener), peer, reason });
  }

  /** An 'error' of a connection's socket: logged if it is the client's fault. */
  socketError(listener: ListenerInfo, socket: net.Socket, err: Error): void {
    const code = (err as { code?: unknown }).code;
    if (typeof code !== 'string' || !(code.startsWith('HPE_') || code.startsWith('ERR_SSL_'))) return;
    const raw = (err as { rawPacket?: unknown }).rawPacket;
    const hint = !listener.proxy && raw instanceof Uint8Array && parseProxyHeader(raw).kind !== 'error'
      ? 'the request starts with a PROXY protocol header, and this listener has no proxy option'
      : undefined;
    // Gone with the socket's fd unless something asked before (a PROXY header's client is kept).
    const peer = socket.remoteAddress ? { peer: `${socket.remoteAddress}:${socket.remotePort}` } : {};
    this.#client.emit({ worker: process.pid, listener: shown(listener), ...peer, error: code, ...(hint ? { hint } : {}) });
  }
}

function shown(l: ListenerInfo): string {
  return `${l.name} ${l.address}`;
}
