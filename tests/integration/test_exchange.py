"""The Binance client against real servers on 127.0.0.1: the fake exchange and canned replies."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pandas as pd
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.ratelimit import FUNDING as FUNDING_BUCKET
from atra.adapters.ratelimit import ManualClock, RateLimiter, ScaledClock, forget_shared_limiters
from atra.core.types import Market, Timeframe
from atra.errors import ExchangeError, IPBanned, TransientExchangeError
from atra.obs.metrics import Metrics
from atra.sim.exchange import FakeExchange, Faults
from helpers_http import local_server
from helpers_logging import json_log_lines

HOUR = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def candles(n: int, start: int = T0, step: int = HOUR, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    return pd.DataFrame(
        {
            "open_time": start + step * np.arange(n, dtype=np.int64),
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": rng.uniform(1, 100, n),
        }
    )


def funding(n: int, start: int = T0) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "funding_time": start + 8 * HOUR * np.arange(n, dtype=np.int64),
            "funding_rate": rng.normal(0.0001, 0.0002, n),
        }
    )


SPOT = candles(3000)
PERP = candles(2000, seed=2)
FUNDING = funding(2500)


@pytest.fixture(autouse=True)
def _fresh_limiters() -> None:
    forget_shared_limiters()


@pytest.fixture
async def fake() -> AsyncIterator[FakeExchange]:
    data = {
        (Market.SPOT, "BTCUSDT", Timeframe.H1): SPOT,
        (Market.PERP, "BTCUSDT", Timeframe.H1): PERP,
    }
    async with FakeExchange(data, {"BTCUSDT": FUNDING}, time_scale=60.0) as fx:
        yield fx


def client(fx: FakeExchange | str, market: Market = Market.SPOT, **kw: object) -> BinanceClient:
    url = fx if isinstance(fx, str) else fx.url
    kw.setdefault("clock", ScaledClock(60.0))
    kw.setdefault("backoff_s", 0.1)
    return BinanceClient(market, base_url=url, **kw)  # type: ignore[arg-type]


# ---- the fake behaves like Binance ---------------------------------------------------


async def test_klines_pages_like_binance(fake: FakeExchange) -> None:
    async with client(fake) as c:
        first = await c.fetch_klines("BTCUSDT", Timeframe.H1, start_ms=T0 + 1)  # default limit
        assert len(first) == 1000
        assert first["open_time"].iloc[0] == T0 + HOUR
        window = await c.fetch_klines(
            "BTCUSDT", Timeframe.H1, start_ms=T0, end_ms=T0 + 9 * HOUR, limit=5
        )
        pd.testing.assert_frame_equal(window, SPOT.iloc[:5].reset_index(drop=True))
        tail = await c.fetch_klines("BTCUSDT", Timeframe.H1, end_ms=T0 + 9 * HOUR, limit=3)
        assert tail["open_time"].tolist() == [T0 + h * HOUR for h in (7, 8, 9)]
        latest = await c.fetch_klines("BTCUSDT", Timeframe.H1, limit=2)
        pd.testing.assert_frame_equal(latest, SPOT.iloc[-2:].reset_index(drop=True))
        assert (await c.fetch_klines("BTCUSDT", Timeframe.M5, limit=2)).empty


async def test_fake_caps_limit_and_checks_parameters(fake: FakeExchange) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        spot = await http.get("/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=5000")
        assert len(spot.json()) == 1000
        perp = await http.get("/fapi/v1/klines?symbol=BTCUSDT&interval=1h&limit=5000")
        assert len(perp.json()) == 1500
        assert perp.headers["X-MBX-USED-WEIGHT-1m"] == str(2 + 10)
        cases = {
            "/api/v3/klines?symbol=NOPE&interval=1h": -1121,
            "/api/v3/klines?symbol=BTCUSDT&interval=7h": -1120,
            "/api/v3/klines?interval=1h": -1102,
            "/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime=abc": -1100,
            "/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime=9&endTime=1": -1128,
        }
        for url, code in cases.items():
            resp = await http.get(url)
            assert resp.status_code == 400, url
            assert resp.json()["code"] == code, url
        bad_limit = await http.get("/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=x")
        assert bad_limit.json()["code"] == -1100
    assert [r.status for r in fake.requests] == [200, 200] + [400] * 6
    assert fake.requests[0].weight == 2


async def test_funding_premium_index_and_exchange_info(fake: FakeExchange) -> None:
    async with client(fake, Market.PERP) as c:
        info = await c.sync_limits()
        assert info.has_symbol("BTCUSDT")
        assert c.limiter.limit() == (2400, 60.0)
        page = await c.fetch_funding("BTCUSDT", start_ms=T0, limit=10)
        pd.testing.assert_frame_equal(page, FUNDING.iloc[:10].reset_index(drop=True))
        end = int(FUNDING["funding_time"].iloc[-1]) + 1
        full = await c.fetch_funding_range("BTCUSDT", T0, end)
        pd.testing.assert_frame_equal(full, FUNDING)
        assert (await c.fetch_funding_range("BTCUSDT", T0 - 10 * HOUR, T0)).empty
        prem = await c.fetch_premium_index("BTCUSDT")
        assert prem.mark_price == PERP["close"].iloc[-1]
        assert prem.last_funding_rate == FUNDING["funding_rate"].iloc[-1]
        assert prem.next_funding_time_ms == FUNDING["funding_time"].iloc[-1] + 8 * HOUR
        with pytest.raises(ExchangeError, match="limit 0 outside"):
            await c.fetch_funding("BTCUSDT", limit=0)
    paths = Counter(r.path for r in fake.requests)
    assert paths["/fapi/v1/fundingRate"] == 1 + 3 + 1
    # the limiter charged the fundingRate bucket too
    assert c.limiter.used("funding") == 5


async def test_spot_exchange_info_and_futures_only_endpoints(fake: FakeExchange) -> None:
    async with client(fake) as c:
        info = await c.exchange_info()
        assert [s.symbol for s in info.symbols] == ["BTCUSDT"]
        with pytest.raises(ExchangeError, match="USDT-M futures endpoint"):
            await c.fetch_funding("BTCUSDT")
        with pytest.raises(ExchangeError, match="limit 1001 outside"):
            await c.fetch_klines("BTCUSDT", Timeframe.H1, limit=1001)
    assert fake.requests[0].weight == 20


async def test_range_fetch_concurrent_equals_sequential(fake: FakeExchange) -> None:
    async with client(fake, page_limit=250) as c:
        end = T0 + 3000 * HOUR
        together = await c.fetch_klines_range("BTCUSDT", Timeframe.H1, T0, end)
        one_by_one = await c.fetch_klines_range("BTCUSDT", Timeframe.H1, T0, end, max_parallel=1)
        assert (await c.fetch_klines_range("BTCUSDT", Timeframe.H1, T0, T0)).empty
    pd.testing.assert_frame_equal(together, SPOT)
    pd.testing.assert_frame_equal(one_by_one, SPOT)
    assert len(fake.requests) == 2 * 12


async def test_only_closed_candles_by_default() -> None:
    now_ms = int(time.time() * 1000)
    recent = candles(5, start=(now_ms // HOUR - 3) * HOUR)  # the last bar is still open
    async with FakeExchange({(Market.SPOT, "BTCUSDT", Timeframe.H1): recent}) as fx:
        c = client(fx)
        async with c:
            closed = await c.fetch_klines("BTCUSDT", Timeframe.H1)
            everything = await c.fetch_klines("BTCUSDT", Timeframe.H1, closed_only=False)
    assert len(everything) == 5
    assert closed["open_time"].tolist() == recent["open_time"].iloc[:3].tolist()


async def test_from_dir_reads_shared_style_files(tmp_path: Path) -> None:
    SPOT.to_parquet(tmp_path / "BTCUSDT_spot_1h.parquet")
    PERP.to_parquet(tmp_path / "ETHUSDT_perp_1h.parquet")
    FUNDING.to_parquet(tmp_path / "ETHUSDT_perp_funding.parquet")
    SPOT.to_parquet(tmp_path / "ETHUSDT_spot_7h.parquet")  # not a timeframe: ignored
    (tmp_path / "notes.parquet").write_bytes(b"")
    fx = FakeExchange.from_dir(tmp_path, symbols=["BTCUSDT", "ETHUSDT"])
    assert fx.market_data.symbols(Market.SPOT) == {"BTCUSDT"}
    assert fx.market_data.symbols(Market.PERP) == {"ETHUSDT"}
    only_eth = FakeExchange.from_dir(tmp_path, symbols=["ETHUSDT"])
    assert only_eth.market_data.symbols(Market.SPOT) == set()
    with pytest.raises(Exception, match="does not exist"):
        FakeExchange.from_dir(tmp_path / "missing")


def test_fake_runs_standalone(tmp_path: Path) -> None:
    SPOT.to_parquet(tmp_path / "BTCUSDT_spot_1h.parquet")
    with subprocess.Popen(
        [sys.executable, "-m", "atra.sim.exchange", "--data", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:")
        resp = httpx.get(f"{url}/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=3", timeout=5)
        assert [row[0] for row in resp.json()] == SPOT["open_time"].iloc[-3:].tolist()
        proc.terminate()
        assert proc.wait(timeout=10) == 0


# ---- weight enforcement in the fake --------------------------------------------------


async def test_fake_answers_429_then_bans_a_client_that_keeps_sending() -> None:
    data = {(Market.SPOT, "BTCUSDT", Timeframe.H1): SPOT}
    fx = FakeExchange(data, weight_limit=10, ban_after=2, ban_s=600)
    async with fx, httpx.AsyncClient(base_url=fx.url) as http:
        statuses = []
        for _ in range(9):
            resp = await http.get("/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=1")
            statuses.append(resp.status_code)
        assert statuses == [200] * 5 + [429, 429, 429, 418]
        assert 0 < int(resp.headers["Retry-After"]) <= 600
        assert "banned until" in resp.json()["msg"]
        assert fx.used_weight() == 10
    assert [r.status for r in fx.requests] == statuses


async def test_client_limiter_keeps_the_fake_below_its_limit() -> None:
    data = {(Market.SPOT, "BTCUSDT", Timeframe.H1): SPOT}
    clock = ScaledClock(60.0)
    async with FakeExchange(data, weight_limit=30, time_scale=60.0) as fx:
        limiter = RateLimiter(30, clock=clock, slack_s=3.0)
        async with client(fx, limiter=limiter, page_limit=100) as c:
            frame = await c.fetch_klines_range("BTCUSDT", Timeframe.H1, T0, T0 + 3000 * HOUR)
    pd.testing.assert_frame_equal(frame, SPOT)
    assert all(r.status == 200 for r in fx.requests)
    assert limiter.stats.waits > 0  # 60 weight needs three windows of 27


# ---- the client against canned replies -----------------------------------------------


class Canned:
    """A real HTTP server that answers each request with the next canned reply."""

    def __init__(self) -> None:
        self.replies: list[web.StreamResponse | None] = []
        self.hits = 0
        self.url = ""

    def reply(
        self, status: int = 200, body: object = None, text: str | None = None, **headers: str
    ) -> None:
        if text is None:
            text = json.dumps(body if body is not None else [])
        self.replies.append(web.Response(status=status, text=text, headers=headers))

    def hang(self) -> None:
        self.replies.append(None)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        reply = self.replies.pop(0) if self.replies else web.Response(text="[]")
        if reply is None:
            await asyncio.sleep(5)
            return web.Response(text="[]")
        return reply


@pytest.fixture
async def canned() -> AsyncIterator[Canned]:
    server = Canned()
    async with local_server(server.handle, "GET") as url:
        server.url = url
        yield server


GOOD = [[T0, "1", "2", "0.5", "1.5", "3", T0 + HOUR - 1, "0", 1, "0", "0", "0"]]


async def test_binance_error_json_fails_at_once(canned: Canned) -> None:
    canned.reply(400, {"code": -1121, "msg": "Invalid symbol."})
    canned.reply(200, {"code": -1003, "msg": "Too much request weight used."})
    async with client(canned.url) as c:
        with pytest.raises(ExchangeError, match=r"Binance error -1121: Invalid symbol\.$") as e:
            await c.fetch_klines("NOPE", Timeframe.H1)
        assert type(e.value) is ExchangeError
        with pytest.raises(ExchangeError, match="-1003"):
            await c.fetch_klines("BTCUSDT", Timeframe.H1)
    assert canned.hits == 2


@pytest.mark.parametrize(
    ("status", "text", "match"),
    [
        (200, "<html><body>Bad gateway</body></html>", "an HTML page"),
        (200, '[[1704067200000,"1","2"', "not valid JSON"),
    ],
)
async def test_unparseable_bodies_are_retried_then_one_line(
    canned: Canned, status: int, text: str, match: str
) -> None:
    for _ in range(3):
        canned.reply(status, text=text)
    async with client(canned.url, max_attempts=3) as c:
        with pytest.raises(TransientExchangeError, match=match) as e:
            await c.fetch_klines("BTCUSDT", Timeframe.H1)
    assert "gave up after 3 attempts" in str(e.value)
    assert "\n" not in str(e.value)
    assert canned.hits == 3


async def test_wrong_shape_and_client_errors_are_not_retried(canned: Canned) -> None:
    canned.reply(200, {"unexpected": "object"})
    canned.reply(404, text="<html>Not Found</html>")
    canned.reply(403, text="forbidden")
    canned.reply(403, {"error": "geo-blocked"})
    async with client(canned.url) as c:
        with pytest.raises(ExchangeError, match="unexpected response shape"):
            await c.fetch_klines("BTCUSDT", Timeframe.H1)
        with pytest.raises(ExchangeError, match="HTTP 404 body is an HTML page"):
            await c.fetch_klines("BTCUSDT", Timeframe.H1)
        with pytest.raises(ExchangeError, match="HTTP 403 body is not valid JSON: 'forbidden'"):
            await c.fetch_klines("BTCUSDT", Timeframe.H1)
        with pytest.raises(ExchangeError, match=r"HTTP 403 .*geo-blocked"):
            await c.fetch_klines("BTCUSDT", Timeframe.H1)
    assert canned.hits == 4


async def test_server_returning_more_rows_or_out_of_range_is_an_error(canned: Canned) -> None:
    two = [*GOOD, [T0 + HOUR, "1", "2", "0.5", "1.5", "3", T0 + 2 * HOUR - 1]]
    canned.reply(200, two)
    canned.reply(200, GOOD)
    async with client(canned.url) as c:
        with pytest.raises(ExchangeError, match="2 klines for limit 1"):
            await c.fetch_klines("BTCUSDT", Timeframe.H1, limit=1)
        with pytest.raises(ExchangeError, match="outside the requested time range"):
            await c.fetch_klines("BTCUSDT", Timeframe.H1, start_ms=T0 + HOUR)
    canned.reply(200, [{"fundingTime": T0 + i, "fundingRate": "0"} for i in range(2)])
    async with client(canned.url, Market.PERP) as c:
        with pytest.raises(ExchangeError, match="2 rows for limit 1"):
            await c.fetch_funding("BTCUSDT", limit=1)


async def test_5xx_is_retried_and_used_weight_header_is_read(canned: Canned) -> None:
    canned.reply(503, {"code": -1001, "msg": "Internal error"})
    canned.reply(502, text="<html>bad gateway</html>")
    canned.reply(200, GOOD, **{"X-MBX-USED-WEIGHT-1m": "1500"})
    async with client(canned.url) as c:
        frame = await c.fetch_klines("BTCUSDT", Timeframe.H1)
        assert frame["close"].tolist() == [1.5]
        assert c.limiter.used() == 1500  # the server's count, not our 6
    assert canned.hits == 3


async def test_429_pauses_then_succeeds(canned: Canned) -> None:
    clock = ManualClock(wall_s=2e9)  # 2033: every 2024 bar is closed
    limiter = RateLimiter(6000, clock=clock)
    canned.reply(429, {"code": -1003, "msg": "Too many requests"}, **{"Retry-After": "30"})
    canned.reply(200, GOOD)
    async with client(canned.url, clock=clock, limiter=limiter) as c:
        task = asyncio.ensure_future(c.fetch_klines("BTCUSDT", Timeframe.H1))
        while canned.hits < 1 or clock.sleepers == 0:
            await asyncio.sleep(0.01)
        assert limiter.paused_until == pytest.approx(30.0)
        for _ in range(10):  # the backoff sleep, then the limiter's pause
            clock.advance(31)
            await asyncio.sleep(0.01)
            if task.done():
                break
        assert len(await task) == 1
    assert limiter.stats.rate_limited == 1
    assert canned.hits == 2


class SlowResolver(AbstractResolver):
    """Resolves every host to 127.0.0.1 once ``opened`` is set: a new connection that takes its
    time to open (a request between the limiter and the wire)."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.opened = asyncio.Event()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.set()
        await self.opened.wait()
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


