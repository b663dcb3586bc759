"""The report page: one self-contained HTML file (:func:`render_report`) and the rich table for
the terminal (:func:`terminal_summary`).

The page says what it measures: what was run (market, rule, barriers, costs, sizing, dates,
walk-forward, model ids) in a table at the top, out-of-sample bars only, costs (fees,
slippage, funding) included in every number, the annualisation stated (``Sharpe annualised x
sqrt(8760) (1h bars, 365-day year)``), the data labelled SYNTHETIC or REAL, and every
liquidated leg or holding with its time. Costs are shown as positive amounts paid, in the quote
currency and as a percent of the initial equity per year.

The HTML inlines plotly.js once; each figure's JSON sits in a ``<script
type="application/json" class="atra-figure-data">`` tag next to its ``<div>`` and is drawn
by a few lines of script at the end (no network access needed to view the file).
"""

from __future__ import annotations

import html
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from rich.table import Table
from rich.text import Text

from atra.research.report.figures import (
    costs_figure,
    equity_figure,
    exits_figure,
    monthly_figure,
    pnl_figure,
)
from atra.research.report.tables import (
    blocked_lines,
    blocked_rows,
    costs_rows,
    liquidation_lines,
    metrics_table,
    period_text,
    setup_rows,
    symbol_rows,
)
from atra.research.runrecord.record import LoadedRun

__all__ = [
    "METRICS_NAME",
    "REPORT_NAME",
    "SCOPE_SENTENCE",
    "SECTIONS",
    "TRADES_NAME",
    "combined_trades",
    "html_document",
    "render_html",
    "render_report",
    "terminal_summary",
    "write_page",
]

