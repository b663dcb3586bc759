#!/usr/bin/env bash
# The status API while a replay runs, then served off loopback behind a bearer token.
#
# Part 1 replays two real perpetuals (BTCUSDT, ETHUSDT from ../shared/data) with `atra live
# --replay`, paced (--speed 14400: four hourly bars a second), and serves its journal with
# `atra status-api` on 127.0.0.1 while the replay writes it. Once a position is open and
# BTCUSDT has a decision, it curls every endpoint: the answers are the journal at that moment,
# mid-replay (fewer cycles than the range has bars). Part 2 stops the replay and serves the
# journal on 0.0.0.0: refused without a token, and with one a request without the token is 401.
#
# Usage: docs/examples/status_api_demo.sh [| tee transcript.txt]
# Needs curl and python3 (JSON only). Environment: ATRA (the atra command, default `atra`),
# PYTHON (default python3), DATA (default ../shared/data beside the project), WORK (a folder
# for the journal and the logs, default a new temporary one, kept), FROM / TO / SPEED (the
# replay: 2024-01-03, 2024-01-10, 14400), HOST (the address part 2 is reached at, default this
# machine's first address from `hostname -I`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ATRA=${ATRA:-atra}
PYTHON=${PYTHON:-python3}
DATA=${DATA:-$ROOT/../shared/data}
WORK=${WORK:-$(mktemp -d -t atra-status-demo.XXXXXX)}
FROM=${FROM:-2024-01-03}
TO=${TO:-2024-01-10}
SPEED=${SPEED:-14400}
JOURNAL=$WORK/journal.sqlite
WAIT_S=${WAIT_S:-120}

command -v curl >/dev/null || { echo "status_api_demo: curl not found" >&2; exit 2; }
[ -d "$DATA" ] || { echo "status_api_demo: DATA=$DATA: no such folder" >&2; exit 2; }
mkdir -p "$WORK"
rm -f "$JOURNAL" "$JOURNAL-wal" "$JOURNAL-shm"

PIDS=()
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap stop_all EXIT

json() {  # json EXPR: evaluate EXPR on the JSON document on stdin (bound to d)
    "$PYTHON" -c "import json, sys; d = json.load(sys.stdin); print($1)"
}

show() {  # show URL [CURL ARGS]: the command and what the API answered
    local url=$1
    shift
    echo "\$ curl -s${*:+ $*} '$url'"
    curl -s "$@" "$url"
    echo
}

served_url() {  # served_url LOG PID: the URL `atra status-api` prints once it serves
    local deadline=$((SECONDS + 30)) url=""
    while [ -z "$url" ]; do
        url=$(sed -n 's/^status API of .*: \(http:[^ ]*\) (token .*$/\1/p' "$1" | head -n 1)
        if [ -z "$url" ]; then
            if ! kill -0 "$2" 2>/dev/null || [ $SECONDS -gt $deadline ]; then
                echo "status_api_demo: atra status-api did not start:" >&2
                cat "$1" >&2
                exit 1
            fi
            sleep 0.1
        fi
    done
    echo "$url"
}

