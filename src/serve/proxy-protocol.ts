/**
 * The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and
 * 2): what a load balancer (HAProxy's `send-proxy` / `send-proxy-v2`)
 * writes at the start of each connection it relays, before any of the
 * client's bytes, to say whom it relays for. Pure code: bytes in, an answer
 * out, no I/O; the socket side is proxy-header-read.ts (worker) and
 * proxy-peek.ts (primary).
 *
 * parseProxyHeader(bytes) answers with one of:
 * - `more`: no decision yet; at least `need` bytes in all are needed. Every
 *   byte given is part of the header then (its end lies beyond them), so a
 *   reader may consume them all;
 * - `header`: a valid header of `length` bytes (what follows it is the
 *   client's);
 * - `error`: not a valid header, and no more bytes can make it one.
 *
 * Version 1 is one line of printable ASCII ending in CRLF, 107 bytes at
 * most: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`, or `PROXY UNKNOWN ...\r\n`
 * (the rest ignored). Addresses are canonical: IPv4 without leading zeros,
 * IPv6 as text (no zone); ports decimal 0-65535 without leading zeros;
 * single spaces; a lone CR or LF is an error. Version 2 is binary: a
 * 12-byte signature, version (2) and command (LOCAL, PROXY), family and
 * transport, a 16-bit length, then the address block (12 bytes for IPv4,
 * 36 for IPv6, 216 for AF_UNIX) and TLVs up to the length. TLVs are skipped,
 * not parsed. LOCAL (a balancer's health check) and the UNSPEC family or
 * transport (v1's UNKNOWN) carry no addresses: the connection's own
 * endpoints stand.
 *
 * With `addressesOnly`, a v2 header is answered as soon as its address
 * block is in (`length` is still the whole header's, TLVs included: the
 * caller skips what it did not look at). The primary peeks no further than
 * that, and the worker stores no TLV.
 */
import * as net from 'node:net';

export type ProxyFamily = 'IPv4' | 'IPv6' | 'unix' | 'unspec';
export type ProxyTransport = 'stream' | 'dgram' | 'unspec';

/** An endpoint of the relayed connection: an IP address and port, or (unix) a socket path. */
export interface ProxyEndpoint {
  /** Canonical text ('192.0.2.1', '2001:db8::1', as Node shows it), or the path ('@name': abstract). */
  address: string;
  /** IPv4 and IPv6 only. */
  port?: number;
}

export interface ProxyHeader {
  version: 1 | 2;
  /** 'proxy': relayed for a client; 'local': the balancer's own connection (a health check). */
  command: 'proxy' | 'local';
  family: ProxyFamily;
  transport: ProxyTransport;
  /** The client, as the balancer saw it (command 'proxy' with a known family only). */
  source?: ProxyEndpoint;
  /** The address the client connected to, on the balancer. */
  dest?: ProxyEndpoint;
  /** Bytes the header takes on the wire (v2: TLVs included). */
  length: number;
}

export type ProxyParse =
  | { kind: 'more'; need: number }
  | { kind: 'header'; header: ProxyHeader }
  | { kind: 'error'; reason: string };

/** The longest v1 line, CRLF included. */
export const V1_MAX = 107;
/** The v2 signature, then version/command, family/transport and length. */
export const V2_FIXED = 16;
const V2_SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_SIG = Buffer.from('PROXY ', 'latin1');
/** "PROXY UNKNOWN\r\n": the shortest v1 line. */
const V1_MIN = 15;
/** Address block sizes of v2's families (by the family nibble). */
const V2_ADDR_LEN = [0, 12, 36, 216] as const;
const UNIX_PATH = 108;
/** The most bytes a header takes before its addresses are known (v2 AF_UNIX):
 * what a reader that skips TLVs (`addressesOnly`) ever needs to hold. */
export const PREFIX_MAX = V2_FIXED + V2_ADDR_LEN[3];

const CR = 0x0d;
const LF = 0x0a;

