"""Implausible files through ``atra data import``: one line, non-zero exit, store untouched.

Each case writes one bad file aimed at a dataset the store already holds, runs the real CLI
(``atra.cli.main``), and checks the exit code, that stderr is one line naming the file, the
row and the rule, and that every file in the store is byte-identical afterwards. Stored
datasets with implausible times (written by older versions) make ``data list`` and
``data check`` fail with one line, never an ``OverflowError``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atra.cli import main
from atra.errors import DataError
from helpers_failures import KLINE_HEADER, T0, H, candles, funding


@pytest.fixture(autouse=True)
def plain_console(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


def store_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under the store (lock files and temp files included)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def with_times(frame: pd.DataFrame, times: np.ndarray) -> pd.DataFrame:
    return frame.assign(open_time=times.astype(np.int64))


def kline_lines(frame: pd.DataFrame) -> list[str]:
    lines = []
    for r in frame.itertuples(index=False):
        ot = int(r.open_time)
        lines.append(
            f"{ot},{r.open},{r.high},{r.low},{r.close},{r.volume},{ot + H - 1},"
            f"{r.close * r.volume},10,1.0,{r.close},0"
        )
    return lines


def bad_microseconds(d: Path) -> Path:
    path = d / "BTCUSDT_spot_1h.parquet"
    with_times(candles(5), candles(5).open_time.to_numpy() * 1000).to_parquet(path, index=False)
    return path


def bad_nanoseconds(d: Path) -> Path:
    path = d / "BTCUSDT_spot_1h.parquet"
    with_times(candles(5), candles(5).open_time.to_numpy() * 1_000_000).to_parquet(path)
    return path


def bad_seconds(d: Path) -> Path:
    path = d / "BTCUSDT_spot_1h.csv"
    with_times(candles(5), candles(5).open_time.to_numpy() // 1000).to_csv(path, index=False)
    return path


def bad_pre_1970(d: Path) -> Path:
    path = d / "BTCUSDT_spot_1h.parquet"
    with_times(candles(5), -(10 - np.arange(5)) * H).to_parquet(path, index=False)
    return path


def bad_before_launch(d: Path) -> Path:
    path = d / "BTCUSDT_spot_1h.parquet"
    candles(5, start=1_420_070_400_000).to_parquet(path, index=False)  # 2015-01-01
    return path


def bad_future(d: Path) -> Path:
    path = d / "BTCUSDT_spot_1h.parquet"
    now_bar = int(time.time() * 1000) // H * H
    candles(5, start=now_bar - 2 * H).to_parquet(path, index=False)  # last bar: now + 2 h
    return path


def bad_wrong_timeframe_name(d: Path) -> Path:
    path = d / "BTCUSDT_spot_5m.parquet"
    candles(24).to_parquet(path, index=False)  # hourly bars named 5m
    return path


def bad_eight_columns(d: Path) -> Path:
    path = d / "BTCUSDT-1h-2024-01.csv"
    lines = kline_lines(candles(6))
    lines[2] = ",".join(lines[2].split(",")[:8])
    path.write_text(KLINE_HEADER + "\n" + "\n".join(lines) + "\n")
    return path


def bad_funding_rate(d: Path) -> Path:
    path = d / "BTCUSDT_perp_funding.parquet"
    frame = funding(4)
    frame.loc[1, "funding_rate"] = 1e9
    frame.to_parquet(path, index=False)
    return path


def bad_price(d: Path) -> Path:
    path = d / "BTCUSDT_spot_1h.parquet"
    frame = candles(6)
    frame.loc[3, "high"] = 1e300
    frame.to_parquet(path, index=False)
    return path


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "microseconds": (
        bad_microseconds,
        r"open_time looks like microseconds \(1\.7e\+15 at row 1\); divide by 1,000 to get "
        r"milliseconds",
    ),
    "nanoseconds": (
        bad_nanoseconds,
        r"open_time looks like nanoseconds \(1\.7e\+18 at row 1\); divide by 1,000,000",
    ),
    "seconds": (
        bad_seconds,
        r"open_time looks like seconds \(1\.7e\+09 at row 1\); multiply by 1,000",
    ),
    "pre_1970": (bad_pre_1970, r"open_time is negative \(-3\.6e\+07 at row 1\)"),
    "before_launch": (
        bad_before_launch,
        r"open_time 2015-01-01T00:00:00Z at row 1 is before the earliest plausible time "
        r"2017-07-14T00:00:00Z",
    ),
    "future": (bad_future, r"open_time .* at row 5 is after the latest plausible time"),
    "wrong_timeframe_name": (
        bad_wrong_timeframe_name,
        r"bars are at least 1h apart \(no two rows 5m apart\), but the file name says 5m",
    ),
    "eight_columns": (bad_eight_columns, r"row 3: 8 of 12 columns \(expected open_time, "),
    "funding_1e9": (
        bad_funding_rate,
        r"row 2 \(funding_time 2024-01-01T08:00:00Z\): \|funding_rate\| > 0\.05 per interval",
    ),
    "price_1e300": (
        bad_price,
        r"row 4 \(open_time 2024-01-01T03:00:00Z\): price >= 1e\+09",
    ),
}


@pytest.fixture
def filled_store(tmp_path: Path) -> Path:
    """A store holding the datasets the bad files aim at (so a partial write would show)."""
    good = tmp_path / "good"
    good.mkdir()
    candles(48, start=T0 - 48 * H).to_parquet(good / "BTCUSDT_spot_1h.parquet", index=False)
    candles(48, start=T0 - 48 * H // 12, step=H // 12).to_parquet(
        good / "BTCUSDT_spot_5m.parquet", index=False
    )
    funding(6, start=T0 - 6 * 8 * H).to_parquet(good / "BTCUSDT_perp_funding.parquet")
    root = tmp_path / "store"
    assert main(["data", "import", str(good), "--data-dir", str(root)]) == 0
    return root


@pytest.mark.parametrize("case", sorted(CASES))
def test_implausible_file_is_refused_with_one_line(
    case: str, filled_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, rule = CASES[case]
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    path = make(bad_dir)
    before = store_hashes(filled_store)
    capsys.readouterr()
    code = main(["data", "import", str(path), "--data-dir", str(filled_store)])
    err = capsys.readouterr().err
    assert code == DataError.exit_code
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"DataError: {path}: "), lines[0]
    assert "Traceback" not in err
    assert re.search(rule, lines[0]), lines[0]
    assert store_hashes(filled_store) == before


def write_raw(path: Path, times: np.ndarray, time_col: str = "open_time") -> None:
    """A stored dataset as an older version could have written it (no validation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if time_col == "open_time":
        frame = candles(times.size).assign(open_time=times)
    else:
        frame = funding(times.size).assign(funding_time=times)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


@pytest.mark.parametrize(("factor", "unit"), [(1000, "microseconds"), (1_000_000, "nanoseconds")])
@pytest.mark.parametrize("command", ["list", "check"])
def test_implausible_stored_times_are_one_line_not_a_crash(
    factor: int, unit: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    path = root / "binance" / "spot" / "BTCUSDT" / "1h.parquet"
    write_raw(path, (T0 + np.arange(4, dtype=np.int64) * H) * factor)
    before = store_hashes(root)
    capsys.readouterr()
    code = main(["data", command, "--data-dir", str(root)])
    err = capsys.readouterr().err
    assert code == DataError.exit_code, err
    assert len(err.strip().splitlines()) == 1, err
    assert "OverflowError" not in err
    assert "Traceback" not in err
    assert f"open_time looks like {unit}" in err
    assert str(path) in err.replace("\n", "")
    assert store_hashes(root) == before


def test_stored_funding_in_seconds_is_reported_by_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    path = root / "binance" / "perp" / "BTCUSDT" / "funding.parquet"
    write_raw(path, (T0 + np.arange(4, dtype=np.int64) * 8 * H) // 1000, "funding_time")
    capsys.readouterr()
    assert main(["data", "check", "--data-dir", str(root)]) == DataError.exit_code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "funding_time looks like seconds (1.7e+09 at row 1); multiply by 1,000" in err


# ---- sane bounds from the config ([data.bounds]) ------------------------------------------


def fine_candles(d: Path) -> Path:
    path = d / "BTCUSDT_spot_1h.parquet"
    candles(6).to_parquet(path, index=False)  # prices 99 (a low) .. 106
    return path


def fine_funding(d: Path) -> Path:
    path = d / "BTCUSDT_perp_funding.parquet"
    funding(4).to_parquet(path, index=False)  # rates -1e-4 .. 3e-4
    return path


BOUND_CASES: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    # key: (a file every default bound accepts, the narrowed bound, the refusal)
    "max_price": (
        fine_candles,
        "max_price = 105.0",
        r"row 5 \(open_time 2024-01-01T04:00:00Z\): price >= 105 \(implausible; prices must "
        r"be below data\.bounds\.max_price = 105\)$",
    ),
    "min_price": (
        fine_candles,
        "min_price = 99.5",
        r"row 1 \(open_time 2024-01-01T00:00:00Z\): price < 99\.5 \(implausible; prices must "
        r"be at least data\.bounds\.min_price = 99\.5\)$",
    ),
    "max_abs_funding_rate": (
        fine_funding,
        "max_abs_funding_rate = 0.0002",
        r"row 4 \(funding_time 2024-01-02T00:00:00Z\): \|funding_rate\| > 0\.0002 per interval "
        r"\(implausible; the bound is data\.bounds\.max_abs_funding_rate = 0\.0002;",
    ),
}


@pytest.mark.parametrize("key", sorted(BOUND_CASES))
def test_a_narrowed_bound_refuses_an_otherwise_fine_file(
    key: str,
    filled_store: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.upper().startswith("ATRA__")]:
        monkeypatch.delenv(name)
    make, bound, rule = BOUND_CASES[key]
    files = tmp_path / "files"
    files.mkdir()
    path = make(files)
    config = tmp_path / "narrow.toml"
    config.write_text(f"[data.bounds]\n{bound}\n")
    before = store_hashes(filled_store)
    capsys.readouterr()
    args = ["data", "import", str(path), "--data-dir", str(filled_store)]
    assert main([*args, "--config", str(config)]) == DataError.exit_code
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"DataError: {path}: "), line
    assert re.search(rule, line), line
    assert store_hashes(filled_store) == before
    # the same bound from the environment, and the file is fine under the defaults
    monkeypatch.setenv(f"ATRA__DATA__BOUNDS__{key.upper()}", bound.split(" = ")[1])
    assert main(args) == DataError.exit_code
    assert re.search(rule, capsys.readouterr().err)
    monkeypatch.delenv(f"ATRA__DATA__BOUNDS__{key.upper()}")
    assert main(args) == 0
    assert store_hashes(filled_store) != before


def test_data_check_applies_the_narrowed_bound_to_stored_rows(
    filled_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "narrow.toml"
    config.write_text("[data.bounds]\nmax_price = 120.0\n")  # the stored 1h bars reach 148
    capsys.readouterr()
    assert main(["data", "check", "--data-dir", str(filled_store)]) == 0
    args = ["data", "check", "--data-dir", str(filled_store), "--config", str(config)]
    assert main(args) == DataError.exit_code
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "data.bounds.max_price = 120" in line
    assert line.startswith(f"DataError: {filled_store}"), line
