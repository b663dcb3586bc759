"""The research loop and its last step: :func:`run_research_loop` (stored data -> dataset ->
walk-forward -> evaluation) and :func:`evaluate_walkforward`, the out-of-sample evaluation.

The evaluation measures the OOS span (:mod:`atra.research.evaluation.oos`) only, in three
legs on one time grid:

- **primary** (``primary``): every OOS primary event.
- **meta-filtered** (``filtered``): the same events, traded only when the model trained before
  their fold said ``take`` (``p_take >= threshold``). Both legs use the same backtest settings
  (sizing, limits, costs), so the difference is the filter alone.
- **buy-and-hold** (``buy_hold``): :mod:`atra.research.evaluation.buy_hold`.

A leg whose equity reaches zero is liquidated
(:func:`~atra.research.runrecord.legs.leg_from_backtest`,
:class:`~atra.research.evaluation.buy_hold.BuyHold`): 0 from that bar on, its statistics
measured on that curve, the run carrying on. The legs go to
:func:`atra.research.runrecord.directory.write_run` (run directory, content-derived run id,
trades hashes, what was run) and :func:`atra.research.report.page.render_report` (HTML report);
statistics are annualised with ``sqrt(bars_per_year)`` of the bar size (365-day year).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Final, Required, TypedDict, Unpack, get_origin, get_type_hints

import numpy as np

from atra.adapters.store import CandleStore
from atra.core.backtest.engine import BacktestConfig, run_backtest
from atra.core.features.context import SeriesInput
from atra.core.meta import MetaParams
from atra.core.types import Market, Timeframe
from atra.research.evaluation.buy_hold import BUY_HOLD_RULE, buy_and_hold
from atra.research.evaluation.oos import (
    PREDICTION_COLUMNS,
    oos_candles,
    oos_events,
    oos_funding,
    rebased_events,
)
from atra.research.evaluation.result import Evaluation, leg_figures
from atra.research.evaluation.settings import data_label_of, run_setup, universe_hash
from atra.research.pipeline import (
    ResearchDataset,
    ResearchSettings,
    WalkForwardConfig,
    WalkForwardResult,
    build_dataset,
    load_universe,
    run_walkforward,
    spec_to_dict,
)
from atra.research.report.page import render_report
from atra.research.runrecord.directory import read_run, write_run
from atra.research.runrecord.hashes import hash_config
from atra.research.runrecord.legs import leg_from_backtest

__all__ = [
    "LoopArgs",
    "ProgressFn",
    "StageProgress",
    "UniverseArgs",
    "checked_loop_args",
    "evaluate_walkforward",
    "plain",
    "run_research_loop",
    "stage_progress",
    "stored_dataset",
]

ProgressFn = Callable[[int, int, str], None]
StageProgress = Callable[[str, int, int, str], None]
"""``(stage, done, total, item)``; stages: ``dataset``, ``walk-forward``, ``evaluation``."""
_STAGES: Final[int] = 5


def plain(value: Any) -> Any:
    """JSON-ready: NaN -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_walkforward(
    dataset: ResearchDataset,
    wf: WalkForwardResult,
    backtest_config: BacktestConfig,
    *,
    runs_dir: Path,
    wf_config: WalkForwardConfig,
    meta_params: MetaParams,
    seed: int,
    n_trials: int = 1,
    notes: Mapping[str, Any] | None = None,
    render: bool = True,
    progress: ProgressFn | None = None,
) -> Evaluation:
    """Backtest the OOS events of ``wf`` primary-only and meta-filtered, add equal-weight
    buy-and-hold, write the run record under ``runs_dir`` and (``render``) its HTML report.

    ``n_trials`` is the number of configurations tried before this one (for the DSR).
    The same inputs give the same run id and trades hashes."""
    uni = dataset.universe
    tf: Timeframe = uni.timeframe

    def step(k: int, what: str) -> None:
        if progress is not None:
            progress(k, _STAGES, what)

    oos = oos_events(dataset, wf)
    candles, offsets = oos_candles(uni, oos.start_ms)
    funding = oos_funding(uni, candles)
    markets = {s: uni.market for s in candles}
    events = rebased_events(oos.events, offsets)
    step(1, "backtest primary")
    primary = run_backtest(
        candles,
        events,
        # every OOS event; no p(take) without the filter: the fixed fraction
        replace(backtest_config, decision_column=None, probability_column=None),
        funding=funding,
        markets=markets,
        timeframe=tf,
    )
    step(2, "backtest filtered")
    filtered = run_backtest(
        candles,
        events,
        replace(backtest_config, decision_column="take"),  # the fold model's decision
        funding=funding,
        markets=markets,
        timeframe=tf,
    )
    step(3, "buy-and-hold")
    leg_p = leg_from_backtest("primary", primary)
    leg_f = leg_from_backtest("filtered", filtered)
    grid = np.asarray(leg_p.equity.index, dtype=np.int64)
    initial = backtest_config.initial_equity
    bh = buy_and_hold(candles, grid[1:], initial, backtest_config.costs, funding=funding)
    leg_b = bh.leg("buy_hold", int(grid[0]), initial)

    config = plain(
        {
            "universe": {
                "exchange": uni.exchange,
                "market": uni.market.value,
                "timeframe": tf.value,
                "symbols": list(uni.symbols),
                "start_ms": uni.start_ms,
                "end_ms": uni.end_ms,
            },
            "features": list(dataset.bar_features),
            "signal_spec": spec_to_dict(dataset.signal_spec),
            "exit_spec": spec_to_dict(dataset.exit_spec),
            "walkforward": asdict(wf_config),
            "meta_params": asdict(meta_params),
            "backtest": asdict(backtest_config),
            "buy_hold": BUY_HOLD_RULE,
        }
    )
    data_hash = universe_hash(uni)
    setup = run_setup(dataset, wf, oos, backtest_config, wf_config, symbols=list(candles),
                      data_hash=data_hash, config_hash=hash_config(config))  # fmt: skip
    all_metrics = wf.metrics.loc["all"].to_dict() if "all" in wf.metrics.index else {}
    run_notes: dict[str, Any] = {
        "oos_start_ms": oos.start_ms,
        "oos_end_ms": oos.end_ms,
        "folds": len(wf.folds),
        "oos_events": len(oos.events),
        "oos_events_taken_by_meta": oos.n_take,
        "oos_events_without_decision": oos.without_decision,
        "excluded_incomplete": wf.excluded_incomplete,
        "untested_training_warmup": wf.untested,
        "sizing": (
            "fixed-fractional risk per trade, same for primary and filtered"
            if backtest_config.probability_column is None
            else "primary: fixed-fractional risk per trade; filtered: "
            f"{backtest_config.sizing.kelly_multiplier:g} x Kelly from p(take), 2% cap"
        ),
        "buy_hold": BUY_HOLD_RULE,
        "blocks_by_guard": {
            "primary": primary.blocks_by_guard(),
            "filtered": filtered.blocks_by_guard(),
        },
        "buy_hold_costs": {"fees": bh.fees, "slippage": bh.slippage, "funding": bh.funding},
        "walkforward_oos_metrics": all_metrics,
        **dict(notes or {}),
    }
    step(4, "run record")
    preds = oos.events.loc[:, [c for c in PREDICTION_COLUMNS if c in oos.events.columns]]
    run_dir = write_run(
        runs_dir,
        legs=[leg_p, leg_f, leg_b],
        timeframe=tf,
        config=config,
        data_hash=data_hash,
        seed=seed,
        data_label=data_label_of(uni.exchange),
        oos_predictions=preds.reset_index(drop=True),
        n_trials=n_trials,
        notes=plain(run_notes),
        setup=setup,
    )
    run = read_run(run_dir)
    step(5, "report")
    report = render_report(run) if render else None
    legs = run.metrics["legs"]
    figures = {
        "primary": leg_figures(legs["primary"], None),
        "filtered": leg_figures(legs["filtered"], None),
        "buy_hold": leg_figures(legs["buy_hold"], bh),
    }
    return Evaluation(
        run_dir,
        report,
        run,
        oos,
        {"primary": primary, "filtered": filtered},
        bh,
        figures,
    )


