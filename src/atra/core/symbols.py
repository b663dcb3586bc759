"""Market symbols: ccxt's unified notation and Binance's plain names, parsed to what ATRA trades.

ATRA trades two markets (:class:`~atra.core.types.Market`): spot and USDT-margined perpetual
futures, both named on Binance by the plain concatenation ``BASE + QUOTE`` (``BTCUSDT``).
:func:`parse_symbol` reads

* ``BTC/USDT`` (ccxt spot) -> ``BTCUSDT`` spot;
* ``BTC/USDT:USDT`` (ccxt linear perpetual, settled in the quote) -> ``BTCUSDT`` perp;
* ``BTCUSDT`` (the exchange's own name) -> needs the market given, since the same name is
  both the spot pair and the perpetual.

Everything else is refused with a one-line :class:`~atra.errors.ConfigError` saying why:
coin-margined (inverse) contracts such as ``BTC/USD:BTC``, dated futures and options
(``BTC/USDT:USDT-240329``), perpetuals settled in another coin, a market given that
contradicts the notation, lower-case or malformed names. Nothing is guessed.

:func:`check_symbol` is THE validator of an exchange symbol wherever one enters ATRA (config
``live.symbols``, ``--symbols`` / ``--symbol``, names read back from a journal): 2 to 30
upper-case ASCII letters and digits. A symbol becomes a file name in the store and in replay
data folders, so nothing else (no ``/``, ``.``, ``..``) may pass. :func:`split_symbols` reads a
command-line list with it.

Pure: strings in, values out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from atra.core.types import Market
from atra.errors import ConfigError

__all__ = [
    "PERP_SETTLE",
    "SYMBOL_PATTERN",
    "SymbolRef",
    "check_symbol",
    "parse_symbol",
    "split_symbols",
]

PERP_SETTLE: Final[str] = "USDT"
"""The settlement coin of the perpetuals ATRA trades (Binance USDT-M)."""

SYMBOL_PATTERN: Final[str] = r"[A-Z0-9]{2,30}"
"""What an exchange symbol may be: 2 to 30 upper-case ASCII letters and digits (BTCUSDT)."""

_SYMBOL: Final = re.compile(SYMBOL_PATTERN)
_CODE: Final = re.compile(r"[A-Z0-9]+")
_CCXT: Final = re.compile(r"(?P<base>[^/:]*)/(?P<quote>[^/:]*)(?::(?P<settle>.*))?")


@dataclass(frozen=True, slots=True)
class SymbolRef:
    """A parsed symbol: the exchange name (``BTCUSDT``) and its market. ``base`` / ``quote``
    are known only from ccxt notation (empty for a plain exchange name)."""

    symbol: str
    market: Market
    base: str = ""
    quote: str = ""

    @property
    def ccxt(self) -> str:
        """The ccxt unified symbol (``BTC/USDT`` or ``BTC/USDT:USDT``); empty when the base and
        quote are unknown (a plain exchange name cannot be split reliably)."""
        if not self.base:
            return ""
        pair = f"{self.base}/{self.quote}"
        return pair if self.market is Market.SPOT else f"{pair}:{self.quote}"

    def __str__(self) -> str:
        return f"{self.symbol} {self.market}"


def check_symbol(symbol: object, where: str = "symbol") -> str:
    """``symbol`` unchanged when it is an exchange symbol (:data:`SYMBOL_PATTERN`), else a
    one-line ConfigError naming ``where`` (``--symbols``, ``live.symbols``, a journal) and what
    is expected. Nothing is normalised here: callers that accept lower case upper-case first."""
    if not isinstance(symbol, str) or not _SYMBOL.fullmatch(symbol):
        hint = ""
        if isinstance(symbol, str) and _SYMBOL.fullmatch(symbol.upper()):
            hint = " (symbols are upper case)"
        raise ConfigError(
            f"{where}: symbol {symbol!r} is not an exchange symbol: expected 2-30 upper-case "
            f"letters and digits, e.g. BTCUSDT{hint}"
        )
    return symbol


def split_symbols(given: str | Sequence[str] | None, where: str = "--symbols") -> tuple[str, ...]:
    """A command-line symbol list (one string or repeated options, each comma-separated)
    upper-cased, each checked by :func:`check_symbol`, in order, once."""
    items = [given] if isinstance(given, str) else list(given or ())
    out = [s.strip().upper() for item in items for s in item.split(",") if s.strip()]
    return tuple(dict.fromkeys(check_symbol(s, where) for s in out))


def _market_of(market: Market | str | None) -> Market | None:
    if market is None or isinstance(market, Market):
        return market
    return Market.parse(market)


def _code(text: str, part: str, what: str) -> str:
    if not part:
        raise ConfigError(f"symbol {text!r}: empty {what} (expected e.g. 'BTC/USDT')")
    if not _CODE.fullmatch(part):
        hint = " (symbols are upper case)" if _CODE.fullmatch(part.upper()) else ""
        raise ConfigError(f"symbol {text!r}: {what} {part!r} is not letters and digits{hint}")
    return part


def _settle(text: str, base: str, quote: str, settle: str) -> None:
    """Refuse every contract but a perpetual settled in the quote coin (USDT)."""
    if "-" in settle:
        raise ConfigError(
            f"symbol {text!r}: dated futures and options are not supported "
            f"(ATRA trades spot and {PERP_SETTLE}-margined perpetuals, e.g. "
            f"'{base}/{PERP_SETTLE}:{PERP_SETTLE}')"
        )
    settle = _code(text, settle, "settlement coin")
    if settle == base:
        raise ConfigError(
            f"symbol {text!r}: coin-margined (inverse) contracts are not supported "
            f"(ATRA trades {PERP_SETTLE}-margined perpetuals, e.g. '{base}/{PERP_SETTLE}:"
            f"{PERP_SETTLE}')"
        )
    if settle != quote:
        raise ConfigError(
            f"symbol {text!r}: settled in {settle}, not in its quote {quote} "
            "(only linear perpetuals settled in the quote coin are supported)"
        )
    if settle != PERP_SETTLE:
        raise ConfigError(
            f"symbol {text!r}: only {PERP_SETTLE}-margined perpetuals are supported "
            f"(got a {settle}-margined one)"
        )


def parse_symbol(text: str, market: Market | str | None = None) -> SymbolRef:
    """``text`` (ccxt notation or a plain exchange name) and an optional ``market`` to a
    :class:`SymbolRef` (see the module docstring). ``market`` may be omitted for ccxt
    notation (which says the market) and must agree with it when given."""
    if not isinstance(text, str):
        raise ConfigError(f"symbol {text!r}: expected a string like 'BTC/USDT' or 'BTCUSDT'")
    given = _market_of(market)
    raw = text.strip()
    found = _CCXT.fullmatch(raw)
    if found is None:
        if "/" in raw or ":" in raw:
            raise ConfigError(
                f"symbol {text!r}: expected ccxt notation 'BASE/QUOTE' or 'BASE/QUOTE:SETTLE'"
            )
        name = check_symbol(_code(text, raw, "symbol"), f"symbol {text!r}")
        if given is None:
            raise ConfigError(
                f"symbol {text!r}: a plain exchange symbol is both a spot pair and a "
                f"perpetual; give market='spot' or 'perp' (or write '.../USDT' for spot, "
                f"'.../USDT:USDT' for the perpetual)"
            )
        return SymbolRef(name, given)
    base = _code(text, found["base"], "base coin")
    quote = _code(text, found["quote"], "quote coin")
    settle = found["settle"]
    if settle is None:
        parsed = Market.SPOT
    else:
        _settle(text, base, quote, settle)
        parsed = Market.PERP
    if given is not None and given is not parsed:
        other = f"{base}/{quote}" if given is Market.SPOT else f"{base}/{quote}:{quote}"
        raise ConfigError(
            f"symbol {text!r} is the {parsed} market in ccxt notation but market={given.value!r} "
            f"was given (the {given} symbol is {other!r})"
        )
    return SymbolRef(base + quote, parsed, base, quote)
