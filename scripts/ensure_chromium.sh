#!/bin/sh
# Put a headless Chromium, its WebDriver and a CJK font on the machine for the operator
# console's browser tests (tests/test_console_browser.py, Selenium). Debian packages
# chromium + chromium-driver; fonts-wqy-zenhei so Chinese pages do not render as empty boxes.
# Idempotent: does nothing when all three are present. Needs root (or sudo) to install.
set -eu
have_font() { fc-list 2>/dev/null | grep -qi -e 'wenquanyi' -e 'noto sans cjk'; }
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && have_font; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "chromium, chromium-driver or a CJK font missing: installing Debian's packages" >&2
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver fonts-wqy-zenhei >/dev/null
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && have_font
