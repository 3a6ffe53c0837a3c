/**
 * A Unix listener of `fdpass serve` whose listen() fails after its bind()
 * succeeded leaves nothing behind: no socket file at the path (a later start
 * would find a stale file, and a file nobody listens on looks like a dead
 * server), no fd, and listeners opened before it are closed too.
 *
 * listen() on a freshly bound AF_UNIX stream socket does not fail by itself,
 * so the kernel is made to fail it: the child runs under strace with fault
 * injection (`-e inject=listen:error=EADDRINUSE`), which makes the real
 * listen(2) call return the error while bind(2) and everything else run as
 * usual. The child is this file again, with a role argument: it opens the
 * listeners through src/serve/listeners.ts and reports what it finds.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { openFds, settledFdLeaks } from '../helpers/fds';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { childEnv } from '../helpers/process';
import { openListeners, type ListenerSpec } from '../../src/serve/listeners';

const ROLE = 'listen-cleanup-child';
const CLI = path.resolve(__dirname, '..', '..', '..', 'bin', 'fdpass.js');

interface ChildReport {
  error: { code?: string; syscall?: string; message: string } | null;
  leftBehind: string[];
  leakedFds: string[];
}

async function child(specs: ListenerSpec[]): Promise<void> {
  const before = openFds();
  let error: ChildReport['error'] = null;
  try {
    await openListeners(specs);
  } catch (err) {
    const e = err as { code?: string; syscall?: string; message: string };
    error = { code: e.code, syscall: e.syscall, message: e.message };
  }
  const leftBehind = specs.filter((s) => s.kind === 'unix' && fs.existsSync(s.path!)).map((s) => s.path!);
  const leakedFds = (await settledFdLeaks(before)).map((l) => JSON.stringify(l));
  process.stdout.write(JSON.stringify({ error, leftBehind, leakedFds } satisfies ChildReport));
}

if (process.argv[2] === ROLE) {
  void child(JSON.parse(process.argv[3]!) as ListenerSpec[]);
} else {
  /** strace arguments that fail the `when`-th listen(2) (a range like '2+' for all from the 2nd). */
  const failListen = (when = '1+') => ['-f', '-qq', '-o', '/dev/null', '-e', 'trace=listen', '-e', `inject=listen:error=EADDRINUSE:when=${when}`];
  const probe = spawnSync('strace', [...failListen(), 'true'], { encoding: 'utf8' });
  const skip = probe.error ? 'strace is not installed (Debian: apt-get install strace)'
    : probe.status !== 0 ? `strace cannot trace here (${probe.stderr.trim().split('\n')[0]})` : false;

  const runChild = (specs: ListenerSpec[], when?: string): ChildReport => {
    const r = spawnSync('strace', [...failListen(when), process.execPath, __filename, ROLE, JSON.stringify(specs)],
      { encoding: 'utf8', env: childEnv(), timeout: 30_000 });
    assert.equal(r.status, 0, `child: ${r.stderr}`);
    return JSON.parse(r.stdout) as ChildReport;
  };

  test('unix listener: listen() fails after bind(): the error is listen\'s, and no socket file or fd is left', { skip }, async (t) => {
    const scope = await trackFds(t);
    const file = path.join(tmpDir(scope), 'app.sock');
    const r = runChild([{ kind: 'unix', path: file, tls: false }]);
    assert.equal(r.error?.syscall, 'listen', JSON.stringify(r.error));
    assert.equal(r.error?.code, 'EADDRINUSE');
    assert.deepEqual(r.leftBehind, [], 'the socket file bind() created is removed');
    assert.deepEqual(r.leakedFds, [], 'the socket is closed');
    assert.ok(!fs.existsSync(file));
  });

  test('a unix listener that fails to listen after a TCP one opened: both are closed, the file removed', { skip }, async (t) => {
    const scope = await trackFds(t);
    const file = path.join(tmpDir(scope), 'second.sock');
    // The TCP listener's listen() (the first) works; the unix one's (the second) fails.
    const r = runChild([{ kind: 'tcp', host: '127.0.0.1', port: 0, tls: false }, { kind: 'unix', path: file, tls: false }], '2+');
    assert.equal(r.error?.syscall, 'listen', JSON.stringify(r.error));
    assert.deepEqual(r.leftBehind, []);
    assert.deepEqual(r.leakedFds, [], 'the TCP listener opened first is closed too');
  });

  test('fdpass serve --listen unix:PATH whose listen() fails: a start-up error, and no socket file left', { skip }, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const file = path.join(dir, 'app.sock');
    const r = spawnSync('strace', [...failListen(), process.execPath, CLI, 'serve', '--listen', `unix:${file}`, '--workers', '1',
      '--control', path.join(dir, 'control.sock')], { encoding: 'utf8', env: childEnv(), timeout: 30_000 });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, new RegExp(`fdpass: listen ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: EADDRINUSE`));
    assert.ok(!fs.existsSync(file), 'no socket file is left at the path');
  });
}
