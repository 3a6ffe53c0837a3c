/**
 * The server side of `_getsocks` (getsocks.ts): `fdpass serve
 * --expose-listeners PATH`. A SOCK_STREAM Unix socket, mode 0600, that
 * serves only peers of this process's uid (SO_PEERCRED, checked before a
 * byte is read, as the control socket does), and answers "_getsocks\n"
 * with this primary's listeners in HAProxy's format: `haproxy -x PATH`
 * and `fdpass serve --takeover PATH` both take them from here.
 *
 * Each connection is one session: the request line, then the count and
 * the batches (waiting for the client's acknowledgement after each full
 * one), then, fdpass's extension, the wait for FINISH_REQUEST: the new
 * primary sends it once it serves, and this one answers FINISH_REPLY and
 * stops. A client that closes without it (HAProxy does, always) leaves
 * this primary serving on; the listeners are shared from the first batch
 * on, whatever happens next (the target decides what that means).
 *
 * No client can hurt the primary: at most MAX_SESSIONS at once, each
 * with deadlines for its request line and its acknowledgements; no fds are
 * taken from clients; what a client sends after its request is read and
 * dropped (only the last bytes are kept, to find FINISH_REQUEST).
 *
 * Ownership: the server owns its listening socket and the sessions' sockets.
 * The listener fds it sends are borrowed from the target for the duration
 * of each send: the target must close() this server before it closes them.
 */
import { UnixServer } from '../socket/server';
import type { UnixSocket } from '../socket/socket';
import type { Credentials } from '../socket/frame';
import { isAbstract } from '../socket/address';
import { Throttled, type Log } from './log';
import { prepareControlDir } from './control-path';
import {
  GETSOCKS_REQUEST, FINISH_REQUEST, FINISH_REPLY, MAX_BATCH_FDS, encodeInt, encodeRecords, type SockRecord,
} from './getsocks';

/** What the server needs of the primary. */
export interface ExposeTarget {
  /** The listening fds to hand out now, in order; none while stopping. */
  exposed(): readonly number[];
  /** Just before the first fd goes to `peer`: the listeners are shared from now on. */
  handedOut(peer: Credentials): void;
  /** `peer`, which took the listeners, asks this process to finish.
   * Resolves once what the new process will bind (control socket, this
   * socket's path) is released, true; the reply goes out after. False:
   * refused (no reply, no finish). Never rejects. */
  release(peer: Credentials): Promise<boolean>;
  /** The reply went out (or could not): stop now. */
  finish(peer: Credentials): void;
  /** `peer` took the listeners and closed without asking this one to finish. */
  left(peer: Credentials): void;
  readonly log: Log;
}

export interface ExposeOptions {
  /** ms a client has for its request line, and for each acknowledgement (default 5 s). */
  requestTimeout?: number;
  /** ms a client that took the listeners has to ask this one to finish (default 60 s). */
  finishTimeout?: number;
}

/** Sessions at once at most; more are closed at once. */
const MAX_SESSIONS = 4;
/** A request line longer than this is not one. */
const MAX_LINE = 256;
/** Clients send lines and acknowledgements, never fds. */
const SESSION_SOCKET = { raw: true, maxFdsPerMessage: 0, maxMessageSize: 4096, highWaterMark: 4 } as const;
/** fdpass binds no listener in a namespace or to an interface. */
const NO_NAMES: SockRecord = { namespace: '', iface: '' };

export class ExposeServer {
  readonly #server: UnixServer;
  readonly #target: ExposeTarget;
  readonly #requestMs: number;
  readonly #finishMs: number;
  readonly #sessions = new Set<UnixSocket>();
  readonly #refused: Throttled;

