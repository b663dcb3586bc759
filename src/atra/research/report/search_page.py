"""The search page: one self-contained HTML file on what a search found and what it is worth
after the search (:func:`render_search_html`, :func:`write_search_page`).

Built from a :class:`SearchPage` (assembled from the study's storage by
:func:`atra.research.search_html.search_page`): what was searched, the deflated Sharpe ratio with
the trial count and the Sharpe variance it used, the PBO with its CSCV splits, the best trial
on the final span beside its search score, the best-so-far curve, the parameter importances
(or why there are none) and every trial (number, state, params, OOS Sharpe, trades, why it was
pruned). The same honesty rules as the run report: out-of-sample figures only, costs included,
the annualisation stated. plotly.js is inlined once, as in :mod:`~atra.research.report.page`.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import plotly.graph_objects as go

from atra.core.frames import ms_to_iso
from atra.core.stats.overfitting import DeflatedSharpe, Overfitting
from atra.research.report.page import (
    SCOPE_SENTENCE,
    _figure_block,
    _table_html,
    html_document,
    write_page,
)

__all__ = [
    "BEST_COLOR",
    "SEARCH_SECTIONS",
    "SearchPage",
    "SpanFigures",
    "TrialRow",
    "best_so_far",
    "render_search_html",
    "write_search_page",
]

BEST_COLOR: Final[str] = "#2ca02c"
_TRIAL_COLOR: Final[str] = "#1f77b4"
_IMPORTANCE_COLOR: Final[str] = "#9467bd"
_SEARCH_CSS: Final[str] = (
    "table.trials td:nth-child(4),table.trials td:nth-child(7){text-align:left}"
    "table.overfitting td:first-child{min-width:420px}"
)
SEARCH_SECTIONS: Final[tuple[tuple[str, str], ...]] = (
    ("searched", "What was searched"),
    ("overfitting", "What the best trial is worth after the search"),
    ("best-so-far", "Best so far"),
    ("importances", "Parameter importances"),
    ("trials", "Trials"),
)


@dataclass(frozen=True, slots=True)
class TrialRow:
    """One trial of the study as the page lists it."""

    number: int
    state: str
    params: Mapping[str, Any]
    sharpe: float | None
    """OOS Sharpe (the trial's score); None unless the trial was scored."""
    n_trades: int | None
    timeframe: str | None
    pruned_reason: str


@dataclass(frozen=True, slots=True)
class SpanFigures:
    """One configuration's out-of-sample figures over a span (after costs)."""

    start_ms: int
    end_ms: int
    sharpe: float
    total_return: float
    max_drawdown: float
    n_trades: int


@dataclass(frozen=True, slots=True)
class SearchPage:
    """Everything the search page shows."""

    study_name: str
    searched: tuple[tuple[str, str], ...]
    """What was searched (data, span, sampler, the space), as label / value rows."""
    annualization: str
    trials: tuple[TrialRow, ...]
    best_number: int
    best_params: Mapping[str, Any]
    deflated: DeflatedSharpe
    pbo: Overfitting | None
    pbo_note: str
    best: SpanFigures
    """The best trial's out-of-sample figures in the search (its search score)."""
    final: SpanFigures | None
    """The best configuration on the final span no trial saw (``--final-from``)."""
    importances: Mapping[str, float] | None
    """Normalised (they sum to 1), most important first; None when unavailable."""
    importance_note: str


def best_so_far(trials: tuple[TrialRow, ...]) -> tuple[list[int], list[float]]:
    """Trial numbers of the scored trials and the best OOS Sharpe up to each."""
    numbers, best = [], []
    top = -math.inf
    for t in sorted(trials, key=lambda r: r.number):
        if t.sharpe is None:
            continue
        top = max(top, t.sharpe)
        numbers.append(t.number)
        best.append(top)
    return numbers, best


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01},
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": 60, "b": 40},
        legend={"orientation": "h", "y": -0.15},
    )
    return fig


def _best_figure(page: SearchPage) -> go.Figure:
    scored = [t for t in page.trials if t.sharpe is not None]
    numbers, best = best_so_far(page.trials)
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=[t.number for t in scored], y=[t.sharpe for t in scored], mode="markers",
        name="trial OOS Sharpe", marker={"color": _TRIAL_COLOR, "size": 9},
    ))  # fmt: skip
    fig.add_trace(go.Scatter(
        x=numbers, y=best, mode="lines", line={"shape": "hv", "color": BEST_COLOR, "width": 4},
        name="best so far",
    ))  # fmt: skip
    fig.update_xaxes(title="trial number")
    fig.update_yaxes(title="OOS Sharpe (annualised, after costs)")
    return _layout(fig, "OOS Sharpe of each scored trial and the best so far", 380)


def _importance_figure(importances: Mapping[str, float]) -> go.Figure:
    names = list(importances)[::-1]  # most important on top
    fig = go.Figure(go.Bar(
        x=[importances[n] for n in names], y=names, orientation="h",
        marker={"color": _IMPORTANCE_COLOR}, name="importance",
    ))  # fmt: skip
    fig.update_xaxes(title="share of the OOS Sharpe's variance (sums to 1)", range=[0, 1])
    return _layout(fig, "Parameter importances (fANOVA)", 120 + 40 * len(names))


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in params.items())


