"""Triple-barrier labels and meta-labels: a pandas API over the exit kernel.

A label is exactly what the trade would have done in the backtest, because both run
:func:`atra.core.exits.kernel.simulate_exits_nb`: entry at ``open[t+1]``, barriers re-anchored
at that fill, SL checked before TP inside a bar, gap-through fills at the open, TP1/TP2
partials, break-even stop, time exit at ``open[t+1+H]``, fees and slippage (see
:mod:`atra.core.exits.kernel`).

* ``label``: +1 a take-profit was touched first, -1 the stop, 0 the time barrier.
* ``meta_label``: 1 when the trade's net return after fees and slippage is > 0, else 0 (the
  target of the meta model: "take this primary signal or not").
* Funding (perpetuals) and the margin interest of a spot short (borrow) are not part of the
  label: they are costs of holding a position, charged by the backtest
  (:mod:`atra.core.backtest.engine`) on its sized quantity, not by the exit kernel.
* An event whose trade does not resolve before the candles end is kept with
  ``complete = False``, ``reason = "INCOMPLETE"`` and missing (NA) label, exit and return:
  nothing is invented and nothing is dropped silently.
* The horizon counts the bars present: a trade open across a gap in the candles (missing
  bars) walks on to the bars after it, and the first of them may gap through a barrier.
  (:func:`atra.core.signals.events.generate_events` never emits a signal whose entry is after
  a gap.)
* ``t1_ms``, the time up to which the label used data: the close of the exit bar for a
  barrier exit (``exit_ms + bar length``), the exit bar's open for a time exit. Use it to
  purge overlapping training samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.exits.api import ExitSpec, event_arrays, run_exits
from atra.core.exits.kernel import REASON_NAMES, REASON_TIME, STATUS_DONE
from atra.core.signals.candles import candle_arrays, infer_step_ms
from atra.core.types import Timeframe
from atra.errors import DataError

EVENT_INPUT_COLUMNS = ("t", "side", "sl_dist", "tp1_dist", "tp2_dist", "horizon_bars")
LABEL_COLUMNS = (
    "symbol",
    "t",
    "side",
    "t0_ms",
    "entry_bar",
    "entry_ms",
    "entry_price",
    "exit_bar",
    "exit_ms",
    "t1_ms",
    "label",
    "ret_net",
    "reason",
    "first_reason",
    "bars_held",
    "complete",
    "meta_label",
)
_INCOMPLETE = "INCOMPLETE"


def _nullable_int(
    values: npt.NDArray[np.int64], missing: npt.NDArray[np.bool_]
) -> pd.arrays.IntegerArray:
    # an array, not a Series: the result frame takes the events' index, whatever it is
    return pd.arrays.IntegerArray(values.astype(np.int64), missing.copy())


def _nullable_int8(
    values: npt.NDArray[np.int8], missing: npt.NDArray[np.bool_]
) -> pd.arrays.IntegerArray:
    return pd.arrays.IntegerArray(values.astype(np.int8), missing.copy())


def label_events(
    candles: pd.DataFrame | Mapping[str, pd.DataFrame],
    events: pd.DataFrame,
    spec: ExitSpec,
    *,
    timeframe: Timeframe | None = None,
) -> pd.DataFrame:
    """Label every event with the trade the exit kernel simulates; one row per event, in order.

    ``candles``: one symbol's frame, or a mapping ``symbol -> frame`` (then ``events`` needs a
    ``symbol`` column). ``events``: at least ``t, side, sl_dist, tp1_dist, tp2_dist,
    horizon_bars`` (the frame of :func:`atra.core.signals.events.generate_events`), ``t`` being the
    row of the signal bar in that symbol's candles. Columns of the result: ``LABEL_COLUMNS``.
    Bar indices (``t``, ``entry_bar``, ``exit_bar``) are rows of the symbol's own frame.
    """
    missing = [c for c in EVENT_INPUT_COLUMNS if c not in events.columns]
    if missing:
        raise DataError(f"events: missing column(s) {', '.join(missing)}")
    n_ev = len(events)
    if isinstance(candles, pd.DataFrame):
        frames: dict[str, pd.DataFrame] = {"": candles}
        codes = np.zeros(n_ev, np.int64)
        uniques = [""] if n_ev else []
    else:
        if "symbol" not in events.columns:
            raise DataError("events: a 'symbol' column is needed with candles of several symbols")
        frames = dict(candles)
        codes_, uniques_ = pd.factorize(events["symbol"], sort=False)
        codes = np.asarray(codes_, dtype=np.int64)
        uniques = [str(u) for u in uniques_]
    symbols_out: pd.Series | npt.NDArray[np.object_] = (
        events["symbol"].to_numpy() if "symbol" in events.columns else np.full(n_ev, "", object)
    )
    t = events["t"].to_numpy()
    if n_ev and not np.issubdtype(t.dtype, np.integer):
        raise DataError(f"events: column t has dtype {t.dtype}, expected integer bar indices")
    t = t.astype(np.int64)
    ev = event_arrays(
        t + 1,
        events["side"].to_numpy(),
        events["sl_dist"].to_numpy(),
        events["tp1_dist"].to_numpy(),
        events["tp2_dist"].to_numpy(),
        events["horizon_bars"].to_numpy(),
    )
    # per symbol: the kernel runs on the frame's own arrays (no copies), results scattered back
    done = np.zeros(n_ev, np.bool_)
    label = np.zeros(n_ev, np.int8)
    entry_price = np.full(n_ev, np.nan)
    leg1_reason = np.zeros(n_ev, np.int64)
    reason_code = np.zeros(n_ev, np.int64)
    exit_bar = np.full(n_ev, -1, np.int64)
    ret = np.full(n_ev, np.nan)
    t0_ms = np.zeros(n_ev, np.int64)
    entry_ms = np.zeros(n_ev, np.int64)
    exit_ms = np.zeros(n_ev, np.int64)
    has_entry = np.zeros(n_ev, np.bool_)
    step = np.zeros(n_ev, np.int64)
    # factorize numbers symbols in order of appearance: contiguous groups have sorted codes
    grouped = bool(n_ev == 0 or (codes[1:] >= codes[:-1]).all())
    bounds = np.searchsorted(codes, np.arange(len(uniques) + 1)) if grouped else codes
    for k, sym in enumerate(uniques):
        if sym not in frames:
            raise DataError(f"events: symbol {sym!r} has no candles")
        arrays = candle_arrays(frames[sym], sym or "candles")
        # events of one symbol contiguous (the usual case): views instead of gathers
        rows: npt.NDArray[np.intp] | slice = (
            slice(int(bounds[k]), int(bounds[k + 1])) if grouped else np.flatnonzero(codes == k)
        )
        tk = t[rows]
        n_bars = len(arrays)
        bad = np.flatnonzero((tk < 0) | (tk >= n_bars))
        if bad.size:
            row = int(np.arange(n_ev)[rows][bad[0]])  # the row in the caller's events
            raise DataError(
                f"events row {row}: t = {t[row]} is not a bar of {sym or 'the candles'} "
                f"(0..{n_bars - 1})"
            )
        ts = arrays.open_time
        res = run_exits(arrays.open, arrays.high, arrays.low, ev.take(rows), spec)
        ok = res.status == STATUS_DONE
        done[rows] = ok
        label[rows] = res.label
        entry_price[rows] = res.entry_price
        leg1_reason[rows] = res.leg1_reason
        reason_code[rows] = res.final_reason
        exit_bar[rows] = res.exit_bar
        ret[rows] = res.ret_net
        t0_ms[rows] = ts[tk]
        entry_in = tk + 1 < n_bars
        has_entry[rows] = entry_in
        entry_ms[rows] = np.where(entry_in, ts[np.minimum(tk + 1, n_bars - 1)], 0)
        exit_ms[rows] = np.where(ok, ts[np.clip(res.exit_bar, 0, n_bars - 1)], 0)
        step[rows] = timeframe.ms if timeframe is not None else infer_step_ms(ts)
    entry_local = t + 1
    time_exit = reason_code == REASON_TIME
    t1_ms = np.where(time_exit, exit_ms, exit_ms + step)
    bars_held = np.where(time_exit, exit_bar - entry_local, exit_bar - entry_local + 1)
    # categorical reasons: code 0 (REASON_NONE) is shown as INCOMPLETE
    names = pd.Index([_INCOMPLETE] + [REASON_NAMES[k] for k in range(1, len(REASON_NAMES))])
    final_code = np.where(done, reason_code, 0).astype(np.int64)
    reason = pd.Categorical.from_codes(final_code, categories=names)
    first_reason = pd.Categorical.from_codes(leg1_reason, categories=names)
    meta = (ret > 0.0).astype(np.int8)
    return pd.DataFrame(
        {
            "symbol": symbols_out,
            "t": t,
            "side": events["side"].to_numpy().astype(np.int8),
            "t0_ms": t0_ms,
            "entry_bar": entry_local,
            "entry_ms": _nullable_int(entry_ms, ~has_entry),
            "entry_price": entry_price,
            "exit_bar": _nullable_int(exit_bar, ~done),
            "exit_ms": _nullable_int(exit_ms, ~done),
            "t1_ms": _nullable_int(t1_ms, ~done),
            "label": _nullable_int8(label, ~done),
            "ret_net": ret,
            "reason": reason,
            "first_reason": first_reason,
            "bars_held": _nullable_int(bars_held, ~done),
            "complete": done,
            "meta_label": _nullable_int8(meta, ~done),
        },
        index=events.index,
    )


def meta_labels(labels: pd.DataFrame) -> pd.Series:
    """Meta-label of every labelled event: 1 when ``ret_net > 0`` after costs, 0 when not,
    NA when the trade is incomplete."""
    if "ret_net" not in labels.columns:
        raise DataError("labels: missing column ret_net")
    ret = labels["ret_net"].to_numpy(dtype=np.float64)
    out = pd.Series(
        pd.arrays.IntegerArray((ret > 0.0).astype(np.int8), np.isnan(ret)), index=labels.index
    )
    return out.rename("meta_label")


@dataclass(frozen=True, slots=True)
class LabelStats:
    """Summary of a label frame (for reports and the ``atra labels`` command)."""

    events: int
    complete: int
    incomplete: int
    labels: dict[int, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    mean_ret: float = float("nan")
    meta_positive_rate: float = float("nan")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (label keys as strings: ``"-1"``, ``"0"``, ``"1"``)."""
        return {
            "events": self.events,
            "complete": self.complete,
            "incomplete": self.incomplete,
            "labels": {str(k): v for k, v in self.labels.items()},
            "reasons": dict(self.reasons),
            "mean_ret": self.mean_ret,
            "meta_positive_rate": self.meta_positive_rate,
        }


def label_stats(labels: pd.DataFrame) -> LabelStats:
    """Counts per label (-1/0/+1, complete events) and per final exit reason, the mean net
    return and the share of complete trades with a positive net return."""
    needed = ("label", "reason", "ret_net", "complete")
    missing = [c for c in needed if c not in labels.columns]
    if missing:
        raise DataError(f"labels: missing column(s) {', '.join(missing)}")
    complete = labels["complete"].to_numpy(dtype=np.bool_)
    lab = labels["label"].to_numpy(dtype=np.float64, na_value=np.nan)[complete]
    ret = labels["ret_net"].to_numpy(dtype=np.float64)[complete]
    reasons = labels["reason"].value_counts(sort=False)
    n_done = int(complete.sum())
    return LabelStats(
        events=len(labels),
        complete=n_done,
        incomplete=len(labels) - n_done,
        labels={k: int((lab == k).sum()) for k in (-1, 0, 1)},
        reasons={
            str(k): int(v) for k, v in sorted(reasons.items(), key=lambda kv: str(kv[0])) if v
        },
        mean_ret=float(ret.mean()) if n_done else float("nan"),
        meta_positive_rate=float((ret > 0.0).mean()) if n_done else float("nan"),
    )
