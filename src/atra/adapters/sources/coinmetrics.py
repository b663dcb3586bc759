"""Coin Metrics' community API: ``GET /v4/timeseries/asset-metrics`` (daily frequency).

Answer: ``{"data": [{"asset": "btc", "time": "2024-01-01T00:00:00.000000000Z",
"CapMVRVCur": "1.9", ...}, ...], "next_page_token": ..., "next_page_url": ...}``; values are
decimal strings; pages are followed through ``next_page_url`` until none is given. Parsed
strictly into the frame of a built-in series (``onchain_btc``, ``onchain_eth``,
``onchain_btc_activity``): ``time`` int64 ms ascending plus the series' columns (float64). A
record missing a requested metric, a value that is not a decimal, or a time that is not a day's
00:00 is a one-line :class:`~atra.errors.DataError` naming the record and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd

from atra.adapters.sources.http import SourceHttp
from atra.errors import DataError

__all__ = ["CM_URL", "METRICS", "CoinMetricsSource", "parse_asset_metrics"]

CM_URL: Final[str] = "https://community-api.coinmetrics.io"
PATH: Final[str] = "/v4/timeseries/asset-metrics"
DAY_MS: Final[int] = 86_400_000

METRICS: Final[dict[str, str]] = {
    "price_usd": "PriceUSD",
    "market_cap_usd": "CapMrktCurUSD",
    "mvrv": "CapMVRVCur",
    "supply": "SplyCur",
    "realized_price_usd": "CapRealUSD",  # realised cap; divided by SplyCur below
    "txcnt": "TxCnt",
    "adractcnt": "AdrActCnt",
    "hashrate": "HashRate",
    "flowinexusd": "FlowInExUSD",
    "flowoutexusd": "FlowOutExUSD",
    "isstotusd": "IssTotUSD",
    "feetotntv": "FeeTotNtv",
}
"""Series column -> Coin Metrics metric. ``realized_price_usd`` = CapRealUSD / SplyCur."""

SERIES_ASSET: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "onchain_btc": (
        "btc",
        ("price_usd", "market_cap_usd", "mvrv", "supply", "realized_price_usd"),
    ),
    "onchain_eth": (
        "eth",
        ("price_usd", "market_cap_usd", "mvrv", "supply", "realized_price_usd"),
    ),
    "onchain_btc_activity": (
        "btc",
        ("txcnt", "adractcnt", "hashrate", "flowinexusd", "flowoutexusd", "isstotusd", "feetotntv"),
    ),
}


def metrics_for(columns: tuple[str, ...]) -> list[str]:
    """The Coin Metrics metrics to request for ``columns`` (SplyCur added for realised price)."""
    out: list[str] = []
    for col in columns:
        if col not in METRICS:
            raise DataError(f"coinmetrics: no metric for column {col!r}")
        out.append(METRICS[col])
    if "realized_price_usd" in columns and "SplyCur" not in out:
        out.append("SplyCur")
    return out


def _day_ms(raw: object, at: str) -> int:
    if not isinstance(raw, str):
        raise DataError(f"{at}: field 'time' must be an ISO-8601 string, got {raw!r}")
    try:
        stamp = pd.Timestamp(raw)
    except ValueError:
        raise DataError(f"{at}: field 'time' is not an ISO-8601 time: {raw!r}") from None
    if stamp.tzinfo is None:
        raise DataError(f"{at}: field 'time' {raw!r} has no zone (expected ...Z)")
    ms = int(stamp.value // 1_000_000)
    if ms % DAY_MS or stamp.value % 1_000_000:
        raise DataError(f"{at}: field 'time' {raw!r} is not a day's 00:00 UTC")
    return ms


def _decimal(rec: Mapping[str, object], metric: str, at: str) -> float:
    if metric not in rec:
        raise DataError(f"{at}: missing field {metric!r}")
    raw = rec[metric]
    if not isinstance(raw, str):
        raise DataError(f"{at}: field {metric!r} must be a decimal string, got {raw!r}")
    try:
        value = float(raw)
    except ValueError:
        raise DataError(f"{at}: field {metric!r} is not a decimal: {raw!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{at}: field {metric!r} is not finite: {raw!r}")
    return value


def parse_asset_metrics(
    records: list[object], asset: str, columns: tuple[str, ...], *, where: str = "coinmetrics"
) -> pd.DataFrame:
    """The series frame of the ``data`` records of one asset (all pages together)."""
    times: list[int] = []
    cols: dict[str, list[float]] = {c: [] for c in columns}
    for i, rec in enumerate(records):
        at = f"{where}: data[{i}]"
        if not isinstance(rec, dict):
            raise DataError(f"{at}: expected an object, got {type(rec).__name__}")
        if rec.get("asset") != asset:
            raise DataError(f"{at}: field 'asset' is {rec.get('asset')!r}, expected {asset!r}")
        times.append(_day_ms(rec.get("time"), at))
        for col in columns:
            value = _decimal(rec, METRICS[col], at)
            if col == "realized_price_usd":
                supply = _decimal(rec, "SplyCur", at)
                if supply <= 0:
                    raise DataError(f"{at}: field 'SplyCur' must be > 0, got {supply:g}")
                value /= supply
            cols[col].append(value)
    t = np.asarray(times, dtype=np.int64)
    bad = np.flatnonzero(np.diff(t) <= 0)
    if bad.size:
        raise DataError(
            f"{where}: data[{int(bad[0]) + 1}] time {int(t[bad[0] + 1])} is not after the "
            "previous record's"
        )
    return pd.DataFrame(
        {"time": t, **{c: np.asarray(v, dtype=np.float64) for c, v in cols.items()}}
    )


class CoinMetricsSource:
    """One on-chain series from Coin Metrics (or a fake at ``http.base_url``): a built-in one
    by name, or any ``asset`` and ``columns`` (keys of :data:`METRICS`) under ``name``."""

    def __init__(
        self,
        http: SourceHttp,
        name: str,
        *,
        page_size: int = 1000,
        asset: str | None = None,
        columns: tuple[str, ...] = (),
    ) -> None:
        if (asset is None) != (not columns):
            raise DataError(f"coinmetrics {name}: give both asset and columns, or neither")
        if asset is None and name not in SERIES_ASSET:
            raise DataError(
                f"coinmetrics: no series {name!r}; expected one of {', '.join(SERIES_ASSET)}"
            )
        if page_size < 1:
            raise DataError(f"coinmetrics: page_size must be >= 1, got {page_size}")
        self.http = http
        self.name = name
        self.asset, self.columns = (asset, columns) if asset is not None else SERIES_ASSET[name]
        metrics_for(self.columns)  # an unknown column is refused now, not at the first fetch
        self.page_size = page_size

    async def fetch(self, since_ms: int) -> pd.DataFrame:
        """Every daily record stamped at or after ``since_ms`` that the API has now."""
        start = pd.Timestamp(since_ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
        params: dict[str, str | int] = {
            "assets": self.asset,
            "metrics": ",".join(metrics_for(self.columns)),
            "frequency": "1d",
            "start_time": start,
            "page_size": self.page_size,
        }
        records: list[object] = []
        path = PATH
        for page in range(10_000):
            payload = await self.http.get_json(path, params)
            where = f"coinmetrics {self.name} page {page}"
            if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
                raise DataError(f"{where}: expected an object with a 'data' list")
            records.extend(payload["data"])
            nxt = payload.get("next_page_url")
            if nxt is None:
                break
            if not isinstance(nxt, str):
                raise DataError(f"{where}: field 'next_page_url' must be a string, got {nxt!r}")
            parts = urlsplit(nxt)
            path, params = parts.path, dict(parse_qsl(parts.query))
        else:  # pragma: no cover - a server that pages forever
            raise DataError(f"coinmetrics {self.name}: more than 10000 pages")
        return parse_asset_metrics(
            records, self.asset, self.columns, where=f"coinmetrics {self.name}"
        )
