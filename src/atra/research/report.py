"""Run reports: one self-contained HTML file (plotly) and a rich table for the terminal.

The report says what it measures: out-of-sample bars only, costs (fees, slippage, funding)
included in every number, the annualisation stated (``Sharpe annualised x sqrt(8760) (1h
bars, 365-day year)``), and the data labelled SYNTHETIC or REAL. Costs are shown as positive
amounts paid, in the quote currency and as a percent of the initial equity per year.

The HTML inlines plotly.js once; each figure's JSON sits in a ``<script
type="application/json" class="atra-figure-data">`` tag next to its ``<div>`` and is drawn
by a few lines of script at the end (no network access needed to view the file).
"""

from __future__ import annotations

import html
import math
import shutil
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots
from rich.table import Table
from rich.text import Text

from atra.core.exits import REASON_NAMES
from atra.research.runrecord import LoadedRun

REPORT_NAME: Final[str] = "report.html"
TRADES_NAME: Final[str] = "trades.csv"
METRICS_NAME: Final[str] = "metrics.json"
SCOPE_SENTENCE: Final[str] = (
    "Out-of-sample only, costs included (fees, slippage and funding are in every number)."
)
QUOTE_UNIT: Final[str] = "quote ccy"
SECTIONS: Final[tuple[tuple[str, str], ...]] = (
    ("metrics", "Metrics"),
    ("equity", "Equity and drawdown"),
    ("monthly", "Monthly returns"),
    ("pnl", "Trade P&L distribution"),
    ("exits", "Exits by barrier"),
    ("costs", "Costs"),
    ("symbols", "Per symbol"),
)
LEG_COLORS: Final[dict[str, str]] = {
    "primary": "#1f77b4",
    "filtered": "#2ca02c",
    "buy_hold": "#7f7f7f",
}
_OTHER_COLORS: Final[tuple[str, ...]] = ("#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
_MONTHS: Final[tuple[str, ...]] = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip
_NA: Final[str] = "n/a"


def leg_color(name: str, position: int) -> str:
    return LEG_COLORS.get(name, _OTHER_COLORS[position % len(_OTHER_COLORS)])


# --------------------------------------------------------------------------------------------
# number formatting (metrics.json holds None for NaN and "inf"/"-inf" for infinities)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"inf": math.inf, "-inf": -math.inf}.get(value)
    number = float(value)
    return None if math.isnan(number) else number


def _fmt(value: Any, kind: str) -> str:
    number = _num(value)
    if number is None:
        return _NA
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    match kind:
        case "pct":
            return f"{number * 100.0:.2f}%"
        case "int":
            return f"{round(number):,}"
        case "money":
            return f"{number:,.2f}"
        case "days":
            return f"{number:,.1f} d"
        case _:
            return f"{number:.2f}"


_Getter = Callable[[dict[str, Any]], Any]
_TRADE_ROW: Final[str] = "trades"


def _metric_rows(n_trials: int) -> list[tuple[str, str, _Getter, str]]:
    """(label, kind, getter, scope): scope ``trades`` rows read n/a for legs without a trade
    list (buy-and-hold)."""
    r: Callable[[str], _Getter] = lambda key: lambda m: m["returns"][key]  # noqa: E731
    t: Callable[[str], _Getter] = lambda key: lambda m: m["trades"][key]  # noqa: E731
    return [
        ("Total return", "pct", r("total_return"), "all"),
        ("CAGR", "pct", r("cagr"), "all"),
        ("Volatility (annualised)", "pct", r("volatility"), "all"),
        ("Sharpe (annualised)", "num", r("sharpe"), "all"),
        ("Sortino (annualised)", "num", r("sortino"), "all"),
        ("Calmar", "num", r("calmar"), "all"),
        ("Max drawdown", "pct", r("max_drawdown"), "all"),
        ("Max drawdown duration", "days", r("max_drawdown_days"), "all"),
        ("Win rate", "pct", t("win_rate"), _TRADE_ROW),
        (f"Avg win ({QUOTE_UNIT})", "money", t("avg_win"), _TRADE_ROW),
        (f"Avg loss ({QUOTE_UNIT}, size)", "money", t("avg_loss"), _TRADE_ROW),
        ("Profit factor", "num", t("profit_factor"), _TRADE_ROW),
        (f"Expectancy ({QUOTE_UNIT} per trade)", "money", t("expectancy"), _TRADE_ROW),
        ("Exposure (share of bars in a position)", "pct", lambda m: m["exposure"], _TRADE_ROW),
        ("Trades", "int", t("n_trades"), _TRADE_ROW),
        ("Trades per day", "num", lambda m: m["trades_per_day"], _TRADE_ROW),
        (f"Fees paid ({QUOTE_UNIT})", "money", t("fees_paid"), _TRADE_ROW),
        (f"Slippage paid ({QUOTE_UNIT})", "money", t("slippage_paid"), _TRADE_ROW),
        (f"Funding paid ({QUOTE_UNIT}; < 0 = received)", "money", t("funding_paid"), _TRADE_ROW),
        (
            "Costs per year (% of initial equity)",
            "pct",
            lambda m: m["costs"]["per_year_fraction"]["total"],
            _TRADE_ROW,
        ),
        ("PSR (P[true Sharpe > 0])", "num", r("psr"), "all"),
        (f"DSR ({n_trials} trial{'s' if n_trials != 1 else ''})", "num", r("dsr"), "all"),
    ]


def metrics_table(run: LoadedRun) -> tuple[list[str], list[list[str]]]:
    """Header (``Metric`` + leg names) and formatted rows, legs side by side."""
    legs = run.leg_names
    leg_metrics = run.metrics["legs"]
    rows: list[list[str]] = []
    for label, kind, getter, scope in _metric_rows(int(run.metrics.get("n_trials", 1))):
        row = [label]
        for leg in legs:
            m = leg_metrics[leg]
            if scope == _TRADE_ROW and not m.get("has_trades", True):
                row.append(_NA)
            else:
                row.append(_fmt(getter(m), kind))
        rows.append(row)
    return ["Metric", *legs], rows


# --------------------------------------------------------------------------------------------
# figures


def _times(run: LoadedRun) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(run.equity["open_time_ms"], unit="ms", utc=True))


