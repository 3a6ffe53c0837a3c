import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { encodeChannel, decodeChannel, Kind } from '../../src/channel/codec';
import { Rng, caseSeed, runCodecCase } from '../helpers/fuzz';

test('round trip of every kind', () => {
  for (const [kind, id] of [[Kind.Post, 0], [Kind.Request, 7], [Kind.Reply, 7], [Kind.ErrorReply, 0xffffffff]] as const) {
    const f = decodeChannel(encodeChannel(kind, id, 'open-file', { path: '/etc/hosts', n: [1, 2] }));
    assert.deepEqual(f, { kind, id, type: 'open-file', body: { path: '/etc/hosts', n: [1, 2] } });
  }
  assert.equal(decodeChannel(encodeChannel(Kind.Post, 0, 't', undefined)).body, undefined);
});

test('malformed messages say what is wrong', () => {
  const good = encodeChannel(Kind.Request, 1, 'type', { a: 1 });
  const bad = (mut: (b: Buffer) => Buffer) => () => decodeChannel(mut(Buffer.from(good)));
  assert.throws(bad((b) => b.subarray(0, 5)), /shorter than its 8-byte header/);
  assert.throws(bad((b) => { b[0] = 2; return b; }), /channel version 2/);
  assert.throws(bad((b) => { b[1] = 9; return b; }), /unknown channel message kind 9/);
  assert.throws(bad((b) => { b.writeUInt16LE(0, 6); return b; }), /type length 0/);
  assert.throws(bad((b) => { b.writeUInt16LE(200, 6); return b; }), /runs past the end/);
  assert.throws(bad((b) => { b[b.length - 1] = 0x7b; return b; }), /not valid JSON/);
  assert.throws(bad((b) => { b.writeUInt32LE(0, 2); return b; }), /without a correlation id/);
  assert.throws(bad((b) => { b[8] = 0xff; return b; }), /type is not valid UTF-8/);
  assert.throws(() => encodeChannel(Kind.Post, 0, '', 1), RangeError);
});

test('fixed-seed fuzz sample: damaged and hostile messages are refused with a reason, never decoded wrong', () => {
  const kinds = new Set<string>();
  for (let i = 0; i < 5000; i++) {
    const r = runCodecCase(new Rng(caseSeed(0xc0dec, i)));
    assert.equal(r.failure, undefined, `case ${i}: ${r.failure}`);
    kinds.add(r.kind);
  }
  for (const k of ['ok', 'channel-short', 'channel-version', 'channel-kind', 'channel-type-length', 'channel-type-utf8', 'channel-json', 'channel-no-id']) {
    assert.ok(kinds.has(k), `no case ended in ${k}`);
  }
});
