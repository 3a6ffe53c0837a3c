/**
 * The loader: runtime.ts refuses a runtime it cannot serve (an old Node.js,
 * another platform, Bun, Deno) with UnsupportedRuntimeError before the addon
 * is loaded, and native.ts finds the addon the way an installed package
 * does (node-gyp-build: build/Release, else prebuilds/<platform>-<arch>/)
 * and reports a missing one with AddonLoadError.
 *
 * The refusals run in child Nodes whose process.versions / process.platform
 * / globals are made to lie before the loader runs; Bun and Deno also run
 * for real when scripts/other-runtimes.sh has installed them from npm (else
 * those tests skip, saying so). The addon cases load a copy of the package
 * laid out as an installed one (dist/src, package.json, node-gyp-build).
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import nodeGypBuild = require('node-gyp-build');
import { trackFds, type Scope } from '../helpers/scope';
import { tmpDir } from '../helpers/files';
import { childEnv } from '../helpers/process';
import { CLI, ROOT } from '../helpers/paths';

const DIST_SRC = path.join(ROOT, 'dist', 'src');
const RUNTIMES = path.join(process.env.FDPASS_RUNTIMES_DIR ?? path.join(ROOT, '.cache', 'runtimes'), 'node_modules', '.bin');

/** Runs `code` in a child Node; returns its JSON line. */
function runChild(code: string): Record<string, unknown> {
  const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', env: childEnv(), timeout: 20_000 });
  assert.equal(r.status, 0, `child failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

/** Child code that fakes what the runtime says of itself (`versions`: entries
 * of process.versions; `process`: properties of process; `globals`: names
 * on globalThis), then loads the loader in `dir` (a dist/src) and prints
 * what it threw. */
function loadWith(dir: string, fake: { versions?: Record<string, string>; process?: Record<string, string>; globals?: string[] }): string {
  return `
    const fake = ${JSON.stringify(fake)};
    for (const [k, v] of Object.entries(fake.versions ?? {})) Object.defineProperty(process.versions, k, { value: v, enumerable: true });
    for (const [k, v] of Object.entries(fake.process ?? {})) Object.defineProperty(process, k, { value: v });
    for (const g of fake.globals ?? []) globalThis[g] = {};
    const { FdpassError } = require(${JSON.stringify(path.join(dir, 'errors'))});
    try {
      require(${JSON.stringify(path.join(dir, 'native'))});
      console.log(JSON.stringify({ loaded: true }));
    } catch (e) {
      console.log(JSON.stringify({ name: e.name, code: e.code, runtime: e.runtime, message: e.message,
        fdpassError: e instanceof FdpassError, cause: e.cause ? e.cause.code ?? e.cause.message : null }));
    }`;
}

/** The CLI (`fdpass demo`) in a child whose runtime was faked as in loadWith(). */
function cliWith(fake: { versions?: Record<string, string>; process?: Record<string, string>; globals?: string[] }) {
  const code = `
    const fake = ${JSON.stringify(fake)};
    for (const [k, v] of Object.entries(fake.versions ?? {})) Object.defineProperty(process.versions, k, { value: v, enumerable: true });
    for (const [k, v] of Object.entries(fake.process ?? {})) Object.defineProperty(process, k, { value: v });
    for (const g of fake.globals ?? []) globalThis[g] = {};
    require(${JSON.stringify(path.join(DIST_SRC, 'cli', 'main'))}).main(['demo']);`;
  return spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', env: childEnv(), timeout: 20_000 });
}

const refused = (runtime: string, message: string | RegExp) => (r: Record<string, unknown>) => {
  assert.equal(r.name, 'UnsupportedRuntimeError');
  assert.equal(r.code, 'FDPASS_ERR_UNSUPPORTED_RUNTIME');
  assert.equal(r.runtime, runtime);
  assert.equal(r.fdpassError, true);
  assert.equal(r.cause, null);
  if (typeof message === 'string') assert.equal(r.message, message);
  else assert.match(r.message as string, message);
};

test('an old Node is refused with UnsupportedRuntimeError and the exact text CI looks for', async (t) => {
  await trackFds(t);
  const old = { versions: { node: '18.20.8' }, process: { version: 'v18.20.8' } };
  refused('node', 'needs Node.js >= 20 (this is v18.20.8)')(runChild(loadWith(DIST_SRC, old)));
  // What .ci/run sees from the CLI: one line, the prefix once, then the code.
  const cli = cliWith(old);
  assert.equal(cli.status, 1);
  assert.equal(cli.stderr, 'fdpass: needs Node.js >= 20 (this is v18.20.8): FDPASS_ERR_UNSUPPORTED_RUNTIME\n');
});

test('a platform other than Linux is refused with UnsupportedRuntimeError', async (t) => {
  await trackFds(t);
  refused('darwin', 'Linux only: this is darwin')(runChild(loadWith(DIST_SRC, { process: { platform: 'darwin' } })));
});

test('Bun and Deno are refused before the addon loads, whatever Node.js version they claim, by their versions or their globals', async (t) => {
  await trackFds(t);
  const bun = /^Bun 1\.4\.5 is not supported, only Node\.js: its Node-API has no libuv poll watcher \(uv_poll_init\)/;
  refused('bun', bun)(runChild(loadWith(DIST_SRC, { versions: { node: '26.3.0', bun: '1.4.5' }, globals: ['Bun'] })));
  refused('bun', /^Bun is not supported, only Node\.js: /)(runChild(loadWith(DIST_SRC, { globals: ['Bun'] })));
  const deno = /^Deno 2\.9\.6 is not supported, only Node\.js: /;
  refused('deno', deno)(runChild(loadWith(DIST_SRC, { versions: { node: '26.3.0', deno: '2.9.6' }, globals: ['Deno'] })));
  refused('deno', /^Deno is not supported, only Node\.js: /)(runChild(loadWith(DIST_SRC, { globals: ['Deno'] })));

  // The CLI: one line, one prefix, the stable code, exit 1.
  const cli = cliWith({ versions: { node: '26.3.0', bun: '1.4.5' } });
  assert.equal(cli.status, 1, cli.stderr);
  assert.match(cli.stderr, /^fdpass: Bun 1\.4\.5 is not supported, only Node\.js: [^\n]*: FDPASS_ERR_UNSUPPORTED_RUNTIME\n$/);
});

/** The refusal in a real Bun or Deno: the library through require() and
 * import, and the CLI; a clear error and exit 1, never a signal. */
for (const runtime of ['bun', 'deno'] as const) {
  const bin = path.join(RUNTIMES, runtime);
  const missing = fs.existsSync(bin) ? undefined : `${runtime} is not installed in ${path.dirname(path.dirname(RUNTIMES))} (scripts/other-runtimes.sh installs it from npm)`;
  test(`a real ${runtime} is refused with FDPASS_ERR_UNSUPPORTED_RUNTIME instead of crashing`, { skip: missing }, async (t) => {
    const scope = await trackFds(t);
    const dir = tmpDir(scope);
    const report = 'console.log(JSON.stringify({ name: e.name, code: e.code, runtime: e.runtime }))';
    fs.writeFileSync(path.join(dir, 'load.cjs'), `try { require(${JSON.stringify(DIST_SRC)}); console.log('loaded'); } catch (e) { ${report} }\n`);
    fs.writeFileSync(path.join(dir, 'load.mjs'), `try { await import(${JSON.stringify(path.join(DIST_SRC, 'index.mjs'))}); console.log('loaded'); } catch (e) { ${report} }\n`);
    // Deno's caches (SQLite files under ~/.cache/deno) are shared by every
    // deno on the machine, and one run in CI hung on them for 30 s: this
    // test's deno gets its own, and no update check.
    const env = childEnv(runtime === 'deno' ? { DENO_DIR: path.join(dir, 'deno-cache'), DENO_NO_UPDATE_CHECK: '1' } : {});
    const run = (args: string[]) => spawnSync(bin, runtime === 'deno' ? ['run', '-A', ...args] : args,
      { encoding: 'utf8', env, timeout: 30_000, cwd: dir });
    for (const file of ['load.cjs', 'load.mjs']) {
      const r = run([path.join(dir, file)]);
      assert.equal(r.signal, null, `${runtime} ${file} died of ${r.signal}: ${r.stderr}`);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), { name: 'UnsupportedRuntimeError', code: 'FDPASS_ERR_UNSUPPORTED_RUNTIME', runtime }, file);
    }
    const cli = run([CLI, 'demo']);
    assert.equal(cli.signal, null, cli.stderr);
    assert.equal(cli.status, 1, cli.stderr);
    assert.match(cli.stderr, new RegExp(`^fdpass: ${runtime === 'bun' ? 'Bun' : 'Deno'} [\\d.]+ is not supported, only Node\\.js: [^\\n]*: FDPASS_ERR_UNSUPPORTED_RUNTIME\\n$`));
  });
}

/** A copy of the package as npm installs it: dist/src, package.json and
 * node-gyp-build, with `prebuilds` (platform-arch directory -> addon file
 * to put there) and no build/. Returns its dist/src. */
function installedCopy(scope: Scope, prebuilds: Record<string, string>): string {
  const dir = tmpDir(scope);
  fs.cpSync(DIST_SRC, path.join(dir, 'dist', 'src'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
  fs.cpSync(path.join(ROOT, 'node_modules', 'node-gyp-build'), path.join(dir, 'node_modules', 'node-gyp-build'), { recursive: true });
  for (const [target, file] of Object.entries(prebuilds)) {
    fs.mkdirSync(path.join(dir, 'prebuilds', target), { recursive: true });
    fs.copyFileSync(file, path.join(dir, 'prebuilds', target, 'fdpass.glibc.node'));
  }
  return path.join(dir, 'dist', 'src');
}

/** The addon this process runs (build/Release, or a prebuilt one). */
const BUILT = nodeGypBuild.path(ROOT);
const HERE = `${process.platform}-${process.arch}`;

test('with no build/, the prebuilt addon for this platform and architecture is loaded (node-gyp-build)', async (t) => {
  const scope = await trackFds(t);
  const src = installedCopy(scope, { [HERE]: BUILT });
  assert.deepEqual(runChild(loadWith(src, {})), { loaded: true });
  const which = spawnSync(process.execPath, ['-e', `console.log(require('node-gyp-build').path(${JSON.stringify(path.dirname(path.dirname(src)))}))`],
    { encoding: 'utf8', cwd: path.dirname(path.dirname(src)), env: childEnv(), timeout: 20_000 });
  assert.equal(which.stdout.trim(), path.join(path.dirname(path.dirname(src)), 'prebuilds', HERE, 'fdpass.glibc.node'));
});

test('no addon for this platform: AddonLoadError names the prebuilt ones and how to build one, with node-gyp-build\'s error as cause', async (t) => {
  const scope = await trackFds(t);
  const other = process.arch === 'arm64' ? 'linux-x64' : 'linux-arm64';
  const r = runChild(loadWith(installedCopy(scope, { [other]: BUILT }), {}));
  assert.equal(r.name, 'AddonLoadError');
  assert.equal(r.code, 'FDPASS_ERR_ADDON_LOAD');
  assert.equal(r.fdpassError, true);
  assert.match(r.cause as string, /^No native build was found for platform=linux arch=/);
  assert.equal(r.message, `no native addon for ${HERE}: prebuilt ones are for ${other} (glibc) only, and none was built from source ` +
    '(`npm rebuild fdpass` builds one, as `npm ci` does in a clone of the repository; it needs python3, make, a C/C++ compiler and the Node.js headers)');

  const none = runChild(loadWith(installedCopy(scope, {}), {}));
  assert.match(none.message as string, new RegExp(`^no native addon for ${HERE}: none was built from source `));
});

test('an addon file that will not load is an AddonLoadError with require()\'s error as cause', async (t) => {
  const scope = await trackFds(t);
  const junk = path.join(tmpDir(scope), 'junk.node');
  fs.writeFileSync(junk, 'not an ELF file');
  const r = runChild(loadWith(installedCopy(scope, { [HERE]: junk }), {}));
  assert.equal(r.name, 'AddonLoadError');
  assert.equal(r.code, 'FDPASS_ERR_ADDON_LOAD');
  assert.equal(r.cause, 'ERR_DLOPEN_FAILED');
  assert.match(r.message as string, /^cannot load the native addon .*fdpass\.glibc\.node: /);
});
