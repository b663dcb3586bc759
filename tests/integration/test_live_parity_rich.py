"""Replay == research with the richest model: funding, basis (spot counterpart), BTC
cross-asset and the external series' sentiment and on-chain features, trained by
``atra train``'s own code.

The model is trained on 2023 with :func:`atra.research.pipeline.build_dataset` /
:func:`train_model` on every built-in feature family of the five shared perpetuals (their
funding history, their spot candles as counterparts and the four shared external series as
``examples/series.toml`` configures them), saved to a registry and loaded back the way
``atra live --model`` loads it. January and February 2024 are then replayed through the live
loop against the fake exchange (perp and spot klines, funding, over HTTP) and the fake series
sources (Fear & Greed and Coin Metrics, on the replay's clock), once with the paper broker and
once through the order path, and compared with the research path on the same
bars (``atra signals``: the universe's features, :func:`decide_events`) and with the backtest:
every decision (p(take) to 1e-12), every trade, the ending equity. A live side that lacks one
input (BTC) is shown to differ.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.adapters.journal.database import Journal
from atra.cli.models import load_decision_model
from atra.config import AtraConfig
from atra.core.backtest.engine import BacktestConfig, run_backtest
from atra.core.costs import CostModel
from atra.core.decision import Decision, ModelHandle, decide_events
from atra.core.features.context import ModelInputs, SeriesInput
from atra.core.features.external import SERIES, external_specs
from atra.core.features.registry import HISTORY_BARS, FeatureContext, feature_registry
from atra.core.sizing import SizingConfig
from atra.core.types import Market, Timeframe
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LoopSettings, StrategyDecider
from atra.live.replay import ReplaySetup, run_replay
from atra.research.pipeline import (
    SymbolData,
    Universe,
    build_dataset,
    settings_from_config,
    train_model,
)
from helpers_logging import quiet_structlog
from helpers_series import shared_series

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

SYMBOLS = ("ADAUSDT", "BTCUSDT", "ETHUSDT", "LTCUSDT", "XRPUSDT")
TF = Timeframe.H1


def _ms(day: str) -> int:
    return int(pd.Timestamp(day, tz="UTC").value // 1_000_000)


TRAIN_FROM, TRAIN_TO = _ms("2023-01-01"), _ms("2023-12-01")
FROM_MS, TO_MS = _ms("2024-01-01"), _ms("2024-03-01")
LOAD_FROM = TRAIN_FROM - (HISTORY_BARS + 10) * TF.ms
LOAD_TO = TO_MS + 100 * TF.ms
CFG = AtraConfig()
SETTINGS = settings_from_config(CFG, Market.PERP)
SIZING = SizingConfig(risk_fraction=0.02, kelly_multiplier=0.5, max_leverage=1.0)
MAX_POSITIONS, MAX_GROSS = 3, 2.0


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet_structlog():
        yield


@dataclass(frozen=True)
class Market5:
    perp: dict[str, pd.DataFrame]
    spot: dict[str, pd.DataFrame]
    funding: dict[str, pd.DataFrame]
    series: tuple[SeriesInput, ...]

    def universe(self, lo_ms: int, hi_ms: int) -> Universe:
        """What ``load_universe`` reads for ``[lo_ms, hi_ms)`` (warm-up bars before it)."""
        read_from = lo_ms - HISTORY_BARS * TF.ms

        def cut(frame: pd.DataFrame, col: str = "open_time", lo: int = read_from) -> pd.DataFrame:
            keep = (frame[col] >= lo) & (frame[col] < hi_ms)
            return frame[keep].reset_index(drop=True)

        data = {
            s: SymbolData(
                s,
                cut(self.perp[s]),
                cut(self.funding[s], "funding_time", read_from - 31 * 86_400_000),
                cut(self.spot[s]),
            )
            for s in SYMBOLS
        }
        return Universe(
            "binance", Market.PERP, TF, lo_ms, hi_ms, data, data["BTCUSDT"].candles, self.series
        )


@pytest.fixture(scope="module")
def market(shared_data_dir: Path, shared_series_dir: Path) -> Market5:
    def read(name: str, col: str = "open_time") -> pd.DataFrame:
        frame = pd.read_parquet(shared_data_dir / name)
        keep = (frame[col] >= LOAD_FROM - 40 * 86_400_000) & (frame[col] < LOAD_TO)
        return frame[keep].reset_index(drop=True)

    return Market5(
        {s: read(f"{s}_perp_1h.parquet") for s in SYMBOLS},
        {s: read(f"{s}_spot_1h.parquet") for s in SYMBOLS},
        {s: read(f"{s}_perp_funding.parquet", "funding_time") for s in SYMBOLS},
        shared_series(shared_series_dir),
    )


@pytest.fixture(scope="module")
def trained(
    market: Market5, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ModelHandle, ModelInputs, Path]:
    """Every built-in feature (all five families), trained as ``atra train`` trains, saved
    and loaded back as ``atra live --model`` loads it."""
    served = {"candles", "funding", "counterpart", "btc", *(f"series:{s}" for s in SERIES)}
    names = [n for n, spec in feature_registry().items() if set(spec.inputs) <= served]
    dataset = build_dataset(
        market.universe(TRAIN_FROM, TRAIN_TO), SETTINGS.signal, SETTINGS.exit, names
    )
    assert not dataset.report.absent_inputs  # every input present for every symbol
    out = tmp_path_factory.mktemp("models")
    params = replace(SETTINGS.meta, n_estimators=60, default_threshold=0.5)
    model = train_model(dataset, out, params)
    handle, inputs = load_decision_model(
        model.registered.model_id,
        out,
        market=Market.PERP,
        timeframe=TF,
        signal=SETTINGS.signal,
        exit_spec=SETTINGS.exit,
    )
    assert inputs == ModelInputs(True, True, True, tuple(sorted(SERIES)), 720)
    assert {n for n in names if n in external_specs()} == set(external_specs())
    assert model.registered.metadata["inputs"] == inputs.to_dict()
    return handle, inputs, out


def _research(market: Market5, handle: ModelHandle) -> pd.DataFrame:
    """``atra signals``' path: the universe's features at each signal, decided in one go."""
    uni = market.universe(FROM_MS, TO_MS)
    bar = [n for n in handle.model.feature_names if n in feature_registry()]
    assert len(bar) == len(handle.model.feature_names) - 3
    ds = build_dataset(uni, SETTINGS.signal, SETTINGS.exit, bar)
    return decide_events(ds.events, ds.X[list(handle.model.feature_names)], handle)


def _replay(
    market: Market5,
    decider: object,
    path: Path,
    *,
    orders: bool = False,
    stop_ms: int = TO_MS,
) -> None:
    settings = LoopSettings(
        SYMBOLS, TF, start_ms=FROM_MS, stop_ms=stop_ms, bar_close_delay_s=0.0, funding=True
    )
    lo = FROM_MS - (HISTORY_BARS + 10) * TF.ms
    cut = {s: c[c["open_time"] >= lo].reset_index(drop=True) for s, c in market.perp.items()}
    spot = {
        (Market.SPOT, s): c[c["open_time"] >= lo].reset_index(drop=True)
        for s, c in market.spot.items()
    }
    report = asyncio.run(
        run_replay(
            settings,
            cut,
            path,
            decider=decider,  # type: ignore[arg-type]
            exit_spec=SETTINGS_EXIT,
            guards=RiskGuards(
                GuardLimits(
                    max_open_positions=MAX_POSITIONS,
                    max_per_symbol=1,
                    max_gross_leverage=MAX_GROSS,
                    max_daily_loss=1.0,
                )
            ),
            setup=ReplaySetup(weight_limit=2400, orders=orders),
            funding=market.funding,
            context_candles=spot,
            series=market.series,
            series_sources=set(SERIES),  # through their live sources against the fakes
        )
    )
    assert report.cycles == (stop_ms - FROM_MS) // TF.ms
    # the order path: a break-even stop the venue rejects as already triggered is a 400
    assert set(report.statuses) <= ({200, 400} if orders else {200})


SETTINGS_EXIT = replace(
    SETTINGS.exit, tp1_fraction=0.5, move_to_be=True, fee_tp=0.0002
)  # a maker take-profit and a TP1 partial with break-even, as the backtest below


def _decider(handle: ModelHandle) -> StrategyDecider:
    return StrategyDecider(
        SETTINGS.signal, TF, model=handle, sizing=SIZING, use_kelly=True, costs=SETTINGS_EXIT
    )


async def _read(path: Path) -> tuple[list, list, list]:  # type: ignore[type-arg]
    async with Journal.open(path) as j:
        return await j.signals(), await j.positions(), await j.equity()


@pytest.mark.parametrize("orders", [False, True], ids=["paper", "orders"])
def test_rich_model_replay_equals_research_and_backtest(
    market: Market5,
    trained: tuple[ModelHandle, ModelInputs, Path],
    tmp_path: Path,
    orders: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    handle, _, _ = trained
    decided = _research(market, handle)
    assert 0 < int(decided["take"].sum()) < len(decided)
    # the frames the events' bar rows index into: the universe research decided on
    uni = market.universe(FROM_MS, TO_MS)
    candles = {s: uni.symbols[s].candles for s in SYMBOLS}
    bt = run_backtest(
        candles,
        decided,
        BacktestConfig(
            sizing=SIZING,
            costs=CostModel(
                maker_fee_rate=0.0002,
                taker_fee_rate=SETTINGS.exit.fee_entry,
                slippage_bps=SETTINGS.exit.slippage_bps,
            ),
            tp_maker=True,
            tp1_fraction=0.5,
            move_to_be=True,
            max_positions=MAX_POSITIONS,
            max_per_symbol=1,
            max_gross_leverage=MAX_GROSS,
            probability_column="p_take",
        ),
        funding=market.funding,
        markets=dict.fromkeys(SYMBOLS, Market.PERP),
        timeframe=TF,
    )
    path = tmp_path / "rich.sqlite"
    _replay(market, _decider(handle), path, orders=orders)
    signals, positions, equity = asyncio.run(_read(path))

    key = list(zip(decided["symbol"], decided["time_ms"].astype(int), strict=True))
    by_key = {(s.symbol, s.bar_time_ms): s for s in signals}
    assert sorted(by_key) == sorted(key)
    ours = np.array([by_key[k].p_take for k in key], dtype=np.float64)
    theirs = decided["p_take"].to_numpy(dtype=np.float64)
    max_dp = float(np.max(np.abs(ours - theirs)))
    assert max_dp <= 1e-12
    assert {by_key[k].model_id for k in key} == {handle.model_id}
    assert all(by_key[k].reasons for k in key)  # every decision journals its reasons
    # the model's verdict on every signal is research's; what the risk guards then did is
    # compared with the backtest in test_live_parity.py
    meta_blocked = {k for k in key if by_key[k].blocked_by == "meta_model"}
    assert meta_blocked == {k for k, take in zip(key, decided["take"], strict=True) if not take}
    bt_taken = (bt.events["outcome"] == "taken").to_numpy()
    # ... and what the risk guards then did is the backtest's, with the same reasons
    np.testing.assert_array_equal([by_key[k].take for k in key], bt_taken)
    bt_blocked = bt.events["blocked_by"].tolist()
    assert [by_key[k].blocked_by for k in key] == [
        None if take else b for take, b in zip(bt_taken, bt_blocked, strict=True)
    ]
    rtol = 1e-6 if orders else 1e-9  # the venue rounds quantities to its 1e-9 step
    trades = bt.trades[bt.trades["exit_time_ms"] < TO_MS].sort_values(
        ["signal_time_ms", "symbol"], ignore_index=True
    )
    closed = sorted(
        (p for p in positions if p.status == "closed"), key=lambda p: (p.signal_time_ms, p.symbol)
    )
    assert len(closed) == len(trades) > 10
    assert [(p.symbol, p.signal_time_ms, p.entry_time_ms, p.exit_time_ms, p.reason)
            for p in closed] == list(
        trades[["symbol", "signal_time_ms", "entry_time_ms", "exit_time_ms", "reason"]]
        .itertuples(index=False, name=None)
    )  # fmt: skip
    for col, got in (
        ("entry_price", [p.entry_price for p in closed]),
        ("exit_price", [p.exit_price for p in closed]),
        ("quantity", [p.quantity for p in closed]),
        ("pnl", [p.pnl for p in closed]),
    ):
        np.testing.assert_allclose(got, trades[col].to_numpy(), rtol=rtol, err_msg=col)
    curve = bt.equity_frame().set_index("open_time")["equity"]
    ours_eq = pd.Series({e.bar_time_ms: e.equity for e in equity})
    ours_eq = ours_eq[(ours_eq.index >= FROM_MS) & (ours_eq.index < TO_MS)]
    assert len(ours_eq) == (TO_MS - FROM_MS) // TF.ms
    np.testing.assert_allclose(ours_eq.to_numpy(), curve.loc[ours_eq.index].to_numpy(), rtol=rtol)
    blocks = bt.events["blocked_by"].value_counts(dropna=True).to_dict()
    with capsys.disabled():
        print(
            f"\nrich parity ({'orders' if orders else 'paper'}): {len(key)} signals, "
            f"{int(bt_taken.sum())} taken, blocked {blocks}, max |dp| {max_dp:.3g}, "
            f"{len(closed)} trades, ending equity {ours_eq.iloc[-1]:.6f} "
            f"(backtest {curve.loc[ours_eq.index[-1]]:.6f})"
        )


@dataclass(frozen=True)
class WithoutBtc:
    """The live decider with the BTC candles taken out of its context."""

    inner: StrategyDecider

    @property
    def spec(self) -> object:
        return self.inner.spec

    @property
    def model(self) -> object:
        return self.inner.model

    @property
    def inputs(self) -> ModelInputs | None:
        return self.inner.inputs

    def __call__(
        self,
        symbol: str,
        candles: pd.DataFrame,
        equity: float,
        context: FeatureContext | None = None,
    ) -> Decision:
        assert context is not None
        assert context.btc is not None
        return self.inner(symbol, candles, equity, replace(context, btc=None))


def test_a_live_side_without_btc_differs(
    market: Market5, trained: tuple[ModelHandle, ModelInputs, Path], tmp_path: Path
) -> None:
    handle, _, _ = trained
    stop = FROM_MS + 14 * 24 * TF.ms
    decided = _research(market, handle)
    decided = decided[decided["time_ms"] < stop]
    path = tmp_path / "no_btc.sqlite"
    _replay(market, WithoutBtc(_decider(handle)), path, stop_ms=stop)
    signals, _, _ = asyncio.run(_read(path))
    by_key = {(s.symbol, s.bar_time_ms): s.p_take for s in signals}
    key = list(zip(decided["symbol"], decided["time_ms"].astype(int), strict=True))
    dp = np.abs(np.array([by_key[k] for k in key]) - decided["p_take"].to_numpy())
    assert np.count_nonzero(dp > 1e-6) > len(key) // 4
