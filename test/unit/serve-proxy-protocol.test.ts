/**
 * The PROXY protocol parser (src/serve/proxy-protocol.ts), pure: every
 * field of v1 and v2 headers, v2 TLVs skipped, LOCAL, UNKNOWN and UNSPEC,
 * every truncation of a valid header ('more', never an error), malformed
 * headers, v1 lines too long, v2 length limits; and the hash key of an
 * address, the same from a header as from getpeername's text.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseProxyHeader, PREFIX_MAX, V1_MAX, type ProxyParse } from '../../src/serve/proxy-protocol';
import { addressKey } from '../../src/serve/strategies';
import { proxyV1, proxyV2, tlv, V2_SIG } from '../helpers/proxy';

function header(p: ProxyParse) {
  assert.equal(p.kind, 'header', JSON.stringify(p));
  return (p as Extract<ProxyParse, { kind: 'header' }>).header;
}

function error(p: ProxyParse): string {
  assert.equal(p.kind, 'error', JSON.stringify(p));
  return (p as Extract<ProxyParse, { kind: 'error' }>).reason;
}

const latin1 = (s: string) => Buffer.from(s, 'latin1');
const REQUEST = latin1('GET / HTTP/1.1\r\nHost: x\r\n\r\n');

/** Every proper prefix of `bytes` asks for more (at least one byte more), never errs. */
function everyPrefixWantsMore(bytes: Buffer, opts: { addressesOnly?: boolean } = {}, upTo = bytes.length): void {
  for (let n = 0; n < upTo; n++) {
    const p = parseProxyHeader(bytes.subarray(0, n), opts);
    assert.equal(p.kind, 'more', `${n} of ${bytes.length} bytes: ${JSON.stringify(p)}`);
    assert.ok((p as { need: number }).need > n, `need more than the ${n} bytes given`);
  }
}

// ---- version 1 -------------------------------------------------------------------

test('v1 TCP4: every field, and the length stops at the CRLF', () => {
  const line = latin1('PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n');
  const h = header(parseProxyHeader(Buffer.concat([line, REQUEST])));
  assert.deepEqual(h, {
    version: 1, command: 'proxy', family: 'IPv4', transport: 'stream',
    source: { address: '192.0.2.1', port: 56324 }, dest: { address: '198.51.100.7', port: 443 }, length: line.length,
  });
  assert.deepEqual(header(parseProxyHeader(line)), h, 'the same with nothing after it');
});

test('v1 TCP6: addresses in canonical form (as Node shows a peer), upper case accepted', () => {
  const h = header(parseProxyHeader(latin1('PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::FFFF:192.0.2.9 0 65535\r\n')));
  assert.equal(h.family, 'IPv6');
  assert.deepEqual(h.source, { address: '2001:db8::1', port: 0 });
  assert.deepEqual(h.dest, { address: '::ffff:192.0.2.9', port: 65535 });
});

test('v1 UNKNOWN: short and worst-case forms, the rest of the line ignored, no addresses', () => {
  const short = latin1('PROXY UNKNOWN\r\n');
  assert.deepEqual(header(parseProxyHeader(short)), { version: 1, command: 'proxy', family: 'unspec', transport: 'unspec', length: 15 });
  const f = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
  const worst = latin1(`PROXY UNKNOWN ${f} ${f} 65535 65535\r\n`);
  assert.equal(worst.length, V1_MAX, 'the spec\'s longest line');
  const h = header(parseProxyHeader(Buffer.concat([worst, REQUEST])));
  assert.equal(h.length, V1_MAX);
  assert.equal(h.source, undefined);
  assert.equal(header(parseProxyHeader(latin1('PROXY UNKNOWN whatever is here\r\n'))).family, 'unspec');
});

test('v1: every prefix of a valid line asks for more, from the first byte', () => {
  everyPrefixWantsMore(latin1('PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n'));
  everyPrefixWantsMore(latin1('PROXY UNKNOWN\r\n'));
  assert.deepEqual(parseProxyHeader(Buffer.alloc(0)), { kind: 'more', need: 15 });
  assert.deepEqual(parseProxyHeader(latin1('PROXY TCP4 1')), { kind: 'more', need: 15 });
  assert.deepEqual(parseProxyHeader(latin1('PROXY TCP4 192.0.2.1 ')), { kind: 'more', need: 22 });
});

