"""The market data a live run has seen: the history it started with plus every bar its feed
fetched since, as one :class:`~atra.core.retraining.MarketHistory` for a retrain.

The feed keeps only the last ``window_bars`` candles (and the side data over them); a retrain
learns from everything since the training data's start. :class:`SeenHistory` appends, after
each bar, the feed's rows newer than what it holds (per series: the candles of each symbol,
its counterpart market, BTCUSDT when it is not traded, its funding events). When the feed's
oldest row is newer than the next row the history needs, bars were never seen (a store older
than the first candle window): the gap is kept in :attr:`SeenHistory.hole` and a retrain
fails on it, rather than learn from data with a hole nobody sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.frames import ms_to_iso
from atra.core.retraining import MarketHistory
from atra.live.feed import CandleFeed
from atra.live.settings import CANDLE_COLS, Window

__all__ = ["FUNDING_GAP_MS", "SeenHistory"]

FUNDING_GAP_MS: Final[int] = 86_400_000
"""Funding is paid every 8 h at most: a day between the history and the feed is a hole."""

_FUNDING_COLS: Final[tuple[str, ...]] = ("funding_rate",)


class _Series:
    """One growing time series: a time column and value columns, kept as array chunks."""

    def __init__(
        self, name: str, time_col: str, cols: Sequence[str], frame: pd.DataFrame | None
    ) -> None:
        self.name = name
        self.time_col = time_col
        self.cols = tuple(cols)
        self.chunks: list[dict[str, npt.NDArray[np.generic]]] = []
        self.last: int | None = None
        if frame is not None and len(frame):
            self._add(
                frame[time_col].to_numpy(np.int64), {c: frame[c].to_numpy() for c in self.cols}
            )

    def _add(
        self, times: npt.NDArray[np.int64], values: dict[str, npt.NDArray[np.generic]]
    ) -> None:
        if times.size:
            self.chunks.append({self.time_col: times, **values})
            self.last = int(times[-1])

    def extend(
        self, times: npt.NDArray[np.int64], values: dict[str, npt.NDArray[np.generic]], gap_ms: int
    ) -> str | None:
        """Append the rows after :attr:`last`; the hole when ``times`` starts more than
        ``gap_ms`` after it (None: no hole)."""
        if not times.size:
            return None
        hole = None
        if self.last is not None and int(times[0]) > self.last + gap_ms:
            hole = (
                f"{self.name}: nothing between {ms_to_iso(self.last)} and "
                f"{ms_to_iso(int(times[0]))} (the history the run started with ends before the "
                "loop's first fetched rows): update the store and restart"
            )
        k = 0 if self.last is None else int(np.searchsorted(times, self.last, side="right"))
        self._add(times[k:].copy(), {c: v[k:].copy() for c, v in values.items()})
        return hole

    def frame(self) -> pd.DataFrame:
        if not self.chunks:
            empty: dict[str, npt.NDArray[np.generic]] = {self.time_col: np.empty(0, np.int64)}
            empty.update({c: np.empty(0, np.float64) for c in self.cols})
            return pd.DataFrame(empty)
        if len(self.chunks) > 1:  # consolidate, so the next call is cheap
            self.chunks = [
                {c: np.concatenate([ch[c] for ch in self.chunks]) for c in self.chunks[0]}
            ]
        return pd.DataFrame(dict(self.chunks[0]))


class SeenHistory:
    """The history a run started with, grown by its feed (see the module docstring).

    ``symbols``: the traded symbols; ``separate_btc``: BTCUSDT is not one of them (its
    candles come from the feed's BTC window)."""

    def __init__(self, start: MarketHistory, symbols: Sequence[str], separate_btc: bool) -> None:
        cols = CANDLE_COLS
        self.candles = {
            s: _Series(f"{s} candles", "open_time", cols, start.candles.get(s)) for s in symbols
        }
        self.counterparts = {
            s: _Series(f"{s} counterpart candles", "open_time", cols, f)
            for s, f in start.counterparts.items()
        }
        self.btc = (
            _Series("BTCUSDT candles", "open_time", cols, start.btc) if separate_btc else None
        )
        self.funding = {
            s: _Series(f"{s} funding", "funding_time", _FUNDING_COLS, f)
            for s, f in start.funding.items()
        }
        self.hole: str | None = None
        """The first hole found between the start history and the feed (None: none)."""

    def _window(self, series: _Series, win: Window, step_ms: int) -> None:
        hole = series.extend(win.open_time, dict(win.cols), step_ms)
        self.hole = self.hole or hole

    def absorb(self, feed: CandleFeed) -> None:
        """Append the feed's rows newer than those held."""
        step = feed.step_ms
        for sym, series in self.candles.items():
            self._window(series, feed.windows[sym], step)
        for sym, win in feed.counterparts.items():
            if sym not in self.counterparts:
                name = f"{sym} counterpart candles"
                self.counterparts[sym] = _Series(name, "open_time", CANDLE_COLS, None)
            self._window(self.counterparts[sym], win, step)
        if self.btc is not None and feed.btc is not None:
            self._window(self.btc, feed.btc, step)
        for sym, frame in feed.context_funding.items():
            if sym not in self.funding:
                self.funding[sym] = _Series(f"{sym} funding", "funding_time", _FUNDING_COLS, None)
            series = self.funding[sym]
            times = frame["funding_time"].to_numpy(np.int64)
            if not times.size or (series.last is not None and int(times[-1]) <= series.last):
                continue  # nothing new (the usual case between funding times)
            hole = series.extend(
                times,
                {c: frame[c].to_numpy(np.float64) for c in _FUNDING_COLS},
                FUNDING_GAP_MS,
            )
            self.hole = self.hole or hole

    def history(self) -> MarketHistory:
        """Everything held, as frames."""
        btc = None if self.btc is None or self.btc.last is None else self.btc.frame()
        return MarketHistory(
            {s: v.frame() for s, v in self.candles.items()},
            {s: v.frame() for s, v in self.counterparts.items() if v.last is not None},
            btc,
            {s: v.frame() for s, v in self.funding.items()},
        )