  private constructor(server: UnixServer, target: ExposeTarget, options: ExposeOptions) {
    this.#server = server;
    this.#target = target;
    this.#requestMs = options.requestTimeout ?? 5000;
    this.#finishMs = options.finishTimeout ?? 60_000;
    this.#refused = new Throttled('expose-refused', target.log);
    server.unref();
    server.on('connection', (sock: UnixSocket) => this.#admit(sock));
    server.on('refused', (peer: Credentials) => this.#refused.emit({ reason: `uid ${peer.uid}`, pid: peer.pid }));
    server.on('error', () => {}); // accept errors: the server backs off and resumes by itself
  }

  /** Listens on `file`, a path (its directory is created 0700 if missing;
   * the default control directory must be trusted: control-path.ts) or an
   * abstract name ('\0name'). */
  static async listen(file: string, target: ExposeTarget, options: ExposeOptions = {}): Promise<ExposeServer> {
    if (!isAbstract(file)) prepareControlDir(file);
    const me = process.getuid!();
    const server = await UnixServer.listen(file, { type: 'stream', mode: 0o600, allow: { uids: [me] }, ...SESSION_SOCKET });
    return new ExposeServer(server, target, options);
  }

  get address(): string {
    return this.#server.address;
  }

  /** Stops listening (the path is free for a new process to bind);
   * sessions under way go on. */
  stopListening(): Promise<void> {
    return this.#server.close();
  }

  /** Stops listening and closes every session (sends under way are
   * abandoned: the listener fds are no longer borrowed once this resolves). */
  async close(): Promise<void> {
    await this.#server.close();
    for (const s of this.#sessions) s.close();
  }

  #admit(sock: UnixSocket): void {
    sock.unref();
    if (this.#sessions.size >= MAX_SESSIONS) {
      sock.close();
      this.#refused.emit({ reason: `${MAX_SESSIONS} sessions open` });
      return;
    }
    this.#sessions.add(sock);
    sock.on('error', () => sock.close());
    void this.#serve(sock).catch((err: Error) => {
      this.#target.log('expose-error', { error: err.message });
    }).finally(() => {
      sock.close();
      this.#sessions.delete(sock);
    });
  }

  async #serve(sock: UnixSocket): Promise<void> {
    const peer = sock.peerCredentials();
    const line = await readLine(sock, this.#requestMs);
    if (line === null) return;
    if (line !== GETSOCKS_REQUEST.trimEnd()) {
      await sock.send(`Unknown command: '${line.slice(0, 40)}': this socket serves only _getsocks\n`).catch(() => {});
      return;
    }
    const fds = this.#target.exposed();
    // HAProxy's way of saying "nothing here": no count, the connection closes.
    if (fds.length === 0) return;
    this.#target.handedOut(peer);
    this.#target.log('listeners-exposed', { pid: peer.pid, uid: peer.uid, listeners: fds.length });
    await sock.send(encodeInt(fds.length));
    for (let off = 0; off < fds.length; off += MAX_BATCH_FDS) {
      const batch = fds.slice(off, off + MAX_BATCH_FDS);
      await sock.send({ data: encodeRecords(batch.map(() => NO_NAMES)), fds: batch });
      const last = off + MAX_BATCH_FDS >= fds.length;
      if (!last && !(await readSome(sock, this.#requestMs))) {
        throw new Error(`pid ${peer.pid} did not acknowledge a batch of listeners within ${this.#requestMs} ms`);
      }
    }
    if (!(await waitForFinish(sock, this.#finishMs))) {
      this.#target.left(peer);
      return;
    }
    if (!(await this.#target.release(peer))) return;
    await sock.send(FINISH_REPLY).catch(() => {});
    this.#target.finish(peer);
  }
}

/** The first line the client sends (without its newline); null if it
 * closes, sends more than MAX_LINE bytes without one, or takes longer than
 * `ms`. */
async function readLine(sock: UnixSocket, ms: number): Promise<string | null> {
  const deadline = Date.now() + ms;
  let got = '';
  while (got.length <= MAX_LINE) {
    const i = got.indexOf('\n');
    if (i >= 0) return got.slice(0, i);
    const chunk = await readChunk(sock, deadline);
    if (chunk === null) return null;
    got += chunk;
  }
  return null;
}

/** Whether anything (an acknowledgement) came within `ms`. */
async function readSome(sock: UnixSocket, ms: number): Promise<boolean> {
  return (await readChunk(sock, Date.now() + ms)) !== null;
}

/** Reads until FINISH_REQUEST (true) or the end: EOF, an error or `ms`
 * passing (false). Acknowledgements and anything else are dropped. */
async function waitForFinish(sock: UnixSocket, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  let tail = '';
  for (;;) {
    const chunk = await readChunk(sock, deadline);
    if (chunk === null) return false;
    tail = (tail + chunk).slice(-2 * FINISH_REQUEST.length);
    if (tail.includes(FINISH_REQUEST)) return true;
  }
}

/** One read's bytes (latin1), or null at EOF, on an error or at `deadline`. */
async function readChunk(sock: UnixSocket, deadline: number): Promise<string | null> {
  const left = deadline - Date.now();
  if (left <= 0) return null;
  try {
    const m = await sock.receive({ timeout: left });
    const s = m.data.toString('latin1');
    m.close();
    return s;
  } catch {
    return null;
  }
}
