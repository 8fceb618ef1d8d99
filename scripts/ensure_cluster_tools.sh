#!/bin/sh
# Put what `make cluster` runs on the machine: Debian's HAProxy and etcd (their packages
# start no daemon here; the cluster starts its own), and setpriv (util-linux) to run
# Patroni/PostgreSQL as a non-root user. Patroni itself comes from PyPI into its own venv
# (deploy/patroni/requirements.txt), made from the system's /usr/bin/python3.
# Idempotent: installs nothing when the tools are present. Needs root (or sudo) to install.
set -eu
missing=""
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing="$missing haproxy"
command -v etcd >/dev/null 2>&1 || missing="$missing etcd-server"
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import venv, ensurepip" 2>/dev/null || missing="$missing python3-venv"
if [ -z "$missing" ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "cluster tools missing:$missing — installing Debian packages" >&2
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq $missing >/dev/null