class UniverseArgs(TypedDict, total=False):
    """What to read from the store (:func:`atra.research.pipeline.load_universe`); the range
    and ``series`` default to everything stored and none."""

    exchange: Required[str]
    symbols: Required[Sequence[str]]
    market: Required[Market]
    timeframe: Required[Timeframe]
    start_ms: int | None
    end_ms: int | None
    series: Sequence[SeriesInput]


class LoopArgs(UniverseArgs, total=False):
    """The keyword arguments of a research loop on stored data (:func:`run_research_loop`,
    :func:`atra.research.ablation.run_ablation_loop`): the universe, the settings, where the
    run records go, the LightGBM ``seed``; ``n_trials`` (1), ``n_jobs`` (2) and ``progress``
    (none) as :func:`evaluate_walkforward` and :func:`run_walkforward` take them."""

    settings: Required[ResearchSettings]
    backtest_config: Required[BacktestConfig]
    runs_dir: Required[Path]
    seed: Required[int]
    n_trials: int
    n_jobs: int
    progress: StageProgress | None


def _keys(kind: type) -> tuple[frozenset[str], frozenset[str]]:
    hints = get_type_hints(kind, include_extras=True)
    return frozenset(k for k, t in hints.items() if get_origin(t) is Required), frozenset(hints)


