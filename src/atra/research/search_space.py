"""The search space of ``atra search``, declared in its own TOML file.

::

    [search.params."strategy.params.fast"]        # the primary rule's parameters
    type = "int"
    low = 5
    high = 30
    step = 5

    [search.params."strategy.sl_atr"]             # barriers, as multiples of ATR
    type = "float"
    low = 0.75
    high = 2.0
    step = 0.25

    [search.params."strategy.spot_shorts"]        # long only or long-short (spot)
    type = "categorical"
    choices = [false, true]

    [search.params."meta.threshold_mode"]
    type = "categorical"
    choices = ["fixed", "f1", "expected_value"]

    [search.params.timeframe]                     # bar size, resampled from the stored bars
    type = "categorical"
    choices = ["1h", "4h", "1d"]

A key is a dotted path into the run config (:class:`~atra.config.AtraConfig`) under
``strategy.`` or ``meta.``: ``strategy.params.<name>`` (the configured rule's parameters, a
plug-in rule's too), ``strategy.tp1_atr / tp2_atr / sl_atr / horizon_bars / atr_window /
spot_shorts``, ``meta.threshold_mode / threshold / lgbm.*``. Each bound and choice is checked
against the config alone when the file is read (one line naming the key); a combination the
config refuses (``fast >= slow``, ``tp2_atr < tp1_atr``) makes that trial infeasible, not the
search. ``grid`` needs a ``step`` (or choices) for every parameter.

``timeframe`` (no dot) is not a config setting but the bar size of the trial: categorical,
each choice a bar size (``1h``, ``4h``, ``1d``, ...) that is the command's ``--timeframe`` or a
whole multiple of it. A trial's bars are resampled exactly from the bars read
(:mod:`atra.research.resample`, the code of ``atra data resample``), and everything counted in
bars follows the trial's bar size, as a run of ``atra walkforward --timeframe 4h`` counts them:
the rule's parameters, ``atr_window`` and ``horizon_bars`` are bars of that size, the Sharpe is
annualised with ``sqrt(bars per 365-day year)`` of it; the embargo, the purge, the retraining
cadence, funding and margin interest are in time and do not change.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from atra.config import AtraConfig
from atra.core.types import Timeframe
from atra.errors import ConfigError

__all__ = [
    "TIMEFRAME_KEY",
    "InfeasibleParams",
    "ParamSpec",
    "SearchSpace",
    "apply_params",
    "load_search_space",
    "timeframe_of",
]

Choice = bool | int | float | str
_ROOTS = ("strategy", "meta")
TIMEFRAME_KEY = "timeframe"
"""The searched bar size: a parameter of the data, not of the config."""


class ParamSpec(BaseModel):
    """One searched parameter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = Field(default=None, gt=0)
    log: bool = False
    choices: tuple[Choice, ...] | None = None

    @model_validator(mode="after")
    def _shape(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical: give choices = [...]")
            if self.low is not None or self.high is not None or self.step is not None:
                raise ValueError("categorical: low / high / step do not apply")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type}: choices apply to categorical only")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type}: give low and high")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise ValueError(f"expected finite low <= high, got {self.low} .. {self.high}")
        if self.type == "int":
            for name, v in (("low", self.low), ("high", self.high), ("step", self.step)):
                if v is not None and v != int(v):
                    raise ValueError(f"int: {name} must be a whole number, got {v}")
        if self.log and (self.step is not None or self.low <= 0):
            raise ValueError("log: needs low > 0 and no step")
        return self

    def values(self) -> tuple[Choice, ...]:
        """Every value of a discrete parameter (the grid), low to high."""
        if self.choices is not None:
            return self.choices
        if self.step is None:
            raise ConfigError("a continuous parameter has no grid")
        assert self.low is not None  # checked above
        assert self.high is not None
        n = math.floor((self.high - self.low) / self.step + 1e-9)
        pts = [self.low + k * self.step for k in range(n + 1)]
        if self.type == "int":
            return tuple(round(p) for p in pts)
        return tuple(round(p, 12) for p in pts)

    def bounds(self) -> tuple[Choice, ...]:
        """The values checked alone against the config when the file is read."""
        if self.choices is not None:
            return self.choices
        assert self.low is not None  # checked above
        assert self.high is not None
        if self.type == "int":
            return (int(self.low), int(self.high))
        return (self.low, self.high)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    params: dict[str, ParamSpec]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    search: _Section


