/**
 * socketpair(2) between this process and a child, and the per-message fd
 * limit (SCM_MAX_FD = 253), for each socket type.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { UnixSocket, MAX_FDS, type SocketType } from '../../src';
import { trackFds } from '../helpers/scope';
import { openFds } from '../helpers/fds';
import { tmpDir, fileId, openFiles } from '../helpers/files';
import { spawnNode } from '../helpers/process';

const TYPES: SocketType[] = ['stream', 'seqpacket', 'dgram'];

for (const type of TYPES) {
  test(`${type} socketpair: a child adopts fd 3, receives a file fd and writes through it`, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const file = path.join(dir, 'out.txt');
    const [mine, theirs] = UnixSocket.pair({ type });
    scope.defer(() => mine.close());
    const child = spawnNode('socket-peer.js', ['write-hello'], { fds: [theirs.fd], owner: scope });
    theirs.close();

    const fd = fs.openSync(file, 'w');
    const id = fileId(fd);
    try {
      await mine.send({ data: 'take this', fds: [fd] });
    } finally {
      // Our copy goes at once: the child's works on its own.
      fs.closeSync(fd);
    }
    assert.equal(openFds().has(fd), false);

    const r = await child.next();
    assert.deepEqual(r, { type, data: 'take this', nfds: 1, id, kind: 'file', cloexec: true });
    await child.done();
    assert.equal(fs.readFileSync(file, 'utf8'), 'Hello from child\n');
  });
}

for (const type of TYPES) {
  test(`${type}: ${MAX_FDS} fds in one message arrive in order, each the same open file`, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const files = openFiles(dir, MAX_FDS, scope);
    const [a, b] = UnixSocket.pair({ type });
    scope.defer(() => a.close());
    scope.defer(() => b.close());

    await a.send({ data: 'many', fds: files.fds });
    const m = await b.receive({ timeout: 5000 });
    try {
      assert.equal(m.text(), 'many');
      assert.equal(m.fds.length, MAX_FDS);
      assert.deepEqual(m.fds.map((f) => fileId(f.fd)), files.ids);
      // Same open file description: what goes in through one comes out of the other.
      fs.writeSync(m.fds[MAX_FDS - 1]!.fd, 'through the copy');
      assert.equal(fs.readFileSync(files.paths[MAX_FDS - 1]!, 'utf8'), 'through the copy');
    } finally {
      m.close();
    }
  });
}

test(`${MAX_FDS} fds to a child process: every identity checked there`, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const files = openFiles(dir, MAX_FDS, scope);
  const [mine, theirs] = UnixSocket.pair({ type: 'seqpacket' });
  scope.defer(() => mine.close());
  const child = spawnNode('socket-peer.js', ['report-ids'], { fds: [theirs.fd], owner: scope });
  theirs.close();
  await mine.send({ data: 'all of them', fds: files.fds });
  files.close();
  const r = await child.next<{ data: string; ids: string[]; cloexec: boolean }>();
  assert.equal(r.data, 'all of them');
  assert.deepEqual(r.ids, files.ids);
  assert.equal(r.cloexec, true);
  await child.done();
});

test(`${MAX_FDS + 1} fds: RangeError FDPASS_ERR_TOO_MANY_FDS, thrown before anything is sent`, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const files = openFiles(dir, 1, scope);
  for (const type of TYPES) {
    const [a, b] = UnixSocket.pair({ type });
    try {
      const fds = new Array<number>(MAX_FDS + 1).fill(files.fds[0]!);
      assert.throws(() => a.send({ data: 'x', fds }), { name: 'RangeError', code: 'FDPASS_ERR_TOO_MANY_FDS' });
      assert.equal(a.pendingSends, 0);
      await assert.rejects(b.receive({ timeout: 50 }), { code: 'FDPASS_ERR_TIMEOUT' });
      // The socket is fine afterwards.
      await a.send({ data: 'ok', fds: files.fds });
      const m = await b.receive({ timeout: 5000 });
      assert.equal(m.text(), 'ok');
      assert.equal(m.fdCount, 1);
      m.close();
    } finally {
      a.close();
      b.close();
    }
  }
});
