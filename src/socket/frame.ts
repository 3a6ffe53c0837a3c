/**
 * The fdpass stream framing (docs/protocol.md), pure code with no I/O.
 *
 * On SOCK_STREAM the kernel keeps no message boundaries: a read may hold
 * several messages, part of one, or plain bytes followed by an fd-bearing
 * segment. Each message therefore travels as a frame,
 *
 *   0      1      2          4                8
 *   +------+------+----------+----------------+---------------+
 *   | 0xFD | flags| nfds u16 | length u32     | payload ...   |
 *   +------+------+----------+----------------+---------------+
 *   little-endian; flags bit 0: the sender attached SCM_CREDENTIALS
 *
 * sent with one sendmsg() whose SCM_RIGHTS carries exactly `nfds` fds. The
 * kernel delivers fds with the read that holds the first byte of their
 * sendmsg(), and Linux ends that read at the end of the fd-bearing segment.
 * So the frame that claims a batch of fds is the frame starting inside the
 * read range the batch came with; any other placement is a protocol error
 * ("fds attached to the wrong byte"), and so is a count that does not match.
 */
import type { ProtocolReason } from '../errors';
import { copyBytes } from './bytes';

export const FRAME_MAGIC = 0xfd;
export const HEADER_SIZE = 8;
export const FLAG_CREDENTIALS = 0x01;
const KNOWN_FLAGS = FLAG_CREDENTIALS;
export const MAX_FDS = 253;

export function writeHeader(buf: Uint8Array, off: number, nfds: number, length: number, flags: number): void {
  buf[off] = FRAME_MAGIC;
  buf[off + 1] = flags;
  buf[off + 2] = nfds & 0xff;
  buf[off + 3] = nfds >>> 8;
  buf[off + 4] = length & 0xff;
  buf[off + 5] = (length >>> 8) & 0xff;
  buf[off + 6] = (length >>> 16) & 0xff;
  buf[off + 7] = (length >>> 24) & 0xff;
}

export function encodeFrame(payload: Uint8Array, nfds: number, flags = 0): Buffer {
  const out = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  writeHeader(out, 0, nfds, payload.length, flags);
  out.set(payload, HEADER_SIZE);
  return out;
}

export interface Frame {
  readonly payload: Buffer;
  readonly fds: Int32Array;
  readonly flags: number;
  /** Credentials that came with the read holding the frame's first byte. */
  readonly credentials: Credentials | undefined;
  /** Set when the fds of this frame were cut short by MSG_CTRUNC: `fds`
   * holds the ones that did arrive, which the caller must close. */
  readonly truncated: boolean;
  readonly expectedFds: number;
}

export interface Credentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

interface FdBatch {
  fds: Int32Array;
  start: number;
  end: number;
  truncated: boolean;
}

export interface DecoderOptions {
  /** Largest payload accepted (default 64 MiB). */
  maxPayload?: number;
  /** Most fds held for frames not yet complete (default 4096). Misplaced fds
   * are refused as soon as they arrive, so a well-behaved decoder never holds
   * more than one frame's worth (253); this is a backstop. */
  maxHeldFds?: number;
}

/**
 * Reassembles frames from reads. push() takes one read (its bytes, the fds
 * and credentials that came with it) and returns the frames it completed.
 * On a protocol violation the decoder is dead: `error` says what was wrong,
 * push() still returns the frames completed before it (whose fds the caller
 * now owns), and takeHeldFds() returns every other fd it held, to be closed.
 *
 * Bounded by construction, whatever the peer does:
 * - fds are checked the moment they arrive (a batch that no frame can claim
 *   is an error at once, not when some later frame completes), so at most
 *   one batch, the incomplete frame's own, is ever held;
 * - the bytes of the incomplete frame live in one buffer that grows by
 *   doubling, never past the frame's declared size: at most twice the bytes
 *   received (or MIN_BUFFER), however many reads brought them. A peer that
 *   trickles a frame one byte per write costs what the bytes cost, not an
 *   object per read;
 * - credentials are recorded only for reads where a frame may start (the
 *   ones docs/protocol.md attaches to frames), equal neighbours merged.
 * A frame that arrives whole in one read is copied once, out of the read;
 * one that arrives in pieces is copied into its buffer as it comes (plus
 * the doublings, less than its size in all) and handed out without a
 * further copy.
 */
