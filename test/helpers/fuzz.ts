/**
 * Hostile-input generator shared by the fuzz tests and scripts/fuzz.ts, pure
 * code with no I/O (it needs no addon, so unit tests can use it).
 *
 * A case is a stream of writes (one sendmsg() each: bytes and fds) built from
 * well-formed frames and then, usually, damaged: bad headers, fds on the
 * wrong byte or in the wrong number, garbage, truncation. Reads are cut the
 * way Linux cuts them (unix_stream_read_generic): a write is queued as one or
 * more skbs, its fds on the first; a read glues skbs until its buffer is full
 * and ends after the first skb that brought fds.
 *
 * The oracle is in two parts. Every case: no exception, every fd handed in
 * comes back out exactly once (in a frame or from takeHeldFds()), and any
 * error names a known kind (errorKind()). An undamaged case: exactly the
 * frames that were written, with their fds, and no error.
 */
import { FrameDecoder, encodeFrame, HEADER_SIZE, MAX_FDS, FLAG_CREDENTIALS } from '../../src/socket/frame';
import { encodeChannel, decodeChannel, Kind, MAX_TYPE_LENGTH } from '../../src/channel/codec';
import { ChannelDecodeError, ProtocolError, type ProtocolReason } from '../../src/errors';

// ---- randomness -------------------------------------------------------------

/** mulberry32: small, fast, and good enough to drive a fuzzer. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }

  u32(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** 0..n-1 */
  int(n: number): number {
    return n <= 1 ? 0 : Math.floor((this.u32() / 0x100000000) * n);
  }

  /** a..b inclusive */
  range(a: number, b: number): number {
    return a + this.int(b - a + 1);
  }

  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }

  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}

/** The seed of case `index` of a run seeded `seed`: cases replay alone. */
export function caseSeed(seed: number, index: number): number {
  let h = (seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

// ---- error kinds ------------------------------------------------------------

/** Kinds of errors that are not a peer breaking the protocol, by code. */
const BY_CODE: Record<string, string> = {
  FDPASS_ERR_CONTROL_TRUNCATED: 'control-truncated',
  FDPASS_ERR_MESSAGE_TRUNCATED: 'message-truncated',
  FDPASS_ERR_CHANNEL_MESSAGE: 'no-handler',
  FDPASS_ERR_SOCKET_CLOSED: 'closed',
  FDPASS_ERR_TIMEOUT: 'timeout',
  FDPASS_ERR_REMOTE: 'remote',
  EFUZZ: 'handler-threw', // the fuzzed channel's own 'throw' handler
  EPIPE: 'peer-gone',
  ECONNRESET: 'peer-gone',
};

/**
 * What an error says was wrong, as a short kind: a ProtocolError's reason
 * ('bad-magic', 'unexpected-fds', ...; a channel message that does not
 * decode adds which rule it broke: 'bad-channel-message:version'), or a kind
 * by code for the others; 'unexplained:...' when it says nothing
 * recognisable, which the fuzzers count as a failure. Never the message:
 * that is prose for people.
 */
export function errorKind(err: unknown): string {
  if (err instanceof ChannelDecodeError) return `${err.reason}:${err.problem}`;
  if (err instanceof ProtocolError) return err.reason;
  const e = err as { code?: unknown; message?: unknown } | null | undefined;
  const code = typeof e?.code === 'string' ? e.code : '';
  if (BY_CODE[code]) return BY_CODE[code]!;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return `unexplained:${code}:${message.slice(0, 120)}`;
}

export const isExplained = (kind: string) => !kind.startsWith('unexplained:');

/** Counts by key, printed sorted. */
export class Tally {
  readonly counts = new Map<string, number>();
  add(key: string, n = 1): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + n);
  }
  get(key: string): number {
    return this.counts.get(key) ?? 0;
  }
  merge(other: Tally): void {
    for (const [k, v] of other.counts) this.add(k, v);
  }
  toJSON(): Record<string, number> {
    return Object.fromEntries([...this.counts].sort((a, b) => b[1] - a[1]));
  }
}

