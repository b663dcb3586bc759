"""The primary momentum model: rule-based entries with SL / TP1 / TP2 / horizon barriers.

Rules (one per :class:`SignalSpec`), computed vectorised and causally on a candle frame: the
decision at bar ``t`` uses data up to ``t``'s close, and the trade fills at ``open[t+1]``.

* ``EMA_CROSS``: LONG when ``d_t = EMA_fast - EMA_slow`` turns positive (``d_t > 0 >= d_{t-1}``),
  SHORT when it turns negative (WORKLOAD.md's events for 20/50).
* ``DONCHIAN``: LONG on the first close above the highest high of the previous ``n`` bars,
  SHORT on the first close below their lowest low.
* ``TSMOM``: LONG when the ``lookback``-bar return turns positive, SHORT when it turns negative.
* Optional trend filter: LONG only when ``close > EMA(trend_ema)``, SHORT only when below.

EMA: ``alpha = 2/(n+1)`` seeded with the first close; ATR: Wilder's, ``alpha = 1/n`` seeded with
``TR_0 = high_0 - low_0`` (both exactly as WORKLOAD.md).

Barriers: distances from the entry reference ``close_t``, either ATR multiples
(``sl_atr * ATR_t`` ...) or percents of ``close_t``. The events carry both the levels and the
distances; the exit kernel re-anchors the *distances* at the actual fill price ``P = open[t+1]``
(``SL = P - side * sl_dist``), exactly as WORKLOAD.md does.

Gaps (missing bars): the frame is split into gap-free segments and every indicator restarts
in each segment (EMA and ATR re-seeded, ``warmup`` bars of warm-up again), so no signal comes
from a window spanning a gap. A signal on the last bar before a gap is dropped as well: its
entry bar ``t+1`` is not the next bar in time. A signal on the frame's last bar is kept (live:
its entry bar has not happened yet).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.types import Side, Timeframe
from atra.errors import ConfigError, DataError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

CANDLE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume")
EVENT_COLUMNS = (
    "symbol",
    "t",
    "time_ms",
    "side",
    "entry",
    "sl",
    "tp1",
    "tp2",
    "horizon_bars",
    "sl_dist",
    "tp1_dist",
    "tp2_dist",
    "atr",
)


class Rule(enum.Enum):
    """The entry rule of the primary model."""

    EMA_CROSS = "ema_cross"
    DONCHIAN = "donchian"
    TSMOM = "tsmom"


class BarrierMode(enum.Enum):
    """How barrier distances are set: ATR multiples or percents of the entry reference."""

    ATR = "atr"
    PERCENT = "percent"


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """Parameters of the primary model. Defaults: WORKLOAD.md's EMA 20/50, SL 1.5 / TP 3 ATR.

    ``tp2_*`` only matters when the exit spec closes less than everything at TP1.
    ``warmup_bars`` (default: the longest lookback) is counted from each segment's start.
    """

    rule: Rule = Rule.EMA_CROSS
    ema_fast: int = 20
    ema_slow: int = 50
    donchian_n: int = 20
    tsmom_lookback: int = 168
    trend_ema: int | None = None
    allow_long: bool = True
    allow_short: bool = True
    barrier_mode: BarrierMode = BarrierMode.ATR
    atr_n: int = 14
    sl_atr: float = 1.5
    tp1_atr: float = 3.0
    tp2_atr: float = 4.5
    sl_pct: float = 0.01
    tp1_pct: float = 0.02
    tp2_pct: float = 0.04
    horizon_bars: int = 48
    warmup_bars: int | None = None

    def __post_init__(self) -> None:
        for name in ("ema_fast", "ema_slow", "donchian_n", "tsmom_lookback", "atr_n"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.ema_fast >= self.ema_slow:
            raise ConfigError(f"ema_fast ({self.ema_fast}) must be < ema_slow ({self.ema_slow})")
        if self.trend_ema is not None and self.trend_ema < 1:
            raise ConfigError(f"trend_ema must be >= 1 or None, got {self.trend_ema}")
        if not (self.allow_long or self.allow_short):
            raise ConfigError("allow_long and allow_short are both False: no signal possible")
        if self.horizon_bars < 1:
            raise ConfigError(f"horizon_bars must be >= 1, got {self.horizon_bars}")
        if self.warmup_bars is not None and self.warmup_bars < 1:
            raise ConfigError(f"warmup_bars must be >= 1 or None, got {self.warmup_bars}")
        for kind in ("atr", "pct"):
            sl, tp1, tp2 = (getattr(self, f"{b}_{kind}") for b in ("sl", "tp1", "tp2"))
            if not (math.isfinite(sl) and sl > 0.0):
                raise ConfigError(f"sl_{kind} must be > 0, got {sl}")
            if not (math.isfinite(tp1) and math.isfinite(tp2) and 0.0 < tp1 < tp2):
                raise ConfigError(f"need 0 < tp1_{kind} < tp2_{kind}, got {tp1} and {tp2}")
        if self.tp2_pct >= 1.0:
            raise ConfigError(
                f"tp2_pct must be < 1 (a short's TP2 must stay > 0), got {self.tp2_pct}"
            )

    @classmethod
    def seed(cls) -> SignalSpec:
        """The team's seed: EMA 20/50 entries, TP1 +2%, SL -1%, 5 days (120 bars at 1h).

        TP2 (+4%) is only used when the exit spec takes a partial profit at TP1.
        """
        return cls(barrier_mode=BarrierMode.PERCENT, horizon_bars=120)

    @property
    def warmup(self) -> int:
        """Bars of warm-up at the start of every gap-free segment."""
        if self.warmup_bars is not None:
            return self.warmup_bars
        need = {
            Rule.EMA_CROSS: self.ema_slow,
            Rule.DONCHIAN: self.donchian_n + 1,
            Rule.TSMOM: self.tsmom_lookback + 1,
        }[self.rule]
        if self.trend_ema is not None:
            need = max(need, self.trend_ema)
        if self.barrier_mode is BarrierMode.ATR:
            need = max(need, self.atr_n)
        return need


@dataclass(frozen=True, slots=True)
class Signal:
    """One trade proposal of the primary model: prices are levels, ``entry`` the reference."""

    symbol: str
    time_ms: int
    side: Side
    entry: float
    sl: float
    tp1: float
    tp2: float
    horizon_bars: int

    def __post_init__(self) -> None:
        where = f"signal {self.symbol} at {self.time_ms}"
        try:
            object.__setattr__(self, "side", Side(self.side))
        except ValueError:
            raise DataError(f"{where}: side {self.side!r} is not 1 (long) or -1 (short)") from None
        prices = {"entry": self.entry, "sl": self.sl, "tp1": self.tp1, "tp2": self.tp2}
        for name, value in prices.items():
            if not (math.isfinite(value) and value > 0.0):
                raise DataError(f"{where}: {name} = {value}, expected a finite price > 0")
        s = int(self.side)
        if not s * (self.entry - self.sl) > 0.0:
            raise DataError(
                f"{where}: SL {self.sl} is not on the losing side of entry {self.entry}"
            )
        if not (s * (self.tp1 - self.entry) > 0.0 and s * (self.tp2 - self.tp1) > 0.0):
            raise DataError(
                f"{where}: TP1 {self.tp1} is not strictly between entry {self.entry} "
                f"and TP2 {self.tp2} on the winning side"
            )
        if self.horizon_bars < 1:
            raise ConfigError(f"{where}: horizon_bars = {self.horizon_bars}, expected >= 1")

    @property
    def sl_dist(self) -> float:
        """Distance from entry to SL (> 0); the exit kernel re-anchors it at the fill."""
        return abs(self.entry - self.sl)

    @property
    def tp1_dist(self) -> float:
        """Distance from entry to TP1 (> 0)."""
        return abs(self.tp1 - self.entry)

    @property
    def tp2_dist(self) -> float:
        """Distance from entry to TP2 (> tp1_dist)."""
        return abs(self.tp2 - self.entry)

    def pnl(self, price: float, quantity: float, fee_rate: float) -> float:
        """Net P&L of closing ``quantity`` units at ``price``, entry and exit fees included."""
        if not (math.isfinite(price) and price > 0.0):
            raise DataError(f"signal {self.symbol}: exit price {price} must be > 0")
        if not (math.isfinite(quantity) and quantity >= 0.0):
            raise ConfigError(f"quantity must be >= 0, got {quantity}")
        if not (math.isfinite(fee_rate) and 0.0 <= fee_rate < 1.0):
            raise ConfigError(f"fee_rate must be in [0, 1), got {fee_rate}")
        gross = int(self.side) * (price - self.entry) * quantity
        fees = fee_rate * quantity * (self.entry + price)
        return gross - fees


def ema(close: npt.ArrayLike, n: int) -> F64:
    """EMA with ``alpha = 2/(n+1)`` seeded with the first value (``ewm(span=n, adjust=False)``)."""
    series = pd.Series(np.asarray(close, dtype=np.float64))
    return series.ewm(span=n, adjust=False).mean().to_numpy(dtype=np.float64)


def atr_wilder(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, n: int) -> F64:
    """Wilder's ATR: ``alpha = 1/n``, seeded with ``TR_0 = high_0 - low_0``."""
    h = np.asarray(high, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64)
    c = np.asarray(close, dtype=np.float64)
    prev = np.concatenate(([np.nan], c[:-1])) if c.size else c
    tr = np.fmax(h - lo, np.fmax(np.abs(h - prev), np.abs(lo - prev)))
    series = pd.Series(tr)
    return series.ewm(alpha=1.0 / n, adjust=False).mean().to_numpy(dtype=np.float64)


