#!/usr/bin/env bash
# The package as a user gets it: packs the tarball (npm pack: prebuilds and
# build) unless one is given, and installs it into fresh projects on what
# looks like a machine with no C compiler, no Node.js headers and no npm
# configuration, offline:
#   PATH: node, npm and sh only (no cc, gcc, g++, make, python3);
#   HOME: an empty directory (no ~/.npmrc, no ~/.cache/node-gyp);
#   npm_config_userconfig and npm_config_globalconfig: empty files (npm
#   refuses /dev/null for both: "double-loading config");
#   --offline: the tarball brings node-gyp-build (bundled); the TypeScript
#   project gets typescript, @types/node and undici-types as tarballs packed
#   from the repository's node_modules (the versions it pins);
#   npm_config_node_gyp: a trap that records any call of node-gyp.
# Then an fd goes between two processes with the installed package, through
# require() (CJS), import (ESM) and TypeScript (strict, skipLibCheck off,
# `types: []`, the TypeScript version the repository pins): test/consumer/.
# Once more with `npm install --ignore-scripts`.
#   scripts/pack-check.sh [TARBALL]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ $# -ge 1 ]; then
  tgz=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
else
  npm pack --pack-destination "$work" >"$work/pack.log" 2>&1 || { cat "$work/pack.log"; exit 1; }
  tgz=$(ls "$work"/fdpass-*.tgz)
fi
echo "=== $(basename "$tgz"): $(stat -c %s "$tgz") bytes; prebuilt: $(tar tzf "$tgz" | sed -n 's|^package/prebuilds/||p' | tr '\n' ' ')"

cache=$(npm config get cache)
mkdir -p "$work/deps"
for dep in typescript @types/node undici-types; do
  npm pack --silent --pack-destination "$work/deps" "./node_modules/$dep" >/dev/null
done

# A PATH with node and npm and nothing that builds.
mkdir -p "$work/bin" "$work/home"
: >"$work/userconfig"
: >"$work/globalconfig"
ln -s "$(command -v node)" "$work/bin/node"
ln -s /bin/sh "$work/bin/sh"
ln -s "$(readlink -f "$(command -v npm)")" "$work/bin/npm"
cat >"$work/node-gyp-trap.js" <<EOF
require('fs').appendFileSync('$work/node-gyp-called', process.argv.slice(2).join(' ') + '\n');
process.exit(1);
EOF
user_env=(env -i PATH="$work/bin" HOME="$work/home" TMPDIR="${TMPDIR:-/tmp}"
  npm_config_userconfig="$work/userconfig" npm_config_globalconfig="$work/globalconfig" npm_config_cache="$cache"
  npm_config_node_gyp="$work/node-gyp-trap.js" npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false)
for tool in cc gcc g++ c++ make python3 node-gyp; do
  if "${user_env[@]}" /bin/sh -c "command -v $tool" >/dev/null; then echo "pack-check: $tool is on the user's PATH" >&2; exit 1; fi
done

install() { # DIR NPM-ARGS...: a fresh project with the tarball installed
  local dir=$1; shift
  mkdir -p "$dir"
  cp "$root"/test/consumer/* "$dir/"
  (cd "$dir" && "${user_env[@]}" npm init -y >/dev/null && "${user_env[@]}" npm install --offline --no-audit "$@" >"$dir/install.log" 2>&1) ||
    { echo "pack-check: npm install $* failed:" >&2; cat "$dir/install.log" >&2; exit 1; }
  [ ! -e "$dir/node_modules/fdpass/build" ] || { echo "pack-check: the install built the addon from source in $dir" >&2; exit 1; }
  [ ! -e "$work/node-gyp-called" ] || { echo "pack-check: node-gyp was run: $(cat "$work/node-gyp-called")" >&2; exit 1; }
}
run() { # DIR COMMAND...: in the user's environment
  local dir=$1; shift
  (cd "$dir" && "${user_env[@]}" "$@")
}

echo "=== npm install (offline, no compiler, no headers, empty npm config)"
a="$work/project"
install "$a" "$tgz" "$work"/deps/*.tgz
run "$a" node roundtrip.cjs
run "$a" node roundtrip.mjs
run "$a" node node_modules/typescript/bin/tsc -p tsconfig.json
run "$a" node roundtrip-ts.mjs
# The module surface: the entries and ./package.json, nothing deeper.
run "$a" node -e "
  const assert = require('node:assert/strict');
  const cjs = require('fdpass');
  assert.equal(require('fdpass/package.json').name, 'fdpass');
  assert.throws(() => require('fdpass/dist/src/native'), { code: 'ERR_PACKAGE_PATH_NOT_EXPORTED' });
  import('fdpass').then((esm) => {
    assert.deepEqual(Object.keys(esm).filter((k) => k !== 'default').sort(), Object.keys(cjs).sort(), 'src/index.mjs lists the names of src/index.ts');
    assert.equal(esm.default, cjs);
    assert.equal(esm.UnixSocket, cjs.UnixSocket);
    console.log('exports: ' + Object.keys(cjs).length + ' names, the same from require() and import; no deep imports');
  });"

# Source maps with their sources, and the license.
run "$a" node -e "
  const fs = require('node:fs');
  const path = require('node:path');
  const root = path.dirname(require.resolve('fdpass/package.json'));
  const dist = path.join(root, 'dist', 'src');
  const maps = fs.readdirSync(dist, { recursive: true }).filter((f) => f.endsWith('.map'));
  for (const f of maps) {
    const map = JSON.parse(fs.readFileSync(path.join(dist, f), 'utf8'));
    for (const s of map.sources) {
      const src = path.resolve(path.dirname(path.join(dist, f)), map.sourceRoot ?? '', s);
      if (!fs.existsSync(src)) throw new Error(f + ' names ' + s + ', which is not in the package');
    }
  }
  if (!/^MIT License/.test(fs.readFileSync(path.join(root, 'LICENSE'), 'utf8'))) throw new Error('no MIT LICENSE');
  console.log('source maps: ' + maps.length + ', each with its sources in the package; LICENSE: MIT');"

echo "=== npm install --ignore-scripts"
b="$work/project-ignore-scripts"
install "$b" --ignore-scripts "$tgz"
run "$b" node roundtrip.cjs
echo "=== pack-check: passed"
