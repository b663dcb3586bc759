"""``atra search``: an optuna study over a declared search space, every trial a purged,
embargoed walk-forward scored out of sample after costs (:mod:`atra.research.search_trials`).

- **Samplers**: ``tpe`` (default), ``random``, ``grid`` (every parameter discrete). The
  sampler is seeded with ``seed + trials already stored``, so a resumed study does not draw
  the configurations it already holds again.
- **Storage**: an SQLite file (optuna's RDB storage). The study's identity (search space, data,
  walk-forward options, base config) is stored with it; resuming it with another one is a
  :class:`ConfigError`. ``n_trials`` is the total the study should hold: a second run after a
  kill runs only the remaining ones. A trial left ``RUNNING`` by a killed run is marked failed
  and its configuration queued again. One process works on a study at a time (a lock file
  beside the database).
- **Trial states**: ``COMPLETE`` (scored), ``PRUNED`` (a configuration the config refuses, a
  walk-forward without enough training events, or a repeat of a completed configuration:
  the reason in the trial's ``pruned_reason``), ``FAIL`` (killed). Only ``COMPLETE`` trials
  count in the deflated Sharpe ratio and the PBO (:mod:`atra.research.search_report`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import filelock
import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from atra.config import AtraConfig
from atra.errors import ConfigError, DataError, ModelError
from atra.research.search_space import (
    InfeasibleParams,
    ParamSpec,
    SearchSpace,
    apply_params,
    timeframe_of,
)
from atra.research.search_trials import TrialRunner

__all__ = ["SamplerName", "SearchStudy", "open_study", "run_trials", "sampler_for"]

SamplerName = Literal["tpe", "random", "grid"]
SAMPLERS: Final[tuple[str, ...]] = ("tpe", "random", "grid")
_DONE: Final[tuple[TrialState, ...]] = (TrialState.COMPLETE, TrialState.PRUNED)
TrialCallback = Callable[[FrozenTrial, float | None, int, int], None]
"""``(trial, best value so far, trials done, trials wanted)`` after each trial."""


@dataclass(frozen=True, slots=True, eq=False)
class SearchStudy:
    """An open study and the lock that keeps other processes off it."""

    study: optuna.Study
    storage_path: Path
    lock: filelock.BaseFileLock
    stale_marked_failed: int

    def close(self) -> None:
        self.lock.release()

    def done(self) -> int:
        """Trials finished (complete or pruned)."""
        return len(self.study.get_trials(deepcopy=False, states=_DONE))


def sampler_for(name: str, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    """The optuna sampler ``name`` (tpe | random | grid), seeded."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    raise ConfigError(f"--sampler: expected one of {', '.join(SAMPLERS)}, got {name!r}")


def _differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))


def open_study(
    storage_path: Path,
    study_name: str,
    *,
    sampler: str,
    space: SearchSpace,
    seed: int,
    identity: Mapping[str, Any],
) -> SearchStudy:
    """Create or resume ``study_name`` in the SQLite file ``storage_path``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(storage_path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise ConfigError(
            f"{storage_path}: another process is running a search on this storage"
        ) from None
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{storage_path}")
        wanted = {**dict(identity), "space": space.digest(), "sampler": sampler}
        names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
        if study_name in names:
            existing = optuna.load_study(study_name=study_name, storage=storage)
            stored = existing.user_attrs.get("identity", {})
            diff = _differences(stored, wanted)
            if diff:
                raise ConfigError(
                    f"study {study_name!r} in {storage_path} was run with another "
                    f"{', '.join(diff)}; give another --study-name"
                )
            n_stored = len(existing.get_trials(deepcopy=False))
        else:
            n_stored = 0
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            sampler=sampler_for(sampler, space, seed + n_stored),
            direction="maximize",
            load_if_exists=True,
        )
        if n_stored == 0:
            study.set_user_attr("identity", wanted)
        stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for t in stale:  # left by a killed run (we hold the lock: nobody else is running)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            if t.params:
                study.enqueue_trial(dict(t.params))
        return SearchStudy(study, storage_path, lock, len(stale))
    except BaseException:
        lock.release()
        raise


def _suggest(trial: Trial, key: str, spec: ParamSpec) -> Any:
    if spec.type == "categorical":
        assert spec.choices is not None  # ParamSpec checks it
        return trial.suggest_categorical(key, list(spec.choices))
    assert spec.low is not None  # ParamSpec checks it
    assert spec.high is not None
    if spec.type == "int":
        step = 1 if spec.step is None else int(spec.step)
        return trial.suggest_int(key, int(spec.low), int(spec.high), step=step, log=spec.log)
    return trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)


def _repeat_of(study: optuna.Study, params: Mapping[str, Any]) -> int | None:
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.params == dict(params):
            return t.number
    return None


def run_trials(
    handle: SearchStudy,
    runner: TrialRunner,
    base: AtraConfig,
    space: SearchSpace,
    n_trials: int,
    *,
    on_trial: TrialCallback | None = None,
) -> int:
    """Run trials until the study holds ``n_trials`` finished ones (or a grid is exhausted);
    returns how many this call ran."""
    if n_trials < 1:
        raise ConfigError(f"--n-trials must be >= 1, got {n_trials}")
    study = handle.study
    remaining = n_trials - handle.done()
    if remaining <= 0:
        return 0

    def objective(trial: Trial) -> float:
        values = {key: _suggest(trial, key, spec) for key, spec in space.params.items()}
        repeat = _repeat_of(study, trial.params)
        if repeat is not None:
            trial.set_user_attr("pruned_reason", f"repeat of trial {repeat}")
            raise optuna.TrialPruned()
        try:
            cfg = apply_params(base, values)
            out = runner.run(cfg, timeframe_of(values))
        except (InfeasibleParams, DataError, ModelError) as exc:
            trial.set_user_attr("pruned_reason", f"{type(exc).__name__}: {exc}")
            raise optuna.TrialPruned() from None
        daily = out.daily
        attrs: dict[str, Any] = {
            "sharpe_defined": math.isfinite(out.sharpe),
            "n_returns": out.n_returns,
            "skew": out.skew if math.isfinite(out.skew) else None,
            "kurtosis": out.kurtosis if math.isfinite(out.kurtosis) else None,
            "total_return": out.total_return,
            "max_drawdown": out.max_drawdown,
            "n_trades": out.n_trades,
            "oos_start_ms": out.oos_start_ms,
            "oos_end_ms": out.oos_end_ms,
            "data_end_ms": runner.data_end_ms,
            "dataset_cached": out.dataset_cached,
            "timeframe": out.timeframe.value,
            "daily_start_ms": int(daily.index[0]) if len(daily) else None,
            "daily_returns": [float(x) for x in daily.to_numpy()],
        }
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        # a flat curve (no trade taken) earned nothing: scored 0, flagged sharpe_defined=false
        return out.sharpe if math.isfinite(out.sharpe) else 0.0

    ran = 0

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal ran
        ran += 1
        if on_trial is not None:
            best = _best_value(study)
            on_trial(trial, best, handle.done(), n_trials)

    study.optimize(objective, n_trials=remaining, callbacks=[callback], catch=())
    return ran


def _best_value(study: optuna.Study) -> float | None:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max((float(t.value) for t in done if t.value is not None), default=None)
