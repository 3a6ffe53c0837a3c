/**
 * The worker-picking strategies of `fdpass serve` (src/serve/strategies.ts),
 * as pure functions: round-robin is fair and skips full workers,
 * least-connections counts open connections as the primary knows them (a
 * worker that stops acknowledging gets no more once it holds as many as the
 * others) and takes turns among equals, hash is sticky per key and moves on only while its worker is
 * full. The caller's loop is simulated as the dispatcher runs it: each pick
 * adds one pending (and open) connection to the worker picked.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { pickWorker, roundRobin, leastConnections, hashPick, STRATEGIES, STALLED_MS, type Strategy, type WorkerLoad } from '../../src/serve/strategies';

const LIMIT = 1024;

function loads(...pending: number[]): WorkerLoad[] {
  return pending.map((p) => ({ pending: p, open: 0 }));
}

/** Runs `n` picks like the dispatcher: the cursor carried over, the worker
 * picked one pending connection more; -1 for a connection that waits. */
function run(strategy: Strategy, ws: WorkerLoad[], n: number, opts: { key?: (i: number) => number; limit?: number; cursor?: number } = {}): number[] {
  let cursor = opts.cursor ?? 0;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const p = pickWorker(strategy, ws, opts.key?.(i) ?? 0, cursor, opts.limit ?? LIMIT);
    cursor = p.cursor;
    out.push(p.index);
    if (p.index >= 0) {
      ws[p.index]!.pending++;
      ws[p.index]!.open++;
    }
  }
  return out;
}

function counts(picks: number[], n: number): number[] {
  const c = new Array<number>(n).fill(0);
  for (const i of picks) if (i >= 0) c[i]!++;
  return c;
}

test('the strategies are the three the CLI offers', () => {
  assert.deepEqual([...STRATEGIES], ['round-robin', 'least-connections', 'hash']);
});

test('no candidates: every strategy says -1 and keeps its cursor', () => {
  for (const s of STRATEGIES) assert.deepEqual(pickWorker(s, [], 7, 3, LIMIT), { index: -1, cursor: 3 }, s);
});

test('round-robin: strict turns, whatever the loads', () => {
  assert.deepEqual(run('round-robin', loads(0, 0, 0), 7), [0, 1, 2, 0, 1, 2, 0]);
  // Unequal pending counts do not change the order (that is least-connections' job).
  assert.deepEqual(run('round-robin', loads(500, 0, 9), 6), [0, 1, 2, 0, 1, 2]);
  // Fair over many picks: every worker gets the same share.
  assert.deepEqual(counts(run('round-robin', loads(0, 0, 0, 0, 0), 1000), 5), [200, 200, 200, 200, 200]);
});

test('round-robin: the cursor carries over between calls, and one left over from a larger set still works', () => {
  let p = roundRobin(loads(0, 0, 0), 0, LIMIT);
  assert.deepEqual(p, { index: 0, cursor: 1 });
  p = roundRobin(loads(0, 0, 0), p.cursor, LIMIT);
  assert.deepEqual(p, { index: 1, cursor: 2 });
  // A worker left since: the cursor (5) is past the end of the 2 candidates.
  assert.deepEqual(roundRobin(loads(0, 0), 5, LIMIT), { index: 1, cursor: 0 });
});

test('round-robin: a full worker is skipped and its turn goes to the next; all full waits', () => {
  const ws = loads(0, LIMIT, 0);
  assert.deepEqual(run('round-robin', ws, 6), [0, 2, 0, 2, 0, 2]);
  assert.equal(ws[1]!.pending, LIMIT, 'the full worker got nothing');
  // A worker fills up while the batch is built (limit 2): its share goes to the others.
  assert.deepEqual(run('round-robin', loads(0, 0), 6, { limit: 2 }), [0, 1, 0, 1, -1, -1]);
  const full = roundRobin(loads(LIMIT, LIMIT), 1, LIMIT);
  assert.deepEqual(full, { index: -1, cursor: 1 }, 'all full: -1, and the cursor is where it was');
});

