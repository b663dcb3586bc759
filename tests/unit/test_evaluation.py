"""Pieces of the OOS evaluation: buy-and-hold arithmetic, the OOS event selection and its
errors, the backtest settings from the config, the data hash and the JSON cleaning."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atra.adapters.store import CandleStore
from atra.config import RULE_PARAMS, AtraConfig, CostsConfig, RiskConfig, StrategyConfig
from atra.core.costs import CostModel
from atra.core.exits.api import ExitSpec
from atra.core.meta import OOSPredictions
from atra.core.signals.spec import Rule, SignalSpec
from atra.core.synthetic.market import EXCHANGE, SyntheticConfig
from atra.core.types import Market, Timeframe
from atra.core.validation import Fold
from atra.data.demo import stage_data
from atra.errors import DataError
from atra.research.evaluation.buy_hold import buy_and_hold
from atra.research.evaluation.loop import plain
from atra.research.evaluation.oos import oos_candles, oos_events
from atra.research.evaluation.result import metric_number
from atra.research.evaluation.settings import (
    RULE_FIELDS,
    backtest_config_from,
    data_label_of,
    rule_params_of,
    universe_hash,
)
from atra.research.pipeline import (
    ResearchDataset,
    WalkForwardResult,
    build_dataset,
    load_universe,
    parse_time_ms,
    settings_from_config,
)

H = 3_600_000
T0 = parse_time_ms("2024-01-01")


def _candles(opens: list[float], closes: list[float], start: int = T0) -> pd.DataFrame:
    o = np.asarray(opens, dtype=float)
    c = np.asarray(closes, dtype=float)
    return pd.DataFrame(
        {
            "open_time": start + H * np.arange(o.size, dtype=np.int64),
            "open": o,
            "high": np.maximum(o, c) * 1.01,
            "low": np.minimum(o, c) * 0.99,
            "close": c,
            "volume": np.ones(o.size),
        }
    )


# ---- buy-and-hold ---------------------------------------------------------------------------


def test_buy_and_hold_by_hand() -> None:
    costs = CostModel(taker_fee_rate=0.001, slippage_bps=10.0)
    candles = {
        "AAA": _candles([100.0, 110.0, 120.0], [110.0, 120.0, 90.0]),
        # listed one bar later: its share is cash until then
        "BBB": _candles([10.0, 20.0], [20.0, 5.0], start=T0 + H),
    }
    grid = T0 + H * np.arange(3, dtype=np.int64)
    bh = buy_and_hold(candles, grid, 1_000.0, costs)
    share = 500.0
    qa = share / 1.001 / (100.0 * 1.001)
    qb = share / 1.001 / (10.0 * 1.001)
    expected = [qa * 110.0 + share, qa * 120.0 + qb * 20.0, qa * 90.0 + qb * 5.0]
    np.testing.assert_allclose(bh.equity.to_numpy(), expected, rtol=1e-12)
    assert list(bh.equity.index) == grid.tolist()
    assert bh.fees == pytest.approx(2 * share / 1.001 * 0.001)
    assert bh.slippage == pytest.approx(qa * 100.0 * 0.001 + qb * 10.0 * 0.001)
    assert bh.funding == 0.0


def test_buy_and_hold_pays_funding_on_perpetuals() -> None:
    costs = CostModel(taker_fee_rate=0.0, slippage_bps=0.0)
    candles = {"AAA": _candles([100.0] * 4, [100.0] * 4)}
    grid = T0 + H * np.arange(4, dtype=np.int64)
    funding = pd.DataFrame(
        {
            # before the entry (not paid), inside, inside, after the grid end (not paid)
            "funding_time": np.array([T0 - H, T0 + H, T0 + 2 * H + 1, T0 + 9 * H], np.int64),
            "funding_rate": [0.5, 0.01, -0.02, 0.5],
        }
    )
    bh = buy_and_hold(candles, grid, 1_000.0, costs, funding={"AAA": funding})
    qty = 10.0
    paid1 = qty * 100.0 * 0.01
    paid2 = qty * 100.0 * -0.02
    np.testing.assert_allclose(
        bh.equity.to_numpy(), [1_000.0, 1_000.0 - paid1, 1_000.0 - paid1, 1_000.0 - paid1 - paid2]
    )
    assert bh.funding == pytest.approx(paid1 + paid2)


def _funding(times: list[int], rates: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"funding_time": np.array(times, np.int64), "funding_rate": rates})


def test_funding_liquidates_one_holding_and_the_others_carry_on() -> None:
    candles = {"AAA": _candles([100.0] * 4, [100.0] * 4), "BBB": _candles([10.0] * 4, [10.0] * 4)}
    grid = T0 + H * np.arange(4, dtype=np.int64)
    # AAA pays twice its value at T0 + H: liquidated in that bar, worth 0 to the end
    bh = buy_and_hold(
        candles,
        grid,
        1_000.0,
        CostModel(taker_fee_rate=0.0),
        funding={"AAA": _funding([T0 + H], [2.0])},
    )
    np.testing.assert_allclose(bh.equity.to_numpy(), [1_000.0, 500.0, 500.0, 500.0])
    assert bh.liquidations == {"AAA": T0 + H}
    assert bh.liquidated_ms is None  # BBB is still held
    assert bh.funding == pytest.approx(5.0 * 100.0 * 2.0)  # paid up to the liquidation only
    leg = bh.leg("buy_hold", T0 - H, 1_000.0)
    assert [(q.symbol, q.time_ms) for q in leg.liquidations] == [("AAA", T0 + H)]
    assert leg.liquidated_ms is None


def test_a_leg_whose_every_holding_is_liquidated_is_zero_from_then_on() -> None:
    candles = {"AAA": _candles([100.0] * 5, [100.0] * 5)}
    grid = T0 + H * np.arange(5, dtype=np.int64)
    funding = _funding([T0 + H, T0 + 2 * H, T0 + 3 * H], [0.6, 0.6, -5.0])  # a refund comes late
    bh = buy_and_hold(candles, grid, 100.0, CostModel(taker_fee_rate=0.0), funding={"AAA": funding})
    # 40 left after the first payment, -20 after the second: liquidated at T0 + 2h, and the
    # refund at T0 + 3h does not bring it back
    np.testing.assert_array_equal(bh.equity.to_numpy(), [100.0, 40.0, 0.0, 0.0, 0.0])
    assert bh.liquidations == {"AAA": T0 + 2 * H}
    assert bh.liquidated_ms == T0 + 2 * H
    assert bh.funding == pytest.approx(120.0)
    leg = bh.leg("buy_hold", T0 - H, 100.0)
    assert leg.liquidated_ms == T0 + 2 * H
    assert leg.equity.index[0] == T0 - H
    np.testing.assert_array_equal(leg.equity.to_numpy(), [100.0, 100.0, 40.0, 0.0, 0.0, 0.0])


def test_a_holding_is_liquidated_at_the_bar_low() -> None:
    # 50 of 100 paid in funding; the third bar dips to 40 (worth -10 there) and closes at 90
    frame = _candles([100.0, 100.0, 90.0, 90.0], [100.0, 100.0, 90.0, 90.0])
    frame.loc[2, "low"] = 40.0
    grid = T0 + H * np.arange(4, dtype=np.int64)
    costs = CostModel(taker_fee_rate=0.0)
    bh = buy_and_hold(
        {"AAA": frame}, grid, 100.0, costs, funding={"AAA": _funding([T0 + H], [0.5])}
    )
    np.testing.assert_array_equal(bh.equity.to_numpy(), [100.0, 50.0, 0.0, 0.0])
    assert bh.liquidated_ms == T0 + 2 * H
    spot = buy_and_hold({"AAA": frame}, grid, 100.0, costs)  # no funding: never liquidated
    assert spot.liquidations == {}
    assert spot.equity.to_numpy().min() > 0.0


@settings(max_examples=40, deadline=None)
@given(
    closes=st.lists(st.floats(1.0, 200.0), min_size=3, max_size=40),
    rates=st.lists(st.floats(-0.05, 0.3), min_size=1, max_size=40),
)
def test_liquidation_never_clips_before_the_bar_and_stays_at_zero(
    closes: list[float], rates: list[float]
) -> None:
    opens = [closes[0], *closes[:-1]]
    candles = {"AAA": _candles(opens, closes)}
    n = len(closes)
    grid = T0 + H * np.arange(n, dtype=np.int64)
    times = [T0 + H * (k + 1) for k in range(min(len(rates), n - 1))]
    funding = {"AAA": _funding(times, rates[: len(times)])}
    costs = CostModel(taker_fee_rate=0.0)
    bh = buy_and_hold(candles, grid, 1_000.0, costs, funding=funding)
    eq = bh.equity.to_numpy()
    assert np.all(eq >= 0.0)
    qty = 1_000.0 / opens[0]
    paid = np.cumsum([qty * opens[k + 1] * r for k, r in enumerate(rates[: len(times)])])
    owed = np.concatenate(([0.0], paid, np.full(n - 1 - len(times), paid[-1] if len(paid) else 0)))
    low = candles["AAA"]["low"].to_numpy()
    unclipped = qty * np.asarray(closes) - owed
    below = np.flatnonzero(qty * low - owed <= 0.0)
    if below.size == 0:
        assert bh.liquidated_ms is None
        np.testing.assert_allclose(eq, unclipped, rtol=1e-12)
    else:
        k = int(below[0])
        assert bh.liquidated_ms == int(grid[k])
        np.testing.assert_allclose(eq[:k], unclipped[:k], rtol=1e-12)  # untouched before
        assert np.all(eq[:k] > 0.0)
        assert np.all(eq[k:] == 0.0)


def test_buy_and_hold_needs_bars() -> None:
    with pytest.raises(DataError, match="no bars"):
        buy_and_hold({}, np.zeros(0, np.int64), 100.0, CostModel())


@settings(max_examples=30, deadline=None)
@given(
    prices=st.lists(st.floats(0.5, 500.0), min_size=2, max_size=30),
    fee=st.floats(0.0, 0.005),
    slip=st.floats(0.0, 50.0),
)
def test_buy_and_hold_tracks_the_price_after_entry_costs(
    prices: list[float], fee: float, slip: float
) -> None:
    opens = [prices[0], *prices[:-1]]
    candles = {"AAA": _candles(opens, prices)}
    grid = T0 + H * np.arange(len(prices), dtype=np.int64)
    costs = CostModel(taker_fee_rate=fee, slippage_bps=slip)
    bh = buy_and_hold(candles, grid, 1_000.0, costs)
    entry_cost = (1.0 + fee) * (1.0 + slip / 1e4)
    ratio = np.asarray(prices) / prices[0] / entry_cost
    np.testing.assert_allclose(bh.equity.to_numpy(), 1_000.0 * ratio, rtol=1e-9)
    assert bh.fees + bh.slippage <= 1_000.0 * (entry_cost - 1.0) + 1e-9
    free = buy_and_hold(candles, grid, 1_000.0, CostModel(taker_fee_rate=0.0))
    assert np.all(bh.equity.to_numpy() <= free.equity.to_numpy() + 1e-9)


# ---- settings and labels --------------------------------------------------------------------


def test_backtest_config_from_the_config() -> None:
    cfg = AtraConfig(
        costs=CostsConfig(maker_fee_bps=1.0, taker_fee_bps=4.0, slippage_bps=3.0),
        risk=RiskConfig(risk_per_trade=0.015, max_open_positions=7, max_gross_leverage=2.0),
    )
    bt = backtest_config_from(cfg)
    assert bt.costs == CostModel(maker_fee_rate=1e-4, taker_fee_rate=4e-4, slippage_bps=3.0)
    assert bt.sizing.risk_fraction == 0.015
    assert bt.max_positions == 7
    assert bt.max_gross_leverage == 2.0
    assert bt.max_daily_loss == cfg.risk.max_daily_loss == 0.05
    # one position's notional under the gross cap, as the live loop sizes it
    assert bt.sizing.max_leverage == 2.0
    # risk.kelly = half (the default): the filtered leg sizes from p(take) at half Kelly
    assert bt.probability_column == "p_take"
    assert bt.sizing.kelly_multiplier == 0.5
    assert not bt.tp_maker  # every fill at the taker fee, as the labels assume


@pytest.mark.parametrize(
    ("kelly", "column", "mult"), [("none", None, 0.5), ("full", "p_take", 1.0)]
)
def test_backtest_config_from_maps_risk_kelly(kelly: str, column: str | None, mult: float) -> None:
    bt = backtest_config_from(AtraConfig(risk=RiskConfig(kelly=kelly)))  # type: ignore[arg-type]
    assert bt.probability_column == column
    assert bt.sizing.kelly_multiplier == mult


@pytest.mark.parametrize(
    ("rule", "params"),
    [("ema_cross", {"fast": 8, "slow": 21}), ("donchian", {"n": 30}), ("tsmom", {"lookback": 72})],
)
def test_the_rule_parameters_are_recorded_in_the_config_names(
    rule: str, params: dict[str, int]
) -> None:
    assert set(RULE_FIELDS[Rule(rule)]) == set(RULE_PARAMS[rule])
    cfg = AtraConfig(
        strategy=StrategyConfig(rule=rule, params={k: float(v) for k, v in params.items()})
    )
    assert rule_params_of(settings_from_config(cfg, "spot").signal) == params


@pytest.mark.parametrize(("exchange", "label"), [("synthetic", "synthetic"), ("binance", "real")])
def test_data_label(exchange: str, label: str) -> None:
    assert data_label_of(exchange) == label


def test_plain_makes_json_values() -> None:
    assert plain({"a": np.float64(1.5), "b": [math.nan, np.int64(2)], 3: (math.inf,)}) == {
        "a": 1.5,
        "b": [None, 2],
        "3": [None],
    }


# ---- OOS selection on a real (small) dataset ------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> ResearchDataset:
    store = CandleStore(tmp_path_factory.mktemp("eval") / "store")
    stage_data(store, config=SyntheticConfig(symbols=("BTCUSDT", "ETHUSDT"), bars=2_000, seed=3))
    uni = load_universe(store, EXCHANGE, ["BTCUSDT", "ETHUSDT"], Market.SPOT, Timeframe.H1)
    spec = SignalSpec(ema_fast=5, ema_slow=20, horizon_bars=12)
    return build_dataset(uni, spec, ExitSpec())


def _wf(dataset: ResearchDataset, test_start: int, preds: pd.DataFrame) -> WalkForwardResult:
    empty = np.zeros(0, np.int64)
    fold = Fold(0, empty, empty, 0, test_start - 1, test_start, test_start + 10 * 86_400_000, 0, 0)
    oos = OOSPredictions(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    return WalkForwardResult(preds, pd.DataFrame(), [fold], oos, 0, 0, 0.0)


def test_oos_events_select_the_test_windows(dataset: ResearchDataset) -> None:
    ev = dataset.events
    start = int(ev["time_ms"].iloc[len(ev) // 2])
    preds = ev[ev["time_ms"] >= start].iloc[::-1].copy()  # any order in, signal order out
    preds["take"] = np.arange(len(preds)) % 2 == 0
    preds = preds.iloc[1:]  # one event of the span without a decision
    oos = oos_events(dataset, _wf(dataset, start, preds))
    assert oos.start_ms == start
    assert oos.without_decision == 1
    assert len(oos.events) == len(preds)
    assert oos.events["time_ms"].is_monotonic_increasing
    assert oos.n_take == int(preds["take"].sum())
    last = max(int(d.candles["open_time"].iloc[-1]) for d in dataset.universe.symbols.values())
    assert oos.end_ms == last


def test_oos_events_errors(dataset: ResearchDataset) -> None:
    ev = dataset.events
    start = int(ev["time_ms"].iloc[len(ev) // 2])
    with pytest.raises(DataError, match="no out-of-sample prediction"):
        oos_events(dataset, _wf(dataset, start, ev.iloc[:0].assign(take=True)))
    early = ev.assign(take=True)
    with pytest.raises(DataError, match="before the first test window"):
        oos_events(dataset, _wf(dataset, start, early))
    late = ev[ev["time_ms"] >= start].assign(take=1.0)
    with pytest.raises(DataError, match="expected bool"):
        oos_events(dataset, _wf(dataset, start, late))


def test_universe_hash_follows_the_data(dataset: ResearchDataset) -> None:
    uni = dataset.universe
    h = universe_hash(uni)
    assert h == universe_hash(uni)
    btc = uni.symbols["BTCUSDT"]
    changed = btc.candles.copy()
    close = changed["close"].to_numpy(copy=True)
    close[-1] *= 1.0001
    changed["close"] = close
    other = dataclasses.replace(
        uni, symbols={**uni.symbols, "BTCUSDT": dataclasses.replace(btc, candles=changed)}
    )
    assert universe_hash(other) != h
    no_btc = dataclasses.replace(uni, btc=None)
    assert universe_hash(no_btc) != h
    assert len(h) == 64


def test_oos_candles_start_at_the_span(dataset: ResearchDataset) -> None:
    uni = dataset.universe
    btc = uni.symbols["BTCUSDT"]
    times = btc.candles["open_time"].to_numpy()
    start = int(times[500])
    # ETHUSDT's data ends before the span: it has no bar to hold or trade
    eth = dataclasses.replace(uni.symbols["ETHUSDT"], candles=btc.candles.iloc[:100])
    cut = dataclasses.replace(uni, symbols={"BTCUSDT": btc, "ETHUSDT": eth})
    candles, offsets = oos_candles(cut, start)
    assert list(candles) == ["BTCUSDT"]
    assert offsets == {"BTCUSDT": 500}
    assert int(candles["BTCUSDT"]["open_time"].iloc[0]) == start
    assert candles["BTCUSDT"].index[0] == 0
    with pytest.raises(DataError, match="no symbol has bars after the OOS start"):
        oos_candles(cut, int(times[-1]) + 1)


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("inf", math.inf), ("-inf", -math.inf), (2, 2.0)]
)
def test_metric_numbers(value: object, expected: float | None) -> None:
    assert metric_number(value) == expected
