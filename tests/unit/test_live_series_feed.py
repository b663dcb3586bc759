"""The external series in the live loop: each decision sees only the records usable before
its bar's close and only the series that apply to its symbol; sourced series are refreshed
through their fakes at most once per publication; stale series are logged (once a day) and
their features NaN; a file series is re-read when it changes; a model reading a series the
loop is not given is refused in one line."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.helpers_live import STEP, T0, synthetic
from tests.helpers_logging import json_log_lines, quiet_structlog

from atra.adapters.exchange.client import BinanceClient
from atra.config import SeriesConfig
from atra.core.decision import Decision
from atra.core.exits.api import ExitSpec
from atra.core.features.context import ModelInputs, SeriesInput
from atra.core.features.external import DAY_MS, SERIES
from atra.core.features.registry import FeatureContext, compute_features
from atra.core.features.sources import PointInTimeSeries
from atra.core.signals.spec import SignalSpec
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError
from atra.live.feed import check_servable
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LoopSettings
from atra.live.replay import ReplaySetup, run_replay
from atra.live.series_feed import SeriesFeed, live_series_feed, replay_series_feed
from atra.live.settings import SimClock
from atra.sim.series_server import FakeSeriesServer

H = 3_600_000
D0 = T0 - 30 * DAY_MS  # the series start a month before the candles


def frames(days: int = 60) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(5)
    t = D0 + np.arange(days, dtype=np.int64) * DAY_MS
    fg = np.round(rng.uniform(0, 100, days))
    out = {"fear_greed": pd.DataFrame({"time": t, "fear_greed": fg})}
    cols = SERIES["onchain_eth"].columns
    out["onchain_eth"] = pd.DataFrame({"time": t, **{c: rng.uniform(1, 1e6, days) for c in cols}})
    return out


def inputs(fr: dict[str, pd.DataFrame]) -> tuple[SeriesInput, ...]:
    out = []
    for name, frame in fr.items():
        rule = SERIES[name]
        series = PointInTimeSeries(name, frame, lag_ms=rule.lag_ms, max_age_ms=rule.max_age_ms,
                                   family=rule.family)  # fmt: skip
        out.append(SeriesInput(series, () if rule.base_asset is None else (rule.base_asset,)))
    return tuple(out)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet_structlog():
        yield


# ---- point in time and scope ------------------------------------------------------------------


def test_a_decision_sees_only_records_usable_before_its_close() -> None:
    fg, eth = inputs(frames())
    feed = SeriesFeed(SimClock(T0 / 1000), stored={"fear_greed": fg, "onchain_eth": eth})
    close = T0 + 10 * DAY_MS + 5 * H  # day D+10, 05:00
    got = {s.name: s for s in feed.for_symbol("ETHUSDT", close)}
    fg_times = got["fear_greed"].times_ms()
    assert fg_times[-1] == T0 + 10 * DAY_MS  # published 00:00, usable 01:00 < 05:00
    eth_times = got["onchain_eth"].times_ms()
    assert eth_times[-1] == T0 + 8 * DAY_MS  # day D+9 is usable only at D+10 06:00
    assert all((s.times_ms() + s.lag_ms < close).all() for s in got.values())
    at_usable = T0 + 10 * DAY_MS + 6 * H  # exactly D+9 + 30 h: still not usable (strict)
    assert feed.for_symbol("ETHUSDT", at_usable)[1].times_ms()[-1] == T0 + 8 * DAY_MS
    assert [s.name for s in feed.for_symbol("BTCUSDT", close)] == ["fear_greed"]
    assert feed.for_symbol("ETHUSDT", close)[0] is got["fear_greed"]  # cut once per bar


def test_the_loop_refuses_a_model_reading_a_series_it_is_not_given() -> None:
    client = BinanceClient(Market.SPOT, base_url="http://127.0.0.1:9")
    need = ModelInputs(series=("fear_greed", "onchain_btc"))
    with pytest.raises(ConfigError, match="reads the external series onchain_btc, which the live "
                       r"loop is not given \(configure it: \[\[features.series\]\]"):  # fmt: skip
        check_servable(need, client, None, ("fear_greed",))
    check_servable(need, client, None, ("fear_greed", "onchain_btc"))


# ---- through the fake sources -----------------------------------------------------------------


def test_sources_are_asked_at_most_once_per_publication_and_match_the_files() -> None:
    fr = frames()
    stored = {i.name: i for i in inputs(fr)}
    clock = SimClock((T0 - 1) / 1000)

    async def run() -> tuple[int, list[tuple[int, int]], None]:
        async with replay_series_feed(tuple(stored.values()), clock, via_sources={
                "fear_greed", "onchain_eth"}, history_days=20) as feed:  # fmt: skip
            assert feed is not None
            assert feed.refresher is not None
            checked: list[tuple[int, int]] = []
            for hour in range(5 * 24):
                clock.now_s = (T0 + hour * H) / 1000
                await feed.refresh()
                close = T0 + hour * H
                for got in feed.for_symbol("ETHUSDT", close):
                    want = stored[got.name].series
                    k = int(np.searchsorted(want.times_ms() + want.lag_ms, close)) - 1
                    tail = got.times_ms()[-1]
                    assert tail == want.times_ms()[k]  # the same newest record as the files
                    row = got.frame.iloc[-1]
                    ref = want.frame.iloc[k]
                    assert all(row[c] == ref[c] for c in want.value_columns)
                    checked.append((hour, tail))
            return feed.refresher.fetches, checked, None

    fetches, checked, _ = asyncio.run(run())
    # 120 hourly refreshes, 11 fetches: each series' first load, then one per publication:
    # Fear & Greed day D is due at D + 1 h (hours 25, 49, 73, 97), Coin Metrics day D at
    # D + 1 day + 6 h (hours 6, 30, 54, 78, 102)
    assert fetches == 1 + 4 + 1 + 5
    assert len(checked) == 2 * 5 * 24


def test_stale_series_are_logged_once_a_day_and_their_features_nan() -> None:
    fr = {"fear_greed": frames(32)["fear_greed"]}  # ends 2 days into the candles
    (fg,) = inputs(fr)
    clock = SimClock(T0 / 1000)
    feed = SeriesFeed(clock, stored={"fear_greed": fg})
    with json_log_lines("WARNING") as lines:
        for hour in range(6 * 24):
            clock.now_s = (T0 + hour * H) / 1000
            asyncio.run(feed.refresh())
    stale = [e for e in lines() if e.get("event") == "series_stale"]
    assert len(stale) == 3  # stale from hour 74 (48 h after 01:00 of day 1): once a day
    assert {e["series"] for e in stale} == {"fear_greed"}
    assert [e["last_time"] for e in stale] == [T0 + DAY_MS] * 3
    candles = synthetic(1, 6 * 24, T0)
    ctx = FeatureContext(timeframe=Timeframe.H1, series=feed.for_symbol("BTCUSDT", T0 + 200 * H))
    level = compute_features(candles, ctx, ["fg_level"])["fg_level"].to_numpy()
    last_usable = T0 + 1 * DAY_MS + H  # the last record's day D+1, usable from 01:00
    stale_from = np.searchsorted(candles["open_time"] + STEP, last_usable + 48 * H, side="right")
    assert np.isnan(level[stale_from:]).all()  # never carried past the maximum age
    assert np.isfinite(level[25:stale_from]).all()


def test_a_file_series_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "sent.csv"
    days = D0 + np.arange(3, dtype=np.int64) * DAY_MS
    pd.DataFrame({"time": days, "score": [1.0, 2.0, 3.0]}).to_csv(path, index=False)
    cfg = SeriesConfig(name="sent", path=path, lag_hours=0, max_age_hours=72,
                       family="alternative")  # fmt: skip
    clock = SimClock(D0 / 1000 + 10 * 86_400)

    async def run() -> list[float]:
        async with live_series_feed([cfg], tmp_path, ["sent"], clock) as feed:
            assert feed is not None
            await feed.refresh()
            first = feed.stored["sent"].series.values("score").tolist()
            more = D0 + np.arange(4, dtype=np.int64) * DAY_MS
            pd.DataFrame({"time": more, "score": [1.0, 2.0, 3.0, 4.0]}).to_csv(path, index=False)
            os.utime(path, ns=(1, 10**18))  # a new mtime even on coarse file systems
            await feed.refresh()
            second = feed.stored["sent"].series.values("score").tolist()
            path.write_text("time,score\n2024-01-01,1\n2024-01-01,2\n")  # a duplicate day
            os.utime(path, ns=(1, 2 * 10**18))
            with json_log_lines("ERROR") as lines:
                await feed.refresh()
            assert any(e["event"] == "series_fetch_failed" for e in lines())
            assert feed.stored["sent"].series.values("score").tolist() == second  # kept
            return [*first, -1.0, *second]

    assert asyncio.run(run()) == [1.0, 2.0, 3.0, -1.0, 1.0, 2.0, 3.0, 4.0]


def test_a_live_feed_fetches_its_configured_sources(tmp_path: Path) -> None:
    fr = frames()
    clock = SimClock((T0 + 3 * DAY_MS) / 1000)
    cfgs = [
        SeriesConfig(name="fear_greed", source="fear_greed", lag_hours=1, max_age_hours=48,
                     family="alternative"),
        SeriesConfig(name="onchain_eth", source="coinmetrics", asset="eth", lag_hours=30,
                     max_age_hours=48, family="fundamental", applies_to=("ETH",)),
    ]  # fmt: skip

    async def run() -> dict[str, int]:
        async with FakeSeriesServer(fr, now_ms=lambda: int(clock.time() * 1000)) as fake:
            urls = {"fear_greed": fake.url, "coinmetrics": fake.url}
            async with live_series_feed(cfgs, tmp_path, ["fear_greed", "onchain_eth"], clock,
                                        urls=urls) as feed:  # fmt: skip
                assert feed is not None
                await feed.refresh()
                got = feed.for_symbol("ETHUSDT", T0 + 3 * DAY_MS)
                assert [s.name for s in feed.for_symbol("BTCUSDT", T0)] == ["fear_greed"]
                return {s.name: int(s.times_ms()[-1]) for s in got}

    assert asyncio.run(run()) == {"fear_greed": T0 + 3 * DAY_MS - DAY_MS,
                                  "onchain_eth": T0 + 3 * DAY_MS - 2 * DAY_MS}  # fmt: skip

    async def missing() -> None:
        async with live_series_feed(cfgs, tmp_path, ["onchain_btc"], clock):
            pass

    with pytest.raises(ConfigError, match="external series onchain_btc, which the config does"):
        asyncio.run(missing())


@dataclass
class SlowSource:
    """A source that never answers in time."""

    name: str = "fear_greed"
    columns: tuple[str, ...] = ("fear_greed",)

    async def fetch(self, since_ms: int) -> pd.DataFrame:
        await asyncio.sleep(10)
        raise AssertionError("unreachable")  # pragma: no cover


def test_a_refresh_that_times_out_decides_with_the_cache() -> None:
    from atra.adapters.sources.refresher import SeriesRefresher

    feed = SeriesFeed(SimClock(T0 / 1000), refresher=SeriesRefresher([SlowSource()]),
                      scopes={"fear_greed": ()}, timeout_s=0.05)  # fmt: skip
    with json_log_lines("ERROR") as lines:
        asyncio.run(feed.refresh())
    assert [e["event"] for e in lines()] == ["series_fetch_failed"]
    assert feed.for_symbol("BTCUSDT", T0) == ()  # nothing cached yet: the features are NaN


# ---- the loop ---------------------------------------------------------------------------------


@dataclass
class SeriesRecorder:
    """A decider that reads the external series and records what each decision was given."""

    spec: SignalSpec = field(default_factory=SignalSpec)
    seen: list[tuple[str, int, dict[str, int]]] = field(default_factory=list)

    @property
    def inputs(self) -> ModelInputs:
        return ModelInputs(series=("fear_greed", "onchain_eth"))

    def __call__(self, symbol: str, candles: pd.DataFrame, equity: float,
                 context: FeatureContext | None = None) -> Decision:  # fmt: skip
        assert context is not None
        close = int(candles["open_time"].iloc[-1]) + STEP
        last = {s.name: int(s.times_ms()[-1] + s.lag_ms) for s in context.series}
        self.seen.append((symbol, close, last))
        return Decision(None, None, None, False, (), None, None, "no_signal")


@pytest.mark.parametrize("sources", [False, True], ids=["stored", "fake-sources"])
def test_the_live_loop_gives_each_decision_its_series(tmp_path: Path, sources: bool) -> None:
    fr = frames()
    syms = ("BTCUSDT", "ETHUSDT")
    candles = {s: synthetic(i, 600, T0 - 500 * STEP) for i, s in enumerate(syms)}
    settings = LoopSettings(tuple(candles), Timeframe.H1, start_ms=T0, stop_ms=T0 + 48 * STEP,
                            bar_close_delay_s=0.0, window_bars=100)  # fmt: skip
    decider = SeriesRecorder()
    asyncio.run(
        run_replay(settings, candles, tmp_path / "j.sqlite", decider=decider,  # type: ignore[arg-type]
                   exit_spec=ExitSpec(), guards=RiskGuards(GuardLimits()),
                   setup=ReplaySetup(market=Market.SPOT), series=inputs(fr),
                   series_sources={"fear_greed", "onchain_eth"} if sources else ())
    )  # fmt: skip
    assert len(decider.seen) == 2 * 48
    for symbol, close, last in decider.seen:
        assert set(last) == ({"fear_greed", "onchain_eth"} if symbol == "ETHUSDT"
                             else {"fear_greed"})  # fmt: skip
        for usable in last.values():
            assert close - DAY_MS - 6 * H <= usable < close  # the newest known, nothing later
    with pytest.raises(ConfigError, match="onchain_eth, which the live loop is not given"):
        asyncio.run(
            run_replay(settings, candles, tmp_path / "k.sqlite", decider=decider,  # type: ignore[arg-type]
                       exit_spec=ExitSpec(), guards=RiskGuards(GuardLimits()),
                       setup=ReplaySetup(market=Market.SPOT), series=inputs(fr)[:1])
        )  # fmt: skip
