"""`atra backtest --model`: a model saved by `atra train` on a synthetic store, frozen and
evaluated on the later range (legs, random-skip control, run record, trades CSV); the overlap
refusal; and `atra walkforward --first-test`."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from atra.adapters.store import CandleStore
from atra.cli import main
from atra.core.closed_trades import CLOSED_TRADE_COLUMNS, closed_trades_of_backtest
from atra.core.synthetic.market import EXCHANGE, SyntheticConfig
from atra.core.types import Market, Timeframe
from atra.data.demo import stage_data
from atra.research.evaluation.frozen import run_frozen_backtest
from atra.research.evaluation.settings import backtest_config_from
from atra.research.pipeline import parse_time_ms, settings_from_config
from atra.research.runrecord.directory import read_run

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
SMALL_TOML = """
[strategy]
params = { fast = 10.0, slow = 30.0 }
tp1_atr = 1.5
tp2_atr = 3.0

[meta.lgbm]
n_estimators = 40
num_leaves = 7
min_child_samples = 10
"""
TRAIN_END = "2022-05-01"  # the synthetic store spans 2022-01-01 .. 2022-07-28


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[CandleStore, Path, Path]:
    root = tmp_path_factory.mktemp("frozen")
    store = CandleStore(root / "store")
    stage_data(store, config=SyntheticConfig(symbols=SYMBOLS, bars=5_000, seed=11))
    toml = root / "small.toml"
    toml.write_text(SMALL_TOML)
    args = ["train", "--data-dir", str(store.root), "--exchange", EXCHANGE, "--config",
            str(toml), "--end", TRAIN_END, "--out", str(root / "models")]  # fmt: skip
    assert main(args) == 0
    (model,) = (root / "models").iterdir()
    return store, toml, model


def _backtest_args(store: CandleStore, toml: Path, model: Path, *extra: str) -> list[str]:
    where = ["--data-dir", str(store.root), "--exchange", EXCHANGE, "--config", str(toml)]
    return ["backtest", *where, "--model", model.name, "--models-dir", str(model.parent), *extra]


def test_backtest_cli_four_legs_control_run_and_trades_csv(
    setup: tuple[CandleStore, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, toml, model = setup
    csv_path = tmp_path / "trades.csv"
    out_args = ["--runs-dir", str(tmp_path / "runs"), "--trades-csv", str(csv_path)]
    args = _backtest_args(
        store, toml, model, "--start", TRAIN_END, "--control-seeds", "4", *out_args
    )
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"model {model.name}" in out
    assert re.search(r"Metric\s.*primary\s.*filtered\s.*buy_hold", out)
    assert "sqrt(8760)" in out
    assert "Random-skip control" in out
    for metric in ("total_return", "sharpe", "win_rate"):
        assert re.search(rf"{metric}\s.*\d+th", out), metric  # min/median/max and percentile
    (run_dir,) = (tmp_path / "runs").iterdir()
    run = read_run(run_dir)
    notes = run.record.notes
    assert notes["model_id"] == model.name
    control = notes["random_skip_control"]
    assert control["seeds"] == [0, 1, 2, 3]
    assert control["takes"] == notes["oos_events_taken_by_meta"] < control["signals"]
    assert control["signals"] == notes["oos_events"]
    lo, mid, hi = control["spread_min_median_max"]["total_return"]
    assert lo <= mid <= hi
    assert (run_dir / "report.html").exists()
    # no trade before the range: out of sample
    assert (run.trades["filtered"]["entry_ms"] >= parse_time_ms(TRAIN_END)).all()
    # the CSV: one row per closed trade of the filtered leg, sorted by (entry_time, symbol)
    with csv_path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CLOSED_TRADE_COLUMNS
    body = rows[1:]
    assert body == sorted(body, key=lambda r: (r[2], r[0]))
    n_closed = int((run.trades["filtered"]["reason"] != "END").sum())
    assert len(body) == n_closed > 0
    assert re.search(rf"{n_closed:,} closed trade\(s\) of the filtered leg written", out)


def test_control_is_seeded_and_draws_the_filters_number_of_takes(
    setup: tuple[CandleStore, Path, Path], tmp_path: Path
) -> None:
    from atra.config import load_config

    store, toml, model = setup
    cfg = load_config(toml)
    kwargs = dict(
        exchange=EXCHANGE, symbols=SYMBOLS, market=Market.SPOT, timeframe=Timeframe.H1,
        start_ms=parse_time_ms(TRAIN_END), end_ms=None,
        settings=settings_from_config(cfg, Market.SPOT), backtest_config=backtest_config_from(cfg),
    )  # fmt: skip
    a = run_frozen_backtest(
        store, model, runs_dir=tmp_path / "a", control_seeds=[1, 2, 3], **kwargs
    )  # type: ignore[arg-type]
    b = run_frozen_backtest(
        store, model, runs_dir=tmp_path / "b", control_seeds=[1, 2, 3], **kwargs
    )  # type: ignore[arg-type]
    c = run_frozen_backtest(
        store, model, runs_dir=tmp_path / "c", control_seeds=[4, 5, 6], **kwargs
    )  # type: ignore[arg-type]
    assert a.control.runs == b.control.runs  # seeded: the same draws
    assert a.control.runs != c.control.runs  # other seeds, other draws
    assert a.control.n_take == a.evaluation.oos.n_take
    assert a.evaluation.run_id == b.evaluation.run_id
    # the trades CSV rows come from the filtered leg's backtest
    trades, _ = closed_trades_of_backtest(a.evaluation.backtests["filtered"].trades)
    assert len(trades) > 0


def test_backtest_refuses_a_range_overlapping_the_training_window(
    setup: tuple[CandleStore, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, toml, model = setup
    args = _backtest_args(store, toml, model, "--start", "2022-04-01", "--runs-dir",
                          str(tmp_path / "runs"), "--control-seeds", "2")  # fmt: skip
    assert main(args) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("ConfigError: range 2022-04-01T00:00:00Z .. the data end overlaps")
    assert f"model {model.name} (2022-01-" in err
    assert "--allow-overlap" in err
    assert not (tmp_path / "runs").exists()
    assert main([*args, "--allow-overlap"]) == 0
    meta = json.loads((model / "meta.json").read_text())
    (run_dir,) = (tmp_path / "runs").iterdir()
    notes = read_run(run_dir).record.notes
    assert notes["in_sample_overlap_allowed"] is True
    assert notes["model_training_window_ms"] == [
        meta["training_window"]["start_ms"],
        meta["training_window"]["end_ms"],
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--model is required"),
        (["--model", "nope", "--start", TRAIN_END], "--model nope: no such model folder"),
        (["--model", "x", "--start", TRAIN_END, "--control-seeds", "0"], "--control-seeds"),
    ],
)
def test_backtest_cli_errors(
    setup: tuple[CandleStore, Path, Path],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    store, _, model = setup
    args = ["backtest", "--data-dir", str(store.root), "--exchange", EXCHANGE, "--models-dir",
            str(model.parent), *extra]  # fmt: skip
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert message in err


def test_walkforward_first_test_pins_the_first_window(
    setup: tuple[CandleStore, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, toml, _ = setup
    base = ["walkforward", "--data-dir", str(store.root), "--exchange", EXCHANGE, "--config",
            str(toml), "--min-train-days", "60", "--min-train-events", "60", "--runs-dir",
            str(tmp_path / "runs")]  # fmt: skip
    assert main([*base, "--first-test", "2022-02-01"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert (
        "first test window (--first-test) 2022-02-01T00:00:00Z is before min_train_days = 60" in err
    )
    assert "earliest first test window 2022-03-0" in err
    assert main([*base, "--first-test", "2022-04-01"]) == 0
    out = capsys.readouterr().out
    assert "Out-of-sample only: 2022-04-01 00:00" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    notes = read_run(run_dir).record.notes
    assert notes["oos_start_ms"] == parse_time_ms("2022-04-01")
