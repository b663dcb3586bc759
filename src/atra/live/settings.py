"""The live loop's parts that hold no loop state: clocks, settings, results, the candle window
of one symbol, and racing an awaitable against a stop event."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.features.registry import HISTORY_BARS
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
T = TypeVar("T")

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


@dataclass(slots=True)
class Window:
    """The recent candles of one symbol as arrays (appended to, trimmed)."""

    open_time: I64 = field(default_factory=lambda: np.empty(0, np.int64))
    cols: dict[str, F64] = field(
        default_factory=lambda: {c: np.empty(0, np.float64) for c in CANDLE_COLS}
    )

    @property
    def last_ms(self) -> int | None:
        return int(self.open_time[-1]) if self.open_time.size else None

    def append(self, frame: pd.DataFrame) -> None:
        self.open_time = np.concatenate([self.open_time, frame["open_time"].to_numpy(np.int64)])
        for c in CANDLE_COLS:
            self.cols[c] = np.concatenate([self.cols[c], frame[c].to_numpy(np.float64)])

    def trim(self, keep: int) -> None:
        if self.open_time.size > keep:
            self.open_time = self.open_time[-keep:]
            self.cols = {c: v[-keep:] for c, v in self.cols.items()}

    def index(self, t_ms: int) -> int:
        return int(np.searchsorted(self.open_time, t_ms))

    def frame(self, lo: int, hi: int) -> pd.DataFrame:
        data: dict[str, npt.NDArray[np.generic]] = {"open_time": self.open_time[lo:hi]}
        data.update({c: self.cols[c][lo:hi] for c in CANDLE_COLS})
        return pd.DataFrame(data)


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
