"""A scripted trainer for the retraining tests: it runs in the retrainer's worker process, so
it lives in a module that imports little (the worker starts faster)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from atra.core.retraining import RetrainOutcome, RetrainRequest
from atra.errors import DataError, ModelError


@dataclass(frozen=True)
class PlanTrainer:
    """Per window start: ``("ok", model_dir)``, ``("raise", message)``, ``("exit", "")`` (the
    worker dies), ``("hang", pid_file)`` or ``("slow", model_dir)`` (a fit of 0.3 s).

    Every request is checked first: the history of ``symbol`` must be every bar of
    ``expected`` before the window, once (the start history plus what the loop fetched)."""

    plan: tuple[tuple[int, str, str], ...]
    symbol: str
    expected: pd.DataFrame

    def __call__(self, request: RetrainRequest) -> RetrainOutcome:
        at = request.test_start_ms
        seen = request.history.before(at).candles[self.symbol]
        want = self.expected[self.expected["open_time"] < at]
        for col in ("open_time", "open", "high", "low", "close", "volume"):
            if not np.array_equal(seen[col].to_numpy(), want[col].to_numpy()):
                raise DataError(f"the history at {at}: {col} is not every bar before it, once")
        action, arg = next((a, b) for t, a, b in self.plan if t == at)
        if action == "raise":
            raise ModelError(arg)
        if action == "exit":
            os._exit(3)
        if action == "hang":
            Path(arg).write_text(str(os.getpid()))
            time.sleep(120)
        if action == "slow":
            time.sleep(0.3)
        return RetrainOutcome(arg, Path(arg).name, at, len(seen), 0, 0, 0, at, 0.01)
