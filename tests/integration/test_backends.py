"""The walk-forward on Dask (a ``LocalCluster`` of 2 worker processes) and Ray (local mode,
2 CPUs): the shared arrays reach each worker once, not once per fold task, and ``atra
walkforward``, ``atra search`` and ``atra ablation`` give the same results, bit for bit, as
``--backend local``. Each engine starts once for the module."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import ray
from distributed import Client, LocalCluster

from atra.adapters.store import CandleStore
from atra.cli import main
from atra.core.meta import MetaParams, walk_forward_predict
from atra.core.validation import DAY_MS, walk_forward_splits
from atra.data.ingest import import_files
from atra.research.backends import DaskExecutor, RayExecutor

SYMBOLS = ("BTCUSDT", "ETHUSDT")
CONFIG = "[meta.lgbm]\nn_estimators = 30\nnum_leaves = 7\nmin_child_samples = 10\n"
SPACE = '[search.params."strategy.sl_atr"]\ntype = "float"\nlow = 1.0\nhigh = 1.5\nstep = 0.5\n'
WF = ["--min-train-days", "120", "--min-train-events", "60", "--retrain-days", "60"]
SMALL = MetaParams(n_estimators=20, num_leaves=7, min_child_samples=20)


@pytest.fixture(scope="module")
def dask_address() -> Iterator[str]:
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield str(cluster.scheduler_address)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield  # `--backend ray` uses this instance (it leaves it running)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def root(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("backends")
    import_files(
        CandleStore(root / "store"), [shared_data_dir / f"{s}_spot_1h.parquet" for s in SYMBOLS]
    )
    (root / "atra.toml").write_text(CONFIG)
    (root / "space.toml").write_text(SPACE)
    return root


def _backend_args(name: str, request: pytest.FixtureRequest) -> list[str]:
    if name == "dask":
        return ["--backend", "dask", "--address", request.getfixturevalue("dask_address")]
    if name == "ray":
        request.getfixturevalue("ray_local")
        return ["--backend", "ray"]
    return ["--backend", "local"]


def _atra(args: list[str]) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(args)
    out = buf.getvalue()
    assert code == 0, out
    return out


def _common(root: Path) -> list[str]:
    return ["--data-dir", str(root / "store"), "--config", str(root / "atra.toml"),
            "--symbols", ",".join(SYMBOLS), *WF]  # fmt: skip


def _walkforward(root: Path, name: str, backend: list[str]) -> Path:
    runs = root / f"runs-{name}"
    _atra(["walkforward", *_common(root), "--start", "2023-01-01", "--end", "2024-01-01",
           "--runs-dir", str(runs), *backend])  # fmt: skip
    (run_dir,) = runs.iterdir()
    return run_dir


def _search(root: Path, name: str, backend: list[str]) -> dict[str, Any]:
    out = _atra(["search", *_common(root), "--start", "2023-01-01", "--end", "2024-03-01",
                 "--final-from", "2024-01-01", "--space", str(root / "space.toml"),
                 "--n-trials", "2", "--sampler", "grid", "--pbo-splits", "2",
                 "--storage", str(root / f"search-{name}.sqlite3"), *backend])  # fmt: skip
    payload: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return payload


def _ablation(root: Path, name: str, backend: list[str]) -> dict[str, Any]:
    runs = root / f"ablation-{name}"
    out = _atra(["ablation", *_common(root), "--start", "2023-01-01", "--end", "2024-01-01",
                 "--runs-dir", str(runs), "--json-only", *backend])  # fmt: skip
    payload: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    del payload["ablation"]["elapsed_s"]  # wall-clock time: the one figure that may differ
    return payload


@pytest.fixture(scope="module")
def local_runs(root: Path) -> dict[str, Any]:
    local = ["--backend", "local"]
    return {
        "walkforward": _walkforward(root, "local", local),
        "search": _search(root, "local", local),
        "ablation": _ablation(root, "local", local),
    }


def _run_files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run directory but the HTML report, and run.json without its creation
    time (both name the wall-clock time of the run)."""
    files = {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.name != "report.html"}
    record = json.loads(files["run.json"])
    del record["created_utc"]
    files["run.json"] = json.dumps(record, sort_keys=True).encode()
    return files


