"""Signal events of the primary momentum model: its entry rules and barriers on a candle frame.

:func:`generate_events` (one row per signal), :func:`last_bar_events` (the last bar only, the
live path), :func:`signal_arrays` (the per-bar masks they share) and :func:`events_to_signals`
(rows to validated :class:`~atra.core.signals.spec.Signal` objects).

Rules (one per :class:`~atra.core.signals.spec.SignalSpec`), computed vectorised and causally
on a candle frame: the decision at bar ``t`` uses data up to ``t``'s close, and the trade fills
at ``open[t+1]``.

* ``EMA_CROSS``: LONG when ``d_t = EMA_fast - EMA_slow`` turns positive (``d_t > 0 >= d_{t-1}``),
  SHORT when it turns negative (WORKLOAD.md's events for 20/50).
* ``DONCHIAN``: LONG on the first close above the highest high of the previous ``n`` bars,
  SHORT on the first close below their lowest low.
* ``TSMOM``: LONG when the ``lookback``-bar return turns positive, SHORT when it turns negative.
* A plug-in rule (:mod:`atra.core.signals.rules`): LONG / SHORT where the rule's function,
  called on the segment's candles, returns +1 / -1.
* Optional trend filter: LONG only when ``close > EMA(trend_ema)``, SHORT only when below.

EMA and ATR are those of :mod:`atra.core.signals.candles`.

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

import functools
from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.signals.candles import (
    CANDLE_COLUMNS,
    atr_wilder,
    candle_arrays,
    ema,
    infer_step_ms,
    segment_starts,
)
from atra.core.signals.rules import find_rule
from atra.core.signals.spec import BarrierMode, Rule, Signal, SignalSpec
from atra.core.types import Side, Timeframe
from atra.errors import DataError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

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


def _onsets(state: Bools) -> Bools:
    prev = np.concatenate(([True], state[:-1]))
    return state & ~prev


def _segment_signals(
    o: F64, h: F64, lo: F64, c: F64, spec: SignalSpec, bars: Callable[[], pd.DataFrame]
) -> tuple[Bools, Bools, F64]:
    """Long / short event masks and ATR for one gap-free segment (local indices); ``bars``
    gives the segment's candles (a plug-in rule's input)."""
    n = c.shape[0]
    if not isinstance(spec.rule, Rule):
        sides = find_rule(spec.rule, "rule").sides(bars(), spec.params)
        long_ev = sides > 0
        short_ev = sides < 0
    elif spec.rule is Rule.EMA_CROSS:
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
    else:  # Rule.TSMOM
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


def _bars(candles: pd.DataFrame, a: int, b: int) -> pd.DataFrame:
    """Rows ``a:b`` of the candle columns, index 0..n-1 (a copy: a rule cannot alter them)."""
    return candles.iloc[a:b].loc[:, list(CANDLE_COLUMNS)].reset_index(drop=True)


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
        seg_long, seg_short, seg_atr = _segment_signals(
            o[a:b], h[a:b], lo[a:b], c[a:b], spec, functools.partial(_bars, candles, a, b)
        )
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
