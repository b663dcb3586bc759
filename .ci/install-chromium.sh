#!/usr/bin/env bash
# Make a Chromium binary available for tests/integration/test_report_render.py (a headless
# screenshot of the HTML report). Called by `make test` (target test-deps) and so by .ci/run.
#
# Idempotent and fast: does nothing when `chromium` or `chromium-browser` is already on PATH.
# Otherwise installs Debian's `chromium` package (no recommends), as root or through
# passwordless sudo.
#
# Exit codes: 0 = chromium available; 1 = it is missing and cannot be installed here (the
# message names the one command to run) or the install failed.
set -euo pipefail

log() { printf 'install-chromium: %s\n' "$*" >&2; }
find_chromium() { command -v chromium || command -v chromium-browser; }

if path=$(find_chromium); then
    log "chromium already installed at $path"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "chromium is not on PATH and apt-get is unavailable: install Chromium with this" \
        "system's package manager so that 'chromium' is on PATH, then rerun"
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        log "chromium is not on PATH and installing it needs root; run: sudo bash .ci/install-chromium.sh"
        exit 1
    fi
fi

start_s=$(date +%s)
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq; then
    log "warning: apt-get update failed; trying the install with the current package lists"
fi
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
    log "apt-get install chromium failed"
    exit 1
fi
if ! path=$(find_chromium); then
    log "the chromium package is installed but no chromium binary is on PATH"
    exit 1
fi
log "installed $path in $(($(date +%s) - start_s)) s"
