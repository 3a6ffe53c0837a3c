/**
 * fdpass serve with its workers at their RLIMIT_NOFILE (set with prlimit
 * --pid) while connections keep coming: a hand-off that does not fit
 * arrives truncated (MSG_CTRUNC) and the worker reports it LOST. The primary
 * then sends that worker smaller batches (halved on each LOST, down to one
 * connection) after a back-off, and re-dispatches what waits at that pace:
 * no storm of hand-offs (its CPU, from /proc/<pid>/stat, stays low), LOST
 * lines are rate-limited, and once the workers free fds every connection
 * that waited is answered.
 * The app is test/fixtures/apps/gated.js: a request to /hold keeps its
 * connection (an fd of the worker) until a marker file exists.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { limitLeaving } from '../helpers/fds';
import { tmpDir } from '../helpers/files';
import { APPS } from '../helpers/paths';
import { childEnv } from '../helpers/process';
import { startServe } from '../helpers/serve';
import { attempt, type Attempt } from '../helpers/http';
import { hammer, tally } from '../helpers/load';
import { cpuTicks, USER_HZ } from '../helpers/proc';
import { sleep } from '../helpers/wait';

/** Free fd slots left to each worker. */
const ROOM = 3;
/** Connections, far more than the workers have room for. */
const N = 40;
/** How long the stall is watched, while a new connection comes every ARRIVAL_MS. */
const STALL_MS = 2000;
const ARRIVAL_MS = 20;

test('workers at their RLIMIT_NOFILE: no hand-off storm while stalled (primary CPU low, LOST lines rate-limited), and every connection is answered once fds free up', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const release = path.join(dir, 'release');
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--control', path.join(dir, 'control.sock'), path.join(APPS, 'gated.js')],
    { owner: scope, env: childEnv({ FDPASS_TEST_HOLD_UNTIL: release }) });
  const l = s.listener('http');
  await hammer(l, 10, 2);
  const tree = await s.idleFds();
  for (const [pid, fds] of tree.workers) {
    const limit = limitLeaving(fds, ROOM);
    const pl = spawnSync('prlimit', ['--pid', String(pid), `--nofile=${limit}:${limit}`], { encoding: 'utf8' });
    assert.equal(pl.status, 0, pl.stderr);
  }
  const room = ROOM * tree.workers.size;

  const replies: Promise<Attempt>[] = Array.from({ length: N }, (_, i) => attempt(l, `/hold?i=${i}`, 30_000));
  let answeredEarly = 0;
  for (const r of replies) void r.then(() => answeredEarly++);
  // Stalled: the workers hold what they could take, the rest waits in the primary.
  await s.waitStatus((st) => st.primary.accepted === 10 + N, 10_000, 'every connection accepted');
  await s.waitEvent((e) => e.event === 'handoff-lost', 5000, 'a LOST hand-off');
  await sleep(300);
  const before = await s.status();
  const lostLines0 = s.events('handoff-lost').length;
  const c0 = cpuTicks(s.pid);
  const t0 = Date.now();
  // Connections keep coming meanwhile (each accept is a dispatch).
  while (Date.now() - t0 < STALL_MS) {
    replies.push(attempt(l, `/hold?i=${replies.length}`, 30_000));
    await sleep(ARRIVAL_MS);
  }
  const ticks = cpuTicks(s.pid) - c0;
  const ms = Date.now() - t0;
  const after = await s.status();
  const lostLines = s.events('handoff-lost').length - lostLines0;
  const cpuPercent = (ticks * 100 * 1000) / USER_HZ / ms;
  const handoffsPerSecond = ((after.primary.handed - before.primary.handed) * 1000) / ms;
  const total = replies.length;
  const stall = `workers at their limit (room for ${room} in all), ${N} connections then one every ${ARRIVAL_MS} ms (${total} in all): ` +
    `${handoffsPerSecond.toFixed(1)} hand-offs/s, primary CPU ${cpuPercent.toFixed(1)}% (${ticks} ticks in ${ms} ms), ${lostLines} handoff-lost lines`;
  t.diagnostic(stall);
  assert.equal(answeredEarly, 0, 'nothing answered while held');
  assert.ok(after.primary.waiting + after.primary.inflight >= N - room, `${after.primary.waiting} waiting, ${after.primary.inflight} in flight`);
  assert.ok(cpuPercent < 10, `the primary used ${cpuPercent.toFixed(1)}% CPU while the workers were at their fd limit`);
  assert.ok(handoffsPerSecond < 100, `${handoffsPerSecond.toFixed(0)} hand-offs/s while the workers were at their fd limit`);
  assert.ok(lostLines <= Math.ceil(ms / 1000) + 1, `${lostLines} handoff-lost lines in ${ms} ms`);

  const freedAt = Date.now();
  fs.writeFileSync(release, ''); // the held requests are answered: their fds free up
  const results = await Promise.all(replies);
  const recoveredMs = Date.now() - freedAt;
  assert.deepEqual(results.filter((a) => !a.ok).map((a) => a.code), [], 'every connection is answered');
  assert.ok(recoveredMs < 10_000, `all answered ${recoveredMs} ms after the fds came free`);
  const st = await s.status();
  assert.equal(st.primary.waiting + st.primary.inflight, 0);
  await s.expectNoFdLeak(tree);
  const suppressed = s.events('handoff-lost').reduce((a, e) => a + Number(e.suppressed ?? 0), 0);
  t.diagnostic(`${s.events('handoff-lost').length} handoff-lost lines in all (${suppressed} more suppressed); ` +
    `all answered ${recoveredMs} ms after the fds came free, by ${JSON.stringify(Object.fromEntries(tally(results.map((a) => a.worker))))}`);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});
