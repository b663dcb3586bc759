"""Where the walk-forward's fold fits run: ``--backend local | ray | dask`` (``--address``,
``--workers``) for ``atra search``, ``atra walkforward`` and ``atra ablation``.

- ``local``: joblib in this process (:func:`atra.research.walkforward.run_walkforward`'s
  ``n_jobs`` and joblib backend).
- ``ray``: Ray remote tasks. ``--address`` is a running cluster (``auto``, ``host:6379`` or a
  Ray Client address ``ray://host:10001``); without one, a local Ray instance with
  ``--workers`` CPUs is started (and stopped afterwards). A Ray instance already initialised in
  this process is used as it is.
- ``dask``: Dask futures. ``--address`` is a scheduler (``tcp://host:8786``); without one, a
  ``LocalCluster`` of ``--workers`` single-threaded worker processes is started (and closed).

Per walk-forward, the large arrays (feature matrix, labels, label spans, net returns) are put
once in Ray's object store (``ray.put``) / scattered once to every Dask worker
(``client.scatter(..., broadcast=True)``); each fold task carries references to them plus its
own row indices and sample weights. Results are gathered in fold order, each fit uses the
meta model's own thread count: the output is the same, bit for bit, as a local run.
Scheduling across machines is the engine's (nothing here assigns work to a machine).
"""

from __future__ import annotations

import contextlib
import importlib
import socket
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from atra.core.meta import FoldExecutor
from atra.errors import ConfigError

__all__ = [
    "BACKENDS",
    "BackendSpec",
    "DaskExecutor",
    "RayExecutor",
    "active_executor",
    "open_backend",
]

BACKENDS: Final[tuple[str, ...]] = ("local", "ray", "dask")
_INSTALL: Final[str] = "pip install 'atra[distributed]'"
_R = TypeVar("_R")
ProgressFn = Callable[[int, int], None]

_ACTIVE: ContextVar[FoldExecutor | None] = ContextVar("atra_fold_executor", default=None)


