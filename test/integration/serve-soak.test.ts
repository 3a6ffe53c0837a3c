/**
 * fdpass serve, a short soak (scripts/soak.ts is the long one: a million
 * connections, 10,000 idle):
 * - 20,000 requests, each on a new connection, 64 at a time, with a reload
 *   (SIGHUP) half-way: none fails; afterwards the primary and the workers
 *   hold no fd beyond what they held at the start;
 * - 1,000 idle connections held by the workers (status counts them live;
 *   the primary holds none of them), then released: fds back to the start.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { openFds, extraFds } from '../helpers/fds';
import { tmpDir } from '../helpers/files';
import { startServe, type ServeProcess } from '../helpers/serve';
import { hammer, ConnectionLoad } from '../helpers/load';
import { rssKiB } from '../helpers/proc';
import { connectIdle } from '../helpers/sockets';
import { sleep } from '../helpers/wait';

const TOTAL = 20_000;
const IDLE = 1_000;

const mib = (kib: number) => `${(kib / 1024).toFixed(0)} MiB`;

function rssOf(s: ServeProcess, workers: number[]): string {
  return `primary ${mib(rssKiB(s.pid))}, workers ${workers.map((p) => mib(rssKiB(p))).join(' ')}`;
}

test(`${TOTAL.toLocaleString('en-US')} new connections with a reload half-way, then ${IDLE.toLocaleString('en-US')} idle ones held and released: no failure, fds back to the start`, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--control', path.join(dir, 'control.sock')], { owner: scope });
  const l = s.listener('http');
  await hammer(l, 20, 4);
  const tree = await s.idleFds();
  const rssStart = rssOf(s, [...tree.workers.keys()]);

  const started = Date.now();
  const load = new ConnectionLoad(l, { loops: 64, total: TOTAL });
  scope.defer(() => load.stop());
  await load.waitOk(TOTAL / 2, 60_000);
  s.signal('SIGHUP');
  await s.waitEvent((e) => e.event === 'reload-done', 20_000, 'reload-done');
  await load.done;
  const ms = Date.now() - started;
  assert.deepEqual(load.failures.map((a) => `${a.code} connected ${a.connected} ${a.bytes} bytes`), [], 'no request failed');
  assert.equal(load.ok, TOTAL);
  const st = await s.waitStatus((x) => x.workers.length === 2 && x.workers.every((w) => w.generation === 2 && w.state === 'ready'), 20_000, 'generation 2 alone');
  const gen2 = st.workers.map((w) => w.pid!);
  assert.ok([...load.byWorker.keys()].some((p) => gen2.includes(p)), 'generation 2 served part of the run');
  const rssEnd = rssOf(s, gen2);
  const afterSoak = await s.expectNoFdLeak(tree);

  // Idle connections: connected, nothing sent (well within headersTimeout).
  const { sockets: idle, errors } = await connectIdle(l.host!, l.port!, IDLE);
  scope.defer(() => idle.forEach((c) => c.destroy()));
  assert.equal(errors, 0, 'every idle connection connected');
  const held = await s.waitStatus((x) => x.workers.reduce((a, w) => a + w.live, 0) === IDLE && x.primary.inflight === 0, 20_000, `${IDLE} live connections`);
  await sleep(50);
  assert.deepEqual(extraFds(afterSoak.primary, openFds(s.pid)), [], 'the primary holds none of the idle connections');
  const workerFds = gen2.map((p) => openFds(p).size - afterSoak.workers.get(p)!.size);
  assert.ok(workerFds.reduce((a, b) => a + b, 0) >= IDLE, `the workers hold them: ${workerFds.join(' + ')} fds more`);
  const rssIdle = rssOf(s, gen2);
  idle.forEach((c) => c.destroy());
  await s.expectNoFdLeak(tree);

  t.diagnostic(`${TOTAL} connections in ${ms} ms (${Math.round(TOTAL / (ms / 1000))}/s), 0 failed, reload half-way; ` +
    `${IDLE} idle held (live ${held.workers.map((w) => w.live).join(' + ')}, worker fds +${workerFds.join(' +')}), released; ` +
    `RSS start: ${rssStart}; after the run: ${rssEnd}; holding the idle ones: ${rssIdle}`);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});
