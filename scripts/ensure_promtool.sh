#!/bin/sh
# Put promtool on the machine for the alert-rule unit tests (deploy/prometheus/alerts_test.yml).
# It comes from Debian's `prometheus` package; installing it starts no daemon here.
# Idempotent: does nothing when promtool is already installed. Needs root (or sudo) to install.
set -eu
if command -v promtool >/dev/null 2>&1 || [ -x /usr/bin/promtool ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "promtool missing: installing Debian's prometheus package" >&2
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq prometheus >/dev/null
command -v promtool >/dev/null 2>&1 || [ -x /usr/bin/promtool ]
