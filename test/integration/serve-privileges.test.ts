/**
 * Privilege separation of fdpass serve, as root on loopback: the primary
 * binds 127.0.0.1:80 and :8443 (another free port, said in the output, when
 * one is taken here) and keeps root; its workers run as nobody (uid 65534:
 * the default of a root primary, said in a log line; or --user), with
 * nobody's groups (initgroups) and no_new_privs, checked in
 * /proc/PID/status. They serve http and https with a key file of mode
 * 0600 owned by root, in a 0700 directory, that they cannot read
 * themselves: the primary reads it and hands it over, and a reload reads
 * it again. The APP (test/fixtures/apps/privileges.js) finds that
 * process.setuid(0) fails (EPERM), that it cannot signal the primary, and
 * that the control socket refuses it (its file mode; and the uid allow-list
 * once the file is opened up). Workers hold no listener fd (/proc and ss).
 * Bad input (an unknown user or group, --user from a non-root primary) is
 * one line, and nothing starts.
 *
 * Children of uid 65534 must read the package: everything runs from a
 * world-readable copy of it (readable-copy.ts).
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { startServe, runServe } from '../helpers/serve';
import { childEnv } from '../helpers/process';
import { request } from '../helpers/http';
import { listenAndClose, freePort, socketOwnersSs, socketOwnersProc } from '../helpers/sockets';
import { readableCopy } from '../helpers/readable-copy';
import { DEV_KEY } from '../helpers/paths';

const root = process.getuid!() === 0;
const skip = root ? false : `needs root (workers switch to uid 65534); running as uid ${process.getuid!()}`;
const NOBODY = 65534;

interface Answer {
  worker: number;
  primary: number;
  tls: boolean;
  uid: number;
  euid: number;
  gid: number;
  groups: number[];
  setuid: string;
  signal: string;
  readKey: string;
  control: string;
}

/** `preferred` if it can be bound on 127.0.0.1 now, else another port (below 1024 if `privileged`). */
async function portFor(preferred: number, privileged: boolean, say: (m: string) => void): Promise<number> {
  const candidates = [preferred, ...(privileged ? Array.from({ length: 200 }, (_, i) => 800 + i) : [0])];
  for (const p of candidates) {
    try {
      const got = await listenAndClose(p);
      if (p !== preferred) say(`port ${preferred} is taken on this machine: using ${got} instead`);
      return got;
    } catch {
      // taken: try the next
    }
  }
  throw new Error(`no free port for ${preferred}`);
}

/** Uid, Gid, Groups and NoNewPrivs of /proc/PID/status. */
function procStatus(pid: number): { uid: string; gid: string; groups: string; noNewPrivs: string } {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (k: string) => (new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(text)?.[1] ?? '').trim().split(/\s+/).join(' ');
  return { uid: field('Uid'), gid: field('Gid'), groups: field('Groups'), noNewPrivs: field('NoNewPrivs') };
}

