"""The workload backtest against the plain-Python reference (tests/reference_workload.py) and
WORKLOAD.md's published figures: on the small synthetic set and on the real spot 1h data.

Real data has gaps (missing hours). As WORKLOAD.md's reference does, bars are positions in each
symbol's own rows: the indicators run over the rows as they are and a trade's 48 bars are the
next 48 rows, whatever their times; the portfolio is marked on the union of the symbols' times
(a book keeps its last mark where it has no bar, and is worth 1 before its first bar).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import reference_workload as rw  # tests/ is on sys.path through tests/conftest.py
from atra.core.backtest.engine import WorkloadResult, run_workload
from helpers_workload import generate_small_set

NAMES = {"sl": "SL", "tp": "TP1", "time": "TIME"}


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_small_set(tmp_path_factory)


def _assert_same(res: WorkloadResult, ref: rw.ReferenceResult) -> None:
    assert res.symbols == ref.symbols
    assert res.bars == ref.bars
    ours_ev = list(
        zip(
            res.events["symbol"].astype(str),
            res.events["t"].tolist(),
            res.events["side"].tolist(),
            res.events["label"].tolist(),
            strict=True,
        )
    )
    assert ours_ev == [(e.symbol, e.signal_bar, e.side, e.label) for e in ref.events]
    tr = res.trades
    assert len(tr) == len(ref.trades)
    ints = list(
        zip(
            tr["symbol"].astype(str),
            tr["side"].tolist(),
            tr["signal_bar"].tolist(),
            tr["entry_bar"].tolist(),
            tr["exit_bar"].tolist(),
            tr["entry_time_ms"].tolist(),
            tr["exit_time_ms"].tolist(),
            tr["reason"].astype(str),
            strict=True,
        )
    )
    assert ints == [
        (
            t.symbol,
            t.side,
            t.signal_bar,
            t.entry_bar,
            t.exit_bar,
            t.entry_time_ms,
            t.exit_time_ms,
            NAMES[t.exit_reason],
        )
        for t in ref.trades
    ]
    for col, attr in (
        ("entry_price", "entry_price"),
        ("exit_price", "exit_price"),
        ("equity_before", "equity_before"),
        ("equity_after", "equity_after"),
        ("net_return", "net_return"),
    ):
        expected = np.array([getattr(t, attr) for t in ref.trades])
        np.testing.assert_allclose(tr[col].to_numpy(), expected, rtol=1e-12, atol=0, err_msg=col)
    np.testing.assert_array_equal(res.open_time_ms, ref.open_time_ms)
    np.testing.assert_allclose(res.portfolio_returns, ref.portfolio_returns, rtol=0, atol=1e-12)
    assert res.total_return == pytest.approx(ref.total_return, abs=1e-9)
    assert res.win_rate == pytest.approx(ref.win_rate, abs=1e-9)
    assert res.sharpe == pytest.approx(ref.sharpe, abs=1e-9)


def test_small_set_matches_reference_and_published_figures(small_dir: Path) -> None:
    frames = rw.load_folder(small_dir)
    res = run_workload(frames)
    _assert_same(res, rw.run_reference(frames))
    # WORKLOAD.md, to the digits shown
    assert len(res.events) == 1_698
    assert res.label_counts == {-1: 1_088, 0: 28, 1: 582}
    assert len(res.trades) == 1_630
    assert round(res.total_return, 6) == -0.048254
    assert round(res.win_rate, 4) == 0.3497
    assert round(res.sharpe, 4) == -0.4469
    assert res.annualization_factor == pytest.approx(math.sqrt(365 * 24))


@pytest.mark.shared_data
def test_real_spot_data_with_gaps_matches_reference(shared_data_dir: Path, tmp_path: Path) -> None:
    files = sorted(shared_data_dir.glob("*_spot_1h.parquet"))
    assert len(files) == 10
    for f in files:
        (tmp_path / f.name).symlink_to(f)
    frames = rw.load_folder(tmp_path)
    gaps = sum(
        int((np.diff(df["open_time"].to_numpy()) != 3_600_000).sum()) for df in frames.values()
    )
    assert gaps > 100  # the data really has gaps
    res = run_workload(frames)
    ref = rw.run_reference(frames)
    _assert_same(res, ref)
    assert len(res.trades) > 5_000
