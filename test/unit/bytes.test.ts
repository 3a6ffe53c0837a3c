/**
 * copyBytes (src/socket/bytes.ts): the one copy helper of the framing and
 * the send path, on both sides of its small-copy cut-off.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { copyBytes } from '../../src/socket/bytes';

test('copyBytes copies src[start, end) to dst at an offset, for small and large ranges, whole or in part', () => {
  for (const n of [0, 1, 63, 64, 65, 1000]) {
    const src = Buffer.from(Array.from({ length: n + 7 }, (_, i) => (i * 31 + 5) & 0xff));
    for (const [start, end] of [[0, src.length], [3, 3 + n], [7, 7 + n]] as const) {
      const dst = Buffer.alloc(n + 20, 0xee);
      copyBytes(dst, 11, src, start, end);
      assert.deepEqual(dst.subarray(11, 11 + (end - start)), src.subarray(start, end), `n ${n} [${start}, ${end})`);
      assert.ok(dst.subarray(0, 11).every((b) => b === 0xee), 'nothing written before');
      assert.ok(dst.subarray(11 + (end - start)).every((b) => b === 0xee), 'nothing written after');
    }
  }
});
