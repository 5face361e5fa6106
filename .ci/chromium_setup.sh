#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the report rendering test
# (tests/test_report_html.py). Idempotent: does nothing when chromium is already
# on PATH. Needs root and apt-get; installs no recommended extras.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "chromium_setup: present ($(command -v chromium))"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium_setup: apt-get not available; cannot install chromium" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "chromium_setup: must run as root to install chromium" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium
echo "chromium_setup: installed $(command -v chromium)"
