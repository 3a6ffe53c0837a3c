/**
 * fdpass serve, least-connections around a worker busy in a long request:
 * a worker whose loop is blocked acknowledges no hand-off, and once one has
 * waited STALLED_MS (src/serve/strategies.ts) the primary gives it nothing
 * more while another worker is free, even when it holds the fewest
 * connections. Counting connections alone would give it every new one
 * until its count passes the others' (here: four), each waiting out the
 * block.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { startServe } from '../helpers/serve';
import { HttpConnection } from '../helpers/http';
import { APPS } from '../helpers/paths';
import { tally } from '../helpers/load';
import { sleep } from '../helpers/wait';

const BLOCK_MS = 1500;

test('least-connections: a worker blocked in a long request gets at most one new connection, though it holds the fewest', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--strategy', 'least-connections',
    '--control', path.join(dir, 'control.sock'), path.join(APPS, 'blocking.js')], { owner: scope });
  const l = s.listener('http');
  const tree = await s.idleFds();
  const held: { conn: HttpConnection; worker: number }[] = [];
  scope.defer(() => Promise.all(held.map((h) => h.conn.close())));
  const open = async () => {
    const conn = await HttpConnection.open(l);
    const r = await conn.get();
    held.push({ conn, worker: r.body.worker as number });
  };
  // Twelve keep-alive connections, one after the other: spread 6 and 6.
  for (let i = 0; i < 12; i++) await open();
  const st0 = await s.waitStatus((x) => x.workers.reduce((a, w) => a + w.live, 0) === 12, 5000, '12 live connections');
  const [a, b] = st0.workers.map((w) => w.pid!) as [number, number];
  // Worker a keeps one connection, b all of its own: a is the least loaded (1 against 6).
  const ofA = held.filter((h) => h.worker === a);
  assert.ok(ofA.length >= 2, `worker a holds ${ofA.length}: ${JSON.stringify(Object.fromEntries(tally(held.map((h) => h.worker))))}, status ${JSON.stringify(st0.workers.map((w) => [w.pid, w.live]))}`);
  await Promise.all(ofA.slice(1).map((h) => h.conn.close()));
  await s.waitStatus((x) => x.workers.find((w) => w.pid === a)!.live === 1, 5000, 'worker a reports 1 live');
  // Block worker a's loop on the connection it kept.
  const blocked = ofA[0]!.conn.get(`/block?ms=${BLOCK_MS}`);
  await sleep(200);
  // Four new connections, one at a time, while a is blocked: its first is
  // not acknowledged; from STALLED_MS on it is passed over.
  const started = Date.now();
  const replies: Promise<number>[] = [];
  for (let i = 0; i < 4; i++) {
    const conn = await HttpConnection.open(l);
    held.push({ conn, worker: -1 });
    replies.push(conn.get().then((r) => r.body.worker as number));
    await sleep(50);
  }
  const within = Date.now() - started;
  const got = tally(await Promise.all(replies));
  assert.equal((await blocked).body.worker, a);
  assert.ok(within < BLOCK_MS - 200, `the four connections were opened while worker a was blocked (${within} ms)`);
  assert.ok((got.get(a) ?? 0) <= 1, `the blocked worker got ${got.get(a) ?? 0} of the 4 new connections: ${JSON.stringify(Object.fromEntries(got))}`);
  assert.equal((got.get(a) ?? 0) + (got.get(b) ?? 0), 4);
  t.diagnostic(`new connections while worker a was blocked: a ${got.get(a) ?? 0}, b ${got.get(b) ?? 0}`);
  await Promise.all(held.map((h) => h.conn.close()));
  await s.expectNoFdLeak(tree);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});