_REQUIRED, _KNOWN = _keys(LoopArgs)


def checked_loop_args(args: LoopArgs) -> LoopArgs:
    """``args`` unchanged when a loop takes them all and has every required one; TypeError
    naming the keyword otherwise, as a signature would (``**args`` alone accepts anything)."""
    unknown = sorted(set(args) - _KNOWN)
    if unknown:
        raise TypeError(f"research loop: unexpected keyword argument {unknown[0]!r}")
    missing = sorted(_REQUIRED - set(args))
    if missing:
        raise TypeError(f"research loop: missing keyword argument {missing[0]!r}")
    return args


def stage_progress(progress: StageProgress | None, name: str) -> ProgressFn:
    """``progress`` reporting as stage ``name`` (nothing when ``progress`` is None)."""

    def update(done: int, total: int, item: str) -> None:
        if progress is not None:
            progress(name, done, total, item)

    return update


def stored_dataset(
    store: CandleStore,
    universe: UniverseArgs,
    settings: ResearchSettings,
    progress: StageProgress | None,
) -> ResearchDataset:
    """The universe read from ``store`` and its dataset (every available feature), reported
    as the stage ``features + labels``."""
    uni = load_universe(
        store,
        universe["exchange"],
        universe["symbols"],
        universe["market"],
        universe["timeframe"],
        universe.get("start_ms"),
        universe.get("end_ms"),
        series=universe.get("series", ()),
    )
    return build_dataset(
        uni, settings.signal, settings.exit, progress=stage_progress(progress, "features + labels")
    )


def run_research_loop(
    store: CandleStore, *, notes: Mapping[str, Any] | None = None, **args: Unpack[LoopArgs]
) -> Evaluation:
    """The whole research loop on stored data: universe -> features, primary signals and labels
    -> walk-forward meta model (``settings.walkforward``, LightGBM seeded with ``seed``) ->
    OOS backtests primary vs filtered vs buy-and-hold -> run record + HTML report."""
    args = checked_loop_args(args)
    settings, progress, seed = args["settings"], args.get("progress"), args["seed"]
    dataset = stored_dataset(store, args, settings, progress)
    meta = replace(settings.meta, seed=seed)
    folds = stage_progress(progress, "walk-forward folds")
    wf = run_walkforward(
        dataset,
        settings.walkforward,
        meta,
        n_jobs=args.get("n_jobs", 2),
        progress=lambda done, total: folds(done, total, f"fold {done}/{total}"),
    )
    return evaluate_walkforward(
        dataset,
        wf,
        args["backtest_config"],
        runs_dir=args["runs_dir"],
        wf_config=settings.walkforward,
        meta_params=meta,
        seed=seed,
        n_trials=args.get("n_trials", 1),
        notes=notes,
        progress=stage_progress(progress, "backtests + report"),
    )
