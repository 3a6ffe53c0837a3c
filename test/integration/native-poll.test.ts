/**
 * The addon's poll watchers (native/poll.c) after they close: a handle stays
 * safe to use once its watcher is gone (pollClose is a no-op, pollSet says
 * EBADF), whether it was closed from outside, twice, or from inside its own
 * callback, and whatever the garbage collector and the environment's
 * teardown do to handles and watchers in between.
 *
 * Before handles were boxed, a handle pointed straight at the watcher, which
 * uv_close's callback freed: a later call on it read freed memory, and once
 * the allocator gave that memory to a new watcher, closed or re-armed the
 * new one. The "stale handles" tests catch exactly that.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { test } from 'node:test';
import { native, K, type PollHandle } from '../../src/native';
import { EBADF } from '../../src/errno';
import { trackFds, type Scope } from '../helpers/scope';
import { spawnNode, childEnv } from '../helpers/process';

/** A socketpair whose ends the scope closes. */
function pair(scope: Scope): [number, number] {
  const out = new Int32Array(2);
  assert.equal(native.socketpair(K.SOCK_STREAM, out), 0);
  const [a, b] = [out[0]!, out[1]!];
  scope.defer(() => {
    native.close(a);
    native.close(b);
  });
  return [a, b];
}

function open(fd: number, cb: (events: number) => void): PollHandle {
  const h = native.pollOpen(fd, cb);
  // (An external has no toString: never put one in a template.)
  if (typeof h === 'number') assert.fail(`pollOpen returned ${h}`);
  return h;
}

/** Enough loop turns for uv_close callbacks (which free watchers) to run. */
async function turns(n = 2): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

test('pollClose twice, and pollSet/pollRef after pollClose, before and after the watcher is freed', async (t) => {
  const scope = await trackFds(t);
  const [a] = pair(scope);
  let fired = 0;
  const h = open(a, () => fired++);
  assert.equal(native.pollSet(h, 2), 0);
  await until(() => fired > 0, 'the watcher to fire');

  native.pollClose(h);
  native.pollClose(h); // closing, not yet freed
  assert.equal(native.pollSet(h, 2), EBADF);
  assert.equal(native.pollRef(h, true), undefined);
  const firedAtClose = fired;
  await turns(); // uv_close's callback ran: the watcher is freed
  native.pollClose(h);
  assert.equal(native.pollSet(h, 1), EBADF);
  assert.equal(native.pollSet(h, 0), EBADF);
  native.pollRef(h, false);
  native.pollRef(h, true);
  await turns();
  assert.equal(fired, firedAtClose, 'a closed watcher fired');
});

test('stale handles never reach watchers opened after theirs were freed', async (t) => {
  const scope = await trackFds(t);
  const fresh = Array.from({ length: 16 }, () => pair(scope));
  const [x] = pair(scope);
  for (let round = 0; round < 10; round++) {
    // Freed watchers leave memory that the allocator hands to the next ones.
    const stale = Array.from({ length: 8 }, () => open(x, () => {}));
    for (const h of stale) native.pollClose(h);
    await turns();
    const fired = fresh.map(() => 0);
    const handles = fresh.map(([a], i) => open(a, () => fired[i]!++));
    for (const h of stale) {
      native.pollClose(h);
      native.pollRef(h, false);
      assert.equal(native.pollSet(h, 1), EBADF, `round ${round}: pollSet on a stale handle`);
    }
    for (const h of handles) assert.equal(native.pollSet(h, 2), 0, `round ${round}: a live watcher was closed`);
    await until(() => fired.every((n) => n > 0), `round ${round}: every live watcher to fire (${fired})`);
    for (const h of handles) native.pollClose(h);
    await turns();
  }
});

test('a watcher closes itself from its own callback, twice, and another takes its fd', async (t) => {
  const scope = await trackFds(t);
  const [a, b] = pair(scope);
  let calls = 0;
  let inner: number[] = [];
  let next: PollHandle | null = null;
  let nextFired = 0;
  const h: PollHandle = open(a, (ev) => {
    calls++;
    inner = [ev];
    native.pollClose(h);
    native.pollClose(h);
    inner.push(native.pollSet(h, 2));
    native.pollRef(h, true);
    // The fd is free for a new watcher, from the same callback.
    next = open(a, () => nextFired++);
    inner.push(native.pollSet(next, 1));
  });
  assert.equal(native.pollSet(h, 2), 0);
  await until(() => calls > 0, 'the first watcher to fire');
  assert.deepEqual(inner, [2, EBADF, 0]);
  fs.writeSync(b, 'x'); // makes a readable for the new watcher
  await until(() => nextFired > 0, 'the new watcher to fire');
  await turns(4);
  assert.equal(calls, 1, 'the closed watcher fired again');
  native.pollClose(next!);
  native.pollClose(next!);
  assert.equal(native.pollSet(next!, 1), EBADF);
});

test('pollSet/pollRef/pollClose refuse what is not a handle', async (t) => {
  await trackFds(t);
  for (const bad of [{}, 3, null, undefined, 'h']) {
    const v = bad as unknown as PollHandle;
    assert.throws(() => native.pollSet(v, 1), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    assert.throws(() => native.pollRef(v, true), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    assert.throws(() => native.pollClose(v), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  }
});

/**
 * Children run with glibc's malloc checks where the machine has them
 * (MALLOC_PERTURB_ fills freed memory; MALLOC_CHECK_ needs the debug
 * library since glibc 2.34), so that a write into freed memory shows.
 */
function mallocCheckEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { MALLOC_PERTURB_: '165' };
  const lib = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/lib64']
    .map((d) => `${d}/libc_malloc_debug.so.0`).find((f) => fs.existsSync(f));
  if (lib) {
    env.LD_PRELOAD = process.env.LD_PRELOAD ? `${process.env.LD_PRELOAD}:${lib}` : lib;
    env.MALLOC_CHECK_ = '3';
  }
  return childEnv(env);
}

interface CyclesReport {
  rounds: number;
  opened: number;
  fired: number;
  collected: number;
  abandonedFired: number;
  leaked: number[];
}

test('open/close cycles with gc(): watchers closed every way, handles collected, the rest left to teardown', async (t) => {
  const scope = await trackFds(t);
  const child = spawnNode('poll-watchers.js', ['cycles', '200'], { owner: scope, env: mallocCheckEnv(), timeout: 60_000 });
  const r = await child.next<CyclesReport>();
  await child.done();
  assert.equal(r.opened, 200 * 8);
  assert.equal(r.fired, 200 * 4);
  // Collected handles whose watchers were still open, which kept working.
  assert.ok(r.collected > 0, 'no handle was collected');
  assert.equal(r.abandonedFired >= 4, true);
  assert.deepEqual(r.leaked, [], 'the child leaked fds');
});

test('worker threads: teardown closes open watchers, whether their handles are reachable, collected or closed', async (t) => {
  const scope = await trackFds(t);
  const child = spawnNode('poll-watchers.js', ['worker'], { owner: scope, env: mallocCheckEnv(), timeout: 60_000 });
  const r = await child.next<{ cycles: CyclesReport; held: number; leaked: number[] }>();
  await child.done();
  assert.equal(r.cycles.fired, 50 * 4);
  assert.equal(r.held, 8);
  assert.deepEqual(r.cycles.leaked, [], 'the worker leaked fds');
  assert.deepEqual(r.leaked, [], 'the child leaked fds');
});
