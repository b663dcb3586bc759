"""What the exchange broker (:mod:`atra.live.execution`) wants at the venue and what it books: the
order kinds and their meaning, rounding to the symbol's filters, the protective orders of an
open position and which of them must rest now, the broker's per-position state, and the
accounting of exit fills and of the closed position.

Everything here is a plain function of its arguments (no I/O, no clock, no logging): the broker
decides *when*; this module says *what*.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Final

from atra.adapters.journal.records import FillRecord, PositionRecord
from atra.adapters.orders import OrderRequest, OrderState, SymbolRules, side_of
from atra.core.exits.api import ExitSpec
from atra.live.paper import CLOSED, client_order_id

__all__ = [
    "CANCELLED",
    "CONDITIONAL",
    "ENTRY",
    "EXIT_KINDS",
    "KIND_RANK",
    "ORDER_STATUS",
    "PROTECTIVE",
    "QTY_TOL",
    "REASON",
    "SPOT_LIST_KINDS",
    "STOPS",
    "TAKE_PROFITS",
    "TERMINAL",
    "WOULD_TRIGGER",
    "Track",
    "book_exit_fills",
    "close_order",
    "closed_position",
    "desired_kinds",
    "is_done",
    "plan_orders",
    "round_step",
    "round_step_nearest",
    "round_tick",
]

CANCELLED: Final[str] = "cancelled"
ENTRY: Final[str] = "entry"
EXIT_KINDS: Final[tuple[str, ...]] = ("tp1", "tp2", "sl", "be", "time", "close")
"""Exit order kinds, in the order fills of one bar are booked (take-profits first)."""

SPOT_LIST_KINDS: Final[tuple[str, ...]] = ("sl2", "tp2be")
"""Exit kinds of spot only (:mod:`atra.live.spot_execution`): the stop leg of the second OCO
(``sl2``, beside ``tp2``) and the take-profit leg of the OCO that replaces it after the
break-even move (``tp2be``, beside ``be``)."""
KIND_RANK: Final[dict[str, int]] = {
    k: i for i, k in enumerate(("tp1", "tp2", "tp2be", "sl", "sl2", "be", "time", "close"))
}
"""Booking order of the exit kinds of one bar (take-profits first), spot's included."""
REASON: Final[dict[str, str]] = {
    "tp1": "TP1",
    "tp2": "TP2",
    "tp2be": "TP2",
    "sl": "SL",
    "sl2": "SL",
    "be": "BE",
    "time": "TIME",
    "close": "SL",
}
"""The exit reason (the kernel's name) a fill of each exit kind books."""
TAKE_PROFITS: Final[frozenset[str]] = frozenset({"tp1", "tp2", "tp2be"})
STOPS: Final[frozenset[str]] = frozenset({"sl", "be"})
CONDITIONAL: Final[frozenset[str]] = STOPS
"""Kinds placed as conditional orders (STOP_MARKET): on Binance's Algo Order API, so looked up
and cancelled there (``conditional=True``)."""
TERMINAL: Final[frozenset[str]] = frozenset({"sl", "be", "time", "close"})
PROTECTIVE: Final[frozenset[str]] = frozenset({"sl", "be", "tp1", "tp2"})
ORDER_STATUS: Final[dict[str, str]] = {
    "NEW": "open",
    "PARTIALLY_FILLED": "open",
    "FILLED": "filled",
    "CANCELED": "cancelled",
    "EXPIRED": "cancelled",
    "EXPIRED_IN_MATCH": "cancelled",
    "REJECTED": "rejected",
}
"""The venue's order status -> the journal's."""
WOULD_TRIGGER: Final[re.Pattern[str]] = re.compile(r"(?<![\d.])-2021(?!\d)")
"""Binance -2021 ("Order would immediately trigger") in a refusal's message."""
QTY_TOL: Final[float] = 1e-9


# ---- rounding ------------------------------------------------------------------------------


def _decimals(step: float) -> int:
    exponent = Decimal(repr(float(step))).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def round_step(qty: float, step: float) -> float:
    """``qty`` rounded DOWN to a multiple of ``step`` (a hair of float error tolerated)."""
    n = math.floor(qty / step + 1e-9)
    return round(n * step, _decimals(step))


def round_step_nearest(qty: float, step: float) -> float:
    """``qty`` rounded to the nearest multiple of ``step``."""
    return round(round(qty / step) * step, _decimals(step))


def round_tick(price: float, tick: float) -> float:
    """``price`` rounded to the nearest multiple of ``tick``."""
    return round(round(price / tick) * tick, _decimals(tick))


# ---- state ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Track:
    """A live position and what the broker knows of its orders."""

    pos: PositionRecord
    synced: bool = True  # False after load(): the venue's orders are not looked up yet
    states: dict[str, OrderState] = field(default_factory=dict)  # kind -> last known state
    booked: list[str] = field(default_factory=list)  # exit kinds booked, in fill order
    exit_qty: float = 0.0
    exit_pnl: float = 0.0
    last: tuple[int, float, str] | None = None  # time, price, reason of the last leg


