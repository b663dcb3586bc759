"""The truncation test: a feature or an entry rule that changes when later data is removed
looks ahead.

Every registered feature (built-ins and plug-ins) is computed once on the full history; then,
at each cut bar, every input is truncated to what was known at the cut's close
(:func:`truncate_inputs`: bars opened at or before the cut, funding events and external series
records whose time + lag is strictly before its close) and the features are recomputed. Each
value at or before the cut must equal the full-history value (NaN equals NaN; ``rtol`` 0 means
bit for bit). :func:`rule_lookahead` does the same for the primary rule's long / short signals
and its ATR. ``atra features lookahead`` and the look-ahead tests both run these functions.

:func:`pick_cuts` chooses where to cut: random bars plus the bars where a leak would show first
(around gaps, on funding instants, on the daily publication hours of the external series).

Pure: frames in, findings out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.decision import available_inputs
from atra.core.features.frame import FeatureContext, FeatureSpec
from atra.core.features.registry import compute_features, feature_specs
from atra.core.features.sources import bar_size_ms
from atra.core.signals.events import signal_arrays
from atra.core.signals.spec import SignalSpec
from atra.core.types import Timeframe

__all__ = [
    "LookaheadFinding",
    "checkable_features",
    "feature_lookahead",
    "first_findings",
    "pick_cuts",
    "rule_lookahead",
    "truncate_inputs",
]

HOUR_MS: Final[int] = 3_600_000
DAY_MS: Final[int] = 24 * HOUR_MS
FUNDING_MS: Final[int] = 8 * HOUR_MS
PUBLICATION_HOURS: Final[tuple[int, ...]] = (1, 6)
"""Hours (UTC) at which a bar closing then first sees a daily external value: Fear & Greed
(day D from D 01:00) and Coin Metrics (D from D+1 06:00)."""


@dataclass(frozen=True, slots=True)
class LookaheadFinding:
    """One value that changed when the data after ``cut_ms`` was removed.

    ``name`` is the feature (or ``rule:<name>``), ``first_ms`` the open time of the first bar
    whose value differs, ``full`` / ``truncated`` the two values there."""

    name: str
    cut_ms: int
    first_ms: int
    full: float
    truncated: float


def truncate_inputs(
    candles: pd.DataFrame, ctx: FeatureContext, cut: int, bar_ms: int
) -> tuple[pd.DataFrame, FeatureContext]:
    """Everything known at the close of bar ``cut`` (a row of ``candles``): the bars opened at
    or before it (main, counterpart, BTC) and the funding events and series records whose time
    + lag is strictly before its close (the documented availability rule)."""
    open_t = int(candles["open_time"].iloc[cut])
    close_t = open_t + bar_ms

    def bars(frame: pd.DataFrame | None) -> pd.DataFrame | None:
        return None if frame is None else frame[frame["open_time"] <= open_t]

    funding = ctx.funding
    if funding is not None:
        funding = funding[funding["funding_time"] + ctx.funding_lag_ms < close_t]
    series = tuple(
        dataclasses.replace(s, frame=s.frame[s.times_ms() + s.lag_ms < close_t]) for s in ctx.series
    )
    new_ctx = dataclasses.replace(
        ctx, funding=funding, counterpart=bars(ctx.counterpart), btc=bars(ctx.btc), series=series
    )
    return candles.iloc[: cut + 1], new_ctx


def pick_cuts(
    open_time: npt.ArrayLike,
    bar_ms: int,
    n_random: int,
    seed: int,
    *,
    first: int = 0,
    max_gaps: int | None = None,
) -> list[int]:
    """Cut bars (row indices >= ``first``): ``n_random`` random ones, the bars just before, at
    and after gaps (``max_gaps`` of them at random; None: every gap), three bars closing on a
    funding instant, two closing on each publication hour, and the first, second and last."""
    times = np.asarray(open_time, dtype=np.int64)
    n = times.size
    if n == 0:
        return []
    rng = np.random.default_rng(seed)
    after_gap = np.flatnonzero(np.diff(times) != bar_ms) + 1
    after_gap = after_gap[after_gap >= first]
    if max_gaps is not None and after_gap.size > max_gaps:
        after_gap = rng.choice(after_gap, max_gaps, replace=False)
    special = [*(after_gap - 1), *after_gap, *(after_gap + 1)]
    close = times + bar_ms
    pools = [np.flatnonzero(close % FUNDING_MS == 0)]
    pools += [np.flatnonzero(close % DAY_MS == h * HOUR_MS) for h in PUBLICATION_HOURS]
    for k, pool in enumerate(pools):
        pool = pool[pool >= first]
        if pool.size:
            special += rng.choice(pool, min(3 if k == 0 else 2, pool.size), replace=False).tolist()
    span = np.arange(first, n)
    random = rng.choice(span, min(n_random, span.size), replace=False).tolist() if span.size else []
    chosen = {int(c) for c in [*special, *random, first, first + 1, n - 1]}
    return sorted(c for c in chosen if first <= c < n)


def checkable_features(
    ctx: FeatureContext, registry: Mapping[str, FeatureSpec] | None = None
) -> tuple[list[str], list[str]]:
    """``(names whose inputs the context has, names it cannot compute)``, registry order."""
    specs = feature_specs(ctx, registry)
    have = available_inputs(ctx)
    ok = [n for n, s in specs.items() if set(s.inputs) <= have]
    chosen = set(ok)
    return ok, [n for n in specs if n not in chosen]


def _first_change(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], rtol: float) -> int:
    """Index of the first position where ``a`` and ``b`` differ (NaN equals NaN), or -1."""
    both_nan = np.isnan(a) & np.isnan(b)
    same = both_nan | (a == b) if rtol == 0.0 else both_nan | np.isclose(a, b, rtol=rtol, atol=0)
    bad = np.flatnonzero(~same)
    return int(bad[0]) if bad.size else -1


def feature_lookahead(
    candles: pd.DataFrame,
    ctx: FeatureContext,
    cuts: Sequence[int],
    *,
    names: Sequence[str] | None = None,
    registry: Mapping[str, FeatureSpec] | None = None,
    rtol: float = 0.0,
) -> list[LookaheadFinding]:
    """Every (feature, cut) whose values at or before the cut change when the inputs are
    truncated there; ``names`` defaults to every feature the context can compute."""
    chosen = list(names) if names is not None else checkable_features(ctx, registry)[0]
    if not len(candles) or not chosen:
        return []
    bar_ms = bar_size_ms(candles["open_time"].to_numpy(np.int64), ctx.timeframe, "candles")
    full = compute_features(candles, ctx, chosen, registry=registry)
    times = candles["open_time"].to_numpy(np.int64)
    out: list[LookaheadFinding] = []
    for cut in cuts:
        part_main, part_ctx = truncate_inputs(candles, ctx, cut, bar_ms)
        part = compute_features(part_main, part_ctx, chosen, registry=registry)
        for name in chosen:
            a = full[name].to_numpy(np.float64)[: cut + 1]
            b = part[name].to_numpy(np.float64)
            i = _first_change(a, b, rtol)
            if i >= 0:
                out.append(
                    LookaheadFinding(name, int(times[cut]), int(times[i]), float(a[i]), float(b[i]))
                )
    return out


def rule_lookahead(
    candles: pd.DataFrame, spec: SignalSpec, cuts: Sequence[int], timeframe: Timeframe
) -> list[LookaheadFinding]:
    """The truncation test of the primary rule (built-in or plug-in): its long / short signals
    and ATR at or before each cut, on the history truncated there. The cut bar itself is
    compared only when no gap follows it (a signal on the last bar before a gap is dropped on
    the full history and kept on the truncated one, by design). Findings are named
    ``rule:<name>`` (values: +1 long, -1 short, 0 none, or the ATR)."""
    name = f"rule:{spec.rule_name}"
    found = signal_arrays(candles, spec, symbol=name, timeframe=timeframe)
    if found is None:
        return []
    long_f, short_f, atr_f, times, _ = found
    side_f = long_f.astype(np.float64) - short_f.astype(np.float64)
    out: list[LookaheadFinding] = []
    for cut in cuts:
        part = signal_arrays(candles.iloc[: cut + 1], spec, symbol=name, timeframe=timeframe)
        if part is None:
            continue
        long_p, short_p, atr_p, _, _ = part
        side_p = long_p.astype(np.float64) - short_p.astype(np.float64)
        upto = cut + 1
        if cut + 1 < times.size and times[cut + 1] - times[cut] != timeframe.ms:
            upto = cut  # the last bar before a gap: see the docstring
        for a, b in ((side_f, side_p), (atr_f, atr_p)):
            i = _first_change(a[:upto], b[:upto], 0.0)
            if i >= 0:
                out.append(
                    LookaheadFinding(name, int(times[cut]), int(times[i]), float(a[i]), float(b[i]))
                )
                break
    return out


def first_findings(findings: Sequence[LookaheadFinding]) -> list[LookaheadFinding]:
    """The earliest finding (first changed bar, then cut) of each name, in name order."""
    best: dict[str, LookaheadFinding] = {}
    for f in findings:
        old = best.get(f.name)
        if old is None or (f.first_ms, f.cut_ms) < (old.first_ms, old.cut_ms):
            best[f.name] = f
    return [best[k] for k in sorted(best)]
