/**
 * Channel message encoding (docs/protocol.md), pure code with no I/O.
 * Each channel message is the payload of one fdpass message (a frame on a
 * stream, a packet on SEQPACKET); its fds are that message's fds.
 *
 *   0        1      2          6            8              8+n
 *   +--------+------+----------+------------+--------------+-----------+
 *   | ver=1  | kind | id u32   | typelen u16| type (utf8)  | JSON body |
 *   +--------+------+----------+------------+--------------+-----------+
 *   little-endian; kind 0 post, 1 request, 2 reply, 3 error reply;
 *   body empty = no payload (undefined)
 */

import { isUtf8 } from 'node:buffer';
import { ChannelDecodeError, invalidArg } from '../errors';

export const CHANNEL_VERSION = 1;
export const enum Kind {
  Post = 0,
  Request = 1,
  Reply = 2,
  ErrorReply = 3,
}
const HEAD = 8;
export const MAX_TYPE_LENGTH = 256;

export interface ChannelFrame {
  kind: Kind;
  id: number;
  type: string;
  body: unknown;
}

/** Throws a RangeError for a type of 0 or more than 256 bytes, a TypeError
 * for a body JSON cannot carry (a withFds() inside it among them). */
export function encodeChannel(kind: Kind, id: number, type: string, body: unknown): Buffer {
  const t = Buffer.from(type, 'utf8');
  if (t.length === 0 || t.length > MAX_TYPE_LENGTH) throw new RangeError(`message type must be 1..${MAX_TYPE_LENGTH} bytes, got ${t.length}`);
  const json = body === undefined ? '' : JSON.stringify(body);
  if (json === undefined) throw invalidArg(`payload of '${type}' is not JSON-serialisable`);
  const b = Buffer.from(json, 'utf8');
  const out = Buffer.allocUnsafe(HEAD + t.length + b.length);
  out[0] = CHANNEL_VERSION;
  out[1] = kind;
  out.writeUInt32LE(id >>> 0, 2);
  out.writeUInt16LE(t.length, 6);
  t.copy(out, HEAD);
  b.copy(out, HEAD + t.length);
  return out;
}

/** Decodes a channel message; throws a ChannelDecodeError saying what is wrong. */
export function decodeChannel(buf: Uint8Array): ChannelFrame {
  if (buf.length < HEAD) throw new ChannelDecodeError('short', `channel message of ${buf.length} bytes is shorter than its ${HEAD}-byte header`);
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b[0] !== CHANNEL_VERSION) throw new ChannelDecodeError('version', `channel version ${b[0]} (expected ${CHANNEL_VERSION})`);
  const kind = b[1]!;
  if (kind > Kind.ErrorReply) throw new ChannelDecodeError('kind', `unknown channel message kind ${kind}`);
  const id = b.readUInt32LE(2);
  const tlen = b.readUInt16LE(6);
  if (tlen === 0 || tlen > MAX_TYPE_LENGTH) throw new ChannelDecodeError('type-length', `type length ${tlen} out of range 1..${MAX_TYPE_LENGTH}`);
  if (HEAD + tlen > b.length) throw new ChannelDecodeError('type-length', `type length ${tlen} runs past the end of a ${b.length}-byte message`);
  // A type that is not UTF-8 would come back altered (and maybe longer than
  // 256 bytes) in the reply: refuse it here.
  if (!isUtf8(b.subarray(HEAD, HEAD + tlen))) throw new ChannelDecodeError('type-utf8', 'type is not valid UTF-8');
  const type = b.toString('utf8', HEAD, HEAD + tlen);
  const rest = b.subarray(HEAD + tlen);
  let body: unknown;
  if (rest.length > 0) {
    try {
      body = JSON.parse(rest.toString('utf8'));
    } catch (err) {
      throw new ChannelDecodeError('json', `body of '${type}' is not valid JSON: ${(err as Error).message}`);
    }
  }
  if ((kind === Kind.Request || kind === Kind.Reply || kind === Kind.ErrorReply) && id === 0) {
    throw new ChannelDecodeError('no-id', `${kind === Kind.Request ? 'request' : 'reply'} '${type}' without a correlation id`);
  }
  return { kind, id, type, body };
}

/** The body of an error reply (docs/protocol.md): the thrown value's
 * message and, when it has a string one, its code. */
export function errorBody(err: unknown): { message: string; code: string | undefined } {
  const e = err as { message?: unknown; code?: unknown } | null | undefined;
  return { message: printable(e?.message ?? err), code: typeof e?.code === 'string' ? e.code : undefined };
}

/** String(v), for anything a handler may throw (String() itself throws
 * for an object without a usable toString). */
function printable(v: unknown): string {
  try {
    return String(v);
  } catch {
    return Object.prototype.toString.call(v);
  }
}
