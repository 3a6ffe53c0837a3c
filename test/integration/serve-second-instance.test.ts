/**
 * A second `fdpass serve` whose control socket is in use (the same
 * --control, or both on the default) is refused before it binds a listener
 * or starts a worker: one line, exit 1, its port never bound; the first
 * serve goes on untouched.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { childEnv, runCli } from '../helpers/process';
import { startServe, runServe } from '../helpers/serve';
import { freePort, listenAndClose } from '../helpers/sockets';

test('a second serve with the same control socket is refused before it binds or starts anything', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const control = path.join(dir, 'c.sock');
  const first = await startServe(['--listen', '127.0.0.1:0', '--workers', '1', '--control', control], { owner: scope });

  const port = await freePort();
  const second = await runServe(['--listen', `127.0.0.1:${port}`, '--workers', '2', '--control', control], { timeout: 10_000 });
  assert.equal(second.code, 1, second.stderr);
  assert.equal(second.stderr, `fdpass: control socket ${control} is in use (another fdpass serve?): give this one its own --control PATH: EADDRINUSE\n`);
  assert.deepEqual(second.events, [], 'no listener opened, no worker spawned');
  await listenAndClose(port); // never bound

  // The first is still the one answering on its control socket.
  const status = await runCli(['status', '--control', control, '--json']);
  assert.equal(status.code, 0, status.stderr);
  assert.equal((JSON.parse(status.stdout) as { primary: { pid: number } }).primary.pid, first.pid);
  assert.equal((await first.stop()).code, 0, first.stderr);
});

test('two serves on the default control socket: the second is refused at once', async (t) => {
  const scope = await trackFds(t);
  // A default control directory of the test's own (XDG_RUNTIME_DIR).
  const env = childEnv({ XDG_RUNTIME_DIR: tmpDir(scope) });
  const first = await startServe(['--listen', '127.0.0.1:0', '--workers', '1'], { owner: scope, env });
  const second = await runServe(['--listen', '127.0.0.1:0', '--workers', '1'], { env, timeout: 10_000 });
  assert.equal(second.code, 1, second.stderr);
  assert.match(second.stderr, /^fdpass: control socket \S+\/fdpass\/control\.sock is in use .*: EADDRINUSE\n$/);
  assert.deepEqual(second.events, []);
  assert.equal((await first.stop()).code, 0, first.stderr);
});
