"""The decision function: per-bar `decide` on truncated history == vectorised `decide_events`."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from atra.adapters.store import CandleStore
from atra.core.decision import (
    BLOCKED_META,
    BLOCKED_NO_SIGNAL,
    BLOCKED_SIZING,
    EVENT_FEATURES,
    ModelHandle,
    bar_features,
    decide,
    decide_events,
    decision_features,
    model_bar_features,
    primary_signal_at,
    size_like_backtest,
)
from atra.core.exits.api import ExitSpec
from atra.core.features.registry import FeatureContext
from atra.core.meta import MetaModel, MetaParams
from atra.core.signals.spec import BarrierMode, Signal, SignalSpec
from atra.core.sizing import SizingConfig
from atra.core.synthetic.market import EXCHANGE, SyntheticConfig
from atra.core.types import Market, Side, Timeframe
from atra.data.demo import stage_data
from atra.errors import ConfigError, DataError
from atra.research.pipeline import (
    ResearchDataset,
    SymbolData,
    Universe,
    build_dataset,
    load_universe,
    parse_time_ms,
    symbol_features,
)

SYMBOLS = ("BTCUSDT", "ETHUSDT")
SPEC = SignalSpec(ema_fast=10, ema_slow=30, sl_atr=1.0, tp1_atr=1.5, tp2_atr=3.0, horizon_bars=24)
PARAMS = MetaParams(n_estimators=30, num_leaves=7, min_child_samples=10, inner_splits=0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> ResearchDataset:
    root = tmp_path_factory.mktemp("decision") / "store"
    store = CandleStore(root)
    stage_data(store, config=SyntheticConfig(symbols=SYMBOLS, bars=3000, seed=11))
    universe = load_universe(
        store, EXCHANGE, SYMBOLS, Market.SPOT, Timeframe.H1, parse_time_ms("2022-01-20"), None,
        warmup_bars=400,
    )  # fmt: skip
    return build_dataset(universe, SPEC, ExitSpec())


@pytest.fixture(scope="module")
def handle(dataset: ResearchDataset) -> ModelHandle:
    ev, X = dataset.training()
    model = MetaModel(PARAMS).fit(X, ev["meta_label"].to_numpy(dtype=np.int64))
    return ModelHandle(model, "test-model")


def truncated(universe: Universe, symbol: str, t: int) -> Universe:
    """Every input of ``symbol`` cut at bar ``t``'s close: what a live loop has at that time."""
    data = universe.symbols[symbol]
    close_ms = int(data.candles["open_time"].iloc[t]) + universe.timeframe.ms

    def cut(frame: pd.DataFrame | None, col: str = "open_time") -> pd.DataFrame | None:
        if frame is None:
            return None
        return frame[frame[col] < close_ms].reset_index(drop=True)

    return dataclasses.replace(
        universe,
        symbols={
            symbol: SymbolData(
                symbol,
                data.candles.iloc[: t + 1].reset_index(drop=True),
                cut(data.funding, "funding_time"),
                cut(data.counterpart),
            )
        },
        btc=cut(universe.btc),
    )


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_per_bar_decide_on_truncated_history_equals_vectorised(
    dataset: ResearchDataset, handle: ModelHandle, symbol: str
) -> None:
    uni = dataset.universe
    vector = decide_events(dataset.events, dataset.X, handle)
    mine = vector[vector["symbol"] == symbol].set_index("t")
    assert len(mine) >= 10
    n = len(uni.symbols[symbol].candles)
    event_bars = mine.index.to_numpy()
    rng = np.random.default_rng(3)
    quiet = rng.choice(np.setdiff1d(np.arange(int(event_bars.min()), n), event_bars), 8, False)
    bars = sorted({*event_bars[-12:].tolist(), *quiet.tolist()})
    decisions_taken = {True: 0, False: 0}
    for t in bars:
        cut = truncated(uni, symbol, t)
        candles = cut.symbols[symbol].candles
        feats, _ = bar_features(candles, cut.context(symbol), model_bar_features(handle))
        _, signal = primary_signal_at(candles, SPEC, symbol=symbol, timeframe=uni.timeframe)
        d = decide(candles, feats, signal, handle)
        if t not in mine.index:
            assert signal is None
            assert (d.take, d.blocked_by, d.p_take) == (False, BLOCKED_NO_SIGNAL, None)
            continue
        row = mine.loc[t]
        assert signal is not None
        assert signal.time_ms == int(row["time_ms"])
        assert d.p_take == float(row["p_take"])  # exact: same inputs, same trees
        assert d.threshold == float(row["threshold"]) == handle.threshold
        assert d.take is bool(row["take"])
        assert d.blocked_by == row["blocked_by"]
        assert d.reasons == row["reasons"]
        assert d.model_id == "test-model"
        decisions_taken[d.take] += 1
    assert decisions_taken[True] + decisions_taken[False] == min(12, len(mine))


