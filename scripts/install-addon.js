#!/usr/bin/env node
// fdpass's install step (package.json "install"): makes sure an addon this
// Node.js can load is there.
//
// - An installed package takes its prebuilt binary
//   (prebuilds/<platform>-<arch>/, chosen by node-gyp-build) when one fits
//   and loads: nothing is compiled and nothing is downloaded.
// - Otherwise (another architecture, musl, a binary that will not load),
//   and always in a clone of the repository (a .git beside package.json) or
//   with --build-from-source, it builds from native/ with node-gyp. What
//   that needs (python3, make, a C compiler, a C++ compiler to link) is
//   checked first, and a failure names what is missing and how to get it.
//
// Plain CommonJS with no dependency but node-gyp-build (bundled in the
// package): it runs before anything is compiled.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const ROOT = path.join(__dirname, '..');
const TARGET = `${process.platform}-${process.arch}`;

function main() {
  const fromSource = buildFromSource();
  if (!fromSource && prebuiltLoads()) return;
  const what = fromSource ? 'building the addon from source'
    : `no prebuilt addon in this package fits ${TARGET} (they are for ${prebuilt() || 'no platform'}, glibc); building one from source`;
  const missing = missingTools();
  if (missing.length) fail(`${what} needs ${missing.join(', ')}: not found here`);
  const headers = localHeaders();
  const [cmd, ...args] = nodeGyp();
  const r = spawnSync(cmd, [...args, 'rebuild'], { cwd: ROOT, stdio: 'inherit' });
  if (r.status !== 0) {
    fail(`${what} failed: node-gyp rebuild ${r.error ? r.error.message : `exited with ${r.status ?? r.signal}`}` +
      (headers ? '' : '; no Node.js headers were found locally, so node-gyp had to download them ' +
        '(to build offline, set npm_config_nodedir to a Node.js install that has include/node)'));
  }
}

/** Whether to skip the prebuilt binaries: a clone of the repository, where
 * native/ is what is being worked on, or --build-from-source. */
function buildFromSource() {
  return fs.existsSync(path.join(ROOT, '.git')) || process.env.npm_config_build_from_source === 'true';
}

/** Whether a prebuilt binary fits this platform and loads in this Node.js. */
function prebuiltLoads() {
  let file;
  try {
    file = require('node-gyp-build').path(ROOT);
  } catch {
    return false; // none for this platform, architecture or libc
  }
  try {
    require(file);
    return true;
  } catch (err) {
    process.stderr.write(`fdpass: the prebuilt addon ${path.relative(ROOT, file)} does not load (${err.message.split('\n')[0]}); building from source\n`);
    return false;
  }
}

/** What node-gyp needs and this machine lacks. */
function missingTools() {
  const missing = [];
  if (!onPath(process.env.npm_config_python, process.env.PYTHON, 'python3')) missing.push('python3');
  if (!onPath('make')) missing.push('make');
  if (!onPath(firstWord(process.env.CC), 'cc', 'gcc')) missing.push('a C compiler (cc or gcc; or set CC)');
  if (!onPath(firstWord(process.env.CXX), 'c++', 'g++')) missing.push('a C++ compiler to link (c++ or g++; or set CXX)');
  return missing;
}

/** Whether node-gyp will find Node.js headers without downloading them. */
function localHeaders() {
  const nodedir = process.env.npm_config_nodedir;
  if (nodedir && fs.existsSync(path.join(nodedir, 'include', 'node', 'node_api.h'))) return true;
  const home = process.env.HOME || '';
  const caches = [process.env.npm_config_devdir, path.join(home, '.cache', 'node-gyp')].filter(Boolean);
  return caches.some((dir) => fs.existsSync(path.join(dir, process.versions.node, 'include', 'node', 'node_api.h')));
}

/** The node-gyp that npm runs its install scripts with, else ours, else PATH's. */
function nodeGyp() {
  if (process.env.npm_config_node_gyp) return [process.execPath, process.env.npm_config_node_gyp];
  try {
    return [process.execPath, require.resolve('node-gyp/bin/node-gyp.js')];
  } catch {
    return ['node-gyp'];
  }
}

/** Whether any of `names` (a command name or path; undefined skipped) is an executable file. */
function onPath(...names) {
  const dirs = (process.env.PATH || '').split(path.delimiter).filter(Boolean);
  return names.filter(Boolean).some((name) => name.includes('/')
    ? executable(name)
    : dirs.some((dir) => executable(path.join(dir, name))));
}

function executable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function firstWord(s) {
  return s ? s.trim().split(/\s+/)[0] : undefined;
}

/** Two lines on stderr, what failed and what to do, and exit 1 (npm then
 * fails the install: a package without its addon cannot work). */
function fail(why) {
  process.stderr.write(`fdpass: ${why}.\n` +
    'fdpass: the build needs python3, make, gcc and g++ (Debian, Ubuntu: apt-get install python3 make gcc g++; ' +
    'Alpine: apk add python3 make gcc g++), then `npm rebuild fdpass`.\n');
  process.exit(1);
}

function prebuilt() {
  try {
    return fs.readdirSync(path.join(ROOT, 'prebuilds')).sort().join(', ');
  } catch {
    return '';
  }
}

main();
