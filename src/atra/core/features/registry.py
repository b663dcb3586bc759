"""Causal features of OHLCV bars in five families, behind a registry.

Every feature is a named float64 column with a definition in :func:`feature_registry`. All of
them are **causal**: the value at bar t (open time t) uses only bars with open time <= t and
side data known before t's close (rule in :mod:`atra.core.features.sources`).

**Gaps.** Bars are split into contiguous segments: a new segment starts wherever the
``open_time`` step is longer than one bar. A window never spans a gap: every candle feature
needs ``warmup_bars`` bars of the *same* segment before it (its warm-up restarts after each
gap) and is NaN until then. Recursive indicators (EMA, Wilder ATR / RSI) restart from their
seed in each segment; rolling windows are computed on the whole array and NaN-ed where the
window reaches into the previous segment (identical values, no per-segment Python loop).
Missing side data (a counterpart or BTC bar, an old funding rate) gives NaN, never a
neighbour's value.

Library vs hand-written: EMA, Wilder ATR and RSI are TA-Lib (its SMA-seeded recursions, run
per segment). Rolling statistics use pandas ``rolling`` (min_periods = window); regression
slopes, VWAP, OBV, efficiency ratio and the as-of joins are plain numpy, written here because
TA-Lib has no gap/NaN-aware or point-in-time versions of them.

Layout: :mod:`atra.core.features.frame` (context, segmented bars, :class:`FeatureSpec`),
:mod:`atra.core.features.catalog` (the built-in feature functions and their table),
:mod:`atra.core.features.sources` (input checks, point-in-time joins); this module holds the
registry and :func:`compute_features`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.features.catalog import builtin_specs
from atra.core.features.frame import FeatureContext, FeatureFrame, FeatureSpec, shift
from atra.core.features.sources import F64, Family, PointInTimeSeries, series_asof
from atra.errors import ConfigError

__all__ = [
    "HISTORY_BARS",
    "Family",
    "FeatureContext",
    "FeatureFrame",
    "FeatureSpec",
    "PointInTimeSeries",
    "compute_features",
    "feature_registry",
    "feature_specs",
    "features_by_family",
    "series_feature_specs",
]

HISTORY_BARS: Final[int] = 1500
"""Contiguous bars after which no built-in feature depends on where the history starts, to
~1e-6 (the EMA200 / Wilder seeds have decayed; windowed features are exact). A live caller
passes at least this many bars so that its features match a backtest started earlier."""


_REGISTRY: Final[dict[str, FeatureSpec]] = builtin_specs()


def feature_registry() -> Mapping[str, FeatureSpec]:
    """The built-in features by name (read-only), in output column order."""
    return MappingProxyType(_REGISTRY)


def features_by_family(
    family: Family | str, registry: Mapping[str, FeatureSpec] | None = None
) -> list[FeatureSpec]:
    """The features of one family, in registry order."""
    fam = Family(family)
    return [s for s in (_REGISTRY if registry is None else registry).values() if s.family is fam]


def _series_value(name: str, column: str) -> Callable[[FeatureFrame], F64]:
    def compute(ff: FeatureFrame) -> F64:
        series = next(s for s in ff.ctx.series if s.name == name)
        return ff.cached(
            f"series:{name}:{column}", lambda: series_asof(series, ff.close_ms)[column]
        )

    return compute


def _series_change(name: str, column: str, k: int) -> Callable[[FeatureFrame], F64]:
    value = _series_value(name, column)

    def compute(ff: FeatureFrame) -> F64:
        x = value(ff)
        return ff.mask(x - shift(x, k), k)

    return compute


def series_feature_specs(series: PointInTimeSeries) -> list[FeatureSpec]:
    """The features of one external series: its usable value and its change, per column."""
    specs = []
    src = f"series:{series.name}"
    lag_h = series.lag_ms / 3_600_000
    for col in series.value_columns:
        base = f"{series.name}_{col}"
        specs.append(
            FeatureSpec(
                base,
                series.family,
                f"{col} of series {series.name}: last value with time + {lag_h:g} h < bar close",
                0,
                ("candles", src),
                _series_value(series.name, col),
            )
        )
        k = series.change_bars
        specs.append(
            FeatureSpec(
                f"{base}_chg{k}",
                series.family,
                f"{base}_t - {base}_t-{k} (change over {k} bars)",
                k,
                ("candles", src),
                _series_change(series.name, col, k),
            )
        )
    return specs


def feature_specs(
    ctx: FeatureContext | None = None, registry: Mapping[str, FeatureSpec] | None = None
) -> dict[str, FeatureSpec]:
    """The registry plus the features of the context's external series, by name."""
    out = dict(_REGISTRY if registry is None else registry)
    for series in (ctx or FeatureContext()).series:
        for spec in series_feature_specs(series):
            if spec.name in out:
                raise ConfigError(f"series {series.name!r}: feature {spec.name!r} already exists")
            out[spec.name] = spec
    return out


def _available_inputs(ctx: FeatureContext) -> set[str]:
    have = {"candles"}
    for key, value in (
        ("funding", ctx.funding),
        ("counterpart", ctx.counterpart),
        ("btc", ctx.btc),
    ):
        if value is not None:
            have.add(key)
    have.update(f"series:{s.name}" for s in ctx.series)
    return have


def compute_features(
    candles: pd.DataFrame,
    ctx: FeatureContext | None = None,
    names: Sequence[str] | None = None,
    *,
    registry: Mapping[str, FeatureSpec] | None = None,
) -> pd.DataFrame:
    """Features of one symbol's candles: ``open_time`` then one float64 column per feature.

    Indexed like ``candles``. ``names=None`` computes every feature whose inputs the context
    provides (candle features always); a named feature whose input is missing is a
    :class:`ConfigError`. ``registry`` replaces the built-in one (extensions, tests).
    """
    ctx = ctx or FeatureContext()
    specs = feature_specs(ctx, registry)
    have = _available_inputs(ctx)
    if names is None:
        chosen = [s for s in specs.values() if set(s.inputs) <= have]
    else:
        if len(set(names)) != len(names):
            raise ConfigError("compute_features: feature names must be unique")
        unknown = [n for n in names if n not in specs]
        if unknown:
            raise ConfigError(f"unknown feature(s) {', '.join(unknown)}; see feature_registry()")
        chosen = [specs[n] for n in names]
        for spec in chosen:
            lacking = sorted(set(spec.inputs) - have)
            if lacking:
                raise ConfigError(
                    f"feature {spec.name!r} needs {', '.join(lacking)} in the context"
                )
    ff = FeatureFrame(candles, ctx)
    columns: dict[str, npt.NDArray[np.generic]] = {"open_time": ff.open_time}
    for spec in chosen:
        if not len(ff):
            columns[spec.name] = np.empty(0)
            continue
        values = np.asarray(spec.compute(ff), dtype=np.float64)
        if values.shape != (len(ff),):
            raise ConfigError(f"feature {spec.name!r} returned shape {values.shape}")
        columns[spec.name] = values
    return pd.DataFrame(columns, index=candles.index)
