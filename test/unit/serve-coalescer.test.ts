/**
 * The coalescing of reloads (src/serve/coalescer.ts): one run at a time,
 * one more queued, later calls join the queued one; every call settles with
 * the run that served it, failures included.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { Coalescer } from '../../src/serve/coalescer';

/** A job whose runs the test ends one by one. */
function steppedJob() {
  const runs: { resolve: () => void; reject: (e: Error) => void }[] = [];
  let active = 0;
  let most = 0;
  const job = () => new Promise<void>((resolve, reject) => {
    active++;
    most = Math.max(most, active);
    const done = () => active--;
    runs.push({ resolve: () => (done(), resolve()), reject: (e) => (done(), reject(e)) });
  });
  return { job, runs, most: () => most };
}

const tick = () => new Promise((r) => setImmediate(r));

test('10 calls while one runs: 2 runs, never two at once; the first call settles with the first run, the 9 others with the second', async () => {
  const j = steppedJob();
  const c = new Coalescer(j.job);
  assert.equal(c.next, 'run');
  const settled: string[] = new Array(10).fill('');
  const calls = [];
  for (let i = 0; i < 10; i++) {
    calls.push(c.run().then(() => (settled[i] = 'ok'), (e: Error) => (settled[i] = e.message)));
    if (i === 0) assert.equal(c.next, 'queue');
  }
  assert.equal(c.next, 'join');
  await tick();
  assert.equal(j.runs.length, 1);
  j.runs[0]!.resolve();
  await tick();
  assert.deepEqual(settled, ['ok', '', '', '', '', '', '', '', '', '']);
  assert.equal(j.runs.length, 2, 'the queued run started once the first settled');
  assert.equal(c.next, 'queue', 'a call now queues behind the second');
  j.runs[1]!.reject(new Error('second failed'));
  await Promise.all(calls);
  assert.deepEqual(settled, ['ok', ...new Array(9).fill('second failed')]);
  assert.equal(j.most(), 1);
  assert.equal(c.next, 'run');
});

test('a run that fails lets the queued one run; a call after all settled starts a new run', async () => {
  const j = steppedJob();
  const c = new Coalescer(j.job);
  const first = c.run();
  const second = c.run();
  j.runs[0]!.reject(new Error('first failed'));
  await assert.rejects(first, /first failed/);
  await tick();
  j.runs[1]!.resolve();
  await second;
  const third = c.run();
  await tick();
  assert.equal(j.runs.length, 3);
  j.runs[2]!.resolve();
  await third;
});
