"""The Algo Order API of the fake exchange (:mod:`atra.sim.order_desk`): ``POST/GET/DELETE
/fapi/v1/algoOrder`` and ``GET /fapi/v1/openAlgoOrders``, SIGNED like every order endpoint.

Conditional orders (STOP_MARKET, TAKE_PROFIT_MARKET) are placed in the
:class:`~atra.sim.venue.MatchingEngine`'s algo service (``algoType=CONDITIONAL``,
``triggerPrice``, ``clientAlgoId``; generated as ``fakealgo-N`` when not sent), looked up and
cancelled by ``clientAlgoId`` or ``algoId`` (no ``symbol``, as documented), listed by
``openAlgoOrders`` (weight 1 with a symbol, 40 without; a new algo order weighs 0 and counts
one order; a query or a cancel weighs 1). Answers are compact by default (every field the order
client reads, numbers as the shortest string that reads back) and, in the documented mode,
exactly the fields of Binance's examples (tests/fixtures/binance/orders/*algo*.json) at the
symbol's precision; a cancel is always answered as documented (``{"algoId", "clientAlgoId",
"code": "200", "msg": "success"}``). Algo orders placed by hand (:meth:`AlgoDesk.hold_manual`,
JSON as Binance lists them) are listed, found and cancelled, never matched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from atra.adapters.orders import (
    ALGO_STATUSES,
    ERR_CANCEL_UNKNOWN,
    ERR_UNKNOWN_ORDER,
    AlgoState,
    OrderRequest,
    SymbolRules,
)
from atra.sim.venue import MatchingEngine
from atra.sim.wire import Reject, bool_param, decimals, float_param, fmt, int_param, padded

ALGO_ENDPOINTS: Final[frozenset[str]] = frozenset({"algoOrder", "openAlgoOrders"})
_SENT_BY: Final[str] = "Param 'algoId' or 'clientAlgoId' must be sent, but both were empty/null!"


def algo_weight(endpoint: str, params: Mapping[str, str], method: str) -> int | None:
    """Request weight of an Algo Order API call (None for another endpoint): New Algo Order 0
    (it counts against the ORDERS limits), Query / Cancel Algo Order 1, openAlgoOrders 1 with a
    symbol and 40 without."""
    if endpoint == "openAlgoOrders":
        return 1 if params.get("symbol") else 40
    if endpoint == "algoOrder":
        return 0 if method == "POST" else 1
    return None


def algo_request(params: Mapping[str, str], auto_id: Callable[[], str]) -> OrderRequest:
    """The conditional order of a ``POST /fapi/v1/algoOrder`` (Binance's codes for a bad
    parameter)."""
    for name in ("algoType", "symbol", "side", "type"):
        if not params.get(name):
            raise Reject(400, -1102, f"Mandatory parameter '{name}' was not sent.")
    if params["algoType"] != "CONDITIONAL":
        raise Reject(400, -1130, "Data sent for parameter 'algoType' is not valid.")
    if params["side"] not in ("BUY", "SELL"):
        raise Reject(400, -1117, "Invalid side.")
    if params.get("positionSide", "BOTH") != "BOTH":
        raise Reject(400, -4061, "Order's position side does not match user's setting.")
    if params.get("timeInForce", "GTC") != "GTC":
        raise Reject(400, -1115, "Invalid timeInForce.")
    close = bool_param(params, "closePosition")
    reduce_only = bool_param(params, "reduceOnly")
    if close and "reduceOnly" in params:
        raise Reject(400, -1106, "Parameter 'reduceOnly' sent when not required.")
    return OrderRequest(
        symbol=params["symbol"],
        side=params["side"],  # type: ignore[arg-type]
        type=params["type"],  # type: ignore[arg-type]
        client_order_id=params.get("clientAlgoId") or auto_id(),
        quantity=float_param(params, "quantity"),
        stop_price=float_param(params, "triggerPrice"),
        reduce_only=reduce_only,
        close_position=close,
    )


def _algo_head(a: AlgoState) -> dict[str, object]:
    """The fields that open every algo order object: its ids, type, symbol and side."""
    return {
        "algoId": a.algo_id,
        "clientAlgoId": a.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": a.order_type,
        "symbol": a.symbol,
        "side": a.side,
        "positionSide": "BOTH",
    }


def algo_json(a: AlgoState) -> dict[str, object]:
    """An algo order with the fields the order client reads (numbers as strings)."""
    row: dict[str, object] = {
        **_algo_head(a),
        "quantity": fmt(a.quantity),
        "algoStatus": a.algo_status,
        "actualOrderId": "" if a.actual_order_id is None else str(a.actual_order_id),
        "triggerPrice": fmt(a.trigger_price),
        "price": fmt(a.price),
        "closePosition": a.close_position,
        "reduceOnly": a.reduce_only,
        "workingType": "CONTRACT_PRICE",
        "createTime": a.create_time_ms,
        "updateTime": a.update_time_ms,
    }
    if a.actual_qty is not None and a.actual_price is not None:
        row["actualQty"] = fmt(a.actual_qty)
        row["actualPrice"] = fmt(a.actual_price)
    return row


def documented_algo_json(a: AlgoState, rules: SymbolRules, endpoint: str) -> dict[str, object]:
    """An algo order in the shape Binance documents for ``endpoint`` (``algoOrder POST``;
    ``algoOrder GET`` and ``openAlgoOrders``, which share one shape): every documented field in
    the documented order, quantities at the step's decimals, prices at the tick's,
    ``actualPrice`` (the average fill price once triggered) with at least 5 decimals."""
    qd, pd_ = decimals(rules.step_size), decimals(rules.tick_size)
    triggered = a.actual_order_id is not None
    row: dict[str, object] = {
        **_algo_head(a),
        "timeInForce": "GTC",
        "quantity": padded(a.quantity, qd),
        "algoStatus": a.algo_status,
    }
    if endpoint != "algoOrder POST":
        row["actualOrderId"] = str(a.actual_order_id) if triggered else ""
        row["actualPrice"] = padded(a.actual_price or 0.0, max(5, pd_))
    row |= {
        "triggerPrice": padded(a.trigger_price, pd_),
        "price": padded(a.price, pd_),
        "icebergQuantity": None,
    }
    if endpoint != "algoOrder POST":
        zero = padded(0.0, pd_)
        row |= {"tpTriggerPrice": zero, "tpPrice": zero, "slTriggerPrice": zero, "slPrice": zero}
        row["tpOrderType"] = ""
    row |= {
        "selfTradePreventionMode": "NONE",
        "workingType": "CONTRACT_PRICE",
        "priceMatch": "NONE",
        "closePosition": a.close_position,
        "priceProtect": False,
        "reduceOnly": a.reduce_only,
    }
    if endpoint == "algoOrder POST":
        row |= {"activatePrice": "", "callbackRate": ""}
    row |= {
        "createTime": a.create_time_ms,
        "updateTime": a.update_time_ms,
        "triggerTime": a.update_time_ms if triggered else 0,
        "goodTillDate": 0,
    }
    return row


def cancel_json(algo_id: object, client_algo_id: object) -> dict[str, object]:
    """Cancel Algo Order's answer, as documented."""
    return {"algoId": algo_id, "clientAlgoId": client_algo_id, "code": "200", "msg": "success"}


