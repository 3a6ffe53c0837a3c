/**
 * Receiver: the read side of one UnixSocket. It drains the socket in
 * batches (one native recvmsgs() call reads up to 64 messages), turns each
 * batch into Messages (packets as they are; framed streams through a
 * FrameDecoder), enforces the fd limits, and pushes the results into the
 * socket's Inbox.
 *
 * Ownership: received fds are closed here, before any consumer sees them,
 * when they may not be delivered: more than maxFdsPerMessage, a truncated
 * control message (MSG_CTRUNC) or packet (MSG_TRUNC), a flood past
 * maxUnreadFds, anything after the connection broke. Every other fd goes to
 * a Message, which owns it from then on.
 *
 * Read-ahead is bounded: reading pauses when the inbox holds highWaterMark
 * messages or maxBufferedFds fds, so that a slow consumer pushes back on
 * the peer through the kernel's queue instead of filling this process's fd
 * table (which would truncate what follows).
 *
 * A datagram socket with an allow-list (options.ts, `allow`) drops each
 * datagram whose SCM_CREDENTIALS do not pass, first thing: its fds are
 * closed before anything else looks at them, and the owner is told
 * (ReceiverOwner.refused); reading goes on.
 *
 * The receiver decides nothing about the socket's life: EOF ends the inbox,
 * and a fatal error goes to the owner (ReceiverOwner.fail), which stops the
 * receiver.
 */
import { native, K } from '../native';
import { errnoError, ControlTruncatedError, MessageTruncatedError, ProtocolError, UnexpectedFdsError, FdFloodError } from '../errors';
import { EAGAIN, ECONNRESET } from '../errno';
import { decodeAddress } from './address';
import { copyBytes } from './bytes';
import { closeFd, closeFds } from './fd';
import { FrameDecoder, FLAG_CREDENTIALS, MAX_FDS, type Credentials } from './frame';
import { Message } from './message';
import { MAX_PACKET, type SocketLimits } from './options';
import type { AllowCheck } from './allow';
import type { Inbox } from './inbox';

export interface ReceiverOwner {
  /** A fatal error (a broken connection, a peer breaking the protocol or a
   * limit): the owner ends the connection and calls stop(). */
  fail(err: Error): void;
  /** A datagram the allow-list refused, from `peer` (undefined: it came
   * without credentials); its `nfds` fds are closed already. */
  refused(peer: Credentials | undefined, nfds: number): void;
  /** How many messages the socket was given to send so far: a socket that
   * sends between its receives is answering, and reads one at a time. */
  sends(): number;
}

// One set of scratch buffers per thread: JavaScript runs one receive at a
// time, and everything is copied out of them before any user code runs.
const RECV_BATCH = 64;
const RBUF = Buffer.allocUnsafe(MAX_PACKET);
const RMETA = new Int32Array(RECV_BATCH * K.RECV_META);
const RFDS = new Int32Array(32 * (MAX_FDS + 1));
const RADDR = Buffer.allocUnsafe(RECV_BATCH * K.RECV_ADDR);
/** Why the batch stopped, and an error met after its first message (to be
 * reported after the messages): RSTATUS[STATUS_STOP], RSTATUS[STATUS_ERROR]. */
const RSTATUS = new Int32Array(2);
const STATUS_STOP = 0;
const STATUS_ERROR = 1;
const RCTL = Buffer.alloc(K.RECV_CTL); // its own (aligned) ArrayBuffer: larger than the pool
const SCRATCH = native.recvScratch(RBUF, RMETA, RFDS, RADDR, RSTATUS, RCTL);

// The fields of one receive record (K.RECV_META ints per message).
const {
  RECV_META: META, RECV_OFF: OFF, RECV_LEN: LEN, RECV_STORED: STORED, RECV_NFDS: NFDS, RECV_FLAGS: FLAGS,
  RECV_HAS_CREDS: HAS_CREDS, RECV_PID: PID, RECV_UID: UID, RECV_GID: GID, RECV_ADDRLEN: ADDRLEN,
} = K;

/** A framed stream's batch of reads up to this size is copied once and its
 * whole frames are views of the copy; past it, each frame is copied alone
 * (a frame in pieces would otherwise be copied twice). */
const SHARED_FRAMES_MAX = 64 * 1024;

/** Batches read per readiness event at most, so that one busy socket does
 * not starve the event loop. */
const MAX_ROUNDS = 16;

/**
 * Lone reads. Draining until EAGAIN costs one recvmsg() that finds nothing
 * after the last message; when messages come one at a time (request and
 * response, a round trip) that empty read is half the syscalls of every
 * receive. So once a drain finds exactly one message, the next LONE_READS
 * wake-ups read one message each and stop there, leaving anything behind
 * it to the poll watcher, which is level-triggered and reports it at once.
 * Every LONE_READS-th wake-up drains again to see whether messages now come
 * in bunches (then batches go on as usual). A peer that bursts costs at most
 * LONE_READS extra wake-ups before the batches resume. Only a socket that
 * sent something since its last read goes into lone reads: a receiver that
 * only receives keeps draining, whatever the pace of its peer.
 */
