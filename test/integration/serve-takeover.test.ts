/**
 * Listener takeover over `_getsocks` when things go wrong: a PATH that is
 * not listening, and a hostile server (in this test) that sends a wrong
 * count, fewer or more fds than announced, garbage records, or hangs. Each
 * is a clear TakeoverError (one line on the command line), and every fd
 * received by then is closed (this process's fd table is compared). Then
 * `fdpass upgrade` whose new primary fails (its command line no longer
 * works; its workers never become ready) under load: the old primary
 * serves on without a failed request, leaks nothing, and its listeners are
 * its own again (its stop filters and drains them as usual).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { test } from 'node:test';
import { UnixServer } from '../../src/socket/server';
import type { UnixSocket } from '../../src/socket/socket';
import { fetchListeners } from '../../src/serve/getsocks-client';
import { encodeInt, encodeRecords, type SockRecord } from '../../src/serve/getsocks';
import { trackFds, type Scope } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { openFds, expectNoFdLeak } from '../helpers/fds';
import { APPS } from '../helpers/paths';
import { runCli } from '../helpers/process';
import { startServe, runServe } from '../helpers/serve';
import { request } from '../helpers/http';
import { ConnectionLoad } from '../helpers/load';
import { alive } from '../helpers/proc';
import { waitFor } from '../helpers/wait';

const NO_NAMES: SockRecord = { namespace: '', iface: '' };
const records = (n: number) => encodeRecords(Array.from({ length: n }, () => NO_NAMES));

/** A TCP listener of this process, to be sent (its fd is borrowed by each send). */
async function tcpListener(scope: Scope): Promise<net.Server> {
  const srv = net.createServer();
  await new Promise<void>((res) => srv.listen(0, '127.0.0.1', () => res()));
  scope.defer(() => new Promise<void>((res) => srv.close(() => res())));
  return srv;
}

/** A hostile `_getsocks` server: `behave` gets each connection (after its
 * request line); hangUp() closes the connections (the test's own fds) so
 * far; all are closed when the test ends. */
async function hostile(scope: Scope, behave: (c: UnixSocket) => Promise<void>): Promise<{ file: string; hangUp: () => void }> {
  const file = path.join(tmpDir(scope), 'hostile.sock');
  const server = await UnixServer.listen(file, { raw: true });
  const conns = new Set<UnixSocket>();
  server.on('connection', (c: UnixSocket) => {
    conns.add(c);
    void c.receive({ timeout: 5000 }).then((m) => {
      m.close();
      return behave(c);
    }).catch(() => {});
  });
  const hangUp = () => {
    for (const c of conns) c.close();
    conns.clear();
  };
  scope.defer(async () => {
    await server.close();
    hangUp();
  });
  return { file, hangUp };
}

