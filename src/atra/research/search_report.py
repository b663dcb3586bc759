"""What a search found, and what it is worth after the search: the report of ``atra search``.

Read from the study's storage (never from a count typed in): the number of scored trials ``N``
and the variance of their out-of-sample Sharpe ratios give the best trial's deflated Sharpe
ratio (:func:`atra.core.stats.overfitting.deflated_sharpe`, its skewness, kurtosis and length
from its own bar returns); the trials' daily OOS returns, on the days every trial covers, give
the probability of backtest overfitting by CSCV
(:func:`atra.core.stats.overfitting.probability_of_backtest_overfitting`). With a final span
(``--final-from``) the best configuration is walked forward over the whole range with its first
test window pinned at the span's start: its models are trained on data before the span only,
and it trades the span that no trial saw.

Every trial's Sharpe is annualised with ``sqrt(bars per 365-day year)`` of its own bar size
(a searched ``timeframe``: sqrt(8760) at 1h, sqrt(2190) at 4h, sqrt(365) at 1d); the deflated
Sharpe ratio de-annualises with the best trial's bar size, the one its returns were measured
on. The PBO matrix holds daily returns (the equity's last mark of each UTC day) whatever the
bar size, so trials of different timeframes share its rows.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState
from rich.markup import escape
from rich.table import Table

from atra.core.frames import ms_to_iso
from atra.core.stats.overfitting import (
    DeflatedSharpe,
    Overfitting,
    deflated_sharpe,
    probability_of_backtest_overfitting,
)
from atra.core.types import Timeframe
from atra.errors import DataError
from atra.research.search_trials import TrialOutcome, finite_or_none

__all__ = ["FinalSpan", "SearchReport", "summarize"]


@dataclass(frozen=True, slots=True, eq=False)
class FinalSpan:
    """The best configuration on the span no trial saw."""

    start_ms: int
    end_ms: int
    outcome: TrialOutcome


@dataclass(frozen=True, slots=True, eq=False)
class SearchReport:
    study_name: str
    n_trials: int
    """Trials stored in the study, every state."""
    n_complete: int
    """Scored trials: the ``N`` of the deflated Sharpe ratio and the columns of the PBO."""
    n_pruned: int
    n_failed: int
    n_flat: int
    """Scored trials that took no trade (Sharpe undefined, scored 0)."""
    best_number: int
    best_params: dict[str, Any]
    best_sharpe: float
    deflated: DeflatedSharpe
    pbo: Overfitting | None
    pbo_note: str
    pbo_start_ms: int | None
    pbo_days: int
    search_data_end_ms: int
    best_timeframe: Timeframe
    """Bar size of the best trial (its Sharpe and DSR are annualised with it)."""
    final: FinalSpan | None = None

    @property
    def annualization(self) -> str:
        """How the best trial's Sharpe is annualised, in words."""
        tf = self.best_timeframe
        return (
            f"Sharpe annualised x sqrt({tf.bars_per_year}) ({tf} bars, 365-day year), "
            "each trial with its own bar size"
        )

    def with_final(self, final: FinalSpan) -> SearchReport:
        return dataclasses.replace(self, final=final)

    def to_dict(self) -> dict[str, Any]:
        d = self.deflated
        out: dict[str, Any] = {
            "study": self.study_name,
            "n_trials": self.n_trials,
            "n_complete": self.n_complete,
            "n_pruned": self.n_pruned,
            "n_failed": self.n_failed,
            "n_flat": self.n_flat,
            "trials_sharpe_variance": finite_or_none(d.trials_sharpe_variance),
            "best_trial": self.best_number,
            "best_params": self.best_params,
            "best_oos_sharpe": finite_or_none(self.best_sharpe),
            "expected_max_sharpe": finite_or_none(d.expected_max_sharpe),
            "dsr": finite_or_none(d.dsr),
            "dsr_n_trials": d.n_trials,
            "psr": finite_or_none(d.psr),
            "pbo": None if self.pbo is None else self.pbo.pbo,
            "pbo_splits": None if self.pbo is None else self.pbo.n_splits,
            "pbo_days": self.pbo_days,
            "pbo_note": self.pbo_note,
            "search_data_end": ms_to_iso(self.search_data_end_ms),
            "best_timeframe": self.best_timeframe.value,
            "annualization": self.annualization,
            "final": None,
        }
        if self.final is not None:
            o = self.final.outcome
            out["final"] = {
                "start": ms_to_iso(self.final.start_ms),
                "end": ms_to_iso(self.final.end_ms),
                "sharpe": finite_or_none(o.sharpe),
                "total_return": o.total_return,
                "max_drawdown": o.max_drawdown,
                "n_trades": o.n_trades,
            }
        return out

    def table(self) -> Table:
        d = self.deflated
        t = Table(title=f"search {self.study_name}: out of sample, after costs")
        t.add_column("figure")
        t.add_column("value", justify="right")

        def num(x: float | None, fmt: str = ".3f") -> str:
            return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)

        rows = [
            ("trials in storage", f"{self.n_trials}"),
            ("scored / pruned / failed", f"{self.n_complete} / {self.n_pruned} / {self.n_failed}"),
            ("scored without a trade (Sharpe 0)", f"{self.n_flat}"),
            ("variance of trial Sharpes", num(d.trials_sharpe_variance)),
            (
                f"best trial #{self.best_number} ({self.best_timeframe}): OOS Sharpe",
                num(self.best_sharpe),
            ),
            (f"E[max Sharpe] of {d.n_trials} unskilled trials", num(d.expected_max_sharpe)),
            (f"DSR (N = {d.n_trials})", num(d.dsr)),
            ("PSR (vs 0)", num(d.psr)),
            (
                "PBO (CSCV)",
                "n/a" if self.pbo is None else f"{self.pbo.pbo:.3f} ({self.pbo.n_splits} splits)",
            ),
        ]
        if self.final is not None:
            o = self.final.outcome
            span = f"{ms_to_iso(self.final.start_ms)[:10]}..{ms_to_iso(self.final.end_ms)[:10]}"
            rows += [
                (f"final span {span}: Sharpe", num(o.sharpe)),
                ("final span: total return", num(o.total_return, ".2%")),
                ("final span: trades", f"{o.n_trades}"),
            ]
        for k, v in rows:
            t.add_row(escape(k), escape(v))
        t.caption = escape(
            f"best params: {self.best_params}; PBO: {self.pbo_note}; {self.annualization}"
        )
        return t


