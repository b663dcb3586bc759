"""A frozen model on a later range: :func:`run_frozen_backtest` (``atra backtest --model``).

A model saved by ``atra train`` decides every primary signal of a range it was not trained on
(out of sample: a range overlapping its training window is refused unless allowed). The
evaluation is the walk-forward one (:func:`atra.research.evaluation.loop.evaluate_walkforward`):
the range is one test window whose "fold model" is the frozen model, and the same legs,
after costs, run record and HTML report follow: primary-only, meta-filtered, buy-and-hold.

**Random-skip control.** The filter takes ``k`` of the ``n`` primary signals. Each control run
draws ``k`` of the same ``n`` signals uniformly at random without replacement (seeded,
``numpy.random.default_rng(seed)``) and backtests them like the primary leg (fixed-fractional
risk). Over the seeds, total return, Sharpe and win rate form a distribution; where the
filter's takes fall in it (percentile) tells whether the filter picks better trades or merely
trades less. The filter's takes are compared at the control's sizing: when the config sizes the
filtered leg by Kelly from p(take), its takes are backtested once more at the fixed fraction
for this comparison (``reference``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from atra.adapters.store import CandleStore
from atra.core.backtest.engine import BacktestConfig, BacktestResult, run_backtest
from atra.core.decision import decide_events
from atra.core.features.context import SeriesInput
from atra.core.frames import ms_to_iso
from atra.core.meta import OOSPredictions, oos_metrics_by_year
from atra.core.types import Market, Timeframe
from atra.core.validation import Fold
from atra.errors import ConfigError, DataError
from atra.research.evaluation.loop import (
    StageProgress,
    UniverseArgs,
    evaluate_walkforward,
    stage_progress,
    stored_dataset,
)
from atra.research.evaluation.oos import oos_candles, oos_events, oos_funding, rebased_events
from atra.research.evaluation.result import Evaluation
from atra.research.pipeline import (
    ResearchDataset,
    ResearchSettings,
    WalkForwardResult,
    load_model_for,
)
from atra.research.runrecord.hashes import normalize_trades
from atra.research.runrecord.legs import leg_from_backtest
from atra.research.runrecord.metrics import leg_metrics

__all__ = [
    "CONTROL_METRICS",
    "ControlFigures",
    "FrozenEvaluation",
    "RandomSkipControl",
    "check_out_of_sample",
    "percentile_of",
    "run_frozen_backtest",
]

CONTROL_METRICS: Final[tuple[str, ...]] = ("total_return", "sharpe", "win_rate")


@dataclass(frozen=True, slots=True)
class ControlFigures:
    """Total return, annualised Sharpe and win rate of one backtest (None: not defined)."""

    total_return: float | None
    sharpe: float | None
    win_rate: float | None

    def get(self, metric: str) -> float | None:
        value: float | None = getattr(self, metric)
        return value


def _figures(name: str, bt: BacktestResult, tf: Timeframe) -> ControlFigures:
    """The figures the run record computes for a leg (:func:`leg_metrics`)."""
    leg = leg_from_backtest(name, bt)
    trades = None if leg.trades is None else normalize_trades(leg.trades, f"leg {name}")
    m = leg_metrics(leg.equity, trades, tf, 1, None)

    def num(v: Any) -> float | None:
        return None if v is None or not math.isfinite(float(v)) else float(v)

    return ControlFigures(
        num(m["returns"]["total_return"]), num(m["returns"]["sharpe"]), num(m["trades"]["win_rate"])
    )


def percentile_of(value: float | None, sample: Sequence[float | None]) -> float | None:
    """Where ``value`` falls in ``sample`` (0..100): the share of values below it, ties counted
    half. None when ``value`` is None or no sample value is defined."""
    xs = [x for x in sample if x is not None]
    if value is None or not xs:
        return None
    below = sum(x < value for x in xs)
    equal = sum(x == value for x in xs)
    return 100.0 * (below + 0.5 * equal) / len(xs)


@dataclass(frozen=True, slots=True)
class RandomSkipControl:
    """The random-skip control runs and the filter's takes at the same sizing."""

    seeds: tuple[int, ...]
    n_signals: int
    n_take: int
    runs: tuple[ControlFigures, ...]
    reference: ControlFigures
    """The filter's takes backtested at the control's (fixed-fractional) sizing."""
    reference_is_filtered_leg: bool
    """True when that is the filtered leg itself (no Kelly sizing)."""

    def spread(self, metric: str) -> tuple[float, float, float] | None:
        """(min, median, max) of ``metric`` over the runs where it is defined."""
        xs = [v for r in self.runs if (v := r.get(metric)) is not None]
        if not xs:
            return None
        return min(xs), statistics.median(xs), max(xs)

    def percentile(self, metric: str) -> float | None:
        return percentile_of(self.reference.get(metric), [r.get(metric) for r in self.runs])

    def notes(self) -> dict[str, Any]:
        """Plain data for the run record."""
        return {
            "rule": "same number of takes as the filter, drawn uniformly without replacement "
            "from the same primary signals; fixed-fractional sizing as the primary leg",
            "seeds": list(self.seeds),
            "signals": self.n_signals,
            "takes": self.n_take,
            "spread_min_median_max": {m: self.spread(m) for m in CONTROL_METRICS},
            "filtered_takes": {m: self.reference.get(m) for m in CONTROL_METRICS},
            "filtered_percentile": {m: self.percentile(m) for m in CONTROL_METRICS},
            "filtered_takes_sizing": "filtered leg"
            if self.reference_is_filtered_leg
            else "filtered takes re-run at the fixed fraction",
        }


