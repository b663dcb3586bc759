#!/usr/bin/env bash
# Make a `prometheus` binary available for tests/integration/test_prometheus.py. Called by
# `make test` (target test-deps) and so by .ci/run.
#
# Idempotent and fast: does nothing when `prometheus` is already on PATH. Otherwise installs
# Debian's `prometheus` package (no recommends) without starting its system service: a temporary
# /usr/sbin/policy-rc.d forbids service starts during the install, and any prometheus service
# that runs anyway (systemd hosts) is stopped and disabled afterwards. The tests start their own
# prometheus on a random loopback port; nothing may be left listening on 9090.
#
# Exit codes: 0 = prometheus available; 1 = it is missing and cannot be installed here (no
# apt-get, or not root and no passwordless sudo: the message names the one command to run), the
# install failed, or a prometheus service is still listening on 9090.
set -euo pipefail

PORT=9090
log() { printf 'install-prometheus: %s\n' "$*" >&2; }

port_listening() {
    if command -v ss >/dev/null 2>&1; then
        ss -Hltn "sport = :$PORT" 2>/dev/null | grep -q .
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
    fi
}

if command -v prometheus >/dev/null 2>&1; then
    log "prometheus already installed at $(command -v prometheus)"
    prometheus --version 2>&1 | head -n 1
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "prometheus is not on PATH and apt-get is unavailable: install Prometheus >= 2.x with" \
        "this system's package manager so that 'prometheus' is on PATH, then rerun"
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        log "prometheus is not on PATH and installing it needs root; run:" \
            "sudo bash .ci/install-prometheus.sh"
        exit 1
    fi
fi

busy_before=0
if port_listening; then
    busy_before=1
    log "note: something already listens on port $PORT before the install (left alone)"
fi

# Forbid service starts during the install unless a policy already does (e.g. Docker images).
POLICY=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# installed by .ci/install-prometheus.sh for the install only\nexit 101\n' \
        | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 0755 "$POLICY"
    added_policy=1
fi
cleanup() {
    if [ "$added_policy" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
trap cleanup EXIT

start_s=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq; then
    log "warning: apt-get update failed; trying the install with the current package lists"
fi
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
    log "apt-get install prometheus failed"
    exit 1
fi
log "apt-get update + install took $(($(date +%s) - start_s)) s"

# A systemd host may have started or enabled the unit regardless: stop and disable it.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    "${SUDO[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
elif command -v service >/dev/null 2>&1; then
    "${SUDO[@]}" service prometheus stop >/dev/null 2>&1 || true
fi

if [ "$busy_before" -eq 0 ]; then
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        port_listening || break
        sleep 0.5
    done
    if port_listening; then
        log "a prometheus service still listens on port $PORT after the install; stop it"
        exit 1
    fi
fi

if ! command -v prometheus >/dev/null 2>&1; then
    log "the prometheus package is installed but no prometheus binary is on PATH"
    exit 1
fi
log "installed $(command -v prometheus); nothing new listens on port $PORT"
prometheus --version 2>&1 | head -n 1