def _base_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01},
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": 60, "b": 40},
        legend={"orientation": "h", "y": -0.12},
    )
    return fig


def equity_figure(run: LoadedRun) -> go.Figure:
    """Equity (top) and drawdown in % (bottom) of every leg."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32],
                        vertical_spacing=0.05)  # fmt: skip
    x = _times(run)
    for i, leg in enumerate(run.leg_names):
        eq = run.equity[leg].to_numpy(dtype=float)
        dd = (eq / np.maximum.accumulate(eq) - 1.0) * 100.0
        color = leg_color(leg, i)
        fig.add_trace(go.Scatter(x=x, y=eq, name=leg, mode="lines", legendgroup=leg,
                                 line={"color": color, "width": 1.5}), row=1, col=1)  # fmt: skip
        fig.add_trace(go.Scatter(x=x, y=dd, name=f"{leg} drawdown", mode="lines",
                                 legendgroup=leg, showlegend=False,
                                 line={"color": color, "width": 1}), row=2, col=1)  # fmt: skip
    fig.update_yaxes(title_text=f"equity ({QUOTE_UNIT})", row=1, col=1)
    fig.update_yaxes(title_text="drawdown (%)", row=2, col=1)
    return _base_layout(fig, "Equity and drawdown (out-of-sample, after costs)", 620)


def monthly_returns(equity: pd.Series) -> pd.DataFrame:
    """Calendar-month returns (UTC) of an equity curve indexed by time: rows = years, columns
    = months 1..12 (NaN where there is no data). The first month is measured from the first
    equity point."""
    index = pd.DatetimeIndex(equity.index)
    years = index.year
    months = index.month
    last = equity.groupby([years, months]).last()
    prev = last.shift(1)
    prev.iloc[0] = float(equity.iloc[0])
    ret = last / prev - 1.0
    ret.index = ret.index.set_names(["year", "month"])
    table = ret.unstack("month")
    return table.reindex(columns=range(1, 13))


def monthly_figure(run: LoadedRun) -> go.Figure:
    """Heat map of monthly returns (%): one row per leg and year, a diverging colour scale
    centred on 0."""
    x = _times(run)
    labels: list[str] = []
    z_rows: list[list[float]] = []
    for leg in run.leg_names:
        table = monthly_returns(pd.Series(run.equity[leg].to_numpy(), index=x))
        for year, row in zip(table.index, table.to_numpy() * 100.0, strict=True):
            labels.append(f"{leg} {year}")
            z_rows.append([float(v) for v in row])
    z = np.array(z_rows)
    zmax = float(np.nanmax(np.abs(z)))
    zmax = zmax if zmax > 0 else 1.0
    text = [[("" if math.isnan(v) else f"{v:.1f}%") for v in row] for row in z_rows]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=list(_MONTHS), y=labels, text=text, texttemplate="%{text}", zmid=0.0,
            zmin=-zmax, zmax=zmax, colorscale="RdYlGn", colorbar={"title": {"text": "%"}},
            xgap=2, ygap=2, hovertemplate="%{y} %{x}: %{z:.2f}%<extra></extra>",
        )
    )  # fmt: skip
    fig.update_yaxes(type="category", autorange="reversed")
    fig.update_xaxes(side="top")
    return _base_layout(fig, "Monthly returns (%, UTC calendar months)", 160 + 40 * len(labels))


def pnl_figure(run: LoadedRun) -> go.Figure:
    """Histogram of the trade P&L (net of costs) of every leg with trades."""
    fig = go.Figure()
    pnls = {leg: run.trades[leg]["pnl"].to_numpy(dtype=float) for leg in run.trades}
    values = np.concatenate([np.zeros(0), *pnls.values()])
    bins: dict[str, float] = {}
    if values.size and values.max() > values.min():  # one set of bins for every leg
        lo, hi = float(values.min()), float(values.max())
        size = (hi - lo) / min(40, max(5, int(math.sqrt(values.size)) * 2))
        bins = {"start": lo, "end": hi + size, "size": size}
    for i, leg in enumerate(run.leg_names):
        if leg in pnls:
            fig.add_trace(go.Histogram(x=pnls[leg], name=leg, opacity=0.55, xbins=bins or None,
                                       marker={"color": leg_color(leg, i)}))  # fmt: skip
    fig.update_layout(barmode="overlay", bargap=0.05)
    fig.update_xaxes(title_text=f"P&L per trade ({QUOTE_UNIT}, net of costs)")
    fig.update_yaxes(title_text="trades")
    return _base_layout(fig, "Trade P&L distribution", 420)


def _reason_order(reasons: Sequence[str]) -> list[str]:
    known = [n for n in REASON_NAMES.values() if n in reasons]
    return known + sorted(set(reasons) - set(known))


def exits_table(run: LoadedRun) -> pd.DataFrame:
    """Trades and P&L by exit reason (rows) and leg."""
    parts = []
    for leg in run.leg_names:
        if leg in run.trades:
            tr = run.trades[leg]
            g = tr.groupby(tr["reason"].astype(str))["pnl"].agg(["count", "sum"])
            g.columns = pd.Index(["trades", "pnl"])
            parts.append(g.assign(leg=leg).reset_index(names="reason"))
    if not parts:
        return pd.DataFrame(columns=["reason", "trades", "pnl", "leg"])
    return pd.concat(parts, ignore_index=True)


def exits_figure(run: LoadedRun) -> go.Figure:
    table = exits_table(run)
    order = _reason_order(table["reason"].astype(str).tolist())
    fig = go.Figure()
    for i, leg in enumerate(run.leg_names):
        part = table[table["leg"] == leg].set_index("reason").reindex(order)
        if leg in run.trades:
            fig.add_trace(go.Bar(
                x=order, y=part["trades"].fillna(0).to_numpy(dtype=float), name=leg,
                marker={"color": leg_color(leg, i)},
                customdata=part["pnl"].fillna(0.0).to_numpy(dtype=float),
                hovertemplate="%{x}: %{y} trades, P&L %{customdata:,.2f}<extra>" + leg
                + "</extra>",
            ))  # fmt: skip
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="exit reason (final leg)")
    fig.update_yaxes(title_text="trades")
    return _base_layout(fig, "Exits by barrier", 400)


def costs_figure(run: LoadedRun) -> go.Figure:
    kinds = ["fees", "slippage", "funding"]
    fig = go.Figure()
    for i, leg in enumerate(run.leg_names):
        if leg in run.trades:
            paid = run.metrics["legs"][leg]["costs"]["paid"]
            fig.add_trace(go.Bar(x=kinds, y=[float(paid[k]) for k in kinds], name=leg,
                                 marker={"color": leg_color(leg, i)}))  # fmt: skip
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text=f"paid ({QUOTE_UNIT})")
    return _base_layout(fig, "Costs paid", 380)


# --------------------------------------------------------------------------------------------
# HTML


def _table_html(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def costs_rows(run: LoadedRun) -> tuple[list[str], list[list[str]]]:
    header = [
        "Leg", "Cost", f"Paid ({QUOTE_UNIT})", "% of initial equity (whole period)",
        "% of initial equity per year", "x initial equity per year",
    ]  # fmt: skip
    rows = []
    for leg in run.leg_names:
        if leg not in run.trades:
            continue
        costs = run.metrics["legs"][leg]["costs"]
        ref = float(costs["paid"]["reference_equity"])
        for kind in ("fees", "slippage", "funding", "total"):
            paid = float(costs["paid"][kind])
            per_year = costs["per_year_fraction"][kind]
            rows.append([leg, kind, _fmt(paid, "money"), _fmt(paid / ref, "pct"),
                         costs["per_year_percent"][kind], f"{float(per_year):.4f}"])  # fmt: skip
    return header, rows


def symbol_rows(run: LoadedRun) -> tuple[list[str], list[list[str]]]:
    header = [
        "Leg", "Symbol", "Trades", "Win rate", f"P&L ({QUOTE_UNIT})", "Expectancy",
        "Profit factor", f"Fees paid ({QUOTE_UNIT})", f"Slippage paid ({QUOTE_UNIT})",
        f"Funding paid ({QUOTE_UNIT})",
    ]  # fmt: skip
    rows = []
    for leg in run.leg_names:
        for s in run.metrics["legs"][leg].get("per_symbol", []):
            rows.append([
                leg, str(s["symbol"]), _fmt(s["n_trades"], "int"), _fmt(s["win_rate"], "pct"),
                _fmt(s["total_pnl"], "money"), _fmt(s["expectancy"], "money"),
                _fmt(s["profit_factor"], "num"), _fmt(s["fees_paid"], "money"),
                _fmt(s["slippage_paid"], "money"), _fmt(s["funding_paid"], "money"),
            ])  # fmt: skip
    return header, rows


def period_text(run: LoadedRun) -> str:
    times = run.equity["open_time_ms"].to_numpy(dtype=np.int64)

    def day(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000.0, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")

    days = (int(times[-1]) - int(times[0])) / 86_400_000.0
    return f"{day(int(times[0]))} to {day(int(times[-1]))} ({days:,.1f} days, {len(times):,} bars)"


def _figure_block(key: str, fig: go.Figure) -> str:
    spec = fig.to_json().replace("</", "<\\/")
    return (
        f'<div id="fig-{key}" class="atra-figure" data-section="{key}"></div>\n'
        f'<script type="application/json" class="atra-figure-data" data-target="fig-{key}">'
        f"{spec}</script>"
    )


_CSS: Final[str] = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1300px;color:#222;padding:0 16px}
h1{margin-bottom:4px}h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
.badge{display:inline-block;padding:3px 10px;border-radius:4px;font-weight:700;color:#fff}
.synthetic{background:#c62828}.real{background:#2e7d32}
.scope{font-weight:600}.meta td{padding:2px 12px 2px 0;font-family:monospace;font-size:13px}
table.data{border-collapse:collapse;font-size:14px}
table.data th,table.data td{border:1px solid #ddd;padding:4px 10px;text-align:right}
table.data th:first-child,table.data td:first-child{text-align:left}
table.data thead th{background:#f3f3f3}
"""
_DRAW_JS: Final[str] = """
document.querySelectorAll('script.atra-figure-data').forEach(function (s) {
  var spec = JSON.parse(s.textContent);
  Plotly.newPlot(s.dataset.target, spec.data, spec.layout,
                 {responsive: true, displaylogo: false});
});
"""


