/**
 * fdpass serve under worker crashes: kill -9 of a random worker every
 * second while client loops make requests, each on a new connection, some
 * answered at once and some after up to 20 ms. The primary keeps its copy of
 * every connection until a worker acknowledges it, so a connection that a
 * killed worker had not taken is answered by another worker: no client may
 * see it fail. A request inside a killed worker (it had taken the
 * connection: the journal of test/fixtures/apps/journal.js, written before
 * the acknowledgement, has that worker, the client's port and a time within
 * the request) dies with the process, as in any server: counted apart.
 * scripts/chaos.ts is the 60-second version.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { APPS } from '../helpers/paths';
import { startServe } from '../helpers/serve';
import { hammer, ConnectionLoad } from '../helpers/load';
import { killWorkers, explainFailures, readJournal } from '../helpers/crashes';

const KILLS = 5;
const LOOPS = 8;

test(`kill -9 of a random worker every second (${KILLS} times) under load: nothing fails but requests inside a killed worker; each is replaced at once; nothing leaked`, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const journal = path.join(dir, 'journal');
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--control', path.join(dir, 'control.sock'), path.join(APPS, 'journal.js')],
    { owner: scope, env: { ...process.env, FDPASS_JOURNAL: journal } });
  const l = s.listener('http');
  await hammer(l, 10, 2);
  const tree = await s.idleFds();

  const load = new ConnectionLoad(l, { loops: LOOPS, path: () => `/?ms=${Math.floor(Math.random() * 21)}` });
  scope.defer(() => load.stop());
  await load.waitOk(50);
  const kills = await killWorkers(s, KILLS, 1000);
  await load.waitOk(load.ok + 50); // served again after the last kill
  await load.stop();

  assert.equal(kills.length, KILLS);
  const killed = new Set(kills.map((k) => k.pid));
  const { inside, lost } = explainFailures(load.failures, readJournal(journal), killed);
  assert.deepEqual(lost.map((a) => `${a.code} port ${a.localPort} connected ${a.connected}`), [],
    'no request fails unless it was inside a worker that was killed');
  const respawns = s.events('worker-respawn').filter((e) => killed.has(e.pid as number));
  assert.deepEqual(respawns.map((e) => [e.cause, e.inMs]), kills.map(() => ['killed', 0]), 'each killed worker is replaced at once');
  const exits = s.events('worker-exit').filter((e) => killed.has(e.pid as number));
  const redispatched = exits.reduce((a, e) => a + Number(e.redispatched), 0);
  const st = await s.waitStatus((x) => x.workers.length === 2 && x.workers.every((w) => w.state === 'ready'), 10_000, 'two ready workers');
  assert.ok(st.workers.every((w) => !killed.has(w.pid!)));
  await s.expectNoFdLeak(tree);
  t.diagnostic(`${kills.length} kills in ${KILLS} s; ${load.ok} answered, ${load.failures.length} failed: ${inside.length} inside a killed worker, ` +
    `${lost.length} lost; ${redispatched} connections the killed workers had not acknowledged were handed to another worker`);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});
