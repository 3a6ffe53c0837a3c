/**
 * A stop signal while a primary is still starting: during its own slow
 * start, and to the old primary while `fdpass upgrade`'s new primary starts.
 *
 * - Starting: SIGTERM (or SIGINT, SIGUSR1) is a graceful stop, not the
 *   default action that killed the primary mid-start: the workers being
 *   started are stopped, the log ends with 'stopped', exit status 0.
 *   SIGHUP (and SIGUSR2) no longer kill it either: done once it serves.
 * - Upgrading: the operator stops the service, so the upgrade fails and the
 *   new primary is stopped with the old one (handover.ts abandonUpgrade());
 *   before, it finished starting, found the old one gone and served on,
 *   without the control socket the old one still held when it bound.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { APPS } from '../helpers/paths';
import { runCli, childEnv } from '../helpers/process';
import { startServe, ServeProcess, type LogEvent } from '../helpers/serve';
import { request, HttpConnection, type Endpoint } from '../helpers/http';
import { NotifyReceiver } from '../helpers/notify';
import { alive } from '../helpers/proc';
import { sleep, waitFor } from '../helpers/wait';

const GATED = path.join(APPS, 'gated.js');
/** Every worker's createServer() takes this long: a slow start to signal into. */
const START_MS = 1500;
const HAS_SETSID = fs.existsSync('/usr/bin/setsid') || fs.existsSync('/bin/setsid');

const pidsOf = (events: LogEvent[]) => events.map((e) => Number(e.pid));

/** Resolves with the error code of a connection to `port` (nothing listens: ECONNREFUSED). */
function connectError(port: number): Promise<string> {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    c.once('connect', () => {
      c.destroy();
      resolve('connected');
    });
    c.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

for (const sig of ['SIGTERM', 'SIGUSR1'] as const) test(`${sig} while the workers start (under a service manager): a graceful stop (the starting workers stopped, STOPPING=1, 'stopped' logged), exit 0`, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const control = path.join(dir, 'control.sock');
  // With NOTIFY_SOCKET the shutdown's last step (closing it) is really
  // asynchronous: the CLI must wait for the whole shutdown, not only the
  // workers' exit, or 'stopped' is never logged.
  const notify = await NotifyReceiver.bind(path.join(dir, 'notify.sock'), scope);
  const s = new ServeProcess(['--listen', '127.0.0.1:0', '--workers', '2', '--control', control, GATED],
    { owner: scope, env: childEnv({ FDPASS_TEST_START_MS: String(START_MS), NOTIFY_SOCKET: notify.env }) });
  const spawned = await s.waitEvents((e) => e.event === 'worker-spawn', 2, 10_000, 'the workers spawned');
  const t0 = Date.now();
  s.signal(sig);
  const end = await s.waitExit(10_000);
  assert.equal(end.signal, null, `not killed by the signal's default action\n${end.stderr}`);
  assert.equal(end.code, 0, end.stderr);
  // SIGUSR1 too: it no longer waits for the start to finish.
  assert.ok(Date.now() - t0 < START_MS, `stopped without waiting for the start (${Date.now() - t0} ms)`);
  assert.match(end.stderr, new RegExp(`^fdpass: ${sig} while starting: stopped$`, 'm'));
  assert.equal(s.events('stopped').length, 1, end.stderr);
  await notify.waitFor((n) => n.fields.STOPPING === '1', 'STOPPING=1');
  assert.equal(notify.messages.filter((n) => n.fields.READY === '1').length, 0, notify.describe());
  for (const pid of pidsOf(spawned)) await waitFor(() => !alive(pid), { timeout: 3000, what: `worker ${pid} gone` });
  assert.equal(fs.existsSync(control), false, 'no control socket left');
});

test('SIGHUP while the workers start: not the default action; the reload it asks for runs once the primary serves', async (t) => {
  const scope = await trackFds(t);
  const control = path.join(tmpDir(scope), 'control.sock');
  const s = new ServeProcess(['--listen', '127.0.0.1:0', '--workers', '1', '--control', control, GATED],
    { owner: scope, env: childEnv({ FDPASS_TEST_START_MS: String(START_MS) }) });
  await s.waitEvents((e) => e.event === 'worker-spawn', 1, 10_000, 'the worker spawned');
  s.signal('SIGHUP');
  await s.waitUp(10_000);
  await s.waitEvent((e) => e.event === 'reload-done' && e.generation === 2, 10_000, 'the reload, after the start');
  assert.equal((await request(s.listener('http'))).status, 200);
  const end = await s.stop();
  assert.equal(end.code, 0, end.stderr);
});

