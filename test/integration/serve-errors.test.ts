/**
 * fdpass serve, bad input: each start-up failure is one clear line on
 * stderr and a non-zero exit, promptly, with nothing left behind (no worker
 * process, no bound port).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { APPS, DEV_CERT, DEV_KEY } from '../helpers/paths';
import { startServe, runServe, type ServeResult } from '../helpers/serve';
import { alive } from '../helpers/proc';
import { freePort, listenAndClose } from '../helpers/sockets';

/** Pids of the workers a failed run had spawned, from its log. */
function spawnedWorkers(r: ServeResult): number[] {
  return r.events.filter((e) => e.event === 'worker-spawn').map((e) => e.pid as number);
}

test('address in use: another fdpass serve on the port, or the same port twice', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const first = await startServe(['--listen', '127.0.0.1:0', '--workers', '1', '--control', path.join(dir, 'c1.sock')], { owner: scope });
  const port = first.listener('http').port!;

  const r = await runServe(['--listen', `127.0.0.1:${port}`, '--workers', '1', '--control', path.join(dir, 'c2.sock')]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`^fdpass: bind 127\\.0\\.0\\.1:${port}: EADDRINUSE$`, 'm'));
  assert.deepEqual(spawnedWorkers(r), [], 'no worker is started when a listener cannot be opened');

  const free = await freePort();
  const twice = await runServe(['--listen', `127.0.0.1:${free}`, '--listen', `127.0.0.1:${free},tls`, '--cert', DEV_CERT, '--key', DEV_KEY,
    '--workers', '1', '--control', path.join(dir, 'c3.sock')]);
  assert.equal(twice.code, 1, twice.stderr);
  assert.match(twice.stderr, new RegExp(`^fdpass: bind 127\\.0\\.0\\.1:${free}: EADDRINUSE$`, 'm'));
  await listenAndClose(free); // the port is free: the first of the two listeners was closed again
  assert.ok(!fs.existsSync(path.join(dir, 'c3.sock')));

  const ok = await first.stop();
  assert.equal(ok.code, 0, ok.stderr);
});

/** `s` as a regular expression that matches exactly it. */
const literal = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

test('certificates: an unreadable path and an invalid certificate are refused before anything starts', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const missing = path.join(dir, 'missing.crt');
  const r1 = await runServe(['--listen', '127.0.0.1:0,tls', '--cert', missing, '--key', DEV_KEY, '--workers', '1', '--control', path.join(dir, 'c.sock')]);
  assert.equal(r1.code, 1, r1.stderr);
  assert.match(r1.stderr, new RegExp(`^fdpass: read ${literal(missing)}: ENOENT$`, 'm'));

  const bad = path.join(dir, 'bad.crt');
  fs.writeFileSync(bad, '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n');
  const r2 = await runServe(['--listen', '127.0.0.1:0,tls', '--cert', bad, '--key', DEV_KEY, '--workers', '1', '--control', path.join(dir, 'c.sock')]);
  assert.equal(r2.code, 1, r2.stderr);
  // The paths as they are: the repository may be cloned in a path with spaces.
  assert.match(r2.stderr, new RegExp(`^fdpass: --cert ${literal(bad)} --key ${literal(DEV_KEY)}: invalid \\(.+\\): \\S+$`, 'm'));

  // A key that does not belong to the certificate.
  const otherKey = path.join(dir, 'other.key');
  fs.writeFileSync(otherKey, (await import('node:crypto')).generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const r3 = await runServe(['--listen', '127.0.0.1:0,tls', '--cert', DEV_CERT, '--key', otherKey, '--workers', '1', '--control', path.join(dir, 'c.sock')]);
  assert.equal(r3.code, 1, r3.stderr);
  assert.match(r3.stderr, new RegExp(`^fdpass: --cert ${literal(DEV_CERT)} --key ${literal(otherKey)}: invalid \\(.*key values mismatch.*\\): \\S+$`, 'm'));

  for (const r of [r1, r2, r3]) assert.deepEqual(spawnedWorkers(r), []);
  t.diagnostic(`messages: ${[r1, r2, r3].map((r) => r.stderr.trim().split('\n').pop()).join(' | ')}`);
});

