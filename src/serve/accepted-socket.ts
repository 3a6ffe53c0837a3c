/**
 * A handed-over connection as the server it goes to would have accepted it.
 *
 * A listening net.Server applies its own options to every connection in its
 * accept callback: allowHalfOpen, pauseOnConnect and highWaterMark when it
 * creates the socket, then TCP_NODELAY (noDelay) and SO_KEEPALIVE
 * (keepAlive, keepAliveInitialDelay). An fd a worker adopts never passes
 * through that callback, so the worker applies the target server's options
 * here, read from the server per connection as Node's own accept does.
 * http.Server and https.Server default to noDelay: without it, a response
 * written in two parts waits for the client's delayed ACK (Nagle's
 * algorithm): about 40 ms a response on Linux.
 *
 * The options are the server's own fields (set by its constructor from the
 * options given to createServer(): the same in Node 20 to 26); a server
 * without them (not a net.Server) gets net.Socket's defaults.
 *
 * Ownership: the returned socket owns `fd`.
 */
import * as net from 'node:net';

/** The fields net.Server's constructor keeps from its options. */
interface AcceptFields {
  allowHalfOpen?: unknown;
  pauseOnConnect?: unknown;
  highWaterMark?: unknown;
  noDelay?: unknown;
  keepAlive?: unknown;
  /** Seconds (net.Server keeps the option's milliseconds / 1000). */
  keepAliveInitialDelay?: unknown;
}

/**
 * Wraps the connected TCP fd in a net.Socket configured as `server` (null:
 * no server, net.Socket's defaults) would configure it. `underTls`: the
 * worker does the TLS handshake on this socket before the server sees the
 * decrypted stream, so only the TCP options (noDelay, keepAlive) apply: it
 * must read at once, and the TLS socket above it handles half-closes.
 */
export function openAccepted(fd: number, server: net.Server | null, underTls = false): net.Socket {
  const f = (server ?? {}) as AcceptFields;
  const hwm = typeof f.highWaterMark === 'number' && !underTls ? f.highWaterMark : undefined;
  const socket = new net.Socket({
    fd,
    readable: true,
    writable: true,
    allowHalfOpen: f.allowHalfOpen === true && !underTls,
    // net.Socket's own option for a server's pauseOnConnect (what
    // net.Server's accept passes): no read starts until resume().
    pauseOnCreate: f.pauseOnConnect === true && !underTls,
    readableHighWaterMark: hwm,
    writableHighWaterMark: hwm,
  } as net.SocketConstructorOpts);
  if (f.noDelay === true) socket.setNoDelay(true);
  if (f.keepAlive === true) {
    const delayS = typeof f.keepAliveInitialDelay === 'number' ? f.keepAliveInitialDelay : 0;
    socket.setKeepAlive(true, delayS * 1000);
  }
  return socket;
}
