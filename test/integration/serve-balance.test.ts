/**
 * fdpass serve, how connections are spread over workers, and that the
 * primary keeps no fd of them:
 * - round-robin: 10,000 new connections over 4 workers, none gets more than
 *   1/N + 5%; afterwards the primary has exactly the fds it had before;
 * - least-connections: long-lived keep-alive connections opened in bursts
 *   stay balanced, and connections closed on one worker are refilled there;
 * - hash: every connection from one client address lands on one worker.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { openFds, sameFds } from '../helpers/fds';
import { tmpDir } from '../helpers/files';
import { startServe, type ServeProcess } from '../helpers/serve';
import { request, HttpConnection } from '../helpers/http';
import { hammer, tally } from '../helpers/load';
import { waitFor, waitSteady } from '../helpers/wait';

const WORKERS = 4;
const LIMIT = 1 / WORKERS + 0.05;

/**
 * The primary's fds once nothing is in flight and its fd table is steady (the
 * status query's own connection closes asynchronously on its side), or, with
 * `want`, back to `want`. After 2 s, whatever it is: the assertions say what
 * differs.
 */
async function settledFds(s: ServeProcess, want?: Map<number, string>): Promise<Map<number, string>> {
  await s.waitStatus((st) => st.primary.inflight === 0 && st.primary.waiting === 0 && st.workers.every((w) => w.live === 0), 10_000, 'nothing in flight');
  const o = { timeout: 2000, interval: 50, what: 'the primary\'s fd table settled' };
  const settled = want
    ? waitFor(() => {
      const now = openFds(s.pid);
      return sameFds(want, now) && now;
    }, o)
    : waitSteady(() => openFds(s.pid), { ...o, same: sameFds });
  return settled.catch(() => openFds(s.pid));
}

test('round-robin over 4 workers, 10,000 new connections: the busiest gets at most 1/N + 5%; the primary leaks no fd', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', String(WORKERS), '--strategy', 'round-robin', '--control', path.join(dir, 'control.sock')], { owner: scope });
  const l = s.listener('http');
  await hammer(l, 100, 16); // warm-up: whatever the primary opens lazily is open now
  const fdsBefore = await settledFds(s);
  const tree = await s.idleFds();
  const handedBefore = new Map((await s.status()).workers.map((w) => [w.pid!, w.handed]));

  const N = 10_000;
  const started = Date.now();
  const byPid = await hammer(l, N, 48);
  const ms = Date.now() - started;

  const fdsAfter = await settledFds(s, fdsBefore);
  const added = [...fdsAfter].filter(([fd, target]) => fdsBefore.get(fd) !== target);
  assert.deepEqual(added, [], `the primary holds no fd of the ${N} connections (before: ${fdsBefore.size}, after: ${fdsAfter.size})`);
  assert.ok(fdsAfter.size <= fdsBefore.size);

  const st = await s.status();
  const handed = st.workers.map((w) => w.handed - (handedBefore.get(w.pid!) ?? 0));
  assert.equal(handed.reduce((a, b) => a + b, 0), N);
  assert.equal([...byPid.values()].reduce((a, b) => a + b, 0), N);
  assert.equal(byPid.size, WORKERS);
  const shares = handed.map((h) => h / N);
  for (const share of shares) assert.ok(share <= LIMIT, `a worker got ${(share * 100).toFixed(2)}% > ${(LIMIT * 100).toFixed(0)}%`);
  for (const w of st.workers) assert.equal(byPid.get(w.pid!), w.handed - (handedBefore.get(w.pid!) ?? 0), 'responses per worker = connections handed to it');
  assert.equal(st.primary.acceptErrors, 0);
  await s.expectNoFdLeak(tree);
  t.diagnostic(`${N} connections in ${ms} ms (${Math.round(N / (ms / 1000))}/s); shares ${shares.map((x) => (x * 100).toFixed(2) + '%').join(' ')}; primary fds ${fdsBefore.size} -> ${fdsAfter.size}`);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});