export function parseProxyHeader(buf: Uint8Array, opts: { addressesOnly?: boolean } = {}): ProxyParse {
  if (buf.length === 0) return { kind: 'more', need: V1_MIN };
  if (buf[0] === V1_SIG[0]) {
    const n = Math.min(buf.length, V1_SIG.length);
    if (!startsWith(buf, V1_SIG, n)) return notProxy();
    return n < V1_SIG.length ? { kind: 'more', need: V1_MIN } : parseV1(buf);
  }
  if (buf[0] === V2_SIG[0]) {
    const n = Math.min(buf.length, V2_SIG.length);
    if (!startsWith(buf, V2_SIG, n)) return notProxy();
    return buf.length < V2_FIXED ? { kind: 'more', need: V2_FIXED } : parseV2(buf, opts.addressesOnly === true);
  }
  return notProxy();
}

function notProxy(): ProxyParse {
  return { kind: 'error', reason: 'not a PROXY protocol header' };
}

function startsWith(buf: Uint8Array, sig: Buffer, n: number): boolean {
  for (let i = 0; i < n; i++) if (buf[i] !== sig[i]) return false;
  return true;
}

function fail(reason: string): ProxyParse {
  return { kind: 'error', reason };
}

// ---- version 1 ----------------------------------------------------------------

function parseV1(buf: Uint8Array): ProxyParse {
  // Bytes are checked as they come, so junk is refused before the line ends.
  const scan = Math.min(buf.length, V1_MAX);
  let end = -1;
  for (let i = V1_SIG.length; i < scan; i++) {
    const b = buf[i]!;
    if (b === CR) {
      if (i + 1 >= V1_MAX) break; // its LF would be byte 108
      if (i + 1 >= buf.length) break;
      if (buf[i + 1] !== LF) return fail('v1: CR without LF');
      end = i;
      break;
    }
    if (b === LF) return fail('v1: LF without CR');
    if (b < 0x20 || b > 0x7e) return fail(`v1: byte 0x${b.toString(16).padStart(2, '0')} in the line`);
  }
  if (end < 0) {
    if (buf.length >= V1_MAX) return fail(`v1: no CRLF within ${V1_MAX} bytes`);
    return { kind: 'more', need: Math.max(buf.length + 1, V1_MIN) };
  }
  const line = Buffer.from(buf.buffer, buf.byteOffset, end).toString('latin1');
  const length = end + 2;
  const fields = line.split(' ');
  const proto = fields[1];
  if (proto === 'UNKNOWN') {
    return { kind: 'header', header: { version: 1, command: 'proxy', family: 'unspec', transport: 'unspec', length } };
  }
  if (proto !== 'TCP4' && proto !== 'TCP6') return fail(`v1: unknown protocol '${proto ?? ''}' (TCP4, TCP6, UNKNOWN)`);
  if (fields.length !== 6) return fail(`v1: ${fields.length} fields, not 6 separated by single spaces`);
  const family = proto === 'TCP4' ? 'IPv4' : 'IPv6';
  const src = v1Address(fields[2]!, family);
  const dst = v1Address(fields[3]!, family);
  if (src === null) return fail(`v1: bad ${proto} source address '${fields[2]}'`);
  if (dst === null) return fail(`v1: bad ${proto} destination address '${fields[3]}'`);
  const sport = v1Port(fields[4]!);
  const dport = v1Port(fields[5]!);
  if (sport < 0) return fail(`v1: bad source port '${fields[4]}'`);
  if (dport < 0) return fail(`v1: bad destination port '${fields[5]}'`);
  return {
    kind: 'header',
    header: { version: 1, command: 'proxy', family, transport: 'stream', source: { address: src, port: sport }, dest: { address: dst, port: dport }, length },
  };
}

/** The canonical text of a v1 address of `family`, or null. */
function v1Address(text: string, family: 'IPv4' | 'IPv6'): string | null {
  if (family === 'IPv4') return net.isIPv4(text) ? text : null; // no leading zeros either
  // No zone ('%eth0'): an address on the wire has none.
  if (!/^[0-9A-Fa-f:.]+$/.test(text) || !net.isIPv6(text)) return null;
  return canonicalIPv6(text);
}

