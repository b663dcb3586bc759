"""The status API while a replay runs: ``docs/examples/status_api_demo.sh`` done from Python.

``atra live --replay`` of two real perpetuals (../shared/data, paced at four hourly bars a
second) and ``atra status-api`` on its journal run as two processes; every endpoint is asked
over HTTP (httpx) while the replay writes the journal, until a position is open and BTCUSDT has
a decision. Each answer must be the journal at the moment it names (the cycle, the equity mark,
the decisions up to its newest bar), mid-replay (fewer cycles than the range has bars), and the
per-position unrealised P&L must add up to the equity mark's unrealised part in every
``/status`` answer polled along the way. Then the replay is stopped with SIGTERM (exit 0).
A second part serves the journal on 0.0.0.0 with a token: a request without it is refused.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from atra.adapters.journal.readonly import open_readonly
from atra.adapters.journal.records import CycleRecord, EquityRecord, PositionMark, SignalRecord
from atra.core.closed_trades import format_time
from atra.core.times import parse_time_ms

pytestmark = pytest.mark.shared_data

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO = PROJECT_ROOT / "docs" / "examples" / "status_api_demo.sh"
FROM, TO, SPEED = "2024-01-03", "2024-01-10", "14400"  # the demo script's defaults
TOTAL_BARS = 7 * 24
SYMBOLS = "BTCUSDT,ETHUSDT"
TOKEN = "demo-token-for-tests-0123456789abcdef"
LAUNCHER = "import sys, atra.cli.live, atra.cli.status; from atra.cli import main; sys.exit(main())"
WAIT_S = 90.0


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ATRA__")}
    return {**env, **extra}


def _atra(*args: str) -> list[str]:
    """``atra ARGS`` as the console script runs it, with this interpreter."""
    return [sys.executable, "-c", LAUNCHER, *args]


@dataclass
class Served:
    proc: subprocess.Popen[str]
    url: str
    reader: threading.Thread

    def stop(self) -> int:
        """SIGTERM; its exit code once its output is read to the end and closed."""
        rc = _stop(self.proc)
        self.reader.join(10.0)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return rc


def _serve(journal: Path, cwd: Path, *args: str, env: dict[str, str] | None = None) -> Served:
    """``atra status-api --journal J --port 0 ARGS``; waits for the URL it prints."""
    proc = subprocess.Popen(
        _atra("status-api", "--journal", str(journal), "--port", "0", *args),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env or _env(), cwd=cwd,
    )  # fmt: skip
    assert proc.stdout is not None
    out: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [out.put(x) for x in proc.stdout], daemon=True)
    reader.start()
    seen: list[str] = []
    while True:
        try:
            seen.append(out.get(timeout=30))
        except queue.Empty:
            _stop(proc)
            pytest.fail(f"atra status-api never printed its URL: {seen}")
        found = re.search(r": (http://\S+) \(token", seen[-1])
        if found:
            return Served(proc, found.group(1), reader)


def _stop(proc: subprocess.Popen[Any], timeout_s: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5.0)
        raise


@dataclass
class Seen:
    """What the API answered during the replay, and the journal read right after."""

    answers: dict[str, Any]
    polled: list[dict[str, Any]]
    """Every ``/status`` answer with an open position, polled while waiting."""
    replay_rc: int
    still_running: bool
    cycles: list[CycleRecord]
    equity: list[EquityRecord]
    marks: list[PositionMark]
    signals: list[SignalRecord]
    journal: Path


@pytest.fixture(scope="module")
def seen(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Seen:
    work = tmp_path_factory.mktemp("status-live")
    journal = work / "journal.sqlite"
    log = work / "live.log"
    with log.open("w") as out:
        replay = subprocess.Popen(
            _atra("live", "--replay", "--from", FROM, "--to", TO, "--speed", SPEED, "--data",
                  str(shared_data_dir), "--symbols", SYMBOLS, "--journal", str(journal),
                  "--no-metrics"),
            stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=work, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    api: Served | None = None
    try:
        deadline = time.monotonic() + WAIT_S
        while not journal.exists():
            assert replay.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the replay never created its journal"
            time.sleep(0.1)
        api = _serve(journal, work)
        polled: list[dict[str, Any]] = []
        with httpx.Client(base_url=api.url, timeout=10.0) as http:
            while True:  # poll as a dashboard would, until a position is open and BTC decided
                assert replay.poll() is None, "the replay ended before a position was open"
                assert time.monotonic() < deadline, f"no open position after {WAIT_S} s"
                status = http.get("/status")
                if status.status_code == 200 and status.json()["open_positions"]:
                    polled.append(status.json())
                    btc = http.get("/signals", params={"symbol": "BTCUSDT", "limit": 1}).json()
                    if btc["total"] > 0 and len({p["equity_time"] for p in polled}) >= 2:
                        break
                time.sleep(0.1)
            answers = {
                "health": http.get("/health").json(),
                "status": http.get("/status").json(),
                "trades": http.get("/trades", params={"limit": 1000}).json(),
                "profit": http.get("/profit").json(),
                "signals": http.get("/signals", params={"symbol": "BTCUSDT"}).json(),
            }
            bar = answers["signals"]["decisions"][-1]["bar_time"]
            answers["explain"] = http.get(f"/explain/BTCUSDT/{bar}").json()
            answers["openapi"] = http.get("/openapi.json").json()
            answers["health_after"] = http.get("/health").json()
        still_running = replay.poll() is None

        async def read() -> tuple[Any, ...]:
            async with open_readonly(journal) as j:
                return (await j.cycles(), await j.equity(), await j.position_marks(),
                        await j.signals("BTCUSDT"))  # fmt: skip

        cycles, equity, marks, signals = asyncio.run(read())
    finally:
        if api is not None:
            api.stop()
        rc = _stop(replay)
    return Seen(answers, polled, rc, still_running, cycles, equity, marks, signals, journal)


def test_answers_are_mid_replay(seen: Seen) -> None:
    assert seen.still_running, "the answers must be taken while the replay runs"
    assert seen.replay_rc == 0, "SIGTERM stops a replay cleanly"
    health, after = seen.answers["health"], seen.answers["health_after"]
    assert health["status"] == "ok"
    assert 0 < health["cycles"] <= after["cycles"] < TOTAL_BARS
    assert health["cycles"] <= seen.answers["profit"]["cycles"] <= after["cycles"]
    assert seen.answers["profit"]["range"] == f"{FROM}..{TO}"


def test_health_is_the_journal_at_its_cycle(seen: Seen) -> None:
    h = seen.answers["health"]
    upto = [c for c in seen.cycles if c.bar_time_ms <= h["last_bar_time_ms"]]
    assert h["cycles"] == len(upto)
    assert (upto[-1].bar_time_ms, upto[-1].status) == (h["last_bar_time_ms"], "ok")
    assert h["last_cycle_ended"] == format_time(upto[-1].ended_ms)


def _check_status(body: dict[str, Any], seen: Seen) -> None:
    """``body`` is the journal at its equity mark, and its positions add up."""
    t = parse_time_ms(body["equity_time"])
    [mark] = [e for e in seen.equity if e.bar_time_ms == t]
    assert (body["equity"], body["realized_pnl"]) == (mark.equity, mark.realized_pnl)
    marks = {m.position_id: m for m in seen.marks if m.bar_time_ms == t}
    held = [p for p in body["open_positions"] if p["status"] != "pending"]
    assert {p["position_id"] for p in held} == set(marks)
    for p in held:
        m = marks[p["position_id"]]
        assert p["mark_time"] == body["equity_time"]
        assert (p["mark_price"], p["unrealized_pnl"]) == (m.mark_price, m.unrealized_pnl)
        assert p["unrealized_pnl"] == pytest.approx(
            m.side * m.quantity * (p["mark_price"] - p["entry_price"]), rel=1e-12
        )
        assert p["unrealized_pct"] == pytest.approx(
            100.0 * m.side * (p["mark_price"] / p["entry_price"] - 1.0), rel=1e-9
        )
    total = sum(p["unrealized_pnl"] for p in held)
    assert total == pytest.approx(body["unrealized_pnl"], abs=1e-6)


def test_status_and_its_per_position_pnl_are_the_journals_marks(seen: Seen) -> None:
    body = seen.answers["status"]
    assert (body["mode"], body["execution"], body["timeframe"]) == ("replay", "paper", "1h")
    assert body["open_positions"], "the wait ended on an open position"
    _check_status(body, seen)
    # and at every point of the replay polled before
    times = {b["equity_time"] for b in seen.polled}
    assert len(times) >= 2
    for polled in seen.polled:
        _check_status(polled, seen)


def test_signals_and_explain_are_the_journals_decisions(seen: Seen) -> None:
    body = seen.answers["signals"]
    newest = body["decisions"][-1]["bar_time_ms"]
    upto = [s for s in seen.signals if s.bar_time_ms <= newest]
    assert body["total"] == len(upto) > 0
    assert [(d["bar_time_ms"], d["take"], d["entry"]) for d in body["decisions"]] == [
        (s.bar_time_ms, s.take, s.entry) for s in upto
    ]
    explained = seen.answers["explain"]
    assert explained["bar_time_ms"] == newest
    assert explained["decisions"] == [body["decisions"][-1]]


def test_trades_and_profit_are_consistent(seen: Seen) -> None:
    trades, profit = seen.answers["trades"], seen.answers["profit"]
    assert trades["total"] == len(trades["trades"]) == profit["trades_closed"]
    assert profit["symbols"] == SYMBOLS.split(",")
    assert {"/status", "/signals", "/explain/{symbol}/{time}"} <= set(
        seen.answers["openapi"]["paths"]
    )


def _lan_address() -> str:
    """This machine's address on its default route (no packet is sent); 127.0.0.1 without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: only the route is looked up
        except OSError:
            return "127.0.0.1"
        address: str = sock.getsockname()[0]
        return address


