"""The config of a command that computes signals or features, with its plug-ins loaded.

Every such command (``walkforward``, ``backtest``, ``live``, ``train``, ``signals``,
``labels``, ``wf-metrics``, ``features``) reads its config through :func:`load_run_config`:
the config file, then the plug-in modules it names and the installed ``atra.plugins`` entry
points (:func:`atra.adapters.plugins.load_plugins`, once per process), so a plug-in rule or
feature is known before the rule name is checked or a model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from atra.config import AtraConfig

__all__ = ["load_run_config"]


def load_run_config(path: Path | None) -> AtraConfig:
    """:func:`atra.config.load_config` of ``path``, then its ``[plugins]`` loaded."""
    from atra.adapters.plugins import load_plugins
    from atra.config import load_config

    cfg = load_config(path)
    load_plugins(cfg.plugins)
    return cfg