test('takeover: bad peers are clear TakeoverErrors, and every fd received by then is closed', async (t) => {
  const scope = await trackFds(t);
  const srv = await tcpListener(scope);
  const cases: { what: string; reason: string; behave: (c: UnixSocket) => Promise<void> }[] = [
    { what: 'a count of -1', reason: 'bad-count', behave: async (c) => c.send(encodeInt(-1)) },
    { what: 'text instead of a count', reason: 'bad-count', behave: async (c) => c.send('Unknown command, try help\n') },
    { what: 'closes before the count', reason: 'no-listeners', behave: async (c) => c.close() },
    { what: 'hangs before the count', reason: 'timeout', behave: async () => {} },
    {
      what: '3 announced, 2 sent, then closes', reason: 'missing-fds', behave: async (c) => {
        await c.send(encodeInt(3));
        await c.send({ data: records(2), fds: [srv, srv] });
        c.close();
      },
    },
    {
      what: '3 announced, 2 sent, then hangs', reason: 'timeout', behave: async (c) => {
        await c.send(encodeInt(3));
        await c.send({ data: records(2), fds: [srv, srv] });
      },
    },
    {
      what: '1 announced, 2 sent', reason: 'too-many-fds', behave: async (c) => {
        await c.send(encodeInt(1));
        await c.send({ data: records(2), fds: [srv, srv] });
      },
    },
    {
      what: '253 fds in one batch (HAProxy sends 252 at most)', reason: 'too-many-fds', behave: async (c) => {
        await c.send(encodeInt(300));
        await c.send({ data: records(253), fds: Array.from({ length: 253 }, () => srv) });
      },
    },
    {
      what: 'records cut short, then closes', reason: 'bad-records', behave: async (c) => {
        await c.send(encodeInt(2));
        await c.send({ data: Buffer.from([200, 1, 2, 3]), fds: [srv, srv] });
        c.close();
      },
    },
    {
      what: 'bytes left over after the records', reason: 'bad-records', behave: async (c) => {
        await c.send(encodeInt(2));
        await c.send({ data: Buffer.concat([records(2), Buffer.from('junk')]), fds: [srv, srv] });
      },
    },
  ];
  for (const k of cases) {
    const { file, hangUp } = await hostile(scope, k.behave);
    const before = openFds();
    const t0 = Date.now();
    await assert.rejects(fetchListeners(file, { timeout: 400 }), (err: Error & { code?: string; reason?: string }) => {
      assert.equal(err.code, 'FDPASS_ERR_TAKEOVER', `${k.what}: ${err.message}`);
      assert.equal(err.reason, k.reason, `${k.what}: ${err.message}`);
      assert.match(err.message, /^takeover from \S+hostile\.sock: /);
      return true;
    }, k.what);
    assert.ok(Date.now() - t0 < 2000, `${k.what}: settled within the deadline`);
    hangUp();
    await expectNoFdLeak(before);
  }

  // Nothing listening: no socket file, and a stale one.
  const dir = tmpDir(scope);
  await assert.rejects(fetchListeners(path.join(dir, 'none.sock')), { code: 'FDPASS_ERR_TAKEOVER', reason: 'connect', message: /connect ENOENT/ });
  // A socket file whose process closed it (moved aside so that close()
  // leaves it).
  const stale = path.join(dir, 'stale.sock');
  const gone = await UnixServer.listen(stale);
  fs.renameSync(stale, stale + '.aside');
  await gone.close();
  fs.renameSync(stale + '.aside', stale);
  await assert.rejects(fetchListeners(stale), { code: 'FDPASS_ERR_TAKEOVER', reason: 'connect', message: /ECONNREFUSED/ });
});

