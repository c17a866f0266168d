#!/usr/bin/env bash
# The report's browser test drives Debian's chromium and chromedriver. Installs them with apt-get
# when they are missing (as root, or through sudo); elsewhere says how to.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "setup: the browser test needs chromium and chromedriver: apt-get install -y chromium chromium-driver" >&2
        exit 1
    fi
fi
echo "setup: installing chromium and chromium-driver (apt-get)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver fonts-dejavu-core >/dev/null