test('v1 line length: a CRLF ending at byte 107 is fine; none within 107 bytes is an error, without waiting for more', () => {
  const pad = (n: number) => latin1('PROXY UNKNOWN ' + 'x'.repeat(n - 16) + '\r\n');
  assert.equal(header(parseProxyHeader(pad(107))).length, 107);
  assert.match(error(parseProxyHeader(pad(108))), /no CRLF within 107 bytes/);
  assert.match(error(parseProxyHeader(latin1('PROXY UNKNOWN ' + 'x'.repeat(200)))), /no CRLF within 107 bytes/);
  assert.equal(parseProxyHeader(latin1('PROXY UNKNOWN ' + 'x'.repeat(92))).kind, 'more', '106 bytes, no CRLF yet');
  assert.match(error(parseProxyHeader(latin1('PROXY UNKNOWN ' + 'x'.repeat(93)))), /no CRLF within 107/, '107 bytes, no CRLF');
  assert.match(error(parseProxyHeader(latin1('PROXY UNKNOWN ' + 'x'.repeat(92) + '\r'))), /no CRLF within 107/, 'its LF would be byte 108');
});

test('v1 malformed lines are errors that say what is wrong', () => {
  const cases: [string, RegExp][] = [
    ['PROXY TCP5 192.0.2.1 198.51.100.7 1 2\r\n', /unknown protocol 'TCP5'/],
    ['PROXY tcp4 192.0.2.1 198.51.100.7 1 2\r\n', /unknown protocol 'tcp4'/],
    ['PROXY  TCP4 192.0.2.1 198.51.100.7 1 2\r\n', /unknown protocol ''/],
    ['PROXY TCP4 192.0.2.1  198.51.100.7 1 2\r\n', /7 fields, not 6/],
    ['PROXY TCP4 192.0.2.1 198.51.100.7 1\r\n', /5 fields, not 6/],
    ['PROXY TCP4 192.0.2.1 198.51.100.7 1 2 \r\n', /7 fields, not 6/],
    ['PROXY TCP4 192.0.2.1 198.51.100.7 1 2 3\r\n', /7 fields, not 6/],
    ['PROXY TCP4 192.000.2.1 198.51.100.7 1 2\r\n', /bad TCP4 source address '192.000.2.1'/],
    ['PROXY TCP4 192.0.2.256 198.51.100.7 1 2\r\n', /bad TCP4 source address/],
    ['PROXY TCP4 192.0.2.1 ::1 1 2\r\n', /bad TCP4 destination address '::1'/],
    ['PROXY TCP6 192.0.2.1 ::1 1 2\r\n', /bad TCP6 source address '192.0.2.1'/],
    ['PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', /bad TCP6 source address 'fe80::1%eth0'/],
    ['PROXY TCP6 1::2::3 ::1 1 2\r\n', /bad TCP6 source address/],
    ['PROXY TCP4 192.0.2.1 198.51.100.7 65536 2\r\n', /bad source port '65536'/],
    ['PROXY TCP4 192.0.2.1 198.51.100.7 080 2\r\n', /bad source port '080'/],
    ['PROXY TCP4 192.0.2.1 198.51.100.7 -1 2\r\n', /bad source port '-1'/],
    ['PROXY TCP4 192.0.2.1 198.51.100.7 1 0x10\r\n', /bad destination port '0x10'/],
    ['PROXY TCP4 192.0.2.1 198.51.100.7 1 2\n', /LF without CR/],
    ['PROXY TCP4 192.0.2.1 198.51.100.7 1 2\rX', /CR without LF/],
    ['PROXY TCP4 192.0.2.1\t198.51.100.7 1 2\r\n', /byte 0x09 in the line/],
    ['PROXY UNKNOWN \u00e9\r\n', /byte 0xe9 in the line/],
    ['PROXYTCP4 192.0.2.1 198.51.100.7 1 2\r\n', /not a PROXY protocol header/],
    ['proxy TCP4 192.0.2.1 198.51.100.7 1 2\r\n', /not a PROXY protocol header/],
  ];
  for (const [line, re] of cases) assert.match(error(parseProxyHeader(latin1(line))), re, JSON.stringify(line));
});

test('bytes that are no PROXY header are refused as soon as they differ (HTTP, TLS, junk)', () => {
  assert.match(error(parseProxyHeader(REQUEST.subarray(0, 1))), /not a PROXY protocol header/);
  assert.match(error(parseProxyHeader(Buffer.from([0x16, 0x03, 0x01]))), /not a PROXY protocol header/, 'a TLS ClientHello');
  assert.match(error(parseProxyHeader(latin1('PROXZ'))), /not a PROXY protocol header/);
  assert.equal(parseProxyHeader(latin1('PROX')).kind, 'more');
  const sig = Buffer.from(V2_SIG);
  sig[4] = 1;
  assert.equal(parseProxyHeader(sig.subarray(0, 4)).kind, 'more');
  assert.match(error(parseProxyHeader(sig.subarray(0, 5))), /not a PROXY protocol header/);
});

