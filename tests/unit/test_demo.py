"""`atra demo`: stores and checks the embedded synthetic data (or a real folder), idempotently."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from atra.adapters.store import CandleStore, DatasetKey
from atra.cli import main
from atra.core.synthetic import SyntheticConfig, generate_market
from atra.core.types import Market, Timeframe
from atra.demo import stage_data


def test_demo_stores_synthetic_market_and_is_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_dir = tmp_path / "store"
    assert main(["demo", "--data-dir", str(store_dir)]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out
    assert "synthetic/spot/BTCUSDT/1h" in out
    assert "18 dataset(s)" in out

    cfg = SyntheticConfig()
    expected = generate_market(cfg)
    store = CandleStore(store_dir)
    key = DatasetKey("synthetic", Market.SPOT, "BTCUSDT", Timeframe.H1)
    pd.testing.assert_frame_equal(store.read_candles(key), expected.spot["BTCUSDT"])
    pd.testing.assert_frame_equal(
        store.read_funding("synthetic", "ETHUSDT"), expected.funding["ETHUSDT"]
    )
    before = {p: p.read_bytes() for p in store_dir.rglob("*.parquet")}

    assert main(["demo", "--data-dir", str(store_dir)]) == 0
    assert "(0 new row(s) this run)" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in store_dir.rglob("*.parquet")} == before


def test_stage_data_reports_progress_and_small_config(tmp_path: Path) -> None:
    seen: list[str] = []
    cfg = SyntheticConfig(symbols=("BTCUSDT", "ETHUSDT"), bars=2_000)
    staged = stage_data(
        CandleStore(tmp_path), config=cfg, progress=lambda d, t, item: seen.append(item)
    )
    assert staged.synthetic
    assert staged.rows_added == 2 * (2 * 2_000 + len(generate_market(cfg).funding["BTCUSDT"]))
    assert len(staged.checks) == 6
    assert all(c.report.gap_count == 0 for c in staged.checks)
    assert "BTCUSDT funding" in seen


def test_demo_on_real_data_folder(
    tmp_path: Path, shared_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--data", str(shared_data_dir), "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "REAL" in out
    assert "22 dataset(s)" in out


def test_demo_missing_folder_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--data", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "s")])
    assert code == 4
    err = capsys.readouterr().err.strip()
    assert err.startswith("DataError: ")
    assert "nope" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*.parquet"))