class AlgoDesk:
    """The Algo Order API over a matching engine (see the module docstring). ``rules(symbol)``
    are the filters the documented shapes format numbers with."""

    def __init__(self, rules: Callable[[str], SymbolRules]) -> None:
        self._rules = rules
        self._manual: dict[str, dict[str, object]] = {}  # clientAlgoId -> algo order JSON
        self._auto_ids = 0

    def hold_manual(self, order: Mapping[str, object]) -> None:
        """Put an algo order placed by hand (Binance's JSON, any order type) in the account."""
        cid = order.get("clientAlgoId")
        if not isinstance(cid, str) or not cid:
            raise ValueError(f"a manual algo order needs a clientAlgoId, got {cid!r}")
        status = order.get("algoStatus")
        if status not in ALGO_STATUSES:
            raise ValueError(f"manual algo order {cid}: algoStatus {status!r} is not Binance's")
        self._manual[cid] = dict(order)

    def _auto_id(self) -> str:
        self._auto_ids += 1
        return f"fakealgo-{self._auto_ids}"

    def _json(self, a: AlgoState, endpoint: str, documented: bool) -> dict[str, object]:
        if documented:
            return documented_algo_json(a, self._rules(a.symbol), endpoint)
        return algo_json(a)

    def place(self, engine: MatchingEngine, params: Mapping[str, str], now_ms: int) -> AlgoState:
        """``POST /fapi/v1/algoOrder``: the placed algo order (raises VenueReject / Reject)."""
        return engine.place_algo(algo_request(params, self._auto_id), now_ms)

    def answer(
        self,
        engine: MatchingEngine,
        method: str,
        endpoint: str,
        params: Mapping[str, str],
        now_ms: int,
        *,
        documented: bool,
    ) -> object:
        """The answer of a GET / DELETE of ``algoOrder`` or a GET of ``openAlgoOrders``."""
        if endpoint == "openAlgoOrders":
            return self._open(engine, params, now_ms, documented)
        cid = params.get("clientAlgoId")
        if not cid:
            algo_id = int_param(params, "algoId")
            if algo_id is None:
                raise Reject(400, -1102, _SENT_BY)
            cid = engine.algo_client_id(algo_id) or next(
                (k for k, o in self._manual.items() if o.get("algoId") == algo_id), ""
            )
        manual = self._manual.get(cid)
        if manual is not None:
            return self._manual_answer(manual, method, now_ms)
        if method == "DELETE":
            a = engine.cancel_algo(cid, now_ms)  # -2011 for an unknown or final one
            return cancel_json(a.algo_id, a.client_algo_id)
        a_state = engine.get_algo(cid, now_ms)
        if a_state is None:
            raise Reject(400, ERR_UNKNOWN_ORDER, "Order does not exist.")
        return self._json(a_state, "algoOrder GET", documented)

    def _open(
        self, engine: MatchingEngine, params: Mapping[str, str], now_ms: int, documented: bool
    ) -> list[dict[str, object]]:
        symbol = params.get("symbol")
        if params.get("algoType", "CONDITIONAL") != "CONDITIONAL":
            raise Reject(400, -1130, "Data sent for parameter 'algoType' is not valid.")
        algo_id = int_param(params, "algoId")
        own = [
            self._json(a, "openAlgoOrders", documented)
            for a in engine.open_algo_orders(symbol, now_ms)
        ]
        manual = [
            o
            for o in self._manual.values()
            if o.get("algoStatus") == "NEW" and (symbol is None or o.get("symbol") == symbol)
        ]
        rows = sorted(own + manual, key=lambda o: int(str(o["algoId"])))
        return [o for o in rows if algo_id is None or o["algoId"] == algo_id]

    def _manual_answer(self, order: dict[str, object], method: str, now_ms: int) -> object:
        if method != "DELETE":
            return order
        if order.get("algoStatus") != "NEW":
            raise Reject(400, ERR_CANCEL_UNKNOWN, "Unknown order sent.")
        order.update(algoStatus="CANCELED", updateTime=now_ms)
        return cancel_json(order.get("algoId"), order.get("clientAlgoId"))

    def new_answer(self, a: AlgoState, documented: bool) -> dict[str, object]:
        """The answer of ``POST /fapi/v1/algoOrder`` for the placed ``a``."""
        return self._json(a, "algoOrder POST", documented)


