"""The external series of a live loop or a replay, refreshed per cycle and scoped per symbol.

:class:`SeriesFeed` holds the configured series (``[[features.series]]``) a model reads, for
:class:`~atra.live.feed.CandleFeed`, which passes them to
:func:`~atra.core.features.context.assemble_context` like every other caller:

- **sourced** series come from their live source (alternative.me's Fear & Greed, Coin
  Metrics' community API, or their fakes) through a
  :class:`~atra.adapters.sources.refresher.SeriesRefresher`: asked once per cycle, it fetches at
  most once per publication; a failed fetch keeps the cache, a stale series is logged;
- **stored** series are read whole from their file or the store; a live run re-reads a file
  when it changes (``mtime``) and logs ``series_stale`` when its newest record is past its
  maximum age.

Point in time: :meth:`SeriesFeed.for_symbol` gives a decision at a bar's close only the records
usable before that close (``time + lag < close``), and only the series that apply to the
symbol (``applies_to``). The features' join then applies the lag and the maximum age again:
stale or missing gives NaN, never an older value.

:func:`replay_series_feed` opens the feed of a replay (stored series point in time, or the
fake sources serving them on the replay's clock); :func:`live_series_feed` the feed of a live
run (the configured sources, and the files).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np

from atra.adapters.ratelimit import Clock
from atra.adapters.series import configured_frame
from atra.adapters.series_store import SeriesStore
from atra.adapters.sources.coinmetrics import CM_URL, CoinMetricsSource
from atra.adapters.sources.fear_greed import FNG_URL, FearGreedSource
from atra.adapters.sources.http import SourceHttp
from atra.adapters.sources.refresher import DEFAULT_HISTORY_DAYS, SeriesRefresher, SeriesSource
from atra.config import SeriesConfig
from atra.core.features.context import SeriesInput
from atra.core.features.external import DAY_MS, SERIES, SeriesRule
from atra.core.features.sources import Family, PointInTimeSeries
from atra.errors import AtraError, ConfigError
from atra.obs import get_logger
from atra.sim.series_server import FILES, FakeSeriesServer

__all__ = ["SeriesFeed", "live_series_feed", "replay_series_feed"]

log = get_logger("atra.live.series")

DEFAULT_TIMEOUT_S: Final[float] = 20.0
"""The longest a cycle waits for its series refresh; later, it decides with the cache."""


@dataclass(slots=True)
class _File:
    """A stored series of a live run, re-read when its file changes."""

    cfg: SeriesConfig
    data_dir: Path
    mtime_ns: int | None = None

    def path(self) -> Path:
        return (
            self.cfg.path
            if self.cfg.path is not None
            else SeriesStore(self.data_dir).path(self.cfg.name)
        )

    def changed(self) -> bool:
        try:
            stamp = self.path().stat().st_mtime_ns
        except OSError:
            return False  # gone: keep what was read, its age makes it stale
        if stamp == self.mtime_ns:
            return False
        self.mtime_ns = stamp
        return True

    def read(self) -> SeriesInput:
        frame, _ = configured_frame(self.cfg, self.data_dir)
        series = PointInTimeSeries(
            self.cfg.name,
            frame,
            lag_ms=round(self.cfg.lag_hours * 3_600_000),
            max_age_ms=round(self.cfg.max_age_hours * 3_600_000),
            family=Family(self.cfg.family),
        )
        return SeriesInput(series, self.cfg.applies_to)


@dataclass(slots=True)
class SeriesFeed:
    """The external series a loop decides with (module doc). ``clock`` gives the refresh
    instant (the replay's simulated clock in a replay)."""

    clock: Clock
    stored: dict[str, SeriesInput] = field(default_factory=dict)
    refresher: SeriesRefresher | None = None
    scopes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Base assets of each sourced series (empty: market-wide)."""
    files: dict[str, _File] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    _live: dict[str, PointInTimeSeries] = field(default_factory=dict)
    _cuts: dict[str, tuple[PointInTimeSeries, int, PointInTimeSeries]] = field(default_factory=dict)
    _stale_logged: dict[str, int] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """Every series the feed serves."""
        return tuple(sorted({*self.stored, *self.scopes}))

    async def refresh(self) -> None:
        """Bring the series up to the clock's now: re-read changed files, ask the refresher
        (bounded by ``timeout_s``); log the stored series past their maximum age."""
        now_ms = int(self.clock.time() * 1000)
        for name, file in self.files.items():
            if file.changed():
                try:
                    self.stored[name] = file.read()
                except AtraError as exc:
                    log.error("series_fetch_failed", series=name, error=str(exc))
        if self.refresher is not None:
            try:
                async with asyncio.timeout(self.timeout_s):
                    fresh = await self.refresher.refresh(now_ms)
            except TimeoutError:
                log.error(
                    "series_fetch_failed",
                    series=",".join(self.scopes),
                    error=f"no refresh within {self.timeout_s:g} s: deciding with the cache",
                )
            else:
                self._live = {s.name: s for s in fresh}
        for name, item in self.stored.items():
            self._log_stale(name, item.series, now_ms)

    def _log_stale(self, name: str, series: PointInTimeSeries, now_ms: int) -> None:
        times = series.times_ms()
        k = int(np.searchsorted(times + series.lag_ms, now_ms, side="left")) - 1
        usable = int(times[k]) + series.lag_ms if k >= 0 else None  # the newest known now
        if usable is not None and now_ms - usable <= series.max_age_ms:
            self._stale_logged.pop(name, None)
            return
        last = self._stale_logged.get(name)
        if last is not None and now_ms - last < DAY_MS:
            return
        self._stale_logged[name] = now_ms
        log.warning(
            "series_stale",
            series=name,
            last_time=None if usable is None else int(times[k]),
            age_ms=None if usable is None else now_ms - usable,
            max_age_ms=series.max_age_ms,
        )

    def for_symbol(self, symbol: str, close_ms: int) -> tuple[PointInTimeSeries, ...]:
        """The series that apply to ``symbol``, cut to the records usable before
        ``close_ms`` (a bar's close, the decision instant)."""
        out = []
        for name in self.names:
            if name in self.stored:
                item = self.stored[name]
                series: PointInTimeSeries | None = item.series if item.applies(symbol) else None
            else:
                scope = (
                    SeriesInput(self._live[name], self.scopes[name]) if name in self._live else None
                )
                series = scope.series if scope is not None and scope.applies(symbol) else None
            if series is not None:
                out.append(self._cut(series, close_ms))
        return tuple(out)

    def _cut(self, series: PointInTimeSeries, close_ms: int) -> PointInTimeSeries:
        times = series.times_ms()
        k = int(np.searchsorted(times + series.lag_ms, close_ms, side="left"))
        if k == times.size:
            return series
        cached = self._cuts.get(series.name)
        if cached is not None and cached[0] is series and cached[1] == k:
            return cached[2]
        cut = PointInTimeSeries(
            series.name,
            series.frame.iloc[:k].reset_index(drop=True),
            lag_ms=series.lag_ms,
            max_age_ms=series.max_age_ms,
            time_col=series.time_col,
            family=series.family,
            change_bars=series.change_bars,
        )
        self._cuts[series.name] = (series, k, cut)
        return cut


class _SourceClock:
    """The loop's time for the sources (the fake answers as at that instant); their retry
    waits are real seconds, so a replay's simulated clock never jumps on a retry."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def monotonic(self) -> float:
        return self.clock.monotonic()

    def time(self) -> float:
        return self.clock.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, min(seconds, 5.0)))


def _rule(
    name: str,
    series: PointInTimeSeries,
    columns: tuple[str, ...],
    scope: tuple[str, ...],
    source: str,
) -> SeriesRule:
    """The refresher's rule of a series: its lag, maximum age and family as configured."""
    base = scope[0] if len(scope) == 1 else None
    return SeriesRule(name, series.family, columns, series.lag_ms, series.max_age_ms, base, source)


@contextlib.asynccontextmanager
async def replay_series_feed(
    inputs: Sequence[SeriesInput],
    clock: Clock,
    *,
    via_sources: Collection[str] = (),
    history_days: int = DEFAULT_HISTORY_DAYS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> AsyncIterator[SeriesFeed | None]:
    """The series feed of a replay (None without series): every series point in time from its
    frame, but those named in ``via_sources`` that are built-in: through their live sources
    against :class:`~atra.sim.series_server.FakeSeriesServer` serving the same frames on
    ``clock`` (a day is published as the real APIs publish it)."""
    if not inputs:
        yield None
        return
    served = [i for i in inputs if i.name in via_sources and i.name in FILES]
    feed = SeriesFeed(
        clock, stored={i.name: i for i in inputs if i not in served}, timeout_s=timeout_s
    )
    if not served:
        yield feed
        return
    frames = {
        i.name: i.series.frame.assign(time=i.series.times_ms())[["time", *i.series.value_columns]]
        for i in served
    }
    fake = FakeSeriesServer(frames, now_ms=lambda: int(clock.time() * 1000))
    src_clock = _SourceClock(clock)
    async with fake, contextlib.AsyncExitStack() as stack:
        sources: list[SeriesSource] = []
        rules: dict[str, SeriesRule] = {}
        for item in served:
            kind = SERIES[item.name].source
            http = await stack.enter_async_context(
                SourceHttp(kind, fake.url, clock=src_clock, timeout_s=timeout_s / 2, backoff_s=0.05)
            )
            src: FearGreedSource | CoinMetricsSource = (
                FearGreedSource(http)
                if kind == "alternative.me"
                else CoinMetricsSource(http, item.name)
            )
            cols = ("fear_greed",) if isinstance(src, FearGreedSource) else src.columns
            sources.append(src)
            rules[item.name] = _rule(item.name, item.series, cols, item.applies_to, kind)
            feed.scopes[item.name] = item.applies_to
        feed.refresher = SeriesRefresher(sources, history_days=history_days, rules=rules)
        yield feed


@contextlib.asynccontextmanager
async def live_series_feed(
    configs: Sequence[SeriesConfig],
    data_dir: Path,
    names: Sequence[str],
    clock: Clock,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    history_days: int = DEFAULT_HISTORY_DAYS,
    urls: Mapping[str, str] | None = None,
) -> AsyncIterator[SeriesFeed | None]:
    """The series feed of a live run for the series ``names`` (None when empty): a configured
    ``source`` through its API (``url`` or the public one; ``urls`` by source kind replaces
    both, for tests), else the file / store series re-read when it changes."""
    chosen = [c for c in configs if c.name in names]
    missing = sorted(set(names) - {c.name for c in chosen})
    if missing:
        raise ConfigError(
            f"the model reads the external series {', '.join(missing)}, which the config does "
            "not define ([[features.series]])"
        )
    if not chosen:
        yield None
        return
    feed = SeriesFeed(clock, timeout_s=timeout_s)
    async with contextlib.AsyncExitStack() as stack:
        sources: list[SeriesSource] = []
        rules: dict[str, SeriesRule] = {}
        for cfg in chosen:
            if cfg.source is None:
                file = feed.files[cfg.name] = _File(cfg, data_dir)
                file.changed()
                feed.stored[cfg.name] = file.read()  # a bad file stops the start, in one line
                continue
            default = FNG_URL if cfg.source == "fear_greed" else CM_URL
            url = (urls or {}).get(cfg.source) or cfg.url or default
            http = await stack.enter_async_context(
                SourceHttp(cfg.source, url, clock=clock, timeout_s=timeout_s / 2)
            )
            src: FearGreedSource | CoinMetricsSource
            cols: tuple[str, ...]
            if cfg.source == "fear_greed":
                src, cols = FearGreedSource(http, cfg.name), ("fear_greed",)
            else:
                builtin = cfg.name in SERIES and not cfg.columns
                src = CoinMetricsSource(
                    http,
                    cfg.name,
                    asset=None if builtin else cfg.asset,
                    columns=() if builtin else cfg.columns,
                )
                cols = src.columns
            sources.append(src)
            rules[cfg.name] = SeriesRule(
                cfg.name,
                Family(cfg.family),
                cols,
                round(cfg.lag_hours * 3_600_000),
                round(cfg.max_age_hours * 3_600_000),
                cfg.applies_to[0] if len(cfg.applies_to) == 1 else None,
                cfg.source,
            )
            feed.scopes[cfg.name] = cfg.applies_to
        if sources:
            feed.refresher = SeriesRefresher(sources, history_days=history_days, rules=rules)
        yield feed
