#!/bin/sh
# Debian packages that `make test` (chromium, docker-compose) and `make bench` (wrk) need.
# Usage: tools/system-packages.sh COMMAND:PACKAGE ...  (COMMAND: a name on PATH or a path)
# Installs the missing ones when apt-get can run (as root, or with password-less sudo);
# otherwise stops at once, before any long run, with the one command to type.
set -eu
missing=""
for pair in "$@"; do
  cmd=${pair%%:*}
  pkg=${pair#*:}
  if [ ! -x "$cmd" ] && ! command -v "$cmd" >/dev/null 2>&1; then
    missing="$missing $pkg"
  fi
done
[ -z "$missing" ] && exit 0

if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    sudo=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    sudo="none"
  fi
  if [ "$sudo" != none ]; then
    echo "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    if $sudo apt-get update -qq && $sudo apt-get install -y -qq $missing >/dev/null; then
      exit 0
    fi
  fi
fi
echo "missing Debian packages:$missing" >&2
echo "run this once, then the make command again:  sudo apt-get install -y$missing" >&2
exit 1
