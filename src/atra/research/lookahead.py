"""The look-ahead check on stored data (``atra features lookahead``): the truncation test of
:mod:`atra.core.lookahead` over every registered feature (built-ins and plug-ins) and the
configured entry rule, symbol by symbol, on the universe research reads (candles, funding,
counterpart market, BTC and the configured external series, each truncated at the cut).

A feature whose inputs no symbol has cannot be checked; it is reported as such, never counted
as passing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from atra.core.decision import available_inputs
from atra.core.features.registry import feature_specs
from atra.core.lookahead import (
    LookaheadFinding,
    checkable_features,
    feature_lookahead,
    pick_cuts,
    rule_lookahead,
)
from atra.core.signals.spec import SignalSpec
from atra.research.dataset import Universe

__all__ = ["LookaheadReport", "SymbolFinding", "run_lookahead"]

ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class SymbolFinding:
    """A :class:`~atra.core.lookahead.LookaheadFinding` on one symbol's data."""

    symbol: str
    finding: LookaheadFinding


@dataclass(frozen=True, slots=True)
class LookaheadReport:
    """What :func:`run_lookahead` checked and found.

    ``checked``: the features compared on at least one symbol (registry order);
    ``unchecked``: feature -> the inputs no symbol had; ``bars`` / ``cuts`` summed over the
    symbols; ``findings``: every changed (feature or rule, cut) pair."""

    symbols: tuple[str, ...]
    rule: str
    checked: tuple[str, ...]
    unchecked: dict[str, tuple[str, ...]]
    bars: int
    cuts: int
    findings: tuple[SymbolFinding, ...]
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return not self.findings

    def first_by_name(self) -> list[SymbolFinding]:
        """The earliest change of each feature / rule (first changed bar, then cut), by name."""
        best: dict[str, SymbolFinding] = {}
        for sf in self.findings:
            f = sf.finding
            old = best.get(f.name)
            if old is None or (f.first_ms, f.cut_ms) < (old.finding.first_ms, old.finding.cut_ms):
                best[f.name] = sf
        return [best[k] for k in sorted(best)]


def run_lookahead(
    universe: Universe,
    spec: SignalSpec,
    *,
    n_random: int = 12,
    seed: int = 0,
    max_gaps: int | None = 6,
    progress: ProgressFn | None = None,
) -> LookaheadReport:
    """The truncation test of every feature the universe's data feeds and of ``spec``'s rule:
    per symbol, ``n_random`` random cut bars in the range (``universe.start_ms`` on) plus the
    bars around ``max_gaps`` gaps (None: all), on funding instants and on the daily
    publication hours (:func:`atra.core.lookahead.pick_cuts`, seeded per symbol)."""
    started = time.perf_counter()
    tf = universe.timeframe
    syms = list(universe.symbols)
    checked: set[str] = set()
    lacking: dict[str, set[str]] = {}
    findings: list[SymbolFinding] = []
    bars = cuts_total = 0
    order: list[str] = []
    for k, sym in enumerate(syms):
        candles = universe.symbols[sym].candles
        ctx = universe.context(sym)
        names, absent = checkable_features(ctx)
        specs = feature_specs(ctx)
        order += [n for n in specs if n not in order]
        checked.update(names)
        have = available_inputs(ctx)
        for name in absent:
            lacking.setdefault(name, set()).update(set(specs[name].inputs) - have)
        times = candles["open_time"].to_numpy()
        first = 0 if universe.start_ms is None else int((times < universe.start_ms).sum())
        cuts = pick_cuts(times, tf.ms, n_random, seed + k, first=first, max_gaps=max_gaps)
        found = feature_lookahead(candles, ctx, cuts, names=names)
        found += rule_lookahead(candles, spec, cuts, tf)
        findings += [SymbolFinding(sym, f) for f in found]
        bars += len(candles)
        cuts_total += len(cuts)
        if progress is not None:
            progress(k + 1, len(syms), sym)
    unchecked = {n: tuple(sorted(lacking[n])) for n in order if n in lacking and n not in checked}
    return LookaheadReport(
        symbols=tuple(syms),
        rule=spec.rule_name,
        checked=tuple(n for n in order if n in checked),
        unchecked=unchecked,
        bars=bars,
        cuts=cuts_total,
        findings=tuple(findings),
        elapsed_s=time.perf_counter() - started,
    )
