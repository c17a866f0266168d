#!/usr/bin/env bash
# The report's browser test drives Debian's chromium and chromedriver. Installs them with apt-get
# when they are missing and this runs as root; never through sudo: as another user it says what
# to run and stops, so `make test` never asks for a password or raises its own privileges.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
PACKAGES="chromium chromium-driver fonts-dejavu-core"
if [ "$(id -u)" -ne 0 ]; then
    echo "setup: the report's browser test (tests/test_report.py) needs chromium and chromedriver, which are" >&2
    echo "setup: not installed. Install them once as root, then rerun:" >&2
    echo "setup:     sudo apt-get install -y $PACKAGES" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: the report's browser test needs chromium and chromedriver; install them with your system's" >&2
    echo "setup: package manager (this script knows apt-get: $PACKAGES)" >&2
    exit 1
fi
echo "setup: installing $PACKAGES (apt-get, as root)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PACKAGES >/dev/null
