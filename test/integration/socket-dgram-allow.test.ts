/**
 * Who may send to a datagram socket. An abstract name has no permissions:
 * like an abstract UnixServer, an abstract datagram receiver takes only its
 * own uid and root by default (SCM_CREDENTIALS, checked by the kernel), and
 * a refused datagram's fds are closed before anyone sees them. A path is
 * guarded by its file mode; `allow` is opt-in there. Senders of another uid
 * are children running as nobody (uid 65534).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test, type TestContext } from 'node:test';
import { UnixSocket, type Credentials, type PeerRefusedError } from '../../src';
import { trackFds, type Scope } from '../helpers/scope';
import { openFds } from '../helpers/fds';
import { tmpDir, abstractName, fileId } from '../helpers/files';
import { Child } from '../helpers/process';
import { readableCopy } from '../helpers/readable-copy';
import { waitFor } from '../helpers/wait';

const NOBODY = 65534;
const needsRoot = process.getuid!() === 0 ? {} : { skip: 'needs root to run a sender as another user' };

/** The sender: one datagram with one fd (`file`, opened by the child) to
 * `address`, from an unbound socket. */
const SENDER = `
const fs = require('node:fs');
const [dist, address, file] = JSON.parse(process.argv[1]);
let lib;
try { lib = require(dist); } catch (e) { console.log(JSON.stringify({ skip: 'cannot load ' + dist + ' as uid ' + process.getuid() + ': ' + e.message })); process.exit(0); }
(async () => {
  const s = await lib.UnixSocket.datagram();
  const fd = fs.openSync(file, 'r');
  await s.send({ data: 'from uid ' + process.getuid(), fds: [fd], to: address });
  fs.closeSync(fd);
  s.close();
  console.log(JSON.stringify({ sent: true }));
})().catch((e) => { console.error(e); process.exit(1); });
`;

/** Sends as nobody, with the library from the world-readable copy; false
 * (and the test skipped) when the child still cannot load it. */
async function sendAsNobody(t: TestContext, scope: Scope, address: string, file: string): Promise<boolean> {
  const child = new Child([process.execPath, '-e', SENDER, JSON.stringify([path.join(readableCopy(), 'dist', 'src'), address, file])],
    { uid: NOBODY, gid: NOBODY, owner: scope, timeout: 15_000, label: 'sender as nobody' });
  const r = await child.waitExit();
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as { sent?: boolean; skip?: string };
  if (report.skip) {
    t.skip(report.skip);
    return false;
  }
  assert.equal(report.sent, true);
  return true;
}

/** A 0644 file in a 0755 directory: nobody can open it. */
function sharedFile(scope: Scope): string {
  const dir = tmpDir(scope, 0o755);
  const file = path.join(dir, 'from-nobody.txt');
  fs.writeFileSync(file, 'sent by nobody\n');
  fs.chmodSync(file, 0o644);
  return file;
}

const holds = (file: string) => [...openFds().values()].filter((p) => p === file).length;

test('abstract datagram receiver: another uid\'s datagram is dropped with its fd, and refused; this uid gets through', needsRoot, async (t) => {
  const scope = await trackFds(t);
  const file = sharedFile(scope);
  const address = abstractName('dgram-allow');
  const rx = await UnixSocket.datagram({ bind: address });
  scope.defer(() => rx.close());
  const refused: [Credentials | undefined, PeerRefusedError][] = [];
  rx.on('refused', (peer, err) => refused.push([peer, err]));
  // Somebody waiting, so that the socket reads.
  const first = rx.receive({ timeout: 10_000 });

  if (!await sendAsNobody(t, scope, address, file)) {
    rx.close();
    await first.catch(() => {});
    return;
  }
  await waitFor(() => rx.refusedCount === 1, { what: 'the datagram from nobody refused' });
  assert.equal(refused.length, 1);
  const [peer, err] = refused[0]!;
  assert.equal(peer?.uid, NOBODY);
  assert.equal(peer?.gid, NOBODY);
  assert.equal(err.code, 'FDPASS_ERR_PEER_REFUSED');
  assert.match(err.message, /uid 65534 .* its 1 fd\(s\) were closed/);
  // Its fd was closed as it was read: none of ours names the file.
  assert.equal(holds(file), 0);

  // This uid's datagram is delivered, fd and all; the refused one never is.
  const mine = fs.openSync(file, 'r');
  const tx = await UnixSocket.datagram();
  scope.defer(() => tx.close());
  await tx.send({ data: 'from root', fds: [mine], to: address });
  fs.closeSync(mine);
  const m = await first;
  assert.equal(m.text(), 'from root');
  assert.equal(fileId(m.fds[0]!.fd), fileId(file));
  // SO_PASSCRED is on for the check only: messages do not show credentials
  // unless asked for.
  assert.equal(m.credentials, undefined);
  m.close();
  assert.equal(rx.refusedCount, 1);
});

test('abstract datagram receiver with allow: { uids: [65534] }: that uid gets in, fd and all; others are refused', needsRoot, async (t) => {
  const scope = await trackFds(t);
  const file = sharedFile(scope);
  const address = abstractName('dgram-allow');
  const rx = await UnixSocket.datagram({ bind: address, allow: { uids: [NOBODY] }, passCredentials: true });
  scope.defer(() => rx.close());
  const got = rx.receive({ timeout: 10_000 });
  if (!await sendAsNobody(t, scope, address, file)) {
    rx.close();
    await got.catch(() => {});
    return;
  }
  const m = await got;
  assert.equal(m.text(), `from uid ${NOBODY}`);
  assert.equal(m.credentials?.uid, NOBODY);
  assert.equal(fileId(m.fds[0]!.fd), fileId(file));
  m.close();

  // An explicit list replaces the default: root is not on it.
  const tx = await UnixSocket.datagram();
  scope.defer(() => tx.close());
  const next = rx.receive({ timeout: 300 });
  await tx.send({ data: 'from root', to: address });
  await assert.rejects(next, { code: 'FDPASS_ERR_TIMEOUT' });
  assert.equal(rx.refusedCount, 1);
});

test('path-bound datagram receiver: the file mode guards it, `allow` is opt-in', needsRoot, async (t) => {
  const scope = await trackFds(t);
  const file = sharedFile(scope);
  const dir = path.dirname(file);

  // Mode 0666 and no allow-list: whoever can write to the file may send.
  const open = await UnixSocket.datagram({ bind: path.join(dir, 'open.sock'), mode: 0o666 });
  scope.defer(() => open.close());
  const got = open.receive({ timeout: 10_000 });
  if (!await sendAsNobody(t, scope, path.join(dir, 'open.sock'), file)) {
    open.close();
    await got.catch(() => {});
    return;
  }
  const m = await got;
  assert.equal(fileId(m.fds[0]!.fd), fileId(file));
  m.close();

  // The same with an allow-list: refused, its fd closed.
  const guarded = await UnixSocket.datagram({ bind: path.join(dir, 'guarded.sock'), mode: 0o666, allow: { uids: [0] } });
  scope.defer(() => guarded.close());
  const none = guarded.receive({ timeout: 5000 }).catch((e: Error) => e);
  await sendAsNobody(t, scope, path.join(dir, 'guarded.sock'), file);
  await waitFor(() => guarded.refusedCount === 1, { what: 'the datagram from nobody refused' });
  assert.equal(holds(file), 0);
  guarded.close();
  assert.equal(((await none) as Error & { code: string }).code, 'FDPASS_ERR_SOCKET_CLOSED');
});
