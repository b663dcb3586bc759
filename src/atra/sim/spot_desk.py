"""The signed spot order endpoints of the fake exchange (:mod:`atra.sim.exchange`), on a
:class:`~atra.sim.spot_engine.SpotEngine` built on first use over the SPOT candles of one
timeframe (that of the first SPOT candle key).

``POST/GET/DELETE /api/v3/order``, ``GET /api/v3/openOrders``, ``POST /api/v3/orderList/oco``,
``GET/DELETE /api/v3/orderList`` (a list by ``origClientOrderId`` / ``listClientOrderId``),
``GET /api/v3/openOrderList`` and ``GET /api/v3/account``, signed
as the futures endpoints are (the authentication is the order desk's). Answers are in the
shapes Binance documents (tests/fixtures/binance/spot/): numbers as 8-decimal strings, a new
order answered FULL (``fills``), RESULT or ACK as ``newOrderRespType`` asks, a cancel with the
order's id in ``origClientOrderId``. :attr:`FakeSpotDesk.unreadable_posts` answers the next
accepted POSTs with HTTP 200 and a body that is not an order (the order is placed);
:attr:`FakeSpotDesk.engine`'s balances may hold assets ATRA does not own (a foreign balance).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Final

import pandas as pd
from aiohttp import web

from atra.adapters.orders import ERR_UNKNOWN_ORDER, SymbolRules
from atra.core.types import Market, Timeframe
from atra.sim.book import VenueReject
from atra.sim.spot_engine import SpotEngine, SpotList, SpotOrder
from atra.sim.wire import CandleKey, Reject, float_param, padded

__all__ = [
    "SPOT_ENDPOINTS",
    "FakeSpotDesk",
    "spot_list_json",
    "spot_order_json",
    "spot_weight",
]

SPOT_ENDPOINTS: Final[dict[str, str]] = {
    "/api/v3/order": "spotOrder",
    "/api/v3/openOrders": "spotOpenOrders",
    "/api/v3/orderList/oco": "spotOco",
    "/api/v3/orderList": "spotOrderList",
    "/api/v3/openOrderList": "spotOpenOrderList",
    "/api/v3/account": "spotAccount",
}
"""Path -> endpoint name of the signed spot endpoints."""


def spot_weight(endpoint: str, params: Mapping[str, str], method: str) -> int | None:
    """Request weight of a signed spot endpoint (None: not one)."""
    if endpoint == "spotOrder":
        return 4 if method == "GET" else 1
    if endpoint == "spotOpenOrders":
        return 6 if params.get("symbol") else 80
    if endpoint == "spotOpenOrderList":
        return 6
    if endpoint == "spotAccount":
        return 20
    if endpoint == "spotOrderList":
        return 4 if method == "GET" else 1
    if endpoint == "spotOco":
        return 1
    return None


def _n(x: float) -> str:
    return padded(x, 8)


def spot_order_json(o: SpotOrder, shape: str = "query") -> dict[str, object]:
    """``o`` as Binance spot reports it, field for field in the documented order: ``shape``
    ``query`` (Query Order, Open Orders), ``FULL`` / ``RESULT`` / ``ACK`` (New Order, an OCO's
    ``orderReports``), ``cancel`` (Cancel Order, with ``transactTime`` as Binance writes it
    since 2023) or ``listcancel`` (the ``orderReports`` of Cancel Order list, documented
    without a time: the client looks the order up). ``stopPrice`` only on a STOP_LOSS (a
    conditional field) but in a query."""
    cancel = shape in ("cancel", "listcancel")
    head: dict[str, object] = {"symbol": o.symbol}
    if cancel:
        head["origClientOrderId"] = o.cid
    head |= {"orderId": o.order_id, "orderListId": o.list_id}
    head["clientOrderId"] = f"cancel{o.order_id}" if cancel else o.cid
    if shape not in ("query", "listcancel"):
        head["transactTime"] = o.update_ms
    if shape == "ACK":
        return head
    body: dict[str, object] = {
        "price": _n(o.price),
        "origQty": _n(o.qty),
        "executedQty": _n(o.executed),
        "cummulativeQuoteQty": _n(o.quote),
        "status": o.status,
        "timeInForce": "GTC",
        "type": o.type,
        "side": o.side,
    }
    if shape == "query":
        return (
            head
            | body
            | {
                "stopPrice": _n(o.stop_price),
                "icebergQty": _n(0.0),
                "time": o.create_ms,
                "updateTime": o.update_ms,
                "isWorking": o.type != "STOP_LOSS" or o.status != "NEW",
                "workingTime": o.create_ms,
                "origQuoteOrderQty": _n(0.0),
                "selfTradePreventionMode": "NONE",
            }
        )
    if o.type == "STOP_LOSS":
        body["stopPrice"] = _n(o.stop_price)
    if not cancel:
        body["workingTime"] = o.create_ms if o.type != "STOP_LOSS" else -1
    out = head | body | {"selfTradePreventionMode": "NONE"}
    if shape == "FULL" and o.list_cid is None:
        out["fills"] = (
            [{"price": _n(o.quote / o.executed), "qty": _n(o.executed),
              "commission": _n(0.0), "commissionAsset": "BNB", "tradeId": o.order_id}]
            if o.executed > 0.0 else []
        )  # fmt: skip
    return out


def spot_list_json(listed: SpotList, reports: str | None = "FULL") -> dict[str, object]:
    """An OCO order list; ``reports`` the shape of its ``orderReports`` (None: none)."""
    out: dict[str, object] = {
        "orderListId": listed.list_id,
        "contingencyType": "OCO",
        "listStatusType": "EXEC_STARTED" if listed.status == "EXECUTING" else "ALL_DONE",
        "listOrderStatus": listed.status,
        "listClientOrderId": listed.cid,
        "transactionTime": listed.update_ms,
        "symbol": listed.symbol,
        "orders": [
            {"symbol": leg.symbol, "orderId": leg.order_id, "clientOrderId": leg.cid}
            for leg in reversed(listed.legs)  # Binance lists the below leg first
        ],
    }
    if reports is not None:
        out["orderReports"] = [spot_order_json(leg, reports) for leg in reversed(listed.legs)]
    return out


class FakeSpotDesk:
    """Answers the signed spot endpoints. ``authenticate(request, params)`` raises
    :class:`Reject` for a bad key, signature or timestamp (the order desk's check)."""

    def __init__(
        self,
        candle_frames: Mapping[CandleKey, pd.DataFrame],
        authenticate: Callable[[web.Request, Mapping[str, str]], None],
        *,
        market_clock: Callable[[], float] | None = None,
        slippage_bps: float = 0.0,
        symbol_rules: Mapping[str, SymbolRules] | None = None,
        balances: Mapping[str, float] | None = None,
    ) -> None:
        self._candle_frames = candle_frames
        self._authenticate = authenticate
        self.market_clock: Callable[[], float] = market_clock or time.time
        self.slippage_bps = slippage_bps
        self._symbol_rules = dict(symbol_rules or {})
        self._balances = balances
        self._engine: SpotEngine | None = None
        self.unreadable_posts = 0
        """How many of the next accepted POSTs get an unreadable (not an order) 200 answer."""

    @property
    def engine(self) -> SpotEngine:
        if self._engine is None:
            keys = [k for k in self._candle_frames if k[0] is Market.SPOT]
            tf = keys[0][2] if keys else Timeframe.H1
            frames = {s: self._candle_frames[(m, s, t)] for m, s, t in keys if t is tf}
            self._engine = SpotEngine(
                frames,
                tf.ms,
                slippage_bps=self.slippage_bps,
                rules=self._symbol_rules,
                balances=self._balances,
            )
        return self._engine

    def answer(self, request: web.Request, endpoint: str, params: Mapping[str, str]) -> str:
        """The answer body of a signed spot ``endpoint`` (raises :class:`Reject`)."""
        self._authenticate(request, params)
        engine = self.engine
        now_ms = int(self.market_clock() * 1000)
        symbol = params.get("symbol")
        method = request.method
        try:
            if endpoint == "spotAccount":
                engine.advance(now_ms)
                return json.dumps(self._account())
            if endpoint == "spotOpenOrders":
                rows = [spot_order_json(o) for o in engine.open_orders(symbol, now_ms)]
                return json.dumps(rows)
            if endpoint == "spotOpenOrderList":
                engine.advance(now_ms)
                lists = [s for s in engine.lists.values() if s.status == "EXECUTING"]
                return json.dumps([spot_list_json(s, None) for s in lists])
            if endpoint == "spotOrderList" and method == "GET":  # Query Order list
                listed = engine.get_list(_required(params, "origClientOrderId"), now_ms)
                if listed is None:
                    raise Reject(400, ERR_UNKNOWN_ORDER, "Order does not exist.")
                return json.dumps(spot_list_json(listed, None))
            if not symbol:
                raise Reject(400, -1102, "Mandatory parameter 'symbol' was not sent.")
            if endpoint == "spotOco":
                return self._post(self._oco(params, symbol, now_ms))
            if endpoint == "spotOrderList":
                cid = _required(params, "listClientOrderId")
                return json.dumps(
                    spot_list_json(engine.cancel_list(symbol, cid, now_ms), "listcancel")
                )
            if method == "POST":
                return self._new_order(params, symbol, now_ms)
            cid = _required(params, "origClientOrderId")
            if method == "DELETE":
                return json.dumps(spot_order_json(engine.cancel(symbol, cid, now_ms), "cancel"))
            found = engine.get(symbol, cid, now_ms)
            if found is None:
                raise Reject(400, ERR_UNKNOWN_ORDER, "Order does not exist.")
            return json.dumps(spot_order_json(found))
        except VenueReject as rej:
            raise Reject(rej.status, rej.code, rej.msg) from None

    def _post(self, body: dict[str, object]) -> str:
        if self.unreadable_posts > 0:
            self.unreadable_posts -= 1
            return json.dumps({"symbol": body.get("symbol"), "accepted": True})
        return json.dumps(body)

    def _new_order(self, params: Mapping[str, str], symbol: str, now_ms: int) -> str:
        for name in ("side", "type", "quantity"):
            _required(params, name)
        if params["type"] == "LIMIT" and params.get("timeInForce") != "GTC":
            raise Reject(400, -1115, "Invalid timeInForce.")
        shape = params.get("newOrderRespType", "FULL")
        if shape not in ("ACK", "RESULT", "FULL"):
            raise Reject(400, -1177, "Invalid newOrderRespType.")
        placed = self.engine.place(
            symbol,
            params["side"],
            params["type"],
            params.get("newClientOrderId") or f"fake-{len(self.engine.orders) + 1}",
            float_param(params, "quantity") or 0.0,
            float_param(params, "price"),
            now_ms,
        )
        return self._post(spot_order_json(placed, shape))

    def _oco(self, params: Mapping[str, str], symbol: str, now_ms: int) -> dict[str, object]:
        if _required(params, "side") != "SELL":
            raise Reject(400, -1106, "Only SELL OCO lists are modelled by the fake exchange.")
        if _required(params, "aboveType") != "LIMIT_MAKER":
            raise Reject(400, -1116, "Invalid aboveType (the fake models LIMIT_MAKER).")
        if _required(params, "belowType") != "STOP_LOSS":
            raise Reject(400, -1116, "Invalid belowType (the fake models STOP_LOSS).")
        listed = self.engine.place_oco(
            symbol,
            _required(params, "listClientOrderId"),
            float_param(params, "quantity") or 0.0,
            _required(params, "aboveClientOrderId"),
            float_param(params, "abovePrice") or 0.0,
            _required(params, "belowClientOrderId"),
            float_param(params, "belowStopPrice") or 0.0,
            now_ms,
        )
        return spot_list_json(listed, params.get("newOrderRespType", "FULL"))

    def _account(self) -> dict[str, object]:
        e = self.engine
        assets = sorted(set(e.free) | set(e.locked))
        return {
            "makerCommission": 10,
            "takerCommission": 10,
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "updateTime": e.now_ms,
            "accountType": "SPOT",
            "balances": [
                {"asset": a, "free": _n(e.free.get(a, 0.0)), "locked": _n(e.locked.get(a, 0.0))}
                for a in assets
            ],
            "permissions": ["SPOT"],
        }


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise Reject(400, -1102, f"Mandatory parameter '{name}' was not sent.")
    return value
