"""One writer per dataset, one loop per journal, stale temp files, the umask, symbol paths.

The concurrent writers are real: threads of this process and child processes take the same
``flock`` locks a second ``atra`` process would.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.adapters.filelocks import ExclusiveLock, create_temp, lock_path_of
from atra.adapters.journal.database import Journal
from atra.adapters.store import CandleStore, DatasetKey, MergeResult
from atra.config import LiveConfig
from atra.core.symbols import check_symbol, split_symbols
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
H = 3_600_000
KEY = DatasetKey("binance", Market.SPOT, "BTCUSDT", Timeframe.H1)
HoldLock = Callable[[Path, float], "subprocess.Popen[str]"]


def candles(first: int, n: int) -> pd.DataFrame:
    i = np.arange(first, first + n, dtype=np.int64)
    close = 50.0 + (i % 7).astype(np.float64)
    return pd.DataFrame(
        {
            "open_time": T0 + i * H,
            "open": close - 0.25,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.full(n, 1.5),
        }
    )


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def store(tmp_path: Path) -> CandleStore:
    return CandleStore(tmp_path / "data", lock_timeout_s=30)


HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from filelock import FileLock
    lock = FileLock(sys.argv[1])
    lock.acquire()
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


@pytest.fixture
def hold_lock() -> Iterator[HoldLock]:
    """Start a child process that holds a file lock for a while (a writer in another process)."""
    procs: list[subprocess.Popen[str]] = []

    def start(lock_file: Path, seconds: float) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(lock_file), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# ---- one writer per dataset ------------------------------------------------------------------


def test_threads_writing_disjoint_slices_lose_nothing(store: CandleStore) -> None:
    results: list[MergeResult] = []
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            results.append(store.write_candles(KEY, candles(k * 500, 500)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.rows_added for r in results) == [500] * 6
    assert sorted(r.rows_before for r in results) == [0, 500, 1000, 1500, 2000, 2500]
    pd.testing.assert_frame_equal(store.read_candles(KEY), candles(0, 3000))


def test_overlapping_concurrent_writes_count_each_row_once(store: CandleStore) -> None:
    results: list[MergeResult] = []

    def write() -> None:
        results.append(store.write_candles(KEY, candles(0, 800)))

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.rows_added for r in results) == [0, 0, 0, 800]
    assert len(store.read_candles(KEY)) == 800


def test_a_second_writer_waits_for_the_first(store: CandleStore, hold_lock: HoldLock) -> None:
    path = store.candle_path(KEY)
    path.parent.mkdir(parents=True)
    hold_lock(lock_path_of(path), 1.0)
    t0 = time.monotonic()
    assert store.write_candles(KEY, candles(0, 10)) == MergeResult(0, 10, 10)
    assert time.monotonic() - t0 >= 0.5  # it waited for the holder to exit


def test_a_writer_that_waits_too_long_fails_in_one_line(
    tmp_path: Path, hold_lock: HoldLock
) -> None:
    store = CandleStore(tmp_path / "data", lock_timeout_s=0.3)
    store.write_candles(KEY, candles(0, 10))
    before = snapshot(store.root)
    hold_lock(lock_path_of(store.candle_path(KEY)), 30.0)
    with pytest.raises(DataError) as caught:
        store.write_candles(KEY, candles(10, 10))
    message = str(caught.value)
    assert "\n" not in message
    assert "binance/spot/BTCUSDT/1h" in message
    assert "another writer" in message
    assert "0.3 s" in message
    assert snapshot(store.root) == before


def test_funding_writes_are_locked_too(store: CandleStore, hold_lock: HoldLock) -> None:
    slow = CandleStore(store.root, lock_timeout_s=0.2)
    path = slow.funding_path("binance", "BTCUSDT")
    path.parent.mkdir(parents=True)
    hold_lock(lock_path_of(path), 30.0)
    frame = pd.DataFrame({"funding_time": [T0, T0 + 8 * H], "funding_rate": [1e-4, -2e-4]})
    with pytest.raises(DataError, match="perp/BTCUSDT/funding: another writer"):
        slow.write_funding("binance", "BTCUSDT", frame)
    assert not path.exists()


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), -1.0])
def test_lock_timeout_must_be_finite_and_not_negative(tmp_path: Path, timeout: float) -> None:
    with pytest.raises(DataError, match="lock timeout"):
        CandleStore(tmp_path, lock_timeout_s=timeout)


# ---- temp files and modes ----------------------------------------------------------------------


def test_stale_temp_files_are_removed_by_the_next_write(store: CandleStore) -> None:
    store.write_candles(KEY, candles(0, 10))
    path = store.candle_path(KEY)
    stale = [path.with_name(f".{path.name}.{n}.tmp") for n in ("dead1", "dead2")]
    for s in stale:
        s.write_bytes(b"half a parquet file")
    other = path.with_name(".4h.parquet.dead.tmp")  # another dataset's: not ours to remove
    other.write_bytes(b"x")
    assert store.write_candles(KEY, candles(10, 5)) == MergeResult(10, 5, 15)
    assert not any(s.exists() for s in stale)
    assert other.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        [".4h.parquet.dead.tmp", ".1h.parquet.lock", "1h.parquet"]
    )


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_new_files_get_the_umask_mode(store: CandleStore, umask: int) -> None:
    old = os.umask(umask)
    try:
        store.write_candles(KEY, candles(0, 10))
        store.write_candles(KEY, candles(10, 10))  # a replace keeps the umask mode too
    finally:
        os.umask(old)
    mode = stat.S_IMODE(store.candle_path(KEY).stat().st_mode)
    assert mode == 0o666 & ~umask


def test_create_temp_never_reuses_a_name(tmp_path: Path) -> None:
    target = tmp_path / "x.parquet"
    names = {create_temp(target) for _ in range(50)}
    assert len(names) == 50
    assert all(n.parent == tmp_path and n.name.startswith(".x.parquet.") for n in names)


# ---- one loop per journal ----------------------------------------------------------------------


async def test_a_second_exclusive_journal_open_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    async with Journal.open(path, exclusive=True):
        t0 = time.monotonic()
        with pytest.raises(DataError) as caught:
            async with Journal.open(path, exclusive=True):
                pass
        assert time.monotonic() - t0 < 1.0
        message = str(caught.value)
        assert f"journal {path} is in use by process {os.getpid()}" in message
        assert "\n" not in message
        async with Journal.open(path) as reader:  # readers are not refused
            assert await reader.schema_version() >= 1
    async with Journal.open(path, exclusive=True):  # released on exit
        pass


def test_a_journal_held_by_another_process_names_its_pid(
    tmp_path: Path, hold_lock: HoldLock
) -> None:
    path = tmp_path / "j.sqlite"
    lock_file = lock_path_of(path)
    lock_file.write_text("")  # the child does not write its pid: "another process"
    proc = hold_lock(lock_file, 30.0)
    with pytest.raises(DataError, match=r"in use by another process \(lock .*\.j\.sqlite\.lock\)"):
        ExclusiveLock(path, "journal").acquire()
    proc.kill()
    proc.wait()
    lock = ExclusiveLock(path, "journal")
    lock.acquire()  # the kernel dropped the dead holder's lock
    assert lock_file.read_text().strip() == str(os.getpid())
    lock.release()


async def test_bad_symbols_read_back_from_a_journal_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with Journal.open(path) as j:
        await j._db.execute(  # a tampered file
            "INSERT INTO symbol_state (symbol, last_bar_ms) VALUES ('../OUT/X', 1)"
        )
        with pytest.raises(DataError, match=r"table symbol_state: symbol '\.\./OUT/X'"):
            await j.symbol_state()


# ---- one symbol validator ----------------------------------------------------------------------


@pytest.mark.parametrize("sym", ["BTCUSDT", "1000PEPEUSDT", "ETHBTC", "A1", "X" * 30])
def test_valid_symbols(sym: str) -> None:
    assert check_symbol(sym) == sym


@pytest.mark.parametrize(
    "sym",
    ["../OUTSIDE/X", "/etc/passwd", "BTC/USDT", "btcusdt", "B", "X" * 31, "BTC.USDT", "", "É1"],
)
def test_invalid_symbols_everywhere(sym: str) -> None:
    with pytest.raises(ConfigError, match="expected 2-30 upper-case letters and digits"):
        check_symbol(sym, "--symbols")
    with pytest.raises(ValueError, match=r"live\.symbols: symbol"):
        LiveConfig(symbols=(sym,))


def test_split_symbols_upper_cases_then_validates() -> None:
    assert split_symbols(["btcusdt,ETHUSDT", " ethusdt "]) == ("BTCUSDT", "ETHUSDT")
    assert split_symbols("solusdt") == ("SOLUSDT",)
    with pytest.raises(ConfigError, match=r"--symbols: symbol '\.\./OUTSIDE/X'"):
        split_symbols("BTCUSDT,../outside/x")


def test_store_paths_stay_inside_the_store(store: CandleStore) -> None:
    for bad in ("../X", "/etc", "A/B", ".."):
        with pytest.raises(DataError, match="invalid symbol"):
            store.candle_path(DatasetKey("binance", Market.SPOT, bad, Timeframe.H1))
        with pytest.raises(DataError, match="invalid"):
            store.funding_path(bad, "BTCUSDT")
    assert store.candle_path(KEY).resolve().is_relative_to(store.root.resolve())
