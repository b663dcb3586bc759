"""`atra demo`: stores and checks the embedded synthetic data (or a real folder), idempotently,
then runs the research loop to an HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from atra.adapters.store import CandleStore, DatasetKey
from atra.cli import main
from atra.core.synthetic.market import SyntheticConfig, generate_market
from atra.core.types import Market, Timeframe
from atra.data.demo import stage_data
from atra.errors import ConfigError
from atra.research.demo import REAL_DEMO_SYMBOLS, run_demo_loop
from atra.research.pipeline import parse_time_ms
from atra.research.runrecord.directory import read_run


def test_demo_stores_synthetic_market_and_is_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_dir = tmp_path / "store"
    assert main(["demo", "--data-dir", str(store_dir), "--data-only"]) == 0
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

    assert main(["demo", "--data-dir", str(store_dir), "--data-only"]) == 0
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
    args = ["demo", "--data", str(shared_data_dir), "--data-dir", str(tmp_path / "store")]
    assert main([*args, "--data-only"]) == 0
    out = capsys.readouterr().out
    assert "REAL" in out
    assert "22 dataset(s)" in out
    # the research loop on the default real universe, cut short to keep the test fast
    runs = tmp_path / "runs"
    assert main([*args, "--runs-dir", str(runs), "--end", "2021-08-15"]) == 0
    out = capsys.readouterr().out
    assert "REAL data" in out
    assert "sqrt(8760)" in out
    (run_dir,) = runs.iterdir()
    run = read_run(run_dir)
    assert run.record.data_label == "real"
    assert run.metrics["legs"]["primary"]["period"]["start_ms"] >= parse_time_ms("2021-06-29")
    assert (run_dir / "report.html").exists()


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


def test_demo_runs_the_research_loop_to_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    args = ["demo", "--data-dir", str(tmp_path / "store"), "--runs-dir", str(runs)]
    assert main([*args, "--symbols", "BTCUSDT,ETHUSDT,SOLUSDT", "--bars", "8760"]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out
    assert "sqrt(8760)" in out
    assert "Out-of-sample only" in out
    for leg in ("primary", "filtered", "buy_hold"):
        assert leg in out
    (run_dir,) = runs.iterdir()
    report = run_dir / "report.html"
    assert f"Open the HTML report: {report.resolve()}" in out
    assert "SYNTHETIC" in report.read_text()
    run = read_run(run_dir)
    assert run.record.data_label == "synthetic"
    assert run.leg_names == ["primary", "filtered", "buy_hold"]
    assert run.record.notes["source"].startswith("synthetic market")
    assert json.loads((run_dir / "run.json").read_text())["config_hash"] == run.record.config_hash


def test_demo_option_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--data", str(tmp_path), "--bars", "100", "--data-dir", str(tmp_path)])
    assert code == ConfigError.exit_code
    err = capsys.readouterr().err.strip()
    assert err.startswith("ConfigError: --bars applies to the synthetic data only")
    with pytest.raises(ConfigError, match="no binance spot 1h symbol"):
        run_demo_loop(
            CandleStore(tmp_path / "s"),
            exchange="binance",
            source="nothing",
            runs_dir=tmp_path / "runs",
        )
    assert REAL_DEMO_SYMBOLS[0] == "BTCUSDT"


def test_demo_loop_trades_every_generated_symbol(tmp_path: Path) -> None:
    store = CandleStore(tmp_path / "store")
    cfg = SyntheticConfig(symbols=("BTCUSDT", "ETHUSDT", "XRPUSDT"), bars=8_000, seed=9)
    staged = stage_data(store, config=cfg)
    seen: set[str] = set()
    ev = run_demo_loop(
        store,
        exchange=staged.exchange,
        source=staged.source,
        runs_dir=tmp_path / "runs",
        progress=lambda stage, *_: seen.add(stage),
    )
    assert set(ev.run.trades["primary"]["symbol"]) == set(cfg.symbols)
    assert ev.run.record.config_hash
    assert ev.report_path is not None
    assert ev.report_path.exists()
    assert seen == {"features + labels", "walk-forward folds", "backtests + report"}
