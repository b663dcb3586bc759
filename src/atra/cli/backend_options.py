"""``--backend``, ``--address``, ``--workers``: where ``atra search``, ``atra walkforward`` and
``atra ablation`` run their fold fits (:mod:`atra.research.backends`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # the research stack (LightGBM, ...) loads when a command runs
    from atra.research.backends import BackendSpec

__all__ = ["Address", "Backend", "Workers", "backend_spec"]

Backend = Annotated[
    str,
    typer.Option(
        "--backend",
        help="local | ray | dask: where the fold fits run (ray and dask need the "
        "'distributed' extra of atra). Results are identical on each.",
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


def backend_spec(backend: str, address: str | None, workers: int | None) -> BackendSpec:
    """The checked options (a one-line ConfigError for a bad combination)."""
    from atra.research.backends import BackendSpec

    return BackendSpec(backend, address, workers)