async def test_a_429_learnt_while_a_request_opens_its_connection_holds_it_back(
    canned: Canned,
) -> None:
    clock = ManualClock(wall_s=2e9)
    limiter = RateLimiter(6000, clock=clock)
    canned.reply(200, GOOD)
    resolver = SlowResolver()
    url = f"http://exchange.test:{urlsplit(canned.url).port}"
    async with client(url, clock=clock, limiter=limiter, resolver=resolver) as c:
        task = asyncio.ensure_future(c.fetch_klines("BTCUSDT", Timeframe.H1))
        await resolver.asked.wait()
        assert limiter.stats.requests == 1  # it passed the limiter: charged, opening a connection
        limiter.on_rate_limited(30.0)  # another request's 429, learnt meanwhile
        resolver.opened.set()
        for _ in range(500):  # until it sleeps out the pause (or, wrongly, is answered)
            if clock.sleepers or task.done():
                break
            await asyncio.sleep(0.01)
        assert canned.hits == 0  # the connection is open, nothing was written on it
        assert limiter.held == 2  # at the wire gate, then before it goes again
        clock.advance(30)
        assert len(await task) == 1
        assert c.limiter.stats.requests == 1  # sent after the pause, charged once
    assert canned.hits == 1


@pytest.mark.parametrize(
    ("headers", "text", "ban_s"),
    [
        ({"Retry-After": "300"}, "{}", 300.0),
        (
            {},
            '{"code":-1003,"msg":"Way too much weight; IP banned until 1700000600000."}',
            600.0,
        ),
        ({"Retry-After": "soon"}, "{}", 120.0),
    ],
)
async def test_418_raises_ipbanned_and_stops_every_request(
    canned: Canned, headers: dict[str, str], text: str, ban_s: float
) -> None:
    clock = ManualClock(wall_s=1_700_000_000.0)
    limiter = RateLimiter(6000, clock=clock)
    canned.reply(418, text=text, **headers)
    async with client(canned.url, clock=clock, limiter=limiter) as c:
        with pytest.raises(IPBanned) as e:
            await c.fetch_klines("BTCUSDT", Timeframe.H1)
        assert e.value.ban_s == pytest.approx(ban_s)
        with pytest.raises(IPBanned):
            await c.fetch_klines("BTCUSDT", Timeframe.H1)
        assert canned.hits == 1  # nothing sent during the ban
        clock.advance(ban_s)
        await c.fetch_klines("BTCUSDT", Timeframe.H1)
    assert canned.hits == 2


