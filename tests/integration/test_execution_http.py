"""The exchange broker over real HTTP: the fake exchange's signed order endpoints on 127.0.0.1,
with answers lost, 5xx and dropped connections."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from atra.adapters.fake_exchange import STATUS_DROPPED, FakeExchange, Faults
from atra.adapters.orders import (
    ERR_CANCEL_UNKNOWN,
    ERR_DUPLICATE_ORDER,
    ERR_UNKNOWN_ORDER,
    OrderRequest,
    OrderState,
    SymbolRules,
    VenuePosition,
    signed_query,
)
from atra.core.exits import REASON_NAMES, STATUS_DONE, ExitSpec, simulate_exit_nb
from atra.core.types import Market, Timeframe
from atra.errors import ExchangeError, OrderRejected, TransientExchangeError
from atra.execution import ExchangeBroker
from atra.paper import BrokerUpdate, EntryRequest, client_order_id

TF = Timeframe.H1
STEP = TF.ms
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SYM = "BTCUSDT"
KEY, SECRET = "k", "s"
RUN = "http-run"
SIG = 2
RULES = SymbolRules(SYM, step_size=0.001, min_qty=0.001, tick_size=1e-9)


class SignedApi:
    """The order API over signed REST calls (a minimal client for these tests): transport
    errors and 5xx are transient; a duplicate client id returns the known order."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def _call(
        self, method: str, path: str, params: Mapping[str, str | int | float], *, signed: bool
    ) -> tuple[int, Any]:
        full = dict(params)
        if signed:
            full |= {"timestamp": int(time.time() * 1000), "recvWindow": 5000}
            query = signed_query(full, SECRET)
        else:
            query = "&".join(f"{k}={v}" for k, v in full.items())
        try:
            r = await self.http.request(method, f"{path}?{query}", headers={"X-MBX-APIKEY": KEY})
        except httpx.TransportError as exc:
            raise TransientExchangeError(f"{method} {path}: {type(exc).__name__}") from None
        if r.status_code >= 500:
            raise TransientExchangeError(f"{method} {path}: HTTP {r.status_code}")
        try:
            body = r.json()
        except ValueError:
            raise TransientExchangeError(f"{method} {path}: not JSON") from None
        if r.status_code == 200:
            return 0, body
        return int(body["code"]), body

    def _reject(self, what: str, body: Mapping[str, Any]) -> OrderRejected:
        return OrderRejected(f"{what}: Binance error {body['code']}: {body['msg']}")

    async def place_order(self, order: OrderRequest) -> OrderState:
        params: dict[str, str | int | float] = {
            "symbol": order.symbol,
            "side": order.side,
            "type": order.type,
            "newClientOrderId": order.client_order_id,
            "newOrderRespType": "RESULT",
        }
        if order.quantity is not None:
            params["quantity"] = order.quantity
        if order.price is not None:
            params |= {"price": order.price, "timeInForce": "GTC"}
        if order.stop_price is not None:
            params["stopPrice"] = order.stop_price
        if order.reduce_only:
            params["reduceOnly"] = "true"
        if order.close_position:
            params["closePosition"] = "true"
        code, body = await self._call("POST", "/fapi/v1/order", params, signed=True)
        if code == ERR_DUPLICATE_ORDER:
            known = await self.get_order(order.symbol, order.client_order_id)
            if known is not None:
                return known
        if code:
            raise self._reject(f"{order.symbol} {order.type} {order.client_order_id}", body)
        return _state(body)

    async def get_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        params = {"symbol": symbol, "origClientOrderId": client_order_id}
        code, body = await self._call("GET", "/fapi/v1/order", params, signed=True)
        if code == ERR_UNKNOWN_ORDER:
            return None
        if code:
            raise self._reject(f"get {client_order_id}", body)
        return _state(body)

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        params = {"symbol": symbol, "origClientOrderId": client_order_id}
        code, body = await self._call("DELETE", "/fapi/v1/order", params, signed=True)
        if code == ERR_CANCEL_UNKNOWN:
            return await self.get_order(symbol, client_order_id)
        if code:
            raise self._reject(f"cancel {client_order_id}", body)
        return _state(body)

    async def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        params = {"symbol": symbol} if symbol else {}
        code, body = await self._call("GET", "/fapi/v1/openOrders", params, signed=True)
        if code:
            raise self._reject("open orders", body)
        return [_state(o) for o in body]

    async def positions(self) -> list[VenuePosition]:
        code, body = await self._call("GET", "/fapi/v2/positionRisk", {}, signed=True)
        if code:
            raise self._reject("positions", body)
        return [
            VenuePosition(row["symbol"], float(row["positionAmt"]), float(row["entryPrice"]))
            for row in body
            if float(row["positionAmt"]) != 0.0
        ]

    async def symbol_rules(self, symbol: str) -> SymbolRules:
        code, body = await self._call("GET", "/fapi/v1/exchangeInfo", {}, signed=False)
        if code:
            raise self._reject("exchange info", body)
        for row in body["symbols"]:
            if row["symbol"] == symbol:
                f = {x["filterType"]: x for x in row["filters"]}
                lot = f["LOT_SIZE"]
                return SymbolRules(
                    symbol,
                    step_size=float(lot["stepSize"]),
                    min_qty=float(lot["minQty"]),
                    tick_size=float(f["PRICE_FILTER"]["tickSize"]),
                )
        raise OrderRejected(f"rules {symbol}: Binance error -1121: Invalid symbol.")


