"""The report's plotly figures: equity and drawdown, monthly returns, the trade P&L
distribution, exits by barrier and the costs paid, each leg in its own colour."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from atra.core.exits.kernel import REASON_NAMES
from atra.research.report.tables import COST_KINDS, QUOTE_UNIT
from atra.research.runrecord.record import LoadedRun

__all__ = [
    "LEG_COLORS",
    "costs_figure",
    "equity_figure",
    "exits_figure",
    "exits_table",
    "leg_color",
    "monthly_figure",
    "monthly_returns",
    "pnl_figure",
]

LEG_COLORS: Final[dict[str, str]] = {
    "primary": "#1f77b4",
    "filtered": "#2ca02c",
    "buy_hold": "#7f7f7f",
}
_OTHER_COLORS: Final[tuple[str, ...]] = ("#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
_MONTHS: Final[tuple[str, ...]] = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip


def leg_color(name: str, position: int) -> str:
    return LEG_COLORS.get(name, _OTHER_COLORS[position % len(_OTHER_COLORS)])


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
    fig = go.Figure()
    for i, leg in enumerate(run.leg_names):
        if leg in run.trades:
            paid = run.metrics["legs"][leg]["costs"]["paid"]
            kinds = [k for k in COST_KINDS if k in paid]
            fig.add_trace(go.Bar(x=kinds, y=[float(paid[k]) for k in kinds], name=leg,
                                 marker={"color": leg_color(leg, i)}))  # fmt: skip
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text=f"paid ({QUOTE_UNIT})")
    return _base_layout(fig, "Costs paid", 380)
