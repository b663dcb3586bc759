"""Live sources against their fakes: a replay whose decisions use Fear & Greed and MVRV
features equals the backtest's.

A small meta model (LightGBM, 40 trees) is trained on 2023 of four spot pairs (BTC, ETH, SOL,
XRP) with candle features plus the sentiment (Fear & Greed level, changes, z-score, extreme
flags) and valuation (BTC and ETH MVRV, its 365-day z-score, distance to the realised price,
market-cap momentum) features, on the shared series configured as ``examples/series.toml``
ships them (ETH's on-chain series for ETHUSDT only), saved and loaded back as ``atra live
--model`` loads it. Three weeks of January 2024 are then replayed through the live loop
against the fake exchange, the series coming through their live source adapters
(alternative.me ``fng``, Coin Metrics ``asset-metrics``) against
:class:`~atra.sim.series_server.FakeSeriesServer` serving the shared files on the replay's
clock (each day published when the real APIs publish it), fetched at most once per
publication. Every decision (p(take) to 1e-12), trade and equity mark equals the research
path's decisions backtested over the same range.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.helpers_series import shared_series

import helpers_parity
from atra.adapters.journal.database import Journal
from atra.cli.models import load_decision_model
from atra.config import AtraConfig
from atra.core.backtest.engine import BacktestConfig, run_backtest
from atra.core.costs import CostModel
from atra.core.decision import ModelHandle, decide_events
from atra.core.features.context import ModelInputs, SeriesInput
from atra.core.features.registry import HISTORY_BARS, features_by_family
from atra.core.sizing import SizingConfig
from atra.core.types import Market, Timeframe
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LiveLoop, LoopSettings, StrategyDecider
from atra.live.replay import ReplaySetup, run_replay
from atra.live.series_feed import SeriesFeed
from atra.research.pipeline import (
    SymbolData,
    Universe,
    build_dataset,
    settings_from_config,
    train_model,
)
from atra.sim.exchange import FakeExchange
from helpers_parity import hourly_candles

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
TF = Timeframe.H1
SETTINGS = settings_from_config(AtraConfig(), Market.SPOT)
SIZING = SizingConfig(risk_fraction=0.02, kelly_multiplier=0.5, max_leverage=1.0)
SERIES_FEATURES = (
    "fg_level", "fg_chg_1d", "fg_chg_7d", "fg_z_30d", "fg_extreme_fear", "fg_extreme_greed",
    "mvrv_btc", "mvrv_z_btc", "mcap_mom_30d_btc", "mvrv_eth", "mvrv_z_eth",
    "realized_dist_eth", "mcap_mom_30d_eth",
)  # fmt: skip


def _ms(day: str) -> int:
    return int(pd.Timestamp(day, tz="UTC").value // 1_000_000)


TRAIN_FROM, TRAIN_TO = _ms("2023-01-01"), _ms("2023-12-01")
FROM_MS, TO_MS = _ms("2024-01-01"), _ms("2024-01-22")


_quiet = helpers_parity._quiet


@pytest.fixture(scope="module")
def candles(shared_data_dir: Path) -> dict[str, pd.DataFrame]:
    lo = TRAIN_FROM - (HISTORY_BARS + 10) * TF.ms
    return hourly_candles(shared_data_dir, SYMBOLS, "spot", lo, TO_MS + 100 * TF.ms)


@pytest.fixture(scope="module")
def series(shared_series_dir: Path) -> tuple[SeriesInput, ...]:
    return shared_series(shared_series_dir, ("fear_greed", "onchain_btc", "onchain_eth"))


def universe(
    candles: dict[str, pd.DataFrame], series: tuple[SeriesInput, ...], lo_ms: int, hi_ms: int
) -> Universe:
    """What ``load_universe`` reads for ``[lo_ms, hi_ms)`` with the configured series."""
    read_from = lo_ms - HISTORY_BARS * TF.ms
    data = {}
    for sym, frame in candles.items():
        keep = (frame["open_time"] >= read_from) & (frame["open_time"] < hi_ms)
        data[sym] = SymbolData(sym, frame[keep].reset_index(drop=True), None, None)
    return Universe("binance", Market.SPOT, TF, lo_ms, hi_ms, data, data["BTCUSDT"].candles,
                    series)  # fmt: skip


@pytest.fixture(scope="module")
def trained(
    candles: dict[str, pd.DataFrame],
    series: tuple[SeriesInput, ...],
    tmp_path_factory: pytest.TempPathFactory,
) -> ModelHandle:
    names = [s.name for fam in ("price", "volume") for s in features_by_family(fam)][:16]
    dataset = build_dataset(
        universe(candles, series, TRAIN_FROM, TRAIN_TO),
        SETTINGS.signal,
        SETTINGS.exit,
        [*names, *SERIES_FEATURES],
    )
    assert not dataset.report.absent_inputs  # onchain_eth does not apply to BTC: not absent
    out = tmp_path_factory.mktemp("models")
    model = train_model(dataset, out, replace(SETTINGS.meta, n_estimators=40,
                                              default_threshold=0.5))  # fmt: skip
    handle, inputs = load_decision_model(model.registered.model_id, out, market=Market.SPOT,
                                         timeframe=TF, signal=SETTINGS.signal,
                                         exit_spec=SETTINGS.exit)  # fmt: skip
    assert inputs == ModelInputs(series=("fear_greed", "onchain_btc", "onchain_eth"),
                                 warmup_bars=inputs.warmup_bars)  # fmt: skip
    gains = handle.model.feature_importance()
    assert gains[[n for n in SERIES_FEATURES if n in gains.index]].sum() > 0  # they are used
    return handle


def _research(candles: dict[str, pd.DataFrame], series: tuple[SeriesInput, ...],
              handle: ModelHandle) -> tuple[pd.DataFrame, Universe]:  # fmt: skip
    uni = universe(candles, series, FROM_MS, TO_MS)
    bar = [n for n in handle.model.feature_names if n not in ("side", "sl_dist_pct",
                                                              "tp1_dist_pct")]  # fmt: skip
    ds = build_dataset(uni, SETTINGS.signal, SETTINGS.exit, bar)
    return decide_events(ds.events, ds.X[list(handle.model.feature_names)], handle), uni


def test_the_series_decide_something(
    candles: dict[str, pd.DataFrame], series: tuple[SeriesInput, ...], trained: ModelHandle
) -> None:
    """Control: without the series (their features NaN) the model's p(take) changes, so the
    parity below is a statement about the series, not about candle features alone."""
    decided, uni = _research(candles, series, trained)
    blind = replace(uni, series=())
    bar = [n for n in trained.model.feature_names if n not in ("side", "sl_dist_pct",
                                                               "tp1_dist_pct")]  # fmt: skip
    ds = build_dataset(blind, SETTINGS.signal, SETTINGS.exit, bar)
    without = decide_events(ds.events, ds.X[list(trained.model.feature_names)], trained)
    moved = np.abs(without["p_take"].to_numpy() - decided["p_take"].to_numpy()) > 1e-6
    assert moved.mean() > 0.25


def test_replay_through_the_fake_sources_equals_the_backtest(
    candles: dict[str, pd.DataFrame],
    series: tuple[SeriesInput, ...],
    trained: ModelHandle,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    decided, uni = _research(candles, series, trained)
    assert 0 < int(decided["take"].sum()) < len(decided)
    bt = run_backtest(
        {s: uni.symbols[s].candles for s in SYMBOLS},
        decided,
        BacktestConfig(
            sizing=SIZING,
            costs=CostModel(
                taker_fee_rate=SETTINGS.exit.fee_entry, slippage_bps=SETTINGS.exit.slippage_bps
            ),
            max_positions=3,
            max_per_symbol=1,
            max_gross_leverage=2.0,
            probability_column="p_take",
        ),
        markets=dict.fromkeys(SYMBOLS, Market.SPOT),
        timeframe=TF,
    )
    lo = FROM_MS - (HISTORY_BARS + 10) * TF.ms
    served = {s: c[c["open_time"] >= lo].reset_index(drop=True) for s, c in candles.items()}
    decider = StrategyDecider(SETTINGS.signal, TF, model=trained, sizing=SIZING, use_kelly=True,
                              costs=SETTINGS.exit)  # fmt: skip
    feeds: list[SeriesFeed] = []

    def keep_feed(loop: LiveLoop, _: FakeExchange) -> None:
        assert loop.feed.series is not None
        feeds.append(loop.feed.series)

    path = tmp_path / "series.sqlite"
    report = asyncio.run(
        run_replay(
            LoopSettings(SYMBOLS, TF, start_ms=FROM_MS, stop_ms=TO_MS, bar_close_delay_s=0.0),
            served,
            path,
            decider=decider,
            exit_spec=SETTINGS.exit,
            guards=RiskGuards(
                GuardLimits(
                    max_open_positions=3,
                    max_per_symbol=1,
                    max_gross_leverage=2.0,
                    max_daily_loss=1.0,
                )
            ),
            setup=ReplaySetup(market=Market.SPOT),
            on_start=keep_feed,
            series=series,
            series_sources={"fear_greed", "onchain_btc", "onchain_eth"},
        )
    )
    assert report.cycles == (TO_MS - FROM_MS) // TF.ms
    (feed,) = feeds
    assert feed.refresher is not None
    days = (TO_MS - FROM_MS) // 86_400_000
    # the first load, then one fetch per series and publication (21 days, 3 series)
    assert 3 * days <= feed.refresher.fetches <= 3 * (days + 1)

    async def read() -> tuple[list, list, list]:  # type: ignore[type-arg]
        async with Journal.open(path) as j:
            return await j.signals(), await j.positions(), await j.equity()

    signals, positions, equity = asyncio.run(read())
    key = list(zip(decided["symbol"], decided["time_ms"].astype(int), strict=True))
    by_key = {(s.symbol, s.bar_time_ms): s for s in signals}
    assert sorted(by_key) == sorted(key)
    ours = np.array([by_key[k].p_take for k in key], dtype=np.float64)
    max_dp = float(np.max(np.abs(ours - decided["p_take"].to_numpy(dtype=np.float64))))
    assert max_dp <= 1e-12
    bt_taken = (bt.events["outcome"] == "taken").to_numpy()
    np.testing.assert_array_equal([by_key[k].take for k in key], bt_taken)
    assert [by_key[k].blocked_by for k in key] == [
        None if take else b for take, b in zip(bt_taken, bt.events["blocked_by"], strict=True)
    ]
    trades = bt.trades[bt.trades["exit_time_ms"] < TO_MS].sort_values(
        ["signal_time_ms", "symbol"], ignore_index=True
    )
    closed = sorted((p for p in positions if p.status == "closed"),
                    key=lambda p: (p.signal_time_ms, p.symbol))  # fmt: skip
    assert len(closed) == len(trades) > 3
    assert [(p.symbol, p.signal_time_ms, p.entry_time_ms, p.exit_time_ms, p.reason)
            for p in closed] == list(
        trades[["symbol", "signal_time_ms", "entry_time_ms", "exit_time_ms", "reason"]]
        .itertuples(index=False, name=None)
    )  # fmt: skip
    for col, got in (("entry_price", [p.entry_price for p in closed]),
                     ("exit_price", [p.exit_price for p in closed]),
                     ("quantity", [p.quantity for p in closed]),
                     ("pnl", [p.pnl for p in closed])):  # fmt: skip
        np.testing.assert_allclose(got, trades[col].to_numpy(), rtol=1e-9, err_msg=col)
    curve = bt.equity_frame().set_index("open_time")["equity"]
    ours_eq = pd.Series({e.bar_time_ms: e.equity for e in equity})
    ours_eq = ours_eq[(ours_eq.index >= FROM_MS) & (ours_eq.index < TO_MS)]
    assert len(ours_eq) == (TO_MS - FROM_MS) // TF.ms
    np.testing.assert_allclose(ours_eq.to_numpy(), curve.loc[ours_eq.index].to_numpy(), rtol=1e-9)
    with capsys.disabled():
        print(
            f"\nseries parity (Fear & Greed + MVRV via fake sources): {len(key)} signals, "
            f"{int(bt_taken.sum())} taken, max |dp| {max_dp:.3g}, {len(closed)} trades, "
            f"{feed.refresher.fetches} series fetches in {report.cycles} cycles, ending equity "
            f"{ours_eq.iloc[-1]:.6f} (backtest {curve.loc[ours_eq.index[-1]]:.6f})"
        )
