#!/usr/bin/env bash
# Installs the JavaScript runtimes that fdpass refuses (Bun, Deno) from the
# npm registry's `bun` and `deno` packages (their binaries come in
# platform packages, nothing is downloaded at install) into
# .cache/runtimes, and prints that directory; the runtime-refusal tests run
# them from its node_modules/.bin and skip, saying so, where they are not.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.cache/runtimes"
BUN=1.4.5
DENO=2.9.6
if [ ! -x "$dir/node_modules/.bin/bun" ] || [ ! -x "$dir/node_modules/.bin/deno" ]; then
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{"private":true}' >"$dir/package.json"
  (cd "$dir" && npm install --no-audit --no-fund --no-save "bun@$BUN" "deno@$DENO" >"$dir/install.log" 2>&1) ||
    echo "other-runtimes.sh: could not install bun@$BUN and deno@$DENO (see $dir/install.log); their tests will skip" >&2
fi
echo "$dir"
