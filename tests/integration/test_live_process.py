"""`atra live --replay` as a real process: SIGKILL mid-run and restart (crash-only: the final
journal equals an uninterrupted run's), SIGTERM during a cycle (exit 0 within 5 s, journal
consistent)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from atra.adapters.journal.database import Journal

STEP = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
ENTRY = "import sys, atra.cli.live; from atra.cli import main; sys.exit(main(sys.argv[1:]))"
CONFIG = """
[live]
market = "perp"
timeframe = "1h"
[strategy]
params = { fast = 5.0, slow = 13.0 }
horizon_bars = 12
[risk]
max_open_positions = 2
[obs]
log_format = "json"
log_level = "WARNING"
"""


def _write_data(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, sym in enumerate(SYMBOLS):
        rng = np.random.default_rng(k)
        close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
        open_ = np.concatenate(([100.0], close[:-1]))
        pd.DataFrame(
            {
                "open_time": T0 - 100 * STEP + np.arange(n, dtype=np.int64) * STEP,
                "open": open_,
                "high": np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 0.004, n))),
                "low": np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 0.004, n))),
                "close": close,
                "volume": rng.uniform(1.0, 10.0, n),
            }
        ).to_parquet(folder / f"{sym}_perp_1h.parquet")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("live_process")
    _write_data(root / "data", 3_000)
    (root / "atra.toml").write_text(CONFIG)
    return root


def _cmd(workdir: Path, journal: Path, days: int) -> list[str]:
    to = pd.Timestamp(T0, unit="ms", tz="UTC") + pd.Timedelta(days=days)
    return [
        sys.executable,
        "-c",
        ENTRY,
        "live",
        "--config",
        str(workdir / "atra.toml"),
        "--replay",
        "--from",
        "2024-01-01",
        "--to",
        to.strftime("%Y-%m-%d"),
        "--data",
        str(workdir / "data"),
        "--symbols",
        ",".join(SYMBOLS),
        "--journal",
        str(journal),
        "--window-bars",
        "60",
        "--no-metrics",
    ]


def _cycles(journal: Path) -> int:
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(journal, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM cycles").fetchone()[0])
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def _wait_cycles(proc: subprocess.Popen[bytes], journal: Path, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while _cycles(journal) < at_least:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _snapshot(journal: Path) -> dict[str, list[tuple[Any, ...]]]:
    async def read() -> dict[str, list[tuple[Any, ...]]]:
        async with Journal.open(journal) as j:
            return await j.snapshot()

    return asyncio.run(read())


@pytest.mark.slow
def test_sigkill_and_restart_equals_an_uninterrupted_run(workdir: Path, tmp_path: Path) -> None:
    days = 12
    reference = tmp_path / "reference.sqlite"
    done = subprocess.run(_cmd(workdir, reference, days), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert _cycles(reference) == days * 24

    killed = tmp_path / "killed.sqlite"
    for at in (30, 120, 200):
        proc = subprocess.Popen(_cmd(workdir, killed, days), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            _wait_cycles(proc, killed, at)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    assert _cycles(killed) < days * 24
    done = subprocess.run(_cmd(workdir, killed, days), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    ref = _snapshot(reference)
    got = _snapshot(killed)
    assert len(ref["signals"]) > 10
    assert len(ref["fills"]) > 10
    for table in ref:
        assert got[table] == ref[table], table


@pytest.mark.slow
def test_sigterm_during_a_cycle_exits_cleanly(workdir: Path, tmp_path: Path) -> None:
    journal = tmp_path / "term.sqlite"
    proc = subprocess.Popen(_cmd(workdir, journal, 100), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        _wait_cycles(proc, journal, 40)
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=5)
        elapsed = time.monotonic() - t
    finally:
        if proc.poll() is None:  # pragma: no cover  (only when the test fails)
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert elapsed < 5.0
    assert b"cycles journalled" in out
    n = _cycles(journal)
    assert 40 <= n < 100 * 24

    with sqlite3.connect(journal) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        states = dict(db.execute("SELECT symbol, last_bar_ms FROM symbol_state").fetchall())
        last_cycle = db.execute("SELECT max(bar_time_ms) FROM cycles").fetchone()[0]
        taken = db.execute("SELECT symbol, bar_time_ms FROM signals WHERE take = 1").fetchall()
        positions = db.execute("SELECT symbol, signal_time_ms FROM positions").fetchall()
        orders = db.execute("SELECT client_order_id FROM orders").fetchall()
        position_ids = db.execute("SELECT position_id FROM positions").fetchall()
        entry_fills = db.execute("SELECT client_order_id FROM fills WHERE leg = 'entry'").fetchall()
        filled = db.execute("SELECT client_order_id FROM orders WHERE status = 'filled'").fetchall()
    # every symbol processed exactly up to the last journalled cycle: nothing half-written
    assert set(states.values()) == {last_cycle}
    assert sorted(taken) == sorted(positions)
    assert sorted(orders) == sorted(position_ids)
    assert sorted(entry_fills) == sorted(filled)

    # and a restart carries on from there
    proc2 = subprocess.Popen(_cmd(workdir, journal, 100), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_cycles(proc2, journal, n + 10)
    finally:
        proc2.send_signal(signal.SIGTERM)
        assert proc2.wait(timeout=5) == 0
