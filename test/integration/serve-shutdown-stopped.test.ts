/**
 * fdpass serve, a graceful shutdown while a worker hangs (SIGSTOP) with
 * connections handed to it and never acknowledged: the primary still holds
 * them (it keeps each fd until the ACK), and once the hung worker is killed
 * at its deadline they go to a worker that drains on hold
 * (shutdown-hold.ts): every connection the primary accepted is answered.
 * The same for a worker of the old generation, stopped while it drains
 * after a reload, when the shutdown comes before it is killed. With no
 * live worker left, they are closed, and the log says how many.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds, type Scope } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { startServe, type ServeProcess } from '../helpers/serve';
import { attempt, type Attempt } from '../helpers/http';
import { alive, suspend } from '../helpers/proc';

const BURST = 40;
/** --shutdown-timeout: the hung worker is killed 2 s (the drain grace) after it. */
const SHUTDOWN_MS = 1000;
const GRACE_MS = 2000;
const HAS_SETSID = fs.existsSync('/usr/bin/setsid') || fs.existsSync('/bin/setsid');

/** `fdpass serve` (the demo app) with 2 workers, `stopped` of them SIGSTOPped,
 * then BURST connections (round-robin: half of them to each worker), each
 * request sent; resolves once the stopped workers hold theirs unacknowledged
 * and the others answered theirs. */
async function burstWithStopped(scope: Scope, stopped: number, prefix?: string[]) {
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--shutdown-timeout', String(SHUTDOWN_MS),
    '--control', path.join(dir, 'control.sock')], { owner: scope, prefix });
  const pids = (await s.status()).workers.map((w) => w.pid!);
  const hung = pids.slice(0, stopped);
  suspend(scope, hung);
  const l = s.listener('http');
  const answered: Attempt[] = [];
  const outcomes = Promise.all(Array.from({ length: BURST }, async (_, i) => {
    const a = await attempt(l, `/b${i}`, 20_000);
    answered.push(a);
    return a;
  }));
  const held = BURST / 2 * stopped;
  await s.waitStatus((st) => st.workers.filter((w) => hung.includes(w.pid!)).reduce((n, w) => n + w.unacked, 0) === held &&
    answered.length === BURST - held, 10_000, `${held} hand-offs unacknowledged by the stopped worker(s), the rest answered`);
  return { s, pids, hung, outcomes };
}

function failures(got: Attempt[]): string[] {
  return got.filter((a) => !a.ok).map((a) => `${a.code} (connected ${a.connected}, ${a.bytes} bytes)`);
}

/** Shuts `s` down with `kill()` and checks what every shutdown here must. */
async function shutDown(s: ServeProcess, kill: () => void) {
  const t0 = Date.now();
  kill();
  const result = await s.waitExit(SHUTDOWN_MS + GRACE_MS + 10_000);
  const ms = Date.now() - t0;
  assert.equal(result.signal, null, result.stderr);
  assert.equal(result.code, 0, result.stderr);
  // The hung worker is killed at T + G; what it held is served at once.
  assert.ok(ms < SHUTDOWN_MS + GRACE_MS + 3000, `shut down in ${ms} ms`);
  return result;
}

for (const how of ['SIGTERM', 'SIGINT to the process group'] as const) {
  const skip = how !== 'SIGTERM' && !HAS_SETSID ? 'setsid(1) (util-linux) is not installed' : false;
  test(`${how} with a worker stopped holding ${BURST / 2} hand-offs: all ${BURST} connections answered by the other, exit 0`, { skip }, async (t) => {
    const scope = await trackFds(t);
    const group = how !== 'SIGTERM';
    const { s, pids, hung, outcomes } = await burstWithStopped(scope, 1, group ? ['setsid'] : undefined);
    const result = await shutDown(s, () => (group ? process.kill(-s.pid, 'SIGINT') : s.signal('SIGTERM')));
    const got = await outcomes;
    assert.deepEqual(failures(got), [], 'every connection the primary accepted is answered');
    assert.deepEqual([...new Set(got.map((a) => a.worker))], [pids[1]], 'by the worker that was not stopped');
    assert.ok(!alive(hung[0]!), 'the stopped worker is gone');
    const drained = s.events('worker-drained').find((e) => e.pid === hung[0]);
    assert.equal(drained?.redispatched, BURST / 2, result.stderr);
    assert.equal(drained?.reason, 'killed: still draining at its deadline', 'the log says the primary killed it');
    assert.deepEqual(s.events('shutdown-unserved'), [], result.stderr);
  });
}

test(`SIGHUP, then SIGTERM, with an old worker stopped holding ${BURST / 2} hand-offs: all answered by the new generation, exit 0`, async (t) => {
  const scope = await trackFds(t);
  const { s, pids, hung, outcomes } = await burstWithStopped(scope, 1);
  s.signal('SIGHUP');
  await s.waitEvent((e) => e.event === 'reload-done' && e.generation === 2, 10_000, 'reload-done');
  const fresh = (await s.status()).workers.filter((w) => w.generation === 2).map((w) => w.pid!);
  // The stopped worker drains (it is killed at T + G from the reload): the
  // shutdown comes first, its connections are still unplaced.
  const result = await shutDown(s, () => s.signal('SIGTERM'));
  const got = await outcomes;
  assert.deepEqual(failures(got), [], 'every connection the primary accepted is answered');
  assert.deepEqual(got.filter((a) => a.worker !== pids[1]).map((a) => fresh.includes(a.worker!)), new Array(BURST / 2).fill(true),
    'the stopped one\'s by the new generation');
  assert.ok(!alive(hung[0]!), 'the stopped worker is gone');
  assert.deepEqual(s.events('shutdown-unserved'), [], result.stderr);
});

test(`SIGTERM with both workers stopped: the ${BURST} connections are closed unserved, the log says how many, exit 0`, async (t) => {
  const scope = await trackFds(t);
  const { s, hung, outcomes } = await burstWithStopped(scope, 2);
  const result = await shutDown(s, () => s.signal('SIGTERM'));
  const got = await outcomes;
  assert.equal(failures(got).length, BURST, 'no worker was left to serve them');
  assert.ok(hung.every((pid) => !alive(pid)), 'the stopped workers are gone');
  assert.deepEqual(s.events('shutdown-unserved').map((e) => e.closed), [BURST], result.stderr);
});
