"""The report's tables and sentences, as formatted text: the metrics of every leg side by side,
costs, per-symbol figures, the period, what was run and the liquidations.

``metrics.json`` holds ``None`` for NaN and ``"inf"`` / ``"-inf"`` for infinities; they read
``n/a``, ``∞`` and ``-∞`` here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np

from atra.research.runrecord.legs import Liquidation
from atra.research.runrecord.record import LoadedRun
from atra.research.runrecord.setup import RunSetup

__all__ = [
    "BLOCKER_MEANINGS",
    "COST_KINDS",
    "NA",
    "QUOTE_UNIT",
    "blocked_lines",
    "blocked_rows",
    "costs_rows",
    "format_value",
    "liquidation_lines",
    "metric_value",
    "metrics_table",
    "period_text",
    "setup_rows",
    "symbol_rows",
    "utc_text",
]

QUOTE_UNIT: Final[str] = "quote ccy"
NA: Final[str] = "n/a"
COST_KINDS: Final[tuple[str, ...]] = ("fees", "slippage", "funding", "borrow")
"""The costs a leg pays, in display order (``metrics.json`` ``costs.paid``)."""
BLOCKER_MEANINGS: Final[dict[str, str]] = {
    "meta_model": "p(take) below the model's threshold",
    "kill_switch": "kill-switch file present (live only)",
    "daily_loss": "the day's loss reached risk.max_daily_loss (UTC day)",
    "max_positions": "risk.max_open_positions already open",
    "max_per_symbol": "risk.max_per_symbol already open on the symbol",
    "leverage": "would exceed risk.max_gross_leverage",
    "sizing": "no tradeable size (no edge, zero size, no equity)",
    "no_entry_bar": "signal on the last bar: no bar to enter on",
    "decision_false": "the decision column said no (stage not named)",
}
"""What each ``blocked_by`` name means, as the report explains it."""
_TRADE_ROW: Final[str] = "trades"
_LIQUIDATED_ROW: Final[str] = "Liquidated at (UTC)"
_Getter = Callable[[dict[str, Any]], Any]


def metric_value(value: Any) -> float | None:
    """A ``metrics.json`` number as a float; None for a missing value or NaN."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"inf": math.inf, "-inf": -math.inf}.get(value)
    number = float(value)
    return None if math.isnan(number) else number


def format_value(value: Any, kind: str) -> str:
    """``value`` as ``pct`` (2 decimals), ``int``, ``money``, ``days`` or a plain number."""
    number = metric_value(value)
    if number is None:
        return NA
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


def utc_text(ms: int) -> str:
    """``2024-01-01 00:00 UTC``."""
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


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
            f"Borrow paid ({QUOTE_UNIT}; spot shorts' margin interest)",
            "money",
            lambda m: m["trades"].get("borrow_paid", 0.0),
            _TRADE_ROW,
        ),
        (
            "Costs per year (% of initial equity)",
            "pct",
            lambda m: m["costs"]["per_year_fraction"]["total"],
            _TRADE_ROW,
        ),
        ("PSR (P[true Sharpe > 0])", "num", r("psr"), "all"),
        (f"DSR ({n_trials} trial{'s' if n_trials != 1 else ''})", "num", r("dsr"), "all"),
    ]


def _liquidated_cell(liquidations: tuple[Liquidation, ...], leg: str) -> str:
    mine = [q for q in liquidations if q.leg == leg]
    whole = [q for q in mine if q.symbol is None]
    if whole:
        return utc_text(whole[0].time_ms).removesuffix(" UTC")
    holdings = len(mine)
    return f"no ({holdings} holding{'s' if holdings != 1 else ''} were)" if holdings else "no"