test('least-connections: counts open connections, unacknowledged ones included', () => {
  // 2 handed and not acknowledged yet are 2 open: they beat 3 acknowledged.
  const ws: WorkerLoad[] = [{ pending: 2, open: 2 }, { pending: 0, open: 3 }, { pending: 0, open: 5 }];
  assert.equal(leastConnections(ws, 0, LIMIT).index, 0, 'open 2 (unacknowledged) beats open 3 and open 5');
  // Open connections alone: the least busy gets the next ones until it catches up.
  const busy: WorkerLoad[] = [{ pending: 0, open: 10 }, { pending: 0, open: 4 }, { pending: 0, open: 7 }];
  const picks = run('least-connections', busy, 9);
  assert.deepEqual(picks.slice(0, 3), [1, 1, 1], 'worker 1 (open 4) first, up to 7');
  assert.deepEqual(busy.map((w) => w.open), [10, 10, 10], 'nine more spread them evenly');
  // A burst before any worker reports: counting what was picked keeps it from all going to one.
  assert.deepEqual(counts(run('least-connections', loads(0, 0, 0), 30), 3), [10, 10, 10]);
});

test('least-connections: a worker that stops acknowledging (busy in a long request) gets no more once it holds as many as the others', () => {
  // Worker 0 is stuck in a request on its one open connection: what is
  // handed to it stays open. Worker 1 answers: it holds 4 connections in
  // progress and closes one as each new one comes, so each batch sees it at
  // open 4. The stuck worker's count grows with each connection it is
  // given, at once, not when it next reports: it gets 3 (4 at a tie), then
  // none while it is busy.
  for (const first of [0, 1]) {
    const ws: WorkerLoad[] = [{ pending: 0, open: 1 }, { pending: 0, open: 4 }];
    let cursor = first;
    const picks: number[] = [];
    for (let i = 0; i < 20; i++) {
      const p = pickWorker('least-connections', ws, 0, cursor, LIMIT);
      cursor = p.cursor;
      picks.push(p.index);
      if (p.index === 0) {
        ws[0]!.pending++;
        ws[0]!.open++;
      }
    }
    const stuck = counts(picks, 2)[0]!;
    assert.ok(stuck >= 3 && stuck <= 4, `the stuck worker got ${stuck}: ${picks.join(' ')}`);
    assert.deepEqual(picks.slice(0, 3), [0, 0, 0]);
    assert.ok(picks.slice(5).every((p) => p === 1), `then none: ${picks.join(' ')}`);
  }
});

test('least-connections: equal workers take turns (ties go to the first from the cursor)', () => {
  const ws: WorkerLoad[] = [{ pending: 0, open: 5 }, { pending: 0, open: 5 }, { pending: 0, open: 5 }];
  assert.equal(leastConnections(ws, 0, LIMIT).index, 0);
  assert.equal(leastConnections(ws, 1, LIMIT).index, 1);
  assert.equal(leastConnections(ws, 2, LIMIT).index, 2);
  assert.deepEqual(leastConnections(ws, 2, LIMIT).cursor, 0, 'the cursor moves by one per pick');
});

test('least-connections: a full worker is skipped even when it has the fewest', () => {
  const ws: WorkerLoad[] = [{ pending: 2, open: 0 }, { pending: 0, open: 50 }];
  assert.equal(leastConnections(ws, 0, 2).index, 1, 'worker 0 is at the limit (2 pending)');
  assert.equal(leastConnections([{ pending: 2, open: 0 }, { pending: 2, open: 0 }], 0, 2).index, -1);
});

test('hash: the same key always goes to the same worker, whatever the cursor', () => {
  const keys = [0x811c9dc5, 12345, 7, 0xffffffff, 42];
  for (const key of keys) {
    const ws = loads(0, 0, 0, 0);
    const first = hashPick(ws, key, 0, LIMIT).index;
    assert.equal(first, key % 4);
    for (let cursor = 0; cursor < 8; cursor++) assert.equal(hashPick(ws, key, cursor, LIMIT).index, first, `key ${key}`);
    assert.deepEqual(run('hash', ws, 50, { key: () => key }), new Array(50).fill(first), 'and it stays there as its load grows');
  }
  assert.equal(hashPick(loads(0, 0), 9, 5, LIMIT).cursor, 5, 'the cursor comes back unchanged');
});

test('hash: different keys spread over the workers', () => {
  const picks = run('hash', loads(0, 0, 0, 0), 400, { key: (i) => i * 2654435761 });
  for (const c of counts(picks, 4)) assert.ok(c > 50, `each worker gets a share: ${counts(picks, 4)}`);
});

test('hash: a full worker\'s keys go to the next one, and come back once it has room', () => {
  const ws = loads(0, 0, 0);
  ws[1]!.pending = 3;
  assert.equal(hashPick(ws, 4, 0, 3).index, 2, 'key 4 belongs to worker 1 (full): the next one takes it');
  ws[2]!.pending = 3;
  assert.equal(hashPick(ws, 4, 0, 3).index, 0, 'and wraps around');
  ws[0]!.pending = 3;
  assert.equal(hashPick(ws, 4, 0, 3).index, -1, 'all full: it waits');
  ws[1]!.pending = 2;
  assert.equal(hashPick(ws, 4, 0, 3).index, 1, 'its own worker again once it has room');
});