const LONE_READS = 8;

export class Receiver {
  readonly #fd: number;
  readonly #stream: boolean;
  readonly #dgram: boolean;
  readonly #o: SocketLimits;
  readonly #inbox: Inbox<Message>;
  readonly #owner: ReceiverOwner;
  readonly #decoder: FrameDecoder | null;
  readonly #allow: AllowCheck | null;
  /** Whether messages show the credentials that came with them: a socket
   * that has SO_PASSCRED on only for its allow-list does not. */
  showCredentials: boolean;
  /** fds held by messages in the inbox. */
  #bufferedFds = 0;
  #eof = false;
  /** Lone reads left before the next draining one (see LONE_READS). */
  #lone = 0;
  /** owner.sends() at the end of the last read(). */
  #sendsSeen = 0;
  /** Failed or closed: nothing more is delivered. */
  #stopped = false;

  /** `allow`: datagram sockets only, with SO_PASSCRED on. */
  constructor(fd: number, limits: SocketLimits, inbox: Inbox<Message>, owner: ReceiverOwner, allow: AllowCheck | null = null) {
    this.#fd = fd;
    this.#allow = limits.type === 'dgram' ? allow : null;
    this.showCredentials = !this.#allow || limits.passCredentials;
    this.#o = limits;
    this.#stream = limits.type === 'stream';
    this.#dgram = limits.type === 'dgram';
    this.#inbox = inbox;
    this.#owner = owner;
    this.#decoder = limits.framed
      ? new FrameDecoder({ maxPayload: limits.maxMessageSize, maxHeldFds: limits.maxHeldFds })
      : null;
  }

  /** Whether datagrams are checked against an allow-list. */
  get filters(): boolean {
    return this.#allow !== null;
  }

  /** The peer closed (or the connection failed): nothing more will be read. */
  get eof(): boolean {
    return this.#eof;
  }

  /** Whether reading could go on now if somebody wanted the messages. */
  hasRoom(): boolean {
    return !this.#eof && this.#inbox.length < this.#o.highWaterMark && this.#bufferedFds < this.#o.maxBufferedFds;
  }

  /** Whether to read now: room, and a consumer. */
  wantRead(): boolean {
    return this.hasRoom() && this.#inbox.consumers > 0;
  }

  /** A buffered item was handed out: true if that made room to read again. */
  taken(item: Message | Error): boolean {
    const wasFull = this.#inbox.length === this.#o.highWaterMark - 1 || this.#bufferedFds >= this.#o.maxBufferedFds;
    if (item instanceof Message) this.#bufferedFds -= item.fdCount;
    return wasFull;
  }

  /** Stops for good (the connection failed or closed): fds held for frames
   * that will never complete are closed now. Safe twice. */
  stop(): void {
    this.#stopped = true;
    this.#eof = true;
    this.#closeHeld();
  }

  /** The inbox was closed with the messages in it. */
  close(): void {
    this.stop();
    this.#bufferedFds = 0;
  }