def _request_lines(lines: list[dict[str, object]]) -> list[tuple[object, int]]:
    """``(level, status)`` of the client's per-answer lines (the test server's are left out)."""
    return [
        (line["level"], int(str(line["status"])))
        for line in lines
        if line["event"] == "exchange_answer"
    ]


async def test_a_successful_request_logs_nothing_at_info(canned: Canned) -> None:
    canned.reply(200, GOOD)
    with json_log_lines("INFO") as lines:
        async with client(canned.url) as c:
            assert len(await c.fetch_klines("BTCUSDT", Timeframe.H1)) == 1
        assert canned.hits == 1
        assert _request_lines(lines()) == []


async def test_a_successful_request_is_logged_at_debug(canned: Canned) -> None:
    canned.reply(200, GOOD)
    with json_log_lines("DEBUG") as lines:
        async with client(canned.url) as c:
            await c.fetch_klines("BTCUSDT", Timeframe.H1)
        ((level, status),) = _request_lines(lines())
        (line,) = [line for line in lines() if line["event"] == "exchange_answer"]
    assert (level, status) == ("debug", 200)
    assert (line["method"], line["endpoint"]) == ("GET", "/api/v3/klines")


async def test_retries_429s_errors_and_bans_stay_at_info(canned: Canned) -> None:
    canned.reply(503, {"code": -1001, "msg": "Internal error"})
    canned.reply(429, {"code": -1003, "msg": "Too many requests"}, **{"Retry-After": "1"})
    canned.reply(200, GOOD)
    canned.reply(400, {"code": -1121, "msg": "Invalid symbol."})
    canned.reply(418, text="{}", **{"Retry-After": "300"})
    with json_log_lines("INFO") as lines:
        async with client(canned.url) as c:
            assert len(await c.fetch_klines("BTCUSDT", Timeframe.H1)) == 1  # 503, 429, 200
            with pytest.raises(ExchangeError, match="-1121"):
                await c.fetch_klines("NOPE", Timeframe.H1)
            with pytest.raises(IPBanned):
                await c.fetch_klines("BTCUSDT", Timeframe.H1)
        logged = _request_lines(lines())
    assert logged == [("info", 503), ("info", 429), ("info", 400), ("info", 418)]


