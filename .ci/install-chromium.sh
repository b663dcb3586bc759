#!/usr/bin/env bash
# Install Debian's Chromium for the report-rendering test when it is absent. Best effort: without
# it the screenshot test skips (the report's plotly data is still checked without a browser).
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  echo "chromium: $(chromium --version 2>/dev/null || chromium-browser --version)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != "0" ]; then
  echo "chromium: not installed and apt-get/root unavailable; the screenshot test will skip"
  exit 0
fi
apt-get update -qq || echo "chromium: apt-get update failed; trying the install anyway"
if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
  echo "chromium: $(chromium --version)"
else
  echo "chromium: install failed; the screenshot test will skip"
fi
exit 0
