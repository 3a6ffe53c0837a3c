/**
 * The deadline of a TLS handshake on a connection handed to a worker.
 *
 * Without it, a client that connects to a TLS listener and sends nothing,
 * or stops halfway through its ClientHello, holds a worker's fd for ever:
 * Node's HTTP header and request timeouts start only once there is
 * plaintext to parse, after TLS; and a tls.Server's own handshakeTimeout
 * (120 s by default) only emits 'tlsClientError': the socket stays open
 * unless the server is an https.Server or the app destroys it (Node 20).
 *
 * The deadline is armed on the adopted (raw) socket when the worker takes
 * the connection, and is absolute: bytes trickled during the handshake do
 * not extend it. Whoever sees the handshake complete clears it (the worker
 * for a TLS socket of its own, or on its tls.Server target's
 * 'secureConnection'). At the deadline the raw socket is destroyed, which
 * closes its fd and ends a TLS socket built over it.
 */
import type * as net from 'node:net';

/** `--handshake-timeout` and `handshakeTimeout` when not given (ms). */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** The longest a Node timer can wait (a larger delay fires at once). */
export const MAX_HANDSHAKE_TIMEOUT_MS = 2 ** 31 - 1;

const DEADLINE = Symbol('fdpass.handshakeDeadline');

type Guarded = net.Socket & { [DEADLINE]?: NodeJS.Timeout };

/** Whether `ms` can be a handshake timeout: a whole number of ms a timer can wait. */
export function validHandshakeTimeout(ms: unknown): ms is number {
  return Number.isInteger(ms) && (ms as number) >= 1 && (ms as number) <= MAX_HANDSHAKE_TIMEOUT_MS;
}

/** Destroys `raw` in `ms` unless handshakeDone(raw) is called first (or it closes). */
export function armHandshakeDeadline(raw: net.Socket, ms: number): void {
  const timer = setTimeout(() => raw.destroy(), ms);
  // The channel to the primary keeps a worker alive, not its clients.
  timer.unref();
  (raw as Guarded)[DEADLINE] = timer;
  raw.once('close', () => clearTimeout(timer));
}

/** The TLS handshake on `raw` completed: no deadline any more. */
export function handshakeDone(raw: net.Socket): void {
  const s = raw as Guarded;
  if (s[DEADLINE] === undefined) return;
  clearTimeout(s[DEADLINE]);
  s[DEADLINE] = undefined;
}