def metrics_table(run: LoadedRun) -> tuple[list[str], list[list[str]]]:
    """Header (``Metric`` + leg names) and formatted rows, legs side by side; a last row says
    when a leg was liquidated (when any leg or holding was)."""
    legs = run.leg_names
    leg_metrics = run.metrics["legs"]
    rows: list[list[str]] = []
    for label, kind, getter, scope in _metric_rows(int(run.metrics.get("n_trials", 1))):
        row = [label]
        for leg in legs:
            m = leg_metrics[leg]
            if scope == _TRADE_ROW and not m.get("has_trades", True):
                row.append(NA)
            else:
                row.append(format_value(getter(m), kind))
        rows.append(row)
    liqs = run.record.liquidations
    if liqs:
        rows.append([_LIQUIDATED_ROW, *(_liquidated_cell(liqs, leg) for leg in legs)])
    return ["Metric", *legs], rows


def liquidation_lines(run: LoadedRun) -> list[str]:
    """One sentence per liquidation, e.g. ``buy_hold: liquidated at 2022-11-21 21:00 UTC
    (equity 0 from then on)`` or ``buy_hold ADAUSDT: liquidated at ...``."""
    lines = []
    for q in run.record.liquidations:
        who = q.leg if q.symbol is None else f"{q.leg} {q.symbol}"
        what = "equity 0 from then on" if q.symbol is None else "holding worth 0 from then on"
        if q.trades_not_counted:
            what += f"; {q.trades_not_counted} later trade(s) not counted"
        lines.append(f"{who}: liquidated at {utc_text(q.time_ms)} ({what})")
    return lines


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
        for kind in (*COST_KINDS, "total"):
            if kind not in costs["paid"]:  # borrow: absent from runs written before it
                continue
            paid = float(costs["paid"][kind])
            per_year = costs["per_year_fraction"][kind]
            rows.append([leg, kind, format_value(paid, "money"), format_value(paid / ref, "pct"),
                         costs["per_year_percent"][kind], f"{float(per_year):.4f}"])  # fmt: skip
    return header, rows


def symbol_rows(run: LoadedRun) -> tuple[list[str], list[list[str]]]:
    header = [
        "Leg", "Symbol", "Trades", "Win rate", f"P&L ({QUOTE_UNIT})", "Expectancy",
        "Profit factor", f"Fees paid ({QUOTE_UNIT})", f"Slippage paid ({QUOTE_UNIT})",
        f"Funding paid ({QUOTE_UNIT})", f"Borrow paid ({QUOTE_UNIT})",
    ]  # fmt: skip
    f = format_value
    rows = []
    for leg in run.leg_names:
        for s in run.metrics["legs"][leg].get("per_symbol", []):
            rows.append([
                leg, str(s["symbol"]), f(s["n_trades"], "int"), f(s["win_rate"], "pct"),
                f(s["total_pnl"], "money"), f(s["expectancy"], "money"),
                f(s["profit_factor"], "num"), f(s["fees_paid"], "money"),
                f(s["slippage_paid"], "money"), f(s["funding_paid"], "money"),
                f(s.get("borrow_paid", 0.0), "money"),
            ])  # fmt: skip
    return header, rows


def period_text(run: LoadedRun) -> str:
    times = run.equity["open_time_ms"].to_numpy(dtype=np.int64)
    first, last = int(times[0]), int(times[-1])
    days = (last - first) / 86_400_000.0
    return f"{utc_text(first)} to {utc_text(last)} ({days:,.1f} days, {len(times):,} bars)"


def _num(value: float) -> str:
    return f"{value:g}"