def _overfitting_rows(page: SearchPage) -> list[list[str]]:
    d, pbo = page.deflated, page.pbo
    skew, kurt = _num(d.skew, ".2f"), _num(d.kurtosis, ".2f")
    rows = [
        [f"best trial #{page.best_number}: OOS Sharpe (search score)", _num(d.sharpe)],
        ["trials scored: N of the DSR", f"{d.n_trials}"],
        ["variance of the trials' OOS Sharpes (ddof 1)", _num(d.trials_sharpe_variance, ".4f")],
        [f"E[max Sharpe] of {d.n_trials} unskilled trials", _num(d.expected_max_sharpe)],
        [f"deflated Sharpe ratio (N = {d.n_trials})", _num(d.dsr)],
        ["probabilistic Sharpe ratio (vs 0)", _num(d.psr)],
        [f"returns of the best trial (skew {skew}, kurtosis {kurt})", f"{d.n_obs}"],
        [
            "probability of backtest overfitting (CSCV)",
            "n/a" if pbo is None else f"{pbo.pbo:.3f}",
        ],
        ["CSCV splits (blocks of days)", "n/a" if pbo is None else f"{pbo.n_splits}"],
    ]
    if pbo is not None:
        rows.append(["CSCV combinations / trials", f"{pbo.n_combinations} / {pbo.n_trials}"])
    return rows


def _span(f: SpanFigures) -> str:
    return f"{ms_to_iso(f.start_ms)[:10]} .. {ms_to_iso(f.end_ms)[:10]}"


def _span_cells(x: SpanFigures) -> tuple[str, str, str, str]:
    return (
        _num(x.sharpe),
        _num(x.total_return, ".2%"),
        _num(x.max_drawdown, ".2%"),
        f"{x.n_trades}",
    )


def _final_html(page: SearchPage) -> str:
    b, f = page.best, page.final
    head = ["figure", f"search: best trial #{page.best_number} ({_span(b)})"]
    names = ("OOS Sharpe", "total return", "max drawdown", "trades")
    if f is None:
        rows = [[name, v] for name, v in zip(names, _span_cells(b), strict=True)]
        note = (
            "No final span was held back (--final-from): the search score is the only "
            "out-of-sample figure, and it is the best of the trials."
        )
        return f"<p>{html.escape(note)}</p>" + _table_html(head, rows, "data final")
    rows = [[name, v, w] for name, v, w in zip(names, _span_cells(b), _span_cells(f), strict=True)]
    note = (
        f"Beside the search score, the best configuration walked forward over the whole range, "
        f"its first test window pinned at {ms_to_iso(f.start_ms)[:10]}: its models are "
        "trained before the final span, which no trial read."
    )
    return f"<p>{html.escape(note)}</p>" + _table_html(
        [*head, f"final span {_span(f)}"], rows, "data final"
    )


def _trial_rows(page: SearchPage) -> list[list[str]]:
    return [
        [
            f"{t.number}",
            t.state + (" (best)" if t.number == page.best_number else ""),
            t.timeframe or "",
            _params_text(t.params),
            _num(t.sharpe),
            "" if t.n_trades is None else f"{t.n_trades}",
            t.pruned_reason,
        ]
        for t in sorted(page.trials, key=lambda r: r.number)
    ]


def render_search_html(page: SearchPage) -> str:
    """The search page as one self-contained HTML document."""
    body: dict[str, str] = {}
    body["searched"] = _table_html(["What", "Value"], page.searched, "data setup")
    body["overfitting"] = (
        _table_html(["figure", "value"], _overfitting_rows(page), "data overfitting")
        + f"<p>PBO: {html.escape(page.pbo_note)}</p>"
        + _final_html(page)
    )
    body["best-so-far"] = _figure_block("best-so-far", _best_figure(page))
    if page.importances is None:
        body["importances"] = (
            f'<p class="importances-unavailable">Importances unavailable: '
            f"{html.escape(page.importance_note)}</p>"
        )
    else:
        rows = [[k, f"{v:.3f}"] for k, v in page.importances.items()]
        body["importances"] = (
            _figure_block("importances", _importance_figure(page.importances))
            + f"<p>{html.escape(page.importance_note)}</p>"
            + _table_html(["parameter", "importance"], rows, "data importances")
        )
    body["trials"] = _table_html(
        ["trial", "state", "timeframe", "params", "OOS Sharpe", "trades", "pruned because"],
        _trial_rows(page),
        "data trials",
    )
    title = f"ATRA search {page.study_name}"
    scope = (
        f"{SCOPE_SENTENCE} Every trial is a purged, embargoed walk-forward scored on its test "
        "windows only; the DSR and the PBO are computed from every scored trial in the storage."
    )
    header = (
        f"<h1>{html.escape(title)}</h1>\n"
        f'<p class="scope">{html.escape(scope)}</p>\n'
        f'<p class="annualization">{html.escape(page.annualization)}; no risk-free rate; '
        "returns are per-bar, 24/7; the PBO reads daily returns.</p>"
    )
    return html_document(title, header, SEARCH_SECTIONS, body, css=_SEARCH_CSS)


def write_search_page(page: SearchPage, out: Path) -> Path:
    """Write the page to ``out`` (atomically); return the path."""
    return write_page(Path(out), render_search_html(page))