@pytest.mark.parametrize("name", ["dask", "ray"])
def test_walkforward_is_identical_to_local(
    name: str, root: Path, local_runs: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    local_dir: Path = local_runs["walkforward"]
    got = _walkforward(root, name, _backend_args(name, request))
    assert got.name == local_dir.name  # the run id is a hash of what was run
    expected = _run_files(local_dir)
    assert {"metrics.json", "oos_predictions.csv", "trades.csv"} <= set(expected)
    assert _run_files(got) == expected


@pytest.mark.parametrize("name", ["dask", "ray"])
def test_search_is_identical_to_local(
    name: str, root: Path, local_runs: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    got = _search(root, name, _backend_args(name, request))
    assert local_runs["search"]["n_complete"] == 2
    assert got == local_runs["search"]


@pytest.mark.parametrize("name", ["dask", "ray"])
def test_ablation_is_identical_to_local(
    name: str, root: Path, local_runs: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    got = _ablation(root, name, _backend_args(name, request))
    assert any(s["status"] == "ran" for s in local_runs["ablation"]["ablation"]["sets"])
    assert got == local_runs["ablation"]


# ---- the shared arrays travel once per worker ---------------------------------------------------


def _probe() -> Callable[..., tuple[int, int, int, int]]:
    """A task reporting what it sees of the shared arrays: its process, the array object and
    its memory (a closure: the engines send it by value, workers cannot import this module)."""

    def received(arr: Any, y: Any, none: Any, task: int) -> tuple[int, int, int, int]:
        assert none is None
        return os.getpid(), id(arr), int(arr.__array_interface__["data"][0]), int(y.sum()) + task

    return received


def _executor(name: str, request: pytest.FixtureRequest) -> Any:
    if name == "dask":
        client = Client(request.getfixturevalue("dask_address"), set_as_default=False)
        request.addfinalizer(client.close)
        return DaskExecutor(client)
    request.getfixturevalue("ray_local")
    return RayExecutor(ray)


@pytest.mark.parametrize("name", ["dask", "ray"])
def test_shared_arrays_reach_each_worker_once(name: str, request: pytest.FixtureRequest) -> None:
    executor = _executor(name, request)
    arr = np.arange(1_000_000, dtype=np.float64)  # 8 MB: Ray would put it per call if passed
    y = np.ones(1_000, dtype=np.int64)
    seen: list[tuple[int, int]] = []
    tasks = [(i,) for i in range(8)]
    got = executor.map_folds(_probe(), (arr, y, None), tasks, lambda d, t: seen.append((d, t)))
    assert [g[3] for g in got] == [1_000 + i for i in range(8)]  # in task order
    assert seen == [(i, 8) for i in range(1, 9)]
    pids = {g[0] for g in got}
    # Dask: every task on a worker gets the same (scattered) object; Ray: the same
    # object-store memory. Per-task pickling would give every task its own copy.
    key = (lambda g: (g[0], g[1])) if name == "dask" else (lambda g: (g[0], g[2]))
    assert len({key(g) for g in got}) == len(pids)


def _events(n: int = 900) -> tuple[pd.DataFrame, Any, Any, Any]:
    rng = np.random.default_rng(5)
    t0 = 1_577_836_800_000 + np.sort(rng.integers(0, 400 * DAY_MS, n))
    t1 = t0 + rng.integers(1, 48, n) * 3_600_000
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=[f"f{i}" for i in range(4)])
    X.loc[X.index[::7], "f2"] = np.nan
    y = (X["f0"].to_numpy() + rng.normal(size=n) > 0).astype(np.int64)
    return X, y, t0, t1


@pytest.mark.parametrize("name", ["dask", "ray"])
def test_oos_predictions_are_identical_to_local(name: str, request: pytest.FixtureRequest) -> None:
    X, y, t0, t1 = _events()
    folds = walk_forward_splits(t0, t1, start_ms=int(t0[0]) + 200 * DAY_MS,
                                test_span_ms=45 * DAY_MS, train="expanding", train_span_ms=None,
                                embargo_ms=DAY_MS, min_train_events=200)  # fmt: skip
    weights = lambda idx: np.linspace(0.5, 1.5, idx.size)  # noqa: E731
    base = walk_forward_predict(X, y, t0, t1, folds, params=SMALL, weights_fn=weights, n_jobs=1)
    got = walk_forward_predict(X, y, t0, t1, folds, params=SMALL, weights_fn=weights,
                               executor=_executor(name, request))  # fmt: skip
    pd.testing.assert_frame_equal(got.frame, base.frame, check_exact=True)
    pd.testing.assert_frame_equal(got.folds, base.folds, check_exact=True)
    pd.testing.assert_frame_equal(got.importance, base.importance, check_exact=True)


def test_joblib_dask_backend_by_name_with_an_active_client(dask_address: str) -> None:
    X, y, t0, t1 = _events()
    folds = walk_forward_splits(t0, t1, start_ms=int(t0[0]) + 200 * DAY_MS,
                                test_span_ms=90 * DAY_MS, train="expanding", train_span_ms=None,
                                embargo_ms=DAY_MS, min_train_events=200)  # fmt: skip
    base = walk_forward_predict(X, y, t0, t1, folds, params=SMALL, n_jobs=1)
    with Client(dask_address) as client:  # the default client: joblib's "dask" backend uses it
        got = walk_forward_predict(X, y, t0, t1, folds, params=SMALL, n_jobs=2, backend="dask")
        prefixes = client.run_on_scheduler(lambda dask_scheduler: [*dask_scheduler.task_prefixes])
    assert any(p.startswith("batch_of__fit_fold") for p in prefixes)  # joblib's tasks on Dask
    pd.testing.assert_frame_equal(got.frame, base.frame, check_exact=True)
