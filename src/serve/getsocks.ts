/**
 * HAProxy's `_getsocks` protocol, as fdpass speaks it (both sides): the
 * wire format only, pure code with no I/O and no fd ownership (fds are
 * counted here, never held). docs/takeover.md describes it in full.
 *
 * Over a SOCK_STREAM Unix socket:
 *
 *   client -> server   "_getsocks\n"
 *   server -> client   count: a native-endian 32-bit int, no fds
 *   server -> client   batches: one sendmsg per at most 252 fds
 *                      (SCM_RIGHTS), its bytes one record per fd:
 *                        u8 namespace length, namespace bytes,
 *                        u8 interface length, interface bytes,
 *                        4 reserved bytes (zero; HAProxy < 2.3 put
 *                        listener options there: ignored)
 *   client -> server   4 bytes (an acknowledgement) after each read that
 *                      brought fds. The server waits for one after each
 *                      full batch; HAProxy 2.6 closes after the last batch,
 *                      later versions may wait for a last acknowledgement.
 *
 * HAProxy's server sends nothing at all (closes) when it has nothing to
 * expose or the socket lacks `expose-fd listeners`.
 *
 * fdpass adds one exchange, after the last batch, that HAProxy never
 * starts: the client sends "_finish\n" once it serves (its workers are
 * ready) and an fdpass server answers "ok\n" and stops (drains its workers
 * and exits without touching the shared listeners). A server that is not
 * fdpass has closed the connection by then.
 *
 * Reading: on a stream the kernel may hand the count, a record's bytes and
 * a batch's fds in any grouping across reads (the fds come with the read
 * that reaches their batch's first byte); GetsocksDecoder takes the reads
 * as they come.
 */
import * as os from 'node:os';
import { TakeoverError } from '../errors';

/** What the client sends first. */
export const GETSOCKS_REQUEST = '_getsocks\n';
/** fdpass's request to a server that handed its listeners over: stop. */
export const FINISH_REQUEST = '_finish\n';
/** An fdpass server's answer to FINISH_REQUEST. */
export const FINISH_REPLY = 'ok\n';
/** fds per batch (one sendmsg) at most: HAProxy's MAX_SEND_FD. */
export const MAX_BATCH_FDS = 252;
/** Bytes of the count, and of an acknowledgement. */
export const COUNT_BYTES = 4;
export const ACK_BYTES = 4;
/** Bytes after the names in each record. */
export const RESERVED_BYTES = 4;
/** Longest name a record can hold (its length is one byte). */
export const MAX_NAME = 255;
/** Most listeners fdpass accepts in one answer (a count above it is garbage). */
export const MAX_COUNT = 65536;

/** One listener's record: the network namespace and interface it was bound
 * in ('' for none). Names are bytes on the wire; they are read as latin1 so
 * that any byte survives. */
export interface SockRecord {
  namespace: string;
  iface: string;
}

const LE = os.endianness() === 'LE';

/** A native-endian int32 (the count, an acknowledgement). */
export function encodeInt(n: number): Buffer {
  const b = Buffer.alloc(4);
  if (LE) b.writeInt32LE(n);
  else b.writeInt32BE(n);
  return b;
}

export function decodeInt(b: Uint8Array, off = 0): number {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  return LE ? buf.readInt32LE(off) : buf.readInt32BE(off);
}

/** The bytes of one batch: one record per fd, in fd order. */
export function encodeRecords(records: readonly SockRecord[]): Buffer {
  const parts: Buffer[] = [];
  for (const r of records) {
    const ns = nameBytes(r.namespace, 'namespace');
    const ifc = nameBytes(r.iface, 'interface');
    parts.push(Buffer.from([ns.length]), ns, Buffer.from([ifc.length]), ifc, Buffer.alloc(RESERVED_BYTES));
  }
  return Buffer.concat(parts);
}

function nameBytes(name: string, what: string): Buffer {
  const b = Buffer.from(name, 'latin1');
  if (b.length > MAX_NAME) throw new RangeError(`${what} name longer than ${MAX_NAME} bytes`);
  return b;
}

/** How `n` fds are cut into batches: [252, 252, ..., rest]. */
export function batchSizes(n: number): number[] {
  const out: number[] = [];
  for (let left = n; left > 0; left -= MAX_BATCH_FDS) out.push(Math.min(left, MAX_BATCH_FDS));
  return out;
}