@dataclass(frozen=True, slots=True, eq=False)
class FrozenEvaluation:
    """The written run (:class:`Evaluation`), the control and the model's identity."""

    evaluation: Evaluation
    control: RandomSkipControl
    model_id: str
    train_start_ms: int
    train_end_ms: int


def check_out_of_sample(
    model_id: str,
    train_start_ms: int,
    train_end_ms: int,
    start_ms: int,
    end_ms: int | None,
    *,
    allow_overlap: bool,
) -> None:
    """Refuse an evaluation range that overlaps the model's training window (one line naming
    both), unless ``allow_overlap``."""
    overlaps = start_ms <= train_end_ms and (end_ms is None or end_ms > train_start_ms)
    if overlaps and not allow_overlap:
        end = "the data end" if end_ms is None else ms_to_iso(end_ms)
        raise ConfigError(
            f"range {ms_to_iso(start_ms)} .. {end} overlaps the training window of model "
            f"{model_id} ({ms_to_iso(train_start_ms)} .. {ms_to_iso(train_end_ms)}); "
            "pass --allow-overlap to evaluate in sample anyway"
        )


def _frozen_walkforward(
    dataset: ResearchDataset, decided: pd.DataFrame, train: tuple[int, int], start_ms: int
) -> WalkForwardResult:
    """The range as one test window of the frozen model: every event with its decision."""
    n = len(decided)
    preds = dataset.events.copy()
    for col in ("p_take", "threshold", "take"):
        preds[col] = decided[col].to_numpy()
    preds["fold"] = 0
    preds["take"] = preds["take"].astype(bool)
    complete = dataset.complete
    pos = np.flatnonzero(complete)
    frame = pd.DataFrame(
        {
            "pos": np.arange(pos.size, dtype=np.int64),
            "fold": 0,
            "p_take": preds["p_take"].to_numpy(dtype=np.float64)[pos],
            "threshold": preds["threshold"].to_numpy(dtype=np.float64)[pos],
            "take": preds["take"].to_numpy(dtype=bool)[pos],
        }
    )
    ev = dataset.events.iloc[pos]
    metrics = (
        oos_metrics_by_year(
            frame,
            ev["meta_label"].to_numpy(dtype=np.int64),
            ev["t0_ms"].to_numpy(dtype=np.int64),
            ev["ret_net"].to_numpy(dtype=np.float64),
        )
        if pos.size
        else pd.DataFrame()
    )
    times = dataset.events["time_ms"].to_numpy(dtype=np.int64)
    end = int(times.max()) + 1 if n else start_ms + 1
    fold = Fold(0, np.empty(0, np.int64), np.arange(n, dtype=np.int64), train[0], train[1],
                start_ms, end, 0, 0)  # fmt: skip
    empty = pd.DataFrame()
    return WalkForwardResult(
        predictions=preds,
        metrics=metrics,
        folds=[fold],
        oos=OOSPredictions(frame.set_index(pd.Index(pos, name="event")), empty, empty),
        excluded_incomplete=int(n - pos.size),
        untested=0,
        elapsed_s=0.0,
    )


