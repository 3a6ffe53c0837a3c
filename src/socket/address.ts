/**
 * Unix socket addresses. A string is a filesystem path, unless it starts with
 * a NUL byte ('\0name', Node's own convention), which makes it a Linux
 * abstract name. Abstract names have no permissions: anyone in the network
 * namespace can connect, so servers check the peer's credentials instead.
 */
import { pathTooLong, invalidArg } from '../errors';

export const SUN_PATH_MAX = 108;

/** Encodes an address as the bytes of sun_path, validating its length. */
export function encodeAddress(address: string): Buffer {
  if (typeof address !== 'string' || address.length === 0) {
    throw invalidArg(`address must be a non-empty string, got ${describe(address)}`);
  }
  const bytes = Buffer.from(address, 'utf8');
  // A path needs room for its terminator; an abstract name uses every byte.
  const max = isAbstract(address) ? SUN_PATH_MAX : SUN_PATH_MAX - 1;
  if (bytes.length > max) throw pathTooLong(address, bytes.length, max);
  if (!isAbstract(address) && bytes.includes(0)) {
    throw invalidArg(`a path address must not contain NUL bytes: ${JSON.stringify(address)}`);
  }
  return bytes;
}

export function isAbstract(address: string): boolean {
  return address.charCodeAt(0) === 0;
}

/** The inverse of encodeAddress; '' for an unbound (autobind-less) socket. */
export function decodeAddress(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
}

/** For messages: '\0name' shown as '@name', as ss(8) does. */
export function displayAddress(address: string): string {
  return isAbstract(address) ? '@' + address.slice(1) : address;
}

function describe(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : typeof v;
}
