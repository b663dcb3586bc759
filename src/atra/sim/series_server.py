"""A fake of the two external-series APIs: a real aiohttp server on 127.0.0.1
(:class:`FakeSeriesServer`) serving the ``../shared/series`` Parquet files in each API's JSON
shape, with publication times, paging and fault injection.

- ``GET /fng/?limit=N&format=json``: alternative.me's shape (``data`` newest first, ``value``
  and ``timestamp`` in seconds as strings), from ``fear_greed_daily.parquet``.
- ``GET /v4/timeseries/asset-metrics?assets=btc|eth&metrics=...&frequency=1d&start_time=...
  &page_size=N``: Coin Metrics' shape (``time`` as ``...T00:00:00.000000000Z``, decimal
  strings, ``next_page_token`` / ``next_page_url`` while more rows remain), from
  ``onchain_{btc,eth}_daily.parquet`` and ``onchain_btc_activity_daily.parquet``.
  ``CapRealUSD`` is served as realised price x supply.

``now_ms`` (a callable; None = everything) makes the fake answer like the real API at that
instant: a Fear & Greed day D exists from D 00:00, a Coin Metrics day D from D + 1 day +
``cm_delay_ms``. ``faults`` is a queue consumed one per request: ``"5xx"`` (HTTP 503),
``"429"`` (with ``Retry-After: 0``), ``"garbage"`` (HTTP 200 with an HTML body); None or an
empty queue answers normally. Every request is recorded in :attr:`FakeSeriesServer.requests`.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlencode

import numpy as np
import pandas as pd
from aiohttp import web

from atra.errors import DataError
from atra.sim.server import LocalServer

__all__ = ["FakeSeriesServer", "SeriesRequest"]

DAY_MS: Final[int] = 86_400_000
FILES: Final[dict[str, str]] = {
    "fear_greed": "fear_greed_daily.parquet",
    "onchain_btc": "onchain_btc_daily.parquet",
    "onchain_eth": "onchain_eth_daily.parquet",
    "onchain_btc_activity": "onchain_btc_activity_daily.parquet",
}
_METRIC_COLUMN: Final[dict[str, str]] = {
    "PriceUSD": "price_usd",
    "CapMrktCurUSD": "market_cap_usd",
    "CapMVRVCur": "mvrv",
    "SplyCur": "supply",
    "TxCnt": "txcnt",
    "AdrActCnt": "adractcnt",
    "HashRate": "hashrate",
    "FlowInExUSD": "flowinexusd",
    "FlowOutExUSD": "flowoutexusd",
    "IssTotUSD": "isstotusd",
    "FeeTotNtv": "feetotntv",
}
_GARBAGE: Final[str] = "<html><body><h1>502 Bad Gateway</h1></body></html>"


@dataclass(frozen=True, slots=True)
class SeriesRequest:
    """One request as the fake saw it."""

    path: str
    params: Mapping[str, str]
    status: int
    fault: str | None


def _asset_metrics(frames: Mapping[str, pd.DataFrame], asset: str) -> dict[str, pd.Series]:
    out: dict[str, pd.Series] = {}
    for name in (f"onchain_{asset}", f"onchain_{asset}_activity"):
        frame = frames.get(name)
        if frame is None:
            continue
        indexed = frame.set_index("time")
        for metric, col in _METRIC_COLUMN.items():
            if col in indexed.columns:
                out[metric] = indexed[col]
        if {"realized_price_usd", "supply"} <= set(indexed.columns):
            out["CapRealUSD"] = indexed.realized_price_usd * indexed.supply
    return out


class FakeSeriesServer(LocalServer):
    """``async with FakeSeriesServer(frames) as fake:`` then point the sources at ``fake.url``."""

    def __init__(
        self,
        frames: Mapping[str, pd.DataFrame],
        *,
        now_ms: Callable[[], int] | None = None,
        cm_delay_ms: int = 4 * 3_600_000,
        faults: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        unknown = sorted(set(frames) - set(FILES))
        if unknown:
            raise DataError(f"fake series server: unknown series {unknown}; expected {list(FILES)}")
        self.frames = dict(frames)
        self.now_ms = now_ms
        self.cm_delay_ms = cm_delay_ms
        self.faults: deque[str] = deque(faults)
        self.host = host
        self.port = port
        self.requests: list[SeriesRequest] = []
        self._runner: web.AppRunner | None = None

    @classmethod
    def from_dir(cls, series_dir: Path | str, **kwargs: object) -> FakeSeriesServer:
        """Serve the files of ``series_dir`` named like ``../shared/series``."""
        series_dir = Path(series_dir)
        frames = {
            name: pd.read_parquet(series_dir / file)
            for name, file in FILES.items()
            if (series_dir / file).is_file()
        }
        if not frames:
            raise DataError(f"{series_dir}: none of {', '.join(FILES.values())}")
        return cls(frames, **kwargs)  # type: ignore[arg-type]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/fng/", self._fng)
        app.router.add_get("/v4/timeseries/asset-metrics", self._asset_metrics)
        await self._serve(app)

    # ---- answers ---------------------------------------------------------------------
    def _fault(self, request: web.Request) -> web.Response | None:
        fault = self.faults.popleft() if self.faults else None
        response: web.Response | None = None
        if fault == "5xx":
            response = web.Response(status=503, text="upstream unavailable")
        elif fault == "429":
            response = web.Response(status=429, text="slow down", headers={"Retry-After": "0"})
        elif fault == "garbage":
            response = web.Response(status=200, text=_GARBAGE, content_type="text/html")
        elif fault is not None:
            raise DataError(f"fake series server: unknown fault {fault!r}")
        if response is not None:
            self._record(request, response.status, fault)
        return response

    def _record(self, request: web.Request, status: int, fault: str | None = None) -> None:
        self.requests.append(SeriesRequest(request.path, dict(request.query), status, fault))

    def _bad(self, request: web.Request, message: str) -> web.Response:
        self._record(request, 400)
        return web.json_response(
            {"error": {"type": "bad_parameter", "message": message}}, status=400
        )

    def _visible(self, times: np.ndarray, delay_ms: int) -> np.ndarray:
        if self.now_ms is None:
            return np.ones(times.shape, dtype=bool)
        return np.asarray(times + delay_ms <= self.now_ms())

    async def _fng(self, request: web.Request) -> web.Response:
        faulty = self._fault(request)
        if faulty is not None:
            return faulty
        frame = self.frames.get("fear_greed")
        try:
            limit = int(request.query.get("limit", "1"))
        except ValueError:
            return self._bad(request, "limit must be an integer")
        if frame is None:
            return self._bad(request, "no fear & greed data")
        shown = frame[self._visible(frame.time.to_numpy(), 0)]
        rows = shown.iloc[::-1] if limit == 0 else shown.iloc[::-1].iloc[:limit]
        data = [
            {
                "value": str(int(v)) if float(v).is_integer() else repr(float(v)),
                "value_classification": _classify(float(v)),
                "timestamp": str(int(t) // 1000),
            }
            for t, v in zip(rows.time, rows.fear_greed, strict=True)
        ]
        self._record(request, 200)
        return web.json_response({"name": "Fear and Greed Index", "data": data})

    async def _asset_metrics(self, request: web.Request) -> web.Response:
        faulty = self._fault(request)
        if faulty is not None:
            return faulty
        q = request.query
        asset = q.get("assets", "")
        if asset not in ("btc", "eth") or q.get("frequency", "1d") != "1d":
            return self._bad(request, f"assets {asset!r} / frequency {q.get('frequency')!r}")
        available = _asset_metrics(self.frames, asset)
        metrics = [m for m in q.get("metrics", "").split(",") if m]
        missing = [m for m in metrics if m not in available]
        if not metrics or missing:
            return self._bad(request, f"unsupported metrics {missing or 'none'}")
        table = pd.concat([available[m].rename(m) for m in metrics], axis=1, join="inner")
        times = table.index.to_numpy(dtype=np.int64)
        keep = self._visible(times, DAY_MS + self.cm_delay_ms)
        with contextlib.suppress(KeyError):
            start = int(pd.Timestamp(q["start_time"]).value // 1_000_000)
            keep &= times >= start
        table = table[keep]
        try:
            offset = int(q.get("next_page_token", "0"))
            size = int(q.get("page_size", "100"))
        except ValueError:
            return self._bad(request, "next_page_token and page_size must be integers")
        page = table.iloc[offset : offset + size]
        data = [
            {
                "asset": asset,
                "time": pd.Timestamp(int(t), unit="ms").strftime("%Y-%m-%dT%H:%M:%S.000000000Z"),
                **{m: repr(float(v)) for m, v in zip(metrics, row, strict=True)},
            }
            for t, row in zip(page.index.to_numpy(np.int64), page.to_numpy(np.float64), strict=True)
        ]
        body: dict[str, object] = {"data": data}
        if offset + size < len(table):
            token = str(offset + size)
            body["next_page_token"] = token
            query = urlencode({**q, "next_page_token": token})
            body["next_page_url"] = f"{self.url}{request.path}?{query}"
        self._record(request, 200)
        return web.json_response(body)


def _classify(value: float) -> str:
    for upper, label in ((25, "Extreme Fear"), (46, "Fear"), (54, "Neutral"), (75, "Greed")):
        if value < upper:
            return label
    return "Extreme Greed"