def _header_html(run: LoadedRun) -> str:
    rec = run.record
    label = rec.data_label.upper()
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
    return (
        f"<h1>ATRA run {html.escape(rec.run_id)} "
        f'<span class="badge {html.escape(rec.data_label)}">{label}</span></h1>\n'
        f'<p class="scope">{html.escape(SCOPE_SENTENCE)} {html.escape(data_note)}</p>\n'
        f'<p class="annualization">{html.escape(rec.annualization)}; Sortino and volatility '
        "annualised the same way; no risk-free rate; returns are per-bar, 24/7.</p>\n"
        f'<table class="meta">{rows}</table>'
    )


def render_html(run: LoadedRun) -> str:
    """The report as one self-contained HTML document."""
    figures = {
        "equity": equity_figure(run),
        "monthly": monthly_figure(run),
        "pnl": pnl_figure(run),
        "exits": exits_figure(run),
        "costs": costs_figure(run),
    }
    body: dict[str, str] = {}
    header, rows = metrics_table(run)
    body["metrics"] = _table_html(header, rows, "data metrics")
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
    sections = "\n".join(
        f'<section id="{key}"><h2>{html.escape(title)}</h2>\n{body[key]}</section>'
        for key, title in SECTIONS
    )
    title = f"ATRA run {run.record.run_id} ({run.record.data_label.upper()})"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n"
        f'<script type="text/javascript" id="plotlyjs">{get_plotlyjs()}</script>\n'
        f"</head><body>\n{_header_html(run)}\n{sections}\n"
        f"<script>{_DRAW_JS}</script>\n</body></html>\n"
    )


