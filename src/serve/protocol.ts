/**
 * Messages between the primary and a worker of `fdpass serve`, pure code.
 * They travel over a SOCK_SEQPACKET socketpair (the worker's fd 3), one
 * packet per message, so no framing is needed; the hot ones (connections,
 * acks) are binary and batched, the rare ones carry JSON.
 *
 *   primary -> worker
 *     CONNS     u8 1, u8 0, u16 n, n x (u32 id, u16 listener, u16 0)   + n fds
 *     SHUTDOWN  u8 2, u8 flags, u16 0, u32 timeout ms: finish, then exit 0.
 *               flags bit 0, HOLD: drain (stop keep-alive, finish what is
 *               live within the timeout) but take the CONNS that still
 *               come, each with the timeout from its arrival, and do not
 *               exit until a SHUTDOWN without HOLD (the release: then exit
 *               once nothing is live). Other bits are 0, and ignored.
 *               (A worker that ignores HOLD drains and exits at once, as
 *               before HOLD existed; docs/protocol.md section 5.)
 *     STATUS?   u8 3: ask for a STATS message
 *     TLS       u8 4, u8 0, u16 0, u32 certLength, cert bytes, key bytes (PEM):
 *               the certificate and key of the tls listeners, sent once,
 *               right after the spawn, before any CONNS
 *   worker -> primary
 *     READY     u8 10, then JSON { pid }
 *     ACK       u8 11, u8 0, u16 n, u32 live, u32 closed, n x u32 id:
 *               connections adopted; the primary may close its copies now
 *     LOAD      u8 12, u8 0, u16 0, u32 live, u32 requests, u32 closed: live
 *               connections (sent as they close, for least-connections)
 *     FAILED    u8 13, then JSON { message }: the worker could not start
 *     LOST      u8 14, u8 0, u16 0, u32 batch: the batch-th CONNS message
 *               (counting from 1, modulo 2^32) arrived without its fds
 *               (MSG_CTRUNC: the worker is at RLIMIT_NOFILE); the primary still
 *               holds them and hands them to another worker
 * `closed` counts the connections the worker was handed and has closed
 * (modulo 2^32), those it closed at once included: the primary subtracts it
 * from what it handed to know what is open there (least-connections).
 * Little-endian throughout.
 */
import { ProtocolError } from '../errors';

export const enum Op {
  Conns = 1,
  Shutdown = 2,
  StatusQuery = 3,
  Tls = 4,
  Ready = 10,
  Ack = 11,
  Load = 12,
  Failed = 13,
  Lost = 14,
}

export type WorkerMessage =
  | { op: Op.Ready; pid: number }
  | { op: Op.Ack; live: number; closed: number; ids: Uint32Array }
  | { op: Op.Load; live: number; requests: number; closed: number }
  | { op: Op.Failed; message: string }
  | { op: Op.Lost; batch: number };

export type PrimaryMessage =
  /** The i-th connection (and fd) of the message: its id (for the ACK) and
   * its listener's index. */
  | { op: Op.Conns; ids: Uint32Array; listeners: Uint16Array }
  /** `hold`: drain, but stay for the CONNS still to come (see above). */
  | { op: Op.Shutdown; timeout: number; hold: boolean }
  | { op: Op.StatusQuery }
  | { op: Op.Tls; cert: Buffer; key: Buffer };

export function encodeConns(ids: ArrayLike<number>, listeners: ArrayLike<number>, n: number): Buffer {
  const b = Buffer.allocUnsafe(4 + 8 * n);
  b[0] = Op.Conns;
  b[1] = 0;
  b.writeUInt16LE(n, 2);
  for (let i = 0; i < n; i++) {
    b.writeUInt32LE(ids[i]! >>> 0, 4 + 8 * i);
    b.writeUInt16LE(listeners[i]!, 8 + 8 * i);
    b.writeUInt16LE(0, 10 + 8 * i);
  }
  return b;
}

/** SHUTDOWN's flag: drain, but more CONNS may come; stay until released. */
const SHUTDOWN_HOLD = 1;

export function encodeShutdown(timeout: number, hold = false): Buffer {
  const b = Buffer.alloc(8);
  b[0] = Op.Shutdown;
  b[1] = hold ? SHUTDOWN_HOLD : 0;
  b.writeUInt32LE(Math.max(0, Math.min(timeout, 0xffffffff)) >>> 0, 4);
  return b;
}

export function encodeStatusQuery(): Buffer {
  return Buffer.from([Op.StatusQuery]);
}

export function encodeTls(cert: Buffer, key: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head[0] = Op.Tls;
  head.writeUInt32LE(cert.length, 4);
  return Buffer.concat([head, cert, key]);
}

const ACK_HEADER = 12;

export function encodeAck(ids: ArrayLike<number>, n: number, live: number, closed: number): Buffer {
  const b = Buffer.allocUnsafe(ACK_HEADER + 4 * n);
  b[0] = Op.Ack;
  b[1] = 0;
  b.writeUInt16LE(n, 2);
  b.writeUInt32LE(live >>> 0, 4);
  b.writeUInt32LE(closed >>> 0, 8);
  for (let i = 0; i < n; i++) b.writeUInt32LE(ids[i]! >>> 0, ACK_HEADER + 4 * i);
  return b;
}

