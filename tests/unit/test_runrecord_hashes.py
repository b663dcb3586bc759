"""Run-record hashes: canonical config, input frames, trade lists, and the code version."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import atra
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError
from atra.research.runrecord.hashes import (
    TRADE_COLUMNS,
    code_version,
    hash_config,
    hash_frames,
    normalize_trades,
    trades_sha256,
)
from helpers_runs import bar_times, fake_trades, one_line_error

# --------------------------------------------------------------------------------------------
# hashes


def test_hash_config_is_canonical() -> None:
    a = {"b": 1, "a": {"y": [1, 2], "x": 0.5}}
    b = {"a": {"x": 0.5, "y": [1, 2]}, "b": 1}
    assert hash_config(a) == hash_config(b)
    assert hash_config(a) != hash_config({**a, "b": 2})
    assert len(hash_config(a)) == 64


def test_hash_config_accepts_common_values() -> None:
    cfg = {
        "path": Path("data"),
        "n": np.int64(3),
        "x": np.float64(0.25),
        "tags": {"b", "a"},
        "pair": (1, 2),
        "tf": Timeframe.H1,
        "market": Market.PERP,
    }
    same = {
        "path": "data",
        "n": 3,
        "x": 0.25,
        "tags": ["a", "b"],
        "pair": [1, 2],
        "tf": "1h",
        "market": "perp",
    }
    assert hash_config(cfg) == hash_config(same)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"x": math.nan}, "non-finite"),
        ({"x": object()}, "type object"),
        ({"x": {(1, 2): 3}}, "keys must be"),
    ],
)
def test_hash_config_rejects_unhashable(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        hash_config(config)
    one_line_error(exc, fragment)


def candles(n: int = 5, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "open_time": bar_times(n, Timeframe.H1),
            "close": np.linspace(100.0, 110.0, n) + shift,
            "symbol": ["BTCUSDT"] * n,
        }
    )


def test_hash_frames_is_content_hash() -> None:
    a, b = candles(), candles(shift=1.0)
    assert hash_frames([a, b]) == hash_frames([candles(), candles(shift=1.0)])
    assert hash_frames([a, b]) != hash_frames([b, a])  # order is part of the input
    assert hash_frames([a]) != hash_frames([candles(shift=1e-12)])
    assert hash_frames([a]) != hash_frames([a.rename(columns={"close": "Close"})])
    assert hash_frames([a]) == hash_frames([a.set_index("open_time", drop=False)])  # index ignored
    changed = a.copy()
    changed.loc[2, "symbol"] = "ETHUSDT"
    assert hash_frames([a]) != hash_frames([changed])
    with_none = a.astype({"symbol": object})
    with_none.loc[0, "symbol"] = None
    assert hash_frames([with_none]) != hash_frames([a])
    assert hash_frames([]) != hash_frames([a.iloc[:0]])
    nullable = a.assign(n=pd.array([1, None, 3, 4, 5], dtype="Int64"))
    assert hash_frames([nullable]) == hash_frames([nullable.copy()])
    assert hash_frames([nullable]) != hash_frames([nullable.assign(n=pd.array([1, 2, 3, 4, 5]))])
    aware = a.assign(ts=pd.to_datetime(a["open_time"], unit="ms", utc=True))
    assert hash_frames([aware]) == hash_frames([aware.copy()])
    cat = a.assign(symbol=pd.Categorical(a["symbol"]))
    assert hash_frames([cat]) == hash_frames([cat.copy()])


def test_trades_hash_ignores_row_order_and_extra_columns() -> None:
    tr = fake_trades(20, Timeframe.H1)
    shuffled = tr.sample(frac=1.0, random_state=3)
    assert trades_sha256(tr) == trades_sha256(shuffled)
    assert trades_sha256(tr) == trades_sha256(tr.drop(columns=["quantity", "exit_bar"]))
    assert trades_sha256(tr) == trades_sha256(tr.assign(note="x"))


def test_trades_hash_canonicalises_names_codes_and_zero() -> None:
    tr = fake_trades(8, Timeframe.H1)
    renamed = tr.rename(columns={"entry_time_ms": "entry_ms", "exit_time_ms": "exit_ms"})
    assert trades_sha256(tr) == trades_sha256(renamed)
    codes = tr.assign(reason=tr["reason"].map({"SL": 1, "TP1": 2, "TP2": 3, "TIME": 4}))
    assert trades_sha256(tr) == trades_sha256(codes)
    words = tr.assign(side=tr["side"].map({1: "long", -1: "SHORT"}))
    assert trades_sha256(tr) == trades_sha256(words)
    cat = tr.assign(reason=pd.Categorical(tr["reason"]))
    assert trades_sha256(tr) == trades_sha256(cat)
    zero = tr.assign(funding=0.0)
    assert trades_sha256(zero) == trades_sha256(tr.assign(funding=-0.0))


def test_trades_hash_sees_every_change() -> None:
    tr = fake_trades(8, Timeframe.H1)
    base = trades_sha256(tr)
    for col in ("entry_price", "exit_price", "pnl", "fees", "slippage", "funding"):
        changed = tr.copy()
        changed.loc[3, col] = changed.loc[3, col] * (1 + 1e-15) + 1e-300
        assert trades_sha256(changed) != base, col
    assert trades_sha256(tr.assign(side=-tr["side"])) != base
    assert trades_sha256(tr.assign(reason="SL")) != base
    assert trades_sha256(tr.iloc[1:]) != base
    assert trades_sha256(tr.assign(exit_time_ms=tr["exit_time_ms"] + 1)) != base


@pytest.mark.parametrize(
    ("mutate", "fragments"),
    [
        (lambda t: t.drop(columns=["pnl", "fees"]), ("missing trade column(s) pnl, fees",)),
        (lambda t: t.assign(pnl=[math.nan] + [1.0] * (len(t) - 1)), ("pnl at row 0", "finite")),
        (lambda t: t.assign(fees=["x"] * len(t)), ("fees at row 0",)),
        (lambda t: t.assign(side=0), ("side 0",)),
        (lambda t: t.assign(side="flat"), ("side 'flat'",)),
        (lambda t: t.assign(entry_time_ms=None), ("entry_ms at row 0 is missing",)),
    ],
)
def test_bad_trades_are_one_line_data_errors(
    mutate: Callable[[pd.DataFrame], pd.DataFrame], fragments: tuple[str, ...]
) -> None:
    with pytest.raises(DataError) as exc:
        trades_sha256(mutate(fake_trades(4, Timeframe.H1)))
    one_line_error(exc, *fragments)


def test_normalize_trades_orders_columns() -> None:
    frame = normalize_trades(fake_trades(4, Timeframe.H1))
    assert tuple(frame.columns[: len(TRADE_COLUMNS)]) == TRADE_COLUMNS
    assert list(frame.columns[len(TRADE_COLUMNS) :]) == ["quantity", "exit_bar"]
    assert frame["entry_ms"].dtype == np.int64


_money = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(
    pnls=st.lists(_money, min_size=1, max_size=12),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_trades_hash_survives_shuffle_and_csv_round_trip(
    pnls: list[float], seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    n = len(pnls)
    tr = fake_trades(n, Timeframe.H1).assign(
        pnl=pnls, fees=[abs(p) / 7.0 for p in pnls], symbol=[f"S{i % 2}" for i in range(n)]
    )
    expected = trades_sha256(tr)
    assert trades_sha256(tr.sample(frac=1.0, random_state=seed % 1000)) == expected
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    normalize_trades(tr).to_csv(path, index=False)
    back = pd.read_csv(path, dtype={"symbol": str, "reason": str})
    assert trades_sha256(back) == expected


# --------------------------------------------------------------------------------------------
# code version


def test_code_version_outside_git_is_the_package_version(tmp_path: Path) -> None:
    assert code_version(tmp_path) == atra.__version__


def test_code_version_in_a_git_checkout(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    (tmp_path / "a.txt").write_text("1\n")
    git("init", "-q")
    git("add", "a.txt")
    git("commit", "-q", "-m", "init")
    head = git("rev-parse", "HEAD")
    assert code_version(tmp_path) == f"{atra.__version__}+g{head}"
    (tmp_path / "b.txt").write_text("untracked files do not make a checkout dirty\n")
    assert code_version(tmp_path) == f"{atra.__version__}+g{head}"
    (tmp_path / "a.txt").write_text("2\n")
    assert code_version(tmp_path) == f"{atra.__version__}+g{head}+dirty"


def test_code_version_of_the_package_names_the_version() -> None:
    assert code_version().startswith(atra.__version__)


def test_code_version_without_a_usable_directory(tmp_path: Path) -> None:
    assert code_version(tmp_path / "missing") == atra.__version__
