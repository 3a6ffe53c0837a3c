/**
 * Whom the control socket trusts, from both ends.
 * - The default directory (<tmpdir>/fdpass-<uid>; TMPDIR points at a temp
 *   dir here, so that the real /tmp is not touched) pre-created by another
 *   user with mode 0777, or a symbolic link: `fdpass serve` refuses to start
 *   with a one-line error before anything starts, and `fdpass status`
 *   refuses to connect there (a forged socket waits in it) with a one-line
 *   error and a non-zero exit.
 * - A control socket served by another uid (at a path given with --control,
 *   or an abstract name): `fdpass status` refuses it rather than print the
 *   forged document it would answer.
 * - A default directory this user owns is created 0700 and used as before.
 * The "other user" is uid 65534 (nobody): the tests need root.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds, type Scope } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { CLI } from '../helpers/paths';
import { Child, childEnv, type ChildResult } from '../helpers/process';
import { runServe, startServe, type Status } from '../helpers/serve';

const NOBODY = 65534;
/** A Python that another user can run (not a shim under /root). */
const PYTHON = '/usr/bin/python3';
const needsRoot = process.getuid!() !== 0 ? { skip: 'needs root to create files as another user' }
  : !fs.existsSync(PYTHON) ? { skip: `needs ${PYTHON} (the python3 package) for a server run as another user` } : {};

/** A fake control server run as nobody: answers every request with a
 * forged status whose primary pid is 4242. */
const FORGER = `
import json, socket, struct, sys
addr = sys.argv[1].replace('@', '\\0', 1) if sys.argv[1].startswith('@') else sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind(addr)
s.listen(8)
print('listening', flush=True)
forged = json.dumps({'primary': {'pid': 4242, 'listeners': []}, 'workers': []}).encode()
while True:
    c, _ = s.accept()
    d = c.recv(65536)
    if len(d) >= 8:
        ver, kind, rid, tlen = struct.unpack_from('<BBIH', d)
        c.send(struct.pack('<BBIH', 1, 2, rid, tlen) + d[8:8 + tlen] + forged)
    c.close()
`;

async function startForger(scope: Scope, address: string): Promise<Child> {
  const forger = new Child([PYTHON, '-c', FORGER, address], { owner: scope, uid: NOBODY, timeout: 30_000, env: process.env, label: 'forged control server' });
  await forger.waitOutput(/listening/, { stream: 'stdout' });
  return forger;
}

/** The environment of a CLI whose default control directory is under `tmp`. */
function envWithTmp(tmp: string): NodeJS.ProcessEnv {
  const env = childEnv({ TMPDIR: tmp });
  delete env.XDG_RUNTIME_DIR;
  return env;
}

function runCliEnv(args: string[], env: NodeJS.ProcessEnv): Promise<ChildResult> {
  return new Child([process.execPath, CLI, ...args], { env, timeout: 10_000, label: `fdpass ${args.join(' ')}` }).exited;
}

/** The one line of a CLI failure: `fdpass: ...: CODE`. */
function oneLineError(r: ChildResult, code: string): string {
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0]!, new RegExp(`^fdpass: .+: ${code}$`));
  return lines[0]!;
}

test('a default control directory pre-created 0777 by another user: serve refuses to start and status refuses to connect, one line each', needsRoot, async (t) => {
  const scope = await trackFds(t);
  const tmp = tmpDir(scope, 0o755);
  const env = envWithTmp(tmp);
  const dir = path.join(tmp, `fdpass-${process.getuid!()}`);
  fs.mkdirSync(dir);
  fs.chownSync(dir, NOBODY, NOBODY);
  fs.chmodSync(dir, 0o777);
  // The other user's socket, where status would look.
  await startForger(scope, path.join(dir, 'control.sock'));

  const status = await runCliEnv(['status', '--json'], env);
  assert.notEqual(status.code, 0, `status believed the forged socket: ${status.stdout}`);
  assert.equal(status.stdout, '');
  const statusLine = oneLineError(status, 'FDPASS_ERR_UNTRUSTED_DIR');
  assert.ok(statusLine.includes(dir), statusLine);

  const serve = await runServe(['--listen', '127.0.0.1:0', '--workers', '1'], { env });
  assert.equal(serve.code, 1, serve.stderr);
  const serveLine = oneLineError(serve, 'FDPASS_ERR_UNTRUSTED_DIR');
  assert.deepEqual(serve.events, [], 'nothing started');
  assert.ok(fs.lstatSync(path.join(dir, 'control.sock')).uid === NOBODY, 'the other user\'s socket was left alone');
  t.diagnostic(`status: ${statusLine}`);
  t.diagnostic(`serve: ${serveLine}`);
});

test('a default control directory that is a symbolic link (to a directory of ours, 0700): refused by serve and by status', needsRoot, async (t) => {
  const scope = await trackFds(t);
  const tmp = tmpDir(scope, 0o755);
  const env = envWithTmp(tmp);
  const real = path.join(tmp, 'real');
  fs.mkdirSync(real, { mode: 0o700 });
  fs.symlinkSync(real, path.join(tmp, `fdpass-${process.getuid!()}`));

  const serve = await runServe(['--listen', '127.0.0.1:0', '--workers', '1'], { env });
  assert.equal(serve.code, 1, serve.stderr);
  assert.match(oneLineError(serve, 'FDPASS_ERR_UNTRUSTED_DIR'), /symbolic link/);
  assert.deepEqual(fs.readdirSync(real), [], 'no socket was made through the link');
  const status = await runCliEnv(['status'], env);
  assert.equal(status.code, 1, status.stderr);
  assert.match(oneLineError(status, 'FDPASS_ERR_UNTRUSTED_DIR'), /symbolic link/);
});

for (const where of ['path', 'abstract'] as const) {
  test(`status refuses a control socket served by another uid (${where}): non-zero exit, one line, no forged document`, needsRoot, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope, 0o777); // nobody may bind in it
    const address = where === 'path' ? path.join(dir, 'control.sock') : `@fdpass-forged-${process.pid}-${Date.now()}`;
    await startForger(scope, address);
    const r = await runCliEnv(['status', '--control', address, '--json'], process.env);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stdout, '', 'the forged document is not printed');
    const line = oneLineError(r, 'FDPASS_ERR_PEER_REFUSED');
    assert.match(line, new RegExp(`served by uid ${NOBODY}`));
    t.diagnostic(line);
  });
}

test('the default control directory, missing: serve creates it 0700 and status finds the socket there', async (t) => {
  const scope = await trackFds(t);
  const tmp = tmpDir(scope);
  const env = envWithTmp(tmp);
  const dir = path.join(tmp, `fdpass-${process.getuid!()}`);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '1'], { owner: scope, env });
  assert.equal(s.control, path.join(dir, 'control.sock'));
  const st = fs.lstatSync(dir);
  assert.ok(st.isDirectory());
  assert.equal(st.mode & 0o777, 0o700);
  const r = await runCliEnv(['status', '--json'], env);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as Status).primary.pid, s.pid);
  const done = await s.stop();
  assert.equal(done.code, 0, done.stderr);
});