TOTAL=$("$PYTHON" -c "
from datetime import datetime as D
print(int((D.fromisoformat('$TO') - D.fromisoformat('$FROM')).total_seconds() // 3600))")

echo "# Part 1: the status API during a replay ($FROM..$TO, $TOTAL hourly bars, speed $SPEED)"
echo "\$ atra live --replay --from $FROM --to $TO --speed $SPEED --data $DATA \\"
echo "    --symbols BTCUSDT,ETHUSDT --journal $JOURNAL --no-metrics &"
env -u ATRA__STATUS_API__TOKEN "$ATRA" live --replay --from "$FROM" --to "$TO" \
    --speed "$SPEED" --data "$DATA" --symbols BTCUSDT,ETHUSDT --journal "$JOURNAL" \
    --no-metrics >"$WORK/live.log" 2>&1 &
LIVE=$!
PIDS+=("$LIVE")
deadline=$((SECONDS + WAIT_S))
until [ -f "$JOURNAL" ]; do
    kill -0 "$LIVE" 2>/dev/null || { cat "$WORK/live.log" >&2; exit 1; }
    [ $SECONDS -le $deadline ] || { echo "status_api_demo: no journal yet" >&2; exit 1; }
    sleep 0.1
done

echo "\$ atra status-api --journal $JOURNAL --port 0 &"
env -u ATRA__STATUS_API__TOKEN "$ATRA" status-api --journal "$JOURNAL" --port 0 \
    >"$WORK/api.log" 2>&1 &
API=$!
PIDS+=("$API")
URL=$(served_url "$WORK/api.log" "$API")
echo "status API of $JOURNAL: $URL (token off)"

ready() {  # a position is open and BTCUSDT has a decision
    local open signals
    open=$(curl -sf "$URL/status" 2>/dev/null | json "len(d['open_positions'])" 2>/dev/null)
    signals=$(curl -sf "$URL/signals?symbol=BTCUSDT&limit=1" 2>/dev/null \
        | json "d['total']" 2>/dev/null)
    [ "${open:-0}" -gt 0 ] && [ "${signals:-0}" -gt 0 ]
}

# wait (polling, as a dashboard would) for an open position and a BTCUSDT decision
until ready; do
    kill -0 "$LIVE" 2>/dev/null || { echo "status_api_demo: the replay ended first" >&2; exit 1; }
    [ $SECONDS -le $deadline ] || { echo "status_api_demo: no position opened" >&2; exit 1; }
    sleep 0.2
done

show "$URL/health"
show "$URL/status"
show "$URL/trades?limit=3"
show "$URL/profit"
show "$URL/signals?symbol=BTCUSDT&limit=2"
BAR=$(curl -s "$URL/signals?symbol=BTCUSDT&limit=1" | json "d['decisions'][-1]['bar_time']")
show "$URL/explain/BTCUSDT/$BAR"
echo "\$ curl -s '$URL/openapi.json' | head -c 300"
curl -s "$URL/openapi.json" -o "$WORK/openapi.json"  # whole body first: head closing a pipe would fail curl
head -c 300 "$WORK/openapi.json"
echo
CYCLES=$(curl -s "$URL/health" | json "d['cycles']")
echo "# mid-replay: $CYCLES of $TOTAL cycles journalled; the replay is still running:"
kill -0 "$LIVE" && echo "atra live --replay (pid $LIVE) running"
stop_all
echo "# replay and API stopped (SIGTERM); the replay said: $(grep -m 1 'cycles journalled' "$WORK/live.log")"

echo
echo "# Part 2: off loopback (0.0.0.0) the API needs a bearer token"
echo "\$ atra status-api --journal $JOURNAL --host 0.0.0.0 --port 0"
rc=0
env -u ATRA__STATUS_API__TOKEN "$ATRA" status-api --journal "$JOURNAL" --host 0.0.0.0 \
    --port 0 >"$WORK/refused.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || { echo "status_api_demo: served off loopback without a token" >&2; exit 1; }
echo "exit code $rc: $(cat "$WORK/refused.log")"
TOKEN=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(24))')
echo "\$ ATRA__STATUS_API__TOKEN=<48 hex chars> atra status-api --journal $JOURNAL --host 0.0.0.0 --port 0 &"
ATRA__STATUS_API__TOKEN=$TOKEN "$ATRA" status-api --journal "$JOURNAL" --host 0.0.0.0 \
    --port 0 >"$WORK/api2.log" 2>&1 &
PIDS+=("$!")
URL2=$(served_url "$WORK/api2.log" "$!")
echo "status API of $JOURNAL: $URL2 (token required)"
HOST=${HOST:-$(hostname -I 2>/dev/null | awk '{print $1}')}
HOST=${HOST:-127.0.0.1}
OFF="http://$HOST:${URL2##*:}"
for path in /status /profit; do
    echo "\$ curl -s -o /dev/null -w '%{http_code}' '$OFF$path'    # no token"
    echo "HTTP $(curl -s -o /dev/null -w '%{http_code}' "$OFF$path")"
done
echo "\$ curl -s -H 'Authorization: Bearer <token>' '$OFF/profit'"
curl -s -w '\nHTTP %{http_code}\n' -H "Authorization: Bearer $TOKEN" "$OFF/profit"
echo "\$ curl -s '$OFF/health'    # /health never needs the token"
curl -s -w '\nHTTP %{http_code}\n' "$OFF/health"
stop_all
echo "# work folder: $WORK"
