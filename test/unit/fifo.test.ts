/**
 * Fifo (src/socket/fifo.ts): the queue of the inbox and the send queue. Items
 * come out in order through pushes and takes interleaved across its
 * compaction, at() sees the front, clear() hands back what is left.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { Fifo } from '../../src/socket/fifo';

test('Fifo: first in, first out across interleaved pushes and takes and past the compaction point', () => {
  const q = new Fifo<{ n: number }>();
  assert.equal(q.shift(), undefined);
  let next = 0;
  let want = 0;
  // Bursts larger and smaller than the compaction threshold (1024 taken).
  for (const [push, take] of [[3000, 2500], [10, 400], [5000, 5000], [1, 1], [2000, 1111]] as const) {
    for (let i = 0; i < push; i++) q.push({ n: next++ });
    assert.equal(q.length, next - want);
    for (let i = 0; i < take; i++) {
      assert.equal(q.at(0)?.n, want);
      assert.equal(q.shift()!.n, want++);
    }
    assert.equal(q.length, next - want);
    if (q.length > 1) assert.equal(q.at(1)!.n, want + 1);
  }
  const rest = q.clear();
  assert.deepEqual(rest.map((x) => x.n), Array.from({ length: next - want }, (_, i) => want + i));
  assert.equal(q.length, 0);
  assert.equal(q.at(0), undefined);
  q.push({ n: 7 });
  assert.equal(q.shift()!.n, 7);
  assert.equal(q.length, 0);
});

test('remove() takes an item out from the front, the middle or the back, keeps the order of the rest, and says whether it was there', () => {
  const q = new Fifo<{ n: number }>();
  const items = [1, 2, 3, 4, 5].map((n) => ({ n }));
  for (const it of items) q.push(it);
  assert.equal(q.shift(), items[0]);
  assert.equal(q.remove(items[2]!), true);
  assert.equal(q.remove(items[2]!), false);
  assert.equal(q.remove(items[1]!), true); // the front
  assert.equal(q.remove(items[4]!), true); // the back
  assert.equal(q.length, 1);
  q.push(items[0]!);
  assert.deepEqual([q.shift(), q.shift(), q.shift()], [items[3], items[0], undefined]);
  assert.equal(q.remove(items[0]!), false);
  // Emptied, the queue takes new items from the front again.
  q.push(items[1]!);
  assert.equal(q.at(0), items[1]);
  assert.equal(q.at(1), undefined);
  assert.equal(q.length, 1);
});