@dataclass(frozen=True, slots=True)
class CandleArrays:
    """The columns of a validated candle frame as float64 / int64 numpy arrays."""

    open_time: I64
    open: F64
    high: F64
    low: F64
    close: F64

    def __len__(self) -> int:
        return int(self.open_time.shape[0])


def candle_arrays(candles: pd.DataFrame, symbol: str) -> CandleArrays:
    """Check ``candles`` against the frame contract and return its columns as arrays.

    Raises a one-line :class:`DataError` naming the symbol, column and row that break it
    (missing column, ``open_time`` not int64 ms or not strictly increasing, a price that is
    not finite and > 0).
    """
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise DataError(f"candles {symbol}: missing column(s) {', '.join(missing)}")
    open_time = candles["open_time"]
    if not pd.api.types.is_integer_dtype(open_time.dtype):
        raise DataError(
            f"candles {symbol}: open_time has dtype {open_time.dtype}, "
            "expected int64 epoch milliseconds"
        )
    times = open_time.to_numpy(dtype=np.int64)
    bad = np.flatnonzero(times[1:] <= times[:-1])
    if bad.size:
        row = int(bad[0]) + 1
        raise DataError(
            f"candles {symbol}: open_time not strictly increasing at row {row} "
            f"({times[row - 1]} then {times[row]})"
        )
    cols: dict[str, F64] = {}
    for col in ("open", "high", "low", "close"):
        values = candles[col].to_numpy(dtype=np.float64)
        # two reductions instead of boolean temporaries: min() is NaN when any value is NaN
        if values.size and not (values.min() > 0.0 and values.max() < np.inf):
            row = int(np.flatnonzero(~(np.isfinite(values) & (values > 0.0)))[0])
            raise DataError(f"candles {symbol}: {col}[{row}] = {values[row]}, expected a price > 0")
        cols[col] = values
    return CandleArrays(times, cols["open"], cols["high"], cols["low"], cols["close"])


