"""Loading the user's plug-ins: their own signal rules and features.

A plug-in is a Python module that registers rules (``@atra.rule``) and features
(``@atra.feature``) when it is imported; the registries themselves are plain dicts in the
pure core (:mod:`atra.core.signals.rules`, :mod:`atra.core.features.registry`). This module
does the importing, from two places:

- the config: ``[plugins] modules = ["my_pkg.rules"]`` (importable: installed or on
  ``PYTHONPATH``);
- installed packages: every entry point of the group ``atra.plugins`` (``[project.entry-points
  ."atra.plugins"] my_rules = "my_pkg.rules"``), unless ``[plugins] entry_points = false``.

:func:`load_plugins` runs in the CLI before any command that computes signals or features;
each module is imported once per process (a later call only imports what is new). A module
that fails to import, or whose registrations are refused (a name clashing with a built-in or
another plug-in), is one :class:`~atra.errors.ConfigError` line naming it, and whatever it had
registered before failing is removed again.

A saved model records the plug-ins its features and rule come from (:func:`plugin_record`,
stored by :func:`atra.adapters.artifacts.save_model`); loading it in a process where they are
not registered is refused with one line (:func:`check_plugin_record`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from atra.config import PluginsConfig
from atra.core.features.registry import feature_origin, feature_registry, unregister_features
from atra.core.signals.rules import BUILTIN, rule_origin, rule_registry, unregister_rules
from atra.errors import ConfigError, ModelError

__all__ = [
    "ENTRY_POINT_GROUP",
    "LoadedPlugins",
    "check_plugin_record",
    "load_plugins",
    "loaded_plugins",
    "plugin_record",
]

ENTRY_POINT_GROUP: Final[str] = "atra.plugins"
_LOADED: Final[dict[str, str]] = {}
"""Module -> where it was named (``plugins.modules`` or ``entry point <name> (<package>)``)."""


@dataclass(frozen=True, slots=True)
class LoadedPlugins:
    """The plug-in modules this process imported, and where each was named."""

    modules: Mapping[str, str]


def loaded_plugins() -> LoadedPlugins:
    """What :func:`load_plugins` has imported so far."""
    return LoadedPlugins(dict(_LOADED))


def _registered() -> tuple[set[str], set[str]]:
    features = {n for n in feature_registry() if feature_origin(n) != BUILTIN}
    return features, set(rule_registry())


def _import(module: str, where: str, load: Callable[[], object]) -> None:
    """Import one plug-in module; on failure undo its registrations and raise one line."""
    before_features, before_rules = _registered()
    try:
        load()
    except BaseException as exc:
        after_features, after_rules = _registered()
        origins = {feature_origin(n) for n in after_features - before_features}
        origins |= {rule_origin(n) for n in after_rules - before_rules}
        for origin in origins - {None, BUILTIN}:
            assert origin is not None
            unregister_features(origin)
            unregister_rules(origin)
        if not isinstance(exc, Exception):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, ModuleNotFoundError) and exc.name and module.startswith(exc.name):
            raise ConfigError(
                f"{where}: cannot import plug-in module {module!r}: {detail} (install its "
                "package or put it on PYTHONPATH)"
            ) from None
        kind = "" if isinstance(exc, ConfigError) else f"{type(exc).__name__}: "
        raise ConfigError(f"{where}: plug-in module {module!r} failed: {kind}{detail}") from None
    _LOADED[module] = where


def _imported(module: str) -> bool:
    """Imported by :func:`load_plugins` and still imported (not removed from sys.modules)."""
    return module in _LOADED and module in sys.modules


def load_plugins(
    config: PluginsConfig | None = None, *, modules: Iterable[str] | None = None
) -> LoadedPlugins:
    """Import the plug-in modules of ``config`` (and ``modules``) and, when
    ``config.entry_points`` (the default), every ``atra.plugins`` entry point. A module this
    function imported before is not imported again."""
    cfg = config if config is not None else PluginsConfig()
    for module in (*cfg.modules, *(modules or ())):
        if not _imported(module):
            _import(module, "plugins.modules", functools.partial(importlib.import_module, module))
    if cfg.entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if _imported(ep.module):
                continue
            package = ep.dist.name if ep.dist is not None else "unknown package"
            _import(ep.module, f"entry point {ep.name} = {ep.value} ({package})", ep.load)
    return loaded_plugins()


def plugin_record(feature_names: Iterable[str], rule: str | None) -> dict[str, Any]:
    """The plug-ins a model depends on: ``{"features": {name: module}, "rule": {name:
    module}}`` with only the non-empty parts (empty: the model uses built-ins only)."""
    features = {}
    for name in feature_names:
        origin = feature_origin(name)
        if origin is not None and origin != BUILTIN:
            features[name] = origin
    out: dict[str, Any] = {}
    if features:
        out["features"] = features
    origin = None if rule is None else rule_origin(rule)
    if rule is not None and origin is not None and origin != BUILTIN:
        out["rule"] = {rule: origin}
    return out


def check_plugin_record(model_id: str, record: object) -> None:
    """Refuse (one :class:`ModelError` line) a model whose recorded plug-in features or rule
    are not registered in this process, or are registered by another module."""
    if record is None:
        return
    if not isinstance(record, Mapping):
        raise ModelError(f"model {model_id}: plugins in its metadata must be an object")
    for kind, lookup in (("features", feature_origin), ("rule", rule_origin)):
        part = record.get(kind) or {}
        if not isinstance(part, Mapping):
            raise ModelError(f"model {model_id}: plugins.{kind} must be an object")
        for name, module in part.items():
            have = lookup(str(name))
            if have == module:
                continue
            what = "feature" if kind == "features" else "rule"
            now = "is not registered" if have is None else f"is registered by {have} instead"
            raise ModelError(
                f"model {model_id} was trained with the {what} {name!r} of plug-in {module}, "
                f"which {now} (add {module!r} to [plugins] modules or install its package)"
            )