export function encodeLoad(live: number, requests: number, closed: number): Buffer {
  const b = Buffer.alloc(16);
  b[0] = Op.Load;
  b.writeUInt32LE(live >>> 0, 4);
  b.writeUInt32LE(requests >>> 0, 8);
  b.writeUInt32LE(closed >>> 0, 12);
  return b;
}

export function encodeLost(batch: number): Buffer {
  const b = Buffer.alloc(8);
  b[0] = Op.Lost;
  b.writeUInt32LE(batch >>> 0, 4);
  return b;
}

export function encodeJson(op: Op.Ready | Op.Failed, body: unknown): Buffer {
  return Buffer.concat([Buffer.from([op]), Buffer.from(JSON.stringify(body), 'utf8')]);
}

/** Decodes what a worker sent; throws a ProtocolError ('bad-worker-message')
 * saying what is wrong. */
export function decodeWorkerMessage(b: Buffer): WorkerMessage {
  if (b.length < 1) throw fromWorker('empty message');
  switch (b[0]) {
    case Op.Ready: {
      const body = parseJson(b);
      if (!Number.isInteger((body as { pid?: unknown }).pid)) throw fromWorker('READY without a pid');
      return { op: Op.Ready, pid: (body as { pid: number }).pid };
    }
    case Op.Failed:
      return { op: Op.Failed, message: String((parseJson(b) as { message?: unknown }).message ?? 'unknown error') };
    case Op.Ack: {
      if (b.length < ACK_HEADER) throw fromWorker(`ACK of ${b.length} bytes`);
      const n = b.readUInt16LE(2);
      if (b.length !== ACK_HEADER + 4 * n) throw fromWorker(`ACK of ${n} ids in ${b.length} bytes`);
      const ids = new Uint32Array(n);
      for (let i = 0; i < n; i++) ids[i] = b.readUInt32LE(ACK_HEADER + 4 * i);
      return { op: Op.Ack, live: b.readUInt32LE(4), closed: b.readUInt32LE(8), ids };
    }
    case Op.Load:
      if (b.length !== 16) throw fromWorker(`LOAD of ${b.length} bytes`);
      return { op: Op.Load, live: b.readUInt32LE(4), requests: b.readUInt32LE(8), closed: b.readUInt32LE(12) };
    case Op.Lost:
      if (b.length !== 8) throw fromWorker(`LOST of ${b.length} bytes`);
      return { op: Op.Lost, batch: b.readUInt32LE(4) };
    default:
      throw fromWorker(`unknown worker message op ${b[0]}`);
  }
}

/** Decodes what the primary sent; `nfds` is how many fds came with it.
 * Throws a ProtocolError ('bad-worker-message') saying what is wrong. */
export function decodePrimaryMessage(b: Buffer, nfds: number): PrimaryMessage {
  if (b.length < 1) throw fromPrimary('empty message');
  switch (b[0]) {
    case Op.Conns: {
      if (b.length < 4) throw fromPrimary(`CONNS of ${b.length} bytes`);
      const n = b.readUInt16LE(2);
      if (b.length !== 4 + 8 * n) throw fromPrimary(`CONNS of ${n} in ${b.length} bytes`);
      if (n !== nfds) throw fromPrimary(`CONNS of ${n} came with ${nfds} fds`);
      const ids = new Uint32Array(n);
      const listeners = new Uint16Array(n);
      for (let i = 0; i < n; i++) {
        ids[i] = b.readUInt32LE(4 + 8 * i);
        listeners[i] = b.readUInt16LE(8 + 8 * i);
      }
      return { op: Op.Conns, ids, listeners };
    }
    case Op.Shutdown:
      if (b.length !== 8) throw fromPrimary(`SHUTDOWN of ${b.length} bytes`);
      return { op: Op.Shutdown, timeout: b.readUInt32LE(4), hold: (b[1]! & SHUTDOWN_HOLD) !== 0 };
    case Op.StatusQuery:
      return { op: Op.StatusQuery };
    case Op.Tls: {
      if (b.length < 8) throw fromPrimary(`TLS of ${b.length} bytes`);
      const certLength = b.readUInt32LE(4);
      if (certLength > b.length - 8) throw fromPrimary(`TLS with a ${certLength}-byte certificate in ${b.length} bytes`);
      // Copies of their own, not views that keep the whole receive batch alive.
      return { op: Op.Tls, cert: Buffer.from(b.subarray(8, 8 + certLength)), key: Buffer.from(b.subarray(8 + certLength)) };
    }
    default:
      throw fromPrimary(`unknown primary message op ${b[0]}`);
  }
}

/** What a worker sent that does not decode. */
function fromWorker(what: string): ProtocolError {
  return new ProtocolError('bad-worker-message', `bad message from a worker: ${what}`);
}

/** What the primary sent that does not decode. */
function fromPrimary(what: string): ProtocolError {
  return new ProtocolError('bad-worker-message', `bad message from the primary: ${what}`);
}

/** The JSON object after the op byte of a worker's READY or FAILED. */
function parseJson(b: Buffer): unknown {
  let v: unknown;
  try {
    v = JSON.parse(b.toString('utf8', 1));
  } catch (err) {
    throw fromWorker(`bad JSON body: ${(err as Error).message}`);
  }
  if (v === null || typeof v !== 'object') throw fromWorker('bad JSON body: not an object');
  return v;
}
