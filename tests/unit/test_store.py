"""Parquet candle store: validated, idempotent, atomic writes; lean range reads."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atra.adapters.store import CandleStore, DatasetKey, MergeResult, listing, nearest_names
from atra.core.types import Market, Timeframe
from atra.errors import DataError

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
H = 3_600_000
KEY = DatasetKey("binance", Market.SPOT, "BTCUSDT", Timeframe.H1)


def make_candles(n: int, start: int = T0, step: int = H, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 + np.cumsum(rng.normal(0, 1, n))
    open_ = np.r_[100.0, close[:-1]][:n]
    return pd.DataFrame(
        {
            "open_time": start + np.arange(n, dtype=np.int64) * step,
            "open": open_,
            "high": np.maximum(open_, close) + 0.5,
            "low": np.minimum(open_, close) - 0.5,
            "close": close,
            "volume": rng.uniform(0, 10, n),
        }
    )


def make_funding(n: int, start: int = T0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "funding_time": start + np.arange(n, dtype=np.int64) * 8 * H,
            "funding_rate": np.linspace(-1e-4, 3e-4, n),
        }
    )


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (temp files included, so leftovers show)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def store(tmp_path: Path) -> CandleStore:
    return CandleStore(tmp_path / "data")


def test_write_then_read_round_trip(store: CandleStore) -> None:
    frame = make_candles(50)
    result = store.write_candles(KEY, frame, source="mem")
    assert result == MergeResult(0, 50, 50)
    path = store.root / "binance" / "spot" / "BTCUSDT" / "1h.parquet"
    assert path.is_file()
    out = store.read_candles(KEY)
    pd.testing.assert_frame_equal(out, frame)
    assert isinstance(out.index, pd.RangeIndex)
    assert store.last_open_time(KEY) == T0 + 49 * H


def test_default_root_is_data() -> None:
    assert CandleStore().root == Path("data")


def test_range_reads_are_half_open(store: CandleStore) -> None:
    frame = make_candles(300)
    store.write_candles(KEY, frame)
    out = store.read_candles(KEY, T0 + 10 * H, T0 + 20 * H)
    assert out["open_time"].tolist() == [T0 + i * H for i in range(10, 20)]
    assert store.read_candles(KEY, start_ms=T0 + 298 * H)["open_time"].tolist() == [
        T0 + 298 * H,
        T0 + 299 * H,
    ]
    assert len(store.read_candles(KEY, end_ms=T0 + 5 * H)) == 5
    assert store.read_candles(KEY, T0 + 1000 * H).empty


def test_missing_dataset_error_names_key(store: CandleStore) -> None:
    with pytest.raises(DataError, match=r"no dataset binance/spot/BTCUSDT/1h in the store"):
        store.read_candles(KEY)
    assert store.last_open_time(KEY) is None
    assert store.last_funding_time("binance", "BTCUSDT") is None
    with pytest.raises(DataError, match=r"no dataset binance/perp/BTCUSDT/funding"):
        store.read_funding("binance", "BTCUSDT")


def test_same_frame_twice_changes_nothing(store: CandleStore) -> None:
    frame = make_candles(40)
    store.write_candles(KEY, frame)
    before = snapshot(store.root)
    assert store.write_candles(KEY, frame) == MergeResult(40, 0, 40)
    assert snapshot(store.root) == before


def test_overlapping_ranges_merge(store: CandleStore) -> None:
    full = make_candles(100)
    store.write_candles(KEY, full.iloc[40:].reset_index(drop=True))
    assert store.write_candles(KEY, full.iloc[:60].reset_index(drop=True)) == MergeResult(
        60, 40, 100
    )
    pd.testing.assert_frame_equal(store.read_candles(KEY), full)


def test_gappy_merge_keeps_gaps(store: CandleStore) -> None:
    full = make_candles(30)
    store.write_candles(KEY, full.iloc[:10])
    store.write_candles(KEY, full.iloc[20:])
    assert (
        store.read_candles(KEY)["open_time"].tolist()
        == full.open_time[list(range(10)) + list(range(20, 30))].tolist()
    )


def test_conflicting_value_is_error_naming_time_and_store_untouched(store: CandleStore) -> None:
    frame = make_candles(20)
    store.write_candles(KEY, frame)
    before = snapshot(store.root)
    other = frame.copy()
    other.loc[7, "close"] = other.loc[7, "close"] + 0.01
    other.loc[7, "high"] = other.loc[7, "high"] + 0.01
    with pytest.raises(DataError) as info:
        store.write_candles(KEY, other, source="b.csv")
    msg = str(info.value)
    assert msg.startswith("b.csv: open_time 2024-01-01T07:00:00Z conflicts with dataset")
    assert "high stored" in msg
    assert "\n" not in msg
    assert snapshot(store.root) == before


def test_invalid_frame_leaves_store_untouched(store: CandleStore) -> None:
    store.write_candles(KEY, make_candles(10))
    before = snapshot(store.root)
    bad = make_candles(20, start=T0 + 10 * H)
    bad.loc[15, "volume"] = -1
    with pytest.raises(DataError, match=r"^bad.parquet: row 16 "):
        store.write_candles(KEY, bad, source="bad.parquet")
    assert snapshot(store.root) == before


def test_error_without_source_names_key(store: CandleStore) -> None:
    bad = make_candles(3)
    bad.loc[0, "open"] = 0.0
    with pytest.raises(DataError, match=r"^binance/spot/BTCUSDT/1h: row 1"):
        store.write_candles(KEY, bad)


def test_empty_write_creates_nothing(store: CandleStore) -> None:
    assert store.write_candles(KEY, make_candles(0)) == MergeResult(0, 0, 0)
    assert not store.root.exists()


def test_no_temp_files_left_after_failed_write(
    store: CandleStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = make_candles(10)
    store.write_candles(KEY, full.iloc[:5])
    before = snapshot(store.root)

    def broken_write(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken_write)  # a real failure of the disk layer
    with pytest.raises(OSError, match=r"disk full"):
        store.write_candles(KEY, full)
    assert snapshot(store.root) == before


def test_funding_round_trip_merge_and_conflict(store: CandleStore) -> None:
    fund = make_funding(30)
    assert store.write_funding("binance", "BTCUSDT", fund.iloc[:20]) == MergeResult(0, 20, 20)
    assert store.write_funding("binance", "BTCUSDT", fund.iloc[10:]) == MergeResult(20, 10, 30)
    pd.testing.assert_frame_equal(store.read_funding("binance", "BTCUSDT"), fund)
    assert (store.root / "binance" / "perp" / "BTCUSDT" / "funding.parquet").is_file()
    assert store.last_funding_time("binance", "BTCUSDT") == T0 + 29 * 8 * H
    part = store.read_funding("binance", "BTCUSDT", T0 + 8 * H, T0 + 24 * H)
    assert part["funding_time"].tolist() == [T0 + 8 * H, T0 + 16 * H]
    other = fund.copy()
    other.loc[3, "funding_rate"] = 0.03
    with pytest.raises(DataError, match=r"funding_time 2024-01-02T00:00:00Z conflicts"):
        store.write_funding("binance", "BTCUSDT", other)
    bad = make_funding(3)
    bad.loc[1, "funding_rate"] = np.nan
    with pytest.raises(DataError, match=r"^binance/perp/BTCUSDT/funding: row 2"):
        store.write_funding("binance", "BTCUSDT", bad)


def test_datasets_lists_everything_and_skips_foreign_files(store: CandleStore) -> None:
    assert store.datasets() == []
    store.write_candles(KEY, make_candles(10))
    key5 = DatasetKey("binance", Market.SPOT, "BTCUSDT", Timeframe.M5)
    store.write_candles(key5, make_candles(24, step=300_000))
    perp = DatasetKey("binance", Market.PERP, "ETHUSDT", Timeframe.H1)
    store.write_candles(perp, make_candles(5))
    store.write_funding("binance", "ETHUSDT", make_funding(4))
    # foreign files are ignored
    (store.root / "binance" / "spot" / "BTCUSDT" / "notes.parquet").write_bytes(b"x")
    (store.root / "binance" / "spot" / "BTCUSDT" / ".1h.parquet.123.tmp").write_bytes(b"x")
    (store.root / "binance" / "spot" / "BTCUSDT" / ".hidden.parquet").write_bytes(b"x")
    (store.root / "binance" / "margin" / "BTCUSDT").mkdir(parents=True)
    (store.root / "binance" / "margin" / "BTCUSDT" / "1h.parquet").write_bytes(b"x")
    infos = store.datasets()
    assert [i.name for i in infos] == [
        "binance/perp/ETHUSDT/1h",
        "binance/perp/ETHUSDT/funding",
        "binance/spot/BTCUSDT/5m",
        "binance/spot/BTCUSDT/1h",
    ]
    by_name = {i.name: i for i in infos}
    five = by_name["binance/spot/BTCUSDT/5m"]
    assert (five.kind, five.rows, five.first_ms, five.last_ms) == (
        "candles",
        24,
        T0,
        T0 + 23 * 300_000,
    )
    assert five.key == key5
    fund = by_name["binance/perp/ETHUSDT/funding"]
    assert (fund.kind, fund.key, fund.timeframe, fund.rows) == ("funding", None, None, 4)
    assert fund.path == store.funding_path("binance", "ETHUSDT")


def test_datasets_of_missing_root(tmp_path: Path) -> None:
    assert CandleStore(tmp_path / "nope").datasets() == []


def test_count_candles_is_half_open_and_reads_times_only(store: CandleStore) -> None:
    store.write_candles(KEY, make_candles(300).drop(index=range(100, 150)))
    assert store.count_candles(KEY) == 250
    assert store.count_candles(KEY, T0 + 10 * H, T0 + 20 * H) == 10
    assert store.count_candles(KEY, T0 + 100 * H, T0 + 150 * H) == 0  # inside the gap
    assert store.count_candles(KEY, T0 + 99 * H, T0 + 151 * H) == 2
    assert store.count_candles(KEY, start_ms=T0 + 299 * H) == 1
    assert store.count_candles(KEY, end_ms=T0) == 0
    other = DatasetKey("binance", Market.SPOT, "ETHUSDT", Timeframe.H1)
    with pytest.raises(DataError, match=r"no dataset binance/spot/ETHUSDT/1h in the store"):
        store.count_candles(other)


def test_describe_missing_names_the_nearest_and_what_is_stored(store: CandleStore) -> None:
    for sym in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        store.write_candles(DatasetKey("binance", Market.SPOT, sym, Timeframe.H1), make_candles(3))
    store.write_candles(
        DatasetKey("binance", Market.PERP, "XRPUSDT", Timeframe.H1), make_candles(3)
    )
    root = store.root

    def missing(symbol: str, market: Market = Market.SPOT, tf: Timeframe = Timeframe.H1) -> str:
        return store.describe_missing(DatasetKey("binance", market, symbol, tf))

    assert missing("BTCUSTD") == (
        f"no candles for BTCUSTD spot 1h on binance in {root}; did you mean BTCUSDT? "
        "(stored: BTCUSDT, ETHUSDT, SOLUSDT)"
    )
    assert missing("btcusdt").startswith(f"no candles for btcusdt spot 1h on binance in {root}; "
                                          "did you mean BTCUSDT?")  # fmt: skip
    assert missing("DOGEUSDT") == (
        f"no candles for DOGEUSDT spot 1h on binance in {root} (stored: BTCUSDT, ETHUSDT, SOLUSDT)"
    )
    assert missing("XRPUSDT") == (
        f"no candles for XRPUSDT spot 1h on binance in {root}; XRPUSDT is stored as "
        "binance/perp/XRPUSDT/1h (stored: BTCUSDT, ETHUSDT, SOLUSDT)"
    )
    assert missing("BTCUSDT", tf=Timeframe.M5) == (
        f"no candles for BTCUSDT spot 5m on binance in {root}; BTCUSDT is stored as "
        "binance/spot/BTCUSDT/1h (no binance spot 5m candles stored; the store holds "
        "binance/perp/*/1h, binance/spot/*/1h)"
    )
    empty = CandleStore(root / "empty")
    assert empty.describe_missing(KEY).endswith(
        "(no binance spot 1h candles stored; the store holds nothing)"
    )


def test_nearest_names_and_listing() -> None:
    stored = ["ADAUSDT", "BTCUSDT", "ETHUSDT", "LTCUSDT"]
    assert nearest_names("BTCUSTD", stored) == ["BTCUSDT"]
    assert nearest_names("ethusdt", stored) == ["ETHUSDT"]
    assert nearest_names("BTCUSD", stored) == ["BTCUSDT"]
    assert nearest_names("eth", stored) == ["ETHUSDT"]
    assert nearest_names("DOGEUSDT", stored) == []  # a shared quote asset is not a match
    assert nearest_names("ZZZ", stored) == []
    assert nearest_names(" ", stored) == []
    assert listing(["a", "b"]) == "a, b"
    assert listing([]) == ""
    assert listing([str(i) for i in range(25)], limit=3) == "0, 1, 2, ... (22 more)"


def test_empty_stored_dataset_has_no_span(store: CandleStore) -> None:
    path = store.candle_path(KEY)
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(make_candles(0), preserve_index=False), path)
    assert store.datasets()[0].rows == 0
    assert store.last_open_time(KEY) is None


def test_span_without_footer_statistics(store: CandleStore) -> None:
    path = store.candle_path(KEY)
    path.parent.mkdir(parents=True)
    table = pa.Table.from_pandas(make_candles(7), preserve_index=False)
    pq.write_table(table, path, write_statistics=False)
    assert store.last_open_time(KEY) == T0 + 6 * H
    assert (store.datasets()[0].first_ms, store.datasets()[0].rows) == (T0, 7)


def test_corrupt_stored_file_is_data_error(store: CandleStore) -> None:
    store.write_candles(KEY, make_candles(10))
    path = store.candle_path(KEY)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=r"dataset binance/spot/BTCUSDT/1h: cannot read"):
        store.read_candles(KEY)
    with pytest.raises(DataError, match=r"cannot read"):
        store.last_open_time(KEY)
    with pytest.raises(DataError, match=r"cannot read"):
        store.write_candles(KEY, make_candles(12))


def test_wrong_schema_in_store_is_data_error(store: CandleStore) -> None:
    path = store.candle_path(KEY)
    path.parent.mkdir(parents=True)
    frame = make_candles(3).astype({"volume": "float32"})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    with pytest.raises(DataError, match=r"has schema .*volume: float\), expected"):
        store.read_candles(KEY)


@pytest.mark.parametrize(
    ("exchange", "symbol"), [("../x", "BTCUSDT"), ("binance", "BTC/USDT"), ("binance", "..")]
)
def test_unsafe_names_rejected(store: CandleStore, exchange: str, symbol: str) -> None:
    with pytest.raises(DataError, match=r"invalid"):
        store.write_candles(
            DatasetKey(exchange, Market.SPOT, symbol, Timeframe.H1), make_candles(2)
        )
    with pytest.raises(DataError, match=r"invalid"):
        store.read_funding(exchange, symbol)


def test_str_of_key() -> None:
    assert str(KEY) == "binance/spot/BTCUSDT/1h"


# ---- properties ------------------------------------------------------------------------------

_chunks = st.lists(st.tuples(st.integers(0, 59), st.integers(1, 30)), min_size=1, max_size=5)


@settings(max_examples=25, deadline=None)
@given(chunks=_chunks, order_seed=st.randoms(use_true_random=False))
def test_merge_is_idempotent_and_order_independent(
    chunks: list[tuple[int, int]], order_seed: random.Random
) -> None:
    full = make_candles(60, seed=5)
    parts = [full.iloc[a : a + n].reset_index(drop=True) for a, n in chunks]
    shuffled = list(parts)
    order_seed.shuffle(shuffled)
    expected_times = sorted({t for p in parts for t in p.open_time.tolist()})
    with tempfile.TemporaryDirectory() as tmp:
        a, b = CandleStore(Path(tmp) / "a"), CandleStore(Path(tmp) / "b")
        for p in parts:
            a.write_candles(KEY, p)
        for p in shuffled:
            b.write_candles(KEY, p)
        got_a, got_b = a.read_candles(KEY), b.read_candles(KEY)
        pd.testing.assert_frame_equal(got_a, got_b)
        assert got_a["open_time"].tolist() == expected_times
        pd.testing.assert_frame_equal(
            got_a, full[full.open_time.isin(expected_times)].reset_index(drop=True)
        )
        before = snapshot(Path(tmp) / "a")
        for p in parts:
            result = a.write_candles(KEY, p)
            assert result.rows_added == 0
            assert result.rows_before == result.rows_after == len(expected_times)
        assert snapshot(Path(tmp) / "a") == before
