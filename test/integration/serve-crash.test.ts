/**
 * fdpass serve, crash safety: the primary keeps its copy of a connection
 * until the worker acknowledges it, so connections handed to a worker that
 * is stopped (SIGSTOP) and then killed (SIGKILL) are not lost: they go to
 * another worker, and the dead one is respawned (at once when killed from
 * outside, with growing delays when it keeps exiting by itself). Once idle
 * again, neither the primary nor the workers (the replacement included)
 * hold an fd more.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { APPS } from '../helpers/paths';
import { startServe, type LogEvent } from '../helpers/serve';
import { request, type Reply } from '../helpers/http';
import { tally } from '../helpers/load';
import { alive, suspend } from '../helpers/proc';
import { waitFor } from '../helpers/wait';

test('a stopped then killed worker loses nothing: its unacknowledged connections are answered elsewhere; it is respawned', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--strategy', 'round-robin', '--control', path.join(dir, 'control.sock')], { owner: scope });
  const l = s.listener('http');
  const tree = await s.idleFds();
  const before = await s.status();
  const [victim, other] = before.workers.map((w) => w.pid!) as [number, number];
  const victimSlot = before.workers.find((w) => w.pid === victim)!.slot;

  suspend(scope, [victim]); // SIGCONT at the end, if still there (it should be gone)

  // 20 new connections, each with a request: round-robin hands about half
  // to the stopped worker, which cannot acknowledge them.
  const N = 20;
  const replies: Promise<Reply>[] = [];
  for (let i = 0; i < N; i++) replies.push(request(l, { path: `/r${i}`, timeout: 15_000 }));
  const settled: (Reply | Error | undefined)[] = new Array(N);
  replies.forEach((p, i) => p.then((r) => (settled[i] = r), (e: Error) => (settled[i] = e)));

  // Wait until the primary has handed all 20 out and the live worker has acknowledged its share.
  const mid = await s.waitStatus((st) => {
    const v = st.workers.find((w) => w.pid === victim);
    const o = st.workers.find((w) => w.pid === other);
    return st.primary.handed === N && !!v && !!o && v.unacked > 0 && o.unacked === 0;
  }, 10_000, 'all 20 handed, the stopped worker holding unacknowledged ones');
  const stuck = mid.workers.find((w) => w.pid === victim)!.unacked;
  assert.ok(stuck >= N / 2 - 1, `the stopped worker holds ${stuck} unacknowledged connections`);
  assert.equal(mid.primary.inflight, stuck);
  const answeredBeforeKill = settled.filter((r) => r && !(r instanceof Error)).length;
  assert.ok(answeredBeforeKill <= N - stuck, 'nothing handed to the stopped worker was answered');

  process.kill(victim, 'SIGKILL');
  const results = await Promise.allSettled(replies);
  const failed = results.filter((r) => r.status === 'rejected');
  assert.deepEqual(failed.map((r) => String((r as PromiseRejectedResult).reason)), [], 'every request is answered');
  const pids = results.map((r) => (r as PromiseFulfilledResult<Reply>).value.body.worker);
  assert.ok(!pids.includes(victim), 'the killed worker answered nothing');

  const exit = await s.waitEvent((e) => e.event === 'worker-exit' && e.pid === victim, 5000, 'worker-exit of the killed worker');
  // Whichever the primary saw first: the child's exit or its channel's EOF.
  assert.match(String(exit.reason), /killed by SIGKILL|channel closed/);
  assert.equal(exit.redispatched, stuck, 'its unacknowledged connections were re-dispatched');
  await waitFor(() => !alive(victim), { timeout: 1000, what: 'the killed worker reaped' });

  // Respawned in the same slot: status shows restarts 1.
  const after = await s.waitStatus((st) => st.workers.some((w) => w.slot === victimSlot && w.state === 'ready' && w.pid !== victim), 10_000, 'respawned worker ready');
  const respawned = after.workers.find((w) => w.slot === victimSlot)!;
  assert.equal(respawned.restarts, 1);
  assert.equal(after.workers.length, 2);
  assert.equal(after.primary.inflight, 0);
  assert.equal(after.primary.handed, N + stuck, 'each re-dispatched connection was handed a second time');
  t.diagnostic(`answered by: ${JSON.stringify(Object.fromEntries(tally(pids)))} (stopped worker held ${stuck})`);

  // The replacement takes new connections.
  const more = await Promise.all([request(l), request(l), request(l), request(l)]);
  assert.ok(more.some((r) => r.body.worker === respawned.pid), 'the replacement serves');
  await s.expectNoFdLeak(tree);

  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});

test('respawn policy: a ready worker killed from outside is replaced at once; one that exits by itself is throttled (100, 200, 400 ms)', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '1', '--control', path.join(dir, 'control.sock'), path.join(APPS, 'exit-on-request.js')], { owner: scope });
  const l = s.listener('http');
  await request(l);
  const tree = await s.idleFds();

  const current = async () => (await s.waitStatus((st) => st.workers.length === 1 && st.workers[0]!.state === 'ready', 10_000, 'one ready worker')).workers[0]!.pid!;
  const crashes: LogEvent[] = [];
  for (let i = 1; i <= 3; i++) {
    const pid = await current();
    await request(l, { path: '/exit?code=3' }).catch(() => {}); // its worker dies answering
    crashes.push(await s.waitEvent((e) => e.event === 'worker-respawn' && e.pid === pid, 10_000, `respawn after crash ${i}`));
  }
  assert.deepEqual(crashes.map((e) => [e.cause, e.code, e.crashes, e.inMs]), [['crashed', 3, 1, 100], ['crashed', 3, 2, 200], ['crashed', 3, 3, 400]]);

  const pid = await current();
  process.kill(pid, 'SIGKILL');
  const killed = await s.waitEvent((e) => e.event === 'worker-respawn' && e.pid === pid, 10_000, 'respawn after kill -9');
  assert.deepEqual([killed.cause, killed.signal, killed.inMs], ['killed', 'SIGKILL', 0]);
  const replacement = await current();
  assert.notEqual(replacement, pid);
  assert.equal((await request(l)).body.worker, replacement);
  await s.expectNoFdLeak(tree);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});
