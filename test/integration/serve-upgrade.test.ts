/**
 * `fdpass upgrade`, 20 times in a row, under a client loop of new
 * connections over HTTP and TLS: every generation's new primary takes the
 * listeners over from the one before (over `_getsocks`), so no connection
 * is refused, reset or failed; the listeners are the very same sockets in
 * every generation (their inodes); every old primary drains its workers and
 * exits; the last generation holds no fd the first did not.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { openFds, treeFds, treeLeaks } from '../helpers/fds';
import { APPS, DEV_CERT, DEV_KEY } from '../helpers/paths';
import { runCli, childEnv } from '../helpers/process';
import { NotifyReceiver } from '../helpers/notify';
import { startServe, type Status } from '../helpers/serve';
import { request } from '../helpers/http';
import { ConnectionLoad } from '../helpers/load';
import { alive, childrenOf } from '../helpers/proc';
import { waitFor } from '../helpers/wait';

const UPGRADES = 20;
const SLOW = path.join(APPS, 'slow.js');

/** The inode of the TCP socket listening on `port` (/proc/net/tcp). */
function listeningInode(port: number): string {
  for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const c = line.trim().split(/\s+/);
    if (c.length > 9 && c[3] === '0A' && parseInt(c[1]!.split(':')[1]!, 16) === port) return `socket:[${c[9]}]`;
  }
  assert.fail(`nothing listens on port ${port}`);
}

/** The listeners' sockets, as `pid` holds them: each must be in its fd table. */
function heldListeners(pid: number, ports: number[]): string[] {
  const held = new Set(openFds(pid).values());
  return ports.map((port) => {
    const ino = listeningInode(port);
    assert.ok(held.has(ino), `primary ${pid} holds the listener of port ${port} (${ino})`);
    return ino;
  });
}

/** SIGKILL to each of `pids` and its children (left alive by a failed test). */
function killTrees(pids: readonly number[]): void {
  for (const pid of pids) {
    for (const p of [...childrenOf(pid), pid]) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
}

/** Idle: nothing in flight or waiting, no live connection, the workers ready. */
function idle(st: Status): boolean {
  return st.primary.inflight === 0 && st.primary.waiting === 0 && st.workers.length > 0 &&
    st.workers.every((w) => w.state === 'ready' && w.live === 0 && w.unacked === 0);
}

test(`fdpass upgrade ${UPGRADES} times in a row under HTTP and TLS load: 0 refused, 0 reset, 0 failed; the same listening sockets in every generation; no fd leaked`, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const control = path.join(dir, 'control.sock');
  const s = await startServe(['--listen', '127.0.0.1:0', '--listen', '127.0.0.1:0,tls', '--cert', DEV_CERT, '--key', DEV_KEY,
    '--workers', '1', '--control', control, '--shutdown-timeout', '3000', SLOW], { owner: scope });
  const primaries = [s.pid];
  // Every generation is killed (with its workers) if the test fails: the
  // later ones are not this process's children.
  scope.defer(() => killTrees(primaries));
  const http = s.listener('http');
  const https = s.listener('https');
  const ports = [http.port!, https.port!];
  await request(http, { path: '/?ms=1' });
  await request(https, { path: '/?ms=1' });
  const base = await s.idleFds();
  const sockets = heldListeners(s.pid, ports);

  const loads = [http, https].map((e) => new ConnectionLoad(e, { loops: 2, path: '/?ms=10' }));
  scope.defer(() => Promise.all(loads.map((l) => l.stop())));
  await Promise.all(loads.map((l) => l.waitOk(20)));
  const t0 = Date.now();
  for (let i = 1; i <= UPGRADES; i++) {
    const old = primaries.at(-1)!;
    const r = await runCli(['upgrade', '--control', control], { timeout: 30_000 });
    assert.equal(r.code, 0, `upgrade ${i}: ${r.stdout}${r.stderr}`);
    const pid = Number(/^upgraded: new primary pid (\d+)$/m.exec(r.stdout)?.[1]);
    assert.ok(pid > 0 && pid !== old, r.stdout);
    primaries.push(pid);
    // The old primary released the control socket before it answered; the
    // new one binds it a moment later.
    let st: Status | undefined;
    await waitFor(async () => {
      st = await s.status().catch(() => undefined);
      return st?.primary.pid === pid;
    }, { timeout: 5000, interval: 5, what: `upgrade ${i}: the control socket answered by the new primary ${pid}` });
    st = st!;
    assert.equal(st.primary.takeover?.from.pid, old);
    assert.equal(st.primary.takeover?.adopted, 2);
    assert.equal(st.primary.takeover?.told, 'finish request');
    assert.deepEqual(heldListeners(pid, ports), sockets, `upgrade ${i}: the same listening sockets`);
    // Both listeners serve, through the new generation's workers.
    const before = loads.map((l) => l.ok);
    await Promise.all(loads.map((l, j) => l.waitOk(before[j]! + 2)));
  }
  const upgradesMs = Date.now() - t0;
  // Every old primary drained its workers and exited.
  for (const pid of primaries.slice(0, -1)) await waitFor(() => !alive(pid), { timeout: 10_000, what: `old primary ${pid} gone` });
  assert.equal(s.events('stopped').length, UPGRADES, 'each old primary logged its stop');
  assert.equal(s.events('taken-over').length, UPGRADES);
  await Promise.all(loads.map((l) => l.stop()));
  for (const [j, l] of loads.entries()) {
    assert.deepEqual(l.failures, [], `${j ? 'TLS' : 'HTTP'}: ${l.failures.length} of ${l.attempts} failed: ${[...l.failureKinds()].join(', ')}`);
  }

  const last = primaries.at(-1)!;
  const text = await runCli(['status', '--control', control]);
  assert.match(text.stdout, new RegExp(`^took over at \\S+ from pid ${primaries.at(-2)} \\(uid \\d+, \\S+\\): 2 of 2 listeners; told it to finish by finish request$`, 'm'));
  // The last generation, idle, holds nothing the first did not.
  const st = await s.waitStatus(idle, 10_000, 'idle');
  let leaks: string[] = [];
  await waitFor(() => {
    leaks = treeLeaks(base, treeFds(last, st.workers.map((w) => w.pid!)));
    return leaks.length === 0;
  }, { timeout: 5000, interval: 50 }).catch(() => assert.fail(`the last generation leaked fds:\n${leaks.join('\n')}`));
  t.diagnostic(`${UPGRADES} upgrades in ${upgradesMs} ms under load: ${loads.map((l) => l.ok).join(' HTTP + ')} TLS requests, 0 failed; listeners ${sockets.join(', ')} in every generation`);

  process.kill(last, 'SIGTERM');
  // The first generation's exit status: 0 (taken over); the pipes close
  // once the last generation (which inherited them) has exited too.
  const end = await s.waitExit(15_000);
  assert.equal(end.code, 0, end.stderr);
});