async def test_metrics_count_answers_retries_and_the_stated_limit(canned: Canned) -> None:
    metrics = Metrics()
    stated = "Too much request weight used; current limit is 1200 request weight per 1 MINUTE."
    canned.reply(503, {"code": -1001, "msg": "Internal error"})
    canned.reply(429, {"code": -1003, "msg": stated}, **{"Retry-After": "1"})
    canned.reply(200, GOOD, **{"X-MBX-USED-WEIGHT-1m": "7"})
    canned.reply(400, {"code": -1121, "msg": "Invalid symbol."})
    canned.reply(418, text="{}", **{"Retry-After": "300"})
    async with client(canned.url, metrics=metrics) as c:
        assert c.limiter.limit() == (6000, 60.0)
        assert len(await c.fetch_klines("BTCUSDT", Timeframe.H1)) == 1  # 503, 429, 200
        assert c.limiter.limit() == (1200, 60.0)  # the 429 stated the venue's own limit
        with pytest.raises(ExchangeError, match="-1121"):
            await c.fetch_klines("NOPE", Timeframe.H1)
        with pytest.raises(IPBanned):
            await c.fetch_klines("BTCUSDT", Timeframe.H1)
        with pytest.raises(IPBanned):  # during the ban: nothing sent, nothing counted
            await c.fetch_klines("BTCUSDT", Timeframe.H1)
    assert canned.hits == 5

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    endpoint = "/api/v3/klines"
    counted = {
        status: value("atra_exchange_requests_total", endpoint=endpoint, status=status)
        for status in ("2xx", "4xx", "418", "429", "5xx")
    }
    assert counted == {"2xx": 1.0, "4xx": 1.0, "418": 1.0, "429": 1.0, "5xx": 1.0}
    duration = value("atra_exchange_request_duration_seconds_count", endpoint=endpoint)
    assert duration == 5.0
    assert value("atra_retries_total", endpoint=endpoint) == 2.0  # after the 503 and the 429
    assert value("atra_ratelimit_weight_used", market="spot") == 7.0
    assert value("atra_ratelimit_weight_limit", market="spot") == 1200.0
    waited = value("atra_ratelimit_wait_seconds_total", market="spot")
    assert waited is not None
    assert 0.0 < waited <= 1.0  # the 1 s pause, less the backoff sleep


