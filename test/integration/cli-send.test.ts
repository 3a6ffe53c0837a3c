/**
 * `fdpass send` opens FILEs read-only unless --write or --create says
 * otherwise, and creates a missing FILE (--create) only once it has a peer:
 * a failed connect leaves nothing behind. The receiver is this process
 * (the library), which looks at the access mode of each fd it got.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { UnixServer, UnixSocket } from '../../src';
import { Child, runCli } from '../helpers/process';
import { CLI } from '../helpers/paths';
import { tmpDir, fileId } from '../helpers/files';
import { trackFds, type Scope } from '../helpers/scope';

const NOBODY = 65534;
const needsRoot = process.getuid!() === 0 ? {} : { skip: 'needs root to run the sender as another user' };

/** O_ACCMODE of an fd of this process: 'r', 'w' or 'rw'. */
function access(fd: number): string {
  const m = /^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))!;
  return ['r', 'w', 'rw'][parseInt(m[1]!, 8) & 0o3]!; // O_ACCMODE
}

/** Runs `fdpass send --connect ADDRESS ARGS` against a server in this
 * process; resolves with the access mode and identity of each fd it sent. */
async function sendTo(scope: Scope, args: string[], o: { uid?: number } = {}): Promise<{ access: string; id: string }[]> {
  const dir = tmpDir(scope, 0o711);
  const address = path.join(dir, 's.sock');
  const server = await UnixServer.listen(address, { mode: 0o666 });
  scope.defer(() => server.close());
  const sent = runCli(['send', '--connect', address, ...args], o);
  const conn = await server.accept({ timeout: 10_000 });
  scope.defer(() => conn.close());
  using msg = await conn.receive({ timeout: 10_000 });
  const r = await sent;
  assert.equal(r.code, 0, r.stderr);
  return msg.fds.map((f) => ({ access: access(f.fd), id: fileId(f.fd) }));
}

test('send opens FILEs read-only by default; --write opens them read-write', async (t) => {
  const scope = await trackFds(t);
  const file = path.join(tmpDir(scope), 'data.txt');
  fs.writeFileSync(file, 'data\n');
  assert.deepEqual(await sendTo(scope, [file]), [{ access: 'r', id: fileId(file) }]);
  assert.deepEqual(await sendTo(scope, ['--write', file]), [{ access: 'rw', id: fileId(file) }]);
  assert.equal(fs.readFileSync(file, 'utf8'), 'data\n');
});

test('a user can send a file they may only read', needsRoot, async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope, 0o755);
  const file = path.join(dir, 'root-owned.txt');
  fs.writeFileSync(file, 'read me\n');
  fs.chmodSync(file, 0o644);
  assert.deepEqual(await sendTo(scope, [file], { uid: NOBODY }), [{ access: 'r', id: fileId(file) }]);
  // Read-write is refused to that user, as the file's mode says.
  const r = await runCli(['send', '--connect', path.join(dir, 'none.sock'), '--write', file], { uid: NOBODY });
  assert.equal(r.code, 1);
  assert.equal(r.stderr, `fdpass: open ${file}: EACCES\n`);
});

test('a missing FILE is an error without --create, and is never created before there is a peer', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const missing = path.join(dir, 'typo.txt');
  const nowhere = path.join(dir, 'nobody-listens.sock');

  const plain = await runCli(['send', '--connect', nowhere, missing]);
  assert.equal(plain.code, 1);
  assert.equal(plain.stderr, `fdpass: open ${missing}: ENOENT\n`);
  assert.equal(fs.existsSync(missing), false);

  // --create, and the connect fails: nothing is left behind.
  for (const type of ['stream', 'seqpacket', 'dgram']) {
    const r = await runCli(['send', '--type', type, '--connect', nowhere, '--create', missing]);
    assert.equal(r.code, 1, type);
    assert.equal(r.stderr, `fdpass: connect ${nowhere}: ENOENT\n`, type);
    assert.equal(fs.existsSync(missing), false, `${type}: ${missing} was created`);
  }

  // --create with a peer: created (read-write), and that file is what was sent.
  const [got] = await sendTo(scope, ['--create', missing]);
  assert.equal(fs.existsSync(missing), true);
  assert.deepEqual(got, { access: 'rw', id: fileId(missing) });
});

test('send --listen --create: the FILE appears only after a peer has connected', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const address = path.join(dir, 'l.sock');
  const file = path.join(dir, 'new.txt');
  const sender = new Child([process.execPath, CLI, 'send', '--listen', address, '--create', file], { owner: scope, timeout: 15_000, env: process.env, label: 'send --listen --create' });
  await sender.waitOutput(/listening on/);
  assert.equal(fs.existsSync(file), false, 'created while nobody was connected');
  const peer = await UnixSocket.connect(address);
  scope.defer(() => peer.close());
  using msg = await peer.receive({ timeout: 10_000 });
  assert.equal(fileId(msg.fds[0]!.fd), fileId(file));
  assert.equal((await sender.waitExit()).code, 0, sender.stderr);
});