test('least-connections: 200 keep-alive connections opened in bursts stay within 1/N + 5% per worker; freed capacity is refilled first', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', String(WORKERS), '--strategy', 'least-connections', '--control', path.join(dir, 'control.sock')], { owner: scope });
  const l = s.listener('http');
  const tree = await s.idleFds();
  const held: { conn: HttpConnection; worker: number }[] = [];
  scope.defer(() => Promise.all(held.map((h) => h.conn.close())));

  const burst = async (n: number) => {
    const opened = await Promise.all(Array.from({ length: n }, async () => {
      const conn = await HttpConnection.open(l);
      held.push({ conn, worker: -1 });
      const r = await conn.get();
      return { conn, worker: r.body.worker };
    }));
    for (const o of opened) held.find((h) => h.conn === o.conn)!.worker = o.worker;
  };
  const liveBy = () => tally(held.filter((h) => !h.conn.socket.destroyed).map((h) => h.worker));
  const assertBalanced = async (total: number, what: string) => {
    const mine = liveBy();
    const st = await s.waitStatus((x) => x.workers.reduce((a, w) => a + w.live, 0) === total, 5000, `${total} live connections`);
    for (const w of st.workers) {
      assert.equal(w.live, mine.get(w.pid!) ?? 0, `${what}: status live of ${w.pid} = connections it answered on`);
      assert.ok(w.live <= total * LIMIT, `${what}: worker ${w.pid} holds ${w.live} of ${total} (> ${(LIMIT * 100).toFixed(0)}%)`);
    }
    return st.workers.map((w) => w.live);
  };

  for (let i = 0; i < 10; i++) await burst(20);
  const first = await assertBalanced(200, '200 in bursts of 20');

  // Close every connection of one worker: it is now the least loaded, and
  // the next burst goes there (round-robin would spread it evenly).
  const victim = held[0]!.worker;
  const closing = held.filter((h) => h.worker === victim);
  await Promise.all(closing.map((h) => h.conn.close()));
  held.splice(0, held.length, ...held.filter((h) => h.worker !== victim));
  await s.waitStatus((x) => x.workers.find((w) => w.pid === victim)!.live === 0, 5000, `worker ${victim} reports 0 live`);
  const before = held.length;
  await burst(closing.length);
  const refill = tally(held.slice(before).map((h) => h.worker));
  assert.ok((refill.get(victim) ?? 0) >= closing.length * 0.8,
    `the emptied worker took ${refill.get(victim) ?? 0} of the ${closing.length} new connections: ${JSON.stringify(Object.fromEntries(refill))}`);
  const second = await assertBalanced(200, 'after refill');
  t.diagnostic(`live per worker after 10 bursts: ${first.join(' ')}; closed ${closing.length} on one worker, it took ${refill.get(victim)} of the next ${closing.length}; then ${second.join(' ')}`);
  await Promise.all(held.map((h) => h.conn.close()));
  await s.expectNoFdLeak(tree);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});

test('hash: all connections from one client address land on the same worker', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', String(WORKERS), '--strategy', 'hash', '--control', path.join(dir, 'control.sock')], { owner: scope });
  const l = s.listener('http');
  const tree = await s.idleFds();
  const workerOf = new Map<string, number>();
  for (let round = 0; round < 5; round++) {
    await Promise.all(Array.from({ length: 12 }, async (_, i) => {
      const addr = `127.0.0.${i + 2}`;
      const r = await request(l, { localAddress: addr });
      assert.match(r.body.client!, new RegExp(`^${addr.replace(/\./g, '\\.')}:`));
      const w = workerOf.get(addr);
      if (w === undefined) workerOf.set(addr, r.body.worker);
      else assert.equal(r.body.worker, w, `${addr}: connection ${round + 1} went to ${r.body.worker}, earlier ones to ${w}`);
    }));
  }
  const used = new Set(workerOf.values());
  assert.ok(used.size >= 2, `12 client addresses over ${used.size} worker(s): the hash spreads them`);
  t.diagnostic(`client address -> worker: ${[...workerOf].map(([a, w]) => `${a.split('.')[3]}:${w}`).join(' ')} (${used.size} workers used)`);
  await s.expectNoFdLeak(tree);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});
