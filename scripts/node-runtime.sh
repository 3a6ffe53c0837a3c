#!/usr/bin/env bash
# Prints the directory of a Node.js runtime of major version $1 for Linux on
# architecture $2 (x64, the default, or arm64), taken from the npm
# registry's node-linux-<arch>@$1 package (bin/node, include/node) and kept
# in .cache/node-$1 (x64) or .cache/node-$1-<arch>. Nothing else is
# downloaded.
set -euo pipefail
v=${1:?usage: node-runtime.sh MAJOR [x64|arm64]}
arch=${2:-x64}
case "$arch" in x64|arm64) ;; *) echo "node-runtime.sh: no runtime for architecture '$arch' (x64 or arm64)" >&2; exit 2;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.cache/node-$v"
[ "$arch" = x64 ] || dir="$dir-$arch"
if [ ! -e "$dir/bin/node" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # --pack-destination: npm run from a lifecycle script (prepack) passes its
  # own on to this npm in the environment.
  (cd "$tmp" && npm pack "node-linux-$arch@$v" --pack-destination "$tmp" --silent >/dev/null 2>&1)
  mkdir -p "$dir"
  tar xzf "$tmp"/node-linux-"$arch"-*.tgz -C "$dir" --strip-components=1
fi
echo "$dir"