def segment_starts(open_time: npt.ArrayLike, step_ms: int) -> I64:
    """Row indices where a gap-free segment starts (always includes 0 for a non-empty frame)."""
    times = np.asarray(open_time, dtype=np.int64)
    if times.size == 0:
        return np.zeros(0, np.int64)
    breaks = np.flatnonzero(np.diff(times) != step_ms) + 1
    return np.concatenate(([0], breaks)).astype(np.int64)


def infer_step_ms(open_time: npt.ArrayLike) -> int:
    """The bar length: the most common spacing of ``open_time`` (ms)."""
    diffs = np.diff(np.asarray(open_time, dtype=np.int64))
    if diffs.size == 0:
        raise DataError("cannot infer the bar length from fewer than 2 candles")
    if 2 * int(np.count_nonzero(diffs == diffs[0])) > diffs.size:  # fast path: a majority
        return int(diffs[0])
    values, counts = np.unique(diffs, return_counts=True)
    return int(values[np.argmax(counts)])


def _onsets(state: Bools) -> Bools:
    prev = np.concatenate(([True], state[:-1]))
    return state & ~prev


def _segment_signals(o: F64, h: F64, lo: F64, c: F64, spec: SignalSpec) -> tuple[Bools, Bools, F64]:
    """Long / short event masks and ATR for one gap-free segment (local indices)."""
    n = c.shape[0]
    if spec.rule is Rule.EMA_CROSS:
        d = ema(c, spec.ema_fast) - ema(c, spec.ema_slow)
        d_prev = np.concatenate(([np.nan], d[:-1]))
        long_ev = (d > 0.0) & (d_prev <= 0.0)
        short_ev = (d < 0.0) & (d_prev >= 0.0)
    elif spec.rule is Rule.DONCHIAN:
        k = spec.donchian_n
        upper = pd.Series(h).rolling(k).max().shift(1).to_numpy(dtype=np.float64)
        lower = pd.Series(lo).rolling(k).min().shift(1).to_numpy(dtype=np.float64)
        long_ev = _onsets(c > upper)
        short_ev = _onsets(c < lower)
    else:
        k = spec.tsmom_lookback
        past = np.concatenate((np.full(min(k, n), np.nan), c[: max(n - k, 0)]))
        mom = c / past - 1.0
        mom_prev = np.concatenate(([np.nan], mom[:-1]))
        long_ev = (mom > 0.0) & (mom_prev <= 0.0)
        short_ev = (mom < 0.0) & (mom_prev >= 0.0)
    if spec.trend_ema is not None:
        trend = ema(c, spec.trend_ema)
        long_ev &= c > trend
        short_ev &= c < trend
    if not spec.allow_long:
        long_ev[:] = False
    if not spec.allow_short:
        short_ev[:] = False
    warm = np.arange(n) >= spec.warmup
    return long_ev & warm, short_ev & warm, atr_wilder(h, lo, c, spec.atr_n)


