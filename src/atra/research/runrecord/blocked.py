"""What became of a leg's signals: how many were taken and how many each stage blocked (the meta
model, every risk guard, the sizing), counted from the backtest's events.

The backtest (:func:`atra.core.backtest.engine.run_backtest`) gives every event a
``blocked_by``: None when taken, else the name the live loop journals for the same block
(``meta_model``, ``daily_loss``, ``max_positions``, ``max_per_symbol``, ``leverage``, ``sizing``,
...). An event its decision column refused without naming the stage is ``decision_false``; when
the event carries the meta model's ``p_take`` below its ``threshold`` (the model's own rule:
take when ``p_take >= threshold``) it is counted as ``meta_model``, otherwise it stays
``decision_false``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from atra.core.backtest.position_nb import EV_NO_ENTRY_BAR
from atra.core.backtest.results import BLOCKED_SIZING, NOT_TAKEN_DECISION, OUTCOME_NAMES
from atra.core.decision import BLOCKED_META
from atra.core.risk import GUARDS
from atra.errors import DataError

__all__ = ["BLOCKERS", "BlockedCounts", "blocked_counts"]

BLOCKERS: Final[tuple[str, ...]] = (
    BLOCKED_META,
    *GUARDS,
    BLOCKED_SIZING,
    OUTCOME_NAMES[EV_NO_ENTRY_BAR],
)
"""What can block a signal in a backtest, in display order (every one is listed, zeros
included); anything else found in the events follows, sorted by name."""


@dataclass(frozen=True, slots=True)
class BlockedCounts:
    """A leg's signals, those taken, and the rest by what blocked them."""

    signals: int
    taken: int
    blocked: Mapping[str, int]
    """Blocker name -> signals it blocked: every name of :data:`BLOCKERS` (zeros included),
    then any other name found, sorted. Sums to ``signals - taken``."""

    def to_json(self) -> dict[str, Any]:
        return {"signals": self.signals, "taken": self.taken, "blocked": dict(self.blocked)}

    @classmethod
    def from_json(cls, raw: Any, where: str) -> BlockedCounts:
        """The counts in ``raw`` (``metrics.json``); a wrong shape or a total that does not add
        up is a one-line :class:`DataError` naming ``where``."""
        if not isinstance(raw, dict) or set(raw) != {"signals", "taken", "blocked"}:
            raise DataError(f"{where}: expected an object with signals, taken and blocked")
        blocked = raw["blocked"]
        if not isinstance(blocked, dict):
            raise DataError(f"{where}: blocked must be an object, got {blocked!r}")
        values = [raw["signals"], raw["taken"], *blocked.values()]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise DataError(f"{where}: expected counts as integers >= 0, got {raw!r}")
        counts = cls(raw["signals"], raw["taken"], {str(k): v for k, v in blocked.items()})
        if counts.taken + sum(counts.blocked.values()) != counts.signals:
            raise DataError(
                f"{where}: taken {counts.taken} + blocked {sum(counts.blocked.values())} != "
                f"signals {counts.signals}"
            )
        return counts


def _meta_blocks(events: pd.DataFrame, refused: np.ndarray[Any, np.dtype[np.bool_]]) -> Any:
    """Rows of ``refused`` (the decision column said no, no stage named) whose event carries a
    p(take) below its threshold: the meta model's refusals."""
    if not {"p_take", "threshold"} <= set(events.columns):
        return np.zeros(len(events), dtype=bool)
    p = pd.to_numeric(events["p_take"], errors="coerce").to_numpy(dtype=np.float64)
    thr = pd.to_numeric(events["threshold"], errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return refused & np.isfinite(p) & np.isfinite(thr) & (p < thr)


def blocked_counts(events: pd.DataFrame, where: str = "events") -> BlockedCounts:
    """Count ``events`` (a backtest's, with its ``blocked_by`` column) by what blocked them.
    A frame without that column is a one-line :class:`DataError` naming ``where``."""
    if "blocked_by" not in events.columns:
        raise DataError(f"{where}: no blocked_by column (expected a backtest's events)")
    by = events["blocked_by"].to_numpy(dtype=object).copy()
    taken = pd.isna(by)
    refused = ~taken & (by == NOT_TAKEN_DECISION)
    by[_meta_blocks(events, refused)] = BLOCKED_META
    found = pd.Series(by[~taken], dtype=object).value_counts()
    counts = {name: int(found.get(name, 0)) for name in BLOCKERS}
    counts.update({str(k): int(n) for k, n in sorted(found.items()) if k not in counts})
    return BlockedCounts(len(events), int(taken.sum()), counts)