def _state(o: Mapping[str, Any]) -> OrderState:
    return OrderState(
        symbol=o["symbol"],
        client_order_id=o["clientOrderId"],
        order_id=int(o["orderId"]),
        side=o["side"],
        type=o["type"],
        status=o["status"],
        orig_qty=float(o["origQty"]),
        executed_qty=float(o["executedQty"]),
        avg_price=float(o["avgPrice"]),
        price=float(o["price"]),
        stop_price=float(o["stopPrice"]),
        reduce_only=bool(o["reduceOnly"]),
        close_position=bool(o["closePosition"]),
        update_time_ms=int(o["updateTime"]),
    )


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def at_ms(self, ms: int) -> None:
        self.t = ms / 1000.0


def random_path(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.008, n)))
    open_ = np.r_[100.0, close[:-1]]
    return pd.DataFrame(
        {
            "open_time": T0 + STEP * np.arange(n, dtype=np.int64),
            "open": open_,
            "high": np.maximum(open_, close) * (1.0 + rng.exponential(0.004, n)),
            "low": np.minimum(open_, close) * (1.0 - rng.exponential(0.004, n)),
            "close": close,
            "volume": np.ones(n),
        }
    )


def seed_losing_request(index: int, p: float, n: int = 12) -> int:
    """A fault seed whose ``n`` first draws lose request ``index`` only."""
    for seed in range(100_000):
        rng = random.Random(seed)
        if [rng.random() < p for _ in range(n)] == [i == index for i in range(n)]:
            return seed
    raise AssertionError("no seed")  # pragma: no cover


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def open_venue(
    clock: Clock, df: pd.DataFrame, faults: Faults, spec: ExitSpec
) -> tuple[FakeExchange, httpx.AsyncClient]:
    fx = FakeExchange(
        {(Market.PERP, SYM, TF): df},
        weight_limit=None,
        api_key=KEY,
        api_secret=SECRET,
        market_clock=clock,
        slippage_bps=spec.slippage_bps,
        symbol_rules={SYM: RULES},
        faults=faults,
    )
    await fx.start()
    return fx, httpx.AsyncClient(base_url=fx.url, timeout=5.0)


@pytest.fixture
async def stack() -> AsyncIterator[list[Any]]:
    opened: list[Any] = []
    yield opened
    for fx, http in opened:
        await http.aclose()
        await fx.stop()


async def run_trade(
    broker: ExchangeBroker, clock: Clock, df: pd.DataFrame, req: EntryRequest, *, calm: Any
) -> BrokerUpdate:
    """Submit at the signal bar's close, then ``calm()`` and ``on_bar`` at every close."""
    out = BrokerUpdate()
    times = df["open_time"].to_numpy(np.int64)
    clock.at_ms(int(times[SIG]) + STEP)
    out.extend(await broker.submit(req))
    calm()
    for k in range(SIG + 1, len(df) - 1):
        clock.at_ms(int(times[k]) + STEP)
        cols = [df[c].to_numpy()[: k + 1] for c in ("open_time", "open", "high", "low")]
        out.extend(await broker.on_bar(SYM, *cols))
    return out


