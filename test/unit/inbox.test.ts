/**
 * The Inbox (src/socket/inbox.ts) on its own, with plain objects as items:
 * the consumer side that UnixSocket and UnixServer share. No sockets.
 */
import * as assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import { Inbox } from '../../src/socket/inbox';

interface Item {
  n: number;
}

function setup() {
  const emitter = new EventEmitter();
  const log: string[] = [];
  const inbox = new Inbox<Item>(emitter, 'item', {
    taken: (it) => log.push(it instanceof Error ? `taken ${it.message}` : `taken ${it.n}`),
    changed: () => log.push('changed'),
    finished: () => log.push('finished'),
  }, { noun: 'item', closed: 'no more items' });
  return { emitter, inbox, log };
}

const tick = () => new Promise((r) => setImmediate(r));

test('waiting calls get items in order; errors reject in their turn; a waiter is served before listeners', async () => {
  const { emitter, inbox, log } = setup();
  const a = inbox.next();
  const b = inbox.next();
  assert.equal(inbox.consumers, 2);
  inbox.push({ n: 1 });
  inbox.push(new Error('bad'));
  inbox.push({ n: 2 });
  const seen: number[] = [];
  emitter.on('item', (it: Item) => seen.push(it.n));
  inbox.pump();
  assert.deepEqual(await a, { n: 1 });
  await assert.rejects(b, /bad/);
  assert.deepEqual(seen, [2]);
  assert.equal(inbox.length, 0);
  assert.deepEqual(log.filter((l) => l.startsWith('taken')), ['taken 1', 'taken bad', 'taken 2']);
});

test('an item pushed with nobody asking is buffered; a listener added later gets it; errors go to "error"', async () => {
  const { emitter, inbox } = setup();
  inbox.push({ n: 1 });
  inbox.push(new Error('late'));
  inbox.pump();
  assert.equal(inbox.length, 2);
  const seen: unknown[] = [];
  emitter.on('error', (e: Error) => seen.push(e.message));
  emitter.on('item', (it: Item) => seen.push(it.n));
  await tick(); // delivery starts a microtask after the listener is added
  assert.deepEqual(seen, [1, 'late']);
});

test('next({ timeout }) rejects with FDPASS_ERR_TIMEOUT and stops waiting: a later item stays buffered', async () => {
  const { inbox, log } = setup();
  await assert.rejects(inbox.next({ timeout: 10 }), { name: 'TimeoutError', code: 'FDPASS_ERR_TIMEOUT', message: 'no item within 10 ms' });
  assert.equal(inbox.consumers, 0);
  assert.ok(log.filter((l) => l === 'changed').length >= 2, 'the owner heard the waiter come and go');
  inbox.push({ n: 7 });
  inbox.pump();
  assert.equal(inbox.length, 1);
  assert.deepEqual(await inbox.next({ timeout: 10 }), { n: 7 });
  assert.throws(() => inbox.next({ timeout: -1 }), RangeError);
  assert.throws(() => inbox.next({ timeout: Infinity }), RangeError);
});

test('next({ signal }) rejects with an AbortError, at once when already aborted', async () => {
  const { inbox } = setup();
  const ac = new AbortController();
  const p = inbox.next({ signal: ac.signal });
  ac.abort();
  await assert.rejects(p, { name: 'AbortError', code: 'ABORT_ERR' });
  await assert.rejects(inbox.next({ signal: ac.signal }), { name: 'AbortError' });
  assert.equal(inbox.consumers, 0);
});

test('an iterator takes items, throws an error item and ends; a new one carries on; both end when the inbox is finished', async () => {
  const { inbox, log } = setup();
  inbox.push({ n: 1 });
  inbox.push(new Error('mid'));
  inbox.push({ n: 2 });
  const first: number[] = [];
  await assert.rejects((async () => {
    for await (const it of inbox.iterate()) first.push(it.n);
  })(), /mid/);
  assert.deepEqual(first, [1]);
  assert.equal(inbox.consumers, 0);

  const second: number[] = [];
  const loop = (async () => {
    for await (const it of inbox.iterate()) second.push(it.n);
  })();
  await tick();
  inbox.push({ n: 3 });
  inbox.end();
  inbox.pump();
  await loop;
  assert.deepEqual(second, [2, 3]);
  assert.equal(log.filter((l) => l === 'finished').length, 1);
});

test('end(): buffered items are still handed out, then calls reject with FDPASS_ERR_SOCKET_CLOSED; finished() runs once', async () => {
  const { inbox, log } = setup();
  inbox.push({ n: 1 });
  inbox.end();
  assert.equal(inbox.finished, false);
  assert.deepEqual(await inbox.next(), { n: 1 });
  await assert.rejects(inbox.next(), { code: 'FDPASS_ERR_SOCKET_CLOSED', message: 'no more items' });
  await assert.rejects(inbox.next(), { code: 'FDPASS_ERR_SOCKET_CLOSED' });
  assert.equal(inbox.finished, true);
  assert.deepEqual(log.filter((l) => l === 'finished'), ['finished']);
});

test('close(): buffered items are disposed of, waiting calls reject, finished() does not run', async () => {
  const { inbox, log } = setup();
  const waiting = inbox.next();
  const disposed: number[] = [];
  inbox.close((it) => disposed.push(it.n));
  await assert.rejects(waiting, { code: 'FDPASS_ERR_SOCKET_CLOSED' });

  const { inbox: other } = setup();
  other.push({ n: 1 });
  other.push(new Error('not an item'));
  other.push({ n: 2 });
  other.close((it) => disposed.push(it.n));
  other.close((it) => disposed.push(it.n)); // twice is fine
  assert.deepEqual(disposed, [1, 2]);
  assert.equal(other.length, 0);
  assert.ok(!log.includes('finished'));
});

test('removing the last listener tells the owner (a microtask later)', async () => {
  const { emitter, inbox, log } = setup();
  const fn = () => {};
  emitter.on('item', fn);
  assert.equal(inbox.consumers, 1);
  await tick();
  log.length = 0;
  emitter.off('item', fn);
  assert.equal(inbox.consumers, 0);
  await tick();
  assert.deepEqual(log, ['changed']);
});

test('an iterator waits again and again (its waiter is reused), serves overlapping next() calls in order, and ends on an error it waited for', async () => {
  const { inbox } = setup();
  const it = inbox.iterate();
  // One wait at a time, as for await does: each gets its own item.
  for (let n = 1; n <= 3; n++) {
    const p = it.next();
    await tick();
    inbox.push({ n });
    inbox.pump();
    assert.deepEqual(await p, { value: { n }, done: false });
  }
  // Overlapping calls: the first reuses the waiter, the others get their own.
  const a = it.next();
  const b = it.next();
  const c = it.next();
  inbox.push({ n: 4 });
  inbox.push({ n: 5 });
  inbox.pump();
  assert.deepEqual(await a, { value: { n: 4 }, done: false });
  assert.deepEqual(await b, { value: { n: 5 }, done: false });
  // The reused waiter is free again while c still waits.
  const d = it.next();
  inbox.push({ n: 6 });
  inbox.push(new Error('late'));
  inbox.pump();
  assert.deepEqual(await c, { value: { n: 6 }, done: false });
  await assert.rejects(d, /late/);
  assert.deepEqual(await it.next(), { value: undefined, done: true });
  assert.equal(inbox.consumers, 0);
});
