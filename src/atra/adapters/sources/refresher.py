"""The live cache of the external daily series: :class:`SeriesRefresher`.

A live loop calls ``await refresher.refresh(now_ms)`` once per cycle (before computing
features) and passes the result as ``FeatureContext(series=...)``: the same
:class:`~atra.core.features.sources.PointInTimeSeries` (name, lag, maximum age, family of
:data:`~atra.core.features.external.SERIES`) a backtest reads from files, so the built-in
features see the same numbers at the same instants.

**At most once per publication.** Each series knows when its next record becomes usable
(the last record's day + 1 day + the series lag). Before that instant ``refresh`` answers from
the cache without a request. From then on it asks the source, at most once per ``poll_ms``
while the publication is late. The first call loads ``history_days`` of history (the 365-day
z-scores need it); later calls fetch only the days after the last one held.

**Stale or missing.** A failed request keeps the cached records (logged as
``series_fetch_failed``). A series whose newest record is older than its maximum age, or that
has no record at all, is logged as ``series_stale`` (once per publication interval, not once
per cycle); the features on it are NaN by the point-in-time join, never an older value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import pandas as pd

from atra.core.features.external import DAY_MS, SeriesRule, series_rule
from atra.core.features.sources import PointInTimeSeries
from atra.errors import AtraError, ConfigError
from atra.obs import get_logger

__all__ = ["SeriesRefresher", "SeriesSource"]

log = get_logger("atra.adapters.sources")

DEFAULT_POLL_MS: Final[int] = 15 * 60_000
DEFAULT_HISTORY_DAYS: Final[int] = 400


class SeriesSource(Protocol):
    """A live source of one series (a built-in one, or one the refresher has a rule for)."""

    @property
    def name(self) -> str: ...

    async def fetch(self, since_ms: int) -> pd.DataFrame:
        """``time`` (ms, ascending) and the series columns, for days stamped >= ``since_ms``."""
        ...


@dataclass(slots=True)
class _State:
    rule: SeriesRule
    frame: pd.DataFrame
    last_attempt_ms: int | None = None
    last_stale_log_ms: int | None = None

    def last_time(self) -> int | None:
        return int(self.frame.time.iloc[-1]) if len(self.frame) else None

    def next_publication_ms(self) -> int | None:
        """When the record after the newest one held becomes usable (None: nothing held)."""
        last = self.last_time()
        return None if last is None else last + DAY_MS + self.rule.lag_ms


class SeriesRefresher:
    """Keeps the built-in external series of a live loop up to date (see the module doc)."""

    def __init__(
        self,
        sources: Mapping[str, SeriesSource] | list[SeriesSource],
        *,
        poll_ms: int = DEFAULT_POLL_MS,
        history_days: int = DEFAULT_HISTORY_DAYS,
        rules: Mapping[str, SeriesRule] | None = None,
    ) -> None:
        """``rules``: the point-in-time rule of each source's series (a configured series');
        a source without one must be a built-in series (:data:`SERIES`)."""
        items = list(sources.values()) if isinstance(sources, Mapping) else list(sources)
        if poll_ms <= 0 or history_days < 1:
            raise ConfigError("series refresher: expected poll_ms > 0 and history_days >= 1")
        self.poll_ms = poll_ms
        self.history_days = history_days
        self._sources: dict[str, SeriesSource] = {}
        self._state: dict[str, _State] = {}
        for src in items:
            rule = (rules or {}).get(src.name) or series_rule(src.name)
            if src.name in self._sources:
                raise ConfigError(f"series refresher: two sources for series {src.name!r}")
            self._sources[src.name] = src
            empty = pd.DataFrame(
                {"time": np.empty(0, np.int64), **{c: np.empty(0) for c in rule.columns}}
            )
            self._state[src.name] = _State(rule, empty)
        self.fetches = 0
        """Fetches started (one per due series per refresh; retries inside a source excluded)."""

    def next_publication_ms(self, name: str) -> int | None:
        """When ``name``'s next record becomes usable; None before the first load."""
        return self._state[name].next_publication_ms()

    def _due(self, st: _State, now_ms: int) -> bool:
        nxt = st.next_publication_ms()
        if nxt is not None and now_ms < nxt:
            return False
        return st.last_attempt_ms is None or now_ms - st.last_attempt_ms >= self.poll_ms

    async def _update(self, name: str, st: _State, now_ms: int) -> None:
        last = st.last_time()
        since = last + DAY_MS if last is not None else now_ms - self.history_days * DAY_MS
        since -= since % DAY_MS
        st.last_attempt_ms = now_ms
        self.fetches += 1
        try:
            new = await self._sources[name].fetch(since)
        except AtraError as exc:
            log.error("series_fetch_failed", series=name, error=str(exc))
            return
        missing = [c for c in ("time", *st.rule.columns) if c not in new.columns]
        if missing:
            log.error("series_fetch_failed", series=name, error=f"missing {missing}")
            return
        new = new[list(("time", *st.rule.columns))]
        if last is not None:
            new = new[new.time > last]
        keep_from = now_ms - self.history_days * DAY_MS
        merged = pd.concat([st.frame, new], ignore_index=True) if len(st.frame) else new
        st.frame = merged[merged.time >= keep_from - keep_from % DAY_MS].reset_index(drop=True)
        if len(new):
            log.info("series_refreshed", series=name, rows=len(new), last=st.last_time())

    def _check_stale(self, name: str, st: _State, now_ms: int) -> None:
        last = st.last_time()
        usable = None if last is None else last + st.rule.lag_ms
        if usable is not None and now_ms - usable <= st.rule.max_age_ms:
            st.last_stale_log_ms = None
            return
        if st.last_stale_log_ms is not None and now_ms - st.last_stale_log_ms < DAY_MS:
            return
        st.last_stale_log_ms = now_ms
        log.warning(
            "series_stale",
            series=name,
            last_time=last,
            age_ms=None if usable is None else now_ms - usable,
            max_age_ms=st.rule.max_age_ms,
        )

    async def refresh(self, now_ms: int) -> tuple[PointInTimeSeries, ...]:
        """The series as known at ``now_ms`` (ms UTC), fetching only those due (module doc)."""
        out = []
        for name, st in self._state.items():
            if self._due(st, now_ms):
                await self._update(name, st, now_ms)
            self._check_stale(name, st, now_ms)
            out.append(
                PointInTimeSeries(
                    name,
                    st.frame.copy(),
                    lag_ms=st.rule.lag_ms,
                    max_age_ms=st.rule.max_age_ms,
                    family=st.rule.family,
                )
            )
        return tuple(out)
