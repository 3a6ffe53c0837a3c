import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { encodeChannel, decodeChannel, Kind } from '../../src/channel/codec';
import { withFds } from '../../src/channel/outgoing';
import { ChannelDecodeError, ProtocolError, type ChannelDecodeProblem } from '../../src/errors';
import { Rng, caseSeed, runCodecCase } from '../helpers/fuzz';

test('round trip of every kind', () => {
  for (const [kind, id] of [[Kind.Post, 0], [Kind.Request, 7], [Kind.Reply, 7], [Kind.ErrorReply, 0xffffffff]] as const) {
    const f = decodeChannel(encodeChannel(kind, id, 'open-file', { path: '/etc/hosts', n: [1, 2] }));
    assert.deepEqual(f, { kind, id, type: 'open-file', body: { path: '/etc/hosts', n: [1, 2] } });
  }
  assert.equal(decodeChannel(encodeChannel(Kind.Post, 0, 't', undefined)).body, undefined);
});

test('malformed messages are refused with a ChannelDecodeError: which rule, and a message saying what is wrong', () => {
  const good = encodeChannel(Kind.Request, 1, 'type', { a: 1 });
  const cases: [ChannelDecodeProblem, (b: Buffer) => Buffer, RegExp][] = [
    ['short', (b) => b.subarray(0, 5), /shorter than its 8-byte header/],
    ['version', (b) => { b[0] = 2; return b; }, /channel version 2/],
    ['kind', (b) => { b[1] = 9; return b; }, /unknown channel message kind 9/],
    ['type-length', (b) => { b.writeUInt16LE(0, 6); return b; }, /type length 0/],
    ['type-length', (b) => { b.writeUInt16LE(200, 6); return b; }, /runs past the end/],
    ['json', (b) => { b[b.length - 1] = 0x7b; return b; }, /not valid JSON/],
    ['no-id', (b) => { b.writeUInt32LE(0, 2); return b; }, /without a correlation id/],
    ['type-utf8', (b) => { b[8] = 0xff; return b; }, /type is not valid UTF-8/],
  ];
  for (const [problem, mutate, message] of cases) {
    assert.throws(() => decodeChannel(mutate(Buffer.from(good))), (e: unknown) => {
      assert.ok(e instanceof ChannelDecodeError && e instanceof ProtocolError);
      assert.deepEqual([e.problem, e.reason, e.code], [problem, 'bad-channel-message', 'FDPASS_ERR_PROTOCOL']);
      assert.match(e.message, /^protocol error: bad channel message: /);
      assert.match(e.message, message);
      return true;
    });
  }
});

test('encoding refuses what a message cannot carry', () => {
  assert.throws(() => encodeChannel(Kind.Post, 0, '', 1), RangeError);
  assert.throws(() => encodeChannel(Kind.Post, 0, 'x'.repeat(257), 1), RangeError);
  assert.throws(() => encodeChannel(Kind.Post, 0, 't', () => 1), { name: 'TypeError', code: 'FDPASS_ERR_INVALID_ARG' });
  // A withFds() inside a body: JSON would carry the wrapper, not the fds.
  assert.throws(() => encodeChannel(Kind.Post, 0, 't', { a: [withFds(1, [0])] }), { name: 'TypeError', code: 'FDPASS_ERR_INVALID_ARG', message: /inside a payload/ });
});

test('fixed-seed fuzz sample: damaged and hostile messages are refused with a reason, never decoded wrong', () => {
  const kinds = new Set<string>();
  for (let i = 0; i < 5000; i++) {
    const r = runCodecCase(new Rng(caseSeed(0xc0dec, i)));
    assert.equal(r.failure, undefined, `case ${i}: ${r.failure}`);
    kinds.add(r.kind);
  }
  for (const k of ['ok', ...['short', 'version', 'kind', 'type-length', 'type-utf8', 'json', 'no-id'].map((p) => `bad-channel-message:${p}`)]) {
    assert.ok(kinds.has(k), `no case ended in ${k}`);
  }
});
