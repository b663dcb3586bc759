"""The research steps for notebooks, each a thin call of what the CLI runs.

=====================  =====================================================================
:func:`features`       :func:`atra.core.features.registry.compute_features` of one symbol
:func:`signals`        :func:`atra.core.signals.events.generate_events` of every symbol
:func:`labels`         :func:`atra.core.labels.label_events`: triple barrier + meta-label
:func:`dataset`        :func:`atra.research.dataset.build_dataset`: features at the signal
                       bar and labels, the meta model's training set
:func:`walk_forward`   :func:`atra.research.walkforward.run_walkforward`: OOS predictions
:func:`backtest`       :func:`atra.core.backtest.engine.run_backtest`; of a walk-forward: its
                       out-of-sample span, meta-filtered, as the evaluation runs it
:func:`stats`          :meth:`~atra.core.backtest.results.BacktestResult.stats` (Sharpe
                       annualised with ``sqrt(bars per 365-day year)``, 1h -> sqrt(8760))
:func:`report`         :func:`atra.research.evaluation.loop.evaluate_walkforward`: run record
                       and HTML report, primary vs filtered vs buy-and-hold
=====================  =====================================================================

Steps take ``data``: :class:`~atra.api.candles.Candles`, a list of them, a
:class:`~atra.research.dataset.Universe` or a
:class:`~atra.research.dataset.ResearchDataset`. Unset specs come from :func:`settings`, the
defaults of ``atra.toml`` (as the CLI uses them) for the data's market (spot: long only unless
``strategy.spot_shorts``), so a notebook and ``atra research`` agree.
A range start (:func:`~atra.api.candles.universe`) is honoured everywhere: signals before it
are warm-up, and a backtest starts at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from atra.adapters.plugins import load_plugins
from atra.api.candles import Candles, universe
from atra.config import AtraConfig, load_config
from atra.core.backtest.engine import BacktestConfig, BacktestResult, run_backtest
from atra.core.exits.api import ExitSpec
from atra.core.features.registry import compute_features
from atra.core.frames import ms_to_iso
from atra.core.labels import label_events
from atra.core.meta import MetaParams
from atra.core.signals.events import generate_events
from atra.core.signals.spec import SignalSpec
from atra.core.stats.report import PerformanceReport
from atra.core.symbols import parse_symbol
from atra.core.types import Market
from atra.errors import ConfigError, DataError
from atra.research.evaluation.loop import evaluate_walkforward
from atra.research.evaluation.oos import oos_candles, oos_events, rebased_events
from atra.research.evaluation.result import Evaluation
from atra.research.evaluation.settings import backtest_config_from
from atra.research.pipeline import (
    ResearchDataset,
    Universe,
    WalkForwardConfig,
    WalkForwardResult,
    build_dataset,
    run_walkforward,
    settings_from_config,
)

__all__ = [
    "Data",
    "Settings",
    "WalkForward",
    "backtest",
    "dataset",
    "features",
    "labels",
    "report",
    "settings",
    "signals",
    "stats",
    "walk_forward",
]

Data = Candles | Sequence[Candles] | Universe | ResearchDataset


@dataclass(frozen=True, slots=True)
class Settings:
    """The specs of a research run, from a config (:func:`settings`)."""

    signal: SignalSpec
    exit: ExitSpec
    meta: MetaParams
    walkforward: WalkForwardConfig
    backtest: BacktestConfig


def settings(
    config: AtraConfig | str | Path | None = None, market: Market | str = Market.SPOT
) -> Settings:
    """The specs of ``config``: an :class:`~atra.config.AtraConfig`, a TOML path (read as the
    CLI reads it, ``ATRA__*`` overrides included) or None for the defaults, for ``market``
    (``spot`` / ``perp``): on spot the signal spec is long only unless
    ``strategy.spot_shorts`` (the steps below use the market of their data)."""
    if config is None:
        cfg = AtraConfig()
    elif isinstance(config, AtraConfig):
        cfg = config
    else:
        cfg = load_config(Path(config))
    load_plugins(cfg.plugins)  # the rules and features of [plugins] (once per process)
    rs = settings_from_config(cfg, market)
    return Settings(rs.signal, rs.exit, rs.meta, rs.walkforward, backtest_config_from(cfg))


def _universe(data: Data) -> Universe:
    if isinstance(data, ResearchDataset):
        return data.universe
    if isinstance(data, Universe):
        return data
    if isinstance(data, Candles | list | tuple):
        return universe(data)
    raise ConfigError(
        f"expected Candles, a list of Candles, a Universe or a ResearchDataset, got "
        f"{type(data).__name__}"
    )


def _symbol(uni: Universe, symbol: str | None) -> str:
    if symbol is None:
        if len(uni.symbols) != 1:
            raise ConfigError(f"give the symbol: the data holds {', '.join(uni.symbols)}")
        return next(iter(uni.symbols))
    ref = parse_symbol(symbol, uni.market if "/" not in symbol else None)
    if ref.market is not uni.market or ref.symbol not in uni.symbols:
        raise ConfigError(
            f"symbol {symbol!r} ({ref}) is not in the data ({', '.join(uni.symbols)} {uni.market})"
        )
    return ref.symbol


def features(
    data: Data, symbol: str | None = None, names: Sequence[str] | None = None
) -> pd.DataFrame:
    """Causal features of one symbol, row for row with its candles (``open_time`` first).
    ``names=None``: every built-in feature whose inputs the data has (funding, the other
    market, BTC); a named feature whose input is missing is a :class:`ConfigError`."""
    uni = _universe(data)
    sym = _symbol(uni, symbol)
    return compute_features(uni.symbols[sym].candles, uni.context(sym), names)


def signals(data: Data, spec: SignalSpec | None = None) -> pd.DataFrame:
    """Primary events of every symbol (one row per signal, sorted by time then symbol; ``t`` is
    the row of the signal bar in the symbol's candles). Signals before the range start of a
    :func:`~atra.api.candles.universe` are warm-up and not returned, as in :func:`dataset`."""
    uni = _universe(data)
    chosen = spec or settings(market=uni.market).signal
    parts = []
    for sym, sd in uni.symbols.items():
        ev = generate_events(sd.candles, chosen, symbol=sym, timeframe=uni.timeframe)
        if uni.start_ms is not None:
            ev = ev.loc[ev["time_ms"].to_numpy() >= uni.start_ms]
        parts.append(ev)
    found = [p for p in parts if len(p)]
    if not found:
        return parts[0].iloc[:0].reset_index(drop=True)
    out = pd.concat(found, ignore_index=True)
    order = np.lexsort((out["symbol"].to_numpy(dtype=str), out["time_ms"].to_numpy()))
    return out.iloc[order].reset_index(drop=True)


def _check_events(uni: Universe, events: pd.DataFrame) -> None:
    """Events must name the data's symbols and carry the open time of their bar ``t``:
    events made on other candles would be labelled or traded on the wrong bars."""
    if not isinstance(events, pd.DataFrame):
        raise ConfigError(f"events: expected a DataFrame, got {type(events).__name__}")
    missing = [c for c in ("symbol", "t", "time_ms") if c not in events.columns]
    if missing:
        raise DataError(f"events: missing column(s) {', '.join(missing)}")
    t = events["t"].to_numpy()
    if len(events) and not np.issubdtype(t.dtype, np.integer):
        raise DataError(f"events: column t has dtype {t.dtype}, expected integer bar rows")
    rows = t.astype(np.int64)
    stamps = events["time_ms"].to_numpy(dtype=np.int64)
    syms = events["symbol"].astype(str).to_numpy()
    unknown = np.flatnonzero(~np.isin(syms, list(uni.symbols)))
    if unknown.size:
        row = int(unknown[0])
        raise DataError(f"events row {row}: symbol {syms[row]!r} is not in the data")
    wrong = np.zeros(len(events), dtype=bool)
    for sym, data in uni.symbols.items():
        at = np.flatnonzero(syms == sym)
        times = data.candles["open_time"].to_numpy(dtype=np.int64)
        bars = rows[at]
        inside = (bars >= 0) & (bars < times.size)
        bad = ~inside
        bad[inside] = times[bars[inside]] != stamps[at][inside]
        wrong[at] = bad
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        sym, k = syms[row], int(rows[row])
        grid = uni.symbols[sym].candles["open_time"].to_numpy(dtype=np.int64)
        bar = ms_to_iso(int(grid[k])) if 0 <= k < grid.size else "no bar"
        raise DataError(
            f"events row {row}: {sym} t = {k} is {bar}, but the event's time_ms is "
            f"{ms_to_iso(int(stamps[row]))} (events must come from signals() on the same data)"
        )


def labels(data: Data, events: pd.DataFrame, exit_spec: ExitSpec | None = None) -> pd.DataFrame:
    """Triple-barrier labels (``label`` +1 take-profit, -1 stop, 0 time) and meta-labels
    (``meta_label`` 1 when the trade's net return after costs is > 0) of ``events``, one row
    per event in order, from the exit kernel the backtest uses. An event whose trade has not
    resolved when the data ends is kept with ``complete = False``."""
    uni = _universe(data)
    _check_events(uni, events)
    candles = {s: d.candles for s, d in uni.symbols.items()}
    spec = exit_spec or settings().exit
    return label_events(candles, events, spec, timeframe=uni.timeframe)


def dataset(
    data: Data,
    signal_spec: SignalSpec | None = None,
    exit_spec: ExitSpec | None = None,
    feature_names: Sequence[str] | None = None,
) -> ResearchDataset:
    """The meta model's data set: primary events with the features at their signal bar and
    their labels (:func:`atra.research.dataset.build_dataset`; ``feature_names=None``: every
    built-in feature whose inputs some symbol has)."""
    uni = _universe(data)
    base = settings(market=uni.market)
    return build_dataset(uni, signal_spec or base.signal, exit_spec or base.exit, feature_names)


@dataclass(frozen=True, slots=True, eq=False)
class WalkForward:
    """A walk-forward run with what it was run on: the input of :func:`backtest` and
    :func:`report`."""

    dataset: ResearchDataset
    result: WalkForwardResult
    config: WalkForwardConfig
    params: MetaParams

    @property
    def predictions(self) -> pd.DataFrame:
        """OOS predictions: the events with ``fold, p_take, threshold, take``."""
        return self.result.predictions

    @property
    def metrics(self) -> pd.DataFrame:
        """Per year and ``all``: AUC, precision, recall, base rate, mean net returns."""
        return self.result.metrics


def walk_forward(
    data: Data,
    config: WalkForwardConfig | None = None,
    params: MetaParams | None = None,
    *,
    n_jobs: int = 2,
) -> WalkForward:
    """Walk-forward out-of-sample predictions of the meta model, retrained every
    ``config.retrain_days`` on purged, embargoed training data. ``data`` that is not a
    :class:`ResearchDataset` goes through :func:`dataset` with the default specs first."""
    ds = data if isinstance(data, ResearchDataset) else dataset(data)
    base = settings()
    cfg, meta = config or base.walkforward, params or base.meta
    return WalkForward(ds, run_walkforward(ds, cfg, meta, n_jobs=n_jobs), cfg, meta)


def backtest(
    data: Data | WalkForward,
    events: pd.DataFrame | None = None,
    config: BacktestConfig | None = None,
    *,
    filtered: bool = True,
) -> BacktestResult:
    """Backtest with shared equity over the data's symbols.

    * ``backtest(wf)``: the out-of-sample span of a walk-forward (from its first test window),
      its OOS events traded when the fold's model said ``take`` (``filtered=False``: every OOS
      event) — the evaluation's ``filtered`` / ``primary`` legs;
    * ``backtest(data, events)``: ``events`` from :func:`signals` (a bool ``take`` column, if
      any, is honoured unless ``filtered=False``), from the range start of the data.

    ``config`` defaults to the config's costs, sizing and risk guards; ``filtered`` sets its
    ``decision_column``. With ``risk.kelly`` half / full the filtered events are sized from their
    ``p_take``; the primary leg (``filtered=False``) and events without a ``p_take`` column are
    sized by the fixed fraction. A perpetual
    needs its funding (:func:`~atra.api.candles.load_candles` ``funding=``)."""
    cfg = replace(config or settings().backtest, decision_column="take" if filtered else None)
    kelly_col = cfg.probability_column
    # risk.kelly sizes from p(take) where there is one; the primary leg and events without a
    # model (no p(take) column) have none and are sized by the fixed fraction (as the evaluation)
    no_p_take = not filtered or (events is not None and kelly_col not in events.columns)
    if kelly_col is not None and no_p_take:
        cfg = replace(cfg, probability_column=None)
    if isinstance(data, WalkForward):
        if events is not None:
            raise ConfigError("backtest(wf): the events are the walk-forward's; pass no events")
        oos = oos_events(data.dataset, data.result)
        return _run(data.dataset.universe, oos.events, oos.start_ms, cfg)
    if events is None:
        raise ConfigError("backtest: give the events (from atra.signals) or a walk-forward")
    uni = _universe(data)
    _check_events(uni, events)
    return _run(uni, events, uni.start_ms, cfg)


def _run(
    uni: Universe, events: pd.DataFrame, start_ms: int | None, cfg: BacktestConfig
) -> BacktestResult:
    if start_ms is None:
        candles = {s: d.candles for s, d in uni.symbols.items()}
    else:
        early = np.flatnonzero(events["time_ms"].to_numpy(dtype=np.int64) < start_ms)
        if early.size:
            row = int(early[0])
            raise DataError(
                f"events row {row}: signal at {ms_to_iso(int(events['time_ms'].iloc[row]))} is "
                f"before the backtest start {ms_to_iso(start_ms)}"
            )
        candles, offsets = oos_candles(uni, start_ms)
        events = rebased_events(events, offsets)
    funding = {s: d.funding for s, d in uni.symbols.items() if d.funding is not None}
    return run_backtest(
        candles,
        events,
        cfg,
        funding={s: f for s, f in funding.items() if s in candles},
        markets={s: uni.market for s in candles},
        timeframe=uni.timeframe,
    )


def stats(result: BacktestResult, *, n_trials: int = 1) -> PerformanceReport:
    """Performance of a backtest: returns (Sharpe, Sortino, CAGR, drawdowns, PSR, DSR for
    ``n_trials`` configurations tried) and trades (count, win rate, profit factor, costs).
    Annualised with ``sqrt(bars per 365-day year)``: 1h bars -> sqrt(8760)."""
    if not isinstance(result, BacktestResult):
        raise ConfigError(f"stats: expected a BacktestResult, got {type(result).__name__}")
    return result.stats(n_trials=n_trials)


def report(
    wf: WalkForward,
    *,
    runs_dir: str | Path,
    config: BacktestConfig | None = None,
    n_trials: int = 1,
    render: bool = True,
) -> Evaluation:
    """Evaluate a walk-forward as ``atra walkforward`` does: OOS backtests primary-only vs
    meta-filtered vs equal-weight buy-and-hold, the run record under ``runs_dir`` (content
    id, trades hashes) and, with ``render``, its HTML report (``.report_path``)."""
    if not isinstance(wf, WalkForward):
        raise ConfigError(f"report: expected the result of atra.walk_forward, got {type(wf)}")
    return evaluate_walkforward(
        wf.dataset,
        wf.result,
        config or settings().backtest,
        runs_dir=Path(runs_dir),
        wf_config=wf.config,
        meta_params=wf.params,
        seed=wf.params.seed,
        n_trials=n_trials,
        render=render,
    )