REPORT_NAME: Final[str] = "report.html"
TRADES_NAME: Final[str] = "trades.csv"
METRICS_NAME: Final[str] = "metrics.json"
SCOPE_SENTENCE: Final[str] = (
    "Out-of-sample only, costs included (fees, slippage, funding and spot shorts' margin "
    "interest are in every number)."
)
SECTIONS: Final[tuple[tuple[str, str], ...]] = (
    ("setup", "What was run"),
    ("metrics", "Metrics"),
    ("blocked", "Signals taken and blocked, by what"),
    ("equity", "Equity and drawdown"),
    ("monthly", "Monthly returns"),
    ("pnl", "Trade P&L distribution"),
    ("exits", "Exits by barrier"),
    ("costs", "Costs"),
    ("symbols", "Per symbol"),
)
_CSS: Final[str] = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1300px;color:#222;padding:0 16px}
h1{margin-bottom:4px}h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
.badge{display:inline-block;padding:3px 10px;border-radius:4px;font-weight:700;color:#fff}
.synthetic{background:#c62828}.real{background:#2e7d32}
.scope{font-weight:600}.meta td{padding:2px 12px 2px 0;font-family:monospace;font-size:13px}
.liquidated{color:#c62828;font-weight:600}
table.data{border-collapse:collapse;font-size:14px}
table.data th,table.data td{border:1px solid #ddd;padding:4px 10px;text-align:right}
table.data th:first-child,table.data td:first-child{text-align:left}
table.data thead th{background:#f3f3f3}
table.setup td{text-align:left}
"""
_DRAW_JS: Final[str] = """
document.querySelectorAll('script.atra-figure-data').forEach(function (s) {
  var spec = JSON.parse(s.textContent);
  Plotly.newPlot(s.dataset.target, spec.data, spec.layout,
                 {responsive: true, displaylogo: false});
});
"""


def _table_html(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure_block(key: str, fig: go.Figure) -> str:
    spec = fig.to_json().replace("</", "<\\/")
    return (
        f'<div id="fig-{key}" class="atra-figure" data-section="{key}"></div>\n'
        f'<script type="application/json" class="atra-figure-data" data-target="fig-{key}">'
        f"{spec}</script>"
    )


def _header_html(run: LoadedRun) -> str:
    rec = run.record
    label = rec.data_label.upper()
    data_note = (
        "SYNTHETIC data: generated prices, not a market record."
        if rec.data_label == "synthetic"
        else "REAL market data."
    )
    years = min(float(m["returns"]["years"]) for m in run.metrics["legs"].values())
    if years < 1.0:
        data_note += (
            f" The period is {years:.2f} years long: CAGR and Calmar extrapolate it to a year."
        )
    liquidated = "".join(
        f'<p class="liquidated">{html.escape(line)}</p>\n' for line in liquidation_lines(run)
    )
    return (
        f"<h1>ATRA run {html.escape(rec.run_id)} "
        f'<span class="badge {html.escape(rec.data_label)}">{label}</span></h1>\n'
        f'<p class="scope">{html.escape(SCOPE_SENTENCE)} {html.escape(data_note)}</p>\n'
        f'<p class="annualization">{html.escape(rec.annualization)}; Sortino and volatility '
        "annualised the same way; no risk-free rate; returns are per-bar, 24/7.</p>\n"
        f"{liquidated}"
    )


def _setup_html(run: LoadedRun) -> str:
    """The "What was run" table (or a note that the run did not record it), then the run's
    identity: id, period, code version, hashes, seed, trials."""
    rec = run.record
    if rec.setup is None:
        setup = "<p>This run did not record what was run (written without a setup).</p>"
    else:
        setup = _table_html(["What", "Value"], setup_rows(rec.setup), "data setup")
    meta = [
        ("run id", rec.run_id),
        ("created", rec.created_utc),
        ("period", period_text(run)),
        ("timeframe", rec.timeframe),
        ("code version", rec.code_version),
        ("config sha256", rec.config_hash),
        ("data sha256", rec.data_hash),
        ("seed", str(rec.seed)),
        ("trials (for the DSR)", str(run.metrics.get("n_trials", 1))),
        *((f"trades sha256 ({leg})", h) for leg, h in rec.trades_sha256.items()),
    ]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in meta)
    return f'{setup}\n<table class="meta">{rows}</table>'


def _blocked_html(run: LoadedRun) -> str:
    """Each leg's signals: taken, and blocked by the meta model, each risk guard (the live
    loop's names and ``[risk]`` keys), the sizing."""
    table = blocked_rows(run)
    if table is None:
        return "<p>This run did not record what became of its signals.</p>"
    note = (
        "Every primary signal of a leg is either taken or blocked by the first stage that "
        "refused it, under the names the live journal uses (blocked_by); buy-and-hold has no "
        "signals."
    )
    return f"<p>{html.escape(note)}</p>" + _table_html(*table, "data blocked")


def render_html(run: LoadedRun) -> str:
    """The report as one self-contained HTML document."""
    figures = {
        "equity": equity_figure(run),
        "monthly": monthly_figure(run),
        "pnl": pnl_figure(run),
        "exits": exits_figure(run),
        "costs": costs_figure(run),
    }
    body: dict[str, str] = {"setup": _setup_html(run)}
    header, rows = metrics_table(run)
    body["metrics"] = _table_html(header, rows, "data metrics")
    body["blocked"] = _blocked_html(run)
    for key, fig in figures.items():
        body[key] = _figure_block(key, fig)
    if not run.trades:
        for key in ("pnl", "exits", "costs"):
            body[key] += "<p>No leg of this run has a trade list.</p>"
    c_header, c_rows = costs_rows(run)
    unit = "per year = paid / initial equity / years of the out-of-sample period"
    body["costs"] += f"<p>Costs as positive amounts paid; {html.escape(unit)}.</p>" + _table_html(
        c_header, c_rows, "data costs"
    )
    s_header, s_rows = symbol_rows(run)
    body["symbols"] = _table_html(s_header, s_rows, "data symbols")
    title = f"ATRA run {run.record.run_id} ({run.record.data_label.upper()})"
    return html_document(title, _header_html(run), SECTIONS, body)


def html_document(
    title: str,
    header: str,
    sections: Sequence[tuple[str, str]],
    body: dict[str, str],
    css: str = "",
) -> str:
    """One self-contained report page: plotly inlined, ``header`` then one ``<section>`` per
    ``(key, title)`` of ``sections`` with ``body[key]``, the figures drawn at load; ``css`` is
    added to the report's style."""
    blocks = "\n".join(
        f'<section id="{key}"><h2>{html.escape(heading)}</h2>\n{body[key]}</section>'
        for key, heading in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}{css}</style>\n"
        f'<script type="text/javascript" id="plotlyjs">{get_plotlyjs()}</script>\n'
        f"</head><body>\n{header}\n{blocks}\n"
        f"<script>{_DRAW_JS}</script>\n</body></html>\n"
    )


def write_page(target: Path, text: str) -> Path:
    """Write ``text`` to ``target`` atomically (a temporary file beside it, then renamed);
    return ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target


def combined_trades(run: LoadedRun) -> pd.DataFrame:
    """Every leg's trades in one frame, a ``leg`` column first."""
    frames = [tr.assign(leg=leg)[["leg", *tr.columns]] for leg, tr in run.trades.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"leg": []})


def render_report(run: LoadedRun, out: Path | None = None) -> Path:
    """Write ``report.html`` (default: in the run directory) with ``trades.csv`` (all legs)
    and ``metrics.json`` beside it; return the HTML path."""
    target = write_page(run.path / REPORT_NAME if out is None else Path(out), render_html(run))
    combined_trades(run).to_csv(target.parent / TRADES_NAME, index=False)
    metrics_src = run.path / METRICS_NAME
    metrics_dst = target.parent / METRICS_NAME
    if metrics_dst.resolve() != metrics_src.resolve():
        shutil.copyfile(metrics_src, metrics_dst)
    return target


def terminal_summary(run: LoadedRun) -> Table:
    """The metrics table for the terminal, legs side by side; the annualisation, the scope and
    every liquidation (leg or holding, with its time) in the caption."""
    rec = run.record
    header, rows = metrics_table(run)
    lines = [f"{rec.annualization}. {SCOPE_SENTENCE}"]
    if rec.setup is not None and rec.setup.sides is not None:
        lines.append(f"Sides: {rec.setup.sides}.")
    caption = "\n".join([*lines, *liquidation_lines(run), *blocked_lines(run)])
    table = Table(
        title=Text(f"ATRA run {rec.run_id} ({rec.data_label.upper()} data, {rec.timeframe} bars)"),
        caption=Text(caption),
    )
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return table
