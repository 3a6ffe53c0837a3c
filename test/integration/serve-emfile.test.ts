/**
 * fdpass serve at its fd limits (RLIMIT_NOFILE, set with prlimit):
 * - the primary at its limit (EMFILE on accept) stops accepting without
 *   spinning (its CPU over the EMFILE period, from /proc/<pid>/stat), counts
 *   and logs the errors, and, as soon as fds free up, answers every
 *   connection the kernel's backlog held meanwhile;
 * - a worker killed while the primary is at its limit is still replaced
 *   (the primary keeps spare fds for that), and nothing is lost;
 * - a worker at its own limit receives a hand-off without its fds
 *   (MSG_CTRUNC): it reports the batch LOST and another worker answers.
 * Both workers are stopped (SIGSTOP) to hold the primary at its limit: they
 * cannot acknowledge, so the primary keeps every fd it accepted.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { trackFds, type Scope } from '../helpers/scope';
import { openFds, limitLeaving } from '../helpers/fds';
import { tmpDir } from '../helpers/files';
import { startServe, type ServeProcess } from '../helpers/serve';
import { attempt, HttpConnection, type Attempt } from '../helpers/http';
import { hammer, tally } from '../helpers/load';
import { cpuTicks, suspend } from '../helpers/proc';
import { sleep } from '../helpers/wait';

/** The primary's RLIMIT_NOFILE: about 30 fds at rest, so some 18 for connections. */
const LIMIT = 48;
/** More connections than the primary has fds for. */
const N = 60;

async function startLimited(scope: Scope, workers = 2): Promise<ServeProcess> {
  const dir = tmpDir(scope);
  return startServe(['--listen', '127.0.0.1:0', '--workers', String(workers), '--control', path.join(dir, 'control.sock')],
    { owner: scope, prefix: ['prlimit', `--nofile=${LIMIT}:${LIMIT}`, '--'] });
}

function failuresOf(results: Attempt[]): string[] {
  return results.filter((a) => !a.ok).map((a) => `${a.code} (connected ${a.connected}, ${a.bytes} bytes)`);
}

test('EMFILE on accept: the primary at its RLIMIT_NOFILE stops accepting without spinning, counts and logs the errors, and answers every connection once fds free up', async (t) => {
  const scope = await trackFds(t);
  const s = await startLimited(scope);
  const l = s.listener('http');
  await hammer(l, 10, 2);
  const tree = await s.idleFds();
  assert.ok(tree.primary.size <= LIMIT - 12, `the primary holds ${tree.primary.size} fds at rest, too close to ${LIMIT} for this test`);
  const workers = [...tree.workers.keys()];
  suspend(scope, workers);

  const replies = Array.from({ length: N }, (_, i) => attempt(l, `/e${i}`, 20_000));
  await s.waitEvent((e) => e.event === 'accept-error' && e.error === 'EMFILE', 10_000, 'accept-error EMFILE');
  // The EMFILE period: the listener stays readable all along.
  const c0 = cpuTicks(s.pid);
  const t0 = Date.now();
  await sleep(1500);
  const ticks = cpuTicks(s.pid) - c0;
  const cpuPercent = (ticks * 1000) / (Date.now() - t0);
  assert.ok(cpuPercent < 10, `the primary used ${cpuPercent.toFixed(1)}% CPU at EMFILE (a busy loop would be ~100%)`);
  const held = [...openFds(s.pid).keys()].filter((fd) => fd < LIMIT).length;
  const errorLines = s.events('accept-error').length;
  const emfileMs = Date.now() - Date.parse(s.events('accept-error')[0]!.time);

  const resumedAt = Date.now();
  for (const pid of workers) process.kill(pid, 'SIGCONT');
  const results = await Promise.all(replies);
  const ms = Date.now() - resumedAt;
  assert.deepEqual(failuresOf(results), [], 'every connection held in the backlog is answered');
  assert.ok(results.every((a) => a.connected), 'the kernel completed every handshake while the primary could not accept');
  const resumed = s.events('accept-resumed').filter((e) => Date.parse(e.time) >= resumedAt - 5);
  assert.ok(resumed.length >= 1, 'accept-resumed is logged');
  const firstAccept = Date.parse(resumed[0]!.time) - resumedAt;
  assert.ok(firstAccept < 500, `accepting resumed ${firstAccept} ms after the workers could acknowledge (the fds came free), not at the next backoff tick (up to 1 s)`);

  const st = await s.status();
  assert.ok(st.primary.acceptErrors >= 1, 'status counts the accept errors');
  assert.equal(st.primary.accepted, 10 + N);
  assert.ok(errorLines <= Math.floor(emfileMs / 1000) + 1, `accept-error lines are rate-limited: ${errorLines} in ${emfileMs} ms`);
  assert.deepEqual([...new Set(s.events('accept-error').map((e) => e.error))], ['EMFILE']);
  await s.expectNoFdLeak(tree);
  t.diagnostic(`primary at ${held} of ${LIMIT} fds for ${emfileMs} ms: ${ticks} ticks of CPU in 1.5 s (${cpuPercent.toFixed(1)}%); ` +
    `${st.primary.acceptErrors} accept errors, ${errorLines} logged; accepting again ${firstAccept} ms after SIGCONT; all ${N} answered in ${ms} ms`);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});

