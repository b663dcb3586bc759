"""The four shared external series as the shipped example configures them
(``examples/series.toml``), read from ``../shared/series`` for the parity tests."""

from __future__ import annotations

from pathlib import Path

from atra.adapters.series import configured_series
from atra.config import load_config
from atra.core.features.context import SeriesInput
from atra.sim.series_server import FILES

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "series.toml"


def shared_series(
    series_dir: Path, names: tuple[str, ...] | None = None
) -> tuple[SeriesInput, ...]:
    """The example's series (those in ``names``), each from its shared file."""
    cfgs = [
        c.model_copy(update={"path": series_dir / FILES[c.name]})
        for c in load_config(EXAMPLE, env={}).features.series
        if names is None or c.name in names
    ]
    return configured_series(cfgs, series_dir)
