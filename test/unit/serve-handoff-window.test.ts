/**
 * The hand-off window of one worker (src/serve/handoff-window.ts), as pure
 * state: each LOST halves it (down to 1) and closes it for a back-off that
 * doubles from 10 ms to 1 s; an ack of a batch sent after the last LOST
 * ends the back-off and doubles it back (to its maximum); acks of batches
 * sent before that LOST change nothing, batch numbers wrapping at 2^32.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { HandoffWindow, MAX_UNACKED } from '../../src/serve/handoff-window';

test('a fresh window: open, MAX_UNACKED wide', () => {
  const w = new HandoffWindow();
  assert.equal(w.size, MAX_UNACKED);
  assert.equal(w.room(0, 0), MAX_UNACKED);
  assert.equal(w.room(1000, 0), MAX_UNACKED - 1000);
  assert.equal(w.room(MAX_UNACKED + 5, 0), 0);
});

test('LOST: half the lost batch (at least 1), closed for 10, 20, 40 ... 640, 1000, 1000 ms', () => {
  const w = new HandoffWindow();
  let now = 1_000_000;
  const seen: [number, number][] = [];
  let batch = 1;
  for (const n of [253, 200, 20, 3, 1, 1, 1, 1, 1]) {
    w.lost(batch++, n, now);
    assert.equal(w.room(0, now), 0, 'closed during the back-off');
    assert.equal(w.room(0, w.until - 1), 0);
    seen.push([w.size, w.until - now]);
    now = w.until;
    assert.equal(w.room(0, now), w.size, 'open again once it ends, as wide as its size');
  }
  assert.deepEqual(seen, [[126, 10], [63, 20], [10, 40], [1, 80], [1, 160], [1, 320], [1, 640], [1, 1000], [1, 1000]]);
});

test('acks: of a batch after the last LOST, the back-off ends and the size doubles back to the maximum; of one before it, nothing', () => {
  const w = new HandoffWindow(64);
  w.lost(10, 8, 0);
  assert.equal(w.size, 4);
  w.acked(9); // sent before the LOST, acknowledged after it
  assert.equal(w.size, 4);
  assert.equal(w.room(0, 5), 0, 'still backing off');
  w.acked(11);
  assert.deepEqual([w.size, w.until, w.backoffMs, w.room(0, 5)], [8, 0, 0, 8]);
  for (const b of [12, 13, 14, 15]) w.acked(b);
  assert.equal(w.size, 64, 'back to its maximum, no further');
  // A LOST after the recovery starts the back-off from 10 ms again.
  w.lost(16, 64, 1000);
  assert.deepEqual([w.size, w.until], [32, 1010]);
});

test('batch numbers wrap at 2^32: an ack of batch 1 after a LOST of batch 0xffffffff counts as later', () => {
  const w = new HandoffWindow(16);
  w.lost(0xffffffff, 4, 0);
  assert.equal(w.size, 2);
  w.acked(0xfffffffe);
  assert.equal(w.size, 2);
  w.acked(1);
  assert.equal(w.size, 4);
});