def manual_algo_json(
    symbol: str,
    client_algo_id: str,
    algo_id: int,
    *,
    order_type: str = "TAKE_PROFIT",
    side: str = "SELL",
    quantity: str = "0.01",
    trigger_price: str = "750.000",
    time_ms: int = 1_750_514_941_540,
) -> dict[str, object]:
    """A resting algo order placed by hand, as Binance's Current All Algo Open Orders example
    documents it (a TAKE_PROFIT limit order by default: a type ATRA never places)."""
    return {
        "algoId": algo_id,
        "clientAlgoId": client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": order_type,
        "symbol": symbol,
        "side": side,
        "positionSide": "BOTH",
        "timeInForce": "GTC",
        "quantity": quantity,
        "algoStatus": "NEW",
        "actualOrderId": "",
        "actualPrice": "0.00000",
        "triggerPrice": trigger_price,
        "price": trigger_price,
        "icebergQuantity": None,
        "tpTriggerPrice": "0.000",
        "tpPrice": "0.000",
        "slTriggerPrice": "0.000",
        "slPrice": "0.000",
        "tpOrderType": "",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "workingType": "CONTRACT_PRICE",
        "priceMatch": "NONE",
        "closePosition": False,
        "priceProtect": False,
        "reduceOnly": False,
        "createTime": time_ms,
        "updateTime": time_ms,
        "triggerTime": 0,
        "goodTillDate": 0,
    }
