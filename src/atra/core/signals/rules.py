"""The entry rules of the primary model: the built-in ones (:class:`Rule`) and the registry of
plug-in rules a user adds with :func:`rule` (``@atra.rule("name")``).

A plug-in rule decides the direction only. It is called once per gap-free segment of a
symbol's bars with that segment's candles (``open_time open high low close volume``, index
0..n-1) and its validated parameters, and returns one value per bar: ``+1`` a long signal at
that bar's close, ``-1`` a short one, ``0`` none. Everything else is the built-in rules' own
path (:mod:`atra.core.signals.events`): the warm-up of each segment, no signal on the last bar
before a gap, the sides the market allows (spot is long only), the ATR or percent barriers of
the strategy config, the horizon, labels, backtest, ``atra signals``, replay and live. The
rule must be causal: its value at bar ``t`` may use bars up to ``t`` only.

Parameters are declared as a pydantic model or a dataclass (``params=``) and validated like
the config: an unknown key or a bad value is one :class:`~atra.errors.ConfigError` line naming
``strategy.params.<key>``. The warm-up (``warmup=``) is a number of bars or a function of the
parameters.

The registry is a plain dict filled at import time of the plug-in module (the adapters'
plug-in loader imports the modules the config names). A name that is a built-in rule or
another module's plug-in is refused. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, TypeAdapter, ValidationError

from atra.errors import AtraError, ConfigError

__all__ = [
    "BUILTIN",
    "NAME_PATTERN",
    "ParamValue",
    "Rule",
    "RuleDef",
    "find_rule",
    "register_rule",
    "rule",
    "rule_names",
    "rule_origin",
    "rule_registry",
    "unregister_rules",
]

BUILTIN: Final[str] = "built-in"
"""The origin of ATRA's own rules and features (a plug-in's origin is its module)."""
NAME_PATTERN: Final[re.Pattern[str]] = re.compile(r"^[a-z][a-z0-9_]*$")
"""Rule and feature names: lower-case letters, digits and ``_`` (the config's pattern)."""

ParamValue = bool | int | float | str
RuleFn = Callable[[pd.DataFrame, Any], npt.ArrayLike]
F = TypeVar("F", bound=RuleFn)


class Rule(enum.Enum):
    """The built-in entry rules of the primary model."""

    EMA_CROSS = "ema_cross"
    DONCHIAN = "donchian"
    TSMOM = "tsmom"


def _param_names(params: type) -> tuple[str, ...]:
    if isinstance(params, type) and issubclass(params, BaseModel):
        return tuple(params.model_fields)
    if dataclasses.is_dataclass(params):
        return tuple(f.name for f in dataclasses.fields(params) if f.init)
    raise ConfigError(f"params must be a pydantic model or a dataclass, got {params!r}")


@dataclass(frozen=True, slots=True, eq=False)
class RuleDef:
    """A registered plug-in rule: ``compute(bars, params) -> sides``, the ``params`` class
    (None: the rule takes none), the warm-up (bars, or a function of the params), the module
    it comes from and a one-line definition."""

    name: str
    compute: RuleFn
    params: type | None
    warmup: int | Callable[[Any], int]
    origin: str
    definition: str
    qualname: str = ""
    _adapter: TypeAdapter[Any] | None = field(init=False, repr=False)
    _parsed: dict[tuple[tuple[str, ParamValue], ...], Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.params is not None:
            try:
                _param_names(self.params)
            except ConfigError as exc:
                raise ConfigError(f"plug-in {self.origin}: rule {self.name!r}: {exc}") from None
        adapter: TypeAdapter[Any] | None = None if self.params is None else TypeAdapter(self.params)
        object.__setattr__(self, "_adapter", adapter)
        object.__setattr__(self, "_parsed", {})

    @property
    def param_names(self) -> tuple[str, ...]:
        return () if self.params is None else _param_names(self.params)

    def validate(
        self, raw: Mapping[str, object], where: str = "strategy.params"
    ) -> tuple[tuple[str, ParamValue], ...]:
        """``raw`` checked against the params class: defaults filled in, values converted
        (``20.0`` -> ``20`` for an int), sorted by name. A bad key or value is one
        :class:`ConfigError` naming ``<where>.<key>``."""
        known = self.param_names
        for key in raw:
            if key not in known:
                expected = f"expected {', '.join(known)}" if known else "it takes none"
                raise ConfigError(
                    f"{where}.{key}: unknown parameter of rule {self.name} ({expected})"
                )
        if self._adapter is None:
            return ()
        try:
            obj = self._adapter.validate_python(dict(raw))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            shown = repr(err.get("input"))
            got = f" (got {shown})" if loc and len(shown) <= 60 else ""
            raise ConfigError(f"{where}{'.' + loc if loc else ''}: {msg}{got}") from None
        except (TypeError, ValueError) as exc:  # a dataclass' own __post_init__ check
            raise ConfigError(f"{where}: {exc}") from None
        dumped = self._adapter.dump_python(obj, mode="python")
        values = dumped if isinstance(dumped, dict) else {}
        out: list[tuple[str, ParamValue]] = []
        for key in known:
            value = values.get(key)
            if not isinstance(value, bool | int | float | str):
                raise ConfigError(
                    f"{where}.{key}: rule {self.name} declares a {type(value).__name__}; "
                    "parameters must be numbers, booleans or strings"
                )
            out.append((key, value))
        return tuple(sorted(out))

    def parsed(self, params: tuple[tuple[str, ParamValue], ...]) -> Any:
        """The params object the rule function receives (built once per parameter set)."""
        if self._adapter is None:
            return None
        if params not in self._parsed:
            self._parsed[params] = self._adapter.validate_python(dict(params))
        return self._parsed[params]

    def warmup_bars(self, params: tuple[tuple[str, ParamValue], ...]) -> int:
        """Bars of warm-up at the start of every gap-free segment for these params."""
        need = self.warmup(self.parsed(params)) if callable(self.warmup) else self.warmup
        if isinstance(need, bool) or not isinstance(need, int | np.integer) or need < 0:
            raise ConfigError(
                f"rule {self.name} ({self.origin}): warm-up must be a whole number of bars "
                f">= 0, got {need!r}"
            )
        return int(need)

    def sides(
        self, bars: pd.DataFrame, params: tuple[tuple[str, ParamValue], ...]
    ) -> npt.NDArray[np.int8]:
        """The rule on one gap-free segment, checked: one value in {-1, 0, +1} per bar."""
        n = len(bars)
        where = f"rule {self.name} ({self.origin})"
        try:
            raw = np.asarray(self.compute(bars, self.parsed(params)))
        except AtraError:
            raise
        except Exception as exc:  # the plug-in's own bug: one line (--debug shows the cause)
            raise ConfigError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
        if raw.shape != (n,):
            raise ConfigError(f"{where} returned shape {raw.shape} for {n} bars, expected ({n},)")
        try:
            values = raw.astype(np.float64)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where} returned {raw.dtype} values, expected -1, 0 or +1"
            ) from None
        bad = np.flatnonzero(~np.isin(values, (-1.0, 0.0, 1.0)))
        if bad.size:
            i = int(bad[0])
            raise ConfigError(
                f"{where} returned {float(values[i])!r} at bar {i} (open_time "
                f"{int(bars['open_time'].iloc[i])}), expected -1 (short), 0 or +1 (long)"
            )
        return values.astype(np.int8)


