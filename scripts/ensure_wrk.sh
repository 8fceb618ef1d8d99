#!/bin/sh
# Put wrk (a C HTTP load generator with Lua scripting) on the machine for `make bench`'s HTTP
# figures: both sides of every HTTP ratio are driven by it (docs/BENCHMARKS.md).
# It comes from Debian's `wrk` package (4.1). Idempotent: does nothing when wrk is installed.
# Needs root (or sudo) to install.
set -eu
if command -v wrk >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "wrk missing: installing Debian's wrk package" >&2
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq wrk >/dev/null
command -v wrk >/dev/null 2>&1