/** A decimal port without leading zeros, 0-65535; -1 if it is not one. */
function v1Port(text: string): number {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text)) return -1;
  const n = Number(text);
  return n <= 65535 ? n : -1;
}

// ---- version 2 ----------------------------------------------------------------

function parseV2(buf: Uint8Array, addressesOnly: boolean): ProxyParse {
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) return fail(`v2: version ${verCmd >> 4}, not 2`);
  const cmd = verCmd & 0x0f;
  if (cmd > 1) return fail(`v2: unknown command ${cmd} (LOCAL 0, PROXY 1)`);
  const length = V2_FIXED + ((buf[14]! << 8) | buf[15]!);
  const whole = (): ProxyParse | null => (buf.length >= length || addressesOnly ? null : { kind: 'more', need: length });
  if (cmd === 0) {
    // LOCAL: the block, family included, is to be ignored.
    return whole() ?? { kind: 'header', header: { version: 2, command: 'local', family: 'unspec', transport: 'unspec', length } };
  }
  const fam = buf[13]! >> 4;
  const proto = buf[13]! & 0x0f;
  if (fam > 3) return fail(`v2: unknown address family ${fam}`);
  if (proto > 2) return fail(`v2: unknown transport ${proto}`);
  if (fam === 0 || proto === 0) {
    // UNSPEC: addresses (if any) are to be ignored.
    return whole() ?? { kind: 'header', header: { version: 2, command: 'proxy', family: 'unspec', transport: 'unspec', length } };
  }
  const family: ProxyFamily = fam === 1 ? 'IPv4' : fam === 2 ? 'IPv6' : 'unix';
  const addrLen = V2_ADDR_LEN[fam]!;
  if (length - V2_FIXED < addrLen) return fail(`v2: ${length - V2_FIXED}-byte address block, ${family} needs ${addrLen}`);
  if (buf.length < V2_FIXED + addrLen) return { kind: 'more', need: addressesOnly ? V2_FIXED + addrLen : length };
  const more = whole();
  if (more) return more;
  const transport: ProxyTransport = proto === 1 ? 'stream' : 'dgram';
  const a = V2_FIXED;
  let source: ProxyEndpoint;
  let dest: ProxyEndpoint;
  if (family === 'unix') {
    source = { address: unixPath(buf, a) };
    dest = { address: unixPath(buf, a + UNIX_PATH) };
  } else {
    const size = family === 'IPv4' ? 4 : 16;
    const ports = a + 2 * size;
    source = { address: ipText(buf, a, size), port: (buf[ports]! << 8) | buf[ports + 1]! };
    dest = { address: ipText(buf, a + size, size), port: (buf[ports + 2]! << 8) | buf[ports + 3]! };
  }
  return { kind: 'header', header: { version: 2, command: 'proxy', family, transport, source, dest, length } };
}

function ipText(buf: Uint8Array, at: number, size: 4 | 16): string {
  if (size === 4) return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((buf[at + i]! << 8) | buf[at + i + 1]!).toString(16));
  return canonicalIPv6(groups.join(':'));
}

/** IPv6 text as Node shows a peer's address (libuv's inet_ntop: '2001:db8::1', '::ffff:192.0.2.1'). */
function canonicalIPv6(text: string): string {
  return new net.SocketAddress({ address: text, family: 'ipv6' }).address;
}

/** A 108-byte sun_path field: up to its first NUL; a leading NUL (abstract) shows as '@'. */
function unixPath(buf: Uint8Array, at: number): string {
  const abstract = buf[at] === 0;
  let end = at + (abstract ? 1 : 0);
  while (end < at + UNIX_PATH && buf[end] !== 0) end++;
  const name = Buffer.from(buf.buffer, buf.byteOffset + at + (abstract ? 1 : 0), end - at - (abstract ? 1 : 0)).toString('utf8');
  return abstract ? (name ? '@' + name : '') : name;
}
