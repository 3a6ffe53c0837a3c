import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as os from 'node:os';
import {
  GetsocksDecoder, encodeInt, decodeInt, encodeRecords, parseRecords, batchSizes, MAX_BATCH_FDS, MAX_COUNT,
} from '../../src/serve/getsocks';

const LE = os.endianness() === 'LE';

test('the count and acknowledgements are native-endian int32', () => {
  const b = encodeInt(0x01020304);
  assert.deepEqual([...b], LE ? [4, 3, 2, 1] : [1, 2, 3, 4]);
  assert.equal(decodeInt(b), 0x01020304);
  assert.equal(decodeInt(encodeInt(-1)), -1);
});

test('records: namespace length and name, interface length and name, 4 reserved zero bytes', () => {
  const b = encodeRecords([{ namespace: '', iface: '' }, { namespace: 'ns1', iface: 'eth0' }]);
  assert.deepEqual([...b], [
    0, 0, 0, 0, 0, 0,
    3, ...Buffer.from('ns1'), 4, ...Buffer.from('eth0'), 0, 0, 0, 0,
  ]);
  assert.deepEqual(parseRecords(b, 2), { records: [{ namespace: '', iface: '' }, { namespace: 'ns1', iface: 'eth0' }], used: b.length });
  // Reserved bytes are ignored (HAProxy < 2.3 put listener options there).
  assert.deepEqual(parseRecords(Buffer.from([0, 0, 1, 2, 3, 4]), 1), { records: [{ namespace: '', iface: '' }], used: 6 });
  // Any byte survives a name (latin1).
  const odd = String.fromCharCode(0, 200, 255);
  assert.deepEqual(parseRecords(encodeRecords([{ namespace: odd, iface: '' }]), 1), { records: [{ namespace: odd, iface: '' }], used: 9 });
  assert.throws(() => encodeRecords([{ namespace: 'x'.repeat(256), iface: '' }]), RangeError);
});

test('parseRecords: a record cut anywhere is short', () => {
  const b = encodeRecords([{ namespace: 'ab', iface: 'c' }, { namespace: '', iface: '' }]);
  for (let n = 0; n < b.length; n++) assert.equal(parseRecords(b.subarray(0, n), 2), 'short', `cut at ${n}`);
});

test('batches of at most 252 fds', () => {
  assert.deepEqual(batchSizes(0), []);
  assert.deepEqual(batchSizes(1), [1]);
  assert.deepEqual(batchSizes(252), [252]);
  assert.deepEqual(batchSizes(253), [252, 1]);
  assert.deepEqual(batchSizes(600), [252, 252, 96]);
  assert.equal(MAX_BATCH_FDS, 252);
});

/** An answer as the server sends it: count, then per batch its records and fd count. */
function answer(n: number): { bytes: Buffer; batches: { bytes: Buffer; fds: number }[] } {
  const batches = batchSizes(n).map((k, i) => ({
    bytes: encodeRecords(Array.from({ length: k }, (_, j) => ({ namespace: '', iface: (i * MAX_BATCH_FDS + j) % 3 ? '' : `if${j}` }))),
    fds: k,
  }));
  return { bytes: encodeInt(n), batches };
}

test('decoder: the count alone, then each batch (HAProxy sends them so)', () => {
  const a = answer(600);
  const d = new GetsocksDecoder();
  d.push(a.bytes, 0);
  assert.equal(d.count, 600);
  for (const [i, b] of a.batches.entries()) {
    assert.equal(d.done, false);
    d.push(b.bytes, b.fds);
    assert.equal(d.fds, Math.min(600, (i + 1) * MAX_BATCH_FDS));
  }
  assert.equal(d.done, true);
  assert.equal(d.records.length, 600);
  assert.deepEqual(d.records[3], { namespace: '', iface: 'if3' });
});

test('decoder: reads split and merged anywhere (the fds come with the read that reaches their batch)', () => {
  const a = answer(5);
  const whole = Buffer.concat([a.bytes, a.batches[0]!.bytes]);
  const fdsAt = a.bytes.length; // the batch's first byte
  for (let cut = 1; cut < whole.length; cut++) {
    const d = new GetsocksDecoder();
    const first = whole.subarray(0, cut);
    const rest = whole.subarray(cut);
    d.push(first, cut > fdsAt ? 5 : 0);
    assert.equal(d.done, false, `cut ${cut}`);
    d.push(rest, cut > fdsAt ? 0 : 5);
    assert.equal(d.done, true, `cut ${cut}`);
    assert.equal(d.records.length, 5);
  }
  // Everything in one read.
  const d = new GetsocksDecoder();
  d.push(whole, 5);
  assert.equal(d.done, true);
});

test('decoder: a count of zero is a complete, empty answer', () => {
  const d = new GetsocksDecoder();
  d.push(encodeInt(0), 0);
  assert.equal(d.done, true);
  assert.deepEqual(d.records, []);
});

test('decoder: bad answers are TakeoverErrors with their reason', () => {
  const bad = (fn: (d: GetsocksDecoder) => void, reason: string) => {
    const d = new GetsocksDecoder();
    assert.throws(() => fn(d), { name: 'TakeoverError', code: 'FDPASS_ERR_TAKEOVER', reason });
  };
  bad((d) => d.push(encodeInt(-3), 0), 'bad-count');
  bad((d) => d.push(encodeInt(MAX_COUNT + 1), 0), 'bad-count');
  bad((d) => d.push(Buffer.from('Unknown command'), 0), 'bad-count');
  bad((d) => d.push(Buffer.from([1, 0]), 1), 'bad-count'); // fds before the count
  bad((d) => d.push(Buffer.concat([encodeInt(1), encodeRecords([{ namespace: '', iface: '' }])]), 2), 'too-many-fds');
  bad((d) => {
    d.push(encodeInt(2), 0);
    d.push(encodeRecords([{ namespace: '', iface: '' }]), 1);
    d.push(encodeRecords([{ namespace: '', iface: '' }]), 2);
  }, 'too-many-fds');
  // Bytes left over after every record.
  bad((d) => d.push(Buffer.concat([encodeInt(1), encodeRecords([{ namespace: '', iface: '' }]), Buffer.from([9])]), 1), 'bad-records');
  // More bytes than any records of the count could take.
  bad((d) => d.push(Buffer.concat([encodeInt(1), Buffer.alloc(600)]), 0), 'bad-records');
  // Anything after a complete answer.
  bad((d) => {
    d.push(Buffer.concat([encodeInt(1), encodeRecords([{ namespace: '', iface: '' }])]), 1);
    d.push(Buffer.from([0]), 0);
  }, 'bad-records');
});
