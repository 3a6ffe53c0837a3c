/**
 * Credentials and access control: SCM_CREDENTIALS as checked by the kernel,
 * SO_PEERCRED, spoofing (EPERM when unprivileged), the allow-list and the
 * file mode of a path socket. Children run as nobody (uid 65534) via setpriv.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { UnixSocket, UnixServer, type Credentials, type SocketType } from '../../src';
import { trackFds } from '../helpers/scope';
import { openFds } from '../helpers/fds';
import { nextEvent, waitFor } from '../helpers/wait';
import { tmpDir, openFiles, fileId } from '../helpers/files';
import { spawnNode } from '../helpers/process';

const NOBODY = 65534;
const isRoot = process.getuid!() === 0;
const needsRoot = isRoot ? {} : { skip: 'needs root to run children as another user' };

test('credentials: true reaches a passCredentials receiver as the sender\'s pid/uid/gid', async (t) => {
  const scope = await trackFds(t);
  for (const type of ['stream', 'seqpacket', 'dgram'] as SocketType[]) {
    const [a, b] = UnixSocket.pair({ type, passCredentials: true });
    try {
      await a.send({ data: 'me', credentials: true });
      const m = await b.receive({ timeout: 5000 });
      assert.equal(m.text(), 'me');
      assert.deepEqual(m.credentials, { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() }, type);
    } finally {
      a.close();
      b.close();
    }
  }
  // Without passCredentials on the receiver, nothing is reported.
  const [a, b] = UnixSocket.pair({ type: 'seqpacket' });
  scope.defer(() => a.close());
  scope.defer(() => b.close());
  await a.send({ data: 'me', credentials: true });
  assert.equal((await b.receive({ timeout: 5000 })).credentials, undefined);
});

for (const type of ['seqpacket', 'stream'] as SocketType[]) {
  test(`${type}: an unprivileged child's credentials are the kernel's; claiming another pid or uid is EPERM`, needsRoot, async (t) => {
    const scope = await trackFds(t);
    const [mine, theirs] = UnixSocket.pair({ type, passCredentials: true });
    scope.defer(() => mine.close());
    const child = spawnNode('socket-peer.js', ['creds'], { fds: [theirs.fd], uid: NOBODY, gid: NOBODY, owner: scope });
    theirs.close();

    const r = await child.next<{ pid: number; uid: number; gid: number; tries: Record<string, { code: string; syscall: string; errno: number }> }>();
    assert.deepEqual([r.pid, r.uid, r.gid], [child.pid, NOBODY, NOBODY]);
    for (const name of ['otherPid', 'otherUid']) {
      assert.equal(r.tries[name]!.code, 'EPERM', `${name}: ${JSON.stringify(r.tries[name])}`);
      assert.equal(r.tries[name]!.syscall, 'sendmsg');
      assert.equal(r.tries[name]!.errno, -1);
    }
    await child.done();

    const want: Credentials = { pid: child.pid, uid: NOBODY, gid: NOBODY };
    const first = await mine.receive({ timeout: 5000 });
    assert.equal(first.text(), 'mine');
    assert.deepEqual(first.credentials, want);
    // The refused messages never went out; the socket carried on.
    const last = await mine.receive({ timeout: 5000 });
    assert.equal(last.text(), 'last');
    assert.deepEqual(last.credentials, want);
    await assert.rejects(mine.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_SOCKET_CLOSED' });
  });
}

test('root may claim another process\'s pid and other ids', needsRoot, async (t) => {
  const scope = await trackFds(t);
  for (const type of ['seqpacket', 'stream', 'dgram'] as SocketType[]) {
    const [a, b] = UnixSocket.pair({ type, passCredentials: true });
    scope.defer(() => a.close());
    scope.defer(() => b.close());
    const claim = { pid: process.ppid, uid: 1234, gid: 5678 };
    await a.send({ data: 'not me', credentials: claim });
    const m = await b.receive({ timeout: 5000 });
    assert.deepEqual(m.credentials, claim, type);
  }
});

test('peerCredentials(): SO_PEERCRED on both ends of a connection across users', needsRoot, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope, 0o711);
  const address = path.join(dir, 's.sock');
  const server = await UnixServer.listen(address, { mode: 0o666 });
  scope.defer(() => server.close());
  const child = spawnNode('socket-peer.js', ['connect-report', JSON.stringify({ address })], { uid: NOBODY, gid: NOBODY, owner: scope });
  const conn = await server.accept({ timeout: 10_000 });
  scope.defer(() => conn.close());
  assert.deepEqual(conn.peerCredentials(), { pid: child.pid, uid: NOBODY, gid: NOBODY });
  const r = await child.next();
  assert.deepEqual(r, {
    connected: true, pid: child.pid, uid: NOBODY, gid: NOBODY,
    peer: { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() },
  });
  await conn.send('hello');
  assert.deepEqual(await child.next(), { message: 'hello' });
  await child.done();

  // A socketpair's peer is whoever created it.
  const [a, b] = UnixSocket.pair();
  assert.deepEqual(a.peerCredentials(), { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
  a.close();
  b.close();
});

test('allow-list: a uid that is not allowed is refused before a byte is read, and sees the connection closed', needsRoot, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope, 0o711);
  const address = path.join(dir, 's.sock');
  const server = await UnixServer.listen(address, { mode: 0o666, allow: { uids: [0] } });
  scope.defer(() => server.close());
  const accepted: UnixSocket[] = [];
  server.on('connection', (s: UnixSocket) => accepted.push(s));
  scope.defer(() => accepted.forEach((s) => s.close()));

  const refused = nextEvent<[Credentials, Error & { code: string }]>(server, 'refused');
  const child = spawnNode('socket-peer.js', ['connect-report', JSON.stringify({ address })], { uid: NOBODY, gid: NOBODY, owner: scope });
  const [peer, err] = await refused;
  assert.deepEqual(peer, { pid: child.pid, uid: NOBODY, gid: NOBODY });
  assert.equal(err.code, 'FDPASS_ERR_PEER_REFUSED');
  const r = await child.next<{ connected: boolean }>();
  assert.equal(r.connected, true); // the kernel accepted it into the backlog
  assert.deepEqual(await child.next(), {
    closed: { name: 'SocketClosedError', code: 'FDPASS_ERR_SOCKET_CLOSED', message: 'no more messages: the socket is closed' },
  });
  await child.done();
  assert.equal(accepted.length, 0);

  // uid 0 gets in.
  const c = await UnixSocket.connect(address);
  scope.defer(() => c.close());
  await c.send('root here');
  await waitFor(() => accepted.length > 0, { interval: 5, what: 'the root client accepted' });
  assert.equal((await accepted[0]!.receive({ timeout: 5000 })).text(), 'root here');
});

for (const type of ['stream', 'seqpacket'] as SocketType[]) {
  test(`abstract ${type} server: by default only this uid and root may connect; a refused peer gets no fd out and pushes none in`, needsRoot, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope, 0o755);
    const secret = openFiles(dir, 1, scope, 'secret');
    const pushFile = path.join(dir, 'pushed.txt');
    fs.writeFileSync(pushFile, 'from nobody');
    fs.chmodSync(pushFile, 0o644);
    const address = `\0fdpass-test-${process.pid}-${Date.now()}-${type}`;
    const server = await UnixServer.listen(address, { type });
    scope.defer(() => server.close());
    // A server that hands every connection an fd first thing.
    const conns: UnixSocket[] = [];
    server.on('connection', (s: UnixSocket) => {
      conns.push(s);
      s.send({ data: 'secret', fds: [secret.fds[0]!] }).catch(() => {});
    });
    scope.defer(() => conns.forEach((c) => c.close()));
    const refused = nextEvent<[Credentials]>(server, 'refused');
    const child = spawnNode('socket-peer.js', ['connect-report', JSON.stringify({ address, type, pushFile, pushCount: 20 })],
      { uid: NOBODY, gid: NOBODY, owner: scope });
    const [peer] = await refused;
    assert.equal(peer.uid, NOBODY);
    assert.equal((await child.next<{ connected: boolean }>()).connected, true);
    await child.next(); // how its push went: queued before the refusal, or refused already
    // The connection closed without a message: no fd came out.
    assert.equal((await child.next<{ closed: { code: string } }>()).closed.code, 'FDPASS_ERR_SOCKET_CLOSED');
    await child.done();
    assert.equal(conns.length, 0);
    // And none of the 20 fds it pushed was ever installed here.
    assert.equal([...openFds().values()].filter((p) => p === pushFile).length, 0);

    // Our own uid gets in, and gets the fd: the server does hand them out.
    const c = await UnixSocket.connect(address, { type });
    scope.defer(() => c.close());
    const m = await c.receive({ timeout: 5000 });
    assert.equal(fileId(m.fds[0]!.fd), secret.ids[0]);
    m.close();
  });
}

for (const type of ['stream', 'seqpacket'] as SocketType[]) {
  test(`a ${type} path socket is created 0600: another user gets EACCES from connect, and the server never sees it`, needsRoot, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope, 0o755);
    const address = path.join(dir, 's.sock');
    const server = await UnixServer.listen(address, { type });
    scope.defer(() => server.close());
    let connections = 0;
    server.on('connection', (s: UnixSocket) => {
      connections++;
      s.close();
    });
    assert.equal(fs.lstatSync(address).mode & 0o777, 0o600);
    const child = spawnNode('socket-peer.js', ['connect-report', JSON.stringify({ address, type })], { uid: NOBODY, gid: NOBODY, owner: scope });
    const r = await child.next<{ error: { code: string; syscall: string; errno: number; message: string } }>();
    assert.equal(r.error.code, 'EACCES');
    assert.equal(r.error.syscall, 'connect');
    assert.equal(r.error.errno, -13);
    assert.equal(r.error.message, `connect EACCES ${address}`);
    await child.done();
    assert.equal(connections, 0);
  });
}
