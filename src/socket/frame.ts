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
 * Bounded by construction: fds are checked the moment they arrive (a batch
 * that no frame can claim is an error at once, not when some later frame
 * completes), so at most one batch, the incomplete frame's own, is ever held;
 * and a frame arriving in many reads is copied once, when it is complete,
 * not once per read.
 */
const NO_FDS: Int32Array = new Int32Array(0);

export class FrameDecoder {
  readonly #maxPayload: number;
  readonly #maxHeldFds: number;
  /** Bytes of the incomplete frame at #base, as received (each a copy). */
  #parts: Buffer[] = [];
  #partsLen = 0;
  /** Whole size (header + payload) of the incomplete frame once its header
   * is in and checked; 0 while the header is still short. */
  #need = 0;
  /** Stream offset of the first byte not yet part of a complete frame. */
  #base = 0;
  /** Stream offset just past the last byte pushed. */
  #end = 0;
  #batches: FdBatch[] = [];
  #held = 0;
  #creds: { start: number; end: number; creds: Credentials }[] = [];
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
    return this.#partsLen;
  }

  get heldFds(): number {
    return this.#held;
  }

  /** `fds` is taken over (kept, not copied): pass a fresh array. `chunk` is
   * not kept: what the decoder needs of it is copied. */
  push(chunk: Uint8Array, fds: Int32Array | readonly number[] = NO_FDS, truncated = false, creds?: Credentials): Frame[] {
    const batchFds = fds instanceof Int32Array ? fds : Int32Array.from(fds);
    if (this.error !== undefined) {
      // Dead: take nothing on; whatever came with this read is the caller's.
      for (let i = 0; i < batchFds.length; i++) this.#orphans.push(batchFds[i]!);
      return [];
    }
    const start = this.#end;
    this.#end += chunk.length;
    if (batchFds.length > 0 || truncated) {
      this.#batches.push({ fds: batchFds, start, end: this.#end, truncated });
      this.#held += batchFds.length;
    }
    if (creds !== undefined && chunk.length > 0) this.#creds.push({ start, end: this.#end, creds });

    const inChunk = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.#need > 0 && this.#partsLen + inChunk.length < this.#need) {
      // More of a frame whose header was checked already, still incomplete:
      // keep a copy, concatenate once when it is whole.
      if (inChunk.length > 0) {
        this.#parts.push(Buffer.from(inChunk));
        this.#partsLen += inChunk.length;
      }
      this.#checkStray();
      return [];
    }
    // `buf` is either the caller's chunk (to be copied from) or a fresh
    // concatenation that frames may share.
    let owned = false;
    let buf: Buffer;
    if (this.#partsLen === 0) buf = inChunk;
    else {
      this.#parts.push(inChunk);
      buf = Buffer.concat(this.#parts, this.#partsLen + inChunk.length);
      owned = true;
    }
    if (this.#partsLen > 0) {
      this.#parts = [];
      this.#partsLen = 0;
    }
    this.#need = 0;

    const frames: Frame[] = [];
    let off = 0;
    // Any check that fails sets this.error and leaves the loop.
    while (buf.length - off >= HEADER_SIZE) {
      const at = this.#base + off;
      if (buf[off] !== FRAME_MAGIC) {
        this.errorReason = 'bad-magic';
        this.error = `bad magic 0x${buf[off]!.toString(16).padStart(2, '0')} at stream offset ${at} (is the peer speaking raw sendmsg? use raw mode)`;
        break;
      }
      const flags = buf[off + 1]!;
      if (flags & ~KNOWN_FLAGS) {
        this.errorReason = 'bad-flags';
        this.error = `unknown flags 0x${flags.toString(16)} at stream offset ${at}`;
        break;
      }
      const nfds = buf.readUInt16LE(off + 2);
      const length = buf.readUInt32LE(off + 4);
      if (nfds > MAX_FDS) {
        this.errorReason = 'too-many-fds';
        this.error = `frame at stream offset ${at} claims ${nfds} fds (max ${MAX_FDS})`;
        break;
      }
      if (length > this.#maxPayload) {
        this.errorReason = 'too-large';
        this.error = `frame at stream offset ${at} has a ${length}-byte payload (limit ${this.#maxPayload})`;
        break;
      }

      // Check the fds before waiting for the payload: they are known now.
      const batch = this.#batches[0];
      let claimed: FdBatch | undefined;
      if (batch && batch.start <= at && at < batch.end) {
        // A frame without fds may precede the fd-bearing one in the same read.
        if (nfds > 0) claimed = batch;
      } else if (nfds > 0) {
        this.errorReason = 'fds-missing';
        this.error = `frame at stream offset ${at} claims ${nfds} fds but none came with its first byte`;
        break;
      }
      if (claimed && !claimed.truncated && claimed.fds.length !== nfds) {
        this.errorReason = 'fd-count-mismatch';
        this.error = `frame at stream offset ${at} claims ${nfds} fds but ${claimed.fds.length} came with it`;
        break;
      }

      if (buf.length - off < HEADER_SIZE + length) {
        this.#need = HEADER_SIZE + length;
        break;
      }
      // A frame that is most of a fresh concatenation keeps it (no second
      // copy of a large payload); a small one gets its own copy, so that it
      // does not keep a large buffer alive.
      const from = off + HEADER_SIZE;
      let payload: Buffer;
      if (owned && 2 * length >= buf.length) payload = buf.subarray(from, from + length);
      else {
        payload = Buffer.allocUnsafe(length);
        copyBytes(payload, 0, buf, from, from + length);
      }
      let frameFds: Int32Array = NO_FDS;
      let truncated = false;
      if (claimed) {
        this.#batches.shift();
        this.#held -= claimed.fds.length;
        frameFds = claimed.fds;
        truncated = claimed.truncated;
      }
      off += HEADER_SIZE + length;
      const frameEnd = this.#base + off;
      // A batch whose read ended inside the frame just completed was not
      // claimed by it, and no later frame can start inside that read.
      const next = this.#batches[0];
      if (next && next.end <= frameEnd) {
        for (let i = 0; i < frameFds.length; i++) this.#orphans.push(frameFds[i]!);
        this.errorReason = 'stray-fds';
        this.error = `${describeBatch(next)} arrived with bytes inside the frame at stream offset ${at}, not with a frame's first byte`;
        break;
      }
      frames.push({
        payload,
        fds: frameFds,
        flags,
        credentials: this.#creds.length > 0 ? this.#credsAt(at) : undefined,
        truncated,
        expectedFds: nfds,
      });
    }
    if (this.error !== undefined) return frames;
    if (off < buf.length) {
      this.#parts = [owned && 2 * (buf.length - off) >= buf.length ? buf.subarray(off) : Buffer.from(buf.subarray(off))];
      this.#partsLen = buf.length - off;
    }
    this.#base += off;
    while (this.#creds.length > 0 && this.#creds[0]!.end <= this.#base) this.#creds.shift();
    this.#checkStray();
    return frames;
  }

  /**
   * Every batch still held must belong to the incomplete frame at #base (the
   * read that brought it holds that frame's first byte). Any other was
   * attached to a byte where no frame starts: no frame can ever claim it, so
   * it is refused now rather than held until the frame completes.
   */
  #checkStray(): void {
    for (const b of this.#batches) {
      if (this.#partsLen > 0 && b.start <= this.#base && this.#base < b.end) continue;
      this.errorReason = 'stray-fds';
      this.error = this.#partsLen > 0 && b.start > this.#base
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
