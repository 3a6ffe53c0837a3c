/**
 * fdpass serve, a worker that closes its channel to the primary (fd 3) and
 * lives on: the primary kills it, and that kill is the primary's own (the
 * worker failed), not a kill from outside. So the crash-loop throttle holds:
 * respawns come after 100, 200, 400 ms..., and from the fifth crash in a row
 * a crash loop is reported. (A kill -9 from outside still gets an instant
 * respawn: serve-crash.test.ts.)
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { APPS } from '../helpers/paths';
import { childEnv } from '../helpers/process';
import { startServe } from '../helpers/serve';
import { request } from '../helpers/http';

test('a worker that closes its channel is killed as a crash: respawns are throttled (100, 200, 400 ms...) and a crash loop is reported', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const marker = path.join(dir, 'close-channel');
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '1', '--control', path.join(dir, 'control.sock'), path.join(APPS, 'closes-channel.js')],
    { owner: scope, env: childEnv({ FDPASS_TEST_CLOSE_IF: marker }) });
  const l = s.listener('http');
  await request(l);
  const tree = await s.idleFds();
  const first = [...tree.workers.keys()][0]!;

  // From now on every new worker closes its channel once ready.
  fs.writeFileSync(marker, '');
  const t0 = Date.now();
  process.kill(first, 'SIGKILL'); // replaced at once (a kill from outside)
  const loop = await s.waitEvent((e) => e.event === 'worker-crash-loop', 20_000, 'a worker-crash-loop line');
  const loopAt = Date.now();
  fs.rmSync(marker); // the next respawn is a healthy worker
  const respawns = s.events('worker-respawn');
  assert.deepEqual([respawns[0]!.pid, respawns[0]!.cause, respawns[0]!.inMs], [first, 'killed', 0], 'the kill from outside: replaced at once');
  const crashes = respawns.slice(1);
  assert.deepEqual(crashes.map((e) => [e.cause, e.signal, e.crashes, e.inMs]),
    [1, 2, 3, 4, 5].map((n) => ['crashed', 'SIGKILL', n, 100 * 2 ** (n - 1)]),
    'each worker that closed its channel was killed by the primary and counted as a crash');
  assert.equal(loop.crashes, 5);
  const exits = s.events('worker-exit').filter((e) => crashes.some((c) => c.pid === e.pid));
  assert.ok(exits.every((e) => e.reason === 'channel closed'), JSON.stringify(exits));

  // Healthy again: the slot is served, and nothing leaked.
  const back = await s.waitStatus((st) => st.workers.length === 1 && st.workers[0]!.state === 'ready' && st.workers[0]!.generation === 1, 10_000, 'a healthy worker ready');
  assert.equal((await request(l)).body.worker, back.workers[0]!.pid);
  await s.expectNoFdLeak(tree);
  t.diagnostic(`${crashes.length} throttled respawns in ${loopAt - t0} ms before the crash-loop line (delays ${crashes.map((e) => e.inMs).join(', ')} ms)`);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});
