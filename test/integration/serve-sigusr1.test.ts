/**
 * SIGUSR1 and fdpass serve. Node takes SIGUSR1 as "open the inspector" (a
 * debugger port on 127.0.0.1 any local user could reach), and HAProxy's
 * soft stop (`haproxy -sf PID`, used when moving listeners to HAProxy) is
 * SIGUSR1: the primary takes it as a graceful stop, the workers ignore it
 * (the primary decides), and no process opens a debugger.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { startServe } from '../helpers/serve';
import { request } from '../helpers/http';
import { alive } from '../helpers/proc';
import { sleep } from '../helpers/wait';

test('SIGUSR1: a worker ignores it and opens no debugger; the primary stops gracefully (exit 0), opening none either', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '1', '--control', path.join(dir, 'control.sock')], { owner: scope });
  const l = s.listener('http');
  const worker = (await s.status()).workers[0]!.pid!;

  process.kill(worker, 'SIGUSR1');
  await sleep(300);
  assert.ok(alive(worker), 'the worker is still running');
  const res = await request(l);
  assert.equal(res.status, 200);
  assert.equal(res.body.worker, worker, 'and still serving');

  process.kill(s.pid, 'SIGUSR1');
  const result = await s.waitExit(15_000);
  assert.equal(result.signal, null, result.stderr);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stderr, /^fdpass: SIGUSR1: shutting down$/m);
  assert.doesNotMatch(result.stderr, /Debugger listening/, 'no inspector was opened');
});
