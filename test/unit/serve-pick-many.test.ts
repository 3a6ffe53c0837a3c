/**
 * strategies.ts pickMany(): the fast hand-off's plan is exactly the picks a
 * dispatcher makes one by one (pickWorker, counting each pick), and stops
 * where every candidate is full.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { pickMany, pickWorker, type Strategy, type WorkerLoad } from '../../src/serve/strategies';

function oneByOne(strategy: Strategy, loads: WorkerLoad[], cursor: number, limit: number, max: number): { plan: number[]; cursors: number[] } {
  const plan: number[] = [];
  const cursors: number[] = [];
  for (let j = 0; j < max; j++) {
    const p = pickWorker(strategy, loads, 0, cursor, limit);
    if (p.index < 0) break;
    loads[p.index]!.pending++;
    loads[p.index]!.open++;
    plan.push(p.index);
    cursors.push(cursor = p.cursor);
  }
  return { plan, cursors };
}

test('pickMany plans what pickWorker picks one by one, and stops when all are full', () => {
  const cases: [Strategy, () => WorkerLoad[], number][] = [
    ['round-robin', () => [{ pending: 0, open: 0 }, { pending: 0, open: 5 }, { pending: 2, open: 2, limit: 3 }], 1],
    ['least-connections', () => [{ pending: 0, open: 4 }, { pending: 1, open: 1 }, { pending: 0, open: 2, limit: 2 }], 2],
    ['least-connections', () => [{ pending: 0, open: 0, limit: 1 }, { pending: 0, open: 0, limit: 2 }], 0],
  ];
  for (const [strategy, loads, cursor] of cases) {
    const want = oneByOne(strategy, loads(), cursor, 8, 20);
    const plan = new Int32Array(20);
    const cursors = new Int32Array(20);
    const n = pickMany(strategy, loads(), cursor, 8, 20, plan, cursors);
    assert.deepEqual([...plan.subarray(0, n)], want.plan, strategy);
    assert.deepEqual([...cursors.subarray(0, n)], want.cursors, strategy);
  }
  // All full from the start: nothing planned.
  assert.equal(pickMany('round-robin', [{ pending: 8, open: 8 }], 0, 8, 4, new Int32Array(4), new Int32Array(4)), 0);
});