/**
 * Parses `count` records from the start of `buf`: 'short' if `buf` ends
 * before the last one does; otherwise the records and the bytes they took.
 */
export function parseRecords(buf: Uint8Array, count: number): { records: SockRecord[]; used: number } | 'short' {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const records: SockRecord[] = [];
  let off = 0;
  for (let i = 0; i < count; i++) {
    if (off + 1 > b.length) return 'short';
    const nsLen = b[off]!;
    if (off + 1 + nsLen + 1 > b.length) return 'short';
    const namespace = b.toString('latin1', off + 1, off + 1 + nsLen);
    off += 1 + nsLen;
    const ifLen = b[off]!;
    if (off + 1 + ifLen + RESERVED_BYTES > b.length) return 'short';
    const iface = b.toString('latin1', off + 1, off + 1 + ifLen);
    off += 1 + ifLen + RESERVED_BYTES;
    records.push({ namespace, iface });
  }
  return { records, used: off };
}

/** Most bytes `count` records can take. */
export function maxRecordBytes(count: number): number {
  return count * (1 + MAX_NAME + 1 + MAX_NAME + RESERVED_BYTES);
}

/**
 * The client's view of an answer, read by read. push() each read's bytes
 * and how many fds came with it; after each push `done` says whether the
 * count, every fd it announced and all their records are in. A violation
 * throws a TakeoverError (reason 'bad-count', 'too-many-fds' or 'bad-records'): a negative or absurd count, fds before the
 * count or beyond it, records that do not parse or bytes left over once
 * every fd and record is in.
 */
export class GetsocksDecoder {
  #count: number | null = null;
  #fds = 0;
  #bytes: Buffer[] = [];
  #size = 0;
  #records: SockRecord[] | null = null;

  /** The announced count, once its 4 bytes are in. */
  get count(): number | null {
    return this.#count;
  }

  /** fds received so far. */
  get fds(): number {
    return this.#fds;
  }

  get done(): boolean {
    return this.#records !== null;
  }

  /** The records, in fd order (once done). */
  get records(): SockRecord[] {
    if (!this.#records) throw new Error('the answer is not complete');
    return this.#records;
  }

  push(data: Uint8Array, nfds: number): void {
    if (this.#records) {
      if (data.length || nfds) throw new TakeoverError(nfds ? 'too-many-fds' : 'bad-records', `${nfds ? `${nfds} fds` : `${data.length} bytes`} after the complete answer`);
      return;
    }
    if (data.length) {
      this.#bytes.push(Buffer.from(data));
      this.#size += data.length;
    }
    if (this.#count === null && this.#size >= COUNT_BYTES) {
      const all = this.#joined();
      const n = decodeInt(all, 0);
      if (n < 0 || n > MAX_COUNT) throw new TakeoverError('bad-count', `count ${n} is not a number of listeners (0..${MAX_COUNT})`);
      this.#count = n;
      this.#bytes = [all.subarray(COUNT_BYTES)];
      this.#size -= COUNT_BYTES;
    }
    if (nfds) {
      if (this.#count === null) throw new TakeoverError('bad-count', `${nfds} fds before the count`);
      this.#fds += nfds;
      if (this.#fds > this.#count) throw new TakeoverError('too-many-fds', `${this.#fds} fds for a count of ${this.#count}`);
    }
    if (this.#count === null) return;
    if (this.#size > maxRecordBytes(this.#count)) {
      throw new TakeoverError('bad-records', `${this.#size} bytes of records for ${this.#count} listeners`);
    }
    if (this.#fds < this.#count) return;
    const parsed = parseRecords(this.#joined(), this.#count);
    if (parsed === 'short') return;
    if (parsed.used !== this.#size) {
      throw new TakeoverError('bad-records', `${this.#size - parsed.used} bytes left over after ${this.#count} records`);
    }
    this.#records = parsed.records;
    this.#bytes = [];
    this.#size = 0;
  }

  #joined(): Buffer {
    if (this.#bytes.length !== 1) this.#bytes = [Buffer.concat(this.#bytes)];
    return this.#bytes[0] ?? Buffer.alloc(0);
  }
}