const NO_FDS: Int32Array = new Int32Array(0);
/** First allocation for an incomplete frame (bytes), unless it is smaller. */
const MIN_BUFFER = 512;

interface CredsRange {
  start: number;
  end: number;
  creds: Credentials;
}

export class FrameDecoder {
  readonly #maxPayload: number;
  readonly #maxHeldFds: number;
  /** The incomplete frame at #base: its first #accLen bytes. */
  #acc: Buffer | null = null;
  #accLen = 0;
  /** Whole size (header + payload) of the incomplete frame once its header
   * is in and checked; 0 while the header is still short. */
  #need = 0;
  /** Stream offset of the first byte not yet part of a complete frame. */
  #base = 0;
  /** Stream offset just past the last byte pushed. */
  #end = 0;
  #batches: FdBatch[] = [];
  #held = 0;
  #creds: CredsRange[] = [];
  /** Set once the peer broke the protocol; the decoder takes nothing more. */
  error: string | undefined;
  /** With `error`: the violation, for ProtocolError.reason. */
  errorReason: ProtocolReason | undefined;
  /** fds taken off a batch by a frame that then failed: still ours to close. */
  #orphans: number[] = [];

  constructor(options: DecoderOptions = {}) {
    this.#maxPayload = options.maxPayload ?? 64 * 1024 * 1024;
    this.#maxHeldFds = options.maxHeldFds ?? 4096;
  }

  /** Bytes buffered of an incomplete frame. */
  get bufferedBytes(): number {
    return this.#accLen;
  }

  /** Bytes allocated for the incomplete frame (bufferedBytes and the room
   * to grow into). */
  get heldBytes(): number {
    return this.#acc?.length ?? 0;
  }

  /** Records kept for incomplete frames: fd batches and credential ranges. */
  get heldRecords(): number {
    return this.#batches.length + this.#creds.length;
  }

  get heldFds(): number {
    return this.#held;
  }

