"""Run records: content ids, metrics, atomic writes and one-line errors on bad run directories
(the hashes: test_runrecord_hashes.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from atra.core.types import Timeframe
from atra.errors import ConfigError, DataError
from atra.research.runrecord.directory import read_run, write_run
from atra.research.runrecord.hashes import code_version, hash_config, trades_sha256
from atra.research.runrecord.legs import RunLeg, leg_from_backtest, ordered_legs
from atra.research.runrecord.record import LoadedRun, annualization_sentence
from atra.research.runrecord.setup import sides_text
from helpers_runs import (
    INITIAL,
    T0_MS,
    bar_times,
    fake_trades,
    one_line_error,
    sample_setup,
    step_equity,
)


def buy_hold_equity(n_bars: int, tf: Timeframe) -> pd.Series:
    k = np.arange(n_bars)
    price = 100.0 * np.exp(0.0004 * k + 0.03 * np.sin(k / 37.0))
    return pd.Series(INITIAL * price / price[0], index=bar_times(n_bars, tf))


def fake_legs(tf: Timeframe = Timeframe.H1, n: int = 60, n_bars: int = 1300) -> list[RunLeg]:
    primary = fake_trades(n, tf)
    filtered = fake_trades(n, tf, keep=lambda i: i % 3 != 0)
    return [
        RunLeg("primary", step_equity(primary, n_bars, tf), primary),
        RunLeg("filtered", step_equity(filtered, n_bars, tf), filtered),
        RunLeg("buy_hold", buy_hold_equity(n_bars, tf), None),
    ]


CONFIG: dict[str, Any] = {"strategy": {"lookback": 24, "threshold": 0.55}, "symbols": ["BTC"]}


def write(root: Path, legs: list[RunLeg] | None = None, **kw: Any) -> Path:
    args: dict[str, Any] = {
        "legs": fake_legs() if legs is None else legs,
        "timeframe": Timeframe.H1,
        "config": CONFIG,
        "data_hash": "d" * 64,
        "seed": 7,
        "data_label": "synthetic",
    }
    args.update(kw)
    return write_run(root, **args)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("runs"), n_trials=5)


@pytest.fixture(scope="module")
def loaded(run_dir: Path) -> LoadedRun:
    return read_run(run_dir)


def test_flat_equity_has_no_estimator_variance(tmp_path: Path) -> None:
    flat = pd.Series(INITIAL, index=bar_times(50, Timeframe.H1))
    run = read_run(write(tmp_path, legs=[RunLeg("buy_hold", flat, None)], n_trials=3))
    leg = run.metrics["legs"]["buy_hold"]
    assert leg["trials_sharpe_variance_source"] == "sharpe_estimator_variance"
    assert leg["returns"]["trials_sharpe_variance"] == 0.0
    assert leg["returns"]["sharpe"] is None
    assert run.record.trades_sha256 == {}


# --------------------------------------------------------------------------------------------
# write_run / read_run


def test_write_run_layout(run_dir: Path, loaded: LoadedRun) -> None:
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == [
        "equity.csv",
        "metrics.json",
        "run.json",
        "trades_filtered.csv",
        "trades_primary.csv",
    ]
    rec = loaded.record
    assert rec.run_id == run_dir.name
    assert len(rec.run_id) == 12
    assert rec.config_hash == hash_config(CONFIG)
    assert rec.data_hash == "d" * 64
    assert rec.seed == 7
    assert rec.timeframe == "1h"
    assert rec.data_label == "synthetic"
    assert rec.code_version == code_version()
    assert rec.annualization == "Sharpe annualised x sqrt(8760) (1h bars, 365-day year)"
    assert set(rec.trades_sha256) == {"primary", "filtered"}
    legs = fake_legs()
    assert rec.trades_sha256["primary"] == trades_sha256(legs[0].trades)  # type: ignore[arg-type]
    assert list(loaded.equity.columns) == ["open_time_ms", "primary", "filtered", "buy_hold"]
    np.testing.assert_array_equal(loaded.equity["primary"], legs[0].equity.to_numpy())
    np.testing.assert_array_equal(loaded.equity["open_time_ms"], legs[0].equity.index)
    assert loaded.leg_names == ["primary", "filtered", "buy_hold"]
    assert loaded.timeframe is Timeframe.H1
    assert loaded.oos_predictions is None
    run_json = json.loads((run_dir / "run.json").read_text())
    assert run_json["schema_version"] == 2


def test_metrics_are_annualised_with_psr_and_dsr(loaded: LoadedRun) -> None:
    m = loaded.metrics
    assert m["annualization_factor"] == pytest.approx(math.sqrt(8760))
    assert m["bars_per_year"] == 8760
    assert m["n_trials"] == 5
    primary = m["legs"]["primary"]
    assert primary["returns"]["annualization_factor"] == pytest.approx(math.sqrt(8760))
    assert primary["returns"]["n_trials"] == 5
    assert primary["trials_sharpe_variance_source"] == "sharpe_estimator_variance"
    assert primary["returns"]["trials_sharpe_variance"] > 0.0
    assert primary["returns"]["expected_max_sharpe"] > 0.0
    assert primary["returns"]["dsr"] < primary["returns"]["psr"]
    assert primary["trades"]["n_trades"] == 60
    assert m["legs"]["filtered"]["trades"]["n_trades"] == 40
    bh = m["legs"]["buy_hold"]
    assert bh["has_trades"] is False
    assert bh["exposure"] is None
    assert bh["trades_per_day"] is None
    tr = fake_trades(60, Timeframe.H1)
    costs = primary["costs"]
    assert costs["paid"]["fees"] == pytest.approx(tr["fees"].sum())
    assert costs["paid"]["funding"] == pytest.approx(tr["funding"].sum())
    years = primary["returns"]["years"]
    assert costs["per_year_fraction"]["fees"] == pytest.approx(tr["fees"].sum() / INITIAL / years)
    assert costs["per_year_percent"]["total"].endswith("%")
    assert "initial equity per year" in costs["per_year_unit"]
    assert 0.0 < primary["exposure"] < 1.0


def test_writing_the_same_run_twice_is_a_no_op(tmp_path: Path) -> None:
    first = write(tmp_path)
    before = (first / "run.json").read_text()
    second = write(tmp_path)
    assert second == first
    assert (first / "run.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp dirs left


def test_different_trades_give_a_different_hash_and_id(tmp_path: Path) -> None:
    first = read_run(write(tmp_path))
    legs = fake_legs()
    changed = legs[0].trades.copy()  # type: ignore[union-attr]
    changed.loc[0, "pnl"] += 0.01
    legs[0] = RunLeg("primary", legs[0].equity, changed)
    second = read_run(write(tmp_path, legs=legs))
    assert second.record.run_id != first.record.run_id
    assert second.record.trades_sha256["primary"] != first.record.trades_sha256["primary"]
    assert second.record.trades_sha256["filtered"] == first.record.trades_sha256["filtered"]


@pytest.mark.parametrize(
    "change",
    [{"seed": 8}, {"data_hash": "e" * 64}, {"config": {"x": 1}}, {"data_label": "real"},
     {"n_trials": 2}, {"timeframe": Timeframe.H4}],
)  # fmt: skip
def test_every_identity_field_changes_the_id(tmp_path: Path, change: dict[str, Any]) -> None:
    base = write(tmp_path / "a")
    assert write(tmp_path / "b", **change).name != base.name


def test_oos_predictions_notes_and_given_variance(tmp_path: Path) -> None:
    oos = pd.DataFrame({"open_time": [T0_MS, T0_MS + 3_600_000], "p_take": [0.6, 0.4]})
    path = write(
        tmp_path,
        oos_predictions=oos,
        notes={"folds": 4, "path": Path("x")},
        n_trials=3,
        trials_sharpe_variance=0.5,
    )
    run = read_run(path)
    assert run.oos_predictions is not None
    pd.testing.assert_frame_equal(run.oos_predictions, oos)
    assert run.record.notes == {"folds": 4, "path": "x"}
    primary = run.metrics["legs"]["primary"]
    assert primary["trials_sharpe_variance_source"] == "given"
    assert primary["returns"]["trials_sharpe_variance"] == 0.5


def test_notes_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        write(tmp_path, notes={"x": math.inf})
    one_line_error(exc, "notes:", "non-finite")


def test_a_leg_with_no_trades_at_all(tmp_path: Path) -> None:
    legs = fake_legs(n=6, n_bars=200)
    empty = legs[0].trades.iloc[:0]  # type: ignore[union-attr]
    legs[0] = RunLeg("primary", step_equity(None, 200, Timeframe.H1), empty)
    run = read_run(write(tmp_path, legs=legs))
    assert run.trades["primary"].empty
    assert run.metrics["legs"]["primary"]["trades"]["n_trades"] == 0
    assert run.metrics["legs"]["primary"]["exposure"] == 0.0
    assert run.record.trades_sha256["primary"] == trades_sha256(empty)


def test_daily_run_is_annualised_with_365(tmp_path: Path) -> None:
    tf = Timeframe.D1
    run = read_run(write(tmp_path, legs=fake_legs(tf, n=10, n_bars=260), timeframe=tf))
    assert run.record.annualization == "Sharpe annualised x sqrt(365) (1d bars, 365-day year)"
    assert annualization_sentence(tf) == run.record.annualization
    assert run.metrics["legs"]["primary"]["returns"]["annualization_factor"] == pytest.approx(
        math.sqrt(365)
    )
    assert run.metrics["legs"]["primary"]["trials_sharpe_variance_source"] == "single_trial"


def test_ordered_legs() -> None:
    assert ordered_legs(["zeta", "buy_hold", "primary", "alpha"]) == [
        "primary",
        "buy_hold",
        "zeta",
        "alpha",
    ]


def _legs_with(index: int, **kw: Any) -> list[RunLeg]:
    legs = fake_legs(n=6, n_bars=200)
    leg = legs[index]
    legs[index] = RunLeg(kw.get("name", leg.name), kw.get("equity", leg.equity),
                         kw.get("trades", leg.trades))  # fmt: skip
    return legs


def _eq(values: list[float], times: list[Any] | None = None) -> pd.Series:
    index = times if times is not None else [T0_MS + i for i in range(len(values))]
    return pd.Series(values, index=index)


@pytest.mark.parametrize(
    ("legs", "kw", "error", "fragments"),
    [
        (None, {"data_label": "fake"}, ConfigError, ("data_label='fake'",)),
        ([], {}, ConfigError, ("at least one leg",)),
        (_legs_with(1, name="primary"), {}, ConfigError, ("unique",)),
        (None, {"n_trials": 0}, ConfigError, ("n_trials=0",)),
        (_legs_with(0, name="a/b"), {}, ConfigError, ("leg name 'a/b'",)),
        (_legs_with(2, equity=_eq([1.0])), {}, DataError, ("buy_hold", "1 point(s)")),
        (_legs_with(2, equity=_eq([1.0, -2.0])), {}, DataError, ("row 1", "-2.0")),
        (_legs_with(2, equity=_eq([1.0, 2.0], [5, 5])), {}, DataError, ("increasing at row 1",)),
        (_legs_with(2, equity=_eq([1.0, 2.0], ["a", "b"])), {}, DataError, ("int64",)),
        (_legs_with(2, equity=_eq([1.0, 2.0], [1.5, 2.5])), {}, DataError, ("dtype float64",)),
        (_legs_with(2, equity=_eq([1.0, 2.0, 3.0])), {}, DataError, ("index differs",)),
        (_legs_with(0, trades=pd.DataFrame({"symbol": ["X"]})), {}, DataError, ("leg primary",)),
    ],
)
def test_write_run_rejects_bad_input(
    tmp_path: Path,
    legs: list[RunLeg] | None,
    kw: dict[str, Any],
    error: type[Exception],
    fragments: tuple[str, ...],
) -> None:
    with pytest.raises(error) as exc:
        write(tmp_path, legs=legs, **kw)
    one_line_error(exc, *fragments)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_write_run_refuses_to_reuse_a_corrupt_directory(tmp_path: Path) -> None:
    path = write(tmp_path)
    (path / "run.json").write_text("{not json")
    with pytest.raises(DataError) as exc:
        write(tmp_path)
    one_line_error(exc, "run.json", "corrupt JSON")


def test_write_run_refuses_a_directory_with_another_id(tmp_path: Path) -> None:
    path = write(tmp_path)
    raw = json.loads((path / "run.json").read_text())
    (path / "run.json").write_text(json.dumps({**raw, "run_id": "000000000000"}))
    with pytest.raises(DataError) as exc:
        write(tmp_path)
    one_line_error(exc, "does not match its directory")


# --------------------------------------------------------------------------------------------
# read_run errors: one line naming the file


@pytest.fixture
def fresh_run(tmp_path: Path) -> Path:
    return write(tmp_path, legs=fake_legs(n=6, n_bars=200))


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


CORRUPTIONS: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    ("no run.json", lambda p: (p / "run.json").unlink(), ("run.json", "missing")),
    ("bad json", lambda p: (p / "run.json").write_text("{"), ("run.json", "corrupt JSON")),
    ("binary", lambda p: (p / "run.json").write_bytes(b"\xff\xfe\x00"), ("run.json", "corrupt")),
    ("list", lambda p: (p / "run.json").write_text("[]"), ("run.json", "JSON object")),
    (
        "missing key",
        lambda p: _edit_json(p / "run.json", lambda d: {k: v for k, v in d.items() if k != "seed"}),
        ("run.json", "missing key(s) seed"),
    ),
    (
        "bad label",
        lambda p: _edit_json(p / "run.json", lambda d: {**d, "data_label": "maybe"}),
        ("run.json", "data_label 'maybe'"),
    ),
    (
        "bad timeframe",
        lambda p: _edit_json(p / "run.json", lambda d: {**d, "timeframe": "7h"}),
        ("run.json", "unknown timeframe '7h'"),
    ),
    (
        "notes not object",
        lambda p: _edit_json(p / "run.json", lambda d: {**d, "notes": []}),
        ("run.json", "JSON objects"),
    ),
    ("no metrics", lambda p: (p / "metrics.json").unlink(), ("metrics.json", "missing")),
    (
        "no legs",
        lambda p: _edit_json(p / "metrics.json", lambda d: {**d, "legs": {}}),
        ("metrics.json", "'legs'"),
    ),
    ("no equity", lambda p: (p / "equity.csv").unlink(), ("equity.csv", "missing")),
    ("empty equity", lambda p: (p / "equity.csv").write_text(""), ("equity.csv", "corrupt CSV")),
    (
        "equity columns",
        lambda p: (p / "equity.csv").write_text("a,b\n1,2\n3,4\n"),
        ("equity.csv", "columns ['a', 'b']"),
    ),
    (
        "equity hole",
        lambda p: (p / "equity.csv").write_text(
            "open_time_ms,primary,filtered,buy_hold\n1,2,3,\n2,2,3,4\n"
        ),
        ("equity.csv", "complete rows"),
    ),
    ("no trades", lambda p: (p / "trades_primary.csv").unlink(), ("trades_primary.csv", "missing")),
    (
        "trades lost a column",
        lambda p: (
            pd.read_csv(p / "trades_primary.csv")
            .drop(columns=["pnl"])
            .to_csv(p / "trades_primary.csv", index=False)
        ),
        ("trades_primary.csv", "missing trade column(s) pnl"),
    ),
    (
        "trades tampered",
        lambda p: (
            pd.read_csv(p / "trades_filtered.csv")
            .assign(pnl=lambda t: t["pnl"] + 1.0)
            .to_csv(p / "trades_filtered.csv", index=False)
        ),
        ("trades_filtered.csv", "does not match run.json"),
    ),
    (
        "oos corrupt",
        lambda p: (p / "oos_predictions.csv").write_bytes(b'"unterminated\n'),
        ("oos_predictions.csv", "corrupt CSV"),
    ),
]


@pytest.mark.parametrize(
    ("corrupt", "fragments"), [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS]
)
def test_read_run_of_a_broken_directory_is_one_line(
    fresh_run: Path, corrupt: Callable[[Path], None], fragments: tuple[str, ...]
) -> None:
    corrupt(fresh_run)
    with pytest.raises(DataError) as exc:
        read_run(fresh_run)
    one_line_error(exc, *fragments)


def test_read_run_of_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        read_run(tmp_path / "nope")
    one_line_error(exc, "nope", "not a run directory")


# --------------------------------------------------------------------------------------------
# a real portfolio backtest, recorded


def _walk(n: int, seed: int) -> pd.DataFrame:
    close = 100.0 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0.0, 0.01, n)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    return pd.DataFrame(
        {
            "open_time": bar_times(n, Timeframe.H1),
            "open": open_,
            "high": np.maximum(open_, close) * 1.004,
            "low": np.minimum(open_, close) * 0.996,
            "close": close,
            "volume": np.ones(n),
        }
    )


def test_a_real_backtest_round_trips(tmp_path: Path) -> None:
    from atra.core.backtest.engine import run_backtest

    candles_by_symbol = {"BTCUSDT": _walk(400, 1), "ETHUSDT": _walk(400, 2)}
    events = pd.DataFrame(
        {
            "symbol": ["BTCUSDT", "ETHUSDT"] * 15,
            "t": np.repeat(np.arange(15) * 25 + 5, 2),
            "side": [1, -1] * 15,
            "sl_dist": 1.5,
            "tp1_dist": 1.5,
            "tp2_dist": 3.0,
            "horizon_bars": 12,
        }
    )
    result = run_backtest(candles_by_symbol, events)
    assert len(result.trades) > 0
    leg = leg_from_backtest("primary", result)
    assert leg.equity.iloc[0] == result.initial_equity
    assert leg.equity.index[1] == result.open_time_ms[0]
    assert leg.equity.index[0] == result.open_time_ms[0] - Timeframe.H1.ms
    run = read_run(write(tmp_path, legs=[leg]))
    assert run.record.trades_sha256["primary"] == trades_sha256(result.trades)
    expected = result.stats()
    got = run.metrics["legs"]["primary"]
    assert got["returns"]["sharpe"] == pytest.approx(expected.returns.sharpe, rel=1e-12)
    assert got["trades"]["fees_paid"] == pytest.approx(expected.trades.fees_paid, rel=1e-12)
    assert got["trades"]["n_trades"] == len(result.trades)
    assert set(run.trades["primary"]["reason"]) <= {"SL", "TP1", "TP2", "TIME", "BE", "END"}
    # the same backtest again is the same run
    again = run_backtest(candles_by_symbol, events)
    assert write(tmp_path, legs=[leg_from_backtest("primary", again)]) == run.path


def test_spot_shorts_borrow_is_a_cost_of_the_run(tmp_path: Path) -> None:
    from atra.core.backtest.engine import BacktestConfig, run_backtest
    from atra.research.report.tables import costs_rows, metrics_table

    candles_by_symbol = {"BTCUSDT": _walk(400, 1)}
    events = pd.DataFrame(
        {"symbol": "BTCUSDT", "t": np.arange(15) * 25 + 5, "side": [1, -1] * 7 + [-1],
         "sl_dist": 1.5, "tp1_dist": 1.5, "tp2_dist": 3.0, "horizon_bars": 12}
    )  # fmt: skip
    cfg = BacktestConfig(spot_borrow_rate_per_hour=2e-5)
    result = run_backtest(candles_by_symbol, events, cfg)
    borrow = result.trades["borrow"]
    assert borrow.sum() > 0.0
    run = read_run(write(tmp_path, legs=[leg_from_backtest("primary", result)]))
    got = run.metrics["legs"]["primary"]
    assert got["trades"]["borrow_paid"] == pytest.approx(borrow.sum(), rel=1e-12)
    assert got["costs"]["paid"]["borrow"] == pytest.approx(borrow.sum(), rel=1e-12)
    paid = got["costs"]["paid"]
    total = paid["fees"] + paid["slippage"] + paid["funding"] + paid["borrow"]
    assert paid["total"] == pytest.approx(total, rel=1e-12)
    assert got["per_symbol"][0]["borrow_paid"] == pytest.approx(borrow.sum(), rel=1e-12)
    kinds = [row[1] for row in costs_rows(run)[1]]
    assert kinds == ["fees", "slippage", "funding", "borrow", "total"]
    rows = {r[0]: r[1:] for r in metrics_table(run)[1]}
    label = "Borrow paid (quote ccy; spot shorts' margin interest)"
    assert rows[label] == [f"{borrow.sum():,.2f}"]
    broken = result.trades.assign(borrow=result.trades["borrow"] * -1.0)
    bad = RunLeg("primary", leg_from_backtest("primary", result).equity, broken)
    with pytest.raises(DataError) as exc:
        write(tmp_path / "bad", legs=[bad])
    one_line_error(exc, "borrow at row", "expected a finite amount >= 0")


def test_leg_from_an_empty_backtest() -> None:
    class Empty:
        trades = pd.DataFrame()
        events = pd.DataFrame({"blocked_by": []})
        open_time_ms = np.zeros(0, np.int64)
        equity = np.zeros(0)
        initial_equity = 1.0
        timeframe = Timeframe.H1

    with pytest.raises(DataError) as exc:
        leg_from_backtest("primary", Empty())
    one_line_error(exc, "no bars")


# --------------------------------------------------------------------------------------------
# liquidated legs: equity 0 from the liquidation bar on, stats on that curve


def _crash(n: int = 40, gap_bar: int = 8) -> pd.DataFrame:
    """Flat at 100, then a gap down to 50 at ``gap_bar``'s open (a stop cannot fill above it)."""
    close = np.where(np.arange(n) < gap_bar, 100.0, 50.0)
    open_ = np.concatenate(([100.0], close[:-1]))
    open_[gap_bar] = 50.0
    return pd.DataFrame(
        {
            "open_time": bar_times(n, Timeframe.H1),
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": np.ones(n),
        }
    )


