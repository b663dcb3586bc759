"""The fake exchange's kline WebSocket streams (:class:`FakeStreamDesk`).

``/stream?streams=btcusdt@kline_1h/...`` (combined, events wrapped as ``{"stream", "data"}``)
and ``/ws/btcusdt@kline_1h`` (raw) serve the candles the fake exchange serves over REST: each
connection sends a closed kline (``k.x == true``) of every subscribed symbol as soon as the
market clock (the replay's simulated clock) passes the bar's close, starting with the first
bar that closes after the connection opened, as Binance does. Prices are written as the REST
klines write them, so a streamed bar equals the fetched one.

Faults (:class:`StreamFaults`, drawn from a seeded RNG): drop a message, send it twice, delay
it, send garbage (not JSON) in its place, close the connection after every ``close_every``
messages; :meth:`FakeStreamDesk.disconnect`
closes every open connection now. Counters in :attr:`FakeStreamDesk.sent`.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from aiohttp import WSCloseCode, web

from atra.core.types import Market, Timeframe
from atra.sim.wire import CandleKey, fmt


@dataclass(frozen=True, slots=True)
class StreamFaults:
    """Faults per streamed message (probabilities), drawn from ``Random(seed)``."""

    p_drop: float = 0.0
    p_duplicate: float = 0.0
    p_delay: float = 0.0
    delay_s: float = 0.05
    """How long (real seconds) a delayed message waits; later messages wait behind it."""
    close_every: int | None = None
    """Close the connection after this many messages (None: never)."""
    seed: int = 0
    p_garbage: float = 0.0
    """Send a message that is not JSON instead of the bar (the client drops the connection
    and backfills the bar over REST)."""


class FakeStreamDesk:
    """Kline streams over the candle frames of a fake exchange, on ``market_clock``."""

    def __init__(
        self,
        candles: Mapping[CandleKey, pd.DataFrame],
        market_clock: Callable[[], float],
        faults: StreamFaults | None = None,
        *,
        poll_s: float = 0.001,
    ) -> None:
        self._frames = candles
        self._rows: dict[CandleKey, tuple[np.ndarray, list[str]]] = {}
        self.market_clock = market_clock
        self.faults = faults or StreamFaults()
        self.poll_s = poll_s
        self.sent: Counter[str] = Counter()
        """``message``, ``dropped``, ``duplicate``, ``delayed``, ``garbage``, ``closed``,
        ``connection``."""
        self._rng = random.Random(self.faults.seed)
        self._open: set[web.WebSocketResponse] = set()

    def _series(self, key: CandleKey) -> tuple[np.ndarray, list[str]]:
        got = self._rows.get(key)
        if got is None:
            frame = self._frames[key]
            t = frame["open_time"].to_numpy(np.int64)
            cols = [frame[c].to_numpy(np.float64) for c in ("open", "high", "low", "close")]
            vol = frame["volume"].to_numpy(np.float64)
            step = key[2].ms
            sym = key[1]
            rows = [
                json.dumps(
                    {
                        "e": "kline",
                        "E": int(t[i]) + step,
                        "s": sym,
                        "k": {
                            "t": int(t[i]),
                            "T": int(t[i]) + step - 1,
                            "s": sym,
                            "i": key[2].value,
                            "f": 0,
                            "L": 0,
                            "o": fmt(cols[0][i]),
                            "c": fmt(cols[3][i]),
                            "h": fmt(cols[1][i]),
                            "l": fmt(cols[2][i]),
                            "v": fmt(vol[i]),
                            "n": 0,
                            "x": True,
                            "q": "0",
                            "V": "0",
                            "Q": "0",
                            "B": "0",
                        },
                    },
                    separators=(",", ":"),
                )
                for i in range(t.size)
            ]
            got = self._rows[key] = (t, rows)
        return got

    def _keys(self, market: Market, names: list[str]) -> list[tuple[str, CandleKey]]:
        keys = []
        for name in names:
            sym, _, kind = name.partition("@kline_")
            try:
                tf = Timeframe(kind)
            except ValueError:
                raise web.HTTPBadRequest(text=f"Invalid stream name {name!r}") from None
            if sym != sym.lower() or (market, sym.upper(), tf) not in self._frames:
                raise web.HTTPBadRequest(text=f"Unknown stream {name!r}")
            keys.append((name, (market, sym.upper(), tf)))
        return keys

    async def disconnect(self) -> None:
        """Close every open connection now (the client must reconnect and backfill)."""
        for ws in list(self._open):
            self.sent["closed"] += 1
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"fake disconnect")

    async def handle(self, request: web.Request, market: Market) -> web.StreamResponse:
        """``/stream?streams=a/b`` (combined) or ``/ws/{name}`` (raw)."""
        combined = "name" not in request.match_info
        if combined:
            names = [n for n in request.query.get("streams", "").split("/") if n]
        else:
            names = [request.match_info["name"]]
        if not names:
            raise web.HTTPBadRequest(text="No streams given")
        keys = self._keys(market, names)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._open.add(ws)
        self.sent["connection"] += 1
        try:
            await self._serve(ws, keys, combined)
        finally:
            self._open.discard(ws)
            if not ws.closed:
                await ws.close()
        return ws

    async def _serve(
        self, ws: web.WebSocketResponse, keys: list[tuple[str, CandleKey]], combined: bool
    ) -> None:
        now_ms = int(self.market_clock() * 1000)
        cursor: dict[str, int] = {}
        for name, key in keys:  # the first bar that closes after the connection opened
            t, _ = self._series(key)
            cursor[name] = int(np.searchsorted(t, now_ms - key[2].ms, "right"))
        reader = asyncio.ensure_future(ws.receive())  # pings are answered; a close ends us
        f = self.faults
        count = 0
        due = self._due(keys, cursor)
        try:
            while not ws.closed and not reader.done():
                now_ms = int(self.market_clock() * 1000)
                if now_ms < due:  # no bar closed since the last look
                    await asyncio.sleep(self.poll_s)
                    continue
                for name, key in keys:
                    t, rows = self._series(key)
                    i, step = cursor[name], key[2].ms
                    while i < t.size and int(t[i]) + step <= now_ms:
                        text = rows[i]
                        if combined:
                            text = f'{{"stream":"{name}","data":{text}}}'
                        i += 1
                        u = self._rng.random()
                        if u < f.p_drop:
                            self.sent["dropped"] += 1
                            continue
                        if u < f.p_drop + f.p_delay:
                            self.sent["delayed"] += 1
                            await asyncio.sleep(f.delay_s)
                        elif u < f.p_drop + f.p_delay + f.p_garbage:
                            self.sent["garbage"] += 1
                            text = text[: len(text) // 2]  # cut off: not JSON
                        copies = 2 if u >= 1.0 - f.p_duplicate else 1
                        for _ in range(copies):
                            await ws.send_str(text)
                        self.sent["message"] += 1
                        self.sent["duplicate"] += copies - 1
                        count += 1
                        if f.close_every is not None and count % f.close_every == 0:
                            self.sent["closed"] += 1
                            cursor[name] = i
                            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"fault")
                            return
                    cursor[name] = i
                due = self._due(keys, cursor)
                await asyncio.sleep(self.poll_s)
        finally:
            reader.cancel()

    def _due(self, keys: list[tuple[str, CandleKey]], cursor: dict[str, int]) -> float:
        """The market time (ms) at which the next bar of any stream closes."""
        due = math.inf
        for name, key in keys:
            t, _ = self._series(key)
            i = cursor[name]
            if i < t.size:
                due = min(due, int(t[i]) + key[2].ms)
        return due


class SettableClock:
    """A market clock moved from outside the server process (``POST /sim/clock?ms=``): a
    benchmark drives the fake's bar closes with it. Time never goes back."""

    def __init__(self, start_s: float) -> None:
        self.now_s = start_s

    def time(self) -> float:
        return self.now_s

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("ms", "")
        if not raw.isdigit():
            raise web.HTTPBadRequest(text=f"ms must be epoch milliseconds, got {raw!r}")
        ms = int(raw)
        if ms / 1000 < self.now_s:
            raise web.HTTPBadRequest(text=f"ms {ms} is before the clock ({self.now_s * 1000:.0f})")
        self.now_s = ms / 1000
        return web.json_response({"ms": ms})
