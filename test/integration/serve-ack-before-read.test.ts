/**
 * fdpass serve, the hand-off's acknowledgement comes before the first read:
 * a worker that dies after consuming a request (here: it exits inside the
 * request handler) must not have that connection handed to another worker,
 * which would wait for a request that is gone (a hang until the client gives
 * up). Acknowledged, the primary has closed its copy, so the client sees the
 * connection end at once, and nothing is re-dispatched.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { APPS } from '../helpers/paths';
import { startServe } from '../helpers/serve';
import { attempt, request } from '../helpers/http';

test('a worker dying in the middle of a request it read: the client sees the connection end, nothing is handed again', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--strategy', 'round-robin',
    '--control', path.join(dir, 'control.sock'), path.join(APPS, 'exit-on-request.js')], { owner: scope });
  const l = s.listener('http');
  await Promise.all([request(l), request(l)]);
  const tree = await s.idleFds();

  for (let i = 1; i <= 4; i++) {
    const st = await s.waitStatus((x) => x.workers.length === 2 && x.workers.every((w) => w.state === 'ready') && x.primary.inflight === 0,
      10_000, 'two ready workers, nothing in flight');
    const handed = st.primary.handed;
    // The worker that answers dies in its handler, after reading the request.
    const a = await attempt(l, '/exit?code=3', 8000);
    assert.equal(a.ok, false);
    assert.notEqual(a.code, 'TIMEOUT', `attempt ${i}: the connection was left open (handed to another worker?)`);
    assert.ok(a.end - a.start < 5000, `attempt ${i} took ${a.end - a.start} ms`);
    const pids = st.workers.map((w) => w.pid);
    const exit = await s.waitEvent((e) => e.event === 'worker-exit' && pids.includes(e.pid as number), 10_000, `worker-exit ${i}`);
    assert.equal(exit.redispatched, 0, 'the connection it read was acknowledged: not handed again');
    const after = await s.status();
    assert.equal(after.primary.handed, handed + 1, 'handed once');
    t.diagnostic(`attempt ${i}: ${a.code} after ${a.end - a.start} ms (worker ${exit.pid})`);
  }

  // The respawned workers serve.
  await s.waitStatus((x) => x.workers.length === 2 && x.workers.every((w) => w.state === 'ready'), 10_000, 'two ready workers');
  const replies = await Promise.all([request(l), request(l)]);
  assert.equal(new Set(replies.map((r) => r.body.worker)).size, 2);
  await s.expectNoFdLeak(tree);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});
