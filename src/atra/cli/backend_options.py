"""``--backend``, ``--address``, ``--workers``: where ``atra search``, ``atra walkforward`` and
``atra ablation`` run their fold fits (:mod:`atra.research.backends`); unset, the ``[research]``
section of ``--config`` decides (``research.backend``, ``research.address``,
``research.workers``), else ``local``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # the research stack (LightGBM, ...) loads when a command runs
    from atra.config import ResearchConfig
    from atra.research.backends import BackendSpec

__all__ = ["Address", "Backend", "BackendOptions", "Workers"]

Backend = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="local | ray | dask: where the fold fits run (ray and dask need the "
        "'distributed' extra of atra). Results are identical on each. Default: research.backend "
        "of --config, else local.",
    ),
]
Address = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="A running cluster: ray (auto, host:6379, ray://host:10001) or a dask scheduler "
        "(tcp://host:8786). Without it a local one is started.",
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="Workers of the local ray/dask cluster started without --address (default: --n-jobs).",
    ),
]


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """The three options as given (None: not given)."""

    backend: str | None = None
    address: str | None = None
    workers: int | None = None

    def spec(
        self, research: ResearchConfig | None = None, config: Path | None = None
    ) -> BackendSpec:
        """The checked backend (a one-line ConfigError for a bad combination): each option
        given wins; the cluster (``address`` / ``workers``) comes from the options when either
        is given, else from ``research`` (the ``[research]`` of ``config``) when the backend is
        the configured one. Errors opening a backend set there name it."""
        from atra.research.backends import BackendSpec

        name = self.backend
        address, workers = self.address, self.workers
        configured = False
        if research is not None:
            configured = name is None and research.backend != "local"
            name = name if name is not None else research.backend
            if name == research.backend and address is None and workers is None:
                address, workers = research.address, research.workers
                configured = configured or address is not None or workers is not None
        where = "the configuration" if config is None else config.name
        origin = f"[research] of {where}" if configured else None
        return BackendSpec(name or "local", address, workers, origin=origin)