async def test_no_answer_is_counted_as_error(canned: Canned) -> None:
    metrics = Metrics()
    canned.hang()
    async with client(canned.url, timeout_s=0.2, max_attempts=1, metrics=metrics) as c:
        with pytest.raises(TransientExchangeError):
            await c.fetch_klines("BTCUSDT", Timeframe.H1)
    labels = {"endpoint": "/api/v3/klines", "status": "error"}
    assert metrics.registry.get_sample_value("atra_exchange_requests_total", labels) == 1.0
    assert metrics.registry.get_sample_value("atra_retries_total", labels) is None


async def test_timeouts_and_refused_connections_are_transient(canned: Canned) -> None:
    canned.hang()
    canned.reply(200, GOOD)
    async with client(canned.url, timeout_s=0.2) as c:
        assert len(await c.fetch_klines("BTCUSDT", Timeframe.H1)) == 1
        c.max_attempts = 1
        canned.hang()
        with pytest.raises(TransientExchangeError, match=r"no answer within 0\.2 s"):
            await c.fetch_klines("BTCUSDT", Timeframe.H1)
    async with client("http://127.0.0.1:9", max_attempts=2) as c:
        with pytest.raises(TransientExchangeError, match=r"connection failed.*gave up after 2"):
            await c.exchange_info()


