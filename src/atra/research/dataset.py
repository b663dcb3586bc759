"""The research data (:mod:`atra.research.pipeline`): the universe read from the store and the
dataset of
primary events with features at the signal bar and exit-kernel labels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.adapters.store import CandleStore, DatasetKey
from atra.core.decision import EVENT_FEATURES, available_inputs, bar_features, decision_features
from atra.core.exits.api import ExitSpec
from atra.core.features.context import SeriesInput, assemble_context, counterpart_market
from atra.core.features.registry import (
    HISTORY_BARS,
    FeatureContext,
    feature_specs,
    series_feature_specs,
)
from atra.core.frames import ms_to_iso
from atra.core.labels import label_events
from atra.core.signals.events import generate_events
from atra.core.signals.spec import SignalSpec
from atra.core.times import parse_time_ms
from atra.core.types import Market, Timeframe
from atra.core.validation import DAY_MS
from atra.errors import ConfigError, DataError

__all__ = [
    "BTC_SYMBOL",
    "DatasetReport",
    "ResearchDataset",
    "SymbolData",
    "Universe",
    "build_dataset",
    "load_universe",
    "parse_time_ms",
    "symbol_features",
]

BTC_SYMBOL = "BTCUSDT"
ProgressFn = Callable[[int, int, str], None]


# ---- universe ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class SymbolData:
    """One symbol's bars (warm-up included), its funding and counterpart market where stored."""

    symbol: str
    candles: pd.DataFrame
    funding: pd.DataFrame | None
    counterpart: pd.DataFrame | None


@dataclass(frozen=True, slots=True, eq=False)
class Universe:
    """What :func:`load_universe` read. ``start_ms`` is the first signal time of the research
    range (bars before it are feature warm-up), ``end_ms`` its exclusive end; ``series`` the
    configured external series (each symbol's context holds those that apply to it)."""

    exchange: str
    market: Market
    timeframe: Timeframe
    start_ms: int | None
    end_ms: int | None
    symbols: dict[str, SymbolData]
    btc: pd.DataFrame | None
    series: tuple[SeriesInput, ...] = ()

    def context(self, symbol: str) -> FeatureContext:
        """The feature context of ``symbol``: funding, counterpart, BTC and the external series
        that apply to it, where present (:func:`atra.core.features.context.assemble_context`,
        as the live loop builds it)."""
        data = self.symbols[symbol]
        return assemble_context(
            self.timeframe,
            self.market,
            funding=data.funding,
            counterpart=data.counterpart,
            btc=self.btc,
            series=self.series,
            symbol=symbol,
        )


def load_universe(
    store: CandleStore,
    exchange: str,
    symbols: Sequence[str],
    market: Market,
    timeframe: Timeframe,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    warmup_bars: int = HISTORY_BARS,
    btc_symbol: str = BTC_SYMBOL,
    series: Sequence[SeriesInput] = (),
) -> Universe:
    """Read candles of ``symbols`` (``start_ms - warmup_bars`` bars .. ``end_ms``), the
    funding of each symbol and its other market where stored, and ``btc_symbol`` (same market
    and bar size) as context when stored. A symbol without candles is a :class:`DataError`.
    ``series``: the configured external series (:func:`atra.adapters.series.configured_series`),
    whole: their features join each record at the bar where it became known."""
    if not symbols:
        raise ConfigError("load_universe: no symbols given")
    if len(set(symbols)) != len(symbols):
        raise ConfigError(f"load_universe: duplicate symbols in {list(symbols)}")
    if warmup_bars < 0:
        raise ConfigError(f"warmup_bars must be >= 0, got {warmup_bars}")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ConfigError(
            f"empty range: end {ms_to_iso(end_ms)} is not after start {ms_to_iso(start_ms)}"
        )
    read_from = None if start_ms is None else start_ms - warmup_bars * timeframe.ms
    other = counterpart_market(market)

    def candles(sym: str, mkt: Market) -> pd.DataFrame | None:
        key = DatasetKey(exchange, mkt, sym, timeframe)
        if not store.candle_path(key).exists():
            return None
        return store.read_candles(key, read_from, end_ms)

    data: dict[str, SymbolData] = {}
    for sym in symbols:
        main = candles(sym, market)
        if main is None:
            key = DatasetKey(exchange, market, sym, timeframe)
            raise DataError(
                f"no candles {key} in the store at {store.root} (expected {store.candle_path(key)})"
            )
        if main.empty:
            raise DataError(f"{exchange}/{market}/{sym}/{timeframe}: no bars in the range")
        funding = None
        if store.funding_path(exchange, sym).exists():
            # funding features look back a few days of events: read a month before the bars
            funding_from = None if read_from is None else read_from - 31 * DAY_MS
            funding = store.read_funding(exchange, sym, funding_from, end_ms)
        counterpart = candles(sym, other)
        data[sym] = SymbolData(
            sym,
            main,
            funding,
            counterpart if counterpart is not None and not counterpart.empty else None,
        )
    btc = data[btc_symbol].candles if btc_symbol in data else candles(btc_symbol, market)
    return Universe(
        exchange,
        market,
        timeframe,
        start_ms,
        end_ms,
        data,
        btc if btc is not None and not btc.empty else None,
        tuple(series),
    )


# ---- dataset ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatasetReport:
    """Counts of the dataset: nothing excluded goes unreported."""

    events: int
    complete: int
    incomplete: int
    """Events whose trade had not resolved when the data ended: excluded from training."""
    before_start: int
    """Signals in the warm-up bars before the range start: not part of the dataset."""
    per_symbol: dict[str, dict[str, int]] = field(default_factory=dict)
    absent_inputs: dict[str, list[str]] = field(default_factory=dict)
    """Per symbol, the side data it lacks (its features of those inputs are NaN)."""


