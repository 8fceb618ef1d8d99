#!/bin/sh
# Put PHP with the SOAP extension on the machine for the KaKaTong test that runs seed 002's
# own PHP SoapClient example (tests/test_kkt_soap.py). Debian packages php-cli + php-soap.
# Idempotent: does nothing when `php -m` already lists soap. Needs root (or sudo) to install.
set -eu
if command -v php >/dev/null 2>&1 && php -m 2>/dev/null | grep -qx soap; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "php-soap missing: installing Debian's php-cli and php-soap packages" >&2
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq php-cli php-soap >/dev/null
php -m | grep -qx soap
