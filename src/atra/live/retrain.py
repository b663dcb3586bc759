"""Retraining while live (``live.retrain_days``): a worker process retrains the meta model on
the data seen so far, the registry keeps it, the loop swaps it in at a bar boundary.

**Schedule.** Retrain times are ``anchor + k * retrain_days`` (:class:`RetrainSchedule`, the
walk-forward's own window function); the anchor is ``live.retrain_anchor`` or, unset, the first
bar the run decides. The model a run starts with serves the window holding its first bar; each
later window gets the model retrained at its start ``T``: trained as ``atra walkforward`` trains
the fold whose test window starts at ``T`` (:class:`atra.research.retrain.WindowTrainer`, given
by the caller), on the bars that closed before ``T`` and the labels that ended an embargo
before ``T``.

**Data seen so far.** The history the run was started with (the store or ``--data`` files up
to the first bar it decides) plus every bar the loop has fetched since: after each bar the
new rows of the feed's windows (candles, the counterpart market, BTC, funding: what the model
reads) are appended. A hole between the two (a store older than the first candle window) fails
the retrain with the hole named; nothing is filled.

**When.** The retrain for ``T`` starts once every symbol is processed up to the last bar before
``T`` (at the close of that bar, one bar ahead of ``T``'s decisions), in a
:class:`~concurrent.futures.ProcessPoolExecutor` (``spawn``) so the event loop keeps deciding.
*Live* (``wait=False``): the new model decides from the first bar processed after the worker
finished; a retrain that takes less than a bar swaps in at ``T`` itself. *Replay*
(``wait=True``): the loop waits for the worker before deciding ``T``, so the swap is always at
``T`` and the run is deterministic.

**Journal.** Every decision carries its model id (signals.model_id). The meta key
``retrain`` holds the schedule and the model in use (written before the first bar it
decides, so a restart resumes with it); ``retrain_log`` lists each retrain: the window, the
model (id, directory, training size, wall time, the bar it took over) or the error.

**Failures.** A retrain that raises, runs out of events or kills its worker is logged
(``retrain_failed``) and journalled; the previous model keeps deciding and the next window
retrains again. Closing (:meth:`Retrainer.close`: the loop's end, a stop, a cancellation)
terminates a running worker.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from atra.adapters.artifacts import load_model
from atra.adapters.journal.database import Journal
from atra.core.decision import ModelHandle
from atra.core.frames import ms_to_iso
from atra.core.retraining import (
    MarketHistory,
    RetrainOutcome,
    RetrainRequest,
    RetrainSchedule,
    Trainer,
    run_trainer,
)
from atra.errors import AtraError, ConfigError, DataError, ModelError
from atra.live.deciders import StrategyDecider
from atra.live.feed import BTC_SYMBOL, CandleFeed
from atra.live.seen import SeenHistory
from atra.live.settings import LoopSettings
from atra.obs import get_logger

__all__ = [
    "LOG_KEY",
    "STATE_KEY",
    "RetrainRecord",
    "RetrainStopped",
    "Retrainer",
    "Trainer",
    "retrain_log",
]

STATE_KEY: Final[str] = "retrain"
LOG_KEY: Final[str] = "retrain_log"

log = get_logger("atra.live.retrain")


class RetrainStopped(Exception):
    """The loop was stopped while a replay waited for a retrain: the bar is not decided."""


@dataclass(frozen=True, slots=True)
class RetrainRecord:
    """One retrain in the journal: its window start, ``registered`` or ``failed``, the model
    (id, directory, training events, wall time, the bar it took over) or the error."""

    window_ms: int
    status: str
    model_id: str | None = None
    model_dir: str | None = None
    n_train: int | None = None
    elapsed_s: float | None = None
    swapped_at_ms: int | None = None
    error: str | None = None
    wall_s: float | None = None
    """From the start of the retrain to its model (or error): worker start-up, the data's
    transfer and the fit (``elapsed_s``: the fit alone, in the worker)."""


async def retrain_log(journal: Journal) -> list[RetrainRecord]:
    """The retrains journalled in ``journal``, oldest first (empty without retraining)."""
    raw = await journal.meta_value(LOG_KEY)
    if raw is None:
        return []
    try:
        return [RetrainRecord(**item) for item in json.loads(raw)]
    except (ValueError, TypeError) as exc:
        raise DataError(f"journal {journal.path}: meta {LOG_KEY!r} is unreadable ({exc})") from None


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop ``pool`` now, killing a worker in the middle of a fit (the standard library has no
    public handle on the workers before Python 3.14's ``terminate_workers``)."""
    stop_all = getattr(pool, "terminate_workers", None)
    if callable(stop_all):  # pragma: no cover  (Python >= 3.14)
        stop_all()
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=10)


