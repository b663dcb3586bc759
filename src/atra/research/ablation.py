"""Feature ablation: the walk-forward of ``atra walkforward`` once per cumulative feature set.

**The sets.** The features a walk-forward uses by default (the dataset's ``bar_features``:
every registered feature whose inputs the data provides) are split by the registry's family
(:func:`atra.core.features.registry.feature_specs`) and origin
(:func:`~atra.core.features.registry.feature_origin`). The built-in families come first, in
:class:`~atra.core.features.sources.Family` order, each set adding one to the previous:

    price -> +volume -> +fundamental -> +alternative -> +cross_asset

then one set per plug-in module and family present (``+my_pkg.rules (price)``), in
registration order. Every set's model also sees the signal's own attributes
(:data:`atra.core.decision.EVENT_FEATURES`), as every meta model does. A family with no
feature in the data (fundamental on spot without funding, a perpetual or on-chain series) is
reported as *skipped: no features available* with the inputs it lacks, and the next set adds
to the last one that ran: nothing is merged into a neighbour silently.

**One walk-forward per set.** Features, primary events and labels are computed once; a set is
the same dataset with the model's input columns restricted to it (column for column what
:func:`atra.research.dataset.build_dataset` gives for that feature list). Each set then runs
exactly what ``atra walkforward`` runs: :func:`~atra.research.walkforward.run_walkforward`
(purged, embargoed folds) and :func:`~atra.research.evaluation.loop.evaluate_walkforward` (the
out-of-sample backtests primary-only and meta-filtered, after costs, and the run record). The
folds depend on the labels only, so every set is scored on the same OOS events and its primary
leg is the same. The last set holds every feature of the dataset, in its order: on the dataset
``atra walkforward`` builds, its run is that command's run (the same run id).

Figures per set: OOS AUC of the fold models' p(take) over every OOS event, and for the
primary and the filtered leg the Sharpe ratio (annualised with ``sqrt(bars per 365-day
year)``, :attr:`AblationResult.annualization`), total return and trade count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from atra.adapters.store import CandleStore
from atra.core.backtest.engine import BacktestConfig
from atra.core.decision import EVENT_FEATURES, available_inputs
from atra.core.features.registry import FeatureSpec, feature_origin, feature_specs
from atra.core.features.sources import Family
from atra.core.signals.rules import BUILTIN
from atra.errors import ConfigError, DataError
from atra.research.evaluation.loop import (
    LoopArgs,
    StageProgress,
    checked_loop_args,
    evaluate_walkforward,
    plain,
    stored_dataset,
)
from atra.research.evaluation.result import LegFigures
from atra.research.pipeline import (
    ResearchDataset,
    ResearchSettings,
    run_walkforward,
)

__all__ = [
    "AblationResult",
    "FeatureSet",
    "SetOutcome",
    "feature_sets",
    "restrict_features",
    "run_ablation",
    "run_ablation_loop",
]

SKIPPED = "skipped: no features available"


@dataclass(frozen=True, slots=True)
class FeatureSet:
    """One step of the ablation: the features it adds and the cumulative list it trains on."""

    name: str
    """``price``, ``+volume``, ... ``+my_pkg.rules (price)``."""
    family: Family
    origin: str
    """``built-in`` or the plug-in module."""
    added: tuple[str, ...]
    """The features this set adds to the previous one (dataset order)."""
    features: tuple[str, ...]
    """The bar features the set's model takes (cumulative, dataset order); the event
    attributes come on top."""
    skip_reason: str | None = None
    """Why the set was not run (no feature of it in the data); None: it ran."""


@dataclass(frozen=True, slots=True)
class SetOutcome:
    """A feature set and, when it ran, its out-of-sample figures (all after costs)."""

    feature_set: FeatureSet
    auc: float | None = None
    oos_events: int | None = None
    taken: int | None = None
    """OOS events the fold models took (p_take >= threshold)."""
    primary: LegFigures | None = None
    filtered: LegFigures | None = None
    added_finite_share: float | None = None
    """Share of finite values of the set's added features over its OOS events (NaN where an
    input is missing or still warming up)."""
    run_id: str | None = None
    run_dir: Path | None = None

    @property
    def ran(self) -> bool:
        return self.feature_set.skip_reason is None


@dataclass(frozen=True, slots=True, eq=False)
class AblationResult:
    """Every set in order (skipped ones included) and what they share."""

    sets: tuple[SetOutcome, ...]
    annualization: str
    exchange: str
    market: str
    timeframe: str
    symbols: tuple[str, ...]
    start_ms: int | None
    end_ms: int | None
    oos_start_ms: int
    oos_end_ms: int
    folds: int
    elapsed_s: float
    event_attributes: tuple[str, ...] = EVENT_FEATURES
    """The signal's own attributes every set's model takes beside its bar features."""

    def to_json(self) -> dict[str, Any]:
        """One JSON-ready object (NaN -> null): the range, the annualisation and the sets."""

        def leg(fig: LegFigures | None) -> dict[str, Any] | None:
            if fig is None:
                return None
            return {"sharpe": fig.sharpe, "total_return": fig.total_return,
                    "n_trades": fig.n_trades}  # fmt: skip

        sets = [
            {
                "name": o.feature_set.name,
                "family": o.feature_set.family.value,
                "origin": o.feature_set.origin,
                "status": "ran" if o.ran else "skipped",
                "skip_reason": o.feature_set.skip_reason,
                "n_features": len(o.feature_set.features),
                "added": list(o.feature_set.added),
                "auc": o.auc,
                "oos_events": o.oos_events,
                "taken": o.taken,
                "primary": leg(o.primary),
                "filtered": leg(o.filtered),
                "added_finite_share": o.added_finite_share,
                "run_id": o.run_id,
            }
            for o in self.sets
        ]
        out: dict[str, Any] = plain(
            {
                "ablation": {
                    "exchange": self.exchange,
                    "market": self.market,
                    "timeframe": self.timeframe,
                    "symbols": list(self.symbols),
                    "start_ms": self.start_ms,
                    "end_ms": self.end_ms,
                    "oos_start_ms": self.oos_start_ms,
                    "oos_end_ms": self.oos_end_ms,
                    "folds": self.folds,
                    "annualization": self.annualization,
                    "out_of_sample_only": True,
                    "costs_included": True,
                    "event_attributes": list(self.event_attributes),
                    "sets": sets,
                    "elapsed_s": round(self.elapsed_s, 1),
                }
            }
        )
        return out


def _specs_of(dataset: ResearchDataset) -> dict[str, FeatureSpec]:
    """Every feature the dataset's symbols could have (registry + their series' own)."""
    uni = dataset.universe
    out: dict[str, FeatureSpec] = {}
    for sym in uni.symbols:
        out.update(feature_specs(uni.context(sym)))
    return out


def _origin(name: str) -> str:
    return feature_origin(name) or BUILTIN  # a configured series' own features: built-in kinds


def _why_none(specs: Sequence[FeatureSpec], have: set[str]) -> str:
    if not specs:
        return f"{SKIPPED} (none registered)"
    lacking = sorted({i for s in specs for i in s.inputs} - have)
    if lacking and all(set(s.inputs) - have for s in specs):
        return f"{SKIPPED} (the data has no {', '.join(lacking)})"
    return f"{SKIPPED} (not among the dataset's features)"


def feature_sets(dataset: ResearchDataset) -> list[FeatureSet]:
    """The cumulative feature sets of ``dataset`` (see the module docstring): built-in
    families in :class:`Family` order, then each plug-in module's families."""
    specs = _specs_of(dataset)
    order = {n: k for k, n in enumerate(dataset.bar_features)}
    unknown = [n for n in dataset.bar_features if n not in specs]
    if unknown:
        raise DataError(f"ablation: feature(s) {', '.join(unknown)} are not registered")
    have: set[str] = set()
    for sym in dataset.universe.symbols:
        have |= available_inputs(dataset.universe.context(sym))
    groups: list[tuple[Family, str]] = [(fam, BUILTIN) for fam in Family]
    for name, spec in specs.items():  # plug-ins in registration order
        key = (spec.family, _origin(name))
        if key[1] != BUILTIN and key not in groups:
            groups.append(key)
    out: list[FeatureSet] = []
    used: tuple[str, ...] = ()
    for fam, origin in groups:
        members = [s for n, s in specs.items() if s.family is fam and _origin(n) == origin]
        added = tuple(sorted((s.name for s in members if s.name in order), key=order.__getitem__))
        label = fam.value if origin == BUILTIN else f"{origin} ({fam.value})"
        name = label if not out else f"+{label}"
        if not added:
            out.append(FeatureSet(name, fam, origin, (), used, _why_none(members, have)))
            continue
        used = tuple(sorted((*used, *added), key=order.__getitem__))
        out.append(FeatureSet(name, fam, origin, added, used))
    covered = set(used)
    stray = [n for n in dataset.bar_features if n not in covered]
    if stray:  # every family is a group: only a registry inconsistency lands here
        raise DataError(f"ablation: feature(s) {', '.join(stray)} belong to no set")
    return out