class SearchSpace(BaseModel):
    """The searched parameters by dotted config key, in file order."""

    model_config = ConfigDict(frozen=True)

    params: dict[str, ParamSpec]
    source: str = ""

    def digest(self) -> str:
        """SHA-256 of the space (a resumed study must search the same one)."""
        return hashlib.sha256(self.model_dump_json(exclude={"source"}).encode()).hexdigest()

    def timeframes(self) -> tuple[Timeframe, ...]:
        """The searched bar sizes (empty when the timeframe is not searched)."""
        spec = self.params.get(TIMEFRAME_KEY)
        if spec is None or spec.choices is None:
            return ()
        return tuple(Timeframe.parse(str(c)) for c in spec.choices)

    def grid(self) -> dict[str, list[Choice]]:
        """Every parameter's values (``grid`` sampler); a continuous one is a ConfigError."""
        out: dict[str, list[Choice]] = {}
        for key, spec in self.params.items():
            if spec.choices is None and spec.step is None:
                raise ConfigError(f"{self.source}: search.params.{key}: grid needs a step")
            out[key] = list(spec.values())
        return out


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = data
    for part in parts[:-1]:
        nxt = node.get(part) if isinstance(node, dict) else None
        if not isinstance(nxt, dict):
            raise ConfigError(f"{key}: {part!r} is not a section of the config")
        node = nxt
    leaf = parts[-1]
    if leaf not in node and parts[:-1] != ["strategy", "params"]:
        raise ConfigError(f"{key}: no such setting in the config")
    node[leaf] = value


class InfeasibleParams(ConfigError):
    """The config refuses a combination of values (``fast >= slow``, ``tp2_atr < tp1_atr``)."""


_COMBINATION_RULES = ("must be <", "must be >=")
"""Messages of the config's cross-field checks: a combination, not a value, is refused."""


def timeframe_of(values: Mapping[str, Any]) -> Timeframe | None:
    """The trial's bar size (``values["timeframe"]``), None when the timeframe is not
    searched."""
    value = values.get(TIMEFRAME_KEY)
    return None if value is None else Timeframe.parse(str(value))


def apply_params(cfg: AtraConfig, values: Mapping[str, Any]) -> AtraConfig:
    """``cfg`` with each dotted key set to its value, validated as a config file is: a value
    the config refuses is a :class:`ConfigError` naming the setting, a refused combination of
    values an :class:`InfeasibleParams`. ``timeframe`` is not a config setting (see
    :func:`timeframe_of`): it is not applied here."""
    data = cfg.model_dump()
    for key, value in values.items():
        if key != TIMEFRAME_KEY:
            _set(data, key, value)
    try:
        return AtraConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = f"{where or 'config'}: {err['msg']}"
        if any(rule in err["msg"] for rule in _COMBINATION_RULES):
            raise InfeasibleParams(msg) from None
        raise ConfigError(msg) from None


def _check_timeframe_spec(path: Path, spec: ParamSpec) -> None:
    where = f"{path}: search.params.{TIMEFRAME_KEY}"
    if spec.type != "categorical" or spec.choices is None:
        raise ConfigError(f'{where}: expected type = "categorical" with bar sizes as choices')
    seen: set[Timeframe] = set()
    for choice in spec.choices:
        if not isinstance(choice, str):
            raise ConfigError(f'{where}: expected bar sizes such as "4h", got {choice!r}')
        try:
            tf = Timeframe.parse(choice)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if tf in seen:
            raise ConfigError(f"{where}: {choice!r} is given twice")
        seen.add(tf)


def load_search_space(path: Path, base: AtraConfig) -> SearchSpace:
    """Read and check ``path`` (``[search.params."<key>"]`` tables) against ``base``."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the search space ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    try:
        parsed = _File.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: {where}: {err['msg']}") from None
    if not parsed.search.params:
        raise ConfigError(f"{path}: search.params: declare at least one parameter")
    for key, spec in parsed.search.params.items():
        if key == TIMEFRAME_KEY:
            _check_timeframe_spec(path, spec)
            continue
        if key.split(".")[0] not in _ROOTS or "." not in key:
            raise ConfigError(
                f"{path}: search.params.{key}: expected {TIMEFRAME_KEY} or a key under "
                f"{' or '.join(_ROOTS)}."
            )
        for value in spec.bounds():
            try:
                apply_params(base, {key: value})
            except InfeasibleParams:
                continue  # with the other searched values it may be allowed: per trial
            except ConfigError as exc:
                raise ConfigError(f"{path}: search.params.{key} = {value!r}: {exc}") from None
    return SearchSpace(params=dict(parsed.search.params), source=str(path))