test('EMFILE and a worker killed meanwhile: the primary survives, respawns it with its spare fds, and answers every connection', async (t) => {
  const scope = await trackFds(t);
  const s = await startLimited(scope);
  const l = s.listener('http');
  await hammer(l, 10, 2);
  const tree = await s.idleFds();
  const workers = [...tree.workers.keys()];
  const [victim, other] = workers as [number, number];
  suspend(scope, workers);

  const replies = Array.from({ length: N }, (_, i) => attempt(l, `/k${i}`, 20_000));
  await s.waitEvent((e) => e.event === 'accept-error' && e.error === 'EMFILE', 10_000, 'accept-error EMFILE');
  process.kill(victim, 'SIGKILL');
  const respawn = await s.waitEvent((e) => e.event === 'worker-respawn' && e.pid === victim, 10_000, 'worker-respawn');
  assert.equal(respawn.cause, 'killed');
  assert.equal(respawn.inMs, 0, 'a ready worker killed from outside is replaced at once');
  const ready = await s.waitEvent((e) => e.event === 'worker-ready' && !workers.includes(e.pid as number), 10_000, 'the replacement ready');
  const replacement = ready.pid as number;
  // The replacement alone serves for a while: the other worker is still stopped.
  await sleep(200);
  process.kill(other, 'SIGCONT');
  const results = await Promise.all(replies);
  assert.deepEqual(failuresOf(results), [], 'every connection is answered');
  const by = tally(results.map((a) => a.worker));
  assert.ok(!by.has(victim), 'the killed worker answered nothing');
  assert.ok((by.get(replacement) ?? 0) > 0, 'the replacement, spawned at EMFILE, serves');
  assert.ok(s.running, 'the primary is alive');
  const exit = s.events('worker-exit').find((e) => e.pid === victim)!;
  await s.expectNoFdLeak(tree);
  t.diagnostic(`answered by ${JSON.stringify(Object.fromEntries(by))}; the killed worker's ${exit.redispatched} unacknowledged connections were handed on`);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});

test('a worker at its RLIMIT_NOFILE: a hand-off that arrives without its fds (MSG_CTRUNC) is reported LOST and answered by another worker', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--control', path.join(dir, 'control.sock')], { owner: scope });
  const l = s.listener('http');
  await hammer(l, 10, 2);
  const tree = await s.idleFds();
  const [full, roomy] = [...tree.workers.keys()] as [number, number];
  const ROOM = 4;
  const limit = limitLeaving(openFds(full), ROOM);
  const pl = spawnSync('prlimit', ['--pid', String(full), `--nofile=${limit}:${limit}`], { encoding: 'utf8' });
  assert.equal(pl.status, 0, pl.stderr);

  const conns: HttpConnection[] = [];
  scope.defer(() => Promise.all(conns.map((c) => c.close())));
  const by: number[] = [];
  for (let i = 0; i < 24; i++) {
    const c = await HttpConnection.open(l);
    conns.push(c);
    by.push((await c.get(`/c${i}`)).body.worker);
  }
  const counts = tally(by);
  assert.ok((counts.get(full) ?? 0) <= ROOM, `the full worker holds ${counts.get(full)} connections, room for ${ROOM}`);
  assert.equal((counts.get(full) ?? 0) + (counts.get(roomy) ?? 0), 24, 'every connection answered, by one of the two');
  const lost = s.events('handoff-lost');
  assert.ok(lost.length >= 1 && lost.every((e) => e.pid === full), 'the full worker reported LOST batches');
  const st = await s.status();
  assert.equal(st.primary.inflight, 0, 'nothing stays unacknowledged');
  assert.equal(st.workers.reduce((a, w) => a + w.live, 0), 24);
  await Promise.all(conns.map((c) => c.close()));
  await s.expectNoFdLeak(tree);
  t.diagnostic(`worker ${full} limited to ${limit} fds: held ${counts.get(full) ?? 0}, reported ${lost.length} LOST hand-off(s) ` +
    `(${lost.reduce((a, e) => a + Number(e.redispatched), 0)} connections), answered by ${roomy} instead`);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});
