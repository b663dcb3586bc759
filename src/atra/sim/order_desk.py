"""The signed USDT-M order endpoints of the fake exchange (:mod:`atra.sim.exchange`).

``POST/GET/DELETE /fapi/v1/order``, ``GET /fapi/v1/openOrders``, ``GET /fapi/v2/positionRisk``
and the Algo Order API (``POST/GET/DELETE /fapi/v1/algoOrder``, ``GET /fapi/v1/openAlgoOrders``:
:mod:`atra.sim.algo_desk`), all SIGNED (see :mod:`atra.adapters.orders`: ``X-MBX-APIKEY``,
HMAC-SHA256 ``signature`` over the raw query string, ``timestamp`` within ``recvWindow`` of the
wall clock). They run on a
:class:`~atra.sim.venue.MatchingEngine` built on first use over the PERP candles of
ONE timeframe, that of the first PERP candle key given; market time comes from
``market_clock`` (seconds; a replay passes its simulated clock). Order fields and error codes
are Binance's. As on Binance since 2025-12-09, ``POST /fapi/v1/order`` refuses the conditional
types (STOP_MARKET, TAKE_PROFIT_MARKET, STOP, TAKE_PROFIT, TRAILING_STOP_MARKET) with HTTP 400
``{"code": -4120, "msg": "Order type not supported for this endpoint. Please use the Algo Order
API endpoints instead."}``; they are placed on ``/fapi/v1/algoOrder``. ``GET /fapi/v1/order``
finds an order by ``origClientOrderId`` or ``orderId`` (a triggered algo order's
``actualOrderId``).

Answer shapes: by default compact (every field the order client reads, numbers as the shortest
string that reads back). With :attr:`FakeOrderDesk.documented` the answers are the shapes
Binance documents for each endpoint (tests/fixtures/binance/orders/): every documented field,
numbers as fixed-decimal strings at the symbol's precision (``"0.40"``, ``"0.00000"``), numeric
order ids, and cancel answers without ``avgPrice``. Orders placed by hand (e.g. a
TRAILING_STOP_MARKET, :func:`trailing_stop_json`) can be held in the account
(:meth:`FakeOrderDesk.hold_manual_order`): listed by openOrders, found by a query, cancelled
by a DELETE, never matched; algo orders placed by hand likewise
(:meth:`FakeOrderDesk.hold_manual_algo_order`, :func:`atra.sim.algo_desk.manual_algo_json`).
:attr:`FakeOrderDesk.unreadable_posts` answers the next accepted POSTs (of either API) with HTTP
200 and a JSON body that is not an order (the order is placed).

The weight table below is kept apart from the client's on purpose: the fake is the oracle.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Final

import pandas as pd
from aiohttp import web

from atra.adapters.orders import (
    ALGO_ONLY_MSG,
    CONDITIONAL_TYPES,
    ERR_ALGO_ONLY,
    ERR_CANCEL_UNKNOWN,
    ERR_INVALID_SIGNATURE,
    ERR_TIMESTAMP,
    ERR_UNAUTHORIZED,
    ERR_UNKNOWN_ORDER,
    OrderRequest,
    OrderState,
    SymbolRules,
    verify_signature,
)
from atra.core.types import Market, Timeframe
from atra.sim.algo_desk import ALGO_ENDPOINTS, AlgoDesk, algo_weight
from atra.sim.book import VenueReject
from atra.sim.venue import MatchingEngine
from atra.sim.wire import (
    CandleKey,
    Reject,
    bool_param,
    decimals,
    fixed,
    float_param,
    fmt,
    int_param,
    padded,
)

__all__ = [
    "SIGNED_ENDPOINTS",
    "FakeOrderDesk",
    "documented_order_json",
    "order_json",
    "padded",
    "signed_weight",
    "trailing_stop_json",
]

SIGNED_ENDPOINTS: Final[frozenset[str]] = (
    frozenset({"order", "openOrders", "positionRisk"}) | ALGO_ENDPOINTS
)
_WEIGHTS: Final[dict[str, int]] = {"order": 1, "positionRisk": 5}  # openOrders: signed_weight


def signed_weight(endpoint: str, params: Mapping[str, str], method: str = "GET") -> int | None:
    """Request weight of a signed endpoint (``openOrders``: 1 for one symbol, 40 for all; the
    Algo Order API's: :func:`atra.sim.algo_desk.algo_weight`); None for an endpoint that is not
    signed."""
    if endpoint == "openOrders":
        return 1 if params.get("symbol") else 40
    if endpoint in ALGO_ENDPOINTS:
        return algo_weight(endpoint, params, method)
    return _WEIGHTS.get(endpoint)


class FakeOrderDesk:
    """Answers the signed endpoints of a :class:`~atra.sim.exchange.FakeExchange`.

    ``api_key=None`` accepts any ``X-MBX-APIKEY``; ``api_secret=None`` does not check
    signatures. ``candle_frames`` are the exchange's candles (read when the engine is built).
    """

    def __init__(
        self,
        candle_frames: Mapping[CandleKey, pd.DataFrame],
        *,
        api_key: str | None = None,
        api_secret: str | None = None,
        market_clock: Callable[[], float] | None = None,
        slippage_bps: float = 0.0,
        symbol_rules: Mapping[str, SymbolRules] | None = None,
    ) -> None:
        self._candle_frames = candle_frames
        self.api_key = api_key
        """``X-MBX-APIKEY`` the signed endpoints require (None: any key)."""
        self.api_secret = api_secret
        """Secret the signatures are checked with (None: signatures are not checked)."""
        self.market_clock: Callable[[], float] = market_clock or time.time
        self.slippage_bps = slippage_bps
        self._symbol_rules = dict(symbol_rules or {})
        self._engine: MatchingEngine | None = None
        self._auto_ids = 0
        self.documented = False
        """Answer in the shapes Binance documents (see the module docstring)."""
        self.unreadable_posts = 0
        """How many of the next accepted POSTs get an unreadable (not an order) 200 answer."""
        self._manual: dict[str, dict[str, object]] = {}  # client id -> order JSON
        self.algos = AlgoDesk(self.symbol_rules)
        """The Algo Order API (conditional orders)."""

    def hold_manual_order(self, order: Mapping[str, object]) -> None:
        """Put an order placed by hand (Binance order JSON, any type) in the account."""
        cid = order.get("clientOrderId")
        if not isinstance(cid, str) or not cid:
            raise ValueError(f"a manual order needs a clientOrderId, got {cid!r}")
        self._manual[cid] = dict(order)

    def hold_manual_algo_order(self, order: Mapping[str, object]) -> None:
        """Put an algo order placed by hand (Binance algo order JSON) in the account."""
        self.algos.hold_manual(order)

    def _manual_open(self, symbol: str | None) -> list[dict[str, object]]:
        return [
            o
            for o in self._manual.values()
            if o.get("status") in ("NEW", "PARTIALLY_FILLED")
            and (symbol is None or o.get("symbol") == symbol)
        ]

    def _order(self, o: OrderState, endpoint: str) -> dict[str, object]:
        if not self.documented:
            return order_json(o)
        rules = self.symbol_rules(o.symbol)
        return documented_order_json(o, rules, endpoint)

    @property
    def engine(self) -> MatchingEngine:
        """The matching engine behind the order endpoints, built on first use over the PERP
        candles of the timeframe of the first PERP candle key."""
        if self._engine is None:
            keys = [k for k in self._candle_frames if k[0] is Market.PERP]
            tf = keys[0][2] if keys else Timeframe.H1
            frames = {s: self._candle_frames[(m, s, t)] for m, s, t in keys if t is tf}
            rules = {s: r for s, r in self._symbol_rules.items() if s in frames}
            self._engine = MatchingEngine(
                frames, tf.ms, slippage_bps=self.slippage_bps, rules=rules
            )
        return self._engine

    def symbol_rules(self, symbol: str) -> SymbolRules:
        """The order filters served for ``symbol`` (defaults: step and tick 1e-9, no minimum)."""
        rules = self._symbol_rules.get(symbol)
        return rules or SymbolRules(symbol, step_size=1e-9, min_qty=0.0, tick_size=1e-9)

    def _authenticate(self, request: web.Request, params: Mapping[str, str]) -> None:
        if self.api_key is not None and request.headers.get("X-MBX-APIKEY") != self.api_key:
            msg = "Invalid API-key, IP, or permissions for action."
            raise Reject(401, ERR_UNAUTHORIZED, msg)
        if self.api_secret is not None and not verify_signature(
            request.query_string, self.api_secret
        ):
            raise Reject(400, ERR_INVALID_SIGNATURE, "Signature for this request is not valid.")
        ts = int_param(params, "timestamp")
        if ts is None:
            raise Reject(400, -1102, "Mandatory parameter 'timestamp' was not sent.")
        window = int_param(params, "recvWindow") or 5000
        if window > 60000:
            raise Reject(400, -1131, "recvWindow must be less than 60000")
        wall_ms = int(time.time() * 1000)
        if ts >= wall_ms + 1000 or wall_ms - ts > window:
            msg = "Timestamp for this request is outside of the recvWindow."
            raise Reject(400, ERR_TIMESTAMP, msg)

    def answer(self, request: web.Request, endpoint: str, params: Mapping[str, str]) -> str:
        """The answer body of a signed ``endpoint`` (raises :class:`Reject` for an error)."""
        self._authenticate(request, params)
        engine = self.engine
        now_ms = int(self.market_clock() * 1000)
        symbol = params.get("symbol")
        try:
            if endpoint in ALGO_ENDPOINTS:
                return self._algo_answer(request.method, endpoint, params, now_ms)
            if endpoint == "positionRisk":
                return self._position_risk(engine, symbol, now_ms)
            if endpoint == "openOrders":
                own = [self._order(o, "openOrders") for o in engine.open_orders(symbol, now_ms)]
                rows = sorted(own + self._manual_open(symbol), key=lambda o: int(str(o["orderId"])))
                return json.dumps(rows)
            if not symbol:
                raise Reject(400, -1102, "Mandatory parameter 'symbol' was not sent.")
            if request.method == "POST":
                placed = engine.place(self._order_request(params), now_ms)
                if self.unreadable_posts > 0:
                    self.unreadable_posts -= 1
                    return json.dumps({"orderId": placed.order_id, "symbol": placed.symbol})
                return json.dumps(self._order(placed, "order POST"))
            cid = params.get("origClientOrderId")
            if not cid and params.get("orderId") and request.method == "GET":
                return self._order_by_id(engine, symbol, params, now_ms)
            if not cid:
                msg = (
                    "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
                )
                raise Reject(400, -1102, msg)
            manual = self._manual.get(cid)
            if manual is not None and manual.get("symbol") == symbol:
                return json.dumps(self._manual_answer(manual, request.method, now_ms))
            if request.method == "DELETE":
                return json.dumps(self._order(engine.cancel(symbol, cid, now_ms), "order DELETE"))
            engine.rules(symbol)  # -1121 for an unknown symbol
            state = engine.get(symbol, cid, now_ms)
            if state is None:
                raise Reject(400, ERR_UNKNOWN_ORDER, "Order does not exist.")
            return json.dumps(self._order(state, "order GET"))
        except VenueReject as rej:
            raise Reject(rej.status, rej.code, rej.msg) from None

    def _order_by_id(
        self, engine: MatchingEngine, symbol: str, params: Mapping[str, str], now_ms: int
    ) -> str:
        order_id = int_param(params, "orderId")
        engine.rules(symbol)  # -1121 for an unknown symbol
        state = None if order_id is None else engine.get_by_id(symbol, order_id, now_ms)
        if state is not None:
            return json.dumps(self._order(state, "order GET"))
        manual = next(
            (o for o in self._manual.values() if o.get("orderId") == order_id
             and o.get("symbol") == symbol), None,
        )  # fmt: skip
        if manual is None:
            raise Reject(400, ERR_UNKNOWN_ORDER, "Order does not exist.")
        return json.dumps(manual)

    def _algo_answer(
        self, method: str, endpoint: str, params: Mapping[str, str], now_ms: int
    ) -> str:
        engine = self.engine
        if method == "POST":
            placed = self.algos.place(engine, params, now_ms)
            if self.unreadable_posts > 0:
                self.unreadable_posts -= 1
                return json.dumps({"algoId": placed.algo_id, "symbol": placed.symbol})
            return json.dumps(self.algos.new_answer(placed, self.documented))
        answer = self.algos.answer(
            engine, method, endpoint, params, now_ms, documented=self.documented
        )
        return json.dumps(answer)

    def _manual_answer(
        self, order: dict[str, object], method: str, now_ms: int
    ) -> dict[str, object]:
        if method != "DELETE":
            return order
        if order.get("status") not in ("NEW", "PARTIALLY_FILLED"):
            raise Reject(400, ERR_CANCEL_UNKNOWN, "Unknown order sent.")
        order.update(status="CANCELED", updateTime=now_ms)
        return {k: v for k, v in order.items() if k not in ("avgPrice", "time")}

    def _order_request(self, params: Mapping[str, str]) -> OrderRequest:
        for name in ("side", "type"):
            if not params.get(name):
                raise Reject(400, -1102, f"Mandatory parameter '{name}' was not sent.")
        side, type_ = params["side"], params["type"]
        if side not in ("BUY", "SELL"):
            raise Reject(400, -1117, "Invalid side.")
        if type_ in CONDITIONAL_TYPES:  # since 2025-12-09: the Algo Order API only
            raise Reject(400, ERR_ALGO_ONLY, ALGO_ONLY_MSG)
        if type_ not in ("MARKET", "LIMIT"):
            raise Reject(400, -1116, "Invalid orderType.")
        if params.get("positionSide", "BOTH") != "BOTH":
            raise Reject(400, -4061, "Order's position side does not match user's setting.")
        if params.get("timeInForce", "GTC") != "GTC":
            raise Reject(400, -1115, "Invalid timeInForce.")
        cid = params.get("newClientOrderId")
        if not cid:
            self._auto_ids += 1
            cid = f"fake-{self._auto_ids}"
        return OrderRequest(
            symbol=params["symbol"],
            side=side,  # type: ignore[arg-type]
            type=type_,  # type: ignore[arg-type]
            client_order_id=cid,
            quantity=float_param(params, "quantity"),
            price=float_param(params, "price"),
            stop_price=float_param(params, "stopPrice"),
            reduce_only=bool_param(params, "reduceOnly"),
            close_position=bool_param(params, "closePosition"),
        )

    def _position_risk(self, engine: MatchingEngine, symbol: str | None, now_ms: int) -> str:
        symbols = engine.symbols
        if symbol:
            engine.rules(symbol)  # -1121 for an unknown symbol
            symbols = [symbol]
        engine.advance(now_ms)
        rows = []
        for sym in symbols:
            pos = engine.position(sym)
            mark = engine.last_price(sym)
            pnl = pos.quantity * (mark - pos.entry_price) if pos.quantity else 0.0
            row: dict[str, object] = {
                "symbol": sym,
                "positionAmt": fmt(pos.quantity) if pos.quantity else "0",
                "entryPrice": fmt(pos.entry_price),
                "markPrice": fmt(mark),
                "unRealizedProfit": fmt(pnl),
                "leverage": "1",
                "positionSide": "BOTH",
            }
            if self.documented:
                rules = self.symbol_rules(sym)
                qd, pd_ = decimals(rules.step_size), decimals(rules.tick_size)
                row = {
                    "entryPrice": padded(pos.entry_price, max(pd_, 5)),
                    "breakEvenPrice": padded(pos.entry_price, 1),
                    "marginType": "cross",
                    "isAutoAddMargin": "false",
                    "isolatedMargin": "0.00000000",
                    "leverage": "1",
                    "liquidationPrice": "0",
                    "markPrice": padded(mark, 8),
                    "maxNotionalValue": "20000000",
                    "positionAmt": padded(pos.quantity, qd),
                    "notional": fixed(pos.quantity * mark),
                    "isolatedWallet": "0",
                    "symbol": sym,
                    "unRealizedProfit": padded(pnl, 8),
                    "positionSide": "BOTH",
                    "updateTime": now_ms if pos.quantity else 0,
                }
            rows.append(row)
        return json.dumps(rows)


def order_json(o: OrderState) -> dict[str, object]:
    """An order as Binance futures reports it (numbers as strings)."""
    return {
        "orderId": o.order_id,
        "symbol": o.symbol,
        "status": o.status,
        "clientOrderId": o.client_order_id,
        "price": fmt(o.price),
        "avgPrice": fmt(o.avg_price),
        "origQty": fmt(o.orig_qty),
        "executedQty": fmt(o.executed_qty),
        "cumQuote": fmt(o.executed_qty * o.avg_price),
        "timeInForce": "GTC",
        "type": o.type,
        "reduceOnly": o.reduce_only,
        "closePosition": o.close_position,
        "side": o.side,
        "positionSide": "BOTH",
        "stopPrice": fmt(o.stop_price),
        "workingType": "CONTRACT_PRICE",
        "origType": o.type,
        "updateTime": o.update_time_ms,
    }


def documented_order_json(o: OrderState, rules: SymbolRules, endpoint: str) -> dict[str, object]:
    """An order in the shape Binance documents for ``endpoint`` (``order POST``, ``order GET``,
    ``order DELETE``, ``openOrders``): every documented field, quantities at the step's
    decimals, prices at the tick's, ``avgPrice`` with at least 5 decimals, numeric ids; the
    cancel answer has no ``avgPrice``, the query answers carry ``time``."""
    qd, pd_ = decimals(rules.step_size), decimals(rules.tick_size)
    row: dict[str, object] = {
        "avgPrice": padded(o.avg_price, max(5, pd_)),
        "clientOrderId": o.client_order_id,
        "cumQty": padded(o.executed_qty, qd),
        "cumQuote": padded(o.executed_qty * o.avg_price, 5),
        "executedQty": padded(o.executed_qty, qd),
        "orderId": o.order_id,
        "origQty": padded(o.orig_qty, qd),
        "origType": o.type,
        "price": padded(o.price, pd_) if o.price else "0",
        "reduceOnly": o.reduce_only,
        "side": o.side,
        "positionSide": "BOTH",
        "status": o.status,
        "stopPrice": padded(o.stop_price, pd_) if o.stop_price else "0",
        "closePosition": o.close_position,
        "symbol": o.symbol,
        "timeInForce": "GTC",
        "type": o.type,
        "updateTime": o.update_time_ms,
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "NONE",
        "goodTillDate": 0,
    }
    if endpoint == "order DELETE":
        del row["avgPrice"]
    if endpoint in ("order GET", "openOrders"):
        del row["cumQty"]
        row["time"] = o.update_time_ms
    return row


def trailing_stop_json(
    symbol: str,
    client_order_id: str,
    order_id: int,
    *,
    side: str = "SELL",
    quantity: str = "0.010",
    activate_price: str = "9020",
    price_rate: str = "0.3",
    time_ms: int = 1_579_276_756_075,
) -> dict[str, object]:
    """A resting TRAILING_STOP_MARKET order placed by hand, as Binance's Query Order
    documents it."""
    return {
        "avgPrice": "0.00000",
        "clientOrderId": client_order_id,
        "cumQuote": "0",
        "executedQty": "0",
        "orderId": order_id,
        "origQty": quantity,
        "origType": "TRAILING_STOP_MARKET",
        "price": "0",
        "reduceOnly": False,
        "side": side,
        "positionSide": "BOTH",
        "status": "NEW",
        "stopPrice": "9300",
        "closePosition": False,
        "symbol": symbol,
        "time": time_ms,
        "timeInForce": "GTC",
        "type": "TRAILING_STOP_MARKET",
        "activatePrice": activate_price,
        "priceRate": price_rate,
        "updateTime": time_ms,
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "NONE",
        "goodTillDate": 0,
    }
