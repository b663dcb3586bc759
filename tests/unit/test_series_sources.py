"""Live sources of the external series (alternative.me, Coin Metrics) against the fake server
serving the shared files, their retries and strict parsing, and the SeriesRefresher's cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.helpers_logging import json_log_lines

from atra.adapters.sources.coinmetrics import CoinMetricsSource, parse_asset_metrics
from atra.adapters.sources.fear_greed import FearGreedSource, parse_fng
from atra.adapters.sources.http import SourceHttp, TransientSourceError
from atra.adapters.sources.refresher import SeriesRefresher
from atra.core.features.external import DAY_MS, SERIES
from atra.core.features.registry import FeatureContext, compute_features
from atra.core.types import Timeframe
from atra.errors import DataError
from atra.sim.series_server import FILES, FakeSeriesServer

H = 3_600_000
D0 = 1_704_067_200_000  # 2024-01-01


class FastClock:
    """Wall time set by the test; sleeps are recorded, not waited."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now_ms / 1000

    def time(self) -> float:
        return self.now_ms / 1000

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def synthetic_frames(days: int = 60) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(1)
    t = D0 + np.arange(days, dtype=np.int64) * DAY_MS
    out = {}
    for name, rule in SERIES.items():
        frame = pd.DataFrame({"time": t})
        for col in rule.columns:
            frame[col] = (
                np.round(rng.uniform(1, 100, days))
                if name == "fear_greed"
                else (rng.uniform(1, 1e6, days))
            )
        out[name] = frame
    return out


def sources(url: str, clock: FastClock, page_size: int = 7) -> list:
    def http(name: str) -> SourceHttp:
        return SourceHttp(name, url, clock=clock, backoff_s=0.01, timeout_s=5)

    return [
        FearGreedSource(http("alternative.me")),
        *(CoinMetricsSource(http("coinmetrics"), n, page_size=page_size)
          for n in ("onchain_btc", "onchain_eth", "onchain_btc_activity")),
    ]  # fmt: skip


@pytest.fixture
def series_dir(shared_data_dir: Path) -> Path:
    path = shared_data_dir.parent / "series"
    if not (path / "README.md").exists():
        pytest.skip("../shared/series is not beside the project")
    return path