def _new_empty_events() -> pd.DataFrame:
    dtypes = {
        "symbol": "str",
        "t": "int64",
        "time_ms": "int64",
        "side": "int8",
        "horizon_bars": "int64",
    }
    return pd.DataFrame({c: pd.Series([], dtype=dtypes.get(c, "float64")) for c in EVENT_COLUMNS})


_EMPTY_EVENTS: Final[pd.DataFrame] = _new_empty_events()


def _empty_events() -> pd.DataFrame:
    """The empty events frame (a copy of a prebuilt one: most bars have no signal, and
    building typed empty columns costs more than the signal itself)."""
    return _EMPTY_EVENTS.copy()


def generate_events(
    candles: pd.DataFrame,
    spec: SignalSpec,
    *,
    symbol: str,
    timeframe: Timeframe | None = None,
) -> pd.DataFrame:
    """One row per signal: ``symbol, t, time_ms, side, entry, sl, tp1, tp2, horizon_bars,
    sl_dist, tp1_dist, tp2_dist, atr`` (``t`` = row of the signal bar, ``time_ms`` its open
    time, ``entry`` = ``close_t``), sorted by ``t``. ``timeframe`` defaults to the most common
    spacing of ``open_time``; a spacing other than that is a gap (see the module docstring).
    """
    found = signal_arrays(candles, spec, symbol=symbol, timeframe=timeframe)
    if found is None:
        return _empty_events()
    long_ev, short_ev, atr, times, c = found
    return _events_frame(np.flatnonzero(long_ev | short_ev), long_ev, atr, times, c, spec, symbol)


