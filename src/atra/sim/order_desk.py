"""The signed USDT-M order endpoints of the fake exchange (:mod:`atra.sim.exchange`).

``POST/GET/DELETE /fapi/v1/order``, ``GET /fapi/v1/openOrders``, ``GET /fapi/v2/positionRisk``,
all SIGNED (see :mod:`atra.adapters.orders`: ``X-MBX-APIKEY``, HMAC-SHA256 ``signature`` over
the raw query string, ``timestamp`` within ``recvWindow`` of the wall clock). They run on a
:class:`~atra.sim.venue.MatchingEngine` built on first use over the PERP candles of
ONE timeframe, that of the first PERP candle key given; market time comes from
``market_clock`` (seconds; a replay passes its simulated clock). Order fields and error codes
are Binance's.

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
from atra.sim.book import VenueReject
from atra.sim.venue import MatchingEngine
from atra.sim.wire import (
    CandleKey,
    Reject,
    bool_param,
    float_param,
    fmt,
    int_param,
)

SIGNED_ENDPOINTS: Final[frozenset[str]] = frozenset({"order", "openOrders", "positionRisk"})
_WEIGHTS: Final[dict[str, int]] = {"order": 1, "positionRisk": 5}  # openOrders: signed_weight


def signed_weight(endpoint: str, params: Mapping[str, str]) -> int | None:
    """Request weight of a signed endpoint (``openOrders``: 1 for one symbol, 40 for all);
    None for an endpoint that is not signed."""
    if endpoint == "openOrders":
        return 1 if params.get("symbol") else 40
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
            if endpoint == "positionRisk":
                return self._position_risk(engine, symbol, now_ms)
            if endpoint == "openOrders":
                return json.dumps([order_json(o) for o in engine.open_orders(symbol, now_ms)])
            if not symbol:
                raise Reject(400, -1102, "Mandatory parameter 'symbol' was not sent.")
            if request.method == "POST":
                return json.dumps(order_json(engine.place(self._order_request(params), now_ms)))
            cid = params.get("origClientOrderId")
            if not cid:
                msg = (
                    "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
                )
                raise Reject(400, -1102, msg)
            if request.method == "DELETE":
                return json.dumps(order_json(engine.cancel(symbol, cid, now_ms)))
            engine.rules(symbol)  # -1121 for an unknown symbol
            state = engine.get(symbol, cid, now_ms)
            if state is None:
                raise Reject(400, ERR_UNKNOWN_ORDER, "Order does not exist.")
            return json.dumps(order_json(state))
        except VenueReject as rej:
            raise Reject(rej.status, rej.code, rej.msg) from None

    def _order_request(self, params: Mapping[str, str]) -> OrderRequest:
        for name in ("side", "type"):
            if not params.get(name):
                raise Reject(400, -1102, f"Mandatory parameter '{name}' was not sent.")
        side, type_ = params["side"], params["type"]
        if side not in ("BUY", "SELL"):
            raise Reject(400, -1117, "Invalid side.")
        if type_ not in ("MARKET", "LIMIT", "STOP_MARKET", "TAKE_PROFIT_MARKET"):
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
            rows.append(
                {
                    "symbol": sym,
                    "positionAmt": fmt(pos.quantity) if pos.quantity else "0",
                    "entryPrice": fmt(pos.entry_price),
                    "markPrice": fmt(mark),
                    "unRealizedProfit": fmt(pnl),
                    "leverage": "1",
                    "positionSide": "BOTH",
                }
            )
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
