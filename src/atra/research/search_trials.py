"""One trial of ``atra search``: a config -> the purged, embargoed walk-forward -> its
out-of-sample filtered leg after costs, scored as ``atra walkforward`` scores it.

:class:`TrialRunner` holds the universe (loaded once) and a cache of research datasets
(features, primary events, triple-barrier labels) keyed by a content hash of what they depend
on (the signal and exit specs and the feature set): trials that share the primary parameters
share them, and only the meta model is refitted. A trial of a searched ``timeframe`` runs on
the universe resampled exactly to it (:func:`atra.research.resample.universe_at`, made once
per bar size); the bar size is part of the cache key.

The score is the Sharpe ratio (annualised with ``sqrt(bars per 365-day year)`` of the trial's
bar size: sqrt(8760) at 1h, sqrt(2190) at 4h, sqrt(365) at 1d) of the
meta-filtered leg of :func:`atra.research.evaluation.loop.evaluate_walkforward`: the OOS events
of every fold, traded when the model trained before that fold says ``take``, with the config's
costs, sizing and risk guards, measured on its equity from the first test window on
(:func:`atra.core.stats.returns.equity_stats`, as ``metrics.json``).
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from atra.config import AtraConfig
from atra.core.backtest.engine import run_backtest
from atra.core.stats.returns import equity_stats
from atra.core.types import Market, Timeframe
from atra.core.validation import DAY_MS
from atra.errors import ConfigError, DataError
from atra.research.evaluation.oos import oos_candles, oos_events, rebased_events
from atra.research.evaluation.settings import backtest_config_from
from atra.research.pipeline import (
    ResearchDataset,
    Universe,
    WalkForwardConfig,
    build_dataset,
    run_walkforward,
    settings_from_config,
    spec_to_dict,
)
from atra.research.resample import universe_at
from atra.research.runrecord.hashes import hash_config
from atra.research.runrecord.legs import leg_from_backtest

__all__ = ["TrialOutcome", "TrialRunner", "WalkForwardOverrides", "daily_returns"]

_CACHE_SIZE: Final[int] = 8


@dataclass(frozen=True, slots=True)
class WalkForwardOverrides:
    """The walk-forward options of the command (None: the config's), the same for every
    trial."""

    retrain_days: int | None = None
    embargo_hours: float | None = None
    min_train_days: int = 180
    min_train_events: int = 200
    first_test_ms: int | None = None

    def applied(self, base: WalkForwardConfig) -> WalkForwardConfig:
        return dataclasses.replace(
            base,
            retrain_days=base.retrain_days if self.retrain_days is None else self.retrain_days,
            embargo_hours=base.embargo_hours if self.embargo_hours is None else self.embargo_hours,
            min_train_days=self.min_train_days,
            min_train_events=self.min_train_events,
            first_test_ms=self.first_test_ms,
        )


@dataclass(frozen=True, slots=True, eq=False)
class TrialOutcome:
    """A trial's out-of-sample result (filtered leg)."""

    sharpe: float
    """Annualised; NaN when the curve is flat (no trade taken)."""
    n_returns: int
    skew: float
    kurtosis: float
    total_return: float
    max_drawdown: float
    n_trades: int
    oos_start_ms: int
    oos_end_ms: int
    daily: pd.Series
    """Daily returns of the leg (index = UTC day start in ms)."""
    dataset_cached: bool
    """The features / events / labels came from the cache (a trial with the same specs)."""
    timeframe: Timeframe
    """The bar size the trial ran on (its Sharpe is annualised with it)."""


def daily_returns(equity: pd.Series) -> pd.Series:
    """Simple returns from one UTC day's last mark to the next (index = the day's start, ms);
    0 after a liquidation (a liquidated account holds nothing)."""
    times = equity.index.to_numpy(dtype=np.int64)
    closes = equity.groupby(times // DAY_MS).last()
    values = closes.to_numpy(dtype=np.float64)
    prev = values[:-1]
    r = np.divide(values[1:], prev, out=np.ones_like(prev), where=prev > 0.0) - 1.0
    days = closes.index.to_numpy(dtype=np.int64)[1:] * DAY_MS
    return pd.Series(r, index=days, dtype=np.float64)


class TrialRunner:
    """Runs trials on one universe; datasets cached by their specs' content hash.

    ``n_jobs`` parallel fold fits through the joblib backend ``joblib_backend`` (threads by
    default; ``"loky"`` for worker processes; None: the enclosing ``joblib.parallel_config``),
    unless a Ray / Dask backend is open (:func:`atra.research.backends.open_backend`): then
    the folds run there. ``cache_size=0`` keeps no dataset (every trial builds its own)."""

    def __init__(
        self,
        universe: Universe,
        market: Market,
        overrides: WalkForwardOverrides,
        *,
        seed: int,
        n_jobs: int = 2,
        cache_size: int = _CACHE_SIZE,
        joblib_backend: str | None = "threading",
    ) -> None:
        if n_jobs < 1 or cache_size < 0:
            raise ConfigError(f"n_jobs >= 1 and cache_size >= 0, got {n_jobs} and {cache_size}")
        self.universe = universe
        self.market = market
        self.overrides = overrides
        self.seed = seed
        self.n_jobs = n_jobs
        self.joblib_backend = joblib_backend
        self._cache: OrderedDict[str, ResearchDataset] = OrderedDict()
        self._cache_size = cache_size
        self._universes: dict[Timeframe, Universe] = {}
        self.dataset_builds = 0
        self.dataset_hits = 0
        self.data_end_ms = max(
            int(d.candles["open_time"].iloc[-1]) for d in universe.symbols.values()
        )
        """Open time of the last bar any trial of this runner can see."""

    def universe_for(self, timeframe: Timeframe | None) -> Universe:
        """The universe of a trial: the one given (``timeframe`` None), else resampled to
        ``timeframe`` and cut to its warm-up (made once per bar size)."""
        if timeframe is None:
            return self.universe
        uni = self._universes.get(timeframe)
        if uni is None:
            uni = universe_at(self.universe, timeframe)
            self._universes[timeframe] = uni
        return uni

    def _dataset(self, cfg: AtraConfig, universe: Universe) -> tuple[ResearchDataset, bool]:
        rs = settings_from_config(cfg, self.market)
        first_bar = min(int(d.candles["open_time"].iloc[0]) for d in universe.symbols.values())
        key = hash_config(
            {
                "signal": spec_to_dict(rs.signal),
                "exit": spec_to_dict(rs.exit),
                "features": None,
                "timeframe": universe.timeframe.value,
                "first_bar_ms": first_bar,  # the warm-up read (one runner may hold two)
            }
        )
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.dataset_hits += 1
            return hit, True
        ds = build_dataset(universe, rs.signal, rs.exit)
        self.dataset_builds += 1
        self._cache[key] = ds
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return ds, False

    def run(self, cfg: AtraConfig, timeframe: Timeframe | None = None) -> TrialOutcome:
        """The walk-forward of ``cfg`` on the universe (resampled to ``timeframe`` when
        given), scored out of sample."""
        rs = settings_from_config(cfg, self.market)
        dataset, cached = self._dataset(cfg, self.universe_for(timeframe))
        wf_cfg = self.overrides.applied(rs.walkforward)
        meta = dataclasses.replace(rs.meta, seed=self.seed)
        wf = run_walkforward(dataset, wf_cfg, meta, n_jobs=self.n_jobs, backend=self.joblib_backend)
        uni = dataset.universe
        oos = oos_events(dataset, wf)
        candles, offsets = oos_candles(uni, oos.start_ms)
        funding = {}
        if uni.market is Market.PERP:
            funding = {s: d.funding for s, d in uni.symbols.items() if s in candles}
            missing = sorted(s for s, f in funding.items() if f is None)
            if missing:
                raise DataError(f"search: perpetual symbol {missing[0]} has no funding stored")
        bt = backtest_config_from(cfg)
        result = run_backtest(
            candles,
            rebased_events(oos.events, offsets),
            dataclasses.replace(bt, decision_column="take"),  # the fold model's decision
            funding={s: f for s, f in funding.items() if f is not None},
            markets={s: uni.market for s in candles},
            timeframe=uni.timeframe,
        )
        leg = leg_from_backtest("filtered", result)
        rs_stats = equity_stats(leg.equity.to_numpy(dtype=np.float64), uni.timeframe)
        n_trades = 0 if leg.trades is None else len(leg.trades)
        return TrialOutcome(
            sharpe=rs_stats.sharpe,
            n_returns=rs_stats.n_returns,
            skew=rs_stats.skew,
            kurtosis=rs_stats.kurtosis,
            total_return=rs_stats.total_return,
            max_drawdown=rs_stats.max_drawdown,
            n_trades=n_trades,
            oos_start_ms=oos.start_ms,
            oos_end_ms=oos.end_ms,
            daily=daily_returns(leg.equity),
            dataset_cached=cached,
            timeframe=uni.timeframe,
        )


def finite_or_none(x: float) -> float | None:
    """JSON-ready float: NaN / inf -> None."""
    return x if math.isfinite(x) else None
