/**
 * The control socket of `fdpass serve`: a SOCK_SEQPACKET Unix socket, mode
 * 0600, that serves only peers of the primary's uid (SO_PEERCRED, checked
 * on every connection before a byte is read), speaking the channel
 * protocol: 'status' -> Status, 'reload' -> {}, 'upgrade' -> { pid } (the
 * new primary's, once it took over).
 *
 * It must not be a way to hurt the primary, even for a peer of its own uid:
 * - each connection is a session with backpressure and an idle timeout
 *   (control-session.ts);
 * - at most `maxConnections` sessions at once; more are closed at once
 *   (a control-refused line, one a second at most);
 * - 'status' asks every worker for its counts: concurrent requests share
 *   the query under way rather than start one each;
 * - at RLIMIT_NOFILE (EMFILE on accept) `fdpass status` must still be
 *   answered: the primary's spare fds are given up for one accept of a
 *   waiting control connection, and taken back (before anyone else) when a
 *   control connection closes.
 *
 * Where the socket goes, and whether its default directory can be trusted:
 * control-path.ts. The client: control-client.ts.
 */
import { UnixServer, lendFdsForAccept } from '../socket/server';
import { UnixSocket } from '../socket/socket';
import type { Status } from './status';
import { Throttled, type Log } from './log';
import { prepareControlDir } from './control-path';
import { serveSession } from './control-session';

export { defaultControlPath } from './control-path';
export { queryStatus, controlRequest } from './control-client';

/** What the control socket needs of the primary (Primary has all of it). */
export interface ControlTarget {
  /** The status after asking every worker for its current counts. */
  freshStatus(): Promise<Status>;
  reload(): Promise<void>;
  /** A new primary takes over; resolves with its pid (handover.ts). */
  upgrade(): Promise<number>;
  readonly log: Log;
  /** Runs `fn` (one accept at RLIMIT_NOFILE) with the spare fds given up. */
  withSpareFds<T>(fn: () => T): T;
  /** fds were closed outside the primary's parts (a control connection):
   * the spares are taken back first. */
  fdsClosed(): void;
}

export interface ControlOptions {
  /** Sessions at once (default 16). */
  maxConnections?: number;
  /** ms a session may go without a request read or an answer taken (default 60 s). */
  idleTimeout?: number;
}

/** The options of the control socket's connections: small requests, no fds,
 * little read ahead. */
const SESSION_SOCKET = { maxMessageSize: 4096, maxFdsPerMessage: 0, highWaterMark: 4 };

export class ControlServer {
  readonly #server: UnixServer;
  readonly #target: ControlTarget;
  readonly #max: number;
  readonly #idleMs: number;
  readonly #refused: Throttled;
  readonly #sessions = new Set<UnixSocket>();
  #status: Promise<Status> | null = null;

  private constructor(server: UnixServer, target: ControlTarget, options: ControlOptions) {
    this.#server = server;
    this.#target = target;
    this.#max = options.maxConnections ?? 16;
    this.#idleMs = options.idleTimeout ?? 60_000;
    this.#refused = new Throttled('control-refused', target.log);
    server.unref();
    server.on('connection', (sock: UnixSocket) => this.#admit(sock));
    // Out of fds, a waiting control connection is accepted with the spare
    // fds given up (taken back at once, but for the one the connection
    // took: that comes back when it closes, fdsClosed()).
    lendFdsForAccept(server, (accept) => target.withSpareFds(accept));
    // Failed accepts back off and resume by themselves (acceptor.ts).
    server.on('error', () => {});
  }

  /** Creates the directory (the default one must be trusted: control-path.ts)
   * and listens on `file`. */
  static async listen(target: ControlTarget, file: string, options: ControlOptions = {}): Promise<ControlServer> {
    prepareControlDir(file);
    const server = await UnixServer.listen(file, { type: 'seqpacket', mode: 0o600, ...SESSION_SOCKET });
    return new ControlServer(server, target, options);
  }

  get address(): string {
    return this.#server.address;
  }

  /** Sessions open now. */
  get connections(): number {
    return this.#sessions.size;
  }

  /** Stops listening and closes every session. */
  async close(): Promise<void> {
    await this.#server.close();
    for (const s of this.#sessions) s.close();
  }

  /** A new connection: refused unless its uid is ours and there is room. */
  #admit(sock: UnixSocket): void {
    sock.unref();
    let peer = { pid: 0, uid: -1 };
    try {
      peer = sock.peerCredentials();
    } catch {
      // gone already: refused below
    }
    const reason = peer.uid !== process.getuid!() ? `uid ${peer.uid}` : this.#sessions.size >= this.#max ? `${this.#max} connections open` : null;
    if (reason) {
      sock.close();
      this.#target.fdsClosed();
      this.#refused.emit({ reason, pid: peer.pid });
      return;
    }
    this.#sessions.add(sock);
    void serveSession(sock, {
      status: () => this.#freshStatus(),
      reload: async () => {
        await this.#target.reload();
        return {};
      },
      upgrade: async () => ({ pid: await this.#target.upgrade() }),
    }, this.#idleMs).finally(() => {
      this.#sessions.delete(sock);
      this.#target.fdsClosed();
    });
  }

  /** One worker query at a time: a request while one runs shares it. */
  #freshStatus(): Promise<Status> {
    return this.#status ??= this.#target.freshStatus().finally(() => {
      this.#status = null;
    });
  }
}

/** Listens on `file` and serves the control protocol for `target`. */
export function startControl(target: ControlTarget, file: string, options: ControlOptions = {}): Promise<ControlServer> {
  return ControlServer.listen(target, file, options);
}
