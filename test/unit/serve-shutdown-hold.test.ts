/**
 * The shutdown's hold of fdpass serve, as pure state: the worker's drain
 * (src/serve/worker-drain.ts: a held drain takes hand-offs, each with the
 * whole timeout, and does not exit until released) and the primary's side
 * (src/serve/shutdown-hold.ts: which draining worker is killed at its
 * deadline, and when the release goes out).
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { performance } from 'node:perf_hooks';
import { WorkerDrain } from '../../src/serve/worker-drain';
import { DRAIN_GRACE_MS as G, keepHeld, ShutdownHold, type Drained } from '../../src/serve/shutdown-hold';
import type { Conn } from '../../src/serve/dispatcher';

const T = 1000;
const NOW = 1_000_000;

test('a plain drain exits once nothing is live, or at its deadline', () => {
  const d = new WorkerDrain(T, false, NOW);
  assert.equal(d.step(2, NOW + 10), 'wait');
  assert.equal(d.step(0, NOW + 10), 'exit');
  assert.equal(d.step(2, NOW + T), 'exit');
  d.arrived(NOW + 500); // not held: no more time
  assert.equal(d.deadline, NOW + T);
});

test('a held drain stays with nothing live, cuts what is live at its deadline, gives each hand-off the whole timeout, exits once released', () => {
  const d = new WorkerDrain(T, true, NOW);
  assert.equal(d.step(0, NOW + 10), 'wait', 'held: stays though nothing is live');
  assert.equal(d.step(3, NOW + T), 'cut', 'past the deadline: what is live is cut, the worker stays');
  assert.equal(d.step(0, NOW + T + 5), 'wait');
  d.arrived(NOW + 2 * T);
  assert.equal(d.deadline, NOW + 3 * T, 'connections handed over later get the whole timeout');
  assert.equal(d.step(1, NOW + 2 * T + 10), 'wait');
  d.release(5 * T, NOW + 2 * T + 20);
  assert.equal(d.held, false);
  assert.equal(d.deadline, NOW + 3 * T, 'the release does not extend the deadline');
  assert.equal(d.step(1, NOW + 2 * T + 30), 'wait');
  assert.equal(d.step(0, NOW + 2 * T + 40), 'exit');
});

const conn = (sentAgo: number): Conn => ({ id: 1, fd: -1, listener: 0, hash: 0, batch: 1, sent: performance.now() - sentAgo });
const drained = (held: boolean, inflight: Conn[] = []): Drained =>
  ({ held, drainedAt: NOW, killTimer: null, inflight: new Map(inflight.map((c, i) => [i, c])) });

test('at T + G: a worker not held is killed; a held one is kept while nothing handed to it waited G for its ACK', () => {
  const at = NOW + T + G;
  assert.equal(keepHeld(drained(false), T, at), 0, 'not held: killed, as before the hold');
  assert.equal(keepHeld(drained(true, [conn(G + 1000)]), T, at), 0, 'held but hung with hand-offs: killed');
  assert.equal(keepHeld(drained(true), T, at), G, 'held, nothing unacknowledged: looked at again in G');
  const left = keepHeld(drained(true, [conn(500)]), T, at);
  assert.ok(left > G - 600 && left <= G - 500, `held, a hand-off 500 ms old: looked at again when it is G old (${left})`);
  assert.equal(keepHeld(drained(true), T, NOW + 2 * (T + G)), 0, 'at 2 (T + G) every worker is killed');
  assert.equal(keepHeld(drained(true), T, NOW + 2 * (T + G) - 100), 100, 'never looked at past 2 (T + G)');
});

test('the release goes out once nothing is unplaced, once; no hold when nothing is unplaced at the start', () => {
  let unplaced = 0;
  let released = 0;
  const hold = new ShutdownHold(() => unplaced, () => released++);
  assert.equal(hold.start(), false, 'nothing unplaced: a plain SHUTDOWN');
  hold.check();
  assert.equal(released, 0);
  unplaced = 3;
  assert.equal(hold.start(), true, 'something unplaced: SHUTDOWN with HOLD');
  hold.check();
  assert.equal(released, 0);
  unplaced = 0;
  hold.check();
  hold.check();
  assert.equal(released, 1);
});