async def test_lost_entry_answer_over_http_keeps_kernel_parity(
    clock: Clock, stack: list[Any]
) -> None:
    df = random_path(7, 14)
    spec = ExitSpec(tp1_fraction=0.5, move_to_be=True, slippage_bps=5.0)
    # request 0 is the rules (exchangeInfo), request 1 the entry POST: its answer is lost
    faults = Faults(lost=0.3, seed=seed_losing_request(1, 0.3))
    fx, http = await open_venue(clock, df, faults, spec)
    stack.append((fx, http))
    broker = ExchangeBroker(
        SignedApi(http), spec, strategy="s", run_id=RUN, timeframe=TF, clock=clock
    )
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, 1.2, 0.8, 2.0, 8)

    def calm() -> None:
        fx.faults = Faults(seed=1)

    upd = await run_trade(broker, clock, df, req, calm=calm)
    entry_cid = client_order_id(RUN, SYM, T0 + SIG * STEP, "entry")
    assert (fx.requests[1].status, fx.requests[1].fault) == (STATUS_DROPPED, "lost")
    assert fx.requests[1].params["newClientOrderId"] == entry_cid
    assert [f.client_order_id for f in fx.engine.fills].count(entry_cid) == 1
    (pos,) = {p.position_id: p for p in upd.positions}.values()
    assert pos.status == "closed"
    o, h, lo = (df[c].to_numpy(np.float64) for c in ("open", "high", "low"))
    r = simulate_exit_nb(
        o, h, lo, SIG + 1, len(df), 1, 1.2, 0.8, 2.0, 8, *spec.kernel_args()
    )  # fmt: skip
    assert int(r[0]) == STATUS_DONE
    legs = [(int(r[3]), REASON_NAMES[int(r[5])])]
    if int(r[7]) >= 0:
        legs.append((int(r[7]), REASON_NAMES[int(r[9])]))
    got = [((f.time_ms - T0) // STEP, f.reason) for f in upd.fills if f.leg != "entry"]
    assert got == legs
    assert pos.ret_net == pytest.approx(float(r[12]), abs=1e-9)
    assert fx.engine.position(SYM).quantity == 0.0
    assert fx.engine.open_orders(SYM) == []


@pytest.mark.parametrize("seed", [1, 3, 4, 6, 8, 11])
async def test_flaky_venue_never_doubles_an_order(
    clock: Clock, stack: list[Any], seed: int
) -> None:
    """5xx, dropped connections and lost answers everywhere: every order exists at most once,
    every fill is booked once, and the venue ends flat with nothing resting."""
    df = random_path(100 + seed, 20)
    spec = ExitSpec(tp1_fraction=0.5, move_to_be=bool(seed % 2))
    faults = Faults(p_5xx=0.08, p_drop=0.08, lost=0.08, seed=seed)
    fx, http = await open_venue(clock, df, faults, spec)
    stack.append((fx, http))
    broker = ExchangeBroker(
        SignedApi(http), spec, strategy="s", run_id=RUN, timeframe=TF, clock=clock
    )
    req = EntryRequest(SYM, -1 if seed % 2 else 1, T0 + SIG * STEP, 1.0, 1.0, 0.7, 1.6, 6)
    upd = await run_trade(broker, clock, df, req, calm=lambda: None)
    assert {rec.fault for rec in fx.requests} > {None}  # faults did happen
    cids = [f.client_order_id for f in fx.engine.fills]
    assert len(cids) == len(set(cids))
    keys = [(f.client_order_id, f.leg) for f in upd.fills]
    assert len(keys) == len(set(keys))
    final = {p.position_id: p for p in upd.positions}
    (pos,) = final.values()
    assert pos.status in ("closed", "cancelled")
    if pos.status == "closed":
        assert pos.pnl == pytest.approx(sum(f.pnl for f in upd.fills), abs=1e-9)
        booked = sum(f.quantity for f in upd.fills if f.leg != "entry")
        assert booked == pytest.approx(pos.quantity, abs=1e-9)
    fx.faults = Faults(seed=0)
    assert fx.engine.position(SYM).quantity == 0.0
    assert fx.engine.open_orders(SYM) == []
    assert broker.open_count() == 0
    with pytest.raises(ExchangeError):  # the client maps refusals to OrderRejected
        await SignedApi(http).place_order(OrderRequest(SYM, "BUY", "MARKET", "x", quantity=-1.0))
