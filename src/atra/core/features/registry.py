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

**Plug-ins.** A user's own feature joins the registry through :func:`feature`
(``@atra.feature("name", family=..., warmup=..., inputs=...)``) or
:func:`register_feature`, when its module is imported (the adapters' plug-in loader imports the
modules the config names). From then on it is computed, listed, look-ahead checked, trained on
and served exactly like a built-in; :func:`feature_origin` tells the two apart. A name that is
a built-in's, another plug-in's, an event attribute or ``open_time`` is refused.

Layout: :mod:`atra.core.features.frame` (context, segmented bars, :class:`FeatureSpec`),
:mod:`atra.core.features.catalog` (the built-in feature functions and their table),
:mod:`atra.core.features.sources` (input checks, point-in-time joins); this module holds the
registry, its plug-in registration and :func:`compute_features`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.features.catalog import builtin_specs
from atra.core.features.frame import FeatureContext, FeatureFrame, FeatureSpec, shift
from atra.core.features.sources import F64, Family, PointInTimeSeries, series_asof
from atra.core.signals.rules import BUILTIN, NAME_PATTERN
from atra.errors import AtraError, ConfigError

__all__ = [
    "HISTORY_BARS",
    "Family",
    "FeatureContext",
    "FeatureFrame",
    "FeatureSpec",
    "PointInTimeSeries",
    "compute_features",
    "feature",
    "feature_origin",
    "feature_registry",
    "feature_specs",
    "features_by_family",
    "register_feature",
    "series_feature_specs",
    "unregister_features",
]

HISTORY_BARS: Final[int] = 1500
"""Contiguous bars after which no built-in feature depends on where the history starts, to
~1e-6 (the EMA200 / Wilder seeds have decayed; windowed features are exact). A live caller
passes at least this many bars so that its features match a backtest started earlier."""


_REGISTRY: Final[dict[str, FeatureSpec]] = builtin_specs()
_PLUGINS: Final[dict[str, tuple[str, str]]] = {}
"""Plug-in feature name -> (module, qualified name of its function)."""
_RESERVED: Final[frozenset[str]] = frozenset({"open_time", "side", "sl_dist_pct", "tp1_dist_pct"})
"""Column names a feature may not take: the frame's time and the signal's event attributes
(:data:`atra.core.features.context.EVENT_ATTRIBUTES`, which imports this module)."""
_INPUTS: Final[frozenset[str]] = frozenset({"candles", "funding", "counterpart", "btc"})
FeatureFn = TypeVar("FeatureFn", bound=Callable[[FeatureFrame], object])


def feature_registry() -> Mapping[str, FeatureSpec]:
    """The registered features by name (read-only): the built-ins in output column order,
    then the plug-ins in registration order."""
    return MappingProxyType(_REGISTRY)


def feature_origin(name: str) -> str | None:
    """``built-in``, the module of a plug-in feature, or None for an unregistered name."""
    if name in _PLUGINS:
        return _PLUGINS[name][0]
    return BUILTIN if name in _REGISTRY else None


def register_feature(spec: FeatureSpec, origin: str, qualname: str = "") -> FeatureSpec:
    """Add a plug-in feature from the module ``origin``. Refused with one
    :class:`ConfigError` line: a bad name, family, warm-up or input, or a name already taken
    (a built-in, another plug-in, a reserved column). The same definition registered again
    (a reloaded module) replaces itself."""
    where = f"plug-in {origin}: feature {spec.name!r}"
    if not NAME_PATTERN.match(spec.name):
        raise ConfigError(f"{where}: the name must match {NAME_PATTERN.pattern}")
    if spec.name in _RESERVED:
        raise ConfigError(f"{where}: the name is reserved ({', '.join(sorted(_RESERVED))})")
    old = feature_origin(spec.name)
    if old == BUILTIN:
        raise ConfigError(f"{where}: a built-in feature has that name")
    if old is not None and _PLUGINS[spec.name] != (origin, qualname):
        raise ConfigError(f"{where}: already registered by {old}")
    if not isinstance(spec.family, Family):
        raise ConfigError(f"{where}: family {spec.family!r} is not a Family")
    if isinstance(spec.warmup_bars, bool) or not isinstance(spec.warmup_bars, int):
        raise ConfigError(
            f"{where}: warmup must be a whole number of bars, got {spec.warmup_bars!r}"
        )
    if spec.warmup_bars < 0:
        raise ConfigError(f"{where}: warmup must be >= 0 bars, got {spec.warmup_bars}")
    bad = [i for i in spec.inputs if i not in _INPUTS and not i.startswith("series:")]
    if bad or "candles" not in spec.inputs:
        raise ConfigError(
            f"{where}: inputs {list(spec.inputs)} must include 'candles' and name only "
            "candles, funding, counterpart, btc or series:<name>"
        )
    _REGISTRY[spec.name] = spec
    _PLUGINS[spec.name] = (origin, qualname)
    return spec