/** `id -G USER`: the groups initgroups() gives USER with its primary group. */
function groupsOf(user: string): string {
  const r = spawnSync('id', ['-G', user], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split(/\s+/).map(Number).sort((a, b) => a - b).join(' ');
}

test('a root primary on 127.0.0.1:80 and :8443: workers as nobody (the default), http and https with a root-only key, no way back to root', { skip }, async (t) => {
  const scope = await trackFds(t);
  const pkg = readableCopy();
  const dir = tmpDir(scope); // 0700, root's: the workers cannot even look in
  const key = path.join(dir, 'tls.key');
  fs.copyFileSync(DEV_KEY, key);
  fs.chmodSync(key, 0o600);
  const control = path.join(dir, 'control.sock');
  const say = (m: string) => t.diagnostic(m);
  const httpPort = await portFor(80, true, say);
  const httpsPort = await portFor(8443, false, say);
  const s = await startServe([
    '--listen', `127.0.0.1:${httpPort}`, '--listen', `127.0.0.1:${httpsPort},tls`,
    '--cert', path.join(pkg, 'certs', 'dev-localhost.crt'), '--key', key, '--workers', '2', '--control', control,
    path.join(pkg, 'test', 'fixtures', 'apps', 'privileges.js'),
  ], { owner: scope, cli: path.join(pkg, 'bin', 'fdpass.js'), user: null, env: childEnv({ FDPASS_TEST_KEY: key, FDPASS_TEST_CONTROL: control }) });

  const said = s.events('worker-user');
  assert.equal(said.length, 1, 'a log line says the workers run as nobody');
  assert.match(String(said[0]!.user), /^nobody \(uid 65534, gid 65534\)$/);
  assert.match(String(said[0]!.why), /root.*--user root/);

  const answers: Answer[] = [];
  for (const l of [s.listener('http'), s.listener('https'), s.listener('http'), s.listener('https')]) {
    const r = await request(l);
    assert.equal(r.status, 200);
    answers.push(r.body as unknown as Answer);
  }
  const tree = await s.idleFds();
  const st = await s.status();
  const workers = st.workers.map((w) => w.pid!);
  assert.deepEqual(answers.map((a) => a.tls), [false, true, false, true], 'http and https served');
  for (const a of answers) {
    assert.ok(workers.includes(a.worker));
    assert.equal(a.primary, s.pid);
    assert.deepEqual([a.uid, a.euid, a.gid], [NOBODY, NOBODY, NOBODY]);
    assert.equal(a.setuid, 'EPERM', 'process.setuid(0) fails in the APP');
    assert.equal(a.signal, 'EPERM', 'the worker cannot signal the primary');
    assert.equal(a.readKey, 'EACCES', 'the worker cannot read the key file itself: the primary handed it over');
    assert.equal(a.control, 'EACCES', 'nor reach the control socket (its directory and file are root\'s, 0700/0600)');
  }
  const expectedGroups = groupsOf('nobody');
  for (const pid of workers) {
    assert.deepEqual(procStatus(pid), { uid: '65534 65534 65534 65534', gid: '65534 65534 65534 65534', groups: expectedGroups, noNewPrivs: '1' }, `worker ${pid}`);
  }
  assert.match(procStatus(s.pid).uid, /^0 0 0 0$/, 'the primary keeps root');
  for (const port of [httpPort, httpsPort]) {
    assert.deepEqual(socketOwnersSs({ localPort: port }), [s.pid], `ss: only the primary holds the listener on ${port}`);
    assert.deepEqual(socketOwnersProc({ localPort: port }), [s.pid], `/proc/PID/fd: only the primary holds the listener on ${port}`);
  }

  // The control socket, opened up by hand: the uid allow-list refuses the worker.
  fs.chmodSync(dir, 0o711);
  fs.chmodSync(control, 0o666);
  try {
    const r = await request(s.listener('http'));
    assert.equal((r.body as unknown as Answer).control, 'refused', 'connected, then closed unread by the primary');
    await s.waitEvent((e) => e.event === 'control-refused' && e.reason === `uid ${NOBODY}`, 5000, 'control-refused uid 65534');
  } finally {
    fs.chmodSync(control, 0o600);
    fs.chmodSync(dir, 0o700);
  }

  // A reload reads the key again (the new generation's workers get it): gone, the reload fails, the old generation serves.
  s.signal('SIGHUP');
  await s.waitEvent((e) => e.event === 'reload-done' && e.generation === 2, 10_000, 'reload-done');
  await s.waitEvents((e) => e.event === 'worker-drained', 2, 10_000, 'generation 1 drained');
  const again = await request(s.listener('https'));
  assert.equal((again.body as unknown as Answer).uid, NOBODY);
  await s.expectNoFdLeak(tree);
  fs.renameSync(key, key + '.gone');
  s.signal('SIGHUP');
  const failed = await s.waitEvent((e) => e.event === 'reload-failed', 10_000, 'reload-failed');
  assert.match(String(failed.error), /read ENOENT .*tls\.key/, 'the reload read the key file again');
  assert.equal((await request(s.listener('https'))).status, 200, 'the serving generation keeps its certificate');
  fs.renameSync(key + '.gone', key);

  const r = await s.stop();
  assert.equal(r.code, 0, r.stderr);
});

test('--user root keeps root explicitly (with no_new_privs); --user nobody:daemon takes that group', { skip }, async (t) => {
  const scope = await trackFds(t);
  const pkg = readableCopy();
  const dir = tmpDir(scope);
  const cli = path.join(pkg, 'bin', 'fdpass.js');
  const app = path.join(pkg, 'test', 'fixtures', 'apps', 'privileges.js');
  for (const [user, uid, gid] of [['root', 0, 0], ['nobody:daemon', NOBODY, 1]] as const) {
    const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '1', '--user', user, '--control', path.join(dir, `c-${uid}.sock`), app], { owner: scope, cli });
    assert.equal(s.events('worker-user').length, 0, 'no default to report');
    const a = (await request(s.listener('http'))).body as unknown as Answer;
    assert.deepEqual([a.uid, a.gid], [uid, gid], user);
    const status = procStatus(a.worker);
    assert.equal(status.noNewPrivs, '1', `${user}: no_new_privs`);
    assert.equal(status.uid, `${uid} ${uid} ${uid} ${uid}`);
    assert.equal(status.gid, `${gid} ${gid} ${gid} ${gid}`);
    if (uid !== 0) {
      assert.ok(status.groups.split(' ').includes(String(gid)), `${user}: initgroups with the given group: ${status.groups}`);
      assert.equal(a.setuid, 'EPERM');
    }
    const r = await s.stop();
    assert.equal(r.code, 0, r.stderr);
  }
});

