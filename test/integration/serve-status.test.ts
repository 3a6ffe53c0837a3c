/**
 * `fdpass status` against a running serve: the text table and --json show
 * per worker its pid, state, connections handed, live and restarts, and the
 * primary's totals. The control socket is mode 0600 and, beyond the file
 * mode, refuses any uid but the primary's (SO_PEERCRED allow-list).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { startServe, type Status } from '../helpers/serve';
import { runCli } from '../helpers/process';
import { request, HttpConnection } from '../helpers/http';

const NOBODY = 65534;
const needsRoot = process.getuid!() === 0 ? {} : { skip: 'needs root to run the client as another user' };

test('fdpass status: text and --json show each worker (pid, state, handed, live, restarts) and the primary\'s totals', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const control = path.join(dir, 'control.sock');
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--control', control], { owner: scope });
  const l = s.listener('http');
  const tree = await s.idleFds();
  for (let i = 0; i < 5; i++) await request(l);
  const held = await HttpConnection.open(l);
  scope.defer(() => held.close());
  const heldBy = (await held.get()).body.worker;
  await s.waitStatus((st) => st.primary.inflight === 0 && st.workers.reduce((a, w) => a + w.live, 0) === 1);

  const json = await runCli(['status', '--control', control, '--json']);
  assert.equal(json.code, 0, json.stderr);
  const st = JSON.parse(json.stdout) as Status;
  assert.equal(st.primary.pid, s.pid);
  assert.equal(st.primary.strategy, 'round-robin');
  assert.equal(st.primary.generation, 1);
  assert.equal(st.primary.accepted, 6);
  assert.equal(st.primary.handed, 6);
  assert.equal(st.primary.inflight, 0);
  assert.equal(st.primary.waiting, 0);
  assert.equal(st.primary.acceptErrors, 0);
  assert.deepEqual(st.primary.listeners.map((x) => x.address), [l.address]);
  assert.equal(st.workers.length, 2);
  assert.deepEqual(st.workers.map((w) => w.handed).sort(), [3, 3]);
  for (const w of st.workers) {
    assert.ok(s.childPids().includes(w.pid!));
    assert.equal(w.state, 'ready');
    assert.equal(w.restarts, 0);
    assert.equal(w.unacked, 0);
    assert.equal(w.live, w.pid === heldBy ? 1 : 0);
  }

  const text = await runCli(['status', '--control', control]);
  assert.equal(text.code, 0, text.stderr);
  const lines = text.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, new RegExp(`^primary ${s.pid}  up \\d+s  strategy round-robin  generation 1$`));
  assert.match(lines[1]!, /^accepted 6  handed 6  in-flight 0  waiting 0  hand-off rate \d+\/s  accept errors 0$/);
  assert.equal(lines[2], `listeners: http ${l.address}`);
  const header = lines.findIndex((x) => x.startsWith('SLOT'));
  assert.deepEqual(lines[header]!.split(/\s+/), ['SLOT', 'PID', 'GEN', 'STATE', 'HANDED', 'UNACKED', 'LIVE', 'REQUESTS', 'RESTARTS']);
  const rows = lines.slice(header + 1).map((x) => x.split(/\s+/));
  assert.deepEqual(rows.map((r) => [r[1], r[3], r[4], r[6], r[8]]),
    st.workers.map((w) => [String(w.pid), 'ready', '3', w.pid === heldBy ? '1' : '0', '0']));

  await held.close();
  await s.expectNoFdLeak(tree);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});

test('control socket: mode 0600; a client of another uid gets EACCES, and past the file mode the uid allow-list refuses it', needsRoot, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope, 0o755); // reachable by nobody: only the socket's own mode stands in the way
  const control = path.join(dir, 'control.sock');
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '1', '--control', control], { owner: scope });
  const tree = await s.idleFds();
  const st = fs.statSync(control);
  assert.ok(st.isSocket());
  assert.equal(st.mode & 0o777, 0o600);
  assert.equal(st.uid, process.getuid!());

  const denied = await runCli(['status', '--control', control], { uid: NOBODY });
  assert.equal(denied.code, 1, denied.stderr);
  assert.match(denied.stderr, new RegExp(`^fdpass: connect ${control}: EACCES$`, 'm'));
  assert.equal(denied.stdout, '');

  // Loosen the file mode by hand: now the kernel lets nobody connect, and
  // the primary's SO_PEERCRED check must refuse the connection.
  fs.chmodSync(control, 0o666);
  const refused = await runCli(['status', '--control', control], { uid: NOBODY, timeout: 10_000 });
  assert.notEqual(refused.code, 0, `uid ${NOBODY} must not get a status: ${refused.stdout}`);
  assert.equal(refused.signal, null, 'refused promptly, not killed by the timeout');
  assert.equal(refused.stdout, '');
  assert.doesNotMatch(refused.stderr, /EACCES/);

  // The owner is still served.
  const mine = await runCli(['status', '--control', control, '--json']);
  assert.equal(mine.code, 0, mine.stderr);
  assert.equal((JSON.parse(mine.stdout) as Status).primary.pid, s.pid);
  t.diagnostic(`nobody with mode 0600: ${denied.stderr.trim()}; with mode 0666: ${refused.stderr.trim()}`);
  await s.expectNoFdLeak(tree); // the refused control connections too
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});
