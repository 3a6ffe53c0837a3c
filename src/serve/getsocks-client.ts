/**
 * The client side of `_getsocks` (getsocks.ts): connects to the socket where
 * a running process (an fdpass primary with --expose-listeners, HAProxy with
 * `expose-fd listeners`) exposes its listeners, and receives all of them.
 *
 * Nothing is believed before the server is known to be this user's or
 * root's (SO_PEERCRED names whoever called listen()). The whole answer must
 * come within `timeout`; a wrong count, fewer fds than announced (the peer
 * closed or went quiet), more fds than announced, records that do not parse:
 * each is a TakeoverError with its `reason`, and every fd received by then
 * is closed before it is thrown.
 *
 * Ownership: on success the caller owns every received fd (an Fd each) and
 * the TakeoverLink, the connection kept open for fdpass's finish exchange.
 */
import { UnixSocket } from '../socket/socket';
import { Fd } from '../socket/fd';
import { displayAddress } from '../socket/address';
import type { Message } from '../socket/message';
import type { Credentials } from '../socket/frame';
import { TakeoverError, type FdpassError } from '../errors';
import {
  GetsocksDecoder, encodeInt, GETSOCKS_REQUEST, FINISH_REQUEST, FINISH_REPLY, MAX_BATCH_FDS, type SockRecord,
} from './getsocks';

/** One listener received: the fd (the caller's) and its record. */
export interface TakenListener extends SockRecord {
  fd: Fd;
}

export interface FetchOptions {
  /** ms for the connect and the whole answer (default 5 s). */
  timeout?: number;
}

/** The answer: every listener, and the connection, still open. */
export interface Fetched {
  listeners: TakenListener[];
  link: TakeoverLink;
}

/** Reads of the answer are small: records are a few bytes per fd. */
const SOCKET_OPTIONS = { raw: true, maxFdsPerMessage: MAX_BATCH_FDS, maxMessageSize: 256 * 1024 } as const;

export async function fetchListeners(path: string, options: FetchOptions = {}): Promise<Fetched> {
  const timeout = options.timeout ?? 5000;
  const deadline = Date.now() + timeout;
  const where = `takeover from ${displayAddress(path)}`;
  let sock: UnixSocket;
  try {
    sock = await UnixSocket.connect(path, { ...SOCKET_OPTIONS, timeout });
  } catch (err) {
    throw new TakeoverError('connect', `${where}: ${(err as Error).message}`, { cause: err });
  }
  const held: TakenListener[] = [];
  const fds: Fd[] = [];
  try {
    const peer = sock.peerCredentials();
    const me = process.getuid!();
    if (peer.uid !== me && peer.uid !== 0) {
      throw new TakeoverError('peer', `${where}: the socket is served by uid ${peer.uid} (pid ${peer.pid}), not ${me} or root: refusing its listeners`);
    }
    await sock.send(GETSOCKS_REQUEST).catch((err: Error) => {
      throw new TakeoverError('closed', `${where}: ${err.message} (sending _getsocks)`, { cause: err });
    });
    const dec = new GetsocksDecoder();
    while (!dec.done) {
      const m = await nextRead(sock, deadline, dec, where, timeout);
      try {
        for (const f of m.fds) fds.push(new Fd(f.release()));
        try {
          dec.push(m.data, m.fdCount);
        } catch (err) {
          const e = err as TakeoverError;
          throw new TakeoverError(e.reason, `${where}: ${e.message}`);
        }
      } finally {
        m.close();
      }
      // One acknowledgement per read that brought fds, as HAProxy's client
      // does: its server waits for one after each full batch. A server that
      // closed after the last batch makes the last one fail: that is fine.
      if (m.fdCount > 0) await sock.send(encodeInt(dec.fds)).catch(() => {});
    }
    const records = dec.records;
    for (let i = 0; i < records.length; i++) held.push({ ...records[i]!, fd: fds[i]! });
    return { listeners: held, link: new TakeoverLink(sock, peer, path) };
  } catch (err) {
    for (const f of fds) f.close();
    sock.close();
    throw err;
  }
}

/** The next read of the answer; the peer closing, failing or going quiet
 * before it is complete is a TakeoverError saying how far it got. */
async function nextRead(sock: UnixSocket, deadline: number, dec: GetsocksDecoder, where: string, timeout: number): Promise<Message> {
  try {
    return await sock.receive({ timeout: Math.max(1, deadline - Date.now()) });
  } catch (err) {
    const code = (err as FdpassError).code;
    const sofar = dec.count === null ? 'before the count' : `with ${dec.fds} of ${dec.count} fds`;
    if (code === 'FDPASS_ERR_TIMEOUT') {
      throw new TakeoverError('timeout', `${where}: no complete answer to _getsocks within ${timeout} ms (${sofar})`, { cause: err });
    }
    if (code === 'FDPASS_ERR_SOCKET_CLOSED' || code === 'ECONNRESET') {
      if (dec.count === null) {
        throw new TakeoverError('no-listeners', `${where}: closed before the count: nothing exposed (HAProxy needs 'expose-fd listeners' on this socket)`, { cause: err });
      }
      if (dec.fds < dec.count) {
        throw new TakeoverError('missing-fds', `${where}: announced ${dec.count} listeners and sent ${dec.fds} fds before closing`, { cause: err });
      }
      throw new TakeoverError('bad-records', `${where}: closed with the records of ${dec.count} listeners incomplete`, { cause: err });
    }
    if (code === 'FDPASS_ERR_UNEXPECTED_FDS') {
      throw new TakeoverError('too-many-fds', `${where}: more than ${MAX_BATCH_FDS} fds in one batch (${sofar})`, { cause: err });
    }
    throw new TakeoverError('closed', `${where}: ${(err as Error).message} (${sofar})`, { cause: err });
  }
}

/** How asking the old process to finish went: an fdpass primary answered
 * ('finished'), or the peer had closed or never answered (not fdpass, or
 * gone): it must be told some other way. */
export type FinishOutcome = 'finished' | 'closed' | 'timeout';

/**
 * The connection a takeover was made on, kept open after the answer: an
 * fdpass server waits on it for FINISH_REQUEST, and sees the new primary
 * give up if it closes without one. Owns the socket.
 */
export class TakeoverLink {
  readonly #sock: UnixSocket;
  /** The server's credentials as of its listen(): who exposed the listeners. */
  readonly peer: Credentials;
  readonly path: string;

  constructor(sock: UnixSocket, peer: Credentials, path: string) {
    this.#sock = sock;
    this.peer = peer;
    this.path = path;
  }

  /** Sends FINISH_REQUEST and waits up to `timeout` ms for FINISH_REPLY.
   * Closes the connection. */
  async finish(timeout: number): Promise<FinishOutcome> {
    const deadline = Date.now() + timeout;
    let seen = '';
    try {
      await this.#sock.send(FINISH_REQUEST);
      for (;;) {
        const m = await this.#sock.receive({ timeout: Math.max(1, deadline - Date.now()) });
        seen = (seen + m.data.toString('latin1')).slice(-64);
        m.close(); // an fd here is nothing we asked for
        if (seen.includes(FINISH_REPLY)) return 'finished';
      }
    } catch (err) {
      return (err as FdpassError).code === 'FDPASS_ERR_TIMEOUT' ? 'timeout' : 'closed';
    } finally {
      this.close();
    }
  }

  close(): void {
    this.#sock.close();
  }
}
