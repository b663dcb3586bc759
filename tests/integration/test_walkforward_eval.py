"""Walk-forward evaluation end to end: synthetic store -> dataset -> walk-forward -> OOS
backtests (primary, filtered, buy-and-hold) -> run record + report, and `atra walkforward` on
the synthetic store and on real data."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import atra.cli.walkforward  # noqa: F401  (registers `atra walkforward`)
from atra.adapters.store import CandleStore
from atra.cli import main
from atra.core.backtest.engine import BacktestConfig
from atra.core.costs import CostModel
from atra.core.exits.api import ExitSpec
from atra.core.meta import MetaParams
from atra.core.signals.spec import SignalSpec
from atra.core.synthetic.market import EXCHANGE, SyntheticConfig
from atra.core.types import Market, Timeframe
from atra.data.demo import stage_data
from atra.data.ingest import import_files
from atra.errors import DataError
from atra.research.evaluation.loop import evaluate_walkforward
from atra.research.evaluation.result import Evaluation
from atra.research.pipeline import (
    ResearchDataset,
    WalkForwardConfig,
    WalkForwardResult,
    build_dataset,
    load_universe,
    parse_time_ms,
    run_walkforward,
)
from atra.research.runrecord.directory import read_run

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
SPEC = SignalSpec(ema_fast=10, ema_slow=30, sl_atr=1.0, tp1_atr=1.5, tp2_atr=3.0, horizon_bars=24)
EXITS = ExitSpec(fee_entry=0.0005, fee_tp=0.0005, fee_stop=0.0005, slippage_bps=2.0)
PARAMS = MetaParams(n_estimators=40, num_leaves=7, min_child_samples=10, inner_splits=0)
WF = WalkForwardConfig(retrain_days=30, embargo_hours=48.0, min_train_days=60, min_train_events=60)
BT = BacktestConfig(
    costs=CostModel(maker_fee_rate=0.0002, taker_fee_rate=0.0005, slippage_bps=2.0),
    max_positions=5,
    max_gross_leverage=3.0,
)
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


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> CandleStore:
    st = CandleStore(tmp_path_factory.mktemp("wfeval") / "store")
    stage_data(st, config=SyntheticConfig(symbols=SYMBOLS, bars=5_000, seed=11))
    return st


@pytest.fixture(scope="module")
def dataset(store: CandleStore) -> ResearchDataset:
    uni = load_universe(store, EXCHANGE, SYMBOLS, Market.SPOT, Timeframe.H1)
    return build_dataset(uni, SPEC, EXITS)


@pytest.fixture(scope="module")
def wf(dataset: ResearchDataset) -> WalkForwardResult:
    return run_walkforward(dataset, WF, PARAMS, n_jobs=2)


def _evaluate(dataset: ResearchDataset, wf: WalkForwardResult, runs: Path) -> Evaluation:
    return evaluate_walkforward(
        dataset, wf, BT, runs_dir=runs, wf_config=WF, meta_params=PARAMS, seed=PARAMS.seed
    )


@pytest.fixture(scope="module")
def evaluation(
    dataset: ResearchDataset, wf: WalkForwardResult, tmp_path_factory: pytest.TempPathFactory
) -> Evaluation:
    return _evaluate(dataset, wf, tmp_path_factory.mktemp("runs"))


def test_three_legs_on_one_oos_grid(evaluation: Evaluation) -> None:
    run = evaluation.run
    assert run.leg_names == ["primary", "filtered", "buy_hold"]
    assert run.record.data_label == "synthetic"
    assert "sqrt(8760)" in evaluation.annualization
    start = evaluation.oos.start_ms
    times = run.equity["open_time_ms"].to_numpy()
    # the grid is the OOS span: the initial equity one bar before the first test bar
    assert times[0] == start - Timeframe.H1.ms
    assert times[1] == start
    assert times[-1] == evaluation.oos.end_ms
    assert evaluation.report_path is not None
    text = evaluation.report_path.read_text()
    assert "SYNTHETIC" in text
    assert "sqrt(8760)" in text
    assert evaluation.run.metrics["out_of_sample_only"] is True


def test_no_trade_before_the_first_test_window(evaluation: Evaluation) -> None:
    start = evaluation.oos.start_ms
    for leg in ("primary", "filtered"):
        trades = evaluation.run.trades[leg]
        assert len(trades) > 0
        assert trades["entry_ms"].min() > start
        assert evaluation.backtests[leg].trades["entry_time_ms"].min() > start
        assert trades["signal_time_ms"].min() >= start
    assert (evaluation.oos.events["time_ms"] >= start).all()


def test_filtered_trades_come_from_taken_primary_events(evaluation: Evaluation) -> None:
    ev = evaluation.oos.events
    primary_events = set(zip(ev["symbol"], ev["time_ms"], strict=True))
    taken = ev[ev["take"]]
    taken_events = set(zip(taken["symbol"], taken["time_ms"], strict=True))
    filtered = evaluation.run.trades["filtered"]
    keys = set(zip(filtered["symbol"], filtered["signal_time_ms"], strict=True))
    assert keys <= primary_events
    assert keys <= taken_events
    assert len(filtered) < len(evaluation.run.trades["primary"])
    # primary: every OOS event is tried (only the position limits block some);
    # filtered: exactly the events the fold's model rejected are not traded
    outcome_p = evaluation.backtests["primary"].events["outcome"].astype(str)
    outcome_f = evaluation.backtests["filtered"].events["outcome"].astype(str)
    assert not (outcome_p == "decision_false").any()
    np.testing.assert_array_equal((outcome_f == "decision_false").to_numpy(), ~ev["take"])
    assert 0 < evaluation.oos.n_take < len(ev)


def test_costs_are_paid_and_reported(evaluation: Evaluation) -> None:
    for leg in ("primary", "filtered"):
        fig = evaluation.figures[leg]
        assert (fig.fees_paid or 0.0) > 0.0
        assert (fig.slippage_paid or 0.0) > 0.0
        assert fig.n_trades == len(evaluation.run.trades[leg])
        assert None not in (fig.sharpe, fig.psr, fig.dsr)
    bh = evaluation.figures["buy_hold"]
    assert bh.fees_paid == pytest.approx(BT.initial_equity * 0.0005 / 1.0005)
    assert (bh.n_trades, bh.win_rate) == (None, None)
    # buy-and-hold of the same symbols: each share follows its symbol's close after costs
    eq = evaluation.run.equity.set_index("open_time_ms")["buy_hold"]
    assert eq.iloc[0] == BT.initial_equity
    notes = evaluation.run.record.notes
    assert notes["buy_hold_costs"]["fees"] == pytest.approx(bh.fees_paid)
    assert notes["oos_events"] == len(evaluation.oos.events)


def test_same_inputs_same_run(
    evaluation: Evaluation, dataset: ResearchDataset, wf: WalkForwardResult, tmp_path: Path
) -> None:
    again = _evaluate(dataset, wf, tmp_path / "runs")
    assert again.run_id == evaluation.run_id
    assert again.trades_sha256 == evaluation.trades_sha256
    assert set(again.trades_sha256) == {"primary", "filtered"}
    pd.testing.assert_frame_equal(again.run.equity, evaluation.run.equity)
    # writing the same run again into the same place is a no-op
    third = _evaluate(dataset, wf, tmp_path / "runs")
    assert third.run_dir == again.run_dir
    assert read_run(third.run_dir).record.run_id == again.run_id


def test_walkforward_cli_on_synthetic(
    store: CandleStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "small.toml"
    toml.write_text(SMALL_TOML)
    args = [
        "walkforward",
        "--data-dir",
        str(store.root),
        "--exchange",
        "synthetic",
        "--config",
        str(toml),
        "--min-train-days",
        "60",
        "--min-train-events",
        "60",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--n-trials",
        "3",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out
    assert "sqrt(8760)" in out
    assert "DSR (3 trials)" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    run = read_run(run_dir)
    assert run.record.notes["folds"] > 0
    assert run.record.seed == 7
    assert json.loads((run_dir / "run.json").read_text())["data_label"] == "synthetic"
    # every stored symbol when --symbols is not given
    assert set(run.trades["primary"]["symbol"]) == set(SYMBOLS)
    # spot is long only by default, and the run and its summary say so
    assert set(run.trades["primary"]["side"]) == {1}
    assert run.record.setup is not None
    assert run.record.setup.sides == "long only (spot, no margin)"
    assert "Sides: long only (spot, no margin)." in out
    for leg in ("primary", "filtered", "buy_hold"):
        assert leg in out
    report = re.search(r"report: (\S+report\.html)", out)
    assert report is not None
    assert Path(report.group(1)).exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n-trials", "0"], "--n-trials must be >= 1"),
        (["--exchange", "nowhere"], "no nowhere/spot/*/1h candles"),
    ],
)
def test_walkforward_cli_errors(
    store: CandleStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    code = main(["walkforward", "--data-dir", str(store.root), "--exchange", "synthetic", *extra])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("ConfigError: ")
    assert message in err
    assert len(err.splitlines()) == 1


def test_walkforward_cli_on_real_data(
    shared_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = CandleStore(tmp_path / "store")
    files = [shared_data_dir / f"{s}_spot_1h.parquet" for s in ("BTCUSDT", "ETHUSDT")]
    import_files(store, files)
    args = [
        "walkforward",
        "--data-dir",
        str(store.root),
        "--symbols",
        "BTCUSDT",
        "--symbols",
        "ETHUSDT",
        "--start",
        "2023-01-01",
        "--end",
        "2025-01-01",
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    second = capsys.readouterr().out
    assert "REAL data" in first
    assert "sqrt(8760)" in first
    assert re.search(r"Metric\s.*primary\s.*filtered\s.*buy_hold", first)
    for row in ("Sharpe (annualised)", "PSR", "DSR (1 trial)", "Max drawdown", "Fees paid"):
        assert row in first
    hashes = re.findall(r"trades sha256 \((\w+)\): ([0-9a-f]{64})", first)
    assert [leg for leg, _ in hashes] == ["primary", "filtered"]
    assert hashes == re.findall(r"trades sha256 \((\w+)\): ([0-9a-f]{64})", second)
    run_id = re.search(r"run ([0-9a-f]{12}):", first)
    assert run_id is not None
    assert f"run {run_id.group(1)}:" in second
    oos = re.search(r"Out-of-sample only: (\d{4}-\d\d-\d\d)", first)
    assert oos is not None
    assert oos.group(1) >= "2023-06-30"
    trades = read_run(tmp_path / "runs" / run_id.group(1)).trades["primary"]
    assert np.all(trades["entry_ms"] >= parse_time_ms("2023-06-30"))


@pytest.fixture(scope="module")
def perp(store: CandleStore) -> tuple[ResearchDataset, WalkForwardResult]:
    uni = load_universe(store, EXCHANGE, SYMBOLS[:2], Market.PERP, Timeframe.H1)
    data = build_dataset(uni, SPEC, EXITS)
    return data, run_walkforward(data, WF, PARAMS, n_jobs=2)


def test_perpetuals_pay_funding_in_every_leg(
    perp: tuple[ResearchDataset, WalkForwardResult], tmp_path: Path
) -> None:
    data, result = perp
    uni = data.universe
    ev = evaluate_walkforward(
        data, result, BT, runs_dir=tmp_path, wf_config=WF, meta_params=PARAMS, seed=1
    )
    for leg in ("primary", "filtered", "buy_hold"):
        paid = ev.figures[leg].funding_paid
        assert paid is not None
        assert paid != 0.0
    assert ev.run.record.notes["buy_hold_costs"]["funding"] == ev.buy_hold.funding
    assert ev.run.record.seed == 1
    btc = uni.symbols["BTCUSDT"]
    unfunded = dataclasses.replace(
        uni, symbols={**uni.symbols, "BTCUSDT": dataclasses.replace(btc, funding=None)}
    )
    with pytest.raises(DataError, match="perpetual symbol BTCUSDT has no funding stored"):
        evaluate_walkforward(
            dataclasses.replace(data, universe=unfunded),
            result,
            BT,
            runs_dir=tmp_path,
            wf_config=WF,
            meta_params=PARAMS,
            seed=1,
        )
    # the buy-and-hold leg is the funding-adjusted holding: below the unfunded one when longs
    # paid on balance, above it when they received
    free = evaluate_walkforward(
        dataclasses.replace(data, universe=dataclasses.replace(uni, market=Market.SPOT)),
        result,
        BT,
        runs_dir=tmp_path,
        wf_config=WF,
        meta_params=PARAMS,
        seed=1,
        render=False,
    )
    assert free.report_path is None
    assert free.buy_hold.funding == 0.0
    diff = free.buy_hold.equity.iloc[-1] - ev.buy_hold.equity.iloc[-1]
    assert np.sign(diff) == np.sign(ev.buy_hold.funding)


def test_the_run_names_what_was_run(evaluation: Evaluation, dataset: ResearchDataset) -> None:
    setup = evaluation.run.record.setup
    assert setup is not None
    assert (setup.exchange, setup.market, setup.timeframe) == (EXCHANGE, "spot", "1h")
    assert setup.symbols == SYMBOLS
    assert (setup.rule, setup.rule_params) == ("ema_cross", {"fast": 10, "slow": 30})
    b = setup.barriers
    assert (b.mode, b.sl, b.tp1, b.tp2, b.horizon_bars) == ("atr", 1.0, 1.5, 3.0, 24)
    c = setup.costs
    assert (c.maker_fee_bps, c.taker_fee_bps, c.slippage_bps) == pytest.approx((2.0, 5.0, 2.0))
    assert (c.take_profit_fee, c.funding) == ("taker", False)
    # SPEC sells short on spot and BT charges no margin interest: the run says so
    assert setup.sides == "long/short (spot on margin at 0 bps/h: no borrow cost charged)"
    z = setup.sizing
    assert (z.mode, z.kelly_fraction, z.margin_leverage) == ("fixed_fractional", None, None)
    assert (z.risk_per_trade, z.max_gross_leverage, z.max_positions) == (
        BT.sizing.risk_fraction, 3.0, 5,
    )  # fmt: skip
    d = setup.dates
    assert d.first_signal_ms == int(dataset.events["time_ms"].min())
    assert d.last_signal_ms == int(dataset.events["time_ms"].max())
    assert (d.oos_start_ms, d.oos_end_ms) == (evaluation.oos.start_ms, evaluation.oos.end_ms)
    wf = setup.walkforward
    assert wf is not None
    assert (wf.retrain_days, wf.embargo_hours, wf.train_mode) == (30, 48.0, "expanding")
    assert (wf.min_train_days, wf.min_train_events) == (60, 60)
    assert wf.folds == len(setup.models) == evaluation.run.record.notes["folds"]
    ids = [m.model_id for m in setup.models]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{12}", i) for i in ids)
    taken = evaluation.oos.events.groupby("fold")["threshold"].first()
    assert [m.threshold for m in setup.models] == [float(taken[m.fold]) for m in setup.models]
    raw = json.loads((evaluation.run_dir / "run.json").read_text())
    assert raw["setup"]["rule_params"] == {"fast": 10, "slow": 30}
    assert evaluation.report_path is not None
    page = evaluation.report_path.read_text()
    assert "<h2>What was run</h2>" in page
    assert ids[0] in page


def test_funding_that_wipes_out_buy_and_hold_is_a_liquidation(
    perp: tuple[ResearchDataset, WalkForwardResult], tmp_path: Path
) -> None:
    data, result = perp
    uni = data.universe
    # longs pay 2% of the notional every 8 hours: each holding's funding outgrows its value
    symbols = {
        s: dataclasses.replace(d, funding=d.funding.assign(funding_rate=0.02))  # type: ignore[union-attr]
        for s, d in uni.symbols.items()
    }
    costly = dataclasses.replace(data, universe=dataclasses.replace(uni, symbols=symbols))
    ev = evaluate_walkforward(
        costly, result, BT, runs_dir=tmp_path, wf_config=WF, meta_params=PARAMS, seed=1
    )
    bh = ev.buy_hold
    assert set(bh.liquidations) == set(ev.run.record.setup.symbols)  # type: ignore[union-attr]
    assert bh.liquidated_ms == max(bh.liquidations.values())
    eq = ev.run.equity.set_index("open_time_ms")["buy_hold"]
    assert (eq.loc[eq.index < bh.liquidated_ms] > 0.0).all()
    assert (eq.loc[eq.index >= bh.liquidated_ms] == 0.0).all()
    assert ev.figures["buy_hold"].total_return == -1.0
    liqs = ev.run.record.liquidations
    assert [q.symbol for q in liqs if q.leg == "buy_hold"].count(None) == 1
    assert liqs[-1].symbol is None  # at one time, the holdings first, then the leg
    assert liqs[-1].time_ms == bh.liquidated_ms
    assert ev.report_path is not None
    page = ev.report_path.read_text()
    assert "buy_hold: liquidated at " in page
    for sym in bh.liquidations:
        assert f"buy_hold {sym}: liquidated at " in page
    for leg in ("primary", "filtered"):  # the strategy legs go on (shorts receive the funding)
        assert ev.run.equity[leg].iloc[-1] > 0.0


@pytest.mark.shared_data
def test_real_perpetual_buy_and_hold_is_liquidated_not_refused(
    shared_data_dir: Path, tmp_path: Path
) -> None:
    from atra.core.costs import CostModel
    from atra.research.evaluation.buy_hold import buy_and_hold

    store = CandleStore(tmp_path / "store")
    perps = ("ADAUSDT", "BTCUSDT", "ETHUSDT", "LTCUSDT", "XRPUSDT")
    import_files(
        store,
        [shared_data_dir / f"{s}_perp_{kind}.parquet" for s in perps for kind in ("1h", "funding")],
    )
    uni = load_universe(store, "binance", perps, Market.PERP, Timeframe.H1)
    start = parse_time_ms("2020-08-01")
    candles = {
        s: d.candles[d.candles["open_time"] >= start].reset_index(drop=True)
        for s, d in uni.symbols.items()
    }
    funding = {s: d.funding for s, d in uni.symbols.items() if d.funding is not None}
    grid = np.unique(np.concatenate([c["open_time"].to_numpy() for c in candles.values()]))
    bh = buy_and_hold(candles, grid, 10_000.0, CostModel(), funding=funding)
    # a 1x long held from mid-2020 pays funding on a notional that grew with the 2021 rally,
    # then gives the rally back in 2022: some holdings end up owing more than they are worth
    assert bh.liquidations
    eq = bh.equity.to_numpy()
    assert np.all(eq >= 0.0)
    for t in bh.liquidations.values():
        assert parse_time_ms("2021-01-01") <= t <= parse_time_ms("2025-01-01")
    if bh.liquidated_ms is not None:
        row = int(np.searchsorted(grid, bh.liquidated_ms))
        assert np.all(eq[:row] > 0.0)
        assert np.all(eq[row:] == 0.0)