// ---- streams of frames --------------------------------------------------------

/** One sendmsg(): bytes, and the fds attached (as tags: numbers the runner
 * maps to real fds, or uses as fake fd numbers in the pure decoder). */
export interface Write {
  bytes: Buffer;
  fds: number[];
  /** Attach SCM_CREDENTIALS (the frame's flag says so). */
  creds?: boolean;
}

export interface ExpectedFrame {
  payload: Buffer;
  fds: number[];
}

export interface StreamCase {
  writes: Write[];
  /** The frames a receiver must deliver when `mutations` is empty. */
  expected: ExpectedFrame[];
  /** What was done to the stream; empty for a well-formed one. */
  mutations: string[];
}

export interface StreamLimits {
  /** The receiver's largest payload. */
  maxPayload: number;
  /** Most fds a well-formed frame carries (the receiver's maxFdsPerMessage). */
  maxFds: number;
  /** Zero-byte writes with fds (the pure decoder only: a stream socket
   * cannot send them). */
  emptyWrites: boolean;
  /** Largest payload to generate (keep socket cases quick). */
  bigPayload: number;
  /** fd tags to use: 0..pool-1 (socket cases), or fresh numbers if 0. */
  pool: number;
}

function payloadLength(rng: Rng, limits: StreamLimits): number {
  const r = rng.int(100);
  const cap = Math.min(limits.maxPayload, limits.bigPayload);
  if (r < 45) return rng.int(Math.min(17, cap + 1));
  if (r < 80) return rng.int(Math.min(257, cap + 1));
  if (r < 96) return rng.int(Math.min(4097, cap + 1));
  return rng.int(cap + 1);
}

export function fdCount(rng: Rng, max: number): number {
  if (max === 0) return 0;
  const r = rng.int(100);
  if (r < 50) return 0;
  if (r < 85) return rng.range(1, Math.min(3, max));
  if (r < 97) return rng.range(1, Math.min(16, max));
  return rng.range(1, Math.min(MAX_FDS, max));
}