def restrict_features(dataset: ResearchDataset, names: Sequence[str]) -> ResearchDataset:
    """``dataset`` with the model's inputs restricted to the bar features ``names`` (in that
    order) plus the event attributes: what :func:`build_dataset` gives for ``names``."""
    if len(set(names)) != len(names):
        raise ConfigError(f"ablation: feature names must be unique, got {list(names)}")
    missing = [n for n in names if n not in dataset.bar_features]
    if missing:
        raise DataError(f"ablation: feature(s) {', '.join(missing)} are not in the dataset")
    X = dataset.X.loc[:, [*names, *EVENT_FEATURES]]
    return replace(dataset, X=X, bar_features=tuple(names))


def _finite_share(dataset: ResearchDataset, rows: Any, names: Sequence[str]) -> float:
    if not names or len(rows) == 0:
        return math.nan
    values = dataset.X.loc[rows, list(names)].to_numpy(dtype=np.float64)
    return float(np.isfinite(values).mean())


def run_ablation(
    dataset: ResearchDataset,
    settings: ResearchSettings,
    backtest_config: BacktestConfig,
    *,
    runs_dir: Path,
    seed: int,
    n_trials: int = 1,
    n_jobs: int = 2,
    progress: StageProgress | None = None,
) -> AblationResult:
    """Run the walk-forward and its OOS evaluation once per set of :func:`feature_sets`
    (``settings.walkforward``, ``settings.meta`` seeded with ``seed``); each set's run record
    goes under ``runs_dir`` as ``atra walkforward`` writes it (no HTML report)."""
    started = time.perf_counter()
    sets = feature_sets(dataset)
    runnable = [s for s in sets if s.skip_reason is None]
    if not runnable:
        raise DataError("ablation: no feature set has features in the data")
    meta = replace(settings.meta, seed=seed)
    outcomes: list[SetOutcome] = []
    shared: dict[str, Any] = {}
    for fs in sets:
        if fs.skip_reason is not None:
            outcomes.append(SetOutcome(fs))
            continue
        k = runnable.index(fs) + 1
        stage = f"set {k}/{len(runnable)} {fs.name}"
        sub = restrict_features(dataset, fs.features)

        def folds(done: int, total: int, stage: str = stage) -> None:
            if progress is not None:
                progress(stage, done, total, f"fold {done}/{total}")

        def steps(done: int, total: int, item: str, stage: str = stage) -> None:
            if progress is not None:
                progress(f"{stage} backtests", done, total, item)

        wf = run_walkforward(sub, settings.walkforward, meta, n_jobs=n_jobs, progress=folds)
        ev = evaluate_walkforward(
            sub, wf, backtest_config, runs_dir=runs_dir, wf_config=settings.walkforward,
            meta_params=meta, seed=seed, n_trials=n_trials, render=False, progress=steps,
        )  # fmt: skip
        pooled = wf.metrics.loc["all"].to_dict() if "all" in wf.metrics.index else {}
        auc = float(pooled.get("auc", math.nan))  # every OOS event, all folds pooled
        span = (ev.oos.start_ms, ev.oos.end_ms, len(wf.folds), ev.annualization)
        if shared.setdefault("span", span) != span:  # the folds follow the labels alone
            raise DataError(f"ablation: set {fs.name} has other folds than the first set")
        outcomes.append(
            SetOutcome(
                fs,
                auc=auc,
                oos_events=len(ev.oos.events),
                taken=ev.oos.n_take,
                primary=ev.figures["primary"],
                filtered=ev.figures["filtered"],
                added_finite_share=_finite_share(dataset, wf.predictions.index, fs.added),
                run_id=ev.run_id,
                run_dir=ev.run_dir,
            )
        )
    uni = dataset.universe
    oos_start, oos_end, n_folds, annualization = shared["span"]
    return AblationResult(
        sets=tuple(outcomes),
        annualization=annualization,
        exchange=uni.exchange,
        market=uni.market.value,
        timeframe=uni.timeframe.value,
        symbols=tuple(uni.symbols),
        start_ms=uni.start_ms,
        end_ms=uni.end_ms,
        oos_start_ms=oos_start,
        oos_end_ms=oos_end,
        folds=n_folds,
        elapsed_s=time.perf_counter() - started,
    )


def run_ablation_loop(store: CandleStore, **args: Unpack[LoopArgs]) -> AblationResult:
    """The ablation on stored data: the universe and dataset as
    :func:`atra.research.evaluation.loop.run_research_loop` builds them (every available
    feature, the same keyword arguments), then :func:`run_ablation`."""
    started = time.perf_counter()
    args = checked_loop_args(args)
    settings, progress = args["settings"], args.get("progress")
    dataset = stored_dataset(store, args, settings, progress)
    result = run_ablation(
        dataset, settings, args["backtest_config"], runs_dir=args["runs_dir"], seed=args["seed"],
        n_trials=args.get("n_trials", 1), n_jobs=args.get("n_jobs", 2), progress=progress,
    )  # fmt: skip
    return replace(result, elapsed_s=time.perf_counter() - started)
