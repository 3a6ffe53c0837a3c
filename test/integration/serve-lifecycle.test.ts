/**
 * fdpass serve, lifecycle under load: several client loops make requests on
 * new connections without pause (each answered after ~20 ms, so some are
 * always in flight) while the primary reloads (SIGHUP) or shuts down
 * (SIGTERM). No request may fail; after a reload new requests go to the
 * new generation and the old workers exit; after SIGTERM every connection
 * that was established is answered, then connecting is refused, and the
 * primary exits 0. After a reload, once idle, the primary and the new
 * workers hold no fd beyond what the first generation held at the start.
 * Before its listeners close, the primary drops new SYNs (a socket filter),
 * so that close() resets no connection the kernel completed after the last
 * accept: such a client is refused a second later instead.
 */
import * as assert from 'node:assert/strict';
import * as net from 'node:net';
import * as path from 'node:path';
import { test } from 'node:test';
import { native, K } from '../../src/native';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { APPS, DEV_CERT, DEV_KEY } from '../helpers/paths';
import { startServe } from '../helpers/serve';
import { request, HttpConnection } from '../helpers/http';
import { ConnectionLoad, tally } from '../helpers/load';
import { alive } from '../helpers/proc';
import { sleep, waitFor } from '../helpers/wait';

const LOOPS = 8;
const SLOW = path.join(APPS, 'slow.js');

test('SIGHUP under load: no failed request; new requests go to generation 2; the old workers drain and exit', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--control', path.join(dir, 'control.sock'), SLOW], { owner: scope });
  const tree = await s.idleFds();
  const gen1 = (await s.status()).workers.map((w) => w.pid!);
  const load = new ConnectionLoad(s.listener('http'), { loops: LOOPS, path: '/?ms=20', keepAll: true });
  scope.defer(() => load.stop());
  await load.waitOk(40);

  s.signal('SIGHUP');
  const done = await s.waitEvent((e) => e.event === 'reload-done' && e.generation === 2, 10_000, 'reload-done');
  const switched = Date.now();
  const switchedAtPrimary = Date.parse(done.time);
  const gen2 = s.events('worker-ready').filter((e) => e.generation === 2).map((e) => e.pid as number);
  assert.equal(gen2.length, 2);
  assert.ok(gen2.every((p) => !gen1.includes(p)), 'new pids');
  // The old generation drains (each exits once its requests are done).
  const drained = await s.waitEvents((e) => e.event === 'worker-drained' && gen1.includes(e.pid as number), gen1.length, 10_000, 'old workers drained');
  assert.ok(drained.every((e) => e.redispatched === 0));
  // 60 requests that started after the switch (those in flight at it do not count).
  await waitFor(() => load.successes.filter((r) => r.start > switched).length >= 60, { what: '60 requests answered after the reload' });
  await load.stop();

  assert.deepEqual(load.failures.map((a) => `${a.code} (connected ${a.connected}, ${a.bytes} bytes)`), [], 'no request failed during the reload');
  const late = load.successes.filter((r) => r.start > switched);
  assert.ok(late.length >= 60);
  const lateWorkers = tally(late.map((r) => r.worker!));
  assert.deepEqual([...lateWorkers.keys()].filter((p) => !gen2.includes(p)), [], 'requests made after the reload are answered by generation 2');
  assert.equal(lateWorkers.size, 2, 'by both new workers');
  // Until all of generation 2 is ready (reload-done), generation 1 serves.
  const early = load.successes.filter((r) => r.end < switchedAtPrimary);
  assert.deepEqual([...tally(early.map((r) => r.worker)).keys()].sort(), [...gen1].sort(), 'requests answered before reload-done: generation 1 only');
  for (const pid of gen1) await waitFor(() => !alive(pid), { timeout: 1000, what: `old worker ${pid} exited` });
  const st = await s.status();
  assert.equal(st.primary.generation, 2);
  assert.deepEqual(st.workers.map((w) => [w.generation, w.state, w.restarts]), [[2, 'ready', 0], [2, 'ready', 0]]);
  assert.deepEqual(s.childPids().sort(), [...gen2].sort());
  await s.expectNoFdLeak(tree);
  t.diagnostic(`${load.ok} requests, ${late.length} after the switch; by worker: ${JSON.stringify(Object.fromEntries(tally(load.successes.map((r) => r.worker))))}`);

  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});

test('SIGTERM under load: every established connection is answered, then connecting is refused; exit status 0', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--control', path.join(dir, 'control.sock'), SLOW], { owner: scope });
  const load = new ConnectionLoad(s.listener('http'), { loops: LOOPS, path: '/?ms=20', refusedEnds: true, keepAll: true });
  scope.defer(() => load.stop());
  await load.waitOk(40);

  const term = Date.now();
  s.signal('SIGTERM');
  const result = await s.waitExit();
  await load.done;
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.signal, null);
  assert.deepEqual(load.failures.map((a) => `${a.code} (connected ${a.connected}, ${a.bytes} bytes)`), [], 'no request failed during the shutdown');
  assert.equal(load.refused, LOOPS, 'each loop ended on a refused connect');
  const inFlight = load.successes.filter((r) => r.start <= term && r.end > term).length;
  t.diagnostic(`${load.ok} answered, ${inFlight} of them in flight at SIGTERM; stopped event: ${JSON.stringify(s.events('stopped')[0])}`);
  assert.ok(s.events('stopped').length === 1);
});

