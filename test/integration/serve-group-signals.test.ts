/**
 * fdpass serve, signals sent to the whole process group, as systemd's
 * default KillMode=control-group, Ctrl-C in a terminal and `timeout` send
 * them: the workers leave SIGTERM, SIGINT and SIGHUP to the primary, which
 * shuts down gracefully (SIGTERM, SIGINT) or reloads (SIGHUP), so every
 * request in flight is answered. A worker whose primary is gone still
 * finishes its requests and exits, signals or not.
 *
 * `fdpass serve` runs under setsid(1) (which execs it: its pid is the
 * primary's), so that it leads a process group of its own, its workers
 * included, as a service or a shell job does.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds, type Scope } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { APPS } from '../helpers/paths';
import { startServe, type ServeProcess, type Status } from '../helpers/serve';
import { attempt, type Attempt } from '../helpers/http';
import { alive } from '../helpers/proc';
import { waitFor } from '../helpers/wait';

const SLOW = path.join(APPS, 'slow.js');
const REQUESTS = 20;
const HANDLER_MS = 1500;
const HAS_SETSID = fs.existsSync('/usr/bin/setsid') || fs.existsSync('/bin/setsid');
const skip = HAS_SETSID ? false : 'setsid(1) (util-linux) is not installed';

/** The process group of `pid` (field 5 of /proc/PID/stat). */
function pgidOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
}

/** Live processes of process group `pgid`. */
function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (pgidOf(Number(name)) === pgid && alive(Number(name))) out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}

/** `fdpass serve SLOW` with 2 workers, leading its own process group. */
async function startGroup(scope: Scope): Promise<{ s: ServeProcess; workers: number[] }> {
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--control', path.join(dir, 'control.sock'), SLOW],
    { owner: scope, prefix: ['setsid'] });
  assert.equal(pgidOf(s.pid), s.pid, 'the primary leads its own process group');
  const workers = (await s.status()).workers.map((w) => w.pid!);
  assert.deepEqual(workers.map(pgidOf), [s.pid, s.pid], 'its workers are in that group');
  return { s, workers };
}

/** REQUESTS requests on new connections, each answered after HANDLER_MS;
 * resolves once every one of them is in a worker's request handler, with
 * (wrapped, so that awaiting this does not wait for them) their outcomes. */
async function inFlight(s: ServeProcess): Promise<{ outcomes: Promise<Attempt[]> }> {
  const l = s.listener('http');
  const outcomes = Promise.all(Array.from({ length: REQUESTS }, (_, i) => attempt(l, `/?ms=${HANDLER_MS}&i=${i}`, 15_000)));
  await s.waitStatus((st) => st.workers.reduce((n, w) => n + w.requests, 0) >= REQUESTS, 5000, `${REQUESTS} requests in the workers' handlers`);
  return { outcomes };
}

function failures(got: Attempt[]): string[] {
  return got.filter((a) => !a.ok).map((a) => `${a.code} (connected ${a.connected}, ${a.bytes} bytes)`);
}

for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  test(`${sig} to the process group: all ${REQUESTS} requests in flight are answered, the primary exits 0, no process is left`, { skip }, async (t) => {
    const scope = await trackFds(t);
    const { s, workers } = await startGroup(scope);
    const requests = await inFlight(s);

    process.kill(-s.pid, sig);
    const result = await s.waitExit(HANDLER_MS + 10_000);
    const got = await requests.outcomes;
    assert.deepEqual(failures(got), [], `every request in flight at ${sig} is answered`);
    assert.equal(got.length, REQUESTS);
    assert.equal(result.signal, null, result.stderr);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, new RegExp(`^fdpass: ${sig}: shutting down$`, 'm'));
    assert.deepEqual(s.events('worker-drained').map((e) => e.pid).sort(), [...workers].sort(), 'both workers drained (not killed)');
    assert.deepEqual(groupMembers(s.pid), [], 'nothing of the group is left');
  });
}

test(`SIGHUP to the process group: a reload; all ${REQUESTS} requests in flight are answered by the old workers`, { skip }, async (t) => {
  const scope = await trackFds(t);
  const { s, workers } = await startGroup(scope);
  const requests = await inFlight(s);

  process.kill(-s.pid, 'SIGHUP');
  await s.waitEvent((e) => e.event === 'reload-done' && e.generation === 2, 10_000, 'reload-done');
  const got = await requests.outcomes;
  assert.deepEqual(failures(got), [], 'every request in flight at SIGHUP is answered');
  assert.deepEqual([...new Set(got.map((a) => a.worker))].sort(), [...workers].sort(), 'by the first generation');
  await waitFor(() => workers.every((pid) => !alive(pid)), { timeout: 5000, what: 'the first generation exited' });
  // The primary learns of an exit a moment after the process is gone.
  const gens = (st: Status) => JSON.stringify(st.workers.map((w) => [w.generation, w.state]));
  await s.waitStatus((st) => gens(st) === '[[2,"ready"],[2,"ready"]]', 5000, 'only the second generation, ready');
  const result = await s.stop();
  assert.equal(result.code, 0, result.stderr);
  assert.deepEqual(groupMembers(s.pid), [], 'nothing of the group is left');
});

test('a worker whose primary is gone finishes its requests and exits, though SIGTERM comes to the group', { skip }, async (t) => {
  const scope = await trackFds(t);
  const { s, workers } = await startGroup(scope);
  const requests = await inFlight(s);

  process.kill(s.pid, 'SIGKILL');
  // (Not s.waitExit(): that waits for the stderr pipe, which the workers hold too.)
  await waitFor(() => !alive(s.pid), { timeout: 5000, what: 'the primary gone' });
  process.kill(-s.pid, 'SIGTERM'); // what systemd does to the rest of a unit whose main process died
  const got = await requests.outcomes;
  assert.deepEqual(failures(got), [], 'the orphaned workers answer what they had');
  await waitFor(() => groupMembers(s.pid).length === 0, { timeout: HANDLER_MS + 5000, what: 'the orphaned workers exited', detail: () => `left: ${groupMembers(s.pid)}` });
  assert.ok(workers.every((pid) => !alive(pid)));
});