export class TagSource {
  #next = 1000;
  constructor(private readonly pool: number, private readonly rng: Rng) {}
  take(n: number): number[] {
    if (this.pool > 0) return Array.from({ length: n }, () => this.rng.int(this.pool));
    return Array.from({ length: n }, () => this.#next++);
  }
}

interface FrameSpec {
  payload: Buffer;
  fds: number[];
  flags: number;
}

/**
 * Frames as a conforming sender writes them: one write per frame, its fds
 * with it; sometimes fd-less frames ride along in the same write; sometimes a
 * write goes out in pieces (a short write: the fds with the first piece).
 */
function writeFrames(rng: Rng, frames: FrameSpec[]): { writes: Write[]; starts: number[] } {
  const writes: Write[] = [];
  const starts: number[] = [];
  let off = 0;
  let i = 0;
  while (i < frames.length) {
    const group = [frames[i]!];
    i++;
    while (i < frames.length && frames[i]!.fds.length === 0 && rng.chance(0.3)) group.push(frames[i++]!);
    const bytes = Buffer.concat(group.map((f) => encodeFrame(f.payload, f.fds.length, f.flags)));
    for (const f of group) {
      starts.push(off);
      off += HEADER_SIZE + f.payload.length;
    }
    const fds = group[0]!.fds;
    const creds = (group[0]!.flags & FLAG_CREDENTIALS) !== 0;
    if (bytes.length > 1 && rng.chance(0.15)) {
      const cuts = [...new Set(Array.from({ length: rng.range(1, 3) }, () => rng.range(1, bytes.length - 1)))].sort((a, b) => a - b);
      let prev = 0;
      for (const c of [...cuts, bytes.length]) {
        writes.push({ bytes: bytes.subarray(prev, c), fds: prev === 0 ? fds : [], creds: prev === 0 && creds });
        prev = c;
      }
    } else {
      writes.push({ bytes, fds, creds });
    }
  }
  return { writes, starts };
}

const MUTATIONS = [
  'flip-header-bit', 'flip-payload-byte', 'bad-magic', 'bad-flags', 'nfds-over', 'length-over',
  'fd-count', 'fds-on-fdless-frame', 'fds-missing', 'fds-mid-frame', 'truncate', 'garbage-write',
  'duplicate-write', 'drop-write', 'big-length-then-eof', 'fds-after-last', 'random-stream',
] as const;

/** Where frame k's header starts, as (write index, offset in it). */
function locate(writes: Write[], streamOff: number): [number, number] | null {
  let base = 0;
  for (let w = 0; w < writes.length; w++) {
    const len = writes[w]!.bytes.length;
    if (streamOff < base + len) return [w, streamOff - base];
    base += len;
  }
  return null;
}

function mutate(rng: Rng, c: { writes: Write[]; starts: number[] }, limits: StreamLimits, tags: TagSource): string {
  const writes = c.writes;
  if (writes.length === 0) writes.push({ bytes: rng.bytes(rng.range(1, 16)), fds: [] }); // truncated to nothing
  const m = rng.pick(MUTATIONS);
  const headerAt = (): [Write, number] | null => {
    const s = rng.pick(c.starts);
    const loc = locate(writes, s);
    if (!loc) return null;
    // The header may straddle two writes; copy the write so that shared
    // buffers are not changed behind the other cases' backs.
    const w = writes[loc[0]]!;
    w.bytes = Buffer.from(w.bytes);
    return [w, loc[1]];
  };
  const setHeaderByte = (rel: number, value: (old: number) => number): void => {
    const s = rng.pick(c.starts) + rel;
    const loc = locate(writes, s);
    if (!loc) return;
    const w = writes[loc[0]]!;
    w.bytes = Buffer.from(w.bytes);
    w.bytes[loc[1]] = value(w.bytes[loc[1]]!) & 0xff;
  };
  switch (m) {
    case 'flip-header-bit':
      setHeaderByte(rng.int(HEADER_SIZE), (b) => b ^ (1 << rng.int(8)));
      break;
    case 'flip-payload-byte': {
      const w = rng.pick(writes);
      if (w.bytes.length > 0) {
        w.bytes = Buffer.from(w.bytes);
        const k = rng.int(w.bytes.length);
        w.bytes[k] = w.bytes[k]! ^ (1 + rng.int(255));
      }
      break;
    }
    case 'bad-magic':
      setHeaderByte(0, () => rng.range(0, 0xfc));
      break;
    case 'bad-flags':
      setHeaderByte(1, (b) => b | (2 << rng.int(7)));
      break;
    case 'nfds-over': {
      const v = rng.range(MAX_FDS + 1, 0xffff);
      setHeaderByte(2, () => v & 0xff);
      break;
    }
    case 'length-over': {
      const h = headerAt();
      if (h && h[0].bytes.length >= h[1] + HEADER_SIZE) {
        h[0].bytes.writeUInt32LE(Math.min(0xffffffff, limits.maxPayload + 1 + rng.int(1 << 30)), h[1] + 4);
      }
      break;
    }
    case 'fd-count': {
      const withFds = writes.filter((w) => w.fds.length > 0);
      const w = withFds.length ? rng.pick(withFds) : rng.pick(writes);
      const n = w.fds.length;
      let k = n;
      while (k === n) k = rng.range(Math.max(0, n - 3), Math.min(MAX_FDS, n + 3));
      w.fds = k < n ? w.fds.slice(0, k) : [...w.fds, ...tags.take(k - n)];
      break;
    }
    case 'fds-on-fdless-frame':
    case 'fds-after-last': {
      if (m === 'fds-after-last') writes.push({ bytes: rng.bytes(1 + rng.int(3)), fds: tags.take(rng.range(1, 4)) });
      else {
        const w = rng.pick(writes);
        w.fds = [...w.fds, ...tags.take(rng.range(1, 4))];
      }
      break;
    }
    case 'fds-missing': {
      const withFds = writes.filter((w) => w.fds.length > 0);
      if (withFds.length) rng.pick(withFds).fds = [];
      else writes.push({ bytes: encodeFrame(rng.bytes(rng.int(8)), rng.range(1, 5)), fds: [] });
      break;
    }
    case 'fds-mid-frame': {
      // Split a write and move its fds (or new ones) to a later piece.
      const k = rng.int(writes.length);
      const w = writes[k]!;
      if (w.bytes.length >= 2) {
        const cut = rng.range(1, w.bytes.length - 1);
        const fds = w.fds.length ? w.fds : tags.take(rng.range(1, 3));
        writes.splice(k, 1, { bytes: w.bytes.subarray(0, cut), fds: [] }, { bytes: w.bytes.subarray(cut), fds });
      } else {
        writes.splice(k + 1, 0, { bytes: rng.bytes(1), fds: tags.take(1) });
      }
      break;
    }
    case 'truncate': {
      const total = writes.reduce((a, w) => a + w.bytes.length, 0);
      const keep = rng.int(total);
      let acc = 0;
      for (let i = 0; i < writes.length; i++) {
        const w = writes[i]!;
        if (acc + w.bytes.length > keep) {
          w.bytes = w.bytes.subarray(0, keep - acc);
          writes.length = w.bytes.length === 0 ? i : i + 1;
          break;
        }
        acc += w.bytes.length;
      }
      break;
    }
    case 'garbage-write':
      writes.splice(rng.int(writes.length + 1), 0, { bytes: rng.bytes(rng.range(1, 64)), fds: rng.chance(0.5) ? tags.take(rng.range(1, 4)) : [] });
      break;
    case 'duplicate-write': {
      const k = rng.int(writes.length);
      writes.splice(k, 0, { ...writes[k]!, fds: [...writes[k]!.fds] });
      break;
    }
    case 'drop-write':
      if (writes.length > 1) writes.splice(rng.int(writes.length), 1);
      break;
    case 'big-length-then-eof': {
      const len = rng.range(64, Math.max(64, limits.maxPayload));
      const f = Buffer.alloc(HEADER_SIZE + rng.int(32));
      encodeFrame(Buffer.alloc(0), 0).copy(f);
      f.writeUInt32LE(len, 4);
      writes.push({ bytes: f, fds: rng.chance(0.3) ? tags.take(1) : [] });
      if (f[2] === 0 && writes[writes.length - 1]!.fds.length === 1) f[2] = 1;
      break;
    }
    case 'random-stream':
      writes.length = 0;
      for (let k = rng.range(1, 6); k > 0; k--) writes.push({ bytes: rng.bytes(rng.range(1, 200)), fds: rng.chance(0.3) ? tags.take(rng.range(1, 4)) : [] });
      break;
  }
  for (const w of writes) {
    // The kernel takes at most 253 fds per sendmsg() (EINVAL beyond): no
    // peer can send more, so neither does the generator.
    if (w.fds.length > MAX_FDS) w.fds = w.fds.slice(0, MAX_FDS);
    // A stream socket cannot send fds without a byte.
    if (!limits.emptyWrites && w.bytes.length === 0 && w.fds.length > 0) w.bytes = Buffer.from([0xfd]);
  }
  return m;
}

/** A stream case: well-formed a quarter of the time (1 - mutateChance). */
export function streamCase(rng: Rng, limits: StreamLimits, payloads?: (rng: Rng) => Buffer, mutateChance = 0.75): StreamCase {
  const tags = new TagSource(limits.pool, rng);
  const frames: FrameSpec[] = [];
  const n = 1 + rng.int(rng.chance(0.1) ? 40 : 6);
  for (let i = 0; i < n; i++) {
    let payload = payloads ? payloads(rng) : rng.bytes(payloadLength(rng, limits));
    if (payload.length > limits.maxPayload) payload = payload.subarray(0, limits.maxPayload);
    frames.push({ payload, fds: tags.take(fdCount(rng, limits.maxFds)), flags: rng.chance(0.05) ? FLAG_CREDENTIALS : 0 });
  }
  const c = writeFrames(rng, frames);
  const mutations: string[] = [];
  if (rng.chance(mutateChance)) {
    for (let k = rng.range(1, 3); k > 0; k--) mutations.push(mutate(rng, c, limits, tags));
  }
  if (limits.emptyWrites && rng.chance(0.02)) {
    c.writes.splice(rng.int(c.writes.length + 1), 0, { bytes: Buffer.alloc(0), fds: tags.take(rng.range(1, 3)) });
    mutations.push('empty-write-with-fds');
  }
  return { writes: c.writes, expected: frames.map((f) => ({ payload: f.payload, fds: f.fds })), mutations };
}

// ---- the pure decoder under a Linux-shaped reader --------------------------------

interface Skb {
  bytes: Buffer;
  fds: number[] | null;
}

/** Reads as Linux cuts them: [bytes, fds] for each recvmsg(). */
export function linuxReads(rng: Rng, writes: Write[]): [Buffer, number[]][] {
  const skbs: Skb[] = [];
  for (const w of writes) {
    // The kernel queues a large write as several skbs, fds on the first.
    let off = 0;
    do {
      const len = w.bytes.length - off <= 64 || rng.chance(0.7) ? w.bytes.length - off : rng.range(1, w.bytes.length - off);
      skbs.push({ bytes: w.bytes.subarray(off, off + len), fds: off === 0 && w.fds.length ? w.fds : null });
      off += len;
    } while (off < w.bytes.length);
  }
  const reads: [Buffer, number[]][] = [];
  let k = 0;
  let skip = 0;
  while (k < skbs.length) {
    let budget = rng.chance(0.5) ? 1 << 22 : rng.range(1, 300);
    const parts: Buffer[] = [];
    let fds: number[] = [];
    while (k < skbs.length && budget > 0) {
      const s = skbs[k]!;
      const chunk = Math.min(s.bytes.length - skip, budget);
      parts.push(s.bytes.subarray(skip, skip + chunk));
      budget -= chunk;
      if (s.fds && skip === 0) fds = s.fds;
      const gotFds = s.fds !== null && skip === 0;
      skip += chunk;
      if (skip < s.bytes.length) break; // buffer full inside this skb
      k++;
      skip = 0;
      if (gotFds) break; // a read ends after the skb that brought fds
    }
    reads.push([Buffer.concat(parts), fds]);
  }
  return reads;
}

/** The decoder limits of case `index`: a third of the cases with a small
 * payload limit, so that oversized frames are common; some with a small
 * held-fd limit. */
export function decoderLimits(index: number): [maxPayload: number, maxHeldFds: number | undefined] {
  return [index % 3 === 0 ? 4096 : 1 << 20, index % 11 === 0 ? 4 : undefined];
}

export interface DecoderResult {
  frames: number;
  /** The decoder's reason for refusing the stream, as errorKind() names it
   * ('eof-mid-frame' when it ended inside a frame); 'ok' when it did not. */
  kind: ProtocolReason | 'ok';
  error: string | undefined;
  /** Set when the oracle failed: what went wrong. */
  failure?: string;
}

/**
 * Runs one stream case through a FrameDecoder, cut into reads the way Linux
 * cuts them, then checks the oracle.
 */
export function runDecoderCase(rng: Rng, maxPayload: number, maxHeldFds?: number): DecoderResult & { mutations: string[] } {
  const limits: StreamLimits = { maxPayload, maxFds: MAX_FDS, emptyWrites: true, bigPayload: 70_000, pool: 0 };
  const c = streamCase(rng, limits);
  const d = new FrameDecoder({ maxPayload, maxHeldFds });
  const given: number[] = [];
  const got: number[] = [];
  const frames: { payload: Buffer; fds: number[] }[] = [];
  for (const [bytes, fds] of linuxReads(rng, c.writes)) {
    given.push(...fds);
    // The decoder keeps nothing of the chunk: hand it a buffer that is then
    // scribbled over, as the socket's shared receive buffer is.
    const scratch = Buffer.from(bytes);
    for (const f of d.push(scratch, Int32Array.from(fds))) {
      got.push(...f.fds);
      frames.push({ payload: f.payload, fds: [...f.fds] });
    }
    scratch.fill(0xee);
  }
  let error = d.error;
  let kind: ProtocolReason | 'ok' = d.errorReason ?? 'ok';
  if (error === undefined && (d.bufferedBytes > 0 || d.heldFds > 0)) {
    error = `peer closed in the middle of a frame (${d.bufferedBytes} bytes, ${d.heldFds} fds discarded)`;
    kind = 'eof-mid-frame';
  }
  const held = d.takeHeldFds();
  const result = { frames: frames.length, kind, error, mutations: c.mutations };
  const back = [...got, ...held].sort((a, b) => a - b);
  const sent = [...given].sort((a, b) => a - b);
  if (back.length !== sent.length || back.some((v, i) => v !== sent[i])) {
    return { ...result, failure: `fds not conserved: given ${sent.length}, back ${back.length}` };
  }
  if ((error === undefined) !== (kind === 'ok')) return { ...result, failure: `an error without a reason, or a reason without an error: ${kind}, ${error}` };
  // A well-formed frame with more fds than maxHeldFds is refused when it is
  // not complete in the read that brought its fds, which depends on the cuts.
  const heldLimited = maxHeldFds !== undefined && c.expected.some((f) => f.fds.length > maxHeldFds) &&
    kind === 'held-fds';
  if (c.mutations.length === 0 && !heldLimited) {
    if (error !== undefined) return { ...result, failure: `well-formed stream refused: ${error}` };
    if (frames.length !== c.expected.length) return { ...result, failure: `${frames.length} frames of ${c.expected.length}` };
    for (let i = 0; i < frames.length; i++) {
      const want = c.expected[i]!;
      if (!frames[i]!.payload.equals(want.payload)) return { ...result, failure: `frame ${i}: payload differs` };
      if (frames[i]!.fds.join() !== want.fds.join()) return { ...result, failure: `frame ${i}: fds ${frames[i]!.fds} != ${want.fds}` };
    }
  }
  return result;
}

// ---- channel messages -------------------------------------------------------------

/** Types a fuzzed Channel handles (see fuzz-live.ts). */
export const CHANNEL_TYPES = ['echo', 'take', 'nofds', 'two', 'throw', 'open', 'sink'] as const;

/** A random JSON value, sometimes shaped to trip careless code. */
export function jsonValue(rng: Rng, depth = 0): unknown {
  const r = rng.int(depth > 3 ? 6 : 10);
  switch (r) {
    case 0: return null;
    case 1: return rng.chance(0.5);
    case 2: return rng.pick([0, -1, 1.5, 2 ** 53, -(2 ** 31), 1e308]);
    case 3: return rng.bytes(rng.int(12)).toString('latin1');
    case 4: return rng.pick(['', '__proto__', 'constructor', 'toString', '\u0000', '\ud800', 'é'.repeat(40)]);
    case 5: return rng.pick<unknown>([{ message: { toString: 1 } }, { message: 42, code: { x: 1 } }, { message: { valueOf: 'x' } }, [], {}]);
    case 6:
    case 7: return Array.from({ length: rng.int(5) }, () => jsonValue(rng, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let k = rng.int(5); k > 0; k--) {
        // defineProperty: '__proto__' becomes an own key, as JSON.parse makes it.
        Object.defineProperty(o, rng.pick(['a', 'message', 'code', 'path', '__proto__', 'constructor', String(k)]),
          { value: jsonValue(rng, depth + 1), enumerable: true, writable: true, configurable: true });
      }
      return o;
    }
  }
}

export interface ChannelPayload {
  bytes: Buffer;
  /** What was done to it; empty for a well-formed message. */
  mutation: string;
  kind: number;
  id: number;
  type: string;
}

/**
 * One channel message from a peer: well-formed (of a handled type or not),
 * with a hostile JSON body, or damaged in its header, type or body.
 * `ids`: ids of requests the receiving side has outstanding, which replies
 * may target.
 */
export function channelPayload(rng: Rng, ids: readonly number[] = [], mutateChance = 0.5): ChannelPayload {
  const kind = rng.pick([Kind.Post, Kind.Request, Kind.Request, Kind.Reply, Kind.ErrorReply]);
  const type = rng.chance(0.8) ? rng.pick(CHANNEL_TYPES)
    : rng.pick(['nope', '__proto__', 'constructor', 'é', 'x'.repeat(MAX_TYPE_LENGTH)]);
  const id = kind === Kind.Post ? 0 : (kind === Kind.Reply || kind === Kind.ErrorReply) && ids.length && rng.chance(0.6) ? rng.pick(ids) : rng.range(1, 0xffffffff);
  const body = rng.chance(0.15) ? undefined : jsonValue(rng);
  let bytes = encodeChannel(kind, id, type, body);
  let mutation = '';
  if (rng.chance(mutateChance)) {
    mutation = rng.pick(['version', 'kind', 'type-length-0', 'type-length-long', 'type-past-end', 'short', 'empty',
      'bad-json', 'id-0', 'bad-utf8-type', 'random', 'flip']);
    bytes = Buffer.from(bytes);
    switch (mutation) {
      case 'version': bytes[0] = rng.pick([0, 2, 0xff]); break;
      case 'kind': bytes[1] = rng.range(4, 255); break;
      case 'type-length-0': bytes.writeUInt16LE(0, 6); break;
      case 'type-length-long': bytes.writeUInt16LE(rng.range(MAX_TYPE_LENGTH + 1, 0xffff), 6); break;
      case 'type-past-end': bytes.writeUInt16LE(Math.min(MAX_TYPE_LENGTH, bytes.length - 8 + rng.range(1, 200)), 6); break;
      case 'short': bytes = bytes.subarray(0, rng.int(8)); break;
      case 'empty': bytes = Buffer.alloc(0); break;
      case 'bad-json': bytes = Buffer.concat([bytes, Buffer.from(rng.pick(['{', '}', ',', 'undefined', '\u0000']))]); break;
      case 'id-0':
        if (kind === Kind.Post) bytes[1] = Kind.Request;
        bytes.writeUInt32LE(0, 2);
        break;
      case 'bad-utf8-type': bytes[8] = rng.pick([0x80, 0xc3, 0xff, 0xed]); break;
      case 'random': bytes = rng.bytes(rng.int(64)); break;
      case 'flip': if (bytes.length) { const k = rng.int(bytes.length); bytes[k] = bytes[k]! ^ (1 << rng.int(8)); } break;
    }
  }
  return { bytes, mutation, kind, id, type };
}

/**
 * decodeChannel() on a fuzzed message: returns the error kind ('ok' when it
 * decoded), or a failure when it threw something that says nothing, or
 * decoded a message it should have refused.
 */
export function runCodecCase(rng: Rng): { kind: string; failure?: string } {
  const p = channelPayload(rng, [1, 2, 3]);
  try {
    const f = decodeChannel(p.bytes);
    if (p.mutation === '' && (f.kind !== p.kind || f.id !== p.id || f.type !== p.type)) {
      return { kind: 'ok', failure: 'well-formed message decoded wrong' };
    }
    return { kind: 'ok' };
  } catch (err) {
    if (!(err instanceof ChannelDecodeError)) return { kind: 'thrown', failure: `threw something other than a ChannelDecodeError: ${String(err)}` };
    const kind = errorKind(err);
    if (p.mutation === '') return { kind, failure: `well-formed message refused: ${err.message}` };
    return { kind };
  }
}