def active_executor() -> FoldExecutor | None:
    """The executor of the enclosing :func:`open_backend` (None: run locally)."""
    return _ACTIVE.get()


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """``--backend``, ``--address``, ``--workers`` (None: the command's ``--n-jobs``) and how
    long to wait for a cluster to answer."""

    name: str = "local"
    address: str | None = None
    workers: int | None = None
    connect_timeout_s: float = 20.0
    origin: str | None = None
    """Where the values came from when not from the options (``[research] of atra.toml``):
    added to the errors of opening the backend."""

    def __post_init__(self) -> None:
        if self.name not in BACKENDS:
            expected = ", ".join(BACKENDS)
            raise ConfigError(f"--backend: expected one of {expected}, got {self.name!r}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if self.name == "local" and self.address is not None:
            raise ConfigError("--address needs --backend ray or dask (local runs in this process)")
        if self.address is not None and self.workers is not None:
            raise ConfigError(
                f"--workers starts a local {self.name} cluster; with --address "
                f"{self.address} the running cluster's workers are used"
            )
        if not self.connect_timeout_s > 0:
            raise ConfigError(f"connect timeout must be > 0 s, got {self.connect_timeout_s}")


def _engine(module: str, backend: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"--backend {backend}: {module} is not installed; run {_INSTALL}"
        ) from None


def _probe(address: str, default_port: int, backend: str, timeout_s: float) -> None:
    """A TCP connection to ``address`` within ``timeout_s``, or a one-line ConfigError."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port or default_port
    except ValueError:
        raise ConfigError(f"--address {address!r}: expected host:port") from None
    if not host:
        raise ConfigError(f"--address {address!r}: expected host:port")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConfigError(
            f"--backend {backend} --address {address}: unreachable within {timeout_s:g} s "
            f"({host}:{port}: {exc.strerror or exc})"
        ) from None


class RayExecutor:
    """Fold tasks as Ray remote tasks (one CPU each); shared arrays ``ray.put`` once."""

    def __init__(self, ray: ModuleType) -> None:
        self._ray = ray
        self._remote: dict[Callable[..., Any], Any] = {}

    def map_folds(
        self,
        fn: Callable[..., _R],
        shared: Sequence[Any],
        tasks: Sequence[tuple[Any, ...]],
        progress: ProgressFn | None,
    ) -> list[_R]:
        ray = self._ray
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = ray.remote(num_cpus=1)(fn)
        refs = [None if a is None else ray.put(a) for a in shared]
        pending = [remote.remote(*refs, *task) for task in tasks]
        try:
            waiting = list(pending)
            while waiting:
                _, waiting = ray.wait(waiting, num_returns=1)
                if progress is not None:
                    progress(len(tasks) - len(waiting), len(tasks))
            return list(ray.get(pending))  # in task order
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise


class DaskExecutor:
    """Fold tasks as Dask futures (``pure=False``); shared arrays scattered once to every
    worker (``broadcast=True``)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def map_folds(
        self,
        fn: Callable[..., _R],
        shared: Sequence[Any],
        tasks: Sequence[tuple[Any, ...]],
        progress: ProgressFn | None,
    ) -> list[_R]:
        from distributed import as_completed

        client = self._client
        present = [i for i, a in enumerate(shared) if a is not None]
        scattered = client.scatter([shared[i] for i in present], broadcast=True, hash=False)
        args: list[Any] = list(shared)
        for i, fut in zip(present, scattered, strict=True):
            args[i] = fut
        futures = [client.submit(fn, *args, *task, pure=False) for task in tasks]
        try:
            finished = as_completed(futures, loop=client.loop)  # type: ignore[no-untyped-call]
            for n_done, _ in enumerate(finished, 1):
                if progress is not None:
                    progress(n_done, len(tasks))
            return list(client.gather(futures))  # in task order
        except BaseException:
            client.cancel(futures)
            raise
        finally:
            for fut in (*futures, *scattered):
                fut.release()


@contextlib.contextmanager
def _ray_executor(spec: BackendSpec, workers: int) -> Iterator[FoldExecutor]:
    ray = _engine("ray", "ray")
    if ray.is_initialized():  # started by the caller: theirs to shut down
        yield RayExecutor(ray)
        return
    address = spec.address
    if address is not None and address != "auto":
        default = 10001 if address.startswith("ray://") else 6379
        _probe(address, default, "ray", spec.connect_timeout_s)
    try:
        if address is None:
            ray.init(
                num_cpus=workers,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, ValueError) as exc:  # no cluster there / a malformed address
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--backend ray --address {address}: {first}") from None
    try:
        yield RayExecutor(ray)
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _dask_executor(spec: BackendSpec, workers: int) -> Iterator[FoldExecutor]:
    distributed = _engine("distributed", "dask")
    with contextlib.ExitStack() as stack:
        if spec.address is None:
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
            )
            target: Any = cluster
        else:
            _probe(spec.address, 8786, "dask", spec.connect_timeout_s)
            target = spec.address
        try:
            client = distributed.Client(
                target, timeout=f"{spec.connect_timeout_s}s", set_as_default=False
            )
        except Exception as exc:  # a timeout comes as one of several types
            raise ConfigError(
                f"--backend dask --address {spec.address}: no scheduler answered "
                f"({type(exc).__name__}: {exc})"
            ) from None
        stack.enter_context(client)
        yield DaskExecutor(client)


@contextlib.contextmanager
def open_backend(spec: BackendSpec, *, n_jobs: int = 2) -> Iterator[FoldExecutor | None]:
    """The executor of ``spec`` (None for ``local``), active for every
    :func:`atra.research.walkforward.run_walkforward` inside the ``with`` block; a cluster
    started here is stopped on exit. ``n_jobs``: the local cluster's size without
    ``--workers``."""
    workers = spec.workers if spec.workers is not None else max(1, n_jobs)
    if spec.name == "local":
        yield None
        return
    opener = _ray_executor if spec.name == "ray" else _dask_executor
    with contextlib.ExitStack() as stack:
        try:
            executor = stack.enter_context(opener(spec, workers))
        except ConfigError as exc:
            if spec.origin is None:
                raise
            raise ConfigError(f"{exc} (set in {spec.origin})") from None
        token = _ACTIVE.set(executor)
        try:
            yield executor
        finally:
            _ACTIVE.reset(token)
