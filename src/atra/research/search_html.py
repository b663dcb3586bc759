"""The search page of a study (``atra search --html PATH``): :func:`search_page` assembles it from
the study's storage and its :class:`~atra.research.search_report.SearchReport`,
:func:`atra.research.report.search_page.write_search_page` writes it.

Parameter importances are optuna's fANOVA (:class:`optuna.importance.FanovaImportanceEvaluator`,
seeded; what ``optuna.importance.get_param_importances`` runs with that evaluator) over the
scored trials' OOS Sharpe, normalised here so they sum to 1. None are shown
(with the reason) when fewer than 2 trials were scored, when every searched parameter has a
single value, or when the scores do not vary (optuna would then spread 1 evenly over the
parameters: an importance nobody measured). A parameter with a single possible value is not
assessed and is named in the note.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.importance import FanovaImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState

from atra.core.frames import ms_to_iso
from atra.research.report.search_page import (
    SearchPage,
    SpanFigures,
    TrialRow,
    write_search_page,
)
from atra.research.search_report import SearchReport

__all__ = ["IMPORTANCE_TREES", "param_importances", "search_page", "write_study_page"]

IMPORTANCE_TREES: Final[int] = 64
"""Trees of the fANOVA forest (optuna's default)."""


def _scored(study: optuna.Study) -> list[FrozenTrial]:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in done if t.value is not None]


def _distributions(trials: list[FrozenTrial]) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for t in trials:
        for k, d in t.distributions.items():
            out.setdefault(k, d)
    return out


def param_importances(study: optuna.Study, *, seed: int) -> tuple[dict[str, float] | None, str]:
    """``(importances summing to 1, most important first, or None; a note saying how they
    were computed or why there are none)``."""
    scored = _scored(study)
    if len(scored) < 2:
        return None, (
            f"{len(scored)} scored trial(s); parameter importances need at least 2 "
            "(nothing is estimated from fewer)"
        )
    dists = _distributions(scored)
    single = sorted(k for k, d in dists.items() if d.single())
    assessed = sorted(k for k in dists if k not in single)
    single_note = f" Not assessed (a single possible value): {', '.join(single)}." if single else ""
    if not assessed:
        return None, "every searched parameter has a single possible value." + single_note
    flat = (
        f"the {len(scored)} scored trials' OOS Sharpes do not vary with the parameters: "
        "there is no variance to attribute." + single_note
    )
    if len({float(t.value or 0.0) for t in scored}) < 2:
        return None, flat
    evaluator = FanovaImportanceEvaluator(n_trees=IMPORTANCE_TREES, seed=seed)
    raw = evaluator.evaluate(study, params=assessed)  # not normalised: a zero sum shows
    total = float(sum(raw.values()))
    if not (math.isfinite(total) and total > 0.0):
        return None, flat
    shares = {k: float(v) / total for k, v in raw.items()}
    ordered = dict(sorted(shares.items(), key=lambda kv: (-kv[1], kv[0])))
    note = (
        f"fANOVA ({IMPORTANCE_TREES} trees, seed {seed}) over the OOS Sharpe of "
        f"{len(scored)} scored trials, normalised to sum to 1. With few trials these are "
        "rough." + single_note
    )
    return ordered, note


def _describe(d: BaseDistribution) -> str:
    if isinstance(d, CategoricalDistribution):
        return "one of " + ", ".join(repr(c) for c in d.choices)
    if isinstance(d, IntDistribution | FloatDistribution):
        step = f" step {d.step}" if d.step is not None else ""
        log = " (log)" if d.log else ""
        return f"{d.low} .. {d.high}{step}{log}"
    return repr(d)


def _when(ms: Any, empty: str) -> str:
    return empty if ms is None else ms_to_iso(int(ms))


def _searched_rows(study: optuna.Study, report: SearchReport) -> tuple[tuple[str, str], ...]:
    ident: Mapping[str, Any] = study.user_attrs.get("identity", {})
    symbols = ", ".join(ident.get("symbols", []))
    start = _when(ident.get("start_ms"), "first stored bar")
    end = _when(ident.get("end_ms"), "last stored bar")
    counts = f"{report.n_complete} / {report.n_pruned} / {report.n_failed}"
    wf = ", ".join(f"{k}={v}" for k, v in ident.get("walkforward", {}).items())
    rows: list[tuple[str, str]] = [
        ("study", report.study_name),
        ("data", f"{ident.get('exchange', '?')} {ident.get('market', '?')}: {symbols}"),
        (
            "bars read",
            f"{ident.get('timeframe', '?')} (a searched timeframe is resampled from them)",
        ),
        ("search span", f"{start} .. {end} (end exclusive)"),
        ("last bar a trial could read", ms_to_iso(report.search_data_end_ms)),
        ("sampler / seed", f"{ident.get('sampler', '?')} / {ident.get('seed', '?')}"),
        ("walk-forward (None: the config's)", wf),
        ("trials in storage", f"{report.n_trials}"),
        ("scored / pruned / failed", counts),
        ("scored without a trade (Sharpe 0)", f"{report.n_flat}"),
    ]
    trials = study.get_trials(deepcopy=False)
    for key, dist in _distributions(trials).items():
        rows.append((f"searched: {key}", _describe(dist)))
    return tuple(rows)


def _row(t: FrozenTrial) -> TrialRow:
    ua = t.user_attrs
    scored = t.state is TrialState.COMPLETE and t.value is not None
    reason = str(ua.get("pruned_reason") or "")
    if t.state is TrialState.FAIL:
        reason = "failed: the run was killed during the trial (its params were queued again)"
    trades = ua.get("n_trades")
    return TrialRow(
        number=t.number,
        state=t.state.name,
        params=dict(t.params),
        sharpe=float(t.value) if scored and t.value is not None else None,
        n_trades=int(trades) if scored and trades is not None else None,
        timeframe=None if ua.get("timeframe") is None else str(ua["timeframe"]),
        pruned_reason=reason,
    )


def search_page(study: optuna.Study, report: SearchReport, *, seed: int) -> SearchPage:
    """The search page of ``study`` (read from its storage) and its ``report``."""
    importances, note = param_importances(study, seed=seed)
    ua = study.trials[report.best_number].user_attrs
    best = SpanFigures(
        start_ms=int(ua["oos_start_ms"]),
        end_ms=int(ua["oos_end_ms"]),
        sharpe=report.best_sharpe,
        total_return=float(ua["total_return"]),
        max_drawdown=float(ua["max_drawdown"]),
        n_trades=int(ua["n_trades"]),
    )
    final = None
    if report.final is not None:
        o = report.final.outcome
        final = SpanFigures(
            start_ms=report.final.start_ms,
            end_ms=report.final.end_ms,
            sharpe=o.sharpe,
            total_return=o.total_return,
            max_drawdown=o.max_drawdown,
            n_trades=o.n_trades,
        )
    return SearchPage(
        study_name=report.study_name,
        searched=_searched_rows(study, report),
        annualization=report.annualization,
        trials=tuple(_row(t) for t in study.get_trials(deepcopy=False)),
        best_number=report.best_number,
        best_params=dict(report.best_params),
        deflated=report.deflated,
        pbo=report.pbo,
        pbo_note=report.pbo_note,
        best=best,
        final=final,
        importances=importances,
        importance_note=note,
    )


def write_study_page(
    storage_path: Path, study_name: str, report: SearchReport, out: Path, *, seed: int
) -> Path:
    """Read ``study_name`` from the SQLite file ``storage_path`` and write its search page to
    ``out``; return the path."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{storage_path}")
    return write_search_page(search_page(study, report, seed=seed), out)
