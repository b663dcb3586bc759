"""The live loop's parts that hold no loop state: clocks, settings, results, the candle window
of one symbol, and racing an awaitable against a stop event."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.features.registry import HISTORY_BARS
from atra.core.signals.candles import CandleArrays
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
T = TypeVar("T")
T_co = TypeVar("T_co", bound=np.generic)

CANDLE_COLS: Final[tuple[str, ...]] = ("open", "high", "low", "close", "volume")


# ---- clocks and schedule -------------------------------------------------------------------


class SimClock:
    """A simulated clock for replays: ``time()`` starts at ``start_s``; ``sleep`` moves it
    forward at once (``speed=inf``) or after ``seconds / speed`` real seconds."""

    def __init__(self, start_s: float, speed: float = math.inf) -> None:
        if not speed > 0:
            raise ConfigError(f"replay speed must be > 0, got {speed}")
        self.now_s = start_s
        self.speed = speed

    def monotonic(self) -> float:
        return self.now_s

    def time(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        wait = max(0.0, seconds)
        await asyncio.sleep(0.0 if math.isinf(self.speed) else wait / self.speed)
        self.now_s += wait


def next_bar_close_ms(now_ms: int, step_ms: int) -> int:
    """The first bar close (= next bar's open time) strictly after ``now_ms``."""
    return (now_ms // step_ms + 1) * step_ms


# ---- settings and results ------------------------------------------------------------------


def check_live_sides(spot_shorts: bool, market: Market) -> None:
    """Refuse ``strategy.spot_shorts`` on a spot live run (paper or replay): the live loop and
    the paper broker charge no margin interest and trade spot long only, so a config asking
    for spot shorts is refused rather than run without them."""
    if spot_shorts and market is Market.SPOT:
        raise ConfigError(
            "strategy.spot_shorts = true: spot shorts on margin are modelled in backtests only "
            '(the live loop trades spot long-only); set it to false or use live.market = "perp"'
        )


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """How the loop runs. ``start_ms`` / ``stop_ms`` bound the bars (open times) processed:
    a fresh journal starts deciding at ``start_ms`` (default: the first bar that closes after
    the start), the loop stops after the last bar before ``stop_ms`` (default: never)."""

    symbols: tuple[str, ...]
    timeframe: Timeframe
    strategy: str = "ema_cross"
    run_id: str = "paper"
    initial_equity: float = 10_000.0
    bar_close_delay_s: float = 2.0
    cycle_deadline_s: float = 30.0
    symbol_timeout_s: float = 10.0
    window_bars: int = HISTORY_BARS
    """Candles each decision sees: the research features' warm-up (EMA / Wilder seeds decay
    within it, so features equal the backtest's on the full history)."""
    start_ms: int | None = None
    stop_ms: int | None = None
    max_cycles: int | None = None
    early_decisions: bool = False
    """Decide a symbol as soon as its candle arrives, while other requests are still out.
    Worth it with a process pool executor; with threads the GIL makes the I/O wait."""
    funding: bool = False
    """Perpetuals: fetch funding rates and charge open positions at each funding time, as
    the backtest does."""
    settle_heap: bool = False
    """After the first cycle, collect garbage once and freeze the survivors
    (:meth:`~atra.live.loop.LiveLoop.settle_heap`) so no full collection lands in a later
    cycle: ``atra live`` sets it (a process running one loop)."""

    def __post_init__(self) -> None:
        if not self.symbols or len(set(self.symbols)) != len(self.symbols):
            raise ConfigError("live.symbols: at least one symbol, each once")
        if self.window_bars < 3:
            raise ConfigError(f"window_bars must be >= 3, got {self.window_bars}")
        for name in ("cycle_deadline_s", "symbol_timeout_s", "initial_equity"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.bar_close_delay_s < 0:
            raise ConfigError(f"bar_close_delay_s must be >= 0, got {self.bar_close_delay_s}")


@dataclass(frozen=True, slots=True)
class CycleResult:
    """One cycle: its bar, the bars decided, which symbols failed and why, latency."""

    bar_time_ms: int
    decisions: int
    signals: int
    symbols_ok: tuple[str, ...]
    symbols_failed: Mapping[str, str]
    latency_ms: float
    status: str


@dataclass(frozen=True, slots=True)
class Bars:
    """New closed candles of one symbol as arrays (validated, increasing open times):
    ``cols`` holds one row per :data:`CANDLE_COLS` column. What a cycle's fetch hands the
    windows: streamed bars never become a pandas frame."""

    open_time: I64
    cols: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Bars:
        """The bars of a candle frame (its columns' arrays, no copy when already typed)."""
        cols = (
            np.stack([frame[c].to_numpy(np.float64) for c in CANDLE_COLS])
            if len(frame)
            else (np.empty((len(CANDLE_COLS), 0)))
        )
        return cls(frame["open_time"].to_numpy(np.int64), cols)

    @classmethod
    def checked(cls, arrays: CandleArrays, volume: F64) -> Bars:
        """The bars of a frame already checked with :func:`candle_arrays` (its arrays reused,
        one column access less per column)."""
        cols = np.stack([arrays.open, arrays.high, arrays.low, arrays.close, volume])
        return cls(arrays.open_time, cols)

    @classmethod
    def empty(cls) -> Bars:
        return cls(np.empty(0, np.int64), np.empty((len(CANDLE_COLS), 0)))

    def after(self, last_ms: int | None) -> Bars:
        """The bars after ``last_ms`` (all of them when None)."""
        k = 0 if last_ms is None else int(np.searchsorted(self.open_time, last_ms, "right"))
        return self if k == 0 else Bars(self.open_time[k:], self.cols[:, k:])


class Window:
    """The recent candles of one symbol as arrays, in a preallocated buffer.

    :meth:`append` writes the new bars after the last one (O(new bars); when the buffer is
    full the live bars move to a fresh buffer twice their size, so a bar is copied O(1) times
    on average), :meth:`trim` and :meth:`drop_first` only move the start. :attr:`open_time`,
    :attr:`cols` and :meth:`frame` are read-only views, never copies; a view handed out stays
    valid (appends write after it, a full buffer is replaced, never overwritten).
    """

    __slots__ = ("_cols", "_hi", "_lo", "_t")

    def __init__(self, capacity: int = 0) -> None:
        self._t: I64 = np.empty(max(0, capacity), np.int64)
        self._cols: npt.NDArray[np.float64] = np.empty((len(CANDLE_COLS), max(0, capacity)))
        self._lo = 0
        self._hi = 0

    def __len__(self) -> int:
        return self._hi - self._lo

    @property
    def open_time(self) -> I64:
        return _read_only(self._t[self._lo : self._hi])

    @property
    def cols(self) -> dict[str, F64]:
        return {
            c: _read_only(self._cols[k, self._lo : self._hi]) for k, c in enumerate(CANDLE_COLS)
        }

    @property
    def last_ms(self) -> int | None:
        return int(self._t[self._hi - 1]) if self._hi > self._lo else None

    def append(self, frame: pd.DataFrame) -> None:
        """Append ``frame``'s rows (validated by the caller, all after :attr:`last_ms`)."""
        self.append_arrays(
            frame["open_time"].to_numpy(np.int64),
            [frame[c].to_numpy(np.float64) for c in CANDLE_COLS],
        )

    def append_arrays(self, open_time: I64, cols: Sequence[F64] | npt.NDArray[np.float64]) -> None:
        """Append bars given as arrays: ``cols`` in :data:`CANDLE_COLS` order."""
        n = int(open_time.shape[0])
        if n == 0:
            return
        if self._hi + n > self._t.shape[0]:
            live = self._hi - self._lo
            cap = max(2 * (live + n), 16)
            t = np.empty(cap, np.int64)
            c = np.empty((len(CANDLE_COLS), cap))
            t[:live] = self._t[self._lo : self._hi]
            c[:, :live] = self._cols[:, self._lo : self._hi]
            self._t, self._cols, self._lo, self._hi = t, c, 0, live
        hi = self._hi + n
        self._t[self._hi : hi] = open_time
        for k, values in enumerate(cols):
            self._cols[k, self._hi : hi] = values
        self._hi = hi

    def trim(self, keep: int) -> None:
        """Keep the last ``keep`` bars."""
        self._lo = max(self._lo, self._hi - keep)

    def drop_first(self, k: int) -> None:
        """Drop the first ``k`` bars."""
        self._lo = min(self._hi, self._lo + max(0, k))

    def index(self, t_ms: int) -> int:
        return int(np.searchsorted(self._t[self._lo : self._hi], t_ms))

    def frame(self, lo: int, hi: int, then: Bars | None = None) -> pd.DataFrame:
        """Bars ``lo:hi`` as a candle frame over read-only views of the buffer (no copy);
        with ``then``, those bars after them (copied)."""
        a, b = self._lo + lo, self._lo + min(hi, len(self))
        t, cols = self._t[a:b], self._cols[:, a:b]
        if then is not None:
            t, cols = np.concatenate([t, then.open_time]), np.hstack([cols, then.cols])
        data: dict[str, npt.NDArray[np.generic]] = {"open_time": _read_only(t)}
        data.update({c: _read_only(cols[k]) for k, c in enumerate(CANDLE_COLS)})
        return pd.DataFrame(data, copy=False)


def append_after(win: Window, frame: Bars | pd.DataFrame) -> None:
    """Append the bars of ``frame`` (validated, sorted) after ``win``'s last bar: O(new bars)."""
    if len(frame) == 0:
        return
    new = (frame if isinstance(frame, Bars) else Bars.of(frame)).after(win.last_ms)
    win.append_arrays(new.open_time, new.cols)


def _read_only(view: npt.NDArray[T_co]) -> npt.NDArray[T_co]:
    view.flags.writeable = False
    return view


async def race(aw: Awaitable[T], stop: asyncio.Event) -> tuple[bool, T | None]:
    """Run ``aw`` until it finishes (True, result) or ``stop`` is set (False, None; ``aw``
    is cancelled and awaited)."""
    task = asyncio.ensure_future(aw)
    if stop.is_set():
        task.cancel()
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done() and not task.cancelled():
        return True, task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False, None