def test_off_loopback_a_request_without_the_token_is_refused(seen: Seen, tmp_path: Path) -> None:
    """(Serving off loopback without a token at all is refused: test_status_api and the demo.)"""
    api = _serve(
        seen.journal, tmp_path, "--host", "0.0.0.0", env=_env(ATRA__STATUS_API__TOKEN=TOKEN)
    )
    try:
        assert api.url.startswith("http://0.0.0.0:")
        url = api.url.replace("0.0.0.0", _lan_address())
        assert httpx.get(f"{url}/status").status_code == 401
        wrong = httpx.get(f"{url}/profit", headers={"Authorization": f"Bearer {TOKEN}x"})
        assert wrong.status_code == 401
        ok = httpx.get(f"{url}/profit", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200  # never needs the token
        with sqlite3.connect(seen.journal) as db:  # the journal as the stopped replay left it
            cycles = db.execute("SELECT count(*) FROM cycles").fetchone()[0]
        assert ok.json()["cycles"] == cycles >= len(seen.cycles)
    finally:
        assert api.stop() == 0


@pytest.mark.slow
def test_the_demo_script_shows_the_same(shared_data_dir: Path, tmp_path: Path) -> None:
    """``docs/examples/status_api_demo.sh`` itself, with curl: it runs to the end and its
    transcript shows the mid-replay answers and the refusals off loopback."""
    atra = Path(sys.executable).parent / "atra"
    if shutil.which("curl") is None or not atra.is_file():
        pytest.skip("needs curl and the atra console script beside this interpreter")
    done = subprocess.run(
        ["bash", str(DEMO)], capture_output=True, text=True, timeout=180, cwd=tmp_path,
        env=_env(ATRA=str(atra), PYTHON=sys.executable, DATA=str(shared_data_dir),
                 WORK=str(tmp_path / "work")),
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out[-2000:] + done.stderr[-2000:]
    mid = re.search(r"# mid-replay: (\d+) of (\d+) cycles journalled", out)
    assert mid is not None, out
    assert 0 < int(mid.group(1)) < int(mid.group(2)) == TOTAL_BARS
    for path in ("/health", "/status", "/trades", "/profit", "/signals?symbol=BTCUSDT",
                 "/explain/BTCUSDT/", "/openapi.json"):  # fmt: skip
        assert re.search(rf"\$ curl -s '?http://127\.0\.0\.1:\d+{re.escape(path)}", out), path
    assert '"mark_price":' in out
    assert '"unrealized_pct":' in out
    assert "is not loopback" in out
    assert out.count("HTTP 401") == 2
    assert out.count("HTTP 200") == 2  # /profit with the token, /health without