def test_a_backtest_that_loses_everything_is_a_liquidated_leg(tmp_path: Path) -> None:
    from atra.core.backtest.engine import BacktestConfig, run_backtest
    from atra.core.sizing import SizingConfig

    # a long at 3x equity with a tight stop: the gap to 50 loses 150% of the equity
    events = pd.DataFrame(
        {"symbol": ["BTCUSDT", "BTCUSDT"], "t": [5, 20], "side": [1, 1], "sl_dist": [0.5, 0.5],
         "tp1_dist": [1.0, 1.0], "tp2_dist": [2.0, 2.0], "horizon_bars": [30, 30]}
    )  # fmt: skip
    cfg = BacktestConfig(sizing=SizingConfig(max_leverage=3.0), max_gross_leverage=3.0)
    result = run_backtest({"BTCUSDT": _crash()}, events, cfg)
    assert result.equity.min() < 0.0  # the backtest marks the account below zero
    leg = leg_from_backtest("primary", result)
    liq_ms = T0_MS + 8 * Timeframe.H1.ms
    assert leg.liquidated_ms == liq_ms
    values = leg.equity.to_numpy()
    row = int(np.searchsorted(leg.equity.index, liq_ms))
    np.testing.assert_array_equal(
        values[:row], np.concatenate(([10_000.0], result.equity[: row - 1]))
    )
    assert np.all(values[:row] > 0.0)
    assert np.all(values[row:] == 0.0)
    run = read_run(write(tmp_path, legs=[leg]))
    returns = run.metrics["legs"]["primary"]["returns"]
    assert returns["total_return"] == -1.0
    assert returns["cagr"] == -1.0
    assert returns["max_drawdown"] == -1.0
    assert returns["max_drawdown_recovered"] is False
    assert run.metrics["legs"]["primary"]["final_equity"] == 0.0
    assert run.record.liquidations == leg.liquidations
    assert run.equity["primary"].iloc[-1] == 0.0
    raw = json.loads((run.path / "run.json").read_text())
    assert raw["liquidations"] == [
        {"leg": "primary", "symbol": None, "time_ms": liq_ms, "trades_not_counted": 0}
    ]


