"""Replay == research with the richest model: funding, basis (spot counterpart), BTC
cross-asset and the external series' sentiment and on-chain features, trained by
``atra train``'s own code.

The model is trained on 2023 with :func:`atra.research.pipeline.build_dataset` /
:func:`train_model` on every built-in feature family of the five shared perpetuals (their
funding history, their spot candles as counterparts and the four shared external series as
``examples/series.toml`` configures them), saved to a registry and loaded back the way
``atra live --model`` loads it. The first two weeks of January 2024 are then replayed through
the live loop against the fake exchange (perp and spot klines, funding, over HTTP) and the fake
series sources (Fear & Greed and Coin Metrics, on the replay's clock), once with the paper
broker and once through the order path, and compared with the research path on the same
bars (``atra signals``: the universe's features, :func:`decide_events`) and with the backtest:
every decision (p(take) to 1e-12), every trade, the ending equity. A live side that lacks one
input (BTC) is shown to differ.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import helpers_parity
from atra.cli.models import load_decision_model
from atra.config import AtraConfig
from atra.core.decision import Decision, ModelHandle, decide_events
from atra.core.features.context import ModelInputs, SeriesInput
from atra.core.features.external import SERIES, external_specs
from atra.core.features.registry import HISTORY_BARS, FeatureContext, feature_registry
from atra.core.sizing import SizingConfig
from atra.core.types import Market, Timeframe
from atra.live.loop import StrategyDecider
from atra.research.pipeline import (
    SymbolData,
    Universe,
    build_dataset,
    settings_from_config,
    train_model,
)
from helpers_parity import (
    assert_equity_matches,
    assert_trades_match,
    limit_guards,
    parity_backtest,
    read_journal,
    replay_window,
    run_parity_replay,
)
from helpers_series import shared_series

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

SYMBOLS = ("ADAUSDT", "BTCUSDT", "ETHUSDT", "LTCUSDT", "XRPUSDT")
TF = Timeframe.H1


def _ms(day: str) -> int:
    return int(pd.Timestamp(day, tz="UTC").value // 1_000_000)


TRAIN_FROM, TRAIN_TO = _ms("2023-01-01"), _ms("2023-12-01")
# two weeks: 42 signals, 26 taken, blocked by the model (10), max_per_symbol (4) and the
# leverage cap (2), 26 closed trades; each replay costs ~0.1 s a cycle (HTTP per symbol)
FROM_MS, TO_MS = _ms("2024-01-01"), _ms("2024-01-15")
LOAD_FROM = TRAIN_FROM - (HISTORY_BARS + 10) * TF.ms
LOAD_TO = TO_MS + 100 * TF.ms
CFG = AtraConfig()
SETTINGS = settings_from_config(CFG, Market.PERP)
SIZING = SizingConfig(risk_fraction=0.02, kelly_multiplier=0.5, max_leverage=1.0)
MAX_POSITIONS, MAX_GROSS = 3, 2.0


_quiet = helpers_parity._quiet


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
    spot = {(Market.SPOT, s): c for s, c in market.spot.items()}
    report = run_parity_replay(
        {s: market.perp[s] for s in SYMBOLS},
        path,
        timeframe=TF,
        start_ms=FROM_MS,
        stop_ms=stop_ms,
        decider=decider,  # type: ignore[arg-type]
        exit_spec=SETTINGS_EXIT,
        guards=limit_guards(MAX_POSITIONS, MAX_GROSS),
        funding=market.funding,
        orders=orders,
        context_candles=replay_window(spot, FROM_MS, TF),
        series=market.series,
        series_sources=set(SERIES),  # through their live sources against the fakes
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
    bt = parity_backtest(
        candles,
        decided,
        exit_spec=SETTINGS_EXIT,
        sizing=SIZING,
        max_positions=MAX_POSITIONS,
        max_gross=MAX_GROSS,
        funding=market.funding,
        timeframe=TF,
        probability_column="p_take",
    )
    path = tmp_path / "rich.sqlite"
    _replay(market, _decider(handle), path, orders=orders)
    journal = read_journal(path)
    signals = journal.signals

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
    closed, _ = assert_trades_match(journal.positions, bt.trades, TO_MS, rtol)
    assert len(closed) > 10
    ours_eq = assert_equity_matches(journal.equity, bt, FROM_MS, TO_MS, TF, rtol)
    curve = bt.equity_frame().set_index("open_time")["equity"]
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
    stop = FROM_MS + 7 * 24 * TF.ms
    decided = _research(market, handle)
    decided = decided[decided["time_ms"] < stop]
    path = tmp_path / "no_btc.sqlite"
    _replay(market, WithoutBtc(_decider(handle)), path, stop_ms=stop)
    signals = read_journal(path).signals
    by_key = {(s.symbol, s.bar_time_ms): s.p_take for s in signals}
    key = list(zip(decided["symbol"], decided["time_ms"].astype(int), strict=True))
    dp = np.abs(np.array([by_key[k] for k in key]) - decided["p_take"].to_numpy())
    assert np.count_nonzero(dp > 1e-6) > len(key) // 4