test('a worker with its own lower limit (its hand-off window shrank) is full at that limit, for every strategy', () => {
  for (const s of STRATEGIES) {
    const ws: WorkerLoad[] = [{ pending: 0, open: 0, limit: 2 }, { pending: 0, open: 0 }];
    const picks = run(s, ws, 10, { key: () => 0 });
    assert.equal(counts(picks, 2)[0], 2, `${s}: the limited worker got 2, no more`);
    assert.equal(counts(picks, 2)[1], 8, s);
    // At 0 it gets nothing (backing off).
    assert.equal(pickWorker(s, [{ pending: 0, open: 0, limit: 0 }], 0, 0, LIMIT).index, -1, s);
  }
});

test('least-connections: a worker whose oldest hand-off has waited STALLED_MS for its acknowledgement is passed over while another is not stalled', () => {
  // Worker 0 holds fewer connections but has not acknowledged a hand-off
  // for STALLED_MS: it is busy in a long request (its loop is not turning),
  // so the next connections go to worker 1 although it holds more.
  const ws: WorkerLoad[] = [{ pending: 1, open: 2, unackedMs: STALLED_MS }, { pending: 0, open: 6 }];
  assert.deepEqual(run('least-connections', ws, 10), new Array(10).fill(1), 'every one to the worker that is not stalled');
  for (const cursor of [0, 1]) assert.equal(leastConnections([{ pending: 1, open: 2, unackedMs: 3 * STALLED_MS }, { pending: 3, open: 9, unackedMs: STALLED_MS / 4 }], cursor, LIMIT).index, 1,
    `a stalled worker loses even with a single connection of its own (cursor ${cursor})`);
  // Of several that are not stalled, the counts decide as before.
  const three: WorkerLoad[] = [{ pending: 1, open: 2, unackedMs: 2 * STALLED_MS }, { pending: 0, open: 5 }, { pending: 0, open: 3 }];
  assert.deepEqual(run('least-connections', three, 2), [2, 2], 'worker 0 is stalled: of the others, the emptier');
});

test('least-connections: hand-offs younger than STALLED_MS are no sign of a busy worker (a burst being acknowledged)', () => {
  const ws: WorkerLoad[] = [{ pending: 20, open: 21, unackedMs: STALLED_MS / 2 }, { pending: 0, open: 32 }];
  assert.deepEqual(counts(run('least-connections', ws, 10), 2), [10, 0], 'the emptier worker is refilled first');
});

test('least-connections: when every worker is stalled the counts decide, and a stalled worker still gets work when it is the only one with room', () => {
  const all: WorkerLoad[] = [{ pending: 2, open: 8, unackedMs: 4 * STALLED_MS }, { pending: 1, open: 3, unackedMs: STALLED_MS }];
  assert.equal(leastConnections(all, 0, LIMIT).index, 1);
  // The worker that is not stalled is full: the stalled one takes it rather than letting it wait.
  assert.equal(leastConnections([{ pending: 1, open: 2, unackedMs: 2 * STALLED_MS }, { pending: 4, open: 4 }], 0, 4).index, 0);
});

test('least-connections: a worker whose open connections are all unacknowledged (just emptied and adopting a burst, or just started) is not stalled, however long its ACK takes', () => {
  // It cannot be busy in a request on a connection it has not adopted: the counts decide.
  const ws: WorkerLoad[] = [{ pending: 5, open: 5, unackedMs: 4 * STALLED_MS }, { pending: 0, open: 20 }];
  assert.deepEqual(counts(run('least-connections', ws, 10), 2), [10, 0], 'the emptied worker is refilled');
  assert.equal(leastConnections([{ pending: 1, open: 1, unackedMs: 4 * STALLED_MS }, { pending: 0, open: 1 }], 0, LIMIT).index, 0, 'a fresh worker keeps its turn');
});

test('a stalled worker changes nothing for round-robin (strict turns) and hash (sticky)', () => {
  const ws = (): WorkerLoad[] => [{ pending: 1, open: 2, unackedMs: 10 * STALLED_MS }, { pending: 0, open: 0 }, { pending: 0, open: 0 }];
  assert.deepEqual(run('round-robin', ws(), 6), [0, 1, 2, 0, 1, 2]);
  assert.deepEqual(run('hash', ws(), 5, { key: () => 3 }), [0, 0, 0, 0, 0]);
});
