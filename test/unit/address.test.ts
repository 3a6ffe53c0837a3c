import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { encodeAddress, decodeAddress, displayAddress } from '../../src/socket/address';

test('paths and abstract names', () => {
  assert.deepEqual(encodeAddress('/tmp/x'), Buffer.from('/tmp/x'));
  assert.deepEqual(encodeAddress('\0name'), Buffer.from('\0name'));
  assert.equal(decodeAddress(encodeAddress('\0name')), '\0name');
  assert.equal(displayAddress('\0name'), '@name');
});

test('sun_path limits: 107 bytes for a path, 108 for an abstract name', () => {
  assert.doesNotThrow(() => encodeAddress('/' + 'a'.repeat(106)));
  assert.throws(() => encodeAddress('/' + 'a'.repeat(107)), { name: 'RangeError', code: 'FDPASS_ERR_PATH_TOO_LONG' });
  assert.doesNotThrow(() => encodeAddress('\0' + 'a'.repeat(107)));
  assert.throws(() => encodeAddress('\0' + 'a'.repeat(108)), { code: 'FDPASS_ERR_PATH_TOO_LONG' });
  // Multi-byte characters count as bytes.
  assert.throws(() => encodeAddress('/' + 'é'.repeat(54)), { code: 'FDPASS_ERR_PATH_TOO_LONG' });
});

test('bad addresses', () => {
  assert.throws(() => encodeAddress(''), { name: 'TypeError', code: 'FDPASS_ERR_INVALID_ARG' });
  assert.throws(() => encodeAddress(42 as unknown as string), TypeError);
  assert.throws(() => encodeAddress('/tmp/a\0b'), /NUL/);
});