def _control(
    dataset: ResearchDataset,
    wf: WalkForwardResult,
    backtest_config: BacktestConfig,
    seeds: Sequence[int],
) -> RandomSkipControl:
    uni = dataset.universe
    oos = oos_events(dataset, wf)
    candles, offsets = oos_candles(uni, oos.start_ms)
    funding = oos_funding(uni, candles)
    markets = {s: uni.market for s in candles}
    events = rebased_events(oos.events, offsets)
    fixed = replace(backtest_config, decision_column="take", probability_column=None)

    def backtest(take: np.ndarray[Any, np.dtype[np.bool_]]) -> BacktestResult:
        ev = events.copy()
        ev["take"] = take
        return run_backtest(
            candles, ev, fixed, funding=funding, markets=markets, timeframe=uni.timeframe
        )

    filter_take = events["take"].to_numpy(dtype=bool)
    n, k = len(events), int(filter_take.sum())
    runs = []
    for seed in seeds:
        pick = np.zeros(n, dtype=bool)
        pick[np.random.default_rng(seed).choice(n, size=k, replace=False)] = True
        runs.append(_figures(f"control_{seed}", backtest(pick), uni.timeframe))
    reference = _figures("filtered_fixed", backtest(filter_take), uni.timeframe)
    return RandomSkipControl(
        tuple(seeds), n, k, tuple(runs), reference, backtest_config.probability_column is None
    )


def run_frozen_backtest(
    store: CandleStore,
    model_path: Path,
    *,
    exchange: str,
    symbols: Sequence[str],
    market: Market,
    timeframe: Timeframe,
    start_ms: int,
    end_ms: int | None,
    settings: ResearchSettings,
    backtest_config: BacktestConfig,
    runs_dir: Path,
    control_seeds: Sequence[int],
    allow_overlap: bool = False,
    notes: Mapping[str, Any] | None = None,
    progress: StageProgress | None = None,
    series: Sequence[SeriesInput] = (),
) -> FrozenEvaluation:
    """Evaluate the model at ``model_path`` on ``[start_ms, end_ms)`` of the store: legs,
    random-skip control over ``control_seeds``, run record + report under ``runs_dir``."""
    if not control_seeds:
        raise ConfigError("--control-seeds must be >= 1")

    universe = UniverseArgs(
        exchange=exchange,
        symbols=symbols,
        market=market,
        timeframe=timeframe,
        start_ms=start_ms,
        end_ms=end_ms,
        series=series,
    )
    dataset = stored_dataset(store, universe, settings, progress)
    if dataset.events.empty:
        raise DataError(f"backtest: no primary signal from {ms_to_iso(start_ms)} on")
    handle = load_model_for(model_path, dataset)
    from atra.adapters.artifacts import load_model  # the window is in the model's metadata

    window = load_model(model_path, dataset.feature_names).metadata["training_window"]
    train = (int(window["start_ms"]), int(window["end_ms"]))
    check_out_of_sample(handle.model_id, *train, start_ms, end_ms, allow_overlap=allow_overlap)
    decided = decide_events(dataset.events, dataset.X, handle, explain=False)
    wf = _frozen_walkforward(dataset, decided, train, start_ms)
    control = _control(dataset, wf, backtest_config, control_seeds)
    run_notes = {
        "evaluation": "frozen model on a later range (atra backtest)",
        "model_id": handle.model_id,
        "model_training_window_ms": list(train),
        "in_sample_overlap_allowed": allow_overlap,
        "random_skip_control": control.notes(),
        **dict(notes or {}),
    }
    ev = evaluate_walkforward(
        dataset,
        wf,
        backtest_config,
        runs_dir=runs_dir,
        wf_config=replace(settings.walkforward, first_test_ms=start_ms),
        meta_params=handle.model.params,
        seed=settings.meta.seed,
        notes=run_notes,
        progress=stage_progress(progress, "backtests + report"),
    )
    return FrozenEvaluation(ev, control, handle.model_id, *train)
