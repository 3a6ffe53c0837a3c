/**
 * `npm start` under a process manager: SIGTERM to npm's pid stops the
 * server gracefully (npm exits 0, no fdpass process and no listener left).
 * npm runs the script with `sh -c`, and passes the signal to that shell
 * only: the script execs the server, so the shell is the server.
 */
import * as assert from 'node:assert/strict';
import * as net from 'node:net';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { Child, childEnv } from '../helpers/process';
import { ROOT } from '../helpers/paths';
import { alive, childrenOf } from '../helpers/proc';
import { waitFor } from '../helpers/wait';

const UP = /fdpass: \d+ workers, \S+; control socket .+; pid (\d+)\n/;
const HTTP = /fdpass: http on 127\.0\.0\.1:(\d+)\n/;

test('SIGTERM to `npm start` stops fdpass serve gracefully: exit 0, no process and no listener left', async (t) => {
  const scope = await trackFds(t);
  const control = path.join(tmpDir(scope), 'c.sock');
  // As root, workers as root too (else nobody, who may not read a clone in a 0700 directory).
  const user = process.getuid!() === 0 ? ['--user', 'root'] : [];
  const npm = new Child(['npm', 'start', '--', '--listen', '127.0.0.1:0', '--workers', '2', '--control', control, ...user],
    { owner: scope, timeout: 30_000, env: childEnv(), cwd: ROOT, label: 'npm start' });
  await npm.waitOutput(UP, { timeout: 20_000 });
  const primary = Number(UP.exec(npm.stderr)![1]);
  const port = Number(HTTP.exec(npm.stderr)![1]);
  const workers = childrenOf(primary);
  assert.equal(workers.length, 2, `workers of ${primary}: ${workers.join(' ')}`);
  scope.defer(() => {
    for (const pid of [primary, ...workers]) if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  // npm's script shell exec'd the server: npm's only child is the primary.
  const npmChildren = childrenOf(npm.pid);

  npm.signal('SIGTERM');
  const r = await npm.waitExit(15_000);
  assert.equal(r.code, 0, `npm start exited ${r.code ?? r.signal}\n${r.stderr}`);
  assert.match(r.stderr, /fdpass: SIGTERM: shutting down/);
  await waitFor(() => [primary, ...workers].every((pid) => !alive(pid)), { timeout: 5000, what: 'primary and workers gone' });
  const refused = await new Promise<string>((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); resolve('connected'); });
    s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
  assert.equal(refused, 'ECONNREFUSED', `port ${port} still listening`);
  assert.deepEqual(npmChildren, [primary], 'the script\'s shell is the server (exec)');
});