def _daily_matrix(trials: list[optuna.trial.FrozenTrial]) -> pd.DataFrame:
    cols = {}
    for t in trials:
        start = t.user_attrs.get("daily_start_ms")
        values = t.user_attrs.get("daily_returns") or []
        if start is None or not values:
            cols[t.number] = pd.Series(dtype=np.float64)
            continue
        days = int(start) + np.arange(len(values), dtype=np.int64) * 86_400_000
        cols[t.number] = pd.Series(values, index=days, dtype=np.float64)
    return pd.DataFrame(cols).dropna(how="any")  # the days every trial covers


def summarize(study: optuna.Study, timeframe: Timeframe, *, pbo_splits: int) -> SearchReport:
    """The report of ``study`` from its storage; ``timeframe``: the bars read (a trial that
    did not record its own bar size ran on them)."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state is TrialState.COMPLETE and t.value is not None]
    if not done:
        reasons = [t.user_attrs.get("pruned_reason") for t in trials if t.user_attrs]
        first = next((r for r in reasons if r), "no trial finished")
        raise DataError(f"search: no scored trial in study {study.study_name!r} ({first})")
    best = max(done, key=lambda t: (float(t.value or 0.0), -t.number))
    sharpes = np.array([float(t.value or 0.0) for t in done])
    ua = best.user_attrs
    best_tf = Timeframe.parse(str(ua.get("timeframe", timeframe.value)))
    skew, kurt = ua.get("skew"), ua.get("kurtosis")
    deflated = deflated_sharpe(
        float(best.value or 0.0),
        n_obs=int(ua["n_returns"]),
        skew=math.nan if skew is None else float(skew),
        kurtosis=math.nan if kurt is None else float(kurt),
        trial_sharpes=sharpes,
        periods_per_year=best_tf.bars_per_year,
    )
    matrix = _daily_matrix(done)
    pbo: Overfitting | None = None
    if len(done) < 2:
        note = "needs >= 2 scored trials"
    elif len(matrix) < 2 * pbo_splits:
        note = f"{len(matrix)} common days, fewer than 2 x {pbo_splits} splits"
    else:
        pbo = probability_of_backtest_overfitting(matrix.to_numpy(), n_splits=pbo_splits)
        note = (
            f"{pbo.n_combinations} combinations over {len(matrix)} common OOS days "
            f"from {ms_to_iso(int(matrix.index[0]))[:10]}"
        )
    ends = [int(t.user_attrs["data_end_ms"]) for t in done]
    return SearchReport(
        study_name=study.study_name,
        n_trials=len(trials),
        n_complete=len(done),
        n_pruned=sum(t.state is TrialState.PRUNED for t in trials),
        n_failed=sum(t.state is TrialState.FAIL for t in trials),
        n_flat=sum(not t.user_attrs.get("sharpe_defined", True) for t in done),
        best_number=best.number,
        best_params=dict(best.params),
        best_sharpe=float(best.value or 0.0),
        deflated=deflated,
        pbo=pbo,
        pbo_note=note,
        pbo_start_ms=int(matrix.index[0]) if len(matrix) else None,
        pbo_days=len(matrix),
        search_data_end_ms=max(ends),
        best_timeframe=best_tf,
    )
