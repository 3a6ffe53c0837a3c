/**
 * UnixSocket: one AF_UNIX socket of any type, sending and receiving messages
 * that carry bytes, fds and credentials.
 *
 * - SOCK_STREAM speaks the fdpass framing (frame.ts) unless `raw` is set, so
 *   that each message keeps its own fds however the kernel splits reads.
 * - SOCK_SEQPACKET and SOCK_DGRAM keep boundaries themselves: one packet, one
 *   message.
 *
 * This class is the facade: the factories, introspection, ref/unref and the
 * socket's life (EOF, failure, close). The work is done by its parts, one
 * each per socket: the SendQueue (send-queue.ts) writes, the Receiver
 * (receiver.ts) reads and decodes, the Inbox (inbox.ts) hands messages to
 * receive(), iterators and 'message' listeners, and the PollWatcher
 * (poll-watcher.ts) waits for readiness for both directions.
 *
 * Ownership: the socket owns its fd and closes it. send() borrows the
 * caller's fds until its promise settles; they stay open and the caller's,
 * and must not be closed before then (when the kernel takes the message at
 * once, the common case, that is before send() returns). Received fds
 * belong to the Message until taken.
 */
import { EventEmitter } from 'node:events';
import { native, K } from '../native';
import { errnoError, check, abortError, SocketClosedError, ProtocolError, TimeoutError, PeerRefusedError, type ErrnoError } from '../errors';
import { EAGAIN, EINTR, ENOTCONN, ECONNRESET, EPIPE, ECONNREFUSED } from '../errno';
import { encodeAddress, decodeAddress, displayAddress, isAbstract } from './address';
import { adoptSocket } from './adopt';
import { compileAllow, type AllowCheck } from './allow';
import { bindPath, unlinkIfOurs } from './bind';
import { closeFd } from './fd';
import type { Credentials } from './frame';
import { Inbox, type WaitOptions } from './inbox';
import type { Message } from './message';
import { resolveOptions, typeName, typeNumber, type SocketOptions, type SocketType, type ConnectOptions, type DatagramOptions } from './options';
import { PollWatcher, READABLE, WRITABLE } from './poll-watcher';
import { Receiver } from './receiver';
import { SendQueue, type OutgoingMessage } from './send-queue';

export type { SocketOptions, SocketType, ConnectOptions, DatagramOptions, OutgoingMessage, ErrnoError };
export type ReceiveOptions = WaitOptions;

const closeMessage = (m: Message) => m.close();

/** The events of a UnixSocket and their listeners' arguments. */
export interface UnixSocketEvents {
  /** A message, for 'message' listeners (while there are any, receive() and
   * the iterator get none); the listener owns its fds. */
  message: [message: Message];
  /** A datagram from a sender that `allow` refuses (undefined: one that
   * came without credentials); its fds were closed. */
  refused: [peer: Credentials | undefined, error: PeerRefusedError];
  /** The peer closed its end; every message before it was handed out. */
  end: [];
  /** The socket was closed: by close(), after EOF, or after an error. */
  close: [];
  error: [error: Error];
}

export class UnixSocket extends EventEmitter<UnixSocketEvents> {
  /** SOCK_STREAM, SOCK_SEQPACKET or SOCK_DGRAM. */
  readonly type: SocketType;
  /** Stream without framing. */
  readonly raw: boolean;
  readonly #fd: number;
  readonly #watcher: PollWatcher;
  readonly #sender: SendQueue;
  readonly #receiver: Receiver;
  readonly #inbox: Inbox<Message>;
  #closed = false;
  /** A fatal error was met: only handing out what came before it is left. */
  #failed = false;
  /** Every message was handed out after EOF; close once sends are done. */
  #closeWhenDrained = false;
  /** Reading stays armed to the end of the loop turn after the last
   * consumer left (#updatePoll); then it is disarmed. */
  #lingerScheduled = false;
  #lingerOver = false;
  #refused = 0;
  /** For 'refused' messages: the bound name, read once. */
  #boundName: string | undefined;