@dataclass(frozen=True, slots=True, eq=False)
class ResearchDataset:
    """Primary events with labels (``events``) and model inputs (``X``), row for row.

    ``events`` columns: those of :func:`atra.core.signals.events.generate_events` plus the label
    columns (``t0_ms, t1_ms, label, ret_net, reason, complete, meta_label, ...``). Rows are
    sorted by ``time_ms`` then symbol; index 0..n-1.
    """

    events: pd.DataFrame
    X: pd.DataFrame
    bar_features: tuple[str, ...]
    signal_spec: SignalSpec
    exit_spec: ExitSpec
    universe: Universe
    report: DatasetReport

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Model input columns: the bar features then :data:`EVENT_FEATURES`."""
        return (*self.bar_features, *EVENT_FEATURES)

    @property
    def complete(self) -> npt.NDArray[np.bool_]:
        return self.events["complete"].to_numpy(dtype=bool)

    def training(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(events, X)`` of the complete (trainable) events, index reset."""
        m = self.complete
        return (
            self.events.loc[m].reset_index(drop=True),
            self.X.loc[m].reset_index(drop=True),
        )


def _default_features(universe: Universe) -> list[str]:
    """Built-in features whose inputs at least one symbol has."""
    have: set[str] = set()
    for sym in universe.symbols:
        have |= available_inputs(universe.context(sym))
    return [s.name for s in feature_specs().values() if set(s.inputs) <= have]


def symbol_features(
    universe: Universe, symbol: str, names: Sequence[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Features ``names`` of ``symbol`` aligned with its candles
    (:func:`atra.core.decision.bar_features`: features whose inputs the symbol lacks are NaN
    columns). Returns the frame and the absent inputs (a series scoped to other base assets,
    such as ETH's on-chain data for BTCUSDT, is not absent: it does not apply)."""
    away = [s for s in universe.series if not s.applies(symbol)]
    scoped_out = {f"series:{s.name}" for s in away}
    # the own features of a series scoped away are NaN here, like any feature on it
    nan_names = {f.name for s in away for f in series_feature_specs(s.series)} & set(names)
    candles = universe.symbols[symbol].candles
    wanted = [n for n in names if n not in nan_names]
    feats, absent = bar_features(candles, universe.context(symbol), wanted)
    for name in nan_names:
        feats[name] = np.nan
    return feats.loc[:, ["open_time", *names]], [a for a in absent if a not in scoped_out]


def build_dataset(
    universe: Universe,
    signal_spec: SignalSpec,
    exit_spec: ExitSpec,
    feature_names: Sequence[str] | None = None,
    *,
    progress: ProgressFn | None = None,
) -> ResearchDataset:
    """Primary events of every symbol in the range, with features at the signal bar and
    triple-barrier labels / meta-labels from the exit kernel (see the module docstring)."""
    names = list(feature_names) if feature_names is not None else _default_features(universe)
    if len(set(names)) != len(names):
        raise ConfigError("build_dataset: feature names must be unique")
    clash = [n for n in names if n in EVENT_FEATURES]
    if clash:
        raise ConfigError(f"feature name(s) {clash} are reserved for event attributes")
    ev_parts: list[pd.DataFrame] = []
    x_parts: list[pd.DataFrame] = []
    per_symbol: dict[str, dict[str, int]] = {}
    absent_inputs: dict[str, list[str]] = {}
    before = 0
    syms = list(universe.symbols)
    for k, sym in enumerate(syms):
        candles = universe.symbols[sym].candles
        events = generate_events(candles, signal_spec, symbol=sym, timeframe=universe.timeframe)
        labels = label_events(candles, events, exit_spec, timeframe=universe.timeframe)
        feats, absent = symbol_features(universe, sym, names)
        if absent:
            absent_inputs[sym] = absent
        in_range = np.ones(len(events), dtype=bool)
        if universe.start_ms is not None:
            in_range = events["time_ms"].to_numpy() >= universe.start_ms
        n_before = int((~in_range).sum())
        before += n_before
        events, labels = events.loc[in_range], labels.loc[in_range]
        X = decision_features(events, feats, names)
        lab = labels.drop(columns=["symbol", "t", "side"])
        merged = pd.concat([events, lab], axis=1)
        done = int(merged["complete"].sum())
        per_symbol[sym] = {
            "events": len(merged),
            "complete": done,
            "incomplete": len(merged) - done,
            "before_start": n_before,
        }
        if len(merged):
            ev_parts.append(merged)
            x_parts.append(X)
        if progress is not None:
            progress(k + 1, len(syms), sym)
    if not ev_parts:
        raise DataError(
            f"no primary signal on {', '.join(syms)} in the range "
            f"({universe.exchange}/{universe.market}/{universe.timeframe})"
        )
    events_all = pd.concat(ev_parts, ignore_index=True)
    X_all = pd.concat(x_parts, ignore_index=True)
    order = np.lexsort((events_all["symbol"].to_numpy(dtype=str), events_all["time_ms"].to_numpy()))
    events_all = events_all.iloc[order].reset_index(drop=True)
    X_all = X_all.iloc[order].reset_index(drop=True)
    events_all["reason"] = events_all["reason"].astype(str)
    events_all["first_reason"] = events_all["first_reason"].astype(str)
    n_done = int(events_all["complete"].sum())
    report = DatasetReport(
        events=len(events_all),
        complete=n_done,
        incomplete=len(events_all) - n_done,
        before_start=before,
        per_symbol=per_symbol,
        absent_inputs=absent_inputs,
    )
    return ResearchDataset(
        events_all, X_all, tuple(names), signal_spec, exit_spec, universe, report
    )
