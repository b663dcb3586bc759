"""Closed trades, one row each, and their CSV text: the one format both the research backtest
(``atra backtest --trades-csv``) and the live journal (``atra journal trades --csv``) write, so
that the same data, model and config give byte-identical files.

Columns (:data:`CLOSED_TRADE_COLUMNS`), one row per closed trade, sorted by
``(entry_time, symbol)``:

- ``symbol``: e.g. ``BTCUSDT``.
- ``side``: ``LONG`` or ``SHORT``.
- ``entry_time``: open time of the entry bar, ISO-8601 UTC (``2024-01-01T05:00:00Z``).
- ``entry_price``: the entry fill price (slippage included).
- ``qty``: the quantity entered (base asset).
- ``exit_time``: open time of the bar of the LAST exit leg (the one that closed the trade).
- ``exit_price``: the quantity-weighted average price of the exit legs,
  ``sum(qty_leg x price_leg) / sum(qty_leg)``. A trade that took a TP1 partial and closed the
  rest later has two legs; a trade that closed at once has one, and its exit price is that
  fill's price.
- ``exit_reason``: the reason of the last leg (``SL``, ``TP1``, ``TP2``, ``TIME``, ``BE``, ...).
- ``fees``: every fee the trade paid (entry and all exit legs), quote currency.
- ``funding``: funding the trade paid (negative: received), quote currency; 0 on spot.
- ``pnl``: the trade's realised P&L (exit legs minus every fee), quote currency, as the
  backtest's and the journal's ``pnl``.

Times are UTC with a ``Z``; prices and money are plain decimals rounded to 10 significant
digits (round half to even on the exact binary value, no exponent, trailing zeros dropped:
``0.5``, ``42000``, ``0.0001234567891``; zero is ``0``). Pure: no I/O; the atomic file write is
:func:`atra.adapters.trades_csv.write_trades_csv`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, Final

import pandas as pd

from atra.errors import DataError

__all__ = [
    "CLOSED_TRADE_COLUMNS",
    "SIGNIFICANT_DIGITS",
    "ClosedTrade",
    "ExitLeg",
    "closed_trade",
    "closed_trades_of_backtest",
    "format_decimal",
    "format_time",
    "trades_csv_text",
]

CLOSED_TRADE_COLUMNS: Final[tuple[str, ...]] = (
    "symbol",
    "side",
    "entry_time",
    "entry_price",
    "qty",
    "exit_time",
    "exit_price",
    "exit_reason",
    "fees",
    "funding",
    "pnl",
)
SIGNIFICANT_DIGITS: Final[int] = 10
OPEN_AT_END: Final[str] = "END"
"""Backtest exit reason of a trade still open when the data ends: not a closed trade."""
_CONTEXT: Final[Context] = Context(prec=SIGNIFICANT_DIGITS, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class ExitLeg:
    """One exit fill of a trade: bar open time (ms), price, quantity and reason."""

    time_ms: int
    price: float
    qty: float
    reason: str


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """One closed trade, as the CSV shows it (times in ms, amounts as floats)."""

    symbol: str
    side: int
    entry_time_ms: int
    entry_price: float
    qty: float
    exit_time_ms: int
    exit_price: float
    exit_reason: str
    fees: float
    funding: float
    pnl: float


def closed_trade(
    *,
    symbol: str,
    side: int,
    entry_time_ms: int,
    entry_price: float,
    qty: float,
    legs: Sequence[ExitLeg],
    fees: float,
    funding: float,
    pnl: float,
    where: str,
) -> ClosedTrade:
    """A :class:`ClosedTrade` from its exit ``legs`` (in fill order): exit price = their
    quantity-weighted average, exit time and reason = the last leg's. ``where`` names the
    trade in the one-line :class:`DataError` for a trade without legs or with a leg quantity
    that is not > 0."""
    if not legs:
        raise DataError(f"{where}: a closed trade without an exit leg")
    for leg in legs:
        if not (math.isfinite(leg.qty) and leg.qty > 0.0):
            raise DataError(f"{where}: exit leg at {format_time(leg.time_ms)} has qty {leg.qty}")
    total = math.fsum(leg.qty for leg in legs)
    price = math.fsum(leg.qty * leg.price for leg in legs) / total
    last = legs[-1]
    return ClosedTrade(
        symbol, side, entry_time_ms, entry_price, qty, last.time_ms, price, last.reason,
        fees, funding, pnl,
    )  # fmt: skip


def _leg(row: Mapping[Hashable, Any], k: int, qty: float) -> ExitLeg | None:
    """Exit leg ``k`` of a backtest trade row (time filled in by the caller); None for a
    trade that closed in one leg (no ``leg2``)."""
    if k == 2 and (pd.isna(row["leg2_bar"]) or pd.isna(row["leg2_price"])):
        return None
    price, fraction = float(row[f"leg{k}_price"]), float(row[f"leg{k}_fraction"])
    return ExitLeg(0, price, qty * fraction, str(row[f"leg{k}_reason"]))


def closed_trades_of_backtest(trades: pd.DataFrame) -> tuple[list[ClosedTrade], int]:
    """The closed trades of a backtest's trade list (``BacktestResult.trades``) and how many
    trades were left out because they were still open at the data end (reason ``END``: the
    backtest marks them out at the last bar; a journal keeps them open).

    Leg quantities are ``quantity x leg fraction``, as the paper broker fills them."""
    need = ("symbol", "side", "entry_time_ms", "entry_price", "quantity", "exit_time_ms",
            "reason", "leg1_price", "leg1_fraction", "leg1_reason", "leg2_bar", "leg2_price",
            "leg2_fraction", "leg2_reason", "fees", "funding", "pnl")  # fmt: skip
    missing = [c for c in need if c not in trades.columns]
    if missing:
        raise DataError(f"backtest trades: missing column(s) {', '.join(missing)}")
    out: list[ClosedTrade] = []
    open_at_end = 0
    for i, row in enumerate(trades.to_dict("records")):
        if str(row["reason"]) == OPEN_AT_END:
            open_at_end += 1
            continue
        qty = float(row["quantity"])
        legs = [leg for leg in (_leg(row, 1, qty), _leg(row, 2, qty)) if leg is not None]
        exit_ms = int(row["exit_time_ms"])
        legs[-1] = ExitLeg(exit_ms, legs[-1].price, legs[-1].qty, str(row["reason"]))
        out.append(
            closed_trade(
                symbol=str(row["symbol"]),
                side=int(row["side"]),
                entry_time_ms=int(row["entry_time_ms"]),
                entry_price=float(row["entry_price"]),
                qty=qty,
                legs=legs,
                fees=float(row["fees"]),
                funding=float(row["funding"]),
                pnl=float(row["pnl"]),
                where=f"backtest trade row {i} ({row['symbol']})",
            )
        )
    return out, open_at_end


def format_time(ms: int) -> str:
    """Epoch ms -> ``2024-01-01T05:00:00Z`` (UTC; milliseconds shown only when not 0)."""
    t = datetime.fromtimestamp(ms / 1000.0, tz=UTC)
    if ms % 1000:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_decimal(value: float, what: str) -> str:
    """``value`` as a plain decimal with :data:`SIGNIFICANT_DIGITS` significant digits (no
    exponent); a NaN or infinity is a :class:`DataError` naming ``what``."""
    v = float(value)
    if not math.isfinite(v):
        raise DataError(f"{what} is {v!r}, expected a finite number")
    if v == 0.0:
        return "0"
    return format(_CONTEXT.plus(Decimal(v)).normalize(_CONTEXT), "f")


def _side(side: int, what: str) -> str:
    if side == 1:
        return "LONG"
    if side == -1:
        return "SHORT"
    raise DataError(f"{what}: side {side}, expected 1 (long) or -1 (short)")


def _field(text: str) -> str:
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def trades_csv_text(trades: Iterable[ClosedTrade]) -> str:
    """The CSV text (header + one line per trade, ``\\n`` line ends) sorted by
    ``(entry_time, symbol)`` (ties then by exit time, side, quantity: a total order)."""
    rows = sorted(trades, key=lambda t: (t.entry_time_ms, t.symbol, t.exit_time_ms, t.side, t.qty))
    lines = [",".join(CLOSED_TRADE_COLUMNS)]
    for i, t in enumerate(rows):
        where = f"trade row {i} ({t.symbol} entry {format_time(t.entry_time_ms)})"
        cells = (
            _field(t.symbol),
            _side(t.side, where),
            format_time(t.entry_time_ms),
            format_decimal(t.entry_price, f"{where} entry_price"),
            format_decimal(t.qty, f"{where} qty"),
            format_time(t.exit_time_ms),
            format_decimal(t.exit_price, f"{where} exit_price"),
            _field(t.exit_reason),
            format_decimal(t.fees, f"{where} fees"),
            format_decimal(t.funding, f"{where} funding"),
            format_decimal(t.pnl, f"{where} pnl"),
        )
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"
