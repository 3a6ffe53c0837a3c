#!/usr/bin/env bash
# Builds the prebuilt addons that go into the package; `npm pack` and
# `npm publish` run it as "prepack":
#   prebuilds/linux-x64/fdpass.glibc.node     (this machine's compiler)
#   prebuilds/linux-arm64/fdpass.glibc.node   (cross-compiled: gcc-aarch64-linux-gnu)
# (no ABI tag: Node-API) made by prebuildify with node-gyp, against the headers of Node.js $NODE_MAJOR
# from the npm registry's node-linux-<arch> packages (scripts/node-runtime.sh):
# the addon uses Node-API only, so one binary serves every Node.js >= 20.
# They are stripped, and need glibc >= 2.28 and nothing else (check-prebuilds
# below). The build runs in a copy of native/, so build/ (the addon built from
# source, which a clone of the repository uses) is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
NODE_MAJOR=20

# The cross compiler, from Debian (installed if missing and possible).
sh scripts/debian-deps.sh aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu
for tool in gcc g++ make python3 aarch64-linux-gnu-gcc aarch64-linux-gnu-strip; do
  command -v "$tool" >/dev/null || { echo "fdpass: prebuilds need $tool (Debian: apt-get install gcc g++ make python3 gcc-aarch64-linux-gnu)" >&2; exit 1; }
done

# npm's own node-gyp, as the install script uses it.
gyp=${npm_config_node_gyp:-$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js}
[ -f "$gyp" ] || { echo "fdpass: node-gyp not found at $gyp" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r package.json binding.gyp native "$work/"
printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$(command -v node)" "$gyp" > "$work/node-gyp"
chmod +x "$work/node-gyp"

rm -rf prebuilds
build() { # ARCH [VAR=VALUE ...]: one prebuild
  local arch=$1; shift
  local nodedir
  nodedir=$(scripts/node-runtime.sh "$NODE_MAJOR" "$arch")
  local version
  version=$(node -p "require('$nodedir/package.json').version")
  rm -rf "$work/build"
  env "$@" npm_config_nodedir="$nodedir" npm_config_loglevel=warn PREBUILD_NODE_GYP="$work/node-gyp" \
    npx --no-install prebuildify --cwd "$work" --out "$root" --napi --strip --tag-libc \
      --arch "$arch" --target "$version" --cache "$work/.devdir"
}
build x64
build arm64 CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-gcc LINK=aarch64-linux-gnu-gcc \
  PREBUILD_STRIP_BIN=aarch64-linux-gnu-strip

# Each is a shared object for its machine that needs libc alone.
for arch in x64 arm64; do
  f=prebuilds/linux-$arch/fdpass.glibc.node
  want=$([ "$arch" = x64 ] && echo 'X86-64' || echo 'AArch64')
  readelf -h "$f" | grep -q "Machine:.*$want" || { echo "fdpass: $f is not an $want shared object" >&2; exit 1; }
  needed=$(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  [ "$needed" = "libc.so.6 " ] || { echo "fdpass: $f needs $needed(libc.so.6 only expected)" >&2; exit 1; }
  echo "fdpass: $f ($(stat -c %s "$f") bytes, needs $needed)"
done
