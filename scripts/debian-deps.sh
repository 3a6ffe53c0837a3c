#!/bin/sh
# Makes sure the Debian packages behind some commands are installed:
#   scripts/debian-deps.sh COMMAND[:PACKAGE] ...
# (PACKAGE defaults to COMMAND). Installs only what is missing, with
# apt-get, when it can (root, apt-get present); otherwise prints what is
# missing and exits 0: the tests that need a missing command skip with a
# message saying so. The one place the project installs system packages.
missing=""
for spec in "$@"; do
  cmd=${spec%%:*}
  pkg=${spec#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/bin/$cmd" ] || [ -x "/usr/sbin/$cmd" ] || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "fdpass: not installed:$missing (Debian: apt-get install$missing); tests that need them are skipped" >&2
  exit 0
fi
echo "fdpass: installing Debian packages:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt run (a parallel test setup, unattended upgrades) holds dpkg's
# lock for a while: wait for it rather than fail.
lock="-o DPkg::Lock::Timeout=300"
if ! { apt-get $lock update -qq && apt-get $lock install -y -qq --no-install-recommends $missing; } >/dev/null 2>&1; then
  echo "fdpass: could not install:$missing; tests that need them are skipped" >&2
fi
exit 0
