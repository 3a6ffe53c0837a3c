/**
 * fdpass serve, reloads that overlap (SIGHUP while a reload is running):
 * they coalesce (one runs, one more is queued, later ones join the queued
 * one), every reload settles, the generation the primary serves always has
 * its workers (ready, or being started), and a reload that fails stops its
 * own workers only: the serving generation stays and is still respawned.
 * The app is test/fixtures/apps/gated.js: its start-up takes a set time,
 * and fails while a marker file exists.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { Channel } from '../../src/channel/channel';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { APPS } from '../helpers/paths';
import { childEnv } from '../helpers/process';
import { startServe, type Status } from '../helpers/serve';
import { request } from '../helpers/http';
import { ConnectionLoad } from '../helpers/load';
import { sleep, waitFor } from '../helpers/wait';

const GATED = path.join(APPS, 'gated.js');
const WORKERS = 2;

/** The serving generation's workers, all ready (and only them). */
function servingReady(st: Status): boolean {
  const mine = st.workers.filter((w) => w.generation === st.primary.generation);
  return mine.length === WORKERS && mine.every((w) => w.state === 'ready') && st.workers.length === WORKERS;
}

test('two SIGHUPs 0.1 s apart whose new workers fail to start, then kill -9 of every worker: the old generation is respawned and serves again within seconds', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const marker = path.join(dir, 'fail');
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', String(WORKERS), '--control', path.join(dir, 'control.sock'), GATED],
    { owner: scope, env: childEnv({ FDPASS_TEST_FAIL_IF: marker, FDPASS_TEST_START_MS: '300' }) });
  const l = s.listener('http');
  await request(l);
  const tree = await s.idleFds();
  const gen1 = [...tree.workers.keys()];

  fs.writeFileSync(marker, ''); // new workers fail, 300 ms into their start
  s.signal('SIGHUP');
  await sleep(100);
  s.signal('SIGHUP');
  // Every new worker has failed and is gone: only generation 1 is left.
  await s.waitEvents((e) => e.event === 'worker-spawn' && e.generation !== 1, 2 * WORKERS, 10_000, 'new workers spawned');
  await waitFor(() => s.childPids().sort().join() === [...gen1].sort().join(), { timeout: 10_000, what: 'only generation 1 left', detail: () => `children ${s.childPids()}` });
  fs.rmSync(marker);

  for (const pid of gen1) process.kill(pid, 'SIGKILL');
  const t0 = Date.now();
  const r1 = await request(l, { timeout: 10_000 });
  const servedAfter = Date.now() - t0;
  assert.ok(!gen1.includes(r1.body.worker), 'answered by a respawned worker');
  assert.ok(servedAfter < 5000, `served again ${servedAfter} ms after every worker was killed`);

  const st = await s.waitStatus(servingReady, 10_000, 'the serving generation ready');
  assert.equal(st.primary.generation, 1, 'the failed reloads left generation 1 serving');
  assert.equal(s.events('reload').length, 2);
  assert.equal(s.events('reload-failed').length, 2, 'both reloads settled (failed)');
  assert.equal(s.events('reload-done').length, 0);
  await s.expectNoFdLeak(tree);
  t.diagnostic(`served again ${servedAfter} ms after kill -9 of every worker; reloads: ${s.events().filter((e) => e.event.startsWith('reload')).map((e) => `${e.event} ${e.generation}`).join(', ')}`);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});

test('10 SIGHUPs 50 ms apart (and reload requests on the control socket) under load: coalesced into at most 2 reloads, all settled, at most 2x the workers at once, no failed request', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const control = path.join(dir, 'control.sock');
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', String(WORKERS), '--control', control, GATED],
    { owner: scope, env: childEnv({ FDPASS_TEST_START_MS: '600' }) });
  const l = s.listener('http');
  await request(l);
  const tree = await s.idleFds();

  let most = 0;
  const sampler = setInterval(() => (most = Math.max(most, s.childPids().length)), 5);
  scope.defer(() => clearInterval(sampler));
  const load = new ConnectionLoad(l, { loops: 8, path: '/?ms=20' });
  scope.defer(() => load.stop());
  await load.waitOk(20);

  const ch = await Channel.connect(control, { type: 'seqpacket', timeout: 5000 });
  scope.defer(() => ch.close());
  const answers: Promise<unknown>[] = [];
  for (let i = 0; i < 10; i++) {
    s.signal('SIGHUP');
    if (i === 2 || i === 7) {
      answers.push(ch.request('reload', {}, { timeout: 20_000 }).then((r) => {
        r.message.close();
        return r.payload;
      }));
    }
    await sleep(50);
  }
  // Both control requests get an answer: the reload that served each.
  assert.deepEqual(await Promise.all(answers), [{}, {}]);
  ch.close(); // the primary's end of it is not part of the baseline
  const st = await s.waitStatus((x) => servingReady(x) && s.childPids().length === WORKERS, 15_000, 'the last generation serving alone');
  await load.waitOk(load.ok + 40);
  await load.stop();
  clearInterval(sampler);

  const started = s.events('reload');
  assert.ok(started.length >= 1 && started.length <= 2, `${started.length} reloads ran for 10 SIGHUPs and 2 requests`);
  assert.equal(s.events('reload-done').length, started.length, 'every reload finished');
  assert.equal(st.primary.generation, started.at(-1)!.generation, 'the last reload serves');
  assert.ok(most <= 2 * WORKERS + 1, `at most ${most} workers at once`);
  assert.deepEqual(load.failures.map((a) => `${a.code} (connected ${a.connected}, ${a.bytes} bytes)`), [], 'no request failed');
  await s.expectNoFdLeak(tree);
  t.diagnostic(`${started.length} reloads; at most ${most} workers at once; ${load.ok} requests answered, none failed`);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});
