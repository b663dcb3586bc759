"""Which engine runs the walk-forward's folds: joblib's configuration honoured (an enclosing
``parallel_config``, a backend instance), and the one-line errors of ``--backend``,
``--address`` and ``--workers`` (no cluster needed for any of them)."""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path
from typing import Any, ClassVar

# imported at collection, not first in a test under capsys: the engines give their loggers a
# handler on the sys.stderr of their first import (a test's, closed after it)
import distributed  # noqa: F401
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
import ray  # noqa: F401
from joblib import parallel_config, register_parallel_backend
from joblib._parallel_backends import ThreadingBackend

from atra.cli import main
from atra.cli.backend_options import BackendOptions
from atra.config import ResearchConfig, load_config
from atra.core.meta import MetaParams, walk_forward_predict
from atra.core.validation import DAY_MS, Fold, walk_forward_splits
from atra.errors import ConfigError
from atra.research.backends import BackendSpec, open_backend

SMALL = MetaParams(n_estimators=20, num_leaves=7, min_child_samples=20)
T_START = 1_577_836_800_000  # 2020-01-01 UTC


class _RecordingThreads(ThreadingBackend):  # type: ignore[misc]
    """joblib's threading backend, recording each run it is configured for."""

    runs: ClassVar[list[int]] = []

    def configure(self, n_jobs: int = 1, parallel: Any = None, **kwargs: Any) -> Any:
        type(self).runs.append(n_jobs)
        return super().configure(n_jobs=n_jobs, parallel=parallel, **kwargs)


register_parallel_backend("recording-threads", _RecordingThreads)


def _events(n: int = 900, seed: int = 3) -> tuple[pd.DataFrame, npt.NDArray[np.int64], Any, Any]:
    rng = np.random.default_rng(seed)
    t0 = T_START + np.sort(rng.integers(0, 400 * DAY_MS, n))
    t1 = t0 + rng.integers(1, 48, n) * 3_600_000
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=[f"f{i}" for i in range(4)])
    y = (X["f0"].to_numpy() + rng.normal(size=n) > 0).astype(np.int64)
    return X, y, t0, t1


def _folds(t0: Any, t1: Any) -> list[Fold]:
    folds = walk_forward_splits(
        t0,
        t1,
        start_ms=T_START + 200 * DAY_MS,
        test_span_ms=60 * DAY_MS,
        train="expanding",
        train_span_ms=None,
        embargo_ms=DAY_MS,
        min_train_events=200,
    )
    assert len(folds) >= 3
    return folds


@pytest.fixture(autouse=True)
def _clear_runs() -> None:
    _RecordingThreads.runs.clear()


def test_an_enclosing_parallel_config_is_honoured() -> None:
    X, y, t0, t1 = _events()
    folds = _folds(t0, t1)
    base = walk_forward_predict(X, y, t0, t1, folds, params=SMALL, n_jobs=1, backend="sequential")
    with parallel_config(backend="recording-threads", n_jobs=2):
        got = walk_forward_predict(X, y, t0, t1, folds, params=SMALL, n_jobs=None)
    assert _RecordingThreads.runs == [2]  # the configured backend, with its n_jobs
    pd.testing.assert_frame_equal(base.frame, got.frame)
    pd.testing.assert_frame_equal(base.importance, got.importance)


def test_a_backend_instance_is_accepted() -> None:
    X, y, t0, t1 = _events()
    folds = _folds(t0, t1)
    base = walk_forward_predict(X, y, t0, t1, folds, params=SMALL, n_jobs=1, backend="sequential")
    got = walk_forward_predict(
        X, y, t0, t1, folds, params=SMALL, n_jobs=2, backend=_RecordingThreads()
    )
    assert _RecordingThreads.runs == [2]
    pd.testing.assert_frame_equal(base.frame, got.frame)