_RULES: Final[dict[str, RuleDef]] = {}


def rule_registry() -> Mapping[str, RuleDef]:
    """The plug-in rules by name (read-only, in registration order)."""
    return MappingProxyType(_RULES)


def rule_names() -> tuple[str, ...]:
    """Every rule name: the built-ins, then the plug-ins."""
    return (*(r.value for r in Rule), *_RULES)


def rule_origin(name: str) -> str | None:
    """``built-in``, the plug-in's module, or None for an unknown rule."""
    if name in {r.value for r in Rule}:
        return BUILTIN
    found = _RULES.get(name)
    return None if found is None else found.origin


def find_rule(name: str, where: str = "strategy.rule") -> RuleDef:
    """The plug-in rule ``name``; an unknown name is one line listing the known rules."""
    found = _RULES.get(name)
    if found is None:
        raise ConfigError(
            f"{where}: {name!r} is not a known rule (known: {', '.join(rule_names())}; "
            "a plug-in rule needs its module in [plugins] modules or an installed "
            "atra.plugins entry point)"
        )
    return found


def register_rule(defn: RuleDef) -> RuleDef:
    """Add a plug-in rule. Refused: a bad name, a built-in's name, another plug-in's name
    (the same definition registered again, e.g. a reloaded module, replaces itself)."""
    name = defn.name
    if not NAME_PATTERN.match(name):
        raise ConfigError(
            f"plug-in {defn.origin}: rule name {name!r} must match {NAME_PATTERN.pattern}"
        )
    if name in {r.value for r in Rule}:
        raise ConfigError(f"plug-in {defn.origin}: rule {name!r} is a built-in rule")
    old = _RULES.get(name)
    if old is not None and (old.origin, old.qualname) != (defn.origin, defn.qualname):
        raise ConfigError(
            f"plug-in {defn.origin}: rule {name!r} is already registered by {old.origin}"
        )
    if not (callable(defn.warmup) or (isinstance(defn.warmup, int) and defn.warmup >= 0)):
        raise ConfigError(
            f"plug-in {defn.origin}: rule {name!r}: warmup must be bars >= 0 or a function"
        )
    _RULES[name] = defn
    return defn


def unregister_rules(origin: str) -> list[str]:
    """Remove every rule registered by the module ``origin``; returns their names."""
    gone = [name for name, d in _RULES.items() if d.origin == origin]
    for name in gone:
        del _RULES[name]
    return gone


def rule(
    name: str,
    *,
    params: type | None = None,
    warmup: int | Callable[[Any], int] = 1,
    definition: str | None = None,
) -> Callable[[F], F]:
    """Register the decorated function as the plug-in rule ``name``::

        class BreakoutParams(pydantic.BaseModel):
            n: int = pydantic.Field(20, ge=2)

        @atra.rule("breakout", params=BreakoutParams, warmup=lambda p: p.n + 1)
        def breakout(bars: pd.DataFrame, p: BreakoutParams) -> np.ndarray:
            upper = bars["high"].rolling(p.n).max().shift(1)
            return np.where(bars["close"] > upper, 1, 0)

    ``definition`` defaults to the first line of the function's docstring."""

    def decorate(fn: F) -> F:
        doc = (fn.__doc__ or "").strip().splitlines()
        register_rule(
            RuleDef(
                name=name,
                compute=fn,
                params=params,
                warmup=warmup,
                origin=str(getattr(fn, "__module__", None) or "unknown"),
                definition=definition or (doc[0] if doc else name),
                qualname=str(getattr(fn, "__qualname__", name)),
            )
        )
        return fn

    return decorate