def setup_rows(setup: RunSetup) -> list[tuple[str, str]]:
    """What was run, one ``(what, value)`` row per item of :class:`RunSetup`."""
    b, c, s, d, wf = setup.barriers, setup.costs, setup.sizing, setup.dates, setup.walkforward
    unit = f" x ATR({b.atr_window})" if b.mode == "atr" else " of the entry"
    params = ", ".join(f"{k} {v}" for k, v in setup.rule_params.items())
    kelly = (
        "not used"
        if s.kelly_fraction is None
        else f"{_num(s.kelly_fraction)} x Kelly from p(take) (filtered leg; primary fixed)"
    )
    margin = "" if s.margin_leverage is None else f"; margin leverage {_num(s.margin_leverage)}x"
    rows = [
        ("Exchange", setup.exchange),
        ("Market", setup.market),
        ("Symbols", ", ".join(setup.symbols)),
        ("Timeframe", setup.timeframe),
        ("Primary rule", f"{setup.rule} ({params})" if params else setup.rule),
        ("Barriers", f"SL {_num(b.sl)}{unit}, TP1 {_num(b.tp1)}{unit}, TP2 {_num(b.tp2)}{unit}; "
                     f"horizon {b.horizon_bars} bars; TP1 closes {b.tp1_fraction:.0%}"
                     f"{', stop to break-even after TP1' if b.move_to_be else ''}"),
        ("Fees", f"maker {_num(c.maker_fee_bps)} bps, taker {_num(c.taker_fee_bps)} bps; "
                 f"take-profits pay {c.take_profit_fee}"),
        ("Slippage", f"{_num(c.slippage_bps)} bps"),
        ("Funding", "on (funding history charged)" if c.funding else "off"),
        ("Sides", setup.sides if setup.sides is not None else NA),
        ("Sizing", f"{s.mode.replace('_', '-')}, risk per trade {s.risk_per_trade:.2%} (cap "
                   f"{s.risk_cap:.2%}); Kelly {kelly}; initial equity "
                   f"{format_value(s.initial_equity, 'money')}"),
        ("Leverage caps", f"position {_num(s.max_leverage)}x equity, gross "
                          f"{_num(s.max_gross_leverage)}x equity; {s.max_positions} positions, "
                          f"{s.max_per_symbol} per symbol{margin}"),
        ("Daily loss stop", NA if s.max_daily_loss is None
                            else f"{s.max_daily_loss:.0%} of the day's starting equity (UTC)"),
        ("Signal bars", f"{utc_text(d.first_signal_ms)} to {utc_text(d.last_signal_ms)}"),
        ("Out-of-sample", f"{utc_text(d.oos_start_ms)} to {utc_text(d.oos_end_ms)}"),
    ]  # fmt: skip
    if wf is not None:
        train = f"rolling {wf.train_days}-day" if wf.train_mode == "rolling" else "expanding"
        walk = (
            f"retrain every {wf.retrain_days} days, embargo {_num(wf.embargo_hours)} h, {train} "
            f"training window (first test after {wf.min_train_days} days, at least "
            f"{wf.min_train_events} events); {wf.folds} folds"
        )
        rows.append(("Walk-forward", walk))
    models = ", ".join(f"fold {m.fold}: {m.model_id}" for m in setup.models)
    rows.append(("Models", models or "none (primary signals only)"))
    return rows


def blocked_rows(run: LoadedRun) -> tuple[list[str], list[list[str]]] | None:
    """The signals of each leg that recorded them (``metrics.json`` ``blocked_by``): signals,
    taken, then one row per blocker (count and share of the leg's signals); None when no leg
    recorded them."""
    counts = run.blocked
    if not counts:
        return None
    legs = list(counts)
    names: list[str] = []
    for c in counts.values():
        names.extend(n for n in c.blocked if n not in names)

    def share(n: int, of: int) -> str:
        return f"{n:,} ({n / of:.1%})" if of else f"{n:,}"

    rows = [
        ["signals", "primary signals the leg saw", *(f"{counts[g].signals:,}" for g in legs)],
        ["taken", "entered", *(share(counts[g].taken, counts[g].signals) for g in legs)],
    ]
    for name in names:
        cells = [share(counts[g].blocked.get(name, 0), counts[g].signals) for g in legs]
        rows.append([name, BLOCKER_MEANINGS.get(name, ""), *cells])
    return ["Blocked by", "Meaning", *legs], rows


def blocked_lines(run: LoadedRun) -> list[str]:
    """One sentence per leg that recorded its signals, e.g. ``filtered: 120 signals, 80 taken;
    blocked by meta_model 30, max_positions 10`` (blockers that blocked nothing left out)."""
    lines = []
    for leg, c in run.blocked.items():
        hits = ", ".join(f"{name} {n:,}" for name, n in c.blocked.items() if n)
        lines.append(f"{leg}: {c.signals:,} signals, {c.taken:,} taken"
                     + (f"; blocked by {hits}" if hits else ""))  # fmt: skip
    return lines
