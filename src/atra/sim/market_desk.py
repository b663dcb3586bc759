"""The public market-data endpoints of the fake exchange (:mod:`atra.sim.exchange`).

Spot ``/api/v3/klines`` and ``/api/v3/exchangeInfo``, USDT-M ``/fapi/v1/klines``,
``/fapi/v1/fundingRate``, ``/fapi/v1/fundingInfo``, ``/fapi/v1/premiumIndex`` and
``/fapi/v1/exchangeInfo``, answered from candle and funding frames (:class:`FakeMarketDesk`),
and the Parquet files a data folder serves (:func:`read_data_dir`, files named like
``../shared/data``: ``BTCUSDT_spot_1h.parquet``, ``BTCUSDT_perp_1h.parquet``,
``BTCUSDT_perp_funding.parquet``).

Paging is Binance's (``startTime`` / ``endTime`` / ``limit``, default 500, capped at 1000 spot
/ 1500 futures; fundingRate 100 / 1000), and so are ``-1121 Invalid symbol.`` and ``-1120
Invalid interval.``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from atra.adapters.exchange.wire import DEFAULT_FUNDING_HOURS
from atra.adapters.orders import SymbolRules
from atra.core.types import Market, Timeframe
from atra.errors import DataError
from atra.sim.limits import WeightLimits
from atra.sim.wire import CandleKey, Reject, Series, candle_series, fixed, fmt, funding_series, page

__all__ = ["FakeMarketDesk", "read_data_dir"]

_MAX_KLINES: Final[dict[Market, int]] = {Market.SPOT: 1000, Market.PERP: 1500}
_FILE_RE: Final = re.compile(r"^([A-Z0-9]+)_(spot|perp)_([0-9a-zA-Z]+)\.parquet$")
_NO_TIMES: Final = np.zeros(0, dtype=np.int64)
"""Times of a series the exchange does not have (no rows)."""


def read_data_dir(
    data_dir: Path | str, symbols: Sequence[str] | None = None
) -> tuple[dict[CandleKey, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Candle and funding frames of every ``{SYMBOL}_{spot|perp}_{tf|funding}.parquet`` in
    ``data_dir`` (of ``symbols`` only, when given); other files are ignored."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"fake exchange data folder {root} does not exist")
    candles: dict[CandleKey, pd.DataFrame] = {}
    funding: dict[str, pd.DataFrame] = {}
    for path in sorted(root.glob("*.parquet")):
        m = _FILE_RE.match(path.name)
        if m is None or (symbols is not None and m.group(1) not in symbols):
            continue
        sym, market, tf = m.group(1), Market(m.group(2)), m.group(3)
        if tf == "funding":
            funding[sym] = pd.read_parquet(path)
        elif tf in {t.value for t in Timeframe}:
            candles[(market, sym, Timeframe(tf))] = pd.read_parquet(path)
    return candles, funding


class FakeMarketDesk:
    """Answers the unsigned endpoints of a :class:`~atra.sim.exchange.FakeExchange`.

    ``limits`` supply ``exchangeInfo``'s ``rateLimits``, ``rules`` the PERP symbols' filters.
    Each series is serialised once, on its first request.
    """

    def __init__(
        self,
        candles: Mapping[CandleKey, pd.DataFrame],
        funding: Mapping[str, pd.DataFrame],
        *,
        limits: WeightLimits,
        rules: Callable[[str], SymbolRules],
    ) -> None:
        self._candle_frames = candles
        self._funding_frames = funding
        self._limits = limits
        self._rules = rules
        self._candles: dict[CandleKey, Series] = {}
        self._funding: dict[str, Series] = {}

    def answer(
        self, market: Market, endpoint: str, params: Mapping[str, str], now_ms: int = 0
    ) -> str:
        """The answer body of ``endpoint`` at market time ``now_ms`` (raises
        :class:`~atra.sim.wire.Reject` for an error)."""
        if endpoint == "exchangeInfo":
            return self._exchange_info(market)
        if endpoint == "fundingInfo":
            return self._funding_info(now_ms)
        symbol = params.get("symbol", "")
        if not symbol:
            raise Reject(400, -1102, "Mandatory parameter 'symbol' was not sent.")
        if symbol not in self.symbols(market):
            raise Reject(400, -1121, "Invalid symbol.")
        if endpoint == "klines":
            interval = params.get("interval", "")
            try:
                tf = Timeframe(interval)
            except ValueError:
                raise Reject(400, -1120, "Invalid interval.") from None
            series = self._candle_series((market, symbol, tf))
            cap = _MAX_KLINES[market]
            return page(series, params, default=500, cap=cap)
        fseries = self._funding_series(symbol)
        if endpoint == "fundingRate":
            return page(fseries, params, default=100, cap=1000)
        close = next(
            (
                self._candle_series(k).last_close
                for k in sorted(self._candle_frames, key=str)
                if k[0] is market and k[1] == symbol
            ),
            0.0,
        )
        last_ft = int(fseries.times[-1]) if fseries.times.size else 0
        return json.dumps(
            {
                "symbol": symbol,
                "markPrice": fmt(close),
                "indexPrice": fmt(close),
                "estimatedSettlePrice": fmt(close),
                "lastFundingRate": fmt(fseries.last_rate),
                "interestRate": "0.0001",
                "nextFundingTime": last_ft + 8 * 3_600_000,
                "time": int(time.time() * 1000),
            }
        )

    def symbols(self, market: Market) -> set[str]:
        """Symbols served on ``market`` (PERP: those with candles or funding)."""
        syms = {s for m, s, _ in self._candle_frames if m is market}
        if market is Market.PERP:
            syms |= set(self._funding_frames)
        return syms

    def _candle_series(self, key: CandleKey) -> Series:
        series = self._candles.get(key)
        if series is None:
            frame = self._candle_frames.get(key)
            series = Series(_NO_TIMES) if frame is None else candle_series(frame, key[2].ms)
            self._candles[key] = series
        return series

    def _funding_series(self, symbol: str) -> Series:
        series = self._funding.get(symbol)
        if series is None:
            frame = self._funding_frames.get(symbol)
            series = Series(_NO_TIMES) if frame is None else funding_series(symbol, frame)
            self._funding[symbol] = series
        return series

    def _funding_info(self, now_ms: int) -> str:
        """``fundingInfo`` as Binance answers it: the symbols whose interval is not the default
        8 h now (the spacing of their funding rows around ``now_ms``), with rate caps."""
        rows = []
        for sym in sorted(self._funding_frames):
            times = self._funding_series(sym).times
            k = int(np.searchsorted(times, now_ms, "right"))
            if k == 0 or k >= times.size:
                continue
            hours, rest = divmod(int(times[k] - times[k - 1]), 3_600_000)
            if hours != DEFAULT_FUNDING_HOURS and rest == 0 and hours > 0:
                rows.append(
                    {
                        "symbol": sym,
                        "adjustedFundingRateCap": "0.02000000",
                        "adjustedFundingRateFloor": "-0.02000000",
                        "fundingIntervalHours": hours,
                        "disclaimer": False,
                    }
                )
        return json.dumps(rows)

    def _exchange_info(self, market: Market) -> str:
        return json.dumps(
            {
                "timezone": "UTC",
                "serverTime": int(time.time() * 1000),
                "rateLimits": self._limits.rate_limits(),
                "symbols": [
                    {
                        "symbol": s,
                        "status": "TRADING",
                        "baseAsset": s.removesuffix("USDT"),
                        "quoteAsset": "USDT",
                    }
                    | self._filters(s, market)
                    for s in sorted(self.symbols(market))
                ],
            }
        )

    def _filters(self, symbol: str, market: Market) -> dict[str, object]:
        r = self._rules(symbol)
        lot: dict[str, object] = {
            "stepSize": fixed(r.step_size),
            "minQty": fixed(r.min_qty),
            "maxQty": "1000000",
        }
        filters: list[dict[str, object]] = [
            {"filterType": "PRICE_FILTER", "tickSize": fixed(r.tick_size)},
            {"filterType": "LOT_SIZE"} | lot,
            {"filterType": "MARKET_LOT_SIZE"} | lot,
        ]
        if market is Market.SPOT:  # the spot engine checks no notional: the minimum is 0
            filters.append({"filterType": "NOTIONAL", "minNotional": "0", "applyMinToMarket": True})
        return {"filters": filters}