  /** `fds` is taken over (kept, not copied): pass a fresh array. `chunk` is
   * not kept unless `shared`: what the decoder needs of it is copied. With
   * `shared` the caller gives the chunk's bytes away (a copy of its own that
   * nothing writes to again): frames that lie whole inside it get views of
   * it as payloads, no copy each (the bytes of an incomplete frame are still
   * copied, into its own buffer). */
  push(chunk: Uint8Array, fds: Int32Array | readonly number[] = NO_FDS, truncated = false, creds?: Credentials, shared = false): Frame[] {
    const batchFds = fds instanceof Int32Array ? fds : Int32Array.from(fds);
    if (this.error !== undefined) {
      // Dead: take nothing on; whatever came with this read is the caller's.
      for (let i = 0; i < batchFds.length; i++) this.#orphans.push(batchFds[i]!);
      return [];
    }
    const start = this.#end;
    const len = chunk.length;
    this.#end += len;
    if (batchFds.length > 0 || truncated) {
      this.#batches.push({ fds: batchFds, start, end: this.#end, truncated });
      this.#held += batchFds.length;
    }
    // A read that lies inside a frame whose size is known holds no frame's
    // first byte: its credentials can never be asked for.
    if (creds !== undefined && len > 0 && (this.#need === 0 || this.#accLen + len > this.#need)) this.#addCreds(start, creds);

    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const frames: Frame[] = [];
    let off = 0;
    if (this.#accLen > 0) {
      // The incomplete frame first: its header, then the rest of it.
      if (this.#need === 0) {
        off = Math.min(HEADER_SIZE - this.#accLen, len);
        this.#append(buf, 0, off);
        if (this.#accLen < HEADER_SIZE) return this.#pending(frames);
        const size = this.#header(this.#acc!, 0, this.#base);
        if (size < 0) return frames;
        this.#need = size;
      }
      const take = Math.min(this.#need - this.#accLen, len - off);
      this.#append(buf, off, off + take);
      off += take;
      if (this.#accLen < this.#need) return this.#pending(frames);
      // Complete: the frame owns the buffer, no second copy.
      const acc = this.#acc!;
      const whole = this.#need;
      this.#acc = null;
      this.#accLen = 0;
      this.#need = 0;
      if (!this.#finish(acc, 0, this.#base, true, frames)) return frames;
      this.#base += whole;
    }

    // Any check that fails sets this.error and leaves the loop.
    let size = 0;
    while (len - off >= HEADER_SIZE) {
      size = this.#header(buf, off, start + off);
      if (size < 0 || len - off < size) break;
      if (!this.#finish(buf, off, start + off, shared, frames)) break;
      off += size;
      size = 0;
    }
    if (this.error !== undefined) return frames;
    this.#base = start + off;
    if (off < len) {
      this.#need = size;
      this.#append(buf, off, len);
    }
    while (this.#creds.length > 0 && this.#creds[0]!.end <= this.#base) this.#creds.shift();
    return this.#pending(frames);
  }

  /** The end of a push that leaves a frame incomplete (or none). */
  #pending(frames: Frame[]): Frame[] {
    this.#checkStray();
    return frames;
  }

  /** Appends src[from, to) to the incomplete frame's buffer, doubling it
   * when full, never past the frame's size (or, before the header is in,
   * the header's). */
  #append(src: Buffer, from: number, to: number): void {
    const want = this.#accLen + to - from;
    const cap = this.#acc?.length ?? 0;
    if (want > cap) {
      const limit = this.#need > 0 ? this.#need : HEADER_SIZE;
      const next = Buffer.allocUnsafe(Math.min(limit, Math.max(want, 2 * cap, MIN_BUFFER)));
      if (this.#accLen > 0) copyBytes(next, 0, this.#acc!, 0, this.#accLen);
      this.#acc = next;
    }
    copyBytes(this.#acc!, this.#accLen, src, from, to);
    this.#accLen = want;
  }

  /** Credentials of the read starting at stream offset `start` (through
   * #end), merged into the last range when it is contiguous and equal. */
  #addCreds(start: number, creds: Credentials): void {
    const last = this.#creds[this.#creds.length - 1];
    if (last && last.end === start && last.creds.pid === creds.pid && last.creds.uid === creds.uid && last.creds.gid === creds.gid) {
      last.end = this.#end;
    } else {
      this.#creds.push({ start, end: this.#end, creds });
    }
  }

  /**
   * Checks the header at buf[off] (stream offset `at`), and the fds that
   * must have come with its first byte: they are known now, before the
   * payload is in. Returns the frame's whole size, or -1 with `error` set.
   */
  #header(buf: Buffer, off: number, at: number): number {
    if (buf[off] !== FRAME_MAGIC) {
      this.errorReason = 'bad-magic';
      this.error = `bad magic 0x${buf[off]!.toString(16).padStart(2, '0')} at stream offset ${at} (is the peer speaking raw sendmsg? use raw mode)`;
      return -1;
    }
    const flags = buf[off + 1]!;
    if (flags & ~KNOWN_FLAGS) {
      this.errorReason = 'bad-flags';
      this.error = `unknown flags 0x${flags.toString(16)} at stream offset ${at}`;
      return -1;
    }
    const nfds = buf.readUInt16LE(off + 2);
    const length = buf.readUInt32LE(off + 4);
    if (nfds > MAX_FDS) {
      this.errorReason = 'too-many-fds';
      this.error = `frame at stream offset ${at} claims ${nfds} fds (max ${MAX_FDS})`;
      return -1;
    }
    if (length > this.#maxPayload) {
      this.errorReason = 'too-large';
      this.error = `frame at stream offset ${at} has a ${length}-byte payload (limit ${this.#maxPayload})`;
      return -1;
    }
    // A frame without fds may precede the fd-bearing one in the same read.
    const claimed = nfds > 0 ? this.#batchAt(at) : undefined;
    if (nfds > 0 && !claimed) {
      this.errorReason = 'fds-missing';
      this.error = `frame at stream offset ${at} claims ${nfds} fds but none came with its first byte`;
      return -1;
    }
    if (claimed && !claimed.truncated && claimed.fds.length !== nfds) {
      this.errorReason = 'fd-count-mismatch';
      this.error = `frame at stream offset ${at} claims ${nfds} fds but ${claimed.fds.length} came with it`;
      return -1;
    }
    return HEADER_SIZE + length;
  }

  /** The held batch that came with the read holding stream offset `at`. */
  #batchAt(at: number): FdBatch | undefined {
    const b = this.#batches[0];
    return b && b.start <= at && at < b.end ? b : undefined;
  }

  /**
   * Emits the complete frame at buf[off] (stream offset `at`), its header
   * checked: its payload is a view of `buf` when `owned` (a buffer made for
   * this frame, or a chunk given away), a copy otherwise (the caller's read). False, with `error`
   * set, when a batch turns out to have come inside it.
   */
  #finish(buf: Buffer, off: number, at: number, owned: boolean, frames: Frame[]): boolean {
    const flags = buf[off + 1]!;
    const nfds = buf.readUInt16LE(off + 2);
    const length = buf.readUInt32LE(off + 4);
    const from = off + HEADER_SIZE;
    let payload: Buffer;
    if (owned) payload = buf.subarray(from, from + length);
    else {
      payload = Buffer.allocUnsafe(length);
      copyBytes(payload, 0, buf, from, from + length);
    }
    let frameFds: Int32Array = NO_FDS;
    let truncated = false;
    const claimed = nfds > 0 ? this.#batchAt(at) : undefined;
    if (claimed) {
      this.#batches.shift();
      this.#held -= claimed.fds.length;
      frameFds = claimed.fds;
      truncated = claimed.truncated;
    }
    // A batch whose read ended inside the frame just completed was not
    // claimed by it, and no later frame can start inside that read.
    const next = this.#batches[0];
    if (next && next.end <= at + HEADER_SIZE + length) {
      for (let i = 0; i < frameFds.length; i++) this.#orphans.push(frameFds[i]!);
      this.errorReason = 'stray-fds';
      this.error = `${describeBatch(next)} arrived with bytes inside the frame at stream offset ${at}, not with a frame's first byte`;
      return false;
    }
    frames.push({
      payload,
      fds: frameFds,
      flags,
      credentials: this.#creds.length > 0 ? this.#credsAt(at) : undefined,
      truncated,
      expectedFds: nfds,
    });
    return true;
  }

  /**
   * Every batch still held must belong to the incomplete frame at #base (the
   * read that brought it holds that frame's first byte). Any other was
   * attached to a byte where no frame starts: no frame can ever claim it, so
   * it is refused now rather than held until the frame completes.
   */
  #checkStray(): void {
    for (const b of this.#batches) {
      if (this.#accLen > 0 && b.start <= this.#base && this.#base < b.end) continue;
      this.errorReason = 'stray-fds';
      this.error = this.#accLen > 0 && b.start > this.#base
        ? `${describeBatch(b)} arrived with stream bytes ${b.start}..${b.end}, inside the frame at stream offset ${this.#base}, not with a frame's first byte`
        : `${describeBatch(b)} arrived with stream bytes ${b.start}..${b.end}, where no frame starts`;
      return;
    }
    if (this.#held > this.#maxHeldFds) {
      this.errorReason = 'held-fds';
      this.error = `peer sent ${this.#held} fds not yet claimed by complete frames (limit ${this.#maxHeldFds})`;
    }
  }

  /** Every fd still held (for frames not complete), handed to the caller to close. */
  takeHeldFds(): number[] {
    const out: number[] = this.#orphans;
    this.#orphans = [];
    for (const b of this.#batches) for (let i = 0; i < b.fds.length; i++) out.push(b.fds[i]!);
    this.#batches = [];
    this.#held = 0;
    return out;
  }

  #credsAt(at: number): Credentials | undefined {
    for (const c of this.#creds) if (c.start <= at && at < c.end) return c.creds;
    return undefined;
  }
}

function describeBatch(b: FdBatch): string {
  return `${b.fds.length} fd(s)${b.truncated ? ' (control message truncated)' : ''}`;
}
