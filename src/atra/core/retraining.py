"""Retraining on a schedule: the schedule, the history a retrain learns from, its request and
its outcome.

The live loop retrains its meta model every ``span`` (``live.retrain_days``); the walk-forward
tests each model on the window after its training (``meta.retrain_days``). Both cut time the
same way: :class:`RetrainSchedule` is :func:`atra.core.validation.schedule_windows` (the
walk-forward's own window function) over an anchor, so a live run anchored at a walk-forward's
first test window retrains exactly where the walk-forward starts its folds.

A retrain at ``test_start_ms`` may use only what was known then: the candles that closed
before it (open time ``< test_start_ms``), funding events before it, and the labels whose trade
ended ``embargo`` before it (:func:`atra.core.validation.training_fold`).
:meth:`MarketHistory.before` is that cut.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from atra.core.validation import DAY_MS, window_start_ms
from atra.errors import ConfigError

__all__ = [
    "MarketHistory",
    "RetrainOutcome",
    "RetrainRequest",
    "RetrainSchedule",
    "Trainer",
    "run_trainer",
]


@dataclass(frozen=True, slots=True)
class RetrainSchedule:
    """Retrain times ``anchor_ms + k * span_ms`` (any integer ``k``). A bar belongs to the
    window that starts at or before it; a new window means a new model."""

    anchor_ms: int
    span_ms: int

    def __post_init__(self) -> None:
        if self.span_ms <= 0:
            raise ConfigError(f"the retrain period must be positive, got {self.span_ms} ms")

    @classmethod
    def every_days(cls, days: int, anchor_ms: int) -> RetrainSchedule:
        """Every ``days`` days from ``anchor_ms``."""
        if days < 1:
            raise ConfigError(f"live.retrain_days must be >= 1 (0 or unset: off), got {days}")
        return cls(anchor_ms, days * DAY_MS)

    def window_start(self, t_ms: int) -> int:
        """The retrain time of the window holding ``t_ms`` (at or before it)."""
        return window_start_ms(t_ms, self.anchor_ms, self.span_ms)

    def retrain_times(self, start_ms: int, end_ms: int) -> list[int]:
        """Retrain times ``start_ms < b < end_ms``: the swaps a run deciding the bars
        ``[start_ms, end_ms)`` makes (the model it starts with serves the first window)."""
        first = self.window_start(start_ms) + self.span_ms
        return list(range(first, end_ms, self.span_ms))


def _before(frame: pd.DataFrame, col: str, end_ms: int) -> pd.DataFrame:
    keep = frame[col].to_numpy() < end_ms
    return frame if bool(keep.all()) else frame.loc[keep].reset_index(drop=True)


@dataclass(frozen=True, slots=True, eq=False)
class MarketHistory:
    """Everything a retrain may learn from, as frames: the candles of each traded symbol
    (``open_time`` + OHLCV), its candles on the counterpart market (basis features), BTCUSDT
    of the traded market when it is not traded itself (cross-asset features) and each
    symbol's funding events (``funding_time, funding_rate``). A symbol absent from
    ``counterparts`` / ``funding`` has no such input (its features of it are NaN, as in
    research)."""

    candles: Mapping[str, pd.DataFrame]
    counterparts: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    btc: pd.DataFrame | None = None
    funding: Mapping[str, pd.DataFrame] = field(default_factory=dict)

    def before(self, end_ms: int) -> MarketHistory:
        """The history known at ``end_ms``: bars opened and funding paid before it."""
        return MarketHistory(
            {s: _before(f, "open_time", end_ms) for s, f in self.candles.items()},
            {s: _before(f, "open_time", end_ms) for s, f in self.counterparts.items()},
            None if self.btc is None else _before(self.btc, "open_time", end_ms),
            {s: _before(f, "funding_time", end_ms) for s, f in self.funding.items()},
        )


@dataclass(frozen=True, slots=True, eq=False)
class RetrainRequest:
    """Retrain for the window starting at ``test_start_ms`` on ``history`` (the trainer cuts
    it there), on behalf of run ``run_id`` whose model so far is ``parent_model_id``."""

    test_start_ms: int
    history: MarketHistory
    run_id: str
    parent_model_id: str
    schedule: RetrainSchedule


@dataclass(frozen=True, slots=True)
class RetrainOutcome:
    """A registered retrained model: where it is, what it learnt from and how long it took.
    ``train_start_ms`` / ``train_end_ms``: first label start and last label end of its
    training events (all before ``test_start_ms`` minus the embargo)."""

    model_dir: str
    model_id: str
    test_start_ms: int
    n_train: int
    n_purged: int
    n_embargoed: int
    train_start_ms: int
    train_end_ms: int
    elapsed_s: float


Trainer = Callable[[RetrainRequest], RetrainOutcome]
"""Fits and registers the model of one window (picklable: it runs in a worker process)."""


def run_trainer(trainer: Trainer, request: RetrainRequest) -> RetrainOutcome:
    """What the worker process runs (this module is all it imports besides the trainer's):
    ``trainer(request)``; a StopIteration, which cannot cross into an asyncio future, is
    re-raised as a RuntimeError."""
    try:
        return trainer(request)
    except StopIteration as exc:
        raise RuntimeError(f"the trainer raised StopIteration ({exc})") from None