test('SIGTERM with connections waiting in the backlog: they are accepted, handed out and answered before the workers exit', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '2', '--control', path.join(dir, 'control.sock')], { owner: scope });
  const l = s.listener('http');
  // Stopped, the primary accepts nothing: the kernel completes the handshakes
  // and the requests wait in the listener's backlog.
  s.signal('SIGSTOP');
  scope.defer(() => s.running && s.signal('SIGCONT'));
  const N = 10;
  const replies = Array.from({ length: N }, (_, i) => request(l, { path: `/b${i}` }));
  await sleep(100);
  s.signal('SIGTERM');
  s.signal('SIGCONT');
  const results = await Promise.allSettled(replies);
  assert.deepEqual(results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason)), [],
    `every connection established before the shutdown is answered\nstderr:\n${s.stderr}`);
  const r = await s.waitExit();
  assert.equal(r.code, 0, r.stderr);
  assert.equal(s.events('stopped')[0]?.handed, N);
});

test('SIGTERM with keep-alive connections: idle ones are closed at once, a request in flight is answered (Connection: close); exit well before keepAliveTimeout', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--listen', '127.0.0.1:0,tls', '--cert', DEV_CERT, '--key', DEV_KEY,
    '--workers', '2', '--control', path.join(dir, 'control.sock'), SLOW], { owner: scope });
  const conns: HttpConnection[] = [];
  scope.defer(() => Promise.all(conns.map((c) => c.close())));
  for (const name of ['http', 'https', 'http', 'https']) {
    const c = await HttpConnection.open(s.listener(name));
    conns.push(c);
    await c.get('/?ms=0');
  }
  const busy = conns[0]!;
  const inFlight = busy.get('/?ms=300');
  await sleep(50);
  const term = Date.now();
  s.signal('SIGTERM');
  const reply = await inFlight;
  assert.equal(reply.status, 200);
  assert.equal(reply.headers?.connection, 'close', 'the response in flight closes its connection');
  const closed = await Promise.all(conns.map((c) => c.closedByPeer));
  assert.ok(closed.every(Boolean));
  const r = await s.waitExit();
  const ms = Date.now() - term;
  assert.equal(r.code, 0, r.stderr);
  assert.ok(ms < 2000, `shut down in ${ms} ms (an idle keep-alive connection must not hold it until its keepAliveTimeout, 5 s)`);
  t.diagnostic(`shutdown with 4 keep-alive connections (one busy for 300 ms) took ${ms} ms`);
});

test('the shutdown filter (native.dropSyns): a new SYN is dropped, a queued connection is still accepted and talks, and after close the dropped client is refused, not reset', async (t) => {
  const scope = await trackFds(t);
  const fd = native.socketInet(K.AF_INET);
  assert.ok(fd >= 0);
  let open = true;
  scope.defer(() => open && native.close(fd));
  assert.equal(native.bindInet(fd, K.AF_INET, '127.0.0.1', 0), 0);
  assert.equal(native.listen(fd, 16), 0);
  const port = native.inetName(fd, false, Buffer.alloc(64));
  const connect = () => {
    const c = net.connect(port, '127.0.0.1');
    scope.defer(() => c.destroy());
    const outcome = new Promise<string>((resolve) => {
      c.once('connect', () => resolve('connected'));
      c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    return { c, outcome };
  };
  const queued = connect();
  assert.equal(await queued.outcome, 'connected');

  assert.equal(native.dropSyns(fd), 0);
  const late = connect();
  const early = await Promise.race([late.outcome, sleep(300).then(() => 'pending')]);
  assert.equal(early, 'pending', 'the SYN of a new connection is dropped: its handshake does not complete');

  const got = new Int32Array(4);
  assert.equal(native.accept(fd, got), 1, 'the connection queued before the filter is accepted');
  const server = new net.Socket({ fd: got[0]!, readable: true, writable: true });
  scope.defer(() => server.destroy());
  queued.c.write('ping');
  const data = await new Promise<string>((res) => server.once('data', (d) => res(String(d))));
  assert.equal(data, 'ping', 'the filter lets an established connection talk');
  assert.equal(native.accept(fd, got), -11, 'nothing else queued (EAGAIN)');

  native.close(fd);
  open = false;
  assert.equal(await late.outcome, 'ECONNREFUSED', 'its SYN, sent again, finds the port closed: refused, not reset');
});
