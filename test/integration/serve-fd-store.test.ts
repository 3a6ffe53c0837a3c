/**
 * systemd's file descriptor store, without systemd: the test owns the
 * NOTIFY_SOCKET and keeps what `fdpass serve` pushes into the "store"
 * (FDSTORE=1, FDNAME=<listener name>, the listening socket attached: the
 * same socket, by getsockname() and by inode). While no primary runs,
 * clients connect: the kernel queues them in the stored sockets' backlogs.
 * The next run gets the sockets back at fds 3.. with LISTEN_FDS,
 * LISTEN_FDNAMES and LISTEN_PID (its own pid: `sh -c 'LISTEN_PID=$$ exec
 * ...'`), takes each for the --listen of the same name and address instead
 * of binding again, and answers every connection that waited. A run whose
 * --listen no longer names one of them leaves it unused: it closes its copy
 * and takes it out of the store (FDSTOREREMOVE) before pushing its own.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { native, K } from '../../src/native';
import { socketInfo } from '../../src/socket/adopt';
import { trackFds } from '../helpers/scope';
import { tmpDir, fileId } from '../helpers/files';
import { openFds } from '../helpers/fds';
import { DEV_CERT, DEV_KEY } from '../helpers/paths';
import { startServe, type ServeListener } from '../helpers/serve';
import { childEnv } from '../helpers/process';
import { HttpConnection, request } from '../helpers/http';
import { NotifyReceiver, type Notification } from '../helpers/notify';
import { freePort } from '../helpers/sockets';
import { sleep, waitFor } from '../helpers/wait';

/** Execs the rest with LISTEN_PID set to the pid that fdpass will have. */
const WITH_LISTEN_PID = ['sh', '-c', 'LISTEN_PID=$$ exec "$0" "$@"'];
const NAME = Buffer.alloc(128);