def combined_trades(run: LoadedRun) -> pd.DataFrame:
    """Every leg's trades in one frame, a ``leg`` column first."""
    frames = [tr.assign(leg=leg)[["leg", *tr.columns]] for leg, tr in run.trades.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"leg": []})


def render_report(run: LoadedRun, out: Path | None = None) -> Path:
    """Write ``report.html`` (default: in the run directory) with ``trades.csv`` (all legs)
    and ``metrics.json`` beside it; return the HTML path."""
    target = run.path / REPORT_NAME if out is None else Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(render_html(run), encoding="utf-8")
    tmp.replace(target)
    combined_trades(run).to_csv(target.parent / TRADES_NAME, index=False)
    metrics_src = run.path / METRICS_NAME
    metrics_dst = target.parent / METRICS_NAME
    if metrics_dst.resolve() != metrics_src.resolve():
        shutil.copyfile(metrics_src, metrics_dst)
    return target


def terminal_summary(run: LoadedRun) -> Table:
    """The metrics table for the terminal, legs side by side."""
    rec = run.record
    header, rows = metrics_table(run)
    table = Table(
        title=Text(f"ATRA run {rec.run_id} ({rec.data_label.upper()} data, {rec.timeframe} bars)"),
        caption=Text(f"{rec.annualization}. {SCOPE_SENTENCE}"),
    )
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return table