def test_trades_after_a_liquidation_are_not_counted_and_say_so() -> None:
    class Recovered:  # the marked equity dips to zero, open positions pull it back, one more trade
        trades = fake_trades(3, Timeframe.H1).rename(
            columns={"entry_ms": "entry_time_ms", "exit_ms": "exit_time_ms"}
        )
        events = pd.DataFrame({"blocked_by": [None, None, None]})
        open_time_ms = bar_times(80, Timeframe.H1)
        equity = np.concatenate((np.full(30, 100.0), [-5.0], np.full(49, 50.0)))
        initial_equity = 100.0
        timeframe = Timeframe.H1

    leg = leg_from_backtest("filtered", Recovered())
    liq_ms = int(Recovered.open_time_ms[30])
    later = int((Recovered.trades["entry_time_ms"] > liq_ms).sum())
    assert later == 1
    assert leg.liquidations[0].trades_not_counted == later
    assert leg.trades is not None
    assert len(leg.trades) == 2
    assert np.all(leg.equity.to_numpy()[32:] == 0.0)


@pytest.mark.parametrize(
    ("equity", "liq_row", "fragments"),
    [
        ([1.0, 2.0, 0.0, 0.0], None, ("row 2", "expected > 0")),  # zero, not declared
        ([1.0, 2.0, 0.5, 0.0], 2, ("liquidated at", "equity 0 from row 2")),
        ([1.0, 0.0, 0.0, 0.0], 2, ("row 1",)),  # zero before the declared bar
        ([1.0, 2.0, 0.0, -1.0], 2, ("liquidated at",)),  # negative after it
    ],
)
def test_write_run_checks_a_liquidated_leg(
    tmp_path: Path, equity: list[float], liq_row: int | None, fragments: tuple[str, ...]
) -> None:
    from atra.research.runrecord.legs import Liquidation

    series = _eq(equity)
    liqs = () if liq_row is None else (Liquidation("buy_hold", None, int(series.index[liq_row])),)
    with pytest.raises(DataError) as exc:
        write(tmp_path, legs=[RunLeg("buy_hold", series, None, liqs)])
    one_line_error(exc, "leg buy_hold", *fragments)