def signal_arrays(
    candles: pd.DataFrame,
    spec: SignalSpec,
    *,
    symbol: str,
    timeframe: Timeframe | None = None,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], F64, I64, F64] | None:
    """``(long, short, atr, open_time, close)`` per bar of the primary model (what
    :func:`generate_events` turns into rows); None for fewer than two bars."""
    arrays = candle_arrays(candles, symbol)
    n = len(arrays)
    if n < 2:
        return None
    times, o, h, lo, c = arrays.open_time, arrays.open, arrays.high, arrays.low, arrays.close
    step = timeframe.ms if timeframe is not None else infer_step_ms(times)
    long_ev = np.zeros(n, np.bool_)
    short_ev = np.zeros(n, np.bool_)
    atr = np.full(n, np.nan)
    starts = segment_starts(times, step)
    ends = np.concatenate((starts[1:], [n]))
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        seg_long, seg_short, seg_atr = _segment_signals(o[a:b], h[a:b], lo[a:b], c[a:b], spec)
        if b < n:  # the entry bar of the segment's last bar would come after the gap
            seg_long[-1] = False
            seg_short[-1] = False
        long_ev[a:b] = seg_long
        short_ev[a:b] = seg_short
        atr[a:b] = seg_atr
    return long_ev, short_ev, atr, times, c


def _events_frame(
    idx: npt.NDArray[np.intp],
    long_ev: npt.NDArray[np.bool_],
    atr: F64,
    times: I64,
    c: F64,
    spec: SignalSpec,
    symbol: str,
) -> pd.DataFrame:
    if idx.size == 0:
        return _empty_events()
    side = np.where(long_ev[idx], 1, -1).astype(np.int8)
    entry = c[idx]
    if spec.barrier_mode is BarrierMode.ATR:
        base = atr[idx]
        sl_d, tp1_d, tp2_d = spec.sl_atr * base, spec.tp1_atr * base, spec.tp2_atr * base
    else:
        sl_d, tp1_d, tp2_d = spec.sl_pct * entry, spec.tp1_pct * entry, spec.tp2_pct * entry
    return pd.DataFrame(
        {
            "symbol": pd.Series([symbol] * idx.size, dtype="str"),
            "t": idx.astype(np.int64),
            "time_ms": times[idx],
            "side": side,
            "entry": entry,
            "sl": entry - side * sl_d,
            "tp1": entry + side * tp1_d,
            "tp2": entry + side * tp2_d,
            "horizon_bars": np.full(idx.size, spec.horizon_bars, np.int64),
            "sl_dist": sl_d,
            "tp1_dist": tp1_d,
            "tp2_dist": tp2_d,
            "atr": atr[idx],
        }
    )


def last_bar_events(
    candles: pd.DataFrame,
    spec: SignalSpec,
    *,
    symbol: str,
    timeframe: Timeframe | None = None,
) -> pd.DataFrame:
    """:func:`generate_events`' row of the LAST bar only (empty without a signal there),
    without building the other rows: the live loop's per-bar path."""
    found = signal_arrays(candles, spec, symbol=symbol, timeframe=timeframe)
    if found is None:
        return _empty_events()
    long_ev, short_ev, atr, times, c = found
    last = len(times) - 1
    idx = np.array([last] if (long_ev[last] or short_ev[last]) else [], dtype=np.intp)
    return _events_frame(idx, long_ev, atr, times, c, spec, symbol)


def events_to_signals(events: pd.DataFrame) -> list[Signal]:
    """The events as validated :class:`Signal` objects (a bad row raises a one-line error)."""
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise DataError(f"events: missing column(s) {', '.join(missing)}")
    return [
        Signal(
            symbol=str(sym),
            time_ms=int(ts),
            side=_side(sd, row),
            entry=float(en),
            sl=float(sl),
            tp1=float(t1),
            tp2=float(t2),
            horizon_bars=int(hz),
        )
        for row, (sym, ts, sd, en, sl, t1, t2, hz) in enumerate(
            zip(
                events["symbol"],
                events["time_ms"],
                events["side"],
                events["entry"],
                events["sl"],
                events["tp1"],
                events["tp2"],
                events["horizon_bars"],
                strict=True,
            )
        )
    ]


def _side(value: object, row: int) -> Side:
    try:
        return Side(int(str(value)))
    except ValueError:
        raise DataError(f"events row {row}: side {value!r} is not 1 (long) or -1 (short)") from None
