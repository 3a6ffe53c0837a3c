/**
 * The respawn policy of fdpass serve (src/serve/respawn-policy.ts): a
 * ready worker killed from outside is replaced at once; one that crashed,
 * or that the primary killed (its channel closed, not ready in time), is
 * respawned after 100 ms doubling to 30 s, and from 5 crashes in a row a
 * crash loop is reported; a worker that lived past 5 s starts the count
 * again.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { respawnPolicy, type Ending } from '../../src/serve/respawn-policy';

const NOW = 1_000_000;
const ended = (o: Partial<Ending>): Ending => ({ wasReady: true, killedByUs: false, exitSignal: null, startedAt: NOW - 1000, ...o });

test('kill -9 (or SIGTERM) from outside of a ready worker: at once, the crash count unchanged', () => {
  for (const sig of ['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGHUP']) {
    assert.deepEqual(respawnPolicy(ended({ exitSignal: sig }), 3, NOW), { cause: 'killed', crashes: 3, delay: 0, crashLoop: false }, sig);
  }
});

test('SIGKILL by the primary (a worker that closed its channel) is a crash: 100, 200, 400, 800, 1600 ms, a crash loop from the fifth', () => {
  let crashes = 0;
  const out: [string, number, boolean][] = [];
  for (let i = 0; i < 6; i++) {
    const r = respawnPolicy(ended({ exitSignal: 'SIGKILL', killedByUs: true }), crashes, NOW);
    crashes = r.crashes;
    out.push([r.cause, r.delay, r.crashLoop]);
  }
  assert.deepEqual(out, [['crashed', 100, false], ['crashed', 200, false], ['crashed', 400, false], ['crashed', 800, false], ['crashed', 1600, true], ['crashed', 3200, true]]);
});

test('an exit status, a crash signal, or a kill before ready: crashes; the delay stops at 30 s', () => {
  assert.equal(respawnPolicy(ended({ exitSignal: 'SIGSEGV' }), 0, NOW).cause, 'crashed');
  assert.equal(respawnPolicy(ended({}), 0, NOW).cause, 'crashed');
  assert.equal(respawnPolicy(ended({ wasReady: false, exitSignal: 'SIGKILL' }), 0, NOW).cause, 'crashed');
  assert.equal(respawnPolicy(ended({}), 20, NOW).delay, 30_000);
});

test('a worker that ran past 5 s: the count starts again, respawned at once; a failed spawn counts as a crash', () => {
  assert.deepEqual(respawnPolicy(ended({ startedAt: NOW - 6000 }), 7, NOW), { cause: 'crashed', crashes: 0, delay: 0, crashLoop: false });
  assert.deepEqual(respawnPolicy(null, 1, NOW), { cause: 'spawn-failed', crashes: 2, delay: 200, crashLoop: false });
});