test('fdpass upgrade (SIGUSR2, twice) under a service manager: the old primary says MAINPID=<new> before it exits (and no STOPPING=1); the new one says READY=1 with its MAINPID', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const control = path.join(dir, 'control.sock');
  const notify = await NotifyReceiver.bind(path.join(dir, 'notify.sock'), scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '1', '--control', control],
    { owner: scope, env: childEnv({ NOTIFY_SOCKET: notify.env }) });
  const primaries = [s.pid];
  scope.defer(() => killTrees(primaries));
  await notify.waitFor((n) => n.fields.READY === '1' && n.pid === s.pid, 'READY=1 from the first primary');

  // SIGUSR2 does what `fdpass upgrade` does; a second one during the
  // upgrade joins it.
  s.signal('SIGUSR2');
  s.signal('SIGUSR2');
  const done = await s.waitEvent((e) => e.event === 'upgrade-done');
  assert.equal(s.events('upgrade').length, 1, 'one upgrade for two signals');
  const pid = Number(done.pid);
  primaries.push(pid);
  const moved = await notify.waitFor((n) => n.fields.MAINPID === String(pid) && n.pid === s.pid, 'MAINPID=<new> from the old primary');
  const ready = await notify.waitFor((n) => n.fields.READY === '1' && n.pid === pid, 'READY=1 from the new primary');
  assert.equal(ready.fields.MAINPID, String(pid));
  assert.ok(notify.messages.indexOf(moved) < notify.messages.indexOf(ready), 'the manager follows the new primary before it says READY=1');
  await waitFor(() => !alive(s.pid), { timeout: 10_000, what: 'the old primary gone' });
  assert.deepEqual(notify.with('STOPPING').map((n) => n.pid), [], 'the old primary did not say STOPPING=1');
  await request(s.listener('http'));

  process.kill(pid, 'SIGTERM');
  await notify.waitFor((n) => n.fields.STOPPING === '1' && n.pid === pid, 'STOPPING=1 from the new primary');
  const end = await s.waitExit(15_000);
  assert.equal(end.code, 0, end.stderr);
});