@pytest.mark.shared_data
async def test_sources_return_the_shared_files_values(series_dir: Path) -> None:
    clock = FastClock(pd.Timestamp("2025-01-02", tz="UTC").value // 1_000_000)
    async with FakeSeriesServer.from_dir(series_dir) as fake:
        for src in sources(fake.url, clock, page_size=500):
            async with src.http:
                got = await src.fetch(D0 - 400 * DAY_MS)
            want = pd.read_parquet(series_dir / FILES[src.name])
            want = want[want.time >= D0 - 400 * DAY_MS].reset_index(drop=True)
            assert got.time.tolist() == want.time.tolist()
            for col in SERIES[src.name].columns:
                # realised price travels as realised cap / supply: equal to ~1 ulp
                rtol = 1e-15 if col == "realized_price_usd" else 0.0
                np.testing.assert_allclose(got[col], want[col], rtol=rtol, atol=0, err_msg=col)
        pages = [r for r in fake.requests if "next_page_token" in r.params]
        assert pages  # 400+ days at 500 a page: Coin Metrics paging was followed


async def test_retries_on_5xx_429_and_garbage_then_gives_up() -> None:
    clock = FastClock(D0 + 30 * DAY_MS)
    async with FakeSeriesServer(synthetic_frames(), faults=["5xx", "429", "garbage"]) as fake:
        fg = sources(fake.url, clock)[0]
        async with fg.http:
            got = await fg.fetch(D0)
        assert [r.status for r in fake.requests] == [503, 429, 200, 200]
        assert len(clock.sleeps) == 3
        # no publication clock: all 60 days exist; the source asked for 30 + 2 newest ones
        assert len(got) == 32
        assert got.time.iloc[-1] == D0 + 59 * DAY_MS
        fake.faults.extend(["5xx"] * 5)
        async with fg.http:
            with pytest.raises(TransientSourceError, match=r"HTTP 503.*gave up after 5 attempts"):
                await fg.fetch(D0)


async def test_the_fake_publishes_like_the_real_apis() -> None:
    clock = FastClock(D0 + 10 * DAY_MS + 5 * H)
    async with FakeSeriesServer(synthetic_frames(), now_ms=lambda: clock.now_ms) as fake:
        fg, btc = sources(fake.url, clock)[:2]
        async with fg.http, btc.http:
            assert (await fg.fetch(D0)).time.iloc[-1] == D0 + 10 * DAY_MS
            # day 8 is published at day 9 + 4 h; day 9 not before day 10 + 4 h
            assert (await btc.fetch(D0)).time.iloc[-1] == D0 + 9 * DAY_MS


def test_strict_parsing_names_the_field() -> None:
    ok = {"data": [{"value": "40", "value_classification": "Fear", "timestamp": "1551139200"}]}
    assert parse_fng(ok).fear_greed.tolist() == [40.0]
    bad_value = {"data": [{"value": "forty", "timestamp": "1551139200"}]}
    with pytest.raises(DataError, match=r"data\[0\]: field 'value' is not a number: 'forty'"):
        parse_fng(bad_value)
    with pytest.raises(DataError, match="field 'timestamp' '1551139201' is not a day's 00:00"):
        parse_fng({"data": [{"value": "1", "timestamp": "1551139201"}]})
    with pytest.raises(DataError, match="expected an object with a 'data' list"):
        parse_fng([])
    rec = {"asset": "btc", "time": "2024-01-01T00:00:00.000000000Z", "CapMVRVCur": "1.9"}
    assert parse_asset_metrics([rec], "btc", ("mvrv",)).mvrv.tolist() == [1.9]
    with pytest.raises(DataError, match=r"data\[0\]: missing field 'CapMrktCurUSD'"):
        parse_asset_metrics([rec], "btc", ("market_cap_usd",))
    with pytest.raises(DataError, match=r"field 'CapMVRVCur' must be a decimal string, got 1\.9"):
        parse_asset_metrics([{**rec, "CapMVRVCur": 1.9}], "btc", ("mvrv",))
    with pytest.raises(DataError, match="field 'asset' is 'btc', expected 'eth'"):
        parse_asset_metrics([rec], "eth", ("mvrv",))
    with pytest.raises(DataError, match=r"data\[1\] time .* is not after"):
        parse_asset_metrics([rec, rec], "btc", ("mvrv",))


async def test_refresher_fetches_once_per_publication_and_logs_stale() -> None:
    frames = synthetic_frames(60)
    clock = FastClock(D0 + 20 * DAY_MS + 12 * H)
    async with FakeSeriesServer(frames, now_ms=lambda: clock.now_ms) as fake:
        srcs = sources(fake.url, clock)
        for s in srcs:
            await s.http.__aenter__()
        try:
            refresher = SeriesRefresher(srcs, poll_ms=15 * 60_000, history_days=30)
            got = {s.name: s for s in await refresher.refresh(clock.now_ms)}
            assert refresher.fetches == 4
            assert got["fear_greed"].frame.time.iloc[-1] == D0 + 20 * DAY_MS
            assert got["onchain_btc"].frame.time.iloc[-1] == D0 + 19 * DAY_MS
            # within the day: nothing is due, no request
            n = len(fake.requests)
            for _ in range(1, 10):
                clock.now_ms += H
                await refresher.refresh(clock.now_ms)
            assert len(fake.requests) == n
            assert refresher.fetches == 4
            # Fear & Greed day 21 is usable from day 21 01:00: one fetch, one new row
            clock.now_ms = D0 + 21 * DAY_MS + H
            got = {s.name: s for s in await refresher.refresh(clock.now_ms)}
            assert refresher.fetches == 5
            assert got["fear_greed"].frame.time.iloc[-1] == D0 + 21 * DAY_MS
            # the values equal the file's
            fg = frames["fear_greed"].set_index("time").fear_greed
            assert (
                got["fear_greed"]
                .frame.set_index("time")
                .fear_greed.equals(fg.loc[D0 + (21 - 30) * DAY_MS : D0 + 21 * DAY_MS])
            )
            # Coin Metrics day 20 is usable from day 21 06:00 (the fake publishes it at 04:00)
            clock.now_ms = D0 + 21 * DAY_MS + 6 * H
            await refresher.refresh(clock.now_ms)
            assert refresher.fetches == 5 + 3  # the three Coin Metrics series, once each
            assert refresher.next_publication_ms("onchain_btc") == D0 + 22 * DAY_MS + 6 * H
        finally:
            for s in srcs:
                await s.http.__aexit__(None, None, None)


async def test_a_source_that_stops_gives_nan_features_and_series_stale() -> None:
    frames = {"fear_greed": synthetic_frames(10)["fear_greed"]}
    clock = FastClock(D0 + 9 * DAY_MS + 2 * H)
    async with FakeSeriesServer(frames, now_ms=lambda: clock.now_ms) as fake:
        fg = sources(fake.url, clock)[0]
        async with fg.http:
            refresher = SeriesRefresher([fg], history_days=30)
            with json_log_lines("INFO") as lines:
                series = await refresher.refresh(clock.now_ms)
                assert not [e for e in lines() if e["event"] == "series_stale"]
                # no new day after day 9: stale 48 h after day 9 01:00
                clock.now_ms = D0 + 11 * DAY_MS + 3 * H
                fake.faults.extend(["5xx"] * 5)  # and the source fails meanwhile
                series = await refresher.refresh(clock.now_ms)
                events = [e["event"] for e in lines()]
            assert "series_fetch_failed" in events
            assert "series_stale" in events
    candles = pd.DataFrame(
        {
            "open_time": [clock.now_ms - 2 * H, clock.now_ms - H],
            **{c: [1.0, 1.0] for c in ("open", "high", "low", "close", "volume")},
        }
    )
    out = compute_features(
        candles, FeatureContext(timeframe=Timeframe.H1, series=series), ["fg_level"]
    )
    assert out.fg_level.isna().all()  # never the day-9 value forward-filled
