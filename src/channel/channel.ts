/**
 * Channel: typed messages with fds between two processes, nginx's
 * ngx_channel_t generalised. Runs over a framed SOCK_STREAM or a
 * SOCK_SEQPACKET UnixSocket; works between a parent and its children
 * (Channel.spawn / Channel.fromParent) and between unrelated processes
 * (Channel.connect, or wrap a server's connections).
 *
 *   post(type, payload, fds)            one way
 *   request(type, payload, opts)        resolves with the reply; fds, timeout, signal
 *   handle(type, fn, { maxFds })        answers requests (and takes posts) of a type
 *   'message' event                     posts that no handler took
 *
 * fds go with a message as an array argument or as a withFds(payload, fds)
 * payload (outgoing.ts); a call that cannot send its fds throws, it never
 * sends the message without them.
 *
 * Ownership: fds sent are borrowed, as with UnixSocket.send(). fds received
 * belong to the ChannelMessage (or Reply); whatever a handler or listener did
 * not take is closed once it returns (a handler's promise has settled).
 *
 * A hostile or broken peer: a message that does not decode, or that carries
 * more fds than its handler declared (maxFds), closes the channel with an
 * 'error' (FDPASS_ERR_PROTOCOL, FDPASS_ERR_UNEXPECTED_FDS), its fds closed
 * first. A message whose fds this process had no room for (MSG_CTRUNC) fails
 * only itself: the request it answers rejects, a request is answered with
 * the error. Nothing a peer sends can throw out of the channel: replies'
 * error bodies are read for strings only, a post handler's failure is an
 * 'error' event.
 */
import { EventEmitter } from 'node:events';
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { UnixSocket, type SocketOptions } from '../socket/socket';
import { Message } from '../socket/message';
import type { Fd, FdLike } from '../socket/fd';
import { encodeChannel, decodeChannel, errorBody, Kind } from './codec';
import { ReplyWithFds, outgoing, requestOptions, releaseFds, type Outgoing } from './outgoing';
import {
  abortError, invalidArg, RemoteError, SocketClosedError, TimeoutError, ChannelMessageError,
  ControlTruncatedError, UnexpectedFdsError, NoHandlerError,
} from '../errors';
import { MAX_FDS } from '../socket/frame';

export interface ChannelMessage<T = unknown> {
  readonly type: string;
  readonly payload: T;
  /** The fds that came with it, owned until taken (see Message.fds). */
  readonly fds: readonly Fd[];
  /** The underlying message: credentials, close(). */
  readonly message: Message;
}

export interface RequestOptions {
  /** Borrowed until sent, as with post(); or give a withFds() payload. */
  fds?: readonly FdLike[];
  /** Milliseconds, default the channel's (30 s). */
  timeout?: number;
  signal?: AbortSignal;
}

export { ReplyWithFds, withFds } from './outgoing';

export type Handler = (payload: any, msg: ChannelMessage) => unknown;

export interface HandlerOptions {
  /**
   * Most fds a request or post of this type may carry, 0..253 (default
   * 253). A handler that takes no fds says 0. A message with more is a peer
   * breaking the contract: its fds are closed before the handler would run,
   * 'error' is emitted with FDPASS_ERR_UNEXPECTED_FDS, and the channel is
   * closed. (For a limit on every message, whatever its type, give the
   * socket maxFdsPerMessage.)
   */
  maxFds?: number;
}

interface HandlerEntry {
  fn: Handler;
  maxFds: number;
}

interface PendingRequest {
  resolve: (m: ChannelMessage) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout | undefined;
  cleanup: () => void;
}

export interface ChannelOptions {
  /** Default request timeout in ms (30 000). */
  timeout?: number;
}

/** Environment variable naming the inherited channel fd in a child. */
export const CHANNEL_FD_ENV = 'FDPASS_CHANNEL_FD';

/** The events of a Channel and their listeners' arguments. */
export interface ChannelEvents {
  /** A post that no handler took (the listener owns its fds). */
  message: [message: ChannelMessage];
  error: [error: Error];
  close: [];
}

export class Channel extends EventEmitter<ChannelEvents> {
  readonly socket: UnixSocket;
  #nextId = 1;
  #pending = new Map<number, PendingRequest>();
  #handlers = new Map<string, HandlerEntry>();
  readonly #timeout: number;
  #closed = false;

