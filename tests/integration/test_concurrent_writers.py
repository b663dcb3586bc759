"""Concurrent writers of one store, as separate ``atra`` processes: nothing lost, exact counts.

* ``atra data import``: five processes import disjoint slices of one dataset at once; every
  round ends with exactly the sum of the slices, and the "N new row(s)" each reports sum to it
  (``bench/bench_concurrent_import.py`` runs the same check for 20 rounds of 5 x 20,000 rows).
* ``atra data download``: two processes download the same symbols from the fake exchange into
  one store at once; the candles each reports as added sum to what the store holds.
* ``atra live --symbols``: a symbol is checked by the config's validator, so a path in it never
  reaches a file name.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.adapters.store import CandleStore, DatasetKey
from atra.core.types import Market, Timeframe
from atra.sim.exchange import FakeExchange
from helpers_failures import serving

ATRA = str(Path(sys.executable).with_name("atra"))
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
M5 = 300_000
H1 = 3_600_000
NOV = 1_730_419_200_000  # 2024-11-01 00:00 UTC


def bars(first_ms: int, step_ms: int, n: int, seed: int = 0) -> pd.DataFrame:
    i = np.arange(n, dtype=np.int64)
    close = 100.0 + ((i + seed) % 89) * 0.5
    return pd.DataFrame(
        {
            "open_time": first_ms + i * step_ms,
            "open": close - 0.25,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.full(n, 2.0),
        }
    )


def run_all(commands: list[list[str]], cwd: Path) -> list[tuple[int, str, str]]:
    """Start every command at once, wait for all: (exit code, stdout, stderr) each."""
    procs = [
        subprocess.Popen(c, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    return [(p.returncode, o, e) for p, (o, e) in zip(procs, outs, strict=True)]


def new_rows(out: str) -> int:
    """The "N new row(s)" an ``atra data import`` printed."""
    found = re.search(r"([\d,]+) new row", out)
    assert found is not None, out
    return int(found[1].replace(",", ""))


@pytest.mark.slow
@pytest.mark.parametrize("round_no", range(3))
def test_five_concurrent_imports_of_disjoint_slices_lose_nothing(
    tmp_path: Path, round_no: int
) -> None:
    writers, rows = 5, 4000
    full = bars(T0, M5, writers * rows, seed=round_no)
    files = []
    for k in range(writers):
        path = tmp_path / f"slice{k}.parquet"
        full.iloc[k * rows : (k + 1) * rows].to_parquet(path, index=False)
        files.append(path)
    store = tmp_path / "store"
    flags = ["--data-dir", str(store), "--symbol", "BTCUSDT", "--market", "spot"]
    flags += ["--timeframe", "5m", "--exchange", "binance"]
    results = run_all([[ATRA, "data", "import", str(f), *flags] for f in files], tmp_path)
    assert [r[0] for r in results] == [0] * writers, [r[2] for r in results]
    reported = [new_rows(out) for _, out, _ in results]
    assert reported == [rows] * writers
    stored = CandleStore(store).read_candles(
        DatasetKey("binance", Market.SPOT, "BTCUSDT", Timeframe.M5)
    )
    pd.testing.assert_frame_equal(stored, full, check_exact=True)
    leftovers = [p.name for p in (store / "binance/spot/BTCUSDT").iterdir()]
    assert sorted(leftovers) == [".5m.parquet.lock", "5m.parquet"]  # no temp file left


@pytest.mark.slow
def test_two_concurrent_downloads_into_one_store_report_exact_counts(tmp_path: Path) -> None:
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    frames = {s: bars(NOV, H1, 720, seed=k) for k, s in enumerate(symbols)}
    store = tmp_path / "data"
    fake = FakeExchange({(Market.SPOT, s, Timeframe.H1): f for s, f in frames.items()})
    with serving(fake) as fx:
        args = [ATRA, "data", "download", "--exchange", "binance", "--market", "spot"]
        args += ["--symbols", ",".join(symbols), "--timeframe", "1h", "--since", "2024-11-01"]
        args += ["--until", "2024-12-01", "--base-url", fx.url, "--data-dir", str(store)]
        results = run_all([args, args], tmp_path)
    assert [r[0] for r in results] == [0, 0], [r[2] for r in results]
    added = dict.fromkeys(symbols, 0)
    for _, out, _ in results:
        for sym, n in re.findall(r"^(\w+): ok, ([\d,]+) candles added", out, flags=re.M):
            added[sym] += int(n.replace(",", ""))
    assert added == dict.fromkeys(symbols, 720)  # each row counted by exactly one process
    for sym, frame in frames.items():
        stored = CandleStore(store).read_candles(
            DatasetKey("binance", Market.SPOT, sym, Timeframe.H1)
        )
        pd.testing.assert_frame_equal(stored, frame, check_exact=True)


CONFIG = """
[data]
data_dir = "store"
[live]
symbols = ["BTCUSDT"]
market = "perp"
timeframe = "1h"
[obs]
log_format = "json"
log_level = "ERROR"
"""


@pytest.mark.parametrize("symbols", ["../OUTSIDE/X", "/etc/passwd", "BTCUSDT,../../x", "B"])
def test_live_symbols_outside_the_data_folder_are_refused(tmp_path: Path, symbols: str) -> None:
    (tmp_path / "atra.toml").write_text(CONFIG)
    (tmp_path / "flat").mkdir()
    outside = tmp_path / "OUTSIDE"
    outside.mkdir()
    bars(T0, H1, 200).to_parquet(outside / "X_perp_1h.parquet")  # what the path would reach
    args = [ATRA, "live", "--config", "atra.toml", "--replay", "--from", "2024-01-02"]
    args += ["--to", "2024-01-03", "--data", "flat", "--symbols", symbols]
    args += ["--journal", "j.sqlite", "--no-metrics"]
    [(code, _out, err)] = run_all([args], tmp_path)
    assert code == 3, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ConfigError: --symbols: symbol ")
    assert "expected 2-30 upper-case letters and digits" in lines[0]
    assert not (tmp_path / "j.sqlite").exists()  # refused before any journal is written
