/**
 * fdpass serve under a service manager, without one: the test owns the
 * NOTIFY_SOCKET (a datagram socket bound to a path, or to an abstract name)
 * and checks every message the primary sends (sd_notify): READY=1 with
 * MAINPID once every worker is ready, STATUS=, RELOADING=1 with
 * MONOTONIC_USEC on SIGHUP and READY=1 when the new generation serves,
 * STOPPING=1 on SIGTERM, WATCHDOG=1 every WATCHDOG_USEC/2 (none when
 * WATCHDOG_PID names another process), all sent by the primary itself
 * (SCM_CREDENTIALS). A notify socket that is missing or refuses costs one
 * log line and nothing else. Workers never see the variables.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir, abstractName } from '../helpers/files';
import { startServe, type ServeProcess } from '../helpers/serve';
import { childEnv } from '../helpers/process';
import { request } from '../helpers/http';
import { NotifyReceiver } from '../helpers/notify';
import { sleep } from '../helpers/wait';

const STATUS_LINE = /^(\d+)\/(\d+) workers ready, \d+ connections, \d+ connections\/s$/;

function workerEnvHasNotify(s: ServeProcess, pids: number[]): string[] {
  const found: string[] = [];
  for (const pid of pids) {
    const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8');
    for (const k of ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID', 'FDSTORE']) {
      if (new RegExp(`(^|\\0)${k}=`).test(env)) found.push(`worker ${pid}: ${k}`);
    }
  }
  return found;
}

test('NOTIFY_SOCKET (a path): READY=1 with MAINPID and STATUS, RELOADING=1 with MONOTONIC_USEC, READY=1, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const notify = await NotifyReceiver.bind(path.join(dir, 'notify.sock'), scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--control', path.join(dir, 'control.sock')], {
    owner: scope, env: childEnv({ NOTIFY_SOCKET: notify.env, WATCHDOG_USEC: '200000' }),
  });

  const ready = await notify.waitFor((n) => n.fields.READY === '1', 'READY=1');
  assert.equal(ready.fields.MAINPID, String(s.pid), 'MAINPID is the primary');
  assert.equal(ready.pid, s.pid, 'sent by the primary (SCM_CREDENTIALS)');
  assert.match(ready.fields.STATUS ?? '', STATUS_LINE);
  assert.equal(STATUS_LINE.exec(ready.fields.STATUS!)![1], '2', 'both workers ready when READY=1 goes');
  assert.ok(s.events('worker-ready').length >= 2, 'READY=1 only after every worker said it was ready');
  assert.equal(notify.messages.indexOf(ready), 0, 'READY=1 is the first message (no FDSTORE without FDSTORE in the environment)');

  // The watchdog: every 100 ms (half of 200 ms).
  const pings = await notify.waitCount(8, 'WATCHDOG', '1', 5000);
  const gaps = pings.slice(1).map((p, i) => Number(p.usec - pings[i]!.usec) / 1000).sort((a, b) => a - b);
  const median = gaps[Math.floor(gaps.length / 2)]!;
  t.diagnostic(`WATCHDOG=1 every ${median.toFixed(1)} ms (median of ${gaps.length} gaps) for WATCHDOG_USEC=200000`);
  assert.ok(median >= 70 && median <= 250, `watchdog pings every ${median} ms, not about 100`);
  assert.ok(pings.every((p) => p.pid === s.pid));

  const tree = await s.idleFds();
  assert.equal((await request(s.listener('http'))).status, 200);
  const workers = (await s.status()).workers.map((w) => w.pid!);
  assert.deepEqual(workerEnvHasNotify(s, workers), [], 'workers do not inherit the notify variables');

  // Reload: RELOADING=1 with the time now, then READY=1 once generation 2 serves.
  const before = process.hrtime.bigint() / 1000n;
  s.signal('SIGHUP');
  const reloading = await notify.waitFor((n) => n.fields.RELOADING === '1', 'RELOADING=1');
  const after = process.hrtime.bigint() / 1000n;
  const mono = BigInt(reloading.fields.MONOTONIC_USEC ?? '0');
  assert.ok(mono >= before && mono <= after, `MONOTONIC_USEC=${mono} is CLOCK_MONOTONIC at the reload (between ${before} and ${after})`);
  await s.waitEvent((e) => e.event === 'reload-done' && e.generation === 2, 10_000, 'reload-done');
  const readyAgain = await notify.waitFor((n) => n.fields.READY === '1' && notify.messages.indexOf(n) > notify.messages.indexOf(reloading), 'READY=1 after the reload');
  assert.match(readyAgain.fields.STATUS ?? '', STATUS_LINE);
  assert.equal(readyAgain.fields.MAINPID, undefined);
  const readies = notify.with('READY', '1');
  assert.equal(readies.length, 2, 'one READY=1 at start, one after the reload');
  await s.waitEvents((e) => e.event === 'worker-drained', 2, 10_000, 'old workers drained');
  await s.expectNoFdLeak(tree);

  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
  const stopping = notify.with('STOPPING', '1');
  assert.equal(stopping.length, 1, notify.describe());
  assert.ok(notify.messages.indexOf(stopping[0]!) > notify.messages.indexOf(readyAgain));
  assert.equal(s.events('notify-failed').length, 0);
  for (const n of notify.messages) assert.equal(n.pid, s.pid, 'every message from the primary');
});

test('NOTIFY_SOCKET (an abstract @name): READY=1 arrives; WATCHDOG_PID of another process turns the watchdog off', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const notify = await NotifyReceiver.bind(abstractName('notify'), scope);
  assert.ok(notify.env.startsWith('@'));
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '1', '--control', path.join(dir, 'control.sock')], {
    owner: scope, env: childEnv({ NOTIFY_SOCKET: notify.env, WATCHDOG_USEC: '100000', WATCHDOG_PID: '1' }),
  });
  const ready = await notify.waitFor((n) => n.fields.READY === '1', 'READY=1');
  assert.equal(ready.fields.MAINPID, String(s.pid));
  assert.match(ready.fields.STATUS ?? '', /^1\/1 workers ready/);
  await sleep(400);
  assert.deepEqual(notify.with('WATCHDOG'), [], 'WATCHDOG_PID=1 is not this process: no pings');
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
  await notify.waitCount(1, 'STOPPING', '1');
});

test('a notify socket that is missing or refuses: one notify-failed line, and the server serves, reloads and stops as usual', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const notAsocket = path.join(dir, 'plain-file');
  fs.writeFileSync(notAsocket, '');
  const cases: [string, string, RegExp][] = [
    ['missing path', path.join(dir, 'no', 'such.sock'), /^ENOENT$/],
    ['a file that is no socket', notAsocket, /^ECONNREFUSED$/],
    ['an abstract name nobody bound', '@' + abstractName('nobody').slice(1), /^ECONNREFUSED$/],
  ];
  for (const [what, socket, code] of cases) {
    const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '1', '--control', path.join(dir, `control-${cases.findIndex((c) => c[1] === socket)}.sock`)], {
      owner: scope, env: childEnv({ NOTIFY_SOCKET: socket, WATCHDOG_USEC: '50000' }),
    });
    const tree = await s.idleFds();
    assert.equal((await request(s.listener('http'))).status, 200, what);
    s.signal('SIGHUP');
    await s.waitEvent((e) => e.event === 'reload-done', 10_000, 'reload-done');
    await sleep(200); // watchdog pings meanwhile, every 25 ms
    assert.equal((await request(s.listener('http'))).status, 200, what);
    const failed = s.events('notify-failed');
    assert.equal(failed.length, 1, `${what}: one line, not one per message: ${JSON.stringify(failed)}`);
    assert.match(String(failed[0]!.error), code, what);
    await s.waitEvents((e) => e.event === 'worker-drained', 1, 10_000, 'old worker drained');
    await s.expectNoFdLeak(tree);
    const r = await s.stop();
    assert.equal(r.code, 0, `${what}: ${r.stderr}`);
    assert.equal(s.events('notify-failed').length, 1, what);
  }
});