test('fdpass serve --takeover: a bad peer or a PATH nobody listens on is one line and exit status 1, nothing bound', async (t) => {
  const scope = await trackFds(t);
  const srv = await tcpListener(scope);
  const port = (srv.address() as net.AddressInfo).port;
  const dir = tmpDir(scope);
  const { file } = await hostile(scope, async (c) => {
    await c.send(encodeInt(2));
    await c.send({ data: records(1), fds: [srv] });
  });
  for (const [from, re] of [
    [file, /^fdpass: takeover from \S+: announced 2 listeners and sent 1 fds before closing: FDPASS_ERR_TAKEOVER$|^fdpass: takeover from \S+: no complete answer to _getsocks within 500 ms \(with 1 of 2 fds\): FDPASS_ERR_TAKEOVER$/m],
    [path.join(dir, 'none.sock'), /^fdpass: takeover from \S+none\.sock: connect ENOENT \S+: FDPASS_ERR_TAKEOVER$/m],
  ] as const) {
    const r = await runServe(['--listen', `127.0.0.1:${port}`, '--workers', '1', '--control', path.join(dir, 'control.sock'),
      '--takeover', from, '--takeover-timeout', '500'], { owner: scope });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

/** A copy of a fixture app in `dir`, so that the test can break it. */
function appCopy(dir: string, name: string): string {
  const file = path.join(dir, 'app.js');
  fs.copyFileSync(path.join(APPS, name), file);
  return file;
}

for (const how of ['its command line no longer works (APP removed)', 'its workers never become ready'] as const) {
  test(`fdpass upgrade under load whose new primary fails (${how}): one line, the old primary serves on, 0 failed, no fd leaked`, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const control = path.join(dir, 'control.sock');
    const app = appCopy(dir, 'slow.js');
    const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '1', '--control', control,
      '--ready-timeout', '1500', '--shutdown-timeout', '3000', app], { owner: scope });
    const l = s.listener('http');
    await request(l, { path: '/?ms=1' });
    const tree = await s.idleFds();
    const load = new ConnectionLoad(l, { loops: 4, path: '/?ms=5' });
    scope.defer(() => load.stop());
    await load.waitOk(50);

    if (how.startsWith('its command')) fs.rmSync(app);
    else fs.copyFileSync(path.join(APPS, 'never-ready.js'), app);
    const r = await runCli(['upgrade', '--control', control], { timeout: 30_000 });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^fdpass: .*the new primary \(pid \d+\) exited \(code 1\) before taking over; this one serves on: FDPASS_ERR_UPGRADE$/);
    const failed = await s.waitEvent((e) => e.event === 'upgrade-failed');
    const child = Number(/pid (\d+)/.exec(String(failed.error))![1]);
    await waitFor(() => !alive(child), { timeout: 5000, what: 'the failed new primary gone' });

    const okBefore = load.ok;
    await load.waitOk(okBefore + 50);
    await load.stop();
    assert.deepEqual(load.failures, [], `failed requests: ${[...load.failureKinds()].join(', ')}`);
    const st = await s.status();
    assert.equal(st.primary.pid, s.pid, 'the old primary still serves');
    await s.expectNoFdLeak(tree);
    t.diagnostic(`${load.ok} requests, 0 failed; upgrade: ${lines[0]}`);

    // The failed taker's copies died with it: the listener is this
    // primary's alone again, and its stop treats it so (filter, drain).
    const end = await s.stop();
    assert.equal(end.code, 0, end.stderr);
    // (The failed new primary logged to the same stderr: its own shutdown
    // came first, with the listener shared, as it must.)
    const shutdown = s.events('shutdown').at(-1)!;
    assert.deepEqual(shutdown.shared, []);
  });
}

test('the old primary shrugs off hostile clients of its expose socket and serves on', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const expose = path.join(dir, 'expose.sock');
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '1', '--control', path.join(dir, 'control.sock'),
    '--expose-listeners', expose], { owner: scope });
  const l = s.listener('http');
  await request(l);
  const tree = await s.idleFds();
  assert.equal(fs.statSync(expose).mode & 0o777, 0o600);

  // Junk, silence, and a taker that never acknowledges nor asks to finish.
  const { UnixSocket: Sock } = await import('../../src/socket/socket');
  const junk = await Sock.connect(expose, { raw: true });
  await junk.send('show info\n');
  const answer = await junk.receive({ timeout: 5000 });
  assert.match(answer.text(), /^Unknown command/);
  answer.close();
  junk.close();
  const silent = await Sock.connect(expose, { raw: true });
  scope.defer(() => silent.close());
  const before = openFds();
  const { listeners, link } = await fetchListeners(expose);
  assert.equal(listeners.length, 1);
  const ino = fs.fstatSync(listeners[0]!.fd.fd).ino;
  const listenerIno = [...openFds(s.pid).values()].filter((x) => x === `socket:[${ino}]`);
  assert.equal(listenerIno.length, 1, 'the primary holds the very socket that was handed out');
  for (const x of listeners) x.fd.close();
  link.close();
  await expectNoFdLeak(before);
  await s.waitEvent((e) => e.event === 'listeners-taken');

  await request(l);
  silent.close();
  await s.expectNoFdLeak(tree);
  // Handed out, the listener is shared: the stop only closes this copy.
  const end = await s.stop();
  assert.equal(end.code, 0, end.stderr);
  assert.deepEqual(s.events('shutdown')[0]!.shared, [l.address]);
});