def unregister_features(origin: str) -> list[str]:
    """Remove every feature registered by the module ``origin``; returns their names."""
    gone = [name for name, (module, _) in _PLUGINS.items() if module == origin]
    for name in gone:
        del _REGISTRY[name], _PLUGINS[name]
    return gone


def _plugin_compute(
    name: str, origin: str, fn: Callable[[FeatureFrame], object], warmup: int
) -> Callable[[FeatureFrame], F64]:
    """The plug-in's function, checked (one float per bar) and NaN on the first ``warmup``
    bars of every gap-free segment, as the registry promises for every feature."""

    def compute(ff: FeatureFrame) -> F64:
        try:
            values = np.asarray(fn(ff))
        except AtraError:
            raise
        except Exception as exc:  # the plug-in's own bug: one line (--debug shows the cause)
            raise ConfigError(
                f"feature {name!r} ({origin}) failed: {type(exc).__name__}: {exc}"
            ) from exc
        if values.shape != (len(ff),):
            raise ConfigError(
                f"feature {name!r} ({origin}) returned shape {values.shape} for {len(ff)} "
                f"bars, expected ({len(ff)},)"
            )
        try:
            as_float = values.astype(np.float64)
        except (TypeError, ValueError):
            raise ConfigError(
                f"feature {name!r} ({origin}) returned {values.dtype} values, expected numbers"
            ) from None
        return ff.mask(as_float, warmup)

    return compute


def feature(
    name: str,
    *,
    family: Family | str,
    warmup: int,
    inputs: Sequence[str] = ("candles",),
    definition: str | None = None,
) -> Callable[[FeatureFn], FeatureFn]:
    """Register the decorated function as the plug-in feature ``name``::

        @atra.feature("range_pos_48", family="price", warmup=47)
        def range_pos_48(ff: atra.FeatureFrame) -> np.ndarray:
            \"\"\"Where the close sits in the 48-bar high-low range (0 low .. 1 high).\"\"\"
            hi = pd.Series(ff.high).rolling(48).max().to_numpy()
            lo = pd.Series(ff.low).rolling(48).min().to_numpy()
            return (ff.close - lo) / (hi - lo)

    The function gets one symbol's :class:`FeatureFrame` (``open_time``, ``open high low
    close volume``, ``close_ms``, ``bars_since_gap``, the side data in ``ctx``) and returns
    one number per bar, using only bars up to each bar (``atra features lookahead`` checks).
    ``warmup`` bars at the start of every gap-free segment are NaN; ``inputs`` name the data
    it reads (``candles``, ``funding``, ``counterpart``, ``btc``, ``series:<name>``);
    ``definition`` defaults to the first line of the docstring."""
    try:
        fam = Family(family)
    except ValueError:
        raise ConfigError(
            f"feature {name!r}: family {family!r} is not one of "
            f"{', '.join(f.value for f in Family)}"
        ) from None

    def decorate(fn: FeatureFn) -> FeatureFn:
        origin = str(getattr(fn, "__module__", None) or "unknown")
        doc = (fn.__doc__ or "").strip().splitlines()
        spec = FeatureSpec(
            name,
            fam,
            definition or (doc[0] if doc else name),
            warmup,
            tuple(inputs),
            _plugin_compute(name, origin, fn, warmup),
        )
        register_feature(spec, origin, str(getattr(fn, "__qualname__", name)))
        return fn

    return decorate


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
