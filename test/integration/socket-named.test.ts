/**
 * Named sockets between unrelated processes: datagrams to a bound path,
 * stream and seqpacket servers on a path, and an abstract address.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { UnixSocket, UnixServer, type SocketType } from '../../src';
import { trackFds } from '../helpers/scope';
import { tmpDir, fileId, openFiles, abstractName } from '../helpers/files';
import { spawnNode } from '../helpers/process';

interface DgramReport {
  len: number;
  data: string;
  ids: string[];
  address: string;
}

test('SOCK_DGRAM to a path bound by another process, with `to`; a zero-byte datagram with fds', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const childPath = path.join(dir, 'child.sock');
  const myPath = path.join(dir, 'parent.sock');
  const child = spawnNode('socket-peer.js', ['dgram-bind', JSON.stringify({ path: childPath, count: 3 })], { owner: scope });
  assert.deepEqual(await child.next(), { ready: true, address: childPath });
  assert.equal(fs.lstatSync(childPath).mode & 0o777, 0o600);

  const files = openFiles(dir, 3, scope, 'out');

  // An unbound sender: the child sees no address and cannot answer.
  const anon = await UnixSocket.datagram();
  scope.defer(() => anon.close());
  await anon.send({ data: 'first', fds: [files.fds[0]!], to: childPath });
  assert.deepEqual(await child.next<DgramReport>(), { len: 5, data: 'first', ids: [files.ids[0]], address: '' });

  // A bound sender gets an answer at its address.
  const me = await UnixSocket.datagram({ bind: myPath });
  scope.defer(() => me.close());
  await me.send({ fds: [files.fds[1]!, files.fds[2]!], to: childPath });
  assert.deepEqual(await child.next<DgramReport>(), { len: 0, data: '', ids: [files.ids[1], files.ids[2]], address: myPath });
  const ack = await me.receive({ timeout: 5000 });
  assert.equal(ack.text(), 'ack 1');
  assert.equal(ack.address, childPath);
  assert.equal(ack.fdCount, 0);

  // A zero-byte datagram with no fds is a message too.
  await me.send({ data: '', to: childPath });
  assert.deepEqual(await child.next<DgramReport>(), { len: 0, data: '', ids: [], address: myPath });
  assert.equal((await me.receive({ timeout: 5000 })).text(), 'ack 2');
  await child.done();

  // The child wrote through every fd it got.
  assert.equal(fs.readFileSync(files.paths[0]!, 'utf8'), 'child got 0\n');
  assert.equal(fs.readFileSync(files.paths[1]!, 'utf8'), 'child got 1\n');
  assert.equal(fs.readFileSync(files.paths[2]!, 'utf8'), 'child got 1\n');
});

test('SOCK_DGRAM connected with datagram({ connect }) needs no `to`', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const p = path.join(dir, 'r.sock');
  const r = await UnixSocket.datagram({ bind: p });
  scope.defer(() => r.close());
  const s = await UnixSocket.datagram({ connect: p });
  scope.defer(() => s.close());
  const files = openFiles(dir, 1, scope);
  await s.send({ fds: files.fds });
  const m = await r.receive({ timeout: 5000 });
  assert.equal(m.data.length, 0);
  assert.deepEqual(m.fds.map((f) => fileId(f.fd)), files.ids);
  m.close();
});

/**
 * A child connects to `address`, sends one fd and then four (files it opens
 * itself, whose inodes we know); we check each fd's identity, write through
 * them, and send it one fd back to write through.
 */
async function serverRoundTrip(t: { after(fn: () => unknown): void }, type: SocketType, abstract: boolean): Promise<void> {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const address = abstract ? abstractName(type) : path.join(dir, 'server.sock');
  const server = await UnixServer.listen(address, { type });
  scope.defer(() => server.close());
  if (!abstract) assert.equal(fs.lstatSync(address).mode & 0o777, 0o600);

  const paths = [0, 1, 2, 3, 4].map((i) => path.join(dir, `c${i}`));
  for (const p of paths) fs.writeFileSync(p, '');
  const ids = paths.map((p) => fileId(p));
  const child = spawnNode('socket-peer.js', ['connect-send', JSON.stringify({
    type, address, files: paths, batches: [[0], [1, 2, 3, 4]],
  })], { owner: scope });

  const conn = await server.accept({ timeout: 10_000 });
  scope.defer(() => conn.close());
  assert.equal(conn.type, type);
  assert.equal(conn.peerCredentials().pid, child.pid);

  const one = await conn.receive({ timeout: 5000 });
  assert.equal(one.text(), 'batch 0');
  assert.deepEqual(one.fds.map((f) => fileId(f.fd)), [ids[0]]);
  const four = await conn.receive({ timeout: 5000 });
  assert.equal(four.text(), 'batch 1');
  assert.deepEqual(four.fds.map((f) => fileId(f.fd)), ids.slice(1));
  four.fds.forEach((f, i) => fs.writeSync(f.fd, `parent wrote ${i + 1}`));
  one.close();
  four.close();
  for (let i = 1; i < 5; i++) assert.equal(fs.readFileSync(paths[i]!, 'utf8'), `parent wrote ${i}`);

  // And back: the child writes through a file we opened.
  const back = path.join(dir, 'back.txt');
  const fd = fs.openSync(back, 'w');
  const backId = fileId(fd);
  try {
    await conn.send({ data: 'yours', fds: [fd] });
  } finally {
    fs.closeSync(fd);
  }
  assert.deepEqual(await child.next(), { data: 'yours', ids: [backId] });
  await child.done();
  assert.equal(fs.readFileSync(back, 'utf8'), 'Hello from child\n');
  // The child ended the connection.
  await assert.rejects(conn.receive({ timeout: 5000 }), { code: 'FDPASS_ERR_SOCKET_CLOSED' });
}

test('SOCK_STREAM server on a path: one fd, then four fds, both ways', (t) => serverRoundTrip(t, 'stream', false));
test('SOCK_SEQPACKET server on a path: one fd, then four fds, both ways', (t) => serverRoundTrip(t, 'seqpacket', false));
test('SOCK_STREAM server on an abstract address', (t) => serverRoundTrip(t, 'stream', true));
test('SOCK_SEQPACKET server on an abstract address', (t) => serverRoundTrip(t, 'seqpacket', true));

test('server.close() unlinks its socket file; an abstract server leaves no file', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const p = path.join(dir, 's.sock');
  const server = await UnixServer.listen(p);
  assert.equal(fs.lstatSync(p).isSocket(), true);
  await server.close();
  assert.equal(fs.existsSync(p), false);
  await server.close(); // twice is fine

  const name = abstractName();
  const abs = await UnixServer.listen(name);
  const c = await UnixSocket.connect(name);
  const s = await abs.accept({ timeout: 10_000 });
  await c.send('hi');
  assert.equal((await s.receive({ timeout: 5000 })).text(), 'hi');
  c.close();
  s.close();
  await abs.close();
  assert.deepEqual(fs.readdirSync(dir), []);
});