test('an APP that throws while loading: the error is named, exit non-zero, no hang, no worker left', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const r = await runServe(['--listen', '127.0.0.1:0', '--workers', '2', '--control', path.join(dir, 'c.sock'), path.join(APPS, 'throws-on-load.js')], { timeout: 10_000 });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^fdpass: worker \d+ \(pid \d+\) failed to start: .*fixture app exploded while loading.*: FDPASS_ERR_WORKER_START$/m);
  assert.ok(r.ms < 5000, `exited after ${r.ms} ms`);
  const workers = spawnedWorkers(r);
  assert.equal(workers.length, 2);
  assert.ok(workers.every((pid) => !alive(pid)), 'no worker outlives the primary');
  assert.ok(!fs.existsSync(path.join(dir, 'c.sock')));
});

test('a worker that never becomes ready: failure reported and exit non-zero within --ready-timeout', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const READY = 1500;
  const r = await runServe(['--listen', '127.0.0.1:0', '--workers', '2', '--ready-timeout', String(READY), '--control', path.join(dir, 'c.sock'),
    path.join(APPS, 'never-ready.js')], { timeout: 10_000 });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`^fdpass: worker \\d+ \\(pid \\d+\\) failed to start: not ready within ${READY} ms: FDPASS_ERR_WORKER_START$`, 'm'));
  assert.ok(r.ms >= READY && r.ms < READY + 4000, `exited after ${r.ms} ms`);
  assert.ok(spawnedWorkers(r).every((pid) => !alive(pid)), 'the stuck workers were killed');
  t.diagnostic(`exited ${r.ms} ms after start with --ready-timeout ${READY}`);
});

test('usage: a missing APP, a bad --ready-timeout', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const missing = path.join(dir, 'no-such-app.js');
  const r1 = await runServe(['--listen', '127.0.0.1:0', '--control', path.join(dir, 'c.sock'), missing]);
  assert.equal(r1.code, 1);
  assert.match(r1.stderr, new RegExp(`^fdpass: APP ${missing.replace(/[.]/g, '\\.')}: ENOENT$`, 'm'));
  const r2 = await runServe(['--listen', '127.0.0.1:0', '--ready-timeout', 'soon']);
  assert.equal(r2.code, 2);
  assert.match(r2.stderr, /^fdpass: --ready-timeout must be milliseconds, not 'soon': EUSAGE$/m);
});

test('a slow client that never finishes its headers is cut off by the worker (headersTimeout works without listen())', async (t) => {
  const scope = await trackFds(t);
  const dir = tmpDir(scope);
  const s = await startServe(['--listen', '127.0.0.1:0', '--workers', '1', '--control', path.join(dir, 'c.sock'), path.join(APPS, 'timeouts.js')], { owner: scope });
  const l = s.listener('http');
  const tree = await s.idleFds();
  const started = Date.now();
  const answer = await new Promise<string>((resolve, reject) => {
    const c = net.connect(l.port!, '127.0.0.1', () => c.write('GET / HTTP/1.1\r\nHost: x\r\n')); // never ends the headers
    let got = '';
    c.on('data', (d) => (got += d));
    c.on('close', () => resolve(got));
    c.on('error', reject);
    setTimeout(() => { c.destroy(); reject(new Error('not cut off within 5 s')); }, 5000).unref();
  });
  assert.match(answer, /^HTTP\/1\.1 408/);
  assert.ok(Date.now() - started < 3000);
  await s.expectNoFdLeak(tree);
  const ok = await s.stop();
  assert.equal(ok.code, 0, ok.stderr);
});
