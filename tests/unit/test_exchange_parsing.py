"""Wire JSON -> domain objects at the exchange edge; weights; page planning."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from atra.adapters.exchange.client import plan_pages
from atra.adapters.exchange.wire import (
    ExchangeInfo,
    PremiumIndex,
    exchange_info_weight,
    klines_weight,
    parse_exchange_info,
    parse_funding,
    parse_funding_info,
    parse_kline_rows,
    parse_premium_index,
)
from atra.adapters.ratelimit import RateLimit
from atra.core.types import Market
from atra.errors import ExchangeError

WHERE = "binance spot /api/v3/klines symbol=BTCUSDT"
HOUR = 3_600_000


def kline(t: int, close: str = "1.5") -> list[object]:
    return [t, "1.0", "2.0", "0.5", close, "10.25", t + HOUR - 1, "0", 3, "0", "0", "0"]


@pytest.mark.parametrize(
    ("market", "limit", "weight"),
    [
        (Market.SPOT, 1, 2),
        (Market.SPOT, 1000, 2),
        (Market.PERP, 99, 1),
        (Market.PERP, 100, 2),
        (Market.PERP, 499, 2),
        (Market.PERP, 500, 5),
        (Market.PERP, 1000, 5),
        (Market.PERP, 1001, 10),
        (Market.PERP, 1500, 10),
    ],
)
def test_klines_weight_follows_binance(market: Market, limit: int, weight: int) -> None:
    assert klines_weight(market, limit) == weight


def test_exchange_info_weight() -> None:
    assert exchange_info_weight(Market.SPOT) == 20
    assert exchange_info_weight(Market.PERP) == 1


def test_parse_klines_builds_the_candle_frame() -> None:
    rows = parse_kline_rows([kline(0), kline(HOUR, "1.75")], where=WHERE)
    frame, close_time = rows.frame(), rows.close_time
    assert list(frame.columns) == ["open_time", "open", "high", "low", "close", "volume"]
    assert frame["open_time"].dtype == np.int64
    assert all(frame[c].dtype == np.float64 for c in frame.columns[1:])
    assert frame["close"].tolist() == [1.5, 1.75]
    assert frame["volume"].tolist() == [10.25, 10.25]
    assert close_time.tolist() == [HOUR - 1, 2 * HOUR - 1]


def test_parse_klines_accepts_an_empty_page() -> None:
    rows = parse_kline_rows([], where=WHERE)
    frame, close_time = rows.frame(), rows.close_time
    assert frame.empty
    assert list(frame.columns) == ["open_time", "open", "high", "low", "close", "volume"]
    assert close_time.size == 0


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"code": 0}, "expected a list"),
        ("<html>", "expected a list"),
        ([[0, "1", "2"]], "kline 0 is not a list"),
        (["row"], "kline 0 is not a list"),
        ([[0.5, "1", "1", "1", "1", "1", 5]], "non-integer times"),
        ([[True, "1", "1", "1", "1", "1", 5]], "non-integer times"),
        ([[0, "1", "x", "1", "1", "1", 5]], "not numbers"),
        ([[0, "1", None, "1", "1", "1", 5]], "not numbers"),
        ([kline(HOUR), kline(0)], "not strictly increasing"),
        ([kline(0), kline(0)], "not strictly increasing"),
    ],
)
def test_parse_klines_rejects_wrong_shapes(payload: object, match: str) -> None:
    with pytest.raises(ExchangeError, match=match) as info:
        parse_kline_rows(payload, where=WHERE)
    assert str(info.value).startswith(WHERE)
    assert "\n" not in str(info.value)


def test_parse_funding() -> None:
    rows = [
        {"symbol": "BTCUSDT", "fundingTime": 8 * HOUR, "fundingRate": "0.0001", "markPrice": ""},
        {"symbol": "BTCUSDT", "fundingTime": 16 * HOUR, "fundingRate": "-0.00025"},
    ]
    frame = parse_funding(rows, where=WHERE)
    assert frame["funding_time"].tolist() == [8 * HOUR, 16 * HOUR]
    assert frame["funding_rate"].tolist() == [0.0001, -0.00025]
    assert frame["funding_time"].dtype == np.int64
    assert parse_funding([], where=WHERE).empty


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"fundingTime": 1}, "expected a list"),
        ([{"fundingRate": "0.1"}], "funding row 0"),
        ([{"fundingTime": "1", "fundingRate": "0.1"}], "funding row 0"),
        ([{"fundingTime": True, "fundingRate": "0.1"}], "funding row 0"),
        ([{"fundingTime": 1, "fundingRate": "abc"}], "funding row 0"),
        (["x"], "funding row 0"),
        (
            [{"fundingTime": 2, "fundingRate": "0"}, {"fundingTime": 1, "fundingRate": "0"}],
            "not strictly increasing",
        ),
    ],
)
def test_parse_funding_rejects_wrong_shapes(payload: object, match: str) -> None:
    with pytest.raises(ExchangeError, match=match):
        parse_funding(payload, where=WHERE)


def test_parse_premium_index() -> None:
    raw = {
        "symbol": "BTCUSDT",
        "markPrice": "93576.0",
        "indexPrice": "93570.5",
        "estimatedSettlePrice": "93500",
        "lastFundingRate": "0.0001",
        "interestRate": "0.0001",
        "nextFundingTime": 1735718400000,
        "time": 1735689600000,
    }
    assert parse_premium_index(raw, where=WHERE) == PremiumIndex(
        "BTCUSDT", 93576.0, 93570.5, 0.0001, 1735718400000, 1735689600000
    )


@pytest.mark.parametrize("payload", [[], {"symbol": "BTCUSDT"}, {"markPrice": "x"}])
def test_parse_premium_index_rejects_wrong_shapes(payload: object) -> None:
    with pytest.raises(ExchangeError, match="premiumIndex unusable"):
        parse_premium_index(payload, where=WHERE)


def test_parse_exchange_info() -> None:
    raw = {
        "serverTime": 1_700_000_000_000,
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 6000,
            }
        ],
        "symbols": [
            {"symbol": "BTCUSDT", "status": "TRADING"},
            {"symbol": "LUNAUSDT", "status": "BREAK"},
        ],
    }
    info = parse_exchange_info(raw, where=WHERE)
    assert info.server_time_ms == 1_700_000_000_000
    assert info.rate_limits == (RateLimit("REQUEST_WEIGHT", 60.0, 6000),)
    assert info.has_symbol("LUNAUSDT")
    assert not info.has_symbol("NOPEUSDT")
    bare = parse_exchange_info({"symbols": [{"symbol": "X"}]}, where=WHERE)
    assert bare == ExchangeInfo(None, (), bare.symbols)
    assert bare.symbols[0].status == "TRADING"


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ([], "without a symbols list"),
        ({"symbols": "BTCUSDT"}, "without a symbols list"),
        ({"symbols": [{"name": "BTCUSDT"}]}, "lack 'symbol'"),
        ({"symbols": ["BTCUSDT"]}, "lack 'symbol'"),
        ({"symbols": [], "rateLimits": {}}, "rateLimits"),
    ],
)
def test_parse_exchange_info_rejects_wrong_shapes(payload: object, match: str) -> None:
    with pytest.raises(ExchangeError, match=match):
        parse_exchange_info(payload, where=WHERE)


def test_plan_pages_examples() -> None:
    assert plan_pages(0, 0, HOUR, 1000) == []
    assert plan_pages(0, 3 * HOUR, HOUR, 2) == [(0, 2 * HOUR - 1), (2 * HOUR, 3 * HOUR - 1)]


@given(
    start=st.integers(0, 10**6),
    bars=st.integers(0, 5000),
    step=st.sampled_from([60_000, 300_000, HOUR]),
    limit=st.integers(1, 1500),
)
def test_plan_pages_cover_the_range_exactly_once(
    start: int, bars: int, step: int, limit: int
) -> None:
    end = start + bars * step
    pages = plan_pages(start, end, step, limit)
    assert len(pages) == -(-bars // limit)
    cursor = start
    for lo, hi in pages:
        assert lo == cursor
        assert lo <= hi < end
        assert (hi - lo + 1) <= limit * step  # never more than `limit` bars in a slice
        cursor = hi + 1
    assert cursor == end or not pages


# Binance's documented fundingInfo answer (USDⓈ-M "Get Funding Rate Info"; its `// ignore`
# comment left out, as the real answer has none), and a real answer with several symbols
FUNDING_INFO_DOC = """[{"symbol": "BLZUSDT", "adjustedFundingRateCap": "0.02500000",
  "adjustedFundingRateFloor": "-0.02500000", "fundingIntervalHours": 8, "disclaimer": false}]"""
FUNDING_INFO_MANY = """[{"symbol":"BLZUSDT","adjustedFundingRateCap":"0.03000000",
"adjustedFundingRateFloor":"-0.03000000","fundingIntervalHours":4,"disclaimer":false},
{"symbol":"GTCUSDT","adjustedFundingRateCap":"0.03000000","adjustedFundingRateFloor":"-0.03000000",
"fundingIntervalHours":8,"disclaimer":false},{"symbol":"LPTUSDT","adjustedFundingRateCap":
"0.02000000","adjustedFundingRateFloor":"-0.02000000","fundingIntervalHours":4,"disclaimer":false}]"""


def test_parse_funding_info_reads_the_documented_answers() -> None:
    assert parse_funding_info(json.loads(FUNDING_INFO_DOC), where=WHERE) == {"BLZUSDT": 8}
    many = parse_funding_info(json.loads(FUNDING_INFO_MANY), where=WHERE)
    assert many == {"BLZUSDT": 4, "GTCUSDT": 8, "LPTUSDT": 4}
    assert parse_funding_info([], where=WHERE) == {}


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"symbol": "X"}, "expected a list of fundingInfo rows, got dict"),
        ([{"symbol": "X"}], "fundingInfo row 0 unusable"),
        ([{"symbol": "X", "fundingIntervalHours": "4"}], "row 0 unusable"),
        ([{"symbol": "X", "fundingIntervalHours": 0}], "row 0 unusable"),
        ([{"symbol": "X", "fundingIntervalHours": 4}, "Y"], "row 1 unusable"),
    ],
)
def test_parse_funding_info_rejects_wrong_shapes(payload: object, match: str) -> None:
    with pytest.raises(ExchangeError, match=match):
        parse_funding_info(payload, where=WHERE)
