"""The whole of ``atra search`` as one library call: :func:`run_search`.

Stored data -> the universe of the search span (everything before ``final_from`` when it is
given: the trials never read a bar of the final span) -> the study's trials
(:mod:`atra.research.search`) -> the report from the storage
(:mod:`atra.research.search_report`) -> with ``final_from``, the best configuration walked
forward over the whole range, its test windows from ``final_from`` on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atra.adapters.store import CandleStore
from atra.config import AtraConfig
from atra.core.features.context import SeriesInput
from atra.core.frames import ms_to_iso
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError
from atra.research.backends import BackendSpec, open_backend
from atra.research.pipeline import load_universe
from atra.research.resample import check_timeframes, warmup_bars_for
from atra.research.search import TrialCallback, open_study, run_trials
from atra.research.search_report import FinalSpan, SearchReport, summarize
from atra.research.search_space import SearchSpace, apply_params, timeframe_of
from atra.research.search_trials import TrialRunner, WalkForwardOverrides

__all__ = ["SearchRequest", "SearchRun", "run_search"]


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """What to search, on which data, into which study."""

    exchange: str
    symbols: tuple[str, ...]
    market: Market
    timeframe: Timeframe
    start_ms: int | None
    end_ms: int | None
    storage_path: Path
    study_name: str = "atra-search"
    n_trials: int = 40
    sampler: str = "tpe"
    seed: int = 7
    n_jobs: int = 2
    backend: BackendSpec = dataclasses.field(default_factory=BackendSpec)
    """Where the fold fits run (not part of the study's identity: results do not depend on
    it)."""
    final_from_ms: int | None = None
    pbo_splits: int = 16
    walkforward: WalkForwardOverrides = dataclasses.field(default_factory=WalkForwardOverrides)

    def identity(self, base: AtraConfig) -> dict[str, Any]:
        """What a resumed study must share with the stored one."""
        return {
            "exchange": self.exchange,
            "symbols": list(self.symbols),
            "market": self.market.value,
            "timeframe": self.timeframe.value,
            "start_ms": self.start_ms,
            "end_ms": self.search_end_ms,
            "seed": self.seed,
            "walkforward": dataclasses.asdict(self.walkforward),
            "base_config": base.model_dump(
                mode="json", include={"strategy", "meta", "costs", "risk"}
            ),
        }

    @property
    def search_end_ms(self) -> int | None:
        """End (exclusive) of the data the trials see."""
        return self.final_from_ms if self.final_from_ms is not None else self.end_ms


@dataclass(frozen=True, slots=True, eq=False)
class SearchRun:
    report: SearchReport
    ran: int
    """Trials this call ran (the rest were in the storage already)."""
    stale_marked_failed: int
    dataset_builds: int
    dataset_hits: int


def run_search(
    store: CandleStore,
    base: AtraConfig,
    space: SearchSpace,
    request: SearchRequest,
    *,
    series: Sequence[SeriesInput] = (),
    on_trial: TrialCallback | None = None,
) -> SearchRun:
    """Run (or resume) the study of ``request`` and report on it."""
    req = request
    if req.final_from_ms is not None:
        if req.start_ms is not None and req.final_from_ms <= req.start_ms:
            raise ConfigError(f"--final-from {ms_to_iso(req.final_from_ms)} is not after --start")
        if req.end_ms is not None and req.final_from_ms >= req.end_ms:
            raise ConfigError(f"--final-from {ms_to_iso(req.final_from_ms)} is not before --end")
    if req.walkforward.first_test_ms is not None:
        raise ConfigError("search: the first test window follows the data (no --first-test)")

    check_timeframes(req.timeframe, space.timeframes(), source=f"{space.source}: timeframe")
    warmup = warmup_bars_for(req.timeframe, space.timeframes())  # for the coarsest searched

    def universe(end_ms: int | None) -> Any:
        return load_universe(store, req.exchange, list(req.symbols), req.market, req.timeframe,
                             req.start_ms, end_ms, warmup_bars=warmup, series=series)  # fmt: skip

    with open_backend(req.backend, n_jobs=req.n_jobs):
        return _run(req, base, space, universe, on_trial)


def _run(
    req: SearchRequest,
    base: AtraConfig,
    space: SearchSpace,
    universe: Any,
    on_trial: TrialCallback | None,
) -> SearchRun:
    runner = TrialRunner(
        universe(req.search_end_ms), req.market, req.walkforward, seed=req.seed, n_jobs=req.n_jobs
    )
    handle = open_study(
        req.storage_path,
        req.study_name,
        sampler=req.sampler,
        space=space,
        seed=req.seed,
        identity=req.identity(base),
    )
    try:
        ran = run_trials(handle, runner, base, space, req.n_trials, on_trial=on_trial)
        report = summarize(handle.study, req.timeframe, pbo_splits=req.pbo_splits)
    finally:
        handle.close()
    if req.final_from_ms is not None:
        full = universe(req.end_ms)
        pinned = dataclasses.replace(req.walkforward, first_test_ms=req.final_from_ms)
        final_runner = TrialRunner(full, req.market, pinned, seed=req.seed, n_jobs=req.n_jobs)
        best = report.best_params
        outcome = final_runner.run(apply_params(base, best), timeframe_of(best))
        report = report.with_final(FinalSpan(outcome.oos_start_ms, outcome.oos_end_ms, outcome))
    return SearchRun(report, ran, handle.stale_marked_failed, runner.dataset_builds,
                     runner.dataset_hits)  # fmt: skip
