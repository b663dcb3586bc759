"""The spot broker's exit lists (:mod:`atra.live.spot_plan`): quantities, prices and client
ids of A / B / B', the fall-back to one list, which lists must rest, a list's state."""

from __future__ import annotations

import pytest

from atra.adapters.journal.records import PositionRecord
from atra.adapters.orders import OrderState
from atra.adapters.trading.spot_wire import SpotRules
from atra.live.paper import OPEN, client_order_id
from atra.live.spot_plan import LISTS, desired_lists, list_state, plan_lists

RUN = "r"
POS = PositionRecord(
    "p", "s", "BTCUSDT", 1, 1_000, 0.007, 150.0, 100.0, 300.0, 10, OPEN,
    entry_time_ms=4_600_000, entry_price=40_000.0,
)  # fmt: skip
RULES = SpotRules("BTCUSDT", step_size=0.001, min_qty=0.001, tick_size=0.01, min_notional=5.0)


def state(cid: str, status: str, executed: float = 0.0) -> OrderState:
    return OrderState(
        symbol="BTCUSDT", client_order_id=cid, order_id=1, side="SELL", type="LIMIT",
        status=status, orig_qty=0.003, executed_qty=executed, avg_price=0.0, price=0.0,
        stop_price=0.0, reduce_only=False, close_position=False, update_time_ms=1,
    )  # type: ignore[arg-type]  # fmt: skip


def test_two_lists_split_the_quantity_bought_at_the_step() -> None:
    plan = plan_lists(POS, RULES, run_id=RUN, tp1_fraction=0.6)
    a, b, b2 = (plan.requests[k] for k in ("oco", "oco2", "ocobe"))
    assert plan.split
    assert plan.fallback is None
    # 0.007 x 0.6 = 0.0042 -> 0.004 (down to the step), the remainder to B: A + B = bought
    assert (a.quantity, b.quantity, b2.quantity) == (0.004, 0.003, 0.003)
    assert (a.take_price, b.take_price, b2.take_price) == (40_100.0, 40_300.0, 40_300.0)
    assert (a.stop_price, b.stop_price, b2.stop_price) == (39_850.0, 39_850.0, 40_000.0)
    ids = {
        kind: client_order_id(RUN, "BTCUSDT", 1_000, kind)
        for kind in ("oco", "oco2", "ocobe", "tp1", "sl", "tp2", "sl2", "tp2be", "be")
    }
    assert len(set(ids.values())) == 9  # one id per list and per leg
    for name, req in plan.requests.items():
        take, stop = LISTS[name]
        assert (req.list_client_order_id, req.take_client_order_id, req.stop_client_order_id) == (
            ids[name], ids[take], ids[stop]
        )  # fmt: skip


def test_one_list_without_a_split() -> None:
    plan = plan_lists(POS, RULES, run_id=RUN, tp1_fraction=1.0)
    (only,) = plan.requests.values()
    assert (only.quantity, plan.split, plan.fallback) == (0.007, False, None)


@pytest.mark.parametrize(
    ("rules", "why"),
    [
        (SpotRules("BTCUSDT", 0.001, 0.004, 0.01, 5.0), "below the minimum quantity 0.004"),
        (SpotRules("BTCUSDT", 0.001, 0.001, 0.01, 150.0), "below the minimum 150.0"),
    ],
)
def test_a_part_below_a_minimum_falls_back_to_one_list(rules: SpotRules, why: str) -> None:
    """0.003 x 39,850 = 119.55 at the stop: under a 150 NOTIONAL; 0.003 < a 0.004 LOT_SIZE."""
    plan = plan_lists(POS, rules, run_id=RUN, tp1_fraction=0.6)
    (only,) = plan.requests.values()
    assert only.quantity == 0.007
    assert only.list_client_order_id == client_order_id(RUN, "BTCUSDT", 1_000, "oco")
    assert plan.fallback is not None
    assert why in plan.fallback


def test_the_lists_that_must_rest() -> None:
    split = plan_lists(POS, RULES, run_id=RUN, tp1_fraction=0.5)
    one = plan_lists(POS, RULES, run_id=RUN, tp1_fraction=1.0)
    assert desired_lists({}, split, move_to_be=True) == ["oco", "oco2"]
    assert desired_lists({}, one, move_to_be=True) == ["oco"]
    tp1_open = {"tp1": state("t", "NEW")}
    assert desired_lists(tp1_open, split, move_to_be=True) == ["oco", "oco2"]
    tp1_filled = {"tp1": state("t", "FILLED", 0.003)}
    assert desired_lists(tp1_filled, split, move_to_be=True) == ["ocobe"]
    assert desired_lists(tp1_filled, split, move_to_be=False) == ["oco2"]


def test_a_lists_state_from_its_legs() -> None:
    assert list_state({}, "oco") == "unplaced"
    assert list_state({"tp1": state("t", "NEW"), "sl": state("s", "NEW")}, "oco") == "resting"
    done = {"tp1": state("t", "EXPIRED"), "sl": state("s", "FILLED", 0.003)}
    assert list_state(done, "oco") == "filled"
    partial = {"tp1": state("t", "CANCELED", 0.001), "sl": state("s", "CANCELED")}
    assert list_state(partial, "oco") == "filled"  # a partial fill is a fill: booked
    # the take-profit filled in part: Binance expired the stop, the take-profit still rests
    partial_open = {"tp1": state("t", "PARTIALLY_FILLED", 0.001), "sl": state("s", "EXPIRED")}
    assert list_state(partial_open, "oco") == "broken"
    by_hand = {"tp1": state("t", "NEW"), "sl": state("s", "CANCELED")}
    assert list_state(by_hand, "oco") == "broken"
    gone = {"tp2": state("t", "CANCELED"), "sl2": state("s", "EXPIRED")}
    assert list_state(gone, "oco2") == "ended"
    assert list_state(gone, "oco") == "unplaced"