  /** Takes ownership of `socket` (framed stream or seqpacket). */
  constructor(socket: UnixSocket, options: ChannelOptions = {}) {
    super();
    if (socket.type === 'dgram' || socket.raw) throw invalidArg('a channel needs a framed stream or a seqpacket socket');
    this.socket = socket;
    this.#timeout = options.timeout ?? 30_000;
    socket.on('message', (m: Message) => this.#onMessage(m));
    socket.on('error', (err: Error) => this.#onSocketError(err));
    socket.on('close', () => this.#onClose());
  }

  static pair(options: ChannelOptions & SocketOptions = {}): [Channel, Channel] {
    const [a, b] = UnixSocket.pair({ type: options.type ?? 'seqpacket', ...options });
    return [new Channel(a, options), new Channel(b, options)];
  }

  static async connect(address: string, options: ChannelOptions & SocketOptions = {}): Promise<Channel> {
    return new Channel(await UnixSocket.connect(address, options), options);
  }

  /**
   * Spawns a child with one end of a SEQPACKET pair as its fd 3 (the child
   * calls Channel.fromParent()). Our copy of the child's end is closed once
   * spawned, so the channel sees EOF when the child dies.
   */
  static spawn(command: string, args: readonly string[] = [], options: SpawnOptions & ChannelOptions = {}): { child: ChildProcess; channel: Channel } {
    const [mine, theirs] = UnixSocket.pair({ type: 'seqpacket' });
    let child: ChildProcess;
    try {
      const stdio = (options.stdio as unknown[] | undefined) ?? ['inherit', 'inherit', 'inherit'];
      const base = Array.isArray(stdio) ? stdio.slice(0, 3) : [stdio, stdio, stdio];
      child = spawn(command, args, {
        ...options,
        stdio: [...base, theirs.fd, ...(Array.isArray(stdio) ? stdio.slice(4) : [])] as SpawnOptions['stdio'],
        env: { ...(options.env ?? process.env), [CHANNEL_FD_ENV]: '3' },
      });
    } catch (err) {
      mine.close();
      theirs.close();
      throw err;
    }
    theirs.close();
    return { child, channel: new Channel(mine, options) };
  }

  /** In a child started by Channel.spawn(): adopts the inherited channel. */
  static fromParent(options: ChannelOptions = {}): Channel {
    const fd = Number(process.env[CHANNEL_FD_ENV]);
    if (!Number.isInteger(fd) || fd < 0) throw invalidArg(`${CHANNEL_FD_ENV} is not set: this process was not started with a channel`);
    delete process.env[CHANNEL_FD_ENV]; // not for our own children
    return new Channel(UnixSocket.fromFd(fd), options);
  }

  /** Registers the handler for requests (and posts) of `type`. */
  handle(type: string, handler: Handler, options: HandlerOptions = {}): this {
    if (typeof handler !== 'function') throw invalidArg('handler must be a function');
    const maxFds = options.maxFds ?? MAX_FDS;
    if (!Number.isInteger(maxFds) || maxFds < 0 || maxFds > MAX_FDS) {
      throw new RangeError(`maxFds must be an integer from 0 to ${MAX_FDS}, got ${String(maxFds)}`);
    }
    this.#handlers.set(type, { fn: handler, maxFds });
    return this;
  }

  /**
   * Sends a one-way message; `fds` (or a withFds() payload) are borrowed
   * until the promise settles. Bad arguments throw at once.
   */
  post(type: string, payload?: unknown, fds?: readonly FdLike[]): Promise<void> {
    return this.#send(Kind.Post, 0, type, outgoing(payload, fds, 'post()'));
  }

  /**
   * Sends a request and resolves with the reply (its fds owned by it). fds
   * go as `options.fds`, as an array in place of the options, or as a
   * withFds() payload. Bad arguments throw at once.
   */
  request<T = unknown>(type: string, payload?: unknown, options?: RequestOptions | readonly FdLike[]): Promise<ChannelMessage<T>> {
    const opts = requestOptions<RequestOptions>(options);
    const out = outgoing(payload, opts.fds, 'request()');
    const { signal } = opts;
    if (signal?.aborted || this.#closed) {
      releaseFds(out);
      return Promise.reject(signal?.aborted ? abortError(signal) : new SocketClosedError('channel is closed'));
    }
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xffffffff ? 1 : this.#nextId + 1;
    const sent = this.#send(Kind.Request, id, type, out);
    return new Promise<ChannelMessage<T>>((resolve, reject) => {
      const timeout = opts.timeout ?? this.#timeout;
      const onAbort = () => {
        this.#pending.delete(id);
        p.cleanup();
        reject(abortError(signal));
      };
      const p: PendingRequest = {
        resolve: resolve as (m: ChannelMessage) => void,
        reject,
        timer: setTimeout(() => {
          this.#pending.delete(id);
          p.cleanup();
          reject(new TimeoutError(`request '${type}' got no reply within ${timeout} ms`));
        }, timeout),
        cleanup: () => {
          clearTimeout(p.timer);
          signal?.removeEventListener('abort', onAbort);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#pending.set(id, p);
      sent.catch((err: Error) => {
        if (this.#pending.delete(id)) {
          p.cleanup();
          reject(err);
        }
      });
    });
  }

  /**
   * Sends one channel message. What cannot be sent (a body that is not
   * JSON, fds that are not fds) throws at once; transferred fds are closed
   * once the message went, failed, or could not be sent.
   */
  #send(kind: Kind, id: number, type: string, out: Outgoing): Promise<void> {
    let sent: Promise<void>;
    try {
      sent = this.socket.send({ data: encodeChannel(kind, id, type, out.body), fds: out.fds });
    } catch (err) {
      releaseFds(out);
      throw err;
    }
    return out.transfer ? sent.finally(() => releaseFds(out)) : sent;
  }

  #onMessage(m: Message): void {
    let f;
    try {
      f = decodeChannel(m.data);
    } catch (err) {
      m.close();
      this.emit('error', err as Error); // a ChannelDecodeError: what was wrong, for people and programs
      this.close();
      return;
    }
    const msg: ChannelMessage = { type: f.type, payload: f.body, message: m, get fds() { return m.fds; } };
    if (f.kind === Kind.Reply || f.kind === Kind.ErrorReply) {
      const p = this.#pending.get(f.id);
      if (!p) {
        m.close(); // a reply that came too late: nobody owns its fds
        return;
      }
      this.#pending.delete(f.id);
      p.cleanup();
      if (f.kind === Kind.Reply) p.resolve(msg);
      else {
        m.close();
        // The body is the peer's: take only strings from it.
        const body = (typeof f.body === 'object' && f.body !== null ? f.body : {}) as { message?: unknown; code?: unknown };
        const text = typeof body.message === 'string' ? body.message : 'unknown error';
        p.reject(new RemoteError(`'${f.type}' failed in the peer: ${text}`, typeof body.code === 'string' ? body.code : undefined));
      }
      return;
    }
    const entry = this.#handlers.get(f.type);
    if (entry && m.fdCount > entry.maxFds) {
      const n = m.fdCount;
      m.close();
      this.emit('error', new UnexpectedFdsError(n, entry.maxFds, `the handler of '${f.type}' (maxFds)`));
      this.close();
      return;
    }
    const handler = entry?.fn;
    if (f.kind === Kind.Request) {
      void this.#answer(f.id, f.type, handler, msg);
      return;
    }
    if (handler) {
      // A post has nobody to answer: a handler's failure is this side's
      // 'error' (never an unhandled rejection, which would end the process).
      // Its answer goes nowhere; fds it transferred to the channel are closed.
      void this.#run(handler, msg).then((r) => {
        if (r instanceof ReplyWithFds) releaseFds(r);
      }, (err: unknown) => {
        if (!this.#closed) this.emit('error', err as Error);
      }).finally(() => m.close());
    } else if (this.listenerCount('message') > 0) {
      try {
        this.emit('message', msg);
      } finally {
        m.close();
      }
    } else {
      m.close();
      this.emit('error', new ChannelMessageError(`no handler or 'message' listener for '${f.type}'; its fds were closed`));
    }
  }

  async #run(handler: Handler, msg: ChannelMessage): Promise<unknown> {
    return handler(msg.payload, msg);
  }

  async #answer(id: number, type: string, handler: Handler | undefined, msg: ChannelMessage): Promise<void> {
    let kind = Kind.Reply;
    let out: Outgoing;
    try {
      if (!handler) throw new NoHandlerError(type);
      out = outgoing(await this.#run(handler, msg), undefined, 'a handler\'s answer');
    } catch (err) {
      kind = Kind.ErrorReply;
      out = errorReply(err);
    } finally {
      msg.message.close();
    }
    this.#reply(kind, id, type, out);
  }

  /**
   * Answers request `id`. An answer that cannot be sent (not JSON, a
   * withFds inside it, fds that are not fds) is the handler's failure: the
   * requester gets it as the error reply, not a timeout.
   */
  #reply(kind: Kind, id: number, type: string, out: Outgoing): void {
    if (this.#closed) {
      releaseFds(out);
      return;
    }
    let sent: Promise<void>;
    try {
      sent = this.#send(kind, id, type, out);
    } catch (err) {
      sent = this.#send(Kind.ErrorReply, id, type, errorReply(err));
    }
    sent.catch((err: unknown) => {
      if (!this.#closed) this.emit('error', err as Error);
    });
  }

  /**
   * A message whose fds did not fit (MSG_CTRUNC, this process at
   * RLIMIT_NOFILE) still has its bytes: a reply fails its request with the
   * error; a request is answered with an error reply so that the peer does
   * not wait for its timeout, and reported here too; anything else is
   * reported. The fds that arrived were closed by the socket already.
   */
  #onSocketError(err: Error): void {
    if (err instanceof ControlTruncatedError && err.data !== undefined) {
      let f;
      try {
        f = decodeChannel(err.data);
      } catch {
        f = undefined;
      }
      if (f && (f.kind === Kind.Reply || f.kind === Kind.ErrorReply)) {
        const p = this.#pending.get(f.id);
        if (p) {
          this.#pending.delete(f.id);
          p.cleanup();
          p.reject(err);
          return;
        }
      } else if (f && f.kind === Kind.Request) {
        this.#reply(Kind.ErrorReply, f.id, f.type, errorReply(err));
      }
    }
    this.emit('error', err);
  }

  #onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    const err = new SocketClosedError('channel closed before the reply came');
    for (const p of this.#pending.values()) {
      p.cleanup();
      p.reject(err);
    }
    this.#pending.clear();
    this.emit('close');
  }

  close(): void {
    this.socket.close();
    this.#onClose();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** An error reply for a thrown value (its body: codec.ts's errorBody()). */
function errorReply(err: unknown): Outgoing {
  return { body: errorBody(err), fds: undefined, transfer: false };
}