async def test_client_lifecycle_errors() -> None:
    c = client("http://127.0.0.1:9")
    with pytest.raises(ExchangeError, match="not open"):
        await c.fetch_klines("BTCUSDT", Timeframe.H1)
    assert not c.is_open
    async with c:
        assert c.is_open
    assert not c.is_open
    await c.aclose()
    with pytest.raises(ExchangeError, match="has no host"):
        BinanceClient(Market.SPOT, base_url="not a url")
    assert BinanceClient(Market.PERP).base_url == "https://fapi.binance.com"
    assert BinanceClient(Market.SPOT).host == "api.binance.com"


async def test_cancelled_request_closes_cleanly(canned: Canned) -> None:
    canned.hang()
    c = client(canned.url, timeout_s=5.0)
    async with c:
        task = asyncio.ensure_future(c.fetch_klines("BTCUSDT", Timeframe.H1))
        while canned.hits == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not c.is_open


async def test_faults_draw_every_kind() -> None:
    import random

    f = Faults(p_5xx=0.2, p_timeout=0.2, p_truncated=0.2, p_garbage=0.2, p_drop=0.1, seed=3)
    rng = random.Random(f.seed)
    kinds = Counter(f.draw(rng) for _ in range(2000))
    assert set(kinds) == {"5xx", "timeout", "truncated", "garbage", "drop", None}
    assert 150 < kinds[None] < 250