  /** Drains the socket in batches while somebody wants messages; the owner
   * hands them out (inbox.pump()) afterwards. */
  read(): void {
    const o = this.#o;
    const sends = this.#owner.sends();
    const answering = sends !== this.#sendsSeen;
    this.#sendsSeen = sends;
    for (let round = 0; round < MAX_ROUNDS && this.wantRead(); round++) {
      // Room for what may still be buffered, but always for one full message.
      let room: number;
      if (o.maxUnreadFds === undefined) {
        room = Math.max(MAX_FDS + 1, Math.min(RFDS.length, o.maxBufferedFds - this.#bufferedFds));
      } else {
        // With a flood cap, read no further than the cap within one turn:
        // a consumer that keeps up takes the messages before the next one.
        // A turn that starts with the consumer still behind reads anyway;
        // if that crosses the cap, the peer is flooding (#overCap).
        const left = o.maxUnreadFds + 1 - this.#unreadFds();
        if (left < MAX_FDS + 1 && round > 0) break;
        room = Math.max(MAX_FDS + 1, Math.min(RFDS.length, left));
      }
      const lone = round === 0 && this.#lone > 0;
      const n = native.recvmsgs(SCRATCH, this.#fd, lone ? 1 : RECV_BATCH, this.#stream ? 0 : o.maxMessageSize, room, this.#dgram);
      if (lone) this.#lone--;
      if (n < 0) {
        if (n === EAGAIN) break;
        if (n === ECONNRESET && !this.#dgram) {
          this.#onEof();
          break;
        }
        this.#owner.fail(errnoError(n, 'recvmsg'));
        return;
      }
      const stop = RSTATUS[STATUS_STOP]!;
      const lateErr = RSTATUS[STATUS_ERROR]!;
      this.#takeBatch(n);
      if (this.#stopped) break;
      if (stop === K.STOP_EOF) {
        this.#onEof();
        break;
      }
      if (lateErr < 0 && lateErr !== ECONNRESET) {
        this.#owner.fail(errnoError(lateErr, 'recvmsg'));
        return;
      }
      if (lone && n === 1) break;
      if (round === 0 && n === 1 && lateErr === 0 && answering) {
        // Drained after one message: read one at a time for a while.
        this.#lone = LONE_READS;
        break;
      }
      if (n < RECV_BATCH && !this.#stream) break;
    }
  }

  #takeBatch(n: number): void {
    const dgram = this.#dgram;
    const maxPerMsg = this.#o.maxFdsPerMessage;
    const inbox = this.#inbox;
    // One copy of the batch's bytes and fd numbers; messages are views.
    let used = 0;
    let nfdsAll = 0;
    for (let i = 0; i < n; i++) {
      used = RMETA[i * META + OFF]! + RMETA[i * META + STORED]!;
      nfdsAll += RMETA[i * META + NFDS]!;
    }
    // A framed stream's batch of small reads is copied once too, and the
    // frames inside it are views; a large one (a big frame coming in pieces)
    // is left in the scratch buffer, each frame copied out once by the decoder.
    const shared = this.#decoder === null || used <= SHARED_FRAMES_MAX;
    let bytes = RBUF;
    if (shared) {
      bytes = Buffer.allocUnsafe(used);
      copyBytes(bytes, 0, RBUF, 0, used);
    }
    // A packet batch with a lone fd (a round trip's message) keeps its
    // number, not an array: the Message holds it as it is.
    const lone = nfdsAll === 1 && !this.#decoder ? RFDS[0]! : -1;
    const fdsAll = nfdsAll > 0 && lone < 0 ? RFDS.slice(0, nfdsAll) : null;
    let foff = 0;
    for (let i = 0; i < n; i++) {
      const m = i * META;
      const off = RMETA[m + OFF]!;
      const len = RMETA[m + LEN]!;
      const stored = RMETA[m + STORED]!;
      const nfds = RMETA[m + NFDS]!;
      const flags = RMETA[m + FLAGS]!;
      const fdStart = foff;
      foff += nfds;
      if (this.#stopped) {
        // The connection broke earlier in this batch: what came after it is
        // never delivered, and its fds are closed now, not at close().
        if (nfds > 0) closeReceived(fdsAll, lone, fdStart, nfds);
        continue;
      }
      const creds = RMETA[m + HAS_CREDS] ? { pid: RMETA[m + PID]!, uid: RMETA[m + UID]! >>> 0, gid: RMETA[m + GID]! >>> 0 } : undefined;
      if (this.#allow && !(creds && this.#allow(creds))) {
        // Not a sender we take anything from: its fds never reach anyone.
        if (nfds > 0) closeReceived(fdsAll, lone, fdStart, nfds);
        this.#owner.refused(creds, nfds);
        continue;
      }
      const ctrunc = (flags & K.MSG_CTRUNC) !== 0;
      // More fds than allowed (with MSG_CTRUNC, the peer sent more than
      // arrived): closed before anything else looks at them.
      let unexpected: UnexpectedFdsError | null = null;
      if (nfds > maxPerMsg || (ctrunc && maxPerMsg < MAX_FDS && nfds >= maxPerMsg)) {
        if (nfds > 0) closeReceived(fdsAll, lone, fdStart, nfds);
        unexpected = new UnexpectedFdsError(nfds, maxPerMsg, 'this socket (maxFdsPerMessage)');
        if (!this.#decoder) {
          if (dgram) inbox.push(unexpected);
          else this.#owner.fail(unexpected);
          continue;
        }
      }
      if (this.#decoder) {
        // On a stream the read may start with whole frames sent before the
        // offending one: the decoder still gets the bytes, with the fds
        // replaced by an empty truncated batch that marks where they were.
        this.#takeFrames(bytes.subarray(off, off + stored), shared, nfds > 0 && !unexpected ? fdsAll!.subarray(fdStart, fdStart + nfds) : null,
          ctrunc || unexpected !== null, creds, nfdsAll - foff, unexpected);
        continue;
      }
      if (ctrunc || len > stored || flags & K.MSG_TRUNC) {
        if (nfds > 0) closeReceived(fdsAll, lone, fdStart, nfds);
        inbox.push(ctrunc ? new ControlTruncatedError(nfds, undefined, bytes.subarray(off, off + stored))
          : new MessageTruncatedError(len, this.#o.maxMessageSize));
        continue;
      }
      if (nfds > 0 && this.#overCap(nfds)) {
        closeReceived(fdsAll, lone, fdStart, nfds);
        if (dgram) inbox.push(new FdFloodError(this.#o.maxUnreadFds!, nfds));
        else this.#flood(nfdsAll - fdStart);
        continue;
      }
      const address = dgram ? decodeAddress(RADDR.subarray(i * K.RECV_ADDR, i * K.RECV_ADDR + RMETA[m + ADDRLEN]!)) : undefined;
      inbox.push(new Message(bytes, off, stored, fdsAll, fdsAll ? fdStart : lone, nfds, this.showCredentials ? creds : undefined, address));
      this.#bufferedFds += nfds;
    }
  }

  /**
   * One read of a framed stream. `later`: fds of this receive batch that come
   * after this read. `unexpected`: the read brought more fds than
   * maxFdsPerMessage (closed already); the frames before the one they came
   * with are delivered, then this error.
   */
  #takeFrames(chunk: Buffer, shared: boolean, fds: Int32Array | null, ctrunc: boolean, creds: Credentials | undefined, later: number,
    unexpected: UnexpectedFdsError | null): void {
    const dec = this.#decoder!;
    const frames = dec.push(chunk, fds ?? undefined, ctrunc, creds, shared);
    for (let k = 0; k < frames.length; k++) {
      const f = frames[k]!;
      const n = f.fds.length;
      if (this.#stopped) {
        if (n) closeFds(f.fds, 0, n);
        continue;
      }
      if (f.truncated && unexpected) {
        this.#owner.fail(unexpected);
        continue;
      }
      if (f.truncated) {
        if (n) closeFds(f.fds, 0, n);
        this.#inbox.push(new ControlTruncatedError(n, f.expectedFds, f.payload));
        continue;
      }
      if (n > 0 && this.#overCap(n)) {
        let closed = later + dec.heldFds;
        for (let j = k; j < frames.length; j++) closed += frames[j]!.fds.length;
        closeFds(f.fds, 0, n);
        this.#flood(closed);
        continue;
      }
      const credentials = f.flags & FLAG_CREDENTIALS ? f.credentials : undefined;
      this.#inbox.push(new Message(f.payload, 0, f.payload.length, n ? f.fds : null, 0, n, credentials));
      this.#bufferedFds += n;
    }
    if (this.#stopped) return;
    if (unexpected) this.#owner.fail(unexpected);
    else if (dec.error !== undefined) this.#owner.fail(new ProtocolError(dec.errorReason!, dec.error));
    else if (this.#overCap(0)) this.#flood(later + dec.heldFds);
  }

  /** Received fds not yet taken by a consumer. */
  #unreadFds(): number {
    return this.#bufferedFds + (this.#decoder?.heldFds ?? 0);
  }

  /** Whether `more` fds on top of those unread would cross maxUnreadFds. */
  #overCap(more: number): boolean {
    return this.#o.maxUnreadFds !== undefined && this.#unreadFds() + more > this.#o.maxUnreadFds;
  }

  /**
   * The peer flooded past maxUnreadFds. Its backlog is dropped with it: the
   * messages still waiting unread are closed now (keeping them would only
   * keep the flood's fds), then the error is all the consumer gets, and the
   * connection is shut down. `closing`: fds past the cap about to be closed.
   */
  #flood(closing: number): void {
    let dropped = 0;
    for (const item of this.#inbox.removeAll()) {
      if (item instanceof Message) {
        dropped += item.fdCount;
        item.close();
      }
    }
    this.#bufferedFds = 0;
    this.#owner.fail(new FdFloodError(this.#o.maxUnreadFds!, closing + dropped));
  }

  /** The peer closed. A framed stream that stops inside a frame is a
   * protocol error, after the messages before it. */
  #onEof(): void {
    this.#eof = true;
    const dec = this.#decoder;
    if (dec) {
      const held = this.#closeHeld();
      if (dec.bufferedBytes > 0 || held > 0) {
        this.#inbox.push(new ProtocolError('eof-mid-frame', `peer closed in the middle of a frame (${dec.bufferedBytes} bytes, ${held} fds discarded)`));
      }
    }
    this.#inbox.end();
  }

  /** Closes the fds the decoder holds for incomplete frames: how many. */
  #closeHeld(): number {
    const held = this.#decoder?.takeHeldFds();
    if (held && held.length > 0) closeFds(Int32Array.from(held), 0, held.length);
    return held ? held.length : 0;
  }
}

/** Closes `count` received fds from `start` of a batch's fds: `fds`, or
 * the batch's lone fd when it had one and no array. */
function closeReceived(fds: Int32Array | null, lone: number, start: number, count: number): void {
  if (fds) closeFds(fds, start, count);
  else closeFd(lone);
}