  /** @internal Use UnixSocket.connect(), .pair(), .fromFd() or .datagram().
   * Takes `fd` over only if it does not throw. `allow`: datagrams only, with
   * SO_PASSCRED on already. */
  constructor(fd: number, type: SocketType, options: SocketOptions = {}, allow: AllowCheck | null = null) {
    super();
    const limits = resolveOptions(type, options);
    if (limits.passCredentials) check(native.setPassCred(fd, true), 'setsockopt');
    this.#fd = fd;
    this.type = type;
    this.raw = limits.raw;
    this.#inbox = new Inbox<Message>(this, 'message', {
      taken: (item) => {
        if (this.#receiver.taken(item)) this.#updatePoll();
        // The fatal error was the last thing to hand out: close now rather
        // than when the consumer asks again (it may never).
        if (this.#failed) this.#inbox.finishIfDone();
      },
      changed: () => this.#updatePoll(),
      finished: () => this.#onFinished(),
    }, { noun: 'message', closed: 'no more messages: the socket is closed' });
    this.#receiver = new Receiver(fd, limits, this.#inbox, {
      fail: (err) => this.#destroy(err),
      refused: (peer, nfds) => this.#onRefused(peer, nfds),
      sends: () => this.#sender.sends,
    }, allow);
    this.#sender = new SendQueue(fd, limits, {
      update: () => this.#updatePoll(),
      drained: () => {
        if (this.#closeWhenDrained) this.close();
        else this.#inbox.finishIfDone();
      },
    });
    this.#watcher = new PollWatcher(fd, (ev) => this.#onReady(ev), (e) => this.#onPollError(e));
  }

  // ---- construction --------------------------------------------------------

  /** A connected pair (socketpair(2)). Hand one end to a child as an extra
   * stdio fd: `spawn(cmd, args, { stdio: ['inherit', 'inherit', 'inherit', b.fd] })`,
   * then close it here; the child adopts fd 3 with UnixSocket.fromFd(3). */
  static pair(options: SocketOptions = {}): [UnixSocket, UnixSocket] {
    const type = typeNumber(options.type);
    const out = new Int32Array(2);
    check(native.socketpair(type, out), 'socketpair');
    try {
      return [new UnixSocket(out[0]!, typeName(type), options), new UnixSocket(out[1]!, typeName(type), options)];
    } catch (err) {
      native.close(out[0]!);
      native.close(out[1]!);
      throw err;
    }
  }

  /** Connects to a listening socket (path, or '\0name' for abstract). A full
   * backlog (EAGAIN) is retried until `timeout` ms (default 10 s) pass. */
  static connect(address: string, options: ConnectOptions = {}): Promise<UnixSocket> {
    // Bad arguments throw here, synchronously, before any system call.
    const type = typeNumber(options.type);
    const addr = encodeAddress(address);
    resolveOptions(typeName(type), options);
    return UnixSocket.#connect(address, type, addr, options);
  }

  static async #connect(address: string, type: number, addr: Buffer, options: ConnectOptions): Promise<UnixSocket> {
    const deadline = Date.now() + (options.timeout ?? 10_000);
    const fd = check(native.socket(type), 'socket');
    try {
      for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
        if (options.signal?.aborted) throw abortError(options.signal);
        const r = native.connect(fd, addr);
        if (r === 0) break;
        if (r !== EAGAIN && r !== EINTR) throw errnoError(r, 'connect', displayAddress(address));
        if (Date.now() >= deadline) throw new TimeoutError(`connect ${displayAddress(address)}: backlog full until timeout`);
        await new Promise((res) => setTimeout(res, delay));
      }
      return new UnixSocket(fd, typeName(type), options);
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  /** A SOCK_DGRAM socket, bound and connected as `options` say. If anything
   * fails, the socket file it bound is removed again. */
  static datagram(options: DatagramOptions = {}): Promise<UnixSocket> {
    // Bad arguments throw here, synchronously, before any system call.
    if (options.bind !== undefined) encodeAddress(options.bind);
    if (options.connect !== undefined) encodeAddress(options.connect);
    resolveOptions('dgram', options);
    const allow = compileAllow(options.allow, options.bind !== undefined && isAbstract(options.bind) && options.connect === undefined);
    return UnixSocket.#datagram(options, allow);
  }

  static async #datagram(options: DatagramOptions, allow: AllowCheck | null): Promise<UnixSocket> {
    const fd = check(native.socket(K.SOCK_DGRAM), 'socket');
    let ino: number | null = null;
    try {
      // Before bind(): no datagram may arrive without credentials to check.
      if (allow) check(native.setPassCred(fd, true), 'setsockopt');
      if (options.bind !== undefined) ino = await bindPath(fd, options.bind, options.mode ?? 0o600);
      if (options.connect !== undefined) {
        check(native.connect(fd, encodeAddress(options.connect)), 'connect', displayAddress(options.connect));
      }
      return new UnixSocket(fd, 'dgram', options, allow);
    } catch (err) {
      if (ino !== null) unlinkIfOurs(options.bind!, ino);
      native.close(fd);
      throw err;
    }
  }

  /**
   * Adopts an inherited or received socket fd (a child's fd 3, say). The new
   * UnixSocket owns it from now on and closes it; it is made non-blocking.
   */
  static fromFd(fd: number, options: Omit<SocketOptions, 'type'> = {}): UnixSocket {
    const info = adoptSocket(fd, { unix: true, listening: false });
    return new UnixSocket(fd, typeName(info.type), options);
  }

  // ---- introspection -------------------------------------------------------

  /** The socket's fd, still owned by this object (for spawn stdio, say). */
  get fd(): number {
    if (this.#closed) throw new SocketClosedError();
    return this.#fd;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Datagrams dropped because their sender was not allowed (`allow`). */
  get refusedCount(): number {
    return this.#refused;
  }

  /** Messages waiting for the kernel to take them. */
  get pendingSends(): number {
    return this.#sender.length;
  }

  /** SO_PEERCRED: the peer as of connect() or socketpair(), checked by the
   * kernel. It names whoever connected, not whoever holds the socket now. */
  peerCredentials(): Credentials {
    const out = new Int32Array(3);
    check(native.peerCred(this.fd, out), 'getsockopt');
    return { pid: out[0]!, uid: out[1]! >>> 0, gid: out[2]! >>> 0 };
  }

  get localAddress(): string {
    return this.#name(false);
  }

  get remoteAddress(): string {
    return this.#name(true);
  }

  #name(peer: boolean): string {
    const buf = Buffer.allocUnsafe(K.SUN_PATH_MAX);
    const n = native.sockName(this.fd, buf, peer);
    if (n < 0) {
      if (n === ENOTCONN) return '';
      throw errnoError(n, peer ? 'getpeername' : 'getsockname');
    }
    return decodeAddress(buf.subarray(0, n));
  }

  /** SO_PASSCRED on or off: whether messages carry the sender's
   * credentials. A datagram socket with an allow-list keeps SO_PASSCRED on
   * (it needs the credentials to check); this only says whether messages
   * show them. */
  setPassCredentials(on: boolean): void {
    if (this.#receiver.filters) {
      if (this.#closed) throw new SocketClosedError();
      this.#receiver.showCredentials = on;
      return;
    }
    check(native.setPassCred(this.fd, on), 'setsockopt');
  }

  /** Whether waiting for the peer keeps the event loop alive (default). */
  ref(): this {
    this.#watcher.ref(true);
    this.#sender.ref(true);
    return this;
  }

  unref(): this {
    this.#watcher.ref(false);
    this.#sender.ref(false);
    return this;
  }

  // ---- sending and receiving -------------------------------------------------

  /**
   * Sends one message. Settles once the kernel has taken it whole: a slow
   * reader makes this wait (backpressure), ETOOMANYREFS is waited out. Bad
   * arguments (and fds that are not open) throw at once; a socket that is
   * closed or broken rejects.
   */
  send(message: OutgoingMessage | string | Uint8Array): Promise<void> {
    return this.#sender.send(message);
  }

  /** Resolves once every queued message has gone to the kernel. */
  flush(): Promise<void> {
    return this.#sender.flush();
  }

  /** Resolves with the next message. Rejects with FDPASS_ERR_SOCKET_CLOSED
   * once the peer has closed and everything was read; with
   * FDPASS_ERR_TIMEOUT after `timeout` ms. */
  receive(options: ReceiveOptions = {}): Promise<Message> {
    return this.#inbox.next(options);
  }

  /**
   * Iterates over messages until the peer closes. Breaking out stops reading
   * (the socket stays open). A message-level error (a truncated control
   * message, say) is thrown by the loop; a new loop can carry on.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<Message> {
    return this.#inbox.iterate();
  }

  // ---- readiness ---------------------------------------------------------------

  /** Arms the watcher for what the parts want now: reading while a consumer
   * waits and there is room, writing while the send queue is blocked. */
  #updatePoll(): void {
    if (this.#closed) return;
    const cur = this.#watcher.events;
    let want = (this.#receiver.wantRead() ? READABLE : 0) | (this.#sender.waitsForWritable ? WRITABLE : 0);
    if (want === cur) return;
    if (cur & READABLE && !(want & READABLE) && this.#receiver.hasRoom() && !this.#lingerOver) {
      // The last consumer is gone, but a request/response loop calls
      // receive() again as soon as its promise settles: keep watching until
      // the end of this loop turn rather than pay two epoll_ctl() calls per
      // message. (At most one wake-up finds nobody to read for.)
      if (!this.#lingerScheduled) {
        this.#lingerScheduled = true;
        setImmediate(() => {
          this.#lingerScheduled = false;
          this.#lingerOver = true;
          this.#updatePoll();
          this.#lingerOver = false;
        });
      }
      want |= READABLE;
      if (want === cur) return;
    }
    const r = this.#watcher.set(want);
    if (r < 0) this.#destroy(errnoError(r, 'uv_poll_start'));
  }

  /** A datagram the allow-list refused (its fds are closed already). */
  #onRefused(peer: Credentials | undefined, nfds: number): void {
    this.#refused++;
    const who = peer ? `pid ${peer.pid} uid ${peer.uid} gid ${peer.gid}` : 'a sender without credentials';
    this.#boundName ??= this.#closed ? '' : this.localAddress;
    this.emit('refused', peer, new PeerRefusedError(
      `refused a datagram from ${who} on ${displayAddress(this.#boundName)}; its ${nfds} fd(s) were closed`));
  }

  #onReady(events: number): void {
    if (events & WRITABLE) this.#sender.onWritable();
    if (events & READABLE) this.#onReadable();
  }

  #onReadable(): void {
    this.#receiver.read();
    if (!this.#closed) this.#inbox.pump();
  }

  /** POLLERR: a reset peer breaks the write side, and reading goes on to
   * EOF; any other socket error is fatal. */
  #onPollError(e: number): void {
    if (e === ECONNRESET || e === EPIPE || e === ECONNREFUSED) {
      this.#sender.fail(errnoError(e, 'sendmsg'));
    } else if (e < 0) {
      this.#destroy(errnoError(e, 'poll'));
      return;
    }
    this.#onReadable();
  }

  // ---- life ----------------------------------------------------------------------

  /** After EOF, once every message was handed out: 'end', then close when
   * queued sends are done. */
  #onFinished(): void {
    if (!this.#failed) this.emit('end');
    if (this.#sender.length === 0) this.close();
    else this.#closeWhenDrained = true;
  }

  /** Sends what is queued, then closes. */
  async end(): Promise<void> {
    if (this.#closed) return;
    await this.flush();
    this.close();
  }

  /**
   * Closes the socket now. Queued sends reject with FDPASS_ERR_SOCKET_CLOSED
   * and their fd copies are closed; received messages not yet taken are
   * closed with their fds. Safe to call twice.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher.close();
    closeFd(this.#fd);
    this.#sender.close();
    this.#receiver.close();
    this.#inbox.close(closeMessage);
    process.nextTick(() => this.emit('close'));
  }

  /**
   * A fatal error: stop reading and writing, hand out the messages that
   * arrived before it, then the error itself, then close. With no consumer
   * at all the error is emitted at once. fds that arrived after the error
   * are closed at once.
   */
  #destroy(err: Error): void {
    if (this.#closed || this.#failed) return;
    this.#failed = true;
    // A peer that broke the protocol (or a limit) is cut off now: it sees
    // EOF and its writes fail, even while our consumer has yet to get round
    // to the messages before the error.
    if (err instanceof ProtocolError) native.shutdown(this.#fd, K.SHUT_RDWR);
    const consumers = this.#inbox.consumers;
    // Queue the error before failing the writes: with the inbox empty,
    // failing them would end the socket as if at a clean EOF.
    if (consumers > 0) this.#inbox.push(err);
    this.#receiver.stop();
    this.#inbox.end();
    this.#sender.fail(err);
    if (consumers === 0) {
      process.nextTick(() => this.emit('error', err));
      this.close();
      return;
    }
    this.#inbox.pump();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.end();
  }
}