def is_done(track: Track) -> bool:
    """Whether the booked legs closed the position: a terminal leg, or the whole quantity."""
    if any(k in TERMINAL for k in track.booked):
        return True
    return bool(track.booked) and track.pos.quantity - track.exit_qty <= QTY_TOL * max(
        1.0, track.pos.quantity
    )


def book_exit_fills(
    track: Track, spec: ExitSpec, step_ms: int, silent: int = 0
) -> list[FillRecord]:
    """Book on ``track`` the exit orders that are final with an executed quantity and not
    booked yet, in fill order (the bar of the venue's update time, then :data:`EXIT_KINDS`);
    return their fills but the first ``silent`` legs (journalled before a restart)."""
    pos = track.pos
    assert pos.entry_price is not None  # only open positions have exit orders
    fresh = sorted(
        (st.update_time_ms - st.update_time_ms % step_ms, KIND_RANK[k], k, st)
        for k, st in track.states.items()
        if k in KIND_RANK and k not in track.booked and st.is_final and st.executed_qty > 0
    )
    fills = []
    for t, _rank, kind, st in fresh:
        qty, price = st.executed_qty, st.avg_price
        rate = spec.fee_tp if kind in TAKE_PROFITS else spec.fee_stop
        fee = qty * price * rate
        pnl = pos.side * qty * (price - pos.entry_price) - fee
        track.booked.append(kind)
        track.exit_qty += qty
        track.exit_pnl += pnl
        track.last = (t, price, REASON[kind])
        n = len(track.booked)
        if n > silent:
            fills.append(
                FillRecord(pos.position_id, f"leg{n}", pos.symbol, t, price, qty, fee, pnl,
                           REASON[kind])
            )  # fmt: skip
    return fills


def closed_position(track: Track, fee_entry: float) -> PositionRecord:
    """The position closed by its last booked leg: its time, price and reason, ``pnl`` = the
    legs' P&L minus the entry fee, ``ret_net`` = ``pnl`` over the entry's cost with its fee."""
    pos = track.pos
    assert track.last is not None  # a booked leg closed it
    assert pos.entry_price is not None
    cost = pos.quantity * pos.entry_price
    pnl = track.exit_pnl - cost * fee_entry
    t, price, reason = track.last
    return replace(
        pos,
        status=CLOSED,
        exit_time_ms=t,
        exit_price=price,
        reason=reason,
        pnl=pnl,
        ret_net=pnl / (cost * (1.0 + fee_entry)),
    )


# ---- orders --------------------------------------------------------------------------------


def plan_orders(
    pos: PositionRecord, rules: SymbolRules, *, run_id: str, tp1_fraction: float
) -> dict[str, OrderRequest]:
    """The protective orders of an open position, by kind (``tp2`` only when split)."""
    assert pos.entry_price is not None  # open positions have an entry
    entry, side, sym = pos.entry_price, pos.side, pos.symbol
    close = side_of(side, closing=True)
    tick = rules.tick_size

    def cid(kind: str) -> str:
        return client_order_id(run_id, sym, pos.signal_time_ms, kind)

    qty = round_step_nearest(pos.quantity, rules.step_size)
    plan = {
        "sl": OrderRequest(
            sym, close, "STOP_MARKET", cid("sl"),
            stop_price=round_tick(entry - side * pos.sl_dist, tick), close_position=True,
        ),
        "be": OrderRequest(
            sym, close, "STOP_MARKET", cid("be"),
            stop_price=round_tick(entry, tick), close_position=True,
        ),
    }  # fmt: skip
    tp1_price = round_tick(entry + side * pos.tp1_dist, tick)
    tp1_qty = qty
    if tp1_fraction < 1.0:
        part = round_step(qty * tp1_fraction, rules.step_size)
        rest = round_step_nearest(qty - part, rules.step_size)
        if part > 0.0 and rest > 0.0 and min(part, rest) >= rules.min_qty:
            tp1_qty = part
            plan["tp2"] = OrderRequest(
                sym, close, "LIMIT", cid("tp2"), quantity=rest,
                price=round_tick(entry + side * pos.tp2_dist, tick), reduce_only=True,
            )  # fmt: skip
    plan["tp1"] = OrderRequest(
        sym, close, "LIMIT", cid("tp1"), quantity=tp1_qty, price=tp1_price, reduce_only=True
    )
    return plan


def desired_kinds(
    states: Mapping[str, OrderState], plan: Mapping[str, OrderRequest], *, move_to_be: bool
) -> list[str]:
    """Kinds that must rest now: the stop (``be`` after TP1 with ``move_to_be``) and the
    take-profits not filled yet."""
    filled = {k for k, st in states.items() if st.status == "FILLED"}
    split = "tp2" in plan
    stop = "be" if split and move_to_be and "tp1" in filled else "sl"
    return [stop, *(k for k in ("tp1", "tp2") if k in plan and k not in filled)]


def close_order(pos: PositionRecord, kind: str, qty: float, *, run_id: str) -> OrderRequest:
    """The reduce-only MARKET order of ``kind`` that closes ``qty`` of ``pos``."""
    cid = client_order_id(run_id, pos.symbol, pos.signal_time_ms, kind)
    closing = side_of(pos.side, closing=True)
    return OrderRequest(pos.symbol, closing, "MARKET", cid, quantity=qty, reduce_only=True)