class Retrainer:
    """Retrains on the schedule and hands the loop the decider to swap in (module docstring).

    ``trainer`` fits one window; ``days`` / ``anchor_ms`` the schedule; ``history`` the data
    before the run; ``decider`` the starting decision path (its model is the parent);
    ``wait``: replay semantics (the swap at the scheduled bar)."""

    def __init__(
        self,
        trainer: Trainer,
        *,
        days: int,
        anchor_ms: int | None,
        history: MarketHistory,
        decider: StrategyDecider,
        wait: bool,
        start_method: str = "spawn",
    ) -> None:
        if days < 1:
            raise ConfigError(f"live.retrain_days must be >= 1 (0 or unset: off), got {days}")
        if not isinstance(decider.model, ModelHandle):
            raise ConfigError("live.retrain_days needs a model to start from (--model)")
        self.trainer = trainer
        self.days = days
        self.anchor_cfg = anchor_ms
        self.wait = wait
        self.decider = decider
        self._history = history
        self._start_method = start_method
        self.schedule: RetrainSchedule | None = None
        self.window_ms: int | None = None
        """Start of the window the current model serves (None before the first bar)."""
        self.records: list[RetrainRecord] = []
        self._seen: SeenHistory | None = None
        self._journal: Journal | None = None
        self._settings: LoopSettings | None = None
        self._feed: CandleFeed | None = None
        self._stop: asyncio.Event | None = None
        self._run_id = ""
        self._fetched_ms: dict[str, int] = {}
        self._pool: ProcessPoolExecutor | None = None
        self._task: asyncio.Task[RetrainOutcome] | None = None
        self._task_window: int | None = None
        self._tried: int | None = None
        """The last window a retrain was resolved for (swapped in or failed)."""
        self._model_dir: str | None = None
        """The registry directory of the model deciding (None: the starting model)."""
        self._superseded: list[int] = []
        """Windows whose retrain was still running when a later window began (to journal)."""
        self._started_s = 0.0
        self._wall_s = 0.0

    @property
    def model(self) -> ModelHandle:
        assert isinstance(self.decider.model, ModelHandle)  # checked at construction
        return self.decider.model

    def identity(self) -> dict[str, Any]:
        """What the replay identity hashes: the schedule and the trainer's settings."""
        return {"retrain_days": self.days, "anchor_ms": self.anchor_cfg, "trainer": self.trainer}

    # ---- start and restore -----------------------------------------------------------------

    async def attach(
        self,
        journal: Journal,
        run_id: str,
        settings: LoopSettings,
        feed: CandleFeed,
        stop: asyncio.Event,
    ) -> StrategyDecider | None:
        """Bind the run; restore the schedule and model of a journal that has them. Returns
        the decider a restored run decides with (None: the starting one)."""
        self._journal, self._run_id, self._settings = journal, run_id, settings
        self._feed, self._stop = feed, stop
        self.records = await retrain_log(journal)
        # a window retrained (or failed) before the restart is not retrained again
        self._tried = max((r.window_ms for r in self.records), default=None)
        raw = await journal.meta_value(STATE_KEY)
        if raw is None:
            return None
        try:
            state = json.loads(raw)
            anchor, span = int(state["anchor_ms"]), int(state["span_ms"])
            window, model_dir = int(state["window_ms"]), state["model_dir"]
        except (ValueError, TypeError, KeyError) as exc:
            raise DataError(
                f"journal {journal.path}: meta {STATE_KEY!r} is unreadable ({exc})"
            ) from None
        schedule = RetrainSchedule.every_days(self.days, anchor)
        if schedule.span_ms != span or self.anchor_cfg not in (None, anchor):
            raise ConfigError(
                f"journal {journal.path} retrains every {span / 86_400_000:g} days from "
                f"{ms_to_iso(anchor)}; live.retrain_days / live.retrain_anchor say otherwise: "
                "use a new journal, or the journal's schedule"
            )
        self.schedule, self.window_ms = schedule, window
        if model_dir is None:
            return None
        self._model_dir = str(model_dir)
        self._use(self._load(Path(self._model_dir)))
        log.info("retrained_model_restored", model_id=self.model.model_id, open_time=window)
        return self.decider

    def _load(self, model_dir: Path) -> ModelHandle:
        reg = load_model(model_dir, self.model.model.feature_names)
        old = self.decider.inputs
        if old is not None and reg.inputs != old:
            raise ModelError(f"retrained model {reg.model_id} reads other inputs than its parent")
        return ModelHandle(reg.model, reg.model_id)

    def _use(self, handle: ModelHandle) -> None:
        self.decider = replace(self.decider, model=handle)

    async def _save_state(self) -> None:
        assert self._journal is not None
        assert self.schedule is not None
        state = {
            "anchor_ms": self.schedule.anchor_ms,
            "span_ms": self.schedule.span_ms,
            "window_ms": self.window_ms,
            "model_id": self.model.model_id,
            "model_dir": self._model_dir,
        }
        await self._journal.set_meta(STATE_KEY, json.dumps(state, sort_keys=True))

    async def _record(self, rec: RetrainRecord) -> None:
        assert self._journal is not None
        self.records.append(rec)
        plain = [{k: getattr(r, k) for k in r.__dataclass_fields__} for r in self.records]
        await self._journal.set_meta(LOG_KEY, json.dumps(plain))

    # ---- per bar ---------------------------------------------------------------------------

    def fetched(self, bar_ms: int, symbols: Mapping[str, object]) -> None:
        """The symbols whose candles up to ``bar_ms`` were fetched this cycle."""
        for sym in symbols:
            self._fetched_ms[sym] = max(bar_ms, self._fetched_ms.get(sym, bar_ms))

    async def before_bar(self, t_ms: int, done_ms: Mapping[str, int]) -> StrategyDecider | None:
        """Before bar ``t_ms`` is decided: the decider to swap in at it, or None. Replay waits
        here for a running retrain of ``t_ms``'s window; :class:`RetrainStopped` when the
        loop is stopped meanwhile."""
        if self.schedule is None or self.window_ms is None:
            await self._start(t_ms)
            return None
        if self._seen is None:  # a restored run: the history seen up to this session
            self._seen = self._seen_from(t_ms)
        while self._superseded:
            window = self._superseded.pop(0)
            error = "superseded: still running when the next retrain was due"
            log.warning("retrain_failed", open_time=window, error=error,
                        model_id=self.model.model_id)  # fmt: skip
            await self._record(RetrainRecord(window, "failed", error=error))
        due = self.schedule.window_start(t_ms)
        if due <= self.window_ms or due == self._tried:
            return None
        if self._task_window != due and not self._launch(due, done_ms):
            return None
        task = self._task
        assert task is not None  # launched for ``due``
        if not task.done():
            if not self.wait:
                return None  # live: decide with the current model; swap once it is done
            assert self._stop is not None
            stopped = asyncio.ensure_future(self._stop.wait())
            try:  # neither raises the task's error nor cancels the task
                await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
            if not task.done():
                raise RetrainStopped
        return await self._resolve(task, due, t_ms)

    def after_bar(self, t_ms: int, done_ms: Mapping[str, int]) -> None:
        """After bar ``t_ms``: append the bars seen; start the retrain of the next window
        once its data is complete."""
        if self._seen is None or self.schedule is None or self.window_ms is None:
            return
        assert self._feed is not None
        self._seen.absorb(self._feed)
        step = self._feed.step_ms
        nxt = self.schedule.window_start(t_ms + step)
        if nxt > self.window_ms and nxt != self._tried and self._task_window != nxt:
            self._launch(nxt, done_ms)

    async def _start(self, t_ms: int) -> None:
        """A fresh run: the schedule anchored at ``live.retrain_anchor`` or this first bar."""
        anchor = t_ms if self.anchor_cfg is None else self.anchor_cfg
        self.schedule = RetrainSchedule.every_days(self.days, anchor)
        self.window_ms = self.schedule.window_start(t_ms)
        self._seen = self._seen_from(t_ms)
        await self._save_state()
        log.info("retrain_scheduled", open_time=t_ms, anchor_ms=anchor, retrain_days=self.days,
                 model_id=self.model.model_id)  # fmt: skip

    def _seen_from(self, t_ms: int) -> SeenHistory:
        """The start history up to this session's first bar ``t_ms``, grown from here on."""
        assert self._settings is not None
        symbols = self._settings.symbols
        seen = SeenHistory(self._history.before(t_ms), symbols, BTC_SYMBOL not in symbols)
        self._history = MarketHistory({})  # held by ``seen`` from here on
        return seen

    def _complete(self, window: int, done_ms: Mapping[str, int]) -> bool:
        """Every symbol fetched through the bar before ``window`` and each of its bars
        before ``window`` processed."""
        assert self._settings is not None
        assert self._feed is not None
        last = window - self._feed.step_ms
        for sym in self._settings.symbols:
            if self._fetched_ms.get(sym, -1) < last:
                return False
            win = self._feed.windows[sym]
            k = win.index(window)  # bars before the window: [0, k)
            if k and int(win.open_time[k - 1]) > done_ms.get(sym, -1):
                return False
        return True

    def _launch(self, window: int, done_ms: Mapping[str, int]) -> bool:
        """Start the retrain of ``window`` when its data is complete; True when started."""
        s = self._settings
        assert s is not None
        assert self._seen is not None
        assert self.schedule is not None
        if s.stop_ms is not None and window >= s.stop_ms:
            return False  # the run ends before the window: no model for it
        if not self._complete(window, done_ms):
            return False
        if self._task is not None and self._task_window is not None:
            self._task.cancel()  # an older window, not swapped in yet: superseded
            self._superseded.append(self._task_window)
        request = RetrainRequest(
            window, self._seen.history(), self._run_id, self.model.model_id, self.schedule
        )
        hole = self._seen.hole
        self._task = asyncio.ensure_future(self._run(request, hole))
        self._task_window = window
        log.info("retrain_started", open_time=window, parent_model=self.model.model_id)
        return True

    async def _run(self, request: RetrainRequest, hole: str | None) -> RetrainOutcome:
        self._started_s = time.monotonic()
        if hole is not None:
            raise DataError(f"the training history has a hole: {hole}")
        if self._pool is None:
            ctx = multiprocessing.get_context(self._start_method)
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx)
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(self._pool, run_trainer, self.trainer, request)
        self._wall_s = time.monotonic() - self._started_s
        return outcome

    async def _resolve(
        self, task: asyncio.Task[RetrainOutcome], window: int, t_ms: int
    ) -> StrategyDecider | None:
        self._task, self._task_window, self._tried = None, None, window
        try:
            outcome = task.result()
            handle = self._load(Path(outcome.model_dir))
        except (Exception, asyncio.CancelledError) as exc:  # never crash the loop
            error = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
            if not isinstance(exc, AtraError) and self._pool is not None:
                _terminate(self._pool)  # a crashed or broken worker: a fresh one next time
                self._pool = None
            log.warning("retrain_failed", open_time=window, error=error,
                        model_id=self.model.model_id)  # fmt: skip
            wall = round(time.monotonic() - self._started_s, 3)
            await self._record(RetrainRecord(window, "failed", error=error, wall_s=wall))
            return None
        self._use(handle)
        self.window_ms = window
        self._model_dir = outcome.model_dir
        await self._save_state()
        await self._record(
            RetrainRecord(
                window,
                "registered",
                handle.model_id,
                outcome.model_dir,
                outcome.n_train,
                round(outcome.elapsed_s, 3),
                t_ms,
                wall_s=round(self._wall_s, 3),
            )
        )
        log.info("model_swapped", open_time=t_ms, model_id=handle.model_id, window_ms=window,
                 n_train=outcome.n_train, elapsed_s=round(outcome.elapsed_s, 3))  # fmt: skip
        return self.decider

    # ---- shutdown --------------------------------------------------------------------------

    def close(self) -> None:
        """Cancel a running retrain and terminate its worker (idempotent)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task, self._task_window = None, None
        if self._pool is not None:
            _terminate(self._pool)
            self._pool = None