test('bad --user: an unknown user or group, or a non-root primary: one line, exit 1, nothing started', { skip }, async (t) => {
  const scope = await trackFds(t);
  const pkg = readableCopy();
  const dir = tmpDir(scope, 0o777); // the uid-65534 run below writes its control directory here
  const cli = path.join(pkg, 'bin', 'fdpass.js');
  const port = await freePort();
  const cases: [string[], number | undefined, RegExp][] = [
    [['--user', 'fdpass-no-such-user'], undefined, /^fdpass: user fdpass-no-such-user: no such user: FDPASS_ERR_NO_SUCH_USER$/],
    [['--user', 'nobody:fdpass-no-such-group'], undefined, /^fdpass: user nobody:fdpass-no-such-group: no such group 'fdpass-no-such-group': FDPASS_ERR_NO_SUCH_GROUP$/],
    [['--user', '4000000'], undefined, /^fdpass: user 4000000: no such user: FDPASS_ERR_NO_SUCH_USER$/],
    [['--user', 'root'], NOBODY, /^fdpass: user root: only root can run workers as another user \(this is uid 65534\): FDPASS_ERR_CANNOT_SWITCH_USER$/],
  ];
  for (const [extra, uid, line] of cases) {
    const control = path.join(dir, `ctl-${uid ?? 0}-${extra[1]!.length}`, 'control.sock');
    const r = await runServe([...extra, '--listen', `127.0.0.1:${port}`, '--workers', '1', '--control', control], { owner: scope, cli, uid, timeout: 10_000 });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr.trim(), line);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    assert.deepEqual(r.events.filter((e) => e.event === 'worker-spawn'), [], 'no worker started');
    assert.equal(await listenAndClose(port), port, 'the port was never bound (or is free again)');
    assert.ok(!fs.existsSync(control), 'no control socket');
  }
});

test('an APP the workers\' user cannot read: the start fails with one line saying so, not a module-not-found trace', { skip }, async (t) => {
  const scope = await trackFds(t);
  const pkg = readableCopy();
  const dir = tmpDir(scope); // 0700, root's
  const app = path.join(dir, 'app.js');
  fs.writeFileSync(app, 'module.exports = (req, res) => res.end("hi");\n');
  const r = await runServe(['--listen', '127.0.0.1:0', '--workers', '1', '--control', path.join(dir, 'control.sock'), app],
    { owner: scope, cli: path.join(pkg, 'bin', 'fdpass.js'), user: null, timeout: 15_000 });
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('{'));
  assert.match(lines.at(-1)!, /^fdpass: worker 0 \(pid \d+\) failed to start: user nobody \(uid 65534, gid 65534\) cannot read .*app\.js \(EACCES\): the package and the APP must be readable by the workers' user \(or choose a user who can read them: --user\): FDPASS_ERR_WORKER_START$/);
  assert.ok(!/Cannot find module|at Module/.test(r.stderr), r.stderr);
});