def test_decision_features_take_the_signal_bar_row(dataset: ResearchDataset) -> None:
    sym = SYMBOLS[0]
    feats, _ = symbol_features(dataset.universe, sym, dataset.bar_features)
    ev = dataset.events[dataset.events["symbol"] == sym]
    X = dataset.X.loc[ev.index]
    for i in (0, len(ev) // 2, len(ev) - 1):
        t = int(ev["t"].iloc[i])
        expect = feats.iloc[t][list(dataset.bar_features)].to_numpy(dtype=np.float64)
        got = X.iloc[i][list(dataset.bar_features)].to_numpy(dtype=np.float64)
        np.testing.assert_array_equal(got, expect)
        assert int(feats["open_time"].iloc[t]) == int(ev["time_ms"].iloc[i])
    assert list(X.columns) == [*dataset.bar_features, *EVENT_FEATURES]
    np.testing.assert_array_equal(X["side"], ev["side"].astype(float))
    sl_pct = (ev["entry"] - ev["sl"]).abs() / ev["entry"]
    np.testing.assert_allclose(X["sl_dist_pct"], sl_pct, rtol=1e-15)


def _last_event(dataset: ResearchDataset) -> tuple[pd.DataFrame, pd.DataFrame, Signal]:
    sym = SYMBOLS[0]
    candles = dataset.universe.symbols[sym].candles
    ev = dataset.events[dataset.events["symbol"] == sym]
    t = int(ev["t"].iloc[-1])
    cut = candles.iloc[: t + 1].reset_index(drop=True)
    feats, _ = symbol_features(truncated(dataset.universe, sym, t), sym, dataset.bar_features)
    _, signal = primary_signal_at(cut, SPEC, symbol=sym, timeframe=Timeframe.H1)
    assert signal is not None
    return cut, feats, signal


def test_primary_only_takes_every_signal_and_sizes_it(dataset: ResearchDataset) -> None:
    candles, feats, signal = _last_event(dataset)
    sizing = SizingConfig(max_leverage=100.0)
    d = decide(candles, feats, signal, None, equity=10_000.0, sizing=sizing)
    assert d.take
    assert d.blocked_by is None
    assert d.p_take is None
    assert d.threshold is None
    assert d.reasons == ()
    assert d.model_id is None
    assert d.sizing is not None
    assert d.sizing.tradeable
    assert d.sizing.risk_fraction == pytest.approx(0.02)
    assert d.sizing.risk_amount == pytest.approx(200.0)
    vec = decide_events(dataset.events, dataset.X, None)
    assert vec["take"].all()
    assert vec["p_take"].isna().all()
    assert vec["blocked_by"].isna().all()


def test_threshold_blocks_and_kelly_sizes(dataset: ResearchDataset, handle: ModelHandle) -> None:
    candles, feats, signal = _last_event(dataset)
    blocked = decide(candles, feats, signal, handle, threshold=0.99)
    assert not blocked.take
    assert blocked.blocked_by == BLOCKED_META
    assert blocked.p_take is not None
    assert blocked.p_take < 0.99
    assert len(blocked.reasons) == 3
    assert blocked.sizing is None
    taken = decide(
        candles, feats, signal, handle.model, threshold=0.01, equity=1e4,
        sizing=SizingConfig(), use_kelly=True,
    )  # fmt: skip
    assert taken.take
    assert taken.model_id is None
    assert taken.p_take is not None
    assert taken.sizing is not None
    b = abs(signal.tp1 - signal.entry) / abs(signal.entry - signal.sl)
    kelly = taken.p_take - (1 - taken.p_take) / b
    assert taken.sizing.kelly_fraction == pytest.approx(kelly)
    if kelly <= 0:
        assert taken.blocked_by == BLOCKED_SIZING
        assert not taken.sizing.tradeable


def test_untradeable_size_blocks(dataset: ResearchDataset) -> None:
    candles, feats, signal = _last_event(dataset)
    d = decide(candles, feats, signal, None, equity=0.0, sizing=SizingConfig())
    assert not d.take
    assert d.blocked_by == BLOCKED_SIZING
    assert d.sizing is not None
    assert d.sizing.quantity == 0.0


def test_vectorised_threshold_and_no_explain(dataset: ResearchDataset, handle: ModelHandle) -> None:
    low = decide_events(dataset.events, dataset.X, handle.model, 0.01, explain=False)
    high = decide_events(dataset.events, dataset.X, handle, 0.99)
    np.testing.assert_array_equal(low["p_take"], high["p_take"])
    assert low["take"].all()
    assert (low["reasons"] == ()).all()
    assert not high["take"].any()
    assert (high["blocked_by"] == BLOCKED_META).all()
    assert (high["reasons"].map(len) == 3).all()
    empty = decide_events(dataset.events.iloc[:0], dataset.X.iloc[:0], handle)
    assert empty.empty
    assert "p_take" in empty.columns


@pytest.mark.parametrize("threshold", [0.0, 1.0, math.nan])
def test_bad_threshold(dataset: ResearchDataset, handle: ModelHandle, threshold: float) -> None:
    with pytest.raises(ConfigError, match="threshold"):
        decide_events(dataset.events, dataset.X, handle, threshold)
    candles, feats, signal = _last_event(dataset)
    with pytest.raises(ConfigError, match="threshold"):
        decide(candles, feats, signal, handle, threshold=threshold)


def test_bad_inputs(dataset: ResearchDataset, handle: ModelHandle) -> None:
    candles, feats, signal = _last_event(dataset)
    with pytest.raises(DataError, match="empty candle history"):
        decide(candles.iloc[:0], feats.iloc[:0], None)
    with pytest.raises(DataError, match="must be aligned"):
        decide(candles, feats.iloc[:-1], signal)
    shifted = feats.copy()
    shifted["open_time"] = shifted["open_time"] + 1
    with pytest.raises(DataError, match="last feature row"):
        decide(candles, shifted, signal)
    with pytest.raises(DataError, match="not at the last bar"):
        decide(candles.iloc[:-1], feats.iloc[:-1], signal)
    with pytest.raises(DataError, match="rows for"):
        decide_events(dataset.events, dataset.X.iloc[:-1], handle)


def test_decision_features_errors() -> None:
    feats = pd.DataFrame({"open_time": [0, 1], "a": [1.0, 2.0]})
    events = pd.DataFrame({"t": [1], "side": [1], "entry": [10.0], "sl": [9.0], "tp1": [12.0]})
    X = decision_features(events, feats, ["a"])
    assert X.to_dict("records") == [
        {"a": 2.0, "side": 1.0, "sl_dist_pct": 0.1, "tp1_dist_pct": 0.2}
    ]
    with pytest.raises(DataError, match="missing column"):
        decision_features(events, feats, ["b"])
    with pytest.raises(DataError, match="events: missing column"):
        decision_features(events.drop(columns=["sl"]), feats, ["a"])
    with pytest.raises(DataError, match="not a feature row"):
        decision_features(events.assign(t=[2]), feats, ["a"])


def test_primary_signal_at_quiet_bar() -> None:
    n = 80
    close = 100.0 + np.arange(n, dtype=np.float64) * 0.1  # steady rise: one cross at most
    candles = pd.DataFrame(
        {
            "open_time": np.arange(n, dtype=np.int64) * 3_600_000,
            "open": close,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": np.ones(n),
        }
    )
    spec = SignalSpec(barrier_mode=BarrierMode.PERCENT)
    frame, signal = primary_signal_at(candles, spec, symbol="X", timeframe=Timeframe.H1)
    assert signal is None
    assert frame.empty
    # a fall then a rise: the cross lands on the last bar of the prefix that ends there
    close2 = np.concatenate([np.linspace(120, 100, 60), np.linspace(100, 130, 60)])
    c2 = candles.iloc[:0].copy()
    c2 = pd.DataFrame(
        {
            "open_time": np.arange(120, dtype=np.int64) * 3_600_000,
            "open": close2,
            "high": close2 + 0.5,
            "low": close2 - 0.5,
            "close": close2,
            "volume": np.ones(120),
        }
    )
    from atra.core.signals.events import generate_events

    ev = generate_events(c2, spec, symbol="X")
    assert len(ev) >= 1
    t = int(ev["t"].iloc[0])
    frame, signal = primary_signal_at(c2.iloc[: t + 1], spec, symbol="X")
    assert signal is not None
    assert signal.side is Side.LONG
    assert len(frame) == 1
    assert signal.time_ms == int(c2["open_time"].iloc[t])


def test_model_handle_and_bar_features(handle: ModelHandle, dataset: ResearchDataset) -> None:
    assert handle.threshold == handle.model.threshold
    assert model_bar_features(handle) == list(dataset.bar_features)
    assert model_bar_features(handle.model) == list(dataset.bar_features)
    candles = dataset.universe.symbols[SYMBOLS[0]].candles
    bare = FeatureContext(timeframe=Timeframe.H1)
    feats, absent = bar_features(candles, bare, ["ret_1", "funding_rate", "btc_ret_24"])
    assert absent == ["btc", "funding"]
    assert feats["funding_rate"].isna().all()
    assert feats["ret_1"].notna().sum() == len(candles) - 1
    with pytest.raises(ConfigError, match="unknown feature"):
        bar_features(candles, bare, ["nope"])


@pytest.mark.parametrize(
    ("slip_bps", "fee", "kelly", "lev"),
    [(0.0, 0.0004, False, 1.0), (5.0, 0.0005, False, 0.2), (2.0, 0.0002, True, 3.0)],
)
def test_sizing_with_costs_is_the_backtests(
    dataset: ResearchDataset, slip_bps: float, fee: float, kelly: bool, lev: float
) -> None:
    """The live decision's quantity equals the backtest's for the same equity and event."""
    from atra.core.backtest.engine import BacktestConfig, run_backtest
    from atra.core.costs import CostModel

    candles, feats, signal = _last_event(dataset)
    sym = SYMBOLS[0]
    full = dataset.universe.symbols[sym].candles
    t = len(candles) - 1
    p = 0.7
    event = pd.DataFrame(
        {
            "symbol": [sym],
            "t": [t],
            "time_ms": [signal.time_ms],
            "side": [int(signal.side)],
            "entry": [signal.entry],
            "sl_dist": [signal.sl_dist],
            "tp1_dist": [signal.tp1_dist],
            "tp2_dist": [signal.tp2_dist],
            "horizon_bars": [signal.horizon_bars],
            "p": [p],
        }
    )
    sizing = SizingConfig(max_leverage=lev, kelly_multiplier=0.5)
    bt = run_backtest(
        {sym: full.iloc[: t + 60].reset_index(drop=True)},
        event,
        BacktestConfig(
            sizing=sizing,
            costs=CostModel(maker_fee_rate=fee, taker_fee_rate=fee, slippage_bps=slip_bps),
            probability_column="p" if kelly else None,
            max_gross_leverage=lev,
        ),
    )
    costs = ExitSpec(fee_entry=fee, fee_tp=fee, fee_stop=fee, slippage_bps=slip_bps)
    tr = bt.trades.iloc[0]
    sized = size_like_backtest(10_000.0, signal, sizing, costs, p if kelly else None)
    assert sized.quantity == pytest.approx(float(tr["quantity"]), rel=1e-12)
    assert sized.risk_amount == pytest.approx(float(tr["risk_amount"]), rel=1e-12)
    assert sized.risk_fraction <= 0.02 * (1 + 1e-12)
    d = decide(candles, feats, signal, None, equity=10_000.0, sizing=sizing, costs=costs)
    assert d.take
    assert d.sizing is not None
    if not kelly:
        assert d.sizing.quantity == sized.quantity
    capped = sized.notional >= lev * 10_000.0 * (1 - 1e-12)
    assert (sized.capped_by == "leverage") == capped


def test_sizing_with_costs_blocks_without_equity(dataset: ResearchDataset) -> None:
    candles, feats, signal = _last_event(dataset)
    d = decide(candles, feats, signal, None, equity=0.0, sizing=SizingConfig(), costs=ExitSpec())
    assert not d.take
    assert d.blocked_by == BLOCKED_SIZING
    assert d.sizing is not None
    assert d.sizing.reason == "no_equity"