# --------------------------------------------------------------------------------------------
# what was run


def test_the_setup_round_trips_through_run_json(tmp_path: Path) -> None:
    setup = sample_setup()
    path = write(tmp_path, setup=setup)
    assert read_run(path).record.setup == setup
    raw = json.loads((path / "run.json").read_text())["setup"]
    assert raw["costs"] == {"maker_fee_bps": 2.0, "taker_fee_bps": 5.0, "take_profit_fee": "taker",
                            "slippage_bps": 2.0, "funding": True}  # fmt: skip
    assert raw["rule_params"] == {"fast": 10, "slow": 30}
    assert [m["model_id"] for m in raw["models"]] == ["0" * 12, "1" * 12]
    assert read_run(write(tmp_path / "none")).record.setup is None


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (
            lambda s: s["sizing"].pop("risk_per_trade"),
            ("setup.sizing.risk_per_trade", "Field required"),
        ),
        (lambda s: s["costs"].update(taker_fee_bps="5"), ("setup.costs.taker_fee_bps",)),
        (lambda s: s.update(market=None), ("setup.market",)),
        (lambda s: s["models"][0].update(fold=0.5), ("setup.models.0.fold",)),
    ],
)
def test_a_damaged_setup_is_one_line_naming_the_key(
    tmp_path: Path, edit: Callable[[dict[str, Any]], Any], fragments: tuple[str, ...]
) -> None:
    path = write(tmp_path, setup=sample_setup())
    raw = json.loads((path / "run.json").read_text())
    edit(raw["setup"])
    (path / "run.json").write_text(json.dumps(raw))
    with pytest.raises(DataError) as exc:
        read_run(path)
    one_line_error(exc, "run.json", *fragments)