for (const how of ['SIGTERM to the old primary', 'SIGINT to the process group'] as const) {
  const skip = how !== 'SIGTERM to the old primary' && !HAS_SETSID ? 'setsid(1) (util-linux) is not installed' : false;
  test(`${how} while \`fdpass upgrade\`'s new primary starts: the upgrade fails, the new primary and its workers stop too, nothing serves on`, { skip }, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const control = path.join(dir, 'control.sock');
    const group = how !== 'SIGTERM to the old primary';
    const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--control', control, '--shutdown-timeout', '2000', GATED],
      { owner: scope, env: childEnv({ FDPASS_TEST_START_MS: String(START_MS) }), prefix: group ? ['setsid'] : undefined });
    const l = s.listener('http');
    await request(l);
    const upgrade = runCli(['upgrade', '--control', control], { timeout: 30_000 });
    // The new primary's workers are spawned (the first two are the old one's).
    const spawned = await s.waitEvents((e) => e.event === 'worker-spawn', 4, 10_000, 'the new primary\'s workers spawned');
    const successor = Number(s.events('upgrade')[0]!.pid);
    assert.ok(successor > 0 && alive(successor), 'the new primary runs');
    scope.defer(() => {
      for (const pid of [successor, ...pidsOf(spawned)]) if (alive(pid)) process.kill(pid, 'SIGKILL');
    });
    if (group) process.kill(-s.pid, 'SIGINT');
    else s.signal('SIGTERM');

    const r = await upgrade;
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /the primary is stopping/, r.stderr);
    const end = await s.waitExit(15_000);
    assert.equal(end.code, 0, end.stderr);
    // The old primary waited for it: gone with its workers by then.
    assert.equal(alive(successor), false, `the new primary ${successor} is gone\n${end.stderr}`);
    for (const pid of pidsOf(spawned)) await waitFor(() => !alive(pid), { timeout: 3000, what: `worker ${pid} gone` });
    if (!group) assert.equal(s.events('upgrade-abandoned')[0]?.pid, successor, end.stderr);
    assert.equal(fs.existsSync(control), false, 'no control socket left');
    assert.equal(await connectError(l.port!), 'ECONNREFUSED', 'nothing serves the port');
  });
}

test('SIGTERM while the workers start, the listener inherited (LISTEN_FDS): what waits in its backlog is left there, and the next run answers it (was: taken and reset)', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const control = path.join(dir, 'control.sock');
  // A service manager's fd store: run 1 pushes its listener there (FDSTORE).
  const notify = await NotifyReceiver.bind(path.join(dir, 'notify.sock'), scope);
  const s1 = await startServe(['--listen', '127.0.0.1:0', '--workers', '1', '--control', control, GATED],
    { owner: scope, env: childEnv({ NOTIFY_SOCKET: notify.env, FDSTORE: '2' }) });
  const stored = await notify.waitFor((n) => n.fields.FDSTORE === '1', 'the listener stored');
  const l: Endpoint = s1.listener('http');
  assert.equal((await s1.stop()).code, 0);
  const restart = (startMs: number) => new ServeProcess(['--listen', `127.0.0.1:${l.port}`, '--workers', '2', '--control', control, GATED], {
    owner: scope, fds: [stored.fds[0]!.fd], prefix: ['sh', '-c', 'LISTEN_PID=$$ exec "$0" "$@"'],
    env: childEnv({ NOTIFY_SOCKET: notify.env, FDSTORE: '2', LISTEN_FDS: '1', LISTEN_FDNAMES: 'http', FDPASS_TEST_START_MS: String(startMs) }),
  });
  // Run 2: a slow start, stopped while its workers start, with clients waiting.
  const s2 = restart(START_MS);
  await s2.waitEvents((e) => e.event === 'worker-spawn', 2, 10_000, 'the workers spawned');
  const conns = Array.from({ length: 4 }, () => new HttpConnection(l));
  scope.defer(() => Promise.all(conns.map((c) => c.close())));
  await waitFor(() => conns.every((c) => c.connected), { what: 'every client connected (queued by the kernel)' });
  const replies = conns.map((c) => c.exchange('/', { close: true, timeout: 20_000 }));
  await sleep(100);
  s2.signal('SIGTERM');
  const end = await s2.waitExit(10_000);
  assert.equal(end.code, 0, end.stderr);
  assert.equal(s2.events('shutdown-unserved').length, 0, `nothing taken from the backlog to be closed\n${end.stderr}`);
  // Run 3 answers them.
  const s3 = restart(0);
  await s3.waitUp();
  for (const r of await Promise.all(replies)) assert.equal(r.status, 200);
  assert.equal((await s3.stop()).code, 0);
});