async def test_funding_info_states_the_symbols_whose_interval_changed() -> None:
    """The fake answers ``fundingInfo`` as Binance does (the adjusted symbols only, 0 weight,
    one unit of the fundingRate bucket); the client reads it back."""
    change = T0 + 8 * 8 * HOUR
    short = pd.DataFrame(
        {
            "funding_time": np.concatenate(
                [T0 + 8 * HOUR * np.arange(9), change + 4 * HOUR * np.arange(1, 10)]
            ).astype(np.int64),
            "funding_rate": 1e-4,
        }
    )
    now = {"ms": T0 + 10 * HOUR}
    rates = {"BTCUSDT": funding(50), "SHORTUSDT": short}
    fake = FakeExchange({}, rates, market_clock=lambda: now["ms"] / 1000)
    async with fake as fx, client(fx, Market.PERP) as c:
        assert await c.fetch_funding_info() == {}  # every symbol on 8 h: none listed
        now["ms"] = change + HOUR
        assert await c.fetch_funding_info() == {"SHORTUSDT": 4}
        assert c.limiter.used(FUNDING_BUCKET) == 2
        assert c.limiter.used() == 0  # weight 0
        with pytest.raises(ExchangeError, match="USDT-M futures endpoint"):
            await BinanceClient(Market.SPOT, base_url=fx.url).fetch_funding_info()
    (first, second) = [r for r in fx.requests if r.path == "/fapi/v1/fundingInfo"]
    assert first.weight == second.weight == 0
