/**
 * `fdpass status` while the primary is at its RLIMIT_NOFILE (EMFILE on
 * every accept): the control socket accepts with the primary's spare fds
 * and answers; the spares are taken back once the control connection
 * closes, so that it can be done again, and nothing leaks once the
 * connections flow again. (The set-up is serve-emfile.test.ts's: both
 * workers stopped, so that the primary keeps every fd it accepts.)
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { openFds } from '../helpers/fds';
import { tmpDir } from '../helpers/files';
import { startServe, type Status } from '../helpers/serve';
import { attempt } from '../helpers/http';
import { hammer } from '../helpers/load';
import { suspend } from '../helpers/proc';
import { runCli } from '../helpers/process';

const LIMIT = 48;
const N = 60;

test('status at EMFILE: the primary at its RLIMIT_NOFILE still answers fdpass status (twice), and serves every held connection afterwards', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--control', path.join(dir, 'control.sock')],
    { owner: scope, prefix: ['prlimit', `--nofile=${LIMIT}:${LIMIT}`, '--'] });
  const l = s.listener('http');
  await hammer(l, 10, 2);
  const tree = await s.idleFds();
  const workers = [...tree.workers.keys()];
  suspend(scope, workers);

  const replies = Array.from({ length: N }, (_, i) => attempt(l, `/s${i}`, 20_000));
  await s.waitEvent((e) => e.event === 'accept-error' && e.error === 'EMFILE', 10_000, 'accept-error EMFILE');
  const held = [...openFds(s.pid).keys()].filter((fd) => fd < LIMIT).length;

  const times: number[] = [];
  for (let i = 0; i < 2; i++) {
    const t0 = Date.now();
    const r = await runCli(['status', '--control', s.control, '--json']);
    times.push(Date.now() - t0);
    assert.equal(r.code, 0, `status #${i + 1} at EMFILE: ${r.stderr}`);
    const st = JSON.parse(r.stdout) as Status;
    assert.equal(st.primary.pid, s.pid);
    assert.ok(st.primary.acceptErrors >= 1, 'it reports the accept errors it is living through');
  }

  for (const pid of workers) process.kill(pid, 'SIGCONT');
  const results = await Promise.all(replies);
  assert.deepEqual(results.filter((a) => !a.ok).map((a) => a.code), [], 'every held connection is answered');
  await s.expectNoFdLeak(tree);
  t.diagnostic(`primary at ${held} of ${LIMIT} fds: fdpass status answered in ${times.join(' and ')} ms`);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});
