"""Kline stream messages: the documented Binance example, closed bars, strict errors."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from atra.adapters.exchange.stream import (
    MAX_STREAMS,
    ClosedKline,
    combined_url,
    parse_kline_event,
    stream_name,
)
from atra.core.types import Timeframe
from atra.errors import ExchangeError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "binance" / "ws" / "usdm_kline_1m.json"


def _doc() -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(FIXTURE.read_text())
    return payload


def _closed() -> dict[str, Any]:
    payload = _doc()
    payload["k"]["x"] = True
    return payload


def test_documented_example_is_a_bar_still_forming() -> None:
    assert parse_kline_event(_doc(), Timeframe.M1) is None


def test_closed_kline_fields() -> None:
    bar = parse_kline_event(_closed(), Timeframe.M1)
    assert bar == ClosedKline(
        symbol="BTCUSDT",
        open_time=1638747660000,
        close_time=1638747719999,
        open=0.001,
        high=0.0025,
        low=0.0015,
        close=0.002,
        volume=1000.0,
        event_ms=1638747660000,
    )


def test_event_time_must_be_an_integer() -> None:
    payload = _closed()
    payload["E"] = "1638747660000"
    with pytest.raises(ExchangeError, match="E must be an integer"):
        parse_kline_event(payload, Timeframe.M1)


def test_combined_stream_wrapper() -> None:
    wrapped = {"stream": "btcusdt@kline_1m", "data": _closed()}
    bar = parse_kline_event(wrapped, Timeframe.M1)
    assert bar is not None
    assert bar.open_time == 1638747660000


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("e",), "trade", "expected event 'kline'"),
        (("k", "i"), "1h", "k.i must be '1m'"),
        (("k", "x"), 1, "k.x must be true or false"),
        (("k", "t"), True, "k.t must be an integer"),
        (("k", "t"), "1638747660000", "k.t must be an integer"),
        (("k", "T"), 1638747720000, "are not one 1m bar"),
        (("k", "o"), 0.001, "k.o must be a decimal string"),
        (("k", "c"), "nan", "k.c must be finite and >= 0"),
        (("k", "v"), "-1", "k.v must be finite and >= 0"),
        (("k", "h"), "1e", "k.h must be a decimal string"),
        (("k", "s"), "ETHUSDT", "k.s must name the event's symbol"),
        (("k",), [], "'k' must be an object"),
    ],
)
def test_bad_messages_name_the_field(path: tuple[str, ...], value: object, message: str) -> None:
    payload = _closed()
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ExchangeError, match=re.escape(message)) as info:
        parse_kline_event({"stream": "btcusdt@kline_1m", "data": payload}, Timeframe.M1)
    assert "btcusdt@kline_1m" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_key_and_not_an_object() -> None:
    payload = copy.deepcopy(_closed())
    del payload["k"]["l"]
    with pytest.raises(ExchangeError, match=r"k\.l must be a decimal string"):
        parse_kline_event(payload, Timeframe.M1)
    with pytest.raises(ExchangeError, match="expected a JSON object"):
        parse_kline_event([1, 2], Timeframe.M1)


def test_combined_url() -> None:
    url = combined_url("wss://fstream.binance.com", ["BTCUSDT", "ETHUSDT"], Timeframe.H1)
    assert url == "wss://fstream.binance.com/stream?streams=btcusdt@kline_1h/ethusdt@kline_1h"
    assert stream_name("BTCUSDT", Timeframe.M1) == "btcusdt@kline_1m"
    with pytest.raises(ExchangeError, match="at most 1024"):
        combined_url("wss://x", [f"S{i}USDT" for i in range(MAX_STREAMS + 1)], Timeframe.H1)
    with pytest.raises(ExchangeError, match="no symbols"):
        combined_url("wss://x", [], Timeframe.H1)
