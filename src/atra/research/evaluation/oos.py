"""The out-of-sample span of a walk-forward run, its events and its candles.

- **OOS span**: from the start of the first test window of the walk-forward (the first fold
  whose model could be trained) to the end of the data. Candles before it are never part of an
  equity curve; no trade enters before it.
- **OOS events**: every labelled primary event whose signal bar lies in a test window (it has
  an out-of-sample prediction), with the decision of the model trained before its fold.

Events without an OOS decision inside the span (trade still open when the data ends, so no
label) are counted in :attr:`OOSEvents.without_decision`, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from atra.core.frames import ms_to_iso
from atra.core.types import Market
from atra.errors import DataError
from atra.research.pipeline import ResearchDataset, Universe, WalkForwardResult

__all__ = [
    "PREDICTION_COLUMNS",
    "OOSEvents",
    "oos_candles",
    "oos_events",
    "oos_funding",
    "rebased_events",
]

PREDICTION_COLUMNS: Final[tuple[str, ...]] = (
    "symbol",
    "time_ms",
    "side",
    "fold",
    "p_take",
    "threshold",
    "take",
    "label",
    "meta_label",
    "ret_net",
)
"""Columns of the OOS predictions stored with the run (``oos_predictions.csv``)."""


@dataclass(frozen=True, slots=True, eq=False)
class OOSEvents:
    """The out-of-sample part of a walk-forward run."""

    start_ms: int
    """Start of the first test window: the first bar of the OOS span."""
    end_ms: int
    """Open time of the last bar of the span (the data end)."""
    events: pd.DataFrame
    """One row per OOS primary event (signal time order): the event columns, the label and the
    fold's decision (``fold, p_take, threshold, take``)."""
    without_decision: int
    """Events with a signal in the span but no OOS decision (label unknown at the data end)."""

    @property
    def n_take(self) -> int:
        return int(self.events["take"].sum())


def oos_events(dataset: ResearchDataset, wf: WalkForwardResult) -> OOSEvents:
    """The OOS events of ``wf``: events whose signal lies in a test window, each with the
    decision of the model trained before its fold."""
    if not wf.folds or wf.predictions.empty:
        raise DataError("evaluation: the walk-forward has no out-of-sample prediction")
    start = min(int(f.test_start_ms) for f in wf.folds)
    preds = wf.predictions
    early = preds["time_ms"].to_numpy(dtype=np.int64) < start
    if early.any():
        row = int(np.flatnonzero(early)[0])
        raise DataError(
            f"evaluation: OOS prediction row {row} has signal time {preds['time_ms'].iloc[row]} "
            f"before the first test window ({start})"
        )
    take = preds["take"]
    if not pd.api.types.is_bool_dtype(take.dtype):
        raise DataError(
            f"evaluation: predictions column take has dtype {take.dtype}, expected bool"
        )
    order = np.lexsort(
        (preds["symbol"].to_numpy(dtype=str), preds["time_ms"].to_numpy(dtype=np.int64))
    )
    events = preds.iloc[order].reset_index(drop=True)
    in_span = dataset.events["time_ms"].to_numpy(dtype=np.int64) >= start
    end = max(int(d.candles["open_time"].iloc[-1]) for d in dataset.universe.symbols.values())
    return OOSEvents(start, end, events, int(in_span.sum()) - len(events))


def oos_candles(
    universe: Universe, start_ms: int
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """Each symbol's candles from ``start_ms`` on (index reset) and its row offset."""
    out: dict[str, pd.DataFrame] = {}
    offsets: dict[str, int] = {}
    for sym, data in universe.symbols.items():
        times = data.candles["open_time"].to_numpy(dtype=np.int64)
        first = int(np.searchsorted(times, start_ms, side="left"))
        if first >= times.size:
            continue  # the symbol's data ends before the OOS span: no bar to hold or trade
        out[sym] = data.candles.iloc[first:].reset_index(drop=True)
        offsets[sym] = first
    if not out:
        raise DataError(f"evaluation: no symbol has bars after the OOS start {ms_to_iso(start_ms)}")
    return out, offsets


def rebased_events(events: pd.DataFrame, offsets: Mapping[str, int]) -> pd.DataFrame:
    """``events`` with each signal row ``t`` counted from its symbol's first OOS candle (the
    rows of :func:`oos_candles`)."""
    out = events.copy()
    shift = out["symbol"].map(offsets).to_numpy(dtype=np.int64)
    out["t"] = out["t"].to_numpy(dtype=np.int64) - shift
    return out


def oos_funding(uni: Universe, symbols: Collection[str]) -> dict[str, pd.DataFrame]:
    """The stored funding rates of ``symbols`` on a perpetual universe (none on spot).
    DataError when a perpetual symbol has none: its trades would pay no funding."""
    if uni.market is not Market.PERP:
        return {}
    funding = {s: d.funding for s, d in uni.symbols.items() if d.funding is not None}
    missing = sorted(set(symbols) - set(funding))
    if missing:
        raise DataError(f"evaluation: perpetual symbol {missing[0]} has no funding stored")
    return {s: funding[s] for s in uni.symbols if s in symbols and s in funding}
