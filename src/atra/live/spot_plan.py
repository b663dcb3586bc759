"""The spot broker's exit lists (:mod:`atra.live.spot_execution`): which SELL OCO lists a long
spot holding has, which of them must rest now, and what state each is in.

Spot has no reduce-only orders, so the exit kernel's orders become OCO lists (one quantity each,
a LIMIT_MAKER take-profit above, a STOP_LOSS below, one cancelling the other):

* ``oco`` (**A**): ``tp1`` at ``P + tp1_dist`` and ``sl`` at ``P - sl_dist``, for the TP1
  quantity (the whole quantity with ``tp1_fraction == 1``).
* ``oco2`` (**B**, split only): ``tp2`` at ``P + tp2_dist`` and ``sl2`` at the same stop, for
  the rest.
* ``ocobe`` (**B'**, split with ``move_to_be``): ``tp2be`` at TP2 and ``be`` at ``P``, for what
  is left once TP1 filled; it replaces B from the bar after TP1 on.

The quantities are :func:`~atra.live.order_plan.plan_orders`' (TP1 part rounded down to the
step, the rest to B, A + B = the quantity bought); when either part is below the symbol's
minimum quantity, or below its minimum notional at the stop price, there is one list (A for
the whole quantity), as the futures broker keeps one take-profit then.

Everything here is a plain function of its arguments (no I/O, no clock, no logging).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from atra.adapters.journal.records import PositionRecord
from atra.adapters.orders import OrderState, SymbolRules
from atra.adapters.trading.spot_wire import OcoRequest, SpotRules
from atra.live.order_plan import plan_orders
from atra.live.paper import client_order_id

__all__ = [
    "LISTS",
    "SPOT_STOPS",
    "ListPlan",
    "desired_lists",
    "list_state",
    "plan_lists",
]

LISTS: Final[dict[str, tuple[str, str]]] = {
    "oco": ("tp1", "sl"),
    "oco2": ("tp2", "sl2"),
    "ocobe": ("tp2be", "be"),
}
"""List kind (its client id's kind) -> the kinds of its (take-profit, stop) legs."""
SPOT_STOPS: Final[frozenset[str]] = frozenset({"sl", "sl2", "be"})
"""The stop legs: they share one level, so the venue triggers them on the same trade."""


@dataclass(frozen=True, slots=True)
class ListPlan:
    """The lists of one open position (``requests``: list kind -> the OCO to place, ``oco2``
    and ``ocobe`` only when split) and, when the split fell back to one list, why."""

    requests: dict[str, OcoRequest]
    fallback: str | None = None

    @property
    def split(self) -> bool:
        return "oco2" in self.requests


def plan_lists(
    pos: PositionRecord, rules: SpotRules, *, run_id: str, tp1_fraction: float
) -> ListPlan:
    """The OCO lists of the open long ``pos`` (see the module docstring), at the quantities
    planned for the whole position (the broker caps them by what is still held)."""
    sym = SymbolRules(
        pos.symbol, step_size=rules.step_size, min_qty=rules.min_qty, tick_size=rules.tick_size
    )
    orders = plan_orders(pos, sym, run_id=run_id, tp1_fraction=tp1_fraction)
    sl, be, tp1 = orders["sl"], orders["be"], orders["tp1"]
    assert sl.stop_price is not None
    assert be.stop_price is not None
    assert tp1.price is not None
    assert tp1.quantity is not None

    def cid(kind: str) -> str:
        return client_order_id(run_id, pos.symbol, pos.signal_time_ms, kind)

    def oco(kind: str, qty: float, take: float, stop: float) -> OcoRequest:
        t, s = LISTS[kind]
        return OcoRequest(pos.symbol, qty, take, stop, cid(t), cid(s), cid(kind))

    whole = tp1.quantity
    fallback = None
    tp2 = orders.get("tp2")
    if tp2 is not None:
        assert tp2.price is not None
        assert tp2.quantity is not None
        small = min(tp1.quantity, tp2.quantity) * sl.stop_price
        if small < rules.min_notional:
            fallback = f"a part's notional {small:.8g} is below the minimum {rules.min_notional}"
            whole, tp2 = tp1.quantity + tp2.quantity, None
    elif tp1_fraction < 1.0:
        fallback = f"a part would be below the minimum quantity {rules.min_qty}"
    if tp2 is None:
        return ListPlan({"oco": oco("oco", whole, tp1.price, sl.stop_price)}, fallback)
    assert tp2.price is not None
    assert tp2.quantity is not None
    return ListPlan(
        {
            "oco": oco("oco", tp1.quantity, tp1.price, sl.stop_price),
            "oco2": oco("oco2", tp2.quantity, tp2.price, sl.stop_price),
            "ocobe": oco("ocobe", tp2.quantity, tp2.price, be.stop_price),
        }
    )


def list_state(states: Mapping[str, OrderState], kind: str) -> str:
    """The state of the list ``kind`` from its legs' last known states: ``unplaced`` (no leg
    known), ``resting`` (both legs open), ``filled`` (a leg filled: the list is over),
    ``broken`` (a leg ended without a fill while the other is open: Binance expires the stop
    when the take-profit fills in part, or a leg was cancelled by hand) or ``ended`` (both
    legs final, none filled: cancelled, expired or rejected)."""
    legs = [states[k] for k in LISTS[kind] if k in states]
    if not legs:
        return "unplaced"
    if any(st.status == "FILLED" or (st.is_final and st.executed_qty > 0.0) for st in legs):
        return "filled"
    open_legs = sum(not st.is_final for st in legs)
    if open_legs == len(legs):
        return "resting"
    return "broken" if open_legs else "ended"


def desired_lists(
    states: Mapping[str, OrderState], plan: ListPlan, *, move_to_be: bool
) -> list[str]:
    """The lists that must rest now: A (and B when split) until TP1 fills; then B, or B'
    with ``move_to_be`` (the kernel's stop at the entry price from the next bar on)."""
    if not plan.split:
        return ["oco"]
    tp1 = states.get("tp1")
    if tp1 is None or tp1.status != "FILLED":
        return ["oco", "oco2"]
    return ["ocobe"] if move_to_be else ["oco2"]
