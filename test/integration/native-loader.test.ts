/**
 * src/native.ts refuses a runtime it cannot serve, and reports an addon that
 * will not load, with the library's error classes. Each case runs in a child
 * Node whose process.platform / process.version are made to lie before the
 * loader runs, or which loads a copy of the loader with no addon beside it.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { trackFds } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { childEnv } from '../helpers/process';

const DIST_SRC = path.resolve(__dirname, '..', '..', 'src');

/** Runs `code` in a child Node; returns its JSON line. */
function runChild(code: string): Record<string, unknown> {
  const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', env: childEnv(), timeout: 20_000 });
  assert.equal(r.status, 0, `child failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

/** Child code that fakes properties of process (`node`: process.versions.node),
 * loads the loader in `dir` (a dist/src), and prints what it threw. */
function loadWith(dir: string, fake: Record<string, string>): string {
  return `
    for (const [k, v] of Object.entries(${JSON.stringify(fake)})) {
      if (k === 'node') Object.defineProperty(process.versions, 'node', { value: v });
      else Object.defineProperty(process, k, { value: v });
    }
    const { FdpassError } = require(${JSON.stringify(path.join(dir, 'errors'))});
    try {
      require(${JSON.stringify(path.join(dir, 'native'))});
      console.log(JSON.stringify({ loaded: true }));
    } catch (e) {
      console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message,
        fdpassError: e instanceof FdpassError, cause: e.cause ? e.cause.code ?? e.cause.message : null }));
    }`;
}

test('an old Node is refused with UnsupportedRuntimeError and the exact text CI looks for', async (t) => {
  await trackFds(t);
  const r = runChild(loadWith(DIST_SRC, { node: '18.20.8', version: 'v18.20.8' }));
  assert.deepEqual(r, {
    name: 'UnsupportedRuntimeError', code: 'FDPASS_ERR_UNSUPPORTED_RUNTIME',
    message: 'fdpass needs Node.js >= 20 (this is v18.20.8)', fdpassError: true, cause: null,
  });

  // What .ci/run sees from the CLI: one line, the prefix once, then the code.
  const cli = spawnSync(process.execPath, ['-e', `
    Object.defineProperty(process.versions, 'node', { value: '18.20.8' });
    Object.defineProperty(process, 'version', { value: 'v18.20.8' });
    require(${JSON.stringify(path.join(DIST_SRC, 'cli', 'main'))}).main(['demo']);`],
  { encoding: 'utf8', env: childEnv(), timeout: 20_000 });
  assert.equal(cli.status, 1);
  assert.equal(cli.stderr, 'fdpass: fdpass needs Node.js >= 20 (this is v18.20.8): FDPASS_ERR_UNSUPPORTED_RUNTIME\n');
});

test('a platform other than Linux is refused with UnsupportedRuntimeError', async (t) => {
  await trackFds(t);
  const r = runChild(loadWith(DIST_SRC, { platform: 'darwin' }));
  assert.deepEqual(r, {
    name: 'UnsupportedRuntimeError', code: 'FDPASS_ERR_UNSUPPORTED_RUNTIME',
    message: 'fdpass supports Linux only (this is darwin)', fdpassError: true, cause: null,
  });
});

test('an addon that will not load is an AddonLoadError with require()\'s error as cause, its message without a "fdpass: " of its own (the CLI adds one)', async (t) => {
  const scope = await trackFds(t);
  // A copy of the loader where no build/Release/fdpass.node is beside it.
  const dir = tmpDir(scope);
  const src = path.join(dir, 'dist', 'src');
  fs.mkdirSync(src, { recursive: true });
  for (const f of ['native.js', 'errors.js']) fs.copyFileSync(path.join(DIST_SRC, f), path.join(src, f));
  const r = runChild(loadWith(src, {}));
  assert.equal(r.name, 'AddonLoadError');
  assert.equal(r.code, 'FDPASS_ERR_ADDON_LOAD');
  assert.equal(r.fdpassError, true);
  assert.equal(r.cause, 'MODULE_NOT_FOUND');
  assert.match(r.message as string, /^cannot load the native addon .*fdpass\.node: .*It is built by `npm ci`/s);
});
