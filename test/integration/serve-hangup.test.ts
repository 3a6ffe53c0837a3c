/**
 * `fdpass serve` in a terminal that hangs up (the window closed, the ssh
 * session dropped): the kernel sends the primary, the session leader,
 * SIGHUP (a reload, as documented), and from then on every write to its
 * stdout and stderr, which the workers share, fails with EIO. Before
 * src/serve/lost-output.ts the first log line after the hang-up was an
 * uncaught 'error' event: the primary died (SIGABRT) in the middle of that
 * reload, its workers with it, and its control socket stayed behind. Now it
 * serves on, reloaded, without a log, and still stops cleanly.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { FIXTURES } from '../helpers/paths';
import { runCli } from '../helpers/process';
import { startServe, type Status } from '../helpers/serve';
import { request } from '../helpers/http';
import { alive } from '../helpers/proc';
import { waitFor } from '../helpers/wait';

const PYTHON = '/usr/bin/python3';
const PTY_RUN = path.join(FIXTURES, 'py', 'pty-run.py');
const skip = fs.existsSync(PYTHON) ? false : `needs ${PYTHON} (the python3 package) to run a terminal`;

test('a hung-up terminal: fdpass serve reloads on the SIGHUP and serves on without its log; SIGTERM then stops it cleanly', { skip }, async (t) => {
  const scope = await trackFds(t);
  const control = path.join(tmpDir(scope), 'control.sock');
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--control', control, '--shutdown-timeout', '1000'],
    { owner: scope, prefix: [PYTHON, PTY_RUN] });
  const before = await s.status();
  const primary = before.primary.pid;
  const pids = () => [primary, ...before.workers.map((w) => w.pid!)];
  scope.defer(() => {
    for (const pid of pids()) if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  await request(s.listener('http'));

  s.signal('SIGUSR1'); // the terminal hangs up
  await waitFor(() => s.stderr.includes('[pty hung up]'), { timeout: 5000, what: 'the hang-up' });
  // The SIGHUP's reload: a new generation serves, in the same primary.
  let st: Status | undefined;
  await waitFor(async () => {
    st = await s.status().catch(() => undefined);
    return st !== undefined && st.primary.generation === 2 && st.workers.length === 2 && st.workers.every((w) => w.generation === 2 && w.state === 'ready');
  }, { timeout: 10_000, interval: 50, what: 'the reloaded generation serving' });
  assert.equal(st!.primary.pid, primary, 'the same primary');
  // Its log and its workers' writes now fail (EIO): they serve on.
  for (let i = 0; i < 4; i++) assert.equal((await request(s.listener('http'))).status, 200);
  const text = await runCli(['status', '--control', control]);
  assert.equal(text.code, 0, text.stderr);

  process.kill(primary, 'SIGTERM');
  const end = await s.waitExit(15_000);
  const exit = /\[exit (-?\d+)\]/.exec(end.stderr)?.[1];
  // Node 20 (end of life) itself crashes at exit once its terminal has hung
  // up, after everything is done: its ResetStdio() asserts that restoring
  // the terminal's mode cannot fail with EIO (SIGABRT), or a bare
  // `process.exit(0)` ends in SIGSEGV. Node 22 and later exit 0.
  const node20 = process.versions.node.startsWith('20.');
  assert.ok(exit === '0' || (node20 && (exit === '-6' || exit === '-11')), `the primary's exit: ${exit}\n${end.stderr.slice(-2000)}`);
  assert.equal(fs.existsSync(control), false, 'the control socket is removed');
  for (const w of st!.workers) await waitFor(() => !alive(w.pid!), { timeout: 3000, what: `worker ${w.pid} gone` });
});