// ---- version 2 -------------------------------------------------------------------

test('v2 TCP over IPv4: every field; what follows is not part of it', () => {
  const hdr = proxyV2({ src: '192.0.2.1', dst: '198.51.100.7', sport: 56324, dport: 443 });
  assert.equal(hdr.length, 28);
  const h = header(parseProxyHeader(Buffer.concat([hdr, REQUEST])));
  assert.deepEqual(h, {
    version: 2, command: 'proxy', family: 'IPv4', transport: 'stream',
    source: { address: '192.0.2.1', port: 56324 }, dest: { address: '198.51.100.7', port: 443 }, length: 28,
  });
});

test('v2 UDP over IPv4 and TCP over IPv6 (canonical text, IPv4-mapped)', () => {
  const udp = header(parseProxyHeader(proxyV2({ fam: 0x12, src: '10.0.0.1', dst: '10.0.0.2', sport: 53, dport: 5353 })));
  assert.equal(udp.transport, 'dgram');
  assert.deepEqual(udp.source, { address: '10.0.0.1', port: 53 });
  const v6 = header(parseProxyHeader(proxyV2({ src: '2001:db8:0:0:0:0:0:1', dst: '::ffff:c000:209', sport: 1, dport: 65535 })));
  assert.equal(v6.length, 16 + 36);
  assert.equal(v6.family, 'IPv6');
  assert.deepEqual(v6.source, { address: '2001:db8::1', port: 1 });
  assert.deepEqual(v6.dest, { address: '::ffff:192.0.2.9', port: 65535 });
});

test('v2 AF_UNIX: paths up to their NUL, abstract names with @, no ports', () => {
  const block = Buffer.alloc(216);
  block.write('/run/client.sock', 0);
  block.write('\0balancer', 108, 'latin1');
  const h = header(parseProxyHeader(proxyV2({ fam: 0x31, block })));
  assert.deepEqual([h.family, h.transport, h.length], ['unix', 'stream', 16 + 216]);
  assert.deepEqual(h.source, { address: '/run/client.sock' });
  assert.deepEqual(h.dest, { address: '@balancer' });
});

test('v2 LOCAL: the connection\'s own endpoints stand; the block (even a bad family) is skipped', () => {
  assert.deepEqual(header(parseProxyHeader(proxyV2({ command: 0 }))), { version: 2, command: 'local', family: 'unspec', transport: 'unspec', length: 16 });
  const withBlock = proxyV2({ command: 0, src: '192.0.2.1', dst: '192.0.2.2', sport: 1, dport: 2 });
  assert.deepEqual(header(parseProxyHeader(withBlock)), { version: 2, command: 'local', family: 'unspec', transport: 'unspec', length: 28 });
  assert.equal(header(parseProxyHeader(proxyV2({ command: 0, fam: 0xff, block: Buffer.alloc(5) }))).length, 21);
});

test('v2 PROXY with UNSPEC family or transport: accepted, addresses ignored', () => {
  assert.deepEqual(header(parseProxyHeader(proxyV2({ fam: 0x00 }))), { version: 2, command: 'proxy', family: 'unspec', transport: 'unspec', length: 16 });
  const h = header(parseProxyHeader(proxyV2({ fam: 0x10, block: Buffer.alloc(12, 7) })));
  assert.deepEqual([h.family, h.source, h.length], ['unspec', undefined, 28]);
  assert.equal(header(parseProxyHeader(proxyV2({ fam: 0x01 }))).family, 'unspec');
});

test('v2 TLVs are skipped, valid or not: the length covers them', () => {
  const tlvs = Buffer.concat([tlv(0x01, 'h2'), tlv(0x02, 'example.com'), tlv(0x04, Buffer.alloc(5)), tlv(0x20, Buffer.from([1, 0, 0, 0, 0]))]);
  const hdr = proxyV2({ src: '192.0.2.1', dst: '192.0.2.2', sport: 1000, dport: 443, tlvs });
  const h = header(parseProxyHeader(Buffer.concat([hdr, REQUEST])));
  assert.equal(h.length, 28 + tlvs.length);
  assert.deepEqual(h.source, { address: '192.0.2.1', port: 1000 });
  const junk = proxyV2({ src: '192.0.2.1', dst: '192.0.2.2', sport: 1, dport: 2, tlvs: Buffer.from([0x99, 0xff, 0xff]) });
  assert.equal(header(parseProxyHeader(junk)).length, 31, 'a TLV claiming more than there is: still skipped by the length');
});

