/**
 * fdpass serve, the hand-over itself: requests on http, https (TLS done by
 * the worker), IPv6 and Unix path listeners are answered by worker
 * processes, and the sockets show who holds what: an established
 * connection is in a worker only, the listening socket in the primary only
 * (ss -tnpH, cross-checked with /proc/net/tcp and /proc/PID/fd).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { DEV_CERT, DEV_KEY } from '../helpers/paths';
import { startServe, type ServeProcess, type ServeListener } from '../helpers/serve';
import { request, HttpConnection } from '../helpers/http';
import { socketOwnersSs, socketOwnersProc, hasIPv6Loopback } from '../helpers/sockets';

let v6 = false;
before(async () => {
  v6 = await hasIPv6Loopback();
});

/** Asserts who holds the listening socket and, for a held connection, the established one. */
function assertOwners(s: ServeProcess, l: ServeListener, conn: HttpConnection, worker: number): void {
  const listening = { localPort: l.port! };
  const established = { localPort: l.port!, peerPort: conn.localPort! };
  assert.deepEqual(socketOwnersSs(listening), [s.pid], `ss: listening ${l.address} is the primary's only`);
  assert.deepEqual(socketOwnersProc(listening), [s.pid], `/proc: listening ${l.address} is the primary's only`);
  assert.deepEqual(socketOwnersSs(established), [worker], `ss: established ${l.address} <- :${conn.localPort} is worker ${worker}'s only`);
  assert.deepEqual(socketOwnersProc(established), [worker], `/proc: established ${l.address} <- :${conn.localPort} is worker ${worker}'s only`);
}

test('http, https, [::1] and unix listeners: answered by workers; established sockets in a worker, listeners in the primary', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const unixPath = path.join(dir, 'app.sock');
  const args = [
    '--listen', '127.0.0.1:0', '--listen', '127.0.0.1:0,tls',
    '--listen', `unix:${unixPath}`,
    ...(v6 ? ['--listen', '[::1]:0,name=v6'] : []),
    '--cert', DEV_CERT, '--key', DEV_KEY, '--workers', '2', '--control', path.join(dir, 'control.sock'),
  ];
  const s = await startServe(args, { owner: scope });
  const tree = await s.idleFds();
  const status = await s.status();
  const workers = status.workers.map((w) => w.pid!);
  assert.equal(workers.length, 2);
  assert.ok(!workers.includes(s.pid));
  assert.deepEqual(s.childPids().sort(), [...workers].sort(), 'the workers are the primary\'s children');

  await t.test('http: a worker answers, over a connection the primary accepted', async () => {
    const l = s.listener('http');
    const seen = new Set<number>();
    for (let i = 0; i < 4; i++) {
      const r = await request(l, { path: `/h${i}` });
      assert.equal(r.status, 200);
      assert.equal(r.body.primary, s.pid);
      assert.notEqual(r.body.worker, s.pid);
      assert.ok(workers.includes(r.body.worker), `${r.body.worker} is one of ${workers}`);
      assert.equal(r.body.tls, false);
      assert.equal(r.body.listener, `http ${l.address}`);
      assert.match(r.body.via!, /handed over as fd/);
      seen.add(r.body.worker);
    }
    assert.equal(seen.size, 2, 'round-robin used both workers');
  });

  await t.test('https: the worker does the TLS handshake (certificate verified against the dev CA)', async () => {
    const l = s.listener('https');
    assert.equal(l.tls, true);
    for (let i = 0; i < 2; i++) {
      const r = await request(l);
      assert.equal(r.body.tls, true);
      assert.equal(r.body.primary, s.pid);
      assert.ok(workers.includes(r.body.worker));
    }
  });

  await t.test('during an open keep-alive connection, ss and /proc show it in the worker only', async () => {
    for (const name of ['http', 'https']) {
      const l = s.listener(name);
      const conn = await HttpConnection.open(l);
      try {
        const first = await conn.get('/1');
        const second = await conn.get('/2');
        assert.equal(second.body.worker, first.body.worker, 'the same connection stays with its worker');
        assert.equal(second.body.client, first.body.client);
        assertOwners(s, l, conn, first.body.worker);
      } finally {
        await conn.close();
      }
    }
  });

  await t.test('IPv6 [::1]', { skip: v6 ? false : 'no ::1 on this machine' }, async () => {
    const l = s.listener('v6');
    assert.equal(l.host, '::1');
    const r = await request(l);
    assert.equal(r.body.listener, `v6 ${l.address}`);
    assert.match(r.body.client!, /^::1:/);
    assert.ok(workers.includes(r.body.worker));
    const conn = await HttpConnection.open(l);
    try {
      const k = await conn.get();
      assertOwners(s, l, conn, k.body.worker);
    } finally {
      await conn.close();
    }
  });

  await t.test('unix path listener: mode 0600, answered by a worker', async () => {
    const l = s.listener(2);
    assert.equal(l.path, unixPath);
    assert.equal(fs.statSync(unixPath).mode & 0o777, 0o600);
    const r = await request(l);
    assert.equal(r.body.listener, `http ${unixPath}`);
    assert.equal(r.body.primary, s.pid);
    assert.ok(workers.includes(r.body.worker));
  });

  await s.expectNoFdLeak(tree);
  const result = await s.stop();
  assert.equal(result.code, 0, result.stderr);
  assert.ok(!fs.existsSync(unixPath), 'the unix socket file is removed on shutdown');
});