def test_an_explicit_backend_name_wins_over_the_enclosing_config() -> None:
    X, y, t0, t1 = _events()
    folds = _folds(t0, t1)[:2]
    with parallel_config(backend="recording-threads"):
        walk_forward_predict(X, y, t0, t1, folds, params=SMALL, n_jobs=2, backend="threading")
    assert _RecordingThreads.runs == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "spark"}, "--backend: expected one of local, ray, dask, got 'spark'"),
        ({"name": "local", "address": "auto"}, "--address needs --backend ray or dask"),
        ({"name": "dask", "workers": 0}, "--workers must be >= 1, got 0"),
        (
            {"name": "dask", "address": "tcp://h:8786", "workers": 2},
            "with --address tcp://h:8786 the running cluster's workers are used",
        ),
    ],
)
def test_bad_backend_options_are_one_line(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        BackendSpec(**spec)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _cli_error(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code = main([*args, "--data-dir", str(tmp_path / "nowhere"), "--runs-dir", str(tmp_path)])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("command", ["walkforward", "ablation"])
def test_cli_unknown_backend(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _cli_error([command, "--backend", "spark"], tmp_path, capsys)
    assert err == "ConfigError: --backend: expected one of local, ray, dask, got 'spark'"


@pytest.mark.parametrize("backend", ["dask", "ray"])
def test_cli_unreachable_address(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    if backend == "dask":
        address = "tcp://" + address
    err = _cli_error(["walkforward", "--backend", backend, "--address", address], tmp_path, capsys)
    assert err.startswith(f"ConfigError: --backend {backend} --address {address}: unreachable")


@pytest.mark.parametrize(("backend", "module"), [("dask", "distributed"), ("ray", "ray")])
def test_cli_engine_not_installed(
    backend: str,
    module: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import ray` raises ImportError
    err = _cli_error(["walkforward", "--backend", backend], tmp_path, capsys)
    assert err == (
        f"ConfigError: --backend {backend}: {module} is not installed; "
        "run pip install 'atra[distributed]'"
    )


def test_local_backend_runs_in_this_process() -> None:
    with open_backend(BackendSpec()) as executor:
        assert executor is None


# ---- the config's [research] section -----------------------------------------------------


@pytest.mark.parametrize(
    ("options", "research", "want", "configured"),
    [
        ({}, {}, ("local", None, None), False),
        ({}, {"backend": "dask", "workers": 3}, ("dask", None, 3), True),
        ({}, {"backend": "ray", "address": "auto"}, ("ray", "auto", None), True),
        ({"backend": "local"}, {"backend": "dask", "address": "tcp://h:1"}, ("local", None, None),
         False),
        ({"workers": 2}, {"backend": "dask", "address": "tcp://h:1"}, ("dask", None, 2), True),
        ({"address": "tcp://x:2"}, {"backend": "dask", "workers": 3}, ("dask", "tcp://x:2", None),
         True),
        ({"backend": "ray"}, {"backend": "ray", "workers": 4}, ("ray", None, 4), True),
        ({"backend": "ray", "workers": 1}, {"backend": "ray", "workers": 4}, ("ray", None, 1),
         False),
    ],
)  # fmt: skip
def test_options_over_the_research_section(
    options: dict[str, Any],
    research: dict[str, Any],
    want: tuple[str, str | None, int | None],
    configured: bool,
) -> None:
    spec = BackendOptions(**options).spec(ResearchConfig(**research), Path("atra.toml"))
    assert (spec.name, spec.address, spec.workers) == want
    assert spec.origin == ("[research] of atra.toml" if configured else None)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('backend = "local"\naddress = "auto"', "research.address needs research.backend"),
        ('backend = "dask"\naddress = "tcp://h:1"\nworkers = 2', "set one of them"),
        ('backend = "spark"', "research.backend"),
        ('backend = "dask"\nworkers = 0', "research.workers"),
    ],
)
def test_a_bad_research_section_is_one_config_line(
    section: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "atra.toml"
    path.write_text(f"[research]\n{section}\n")
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        load_config(path, env={})
    assert "\n" not in str(e.value)


def test_cli_takes_the_backend_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` raises
    config = tmp_path / "atra.toml"
    config.write_text('[research]\nbackend = "dask"\nworkers = 2\n')
    err = _cli_error(["walkforward", "--config", str(config)], tmp_path, capsys)
    assert err == (
        "ConfigError: --backend dask: distributed is not installed; run pip install "
        "'atra[distributed]' (set in [research] of atra.toml)"
    )
    # an option given wins over the section: local needs no engine, so the run goes on to the
    # data (and fails there, on the empty data folder)
    err = _cli_error(
        ["walkforward", "--config", str(config), "--backend", "local"], tmp_path, capsys
    )
    assert "distributed" not in err
