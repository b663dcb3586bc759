"""ccxt and plain exchange symbols -> what ATRA trades (spot, USDT-M perpetual), or why not."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from atra.core.symbols import SymbolRef, parse_symbol
from atra.core.types import Market
from atra.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "market", "expected"),
    [
        ("BTC/USDT", None, SymbolRef("BTCUSDT", Market.SPOT, "BTC", "USDT")),
        ("BTC/USDT:USDT", None, SymbolRef("BTCUSDT", Market.PERP, "BTC", "USDT")),
        ("ETH/BTC", None, SymbolRef("ETHBTC", Market.SPOT, "ETH", "BTC")),
        ("1000PEPE/USDT:USDT", None, SymbolRef("1000PEPEUSDT", Market.PERP, "1000PEPE", "USDT")),
        ("BTC/USDT", "spot", SymbolRef("BTCUSDT", Market.SPOT, "BTC", "USDT")),
        ("BTC/USDT:USDT", Market.PERP, SymbolRef("BTCUSDT", Market.PERP, "BTC", "USDT")),
        ("BTCUSDT", "spot", SymbolRef("BTCUSDT", Market.SPOT)),
        ("BTCUSDT", "perp", SymbolRef("BTCUSDT", Market.PERP)),
        ("BTCUSDT", "usdm", SymbolRef("BTCUSDT", Market.PERP)),
        (" SOL/USDT ", None, SymbolRef("SOLUSDT", Market.SPOT, "SOL", "USDT")),
    ],
)
def test_supported_symbols(text: str, market: Market | str | None, expected: SymbolRef) -> None:
    assert parse_symbol(text, market) == expected


@pytest.mark.parametrize(
    ("text", "market", "says"),
    [
        ("BTCUSDT", None, "give market='spot' or 'perp'"),
        ("BTC/USD:BTC", None, "coin-margined (inverse) contracts are not supported"),
        ("ETH/USD:ETH", "perp", "coin-margined"),
        ("BTC/USDT:USDT-240329", None, "dated futures and options are not supported"),
        ("BTC/USDT:USDT-240329-60000-C", None, "dated futures and options"),
        ("BTC/USDC:USDC", None, "only USDT-margined perpetuals are supported"),
        ("BTC/USDT:BUSD", None, "settled in BUSD, not in its quote USDT"),
        ("BTC/USDT", "perp", "'BTC/USDT' is the spot market in ccxt notation but market='perp'"),
        ("BTC/USDT:USDT", "spot", "the spot symbol is 'BTC/USDT'"),
        ("btc/usdt", None, "(symbols are upper case)"),
        ("btcusdt", "spot", "(symbols are upper case)"),
        ("/USDT", None, "empty base coin"),
        ("BTC/", None, "empty quote coin"),
        ("BTC/USDT:", None, "empty settlement coin"),
        ("BTC/USDT/ETH", None, "expected ccxt notation"),
        ("BTC-USDT", "spot", "is not letters and digits"),
        ("", "spot", "empty symbol"),
        ("BTCUSDT", "margin", "unknown market 'margin'"),
    ],
)
def test_refused_symbols_say_why_in_one_line(text: str, market: str | None, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_symbol(text, market)
    message = str(info.value)
    assert says in message
    assert "\n" not in message


def test_a_non_string_is_refused() -> None:
    with pytest.raises(ConfigError, match="expected a string"):
        parse_symbol(42, "spot")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ref", "ccxt"),
    [
        (SymbolRef("BTCUSDT", Market.SPOT, "BTC", "USDT"), "BTC/USDT"),
        (SymbolRef("BTCUSDT", Market.PERP, "BTC", "USDT"), "BTC/USDT:USDT"),
        (SymbolRef("BTCUSDT", Market.PERP), ""),
    ],
)
def test_ccxt_name_of_a_parsed_symbol(ref: SymbolRef, ccxt: str) -> None:
    assert ref.ccxt == ccxt


codes = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=8)


@given(base=codes, quote=codes, perp=st.booleans())
def test_ccxt_round_trip(base: str, quote: str, perp: bool) -> None:
    quote = "USDT" if perp else quote
    assume(not (perp and base == quote))  # USDT/USDT:USDT settles in its base: refused
    text = f"{base}/{quote}:{quote}" if perp else f"{base}/{quote}"
    ref = parse_symbol(text)
    assert ref.symbol == base + quote
    assert ref.market is (Market.PERP if perp else Market.SPOT)
    assert ref.ccxt == text
    assert parse_symbol(ref.symbol, ref.market).symbol == ref.symbol