def test_a_setup_written_before_the_sides_reads_as_unknown(tmp_path: Path) -> None:
    path = write(tmp_path, setup=sample_setup())
    raw = json.loads((path / "run.json").read_text())
    assert raw["setup"].pop("sides") == "long/short (perp)"
    (path / "run.json").write_text(json.dumps(raw))
    setup = read_run(path).record.setup
    assert setup is not None
    assert setup.sides is None


@pytest.mark.parametrize(
    ("market", "long", "short", "bps", "text"),
    [
        ("spot", True, False, 0.0, "long only (spot, no margin)"),
        ("spot", True, True, 0.1, "long/short (spot on margin at 0.1 bps/h)"),
        ("spot", False, True, 0.05, "short only (spot on margin at 0.05 bps/h)"),
        ("spot", True, True, 0.0, "long/short (spot on margin at 0 bps/h: no borrow cost charged)"),
        ("perp", True, True, 0.0, "long/short (perp)"),
        ("perp", True, False, 0.0, "long only (perp)"),
    ],
)
def test_sides_text(market: str, long: bool, short: bool, bps: float, text: str) -> None:
    assert sides_text(market, long, short, bps) == text


def test_a_version_1_run_without_setup_or_liquidations_still_reads(tmp_path: Path) -> None:
    path = write(tmp_path, setup=sample_setup())
    raw = json.loads((path / "run.json").read_text())
    old = {k: v for k, v in raw.items() if k not in ("setup", "liquidations")}
    (path / "run.json").write_text(json.dumps({**old, "schema_version": 1}))
    record = read_run(path).record
    assert record.setup is None
    assert record.liquidations == ()