test('v2 truncated anywhere asks for more; `need` is 16, then the whole header (or, addressesOnly, the addresses)', () => {
  const tlvs = tlv(0x05, Buffer.alloc(100));
  const hdr = proxyV2({ src: '2001:db8::1', dst: '2001:db8::2', sport: 1, dport: 2, tlvs });
  everyPrefixWantsMore(hdr);
  assert.deepEqual(parseProxyHeader(hdr.subarray(0, 10)), { kind: 'more', need: 16 });
  assert.deepEqual(parseProxyHeader(hdr.subarray(0, 16)), { kind: 'more', need: hdr.length });
  assert.deepEqual(parseProxyHeader(hdr.subarray(0, 16), { addressesOnly: true }), { kind: 'more', need: 52 });
  everyPrefixWantsMore(hdr, { addressesOnly: true }, 52);
  const early = header(parseProxyHeader(hdr.subarray(0, 52), { addressesOnly: true }));
  assert.equal(early.length, hdr.length, 'the whole header\'s length, TLVs included');
  assert.deepEqual(early.source, { address: '2001:db8::1', port: 1 });
  assert.equal(header(parseProxyHeader(hdr)).length, hdr.length);
  const local = proxyV2({ command: 0, block: Buffer.alloc(40) });
  assert.deepEqual(parseProxyHeader(local.subarray(0, 20)), { kind: 'more', need: 56 });
  assert.equal(header(parseProxyHeader(local.subarray(0, 16), { addressesOnly: true })).length, 56);
});

test('v2 length limits: the block must hold the family\'s addresses; 65535 bytes is the most, and is accepted', () => {
  assert.match(error(parseProxyHeader(proxyV2({ fam: 0x11, block: Buffer.alloc(11) }))), /11-byte address block, IPv4 needs 12/);
  assert.match(error(parseProxyHeader(proxyV2({ fam: 0x21, block: Buffer.alloc(12) }))), /12-byte address block, IPv6 needs 36/);
  assert.match(error(parseProxyHeader(proxyV2({ fam: 0x31, block: Buffer.alloc(108) }))), /108-byte address block, unix needs 216/);
  assert.match(error(parseProxyHeader(proxyV2({ fam: 0x11, length: 0 }))), /0-byte address block/, 'refused from its 16 bytes');
  const max = proxyV2({ src: '192.0.2.1', dst: '192.0.2.2', sport: 1, dport: 2, tlvs: Buffer.alloc(65535 - 12) });
  assert.equal(max.length, 16 + 65535);
  assert.deepEqual(parseProxyHeader(max.subarray(0, 30)), { kind: 'more', need: 16 + 65535 });
  assert.equal(header(parseProxyHeader(max)).length, 16 + 65535);
  assert.equal(header(parseProxyHeader(max.subarray(0, 28), { addressesOnly: true })).length, 16 + 65535);
  assert.ok(PREFIX_MAX >= 16 + 216 && PREFIX_MAX >= V1_MAX, 'a reader that skips TLVs holds at most PREFIX_MAX bytes');
});

test('v2 malformed: version, command, family, transport', () => {
  const base = { src: '192.0.2.1', dst: '192.0.2.2', sport: 1, dport: 2 };
  assert.match(error(parseProxyHeader(proxyV2({ ...base, version: 1 }))), /v2: version 1, not 2/);
  assert.match(error(parseProxyHeader(proxyV2({ ...base, version: 3 }))), /v2: version 3, not 2/);
  assert.match(error(parseProxyHeader(proxyV2({ ...base, command: 2 }))), /unknown command 2/);
  assert.match(error(parseProxyHeader(proxyV2({ ...base, command: 0xf }))), /unknown command 15/);
  assert.match(error(parseProxyHeader(proxyV2({ ...base, fam: 0x41 }))), /unknown address family 4/);
  assert.match(error(parseProxyHeader(proxyV2({ ...base, fam: 0x13 }))), /unknown transport 3/);
  // Refused from the first 16 bytes: no need to wait for the rest.
  assert.equal(parseProxyHeader(proxyV2({ ...base, version: 1 }).subarray(0, 16)).kind, 'error');
});

test('the hash key of an address is the same from a header\'s text as from getpeername\'s NUL-terminated bytes', () => {
  const h = header(parseProxyHeader(proxyV1('203.0.113.5', '192.0.2.1', 1234, 80)));
  const fromPeer = Buffer.alloc(64, 0x41);
  fromPeer.write('203.0.113.5\0', 'latin1');
  assert.equal(addressKey(h.source!.address), addressKey(fromPeer));
  assert.notEqual(addressKey('203.0.113.5'), addressKey('203.0.113.6'));
  // FNV-1a 32: the strategy's keys are what they were.
  assert.equal(addressKey(''), 0x811c9dc5);
  assert.equal(addressKey('a'), 0xe40c292c);
});
