/**
 * fdpass serve under systemd socket activation, with Debian's
 * systemd-socket-activate standing in for systemd: it binds the sockets,
 * waits for the first connection, then execs fdpass with LISTEN_FDS,
 * LISTEN_PID (its own pid, which fdpass inherits by exec) and
 * LISTEN_FDNAMES. `--listen systemd:NAME` takes the named fd.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { ServeProcess, type ServeListener } from '../helpers/serve';
import { request } from '../helpers/http';
import { freePort, socketOwnersSs } from '../helpers/sockets';

const SD_ACTIVATE = '/usr/bin/systemd-socket-activate';
const skip = fs.existsSync(SD_ACTIVATE) ? false : `${SD_ACTIVATE} is not installed (Debian: apt-get install systemd)`;

test('systemd-socket-activate: two named sockets taken with --listen systemd:NAME; requests answered by workers', { skip }, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const [webPort, adminPort] = [await freePort(), await freePort()];
  const s = new ServeProcess(
    ['--listen', 'systemd:web', '--listen', 'systemd:admin', '--workers', '2', '--control', path.join(dir, 'control.sock')],
    { owner: scope, prefix: [SD_ACTIVATE, '-l', `127.0.0.1:${webPort}`, '-l', `127.0.0.1:${adminPort}`, '--fdname=web:admin'] },
  );
  await s.waitOutput(new RegExp(`Listening on 127\\.0\\.0\\.1:${adminPort} as 4`));
  const web: ServeListener = { name: 'web', address: `127.0.0.1:${webPort}`, tls: false, host: '127.0.0.1', port: webPort };
  const admin: ServeListener = { name: 'admin', address: `127.0.0.1:${adminPort}`, tls: false, host: '127.0.0.1', port: adminPort };

  // The first connection starts fdpass; it waits in the backlog meanwhile and is served.
  const first = await request(web);
  await s.waitUp();
  assert.equal(first.body.primary, s.pid, 'fdpass runs as the process systemd-socket-activate started (exec: LISTEN_PID holds)');
  assert.equal(first.body.listener, `web 127.0.0.1:${webPort}`);
  assert.deepEqual(s.listeners.map((l) => `${l.name} ${l.address}`), [`web 127.0.0.1:${webPort}`, `admin 127.0.0.1:${adminPort}`]);

  const tree = await s.idleFds();
  const workers = (await s.status()).workers.map((w) => w.pid!);
  for (const l of [web, admin, web, admin]) {
    const r = await request(l);
    assert.equal(r.body.listener, `${l.name} ${l.address}`, 'the fd names are the listener names');
    assert.ok(workers.includes(r.body.worker) && r.body.worker !== s.pid);
  }
  const st = await s.status();
  assert.deepEqual(st.primary.listeners.map((l) => l.kind), ['systemd', 'systemd']);
  assert.deepEqual(socketOwnersSs({ localPort: webPort }), [s.pid], 'the inherited listener is the primary\'s only (not leaked into workers)');
  for (const pid of workers) {
    const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8');
    assert.ok(!/(^|\0)LISTEN_(FDS|PID|FDNAMES)=/.test(env), 'workers do not see LISTEN_* (they would misread their own fd 3)');
  }
  await s.expectNoFdLeak(tree);
  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});

test('systemd: --listen systemd:NAME with no such fd is a clear start-up error', { skip }, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const port = await freePort();
  const s = new ServeProcess(['--listen', 'systemd:nope', '--workers', '1', '--control', path.join(dir, 'control.sock')],
    { owner: scope, prefix: [SD_ACTIVATE, '-l', `127.0.0.1:${port}`, '--fdname=web'] });
  await s.waitOutput(/Listening on/);
  // Trigger the exec; the connection itself is dropped when fdpass exits.
  const trigger = request({ address: '', tls: false, host: '127.0.0.1', port }).catch((e: Error) => e);
  const r = await s.waitExit();
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /fdpass: --listen systemd:nope: no such fd was passed \(LISTEN_FDS\/LISTEN_FDNAMES\): FDPASS_ERR_NO_SYSTEMD_FDS/);
  assert.ok((await trigger) instanceof Error);
});