/** What getsockname() says of `fd`, as fdpass serve shows a listener address. */
function boundAddress(fd: number): string {
  const { family } = socketInfo(fd);
  if (family === K.AF_UNIX) return NAME.toString('utf8', 0, native.sockName(fd, NAME, false));
  const port = native.inetName(fd, false, NAME);
  const host = NAME.toString('latin1', 0, NAME.indexOf(0));
  return family === K.AF_INET6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Whether process `pid` holds the socket that `fd` is (by inode). */
function holdsSocket(pid: number, fd: number): boolean {
  const ino = fileId(fd).split(':')[1];
  return [...openFds(pid).values()].includes(`socket:[${ino}]`);
}

test('FDSTORE: listeners pushed by name; the next run takes them back (LISTEN_FDS) and answers what waited in their backlogs; a listener no longer wanted leaves the store', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const notify = await NotifyReceiver.bind(path.join(dir, 'notify.sock'), scope);
  const [httpPort, httpsPort] = [await freePort(), await freePort()];
  const unixPath = path.join(dir, 'app.sock');
  const common = ['--cert', DEV_CERT, '--key', DEV_KEY, '--workers', '2', '--control', path.join(dir, 'control.sock')];
  const listen = ['--listen', `127.0.0.1:${httpPort}`, '--listen', `127.0.0.1:${httpsPort},tls`, '--listen', `unix:${unixPath},name=local`];
  const env = { NOTIFY_SOCKET: notify.env, FDSTORE: '8' };

  // ---- run 1: binds, and pushes every listener -------------------------------
  const s1 = await startServe([...listen, ...common], { owner: scope, env: childEnv(env) });
  const ready1 = await notify.waitFor((n) => n.fields.READY === '1', 'READY=1 of run 1');
  const stored = notify.with('FDSTORE', '1');
  assert.equal(stored.length, 3, notify.describe());
  assert.ok(stored.every((n) => notify.messages.indexOf(n) < notify.messages.indexOf(ready1)), 'the listeners are in the store before READY=1');
  assert.deepEqual(stored.map((n) => n.fields.FDNAME), ['http', 'https', 'local']);
  assert.deepEqual(s1.listeners.map((l) => l.address), [`127.0.0.1:${httpPort}`, `127.0.0.1:${httpsPort}`, unixPath]);
  stored.forEach((n, i) => {
    assert.equal(n.fds.length, 1, `one fd with FDSTORE=1 FDNAME=${n.fields.FDNAME}`);
    assert.equal(n.pid, s1.pid);
    const fd = n.fds[0]!.fd;
    assert.equal(boundAddress(fd), s1.listeners[i]!.address, 'getsockname() of the stored fd is the listener\'s address');
    assert.ok(socketInfo(fd).listening);
    assert.ok(holdsSocket(s1.pid, fd), 'the stored fd is the primary\'s own listening socket');
  });
  const tree1 = await s1.idleFds();
  for (const l of s1.listeners) assert.equal((await request(l)).status, 200);
  await s1.expectNoFdLeak(tree1);
  const r1 = await s1.stop();
  assert.equal(r1.code, 0, r1.stderr);
  assert.ok(fs.existsSync(unixPath), 'the socket file of a stored unix listener stays for the next run');

  // ---- no primary: clients connect into the stored sockets' backlogs -----------
  const endpoints: ServeListener[] = s1.listeners;
  const conns = [...endpoints, ...endpoints].map((e) => new HttpConnection(e));
  scope.defer(() => Promise.all(conns.map((c) => c.close())));
  await waitFor(() => conns.every((c) => c.connected), { what: 'every client connected (queued by the kernel)' });
  const replies = conns.map((c) => c.exchange('/', { close: true, timeout: 20_000 }).then((r) => ({ ...r, body: JSON.parse(r.text) as { primary: number; worker: number } })));
  await sleep(300);
  assert.ok(conns.every((c) => c.bytes === 0), 'nobody answers while no primary runs');

  // ---- run 2: the same sockets come back at fds 3, 4, 5 -------------------------
  const fds = stored.map((n) => n.fds[0]!.fd);
  const restartEnv = (names: string) => childEnv({ ...env, LISTEN_FDS: String(fds.length), LISTEN_FDNAMES: names });
  const s2 = await startServe([...listen, ...common], { owner: scope, env: restartEnv('http:https:local'), fds, prefix: WITH_LISTEN_PID });
  const answered = await Promise.all(replies);
  const workers2 = (await s2.status()).workers.map((w) => w.pid!);
  for (const r of answered) {
    assert.equal(r.status, 200);
    assert.equal(r.body.primary, s2.pid, 'answered by the next run');
    assert.ok(workers2.includes(r.body.worker));
  }
  t.diagnostic(`${answered.length} connections made while no primary ran (2 http, 2 https, 2 unix) were all answered by the next run`);
  const start2 = s2.events('start')[0]!;
  assert.deepEqual(start2.inherited, s1.listeners.map((l) => l.address), 'every listener taken over, none bound again');
  assert.deepEqual(s2.listeners.map((l) => `${l.name} ${l.address}`), s1.listeners.map((l) => `${l.name} ${l.address}`));
  const ready2 = await notify.waitFor((n) => n.fields.READY === '1' && n.fields.MAINPID === String(s2.pid), 'READY=1 of run 2');
  const stored2 = notify.with('FDSTORE', '1').filter((n) => n.pid === s2.pid);
  assert.deepEqual(stored2.map((n) => fileId(n.fds[0]!.fd)), stored.map((n) => fileId(n.fds[0]!.fd)), 'run 2 pushes the same sockets again');
  assert.ok(stored2.every((n) => notify.messages.indexOf(n) < notify.messages.indexOf(ready2)));
  assert.deepEqual(notify.with('FDSTOREREMOVE'), [], 'nothing was stale');
  const tree2 = await s2.idleFds();
  for (const l of s2.listeners) assert.equal((await request(l)).status, 200);
  await s2.expectNoFdLeak(tree2);
  const r2 = await s2.stop();
  assert.equal(r2.code, 0, r2.stderr);

  // ---- run 3: --listen no longer names the unix socket -----------------------------
  const s3 = await startServe([...listen.slice(0, 4), ...common], { owner: scope, env: restartEnv('http:https:local'), fds, prefix: WITH_LISTEN_PID });
  const ready3 = await notify.waitFor((n) => n.fields.READY === '1' && n.fields.MAINPID === String(s3.pid), 'READY=1 of run 3');
  const mine = (n: Notification) => n.pid === s3.pid && notify.messages.indexOf(n) < notify.messages.indexOf(ready3);
  const removed = notify.with('FDSTOREREMOVE', '1').filter(mine);
  assert.deepEqual(removed.map((n) => n.fields.FDNAME), ['local'], 'the unused listener is taken out of the store');
  const stored3 = notify.with('FDSTORE', '1').filter(mine);
  assert.deepEqual(stored3.map((n) => n.fields.FDNAME), ['http', 'https']);
  assert.ok(notify.messages.indexOf(removed[0]!) < notify.messages.indexOf(stored3[0]!), 'removed before the pushes');
  assert.deepEqual(s3.events('start')[0]!.inherited, s1.listeners.slice(0, 2).map((l) => l.address));
  assert.ok(!holdsSocket(s3.pid, fds[2]!), 'the unused inherited fd is closed, not kept');
  assert.ok(holdsSocket(s3.pid, fds[0]!) && holdsSocket(s3.pid, fds[1]!));
  const r3 = await s3.stop();
  assert.equal(r3.code, 0, r3.stderr);
});
