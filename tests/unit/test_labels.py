"""Triple-barrier labels and meta-labels over the exit kernel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atra.core.exits.api import ExitSpec, simulate_exits
from atra.core.labels import LABEL_COLUMNS, label_events, label_stats, meta_labels
from atra.core.signals.events import generate_events
from atra.core.signals.spec import SignalSpec
from atra.core.types import Timeframe
from atra.errors import DataError

GEN_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "bench" / "gen_data.py"
HOUR = 3_600_000


def make_candles(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.008, n)))
    op = np.concatenate(([100.0], close[:-1])) * np.exp(rng.normal(0, 0.001, n))
    high = np.maximum(op, close) * (1 + rng.exponential(0.004, n))
    low = np.minimum(op, close) * (1 - rng.exponential(0.004, n))
    return pd.DataFrame(
        {
            "open_time": 1_700_000_000_000 + HOUR * np.arange(n, dtype=np.int64),
            "open": op,
            "high": high,
            "low": low,
            "close": close,
            "volume": np.ones(n),
        }
    )


SPEC = SignalSpec(horizon_bars=24)
EXIT = ExitSpec(tp1_fraction=0.5, move_to_be=True, fee_tp=0.0002)


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return make_candles(2000, seed=11)


@pytest.fixture(scope="module")
def events(candles: pd.DataFrame) -> pd.DataFrame:
    return generate_events(candles, SPEC, symbol="AAA")


# ---------------------------------------------------------------------------- reference set


def _load_bench_folder(folder: Path) -> dict[str, pd.DataFrame]:
    frames = {}
    for path in sorted(folder.glob("*.parquet")):
        df = pd.read_parquet(path)
        df["open_time"] = df["open_time"].dt.as_unit("ms").astype("int64")
        frames[path.stem] = df
    return frames


@pytest.mark.skipif(not GEN_DATA.exists(), reason="../shared/bench/gen_data.py is not beside")
def test_workload_small_set_reference_figures(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(GEN_DATA), "--size", "small", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    frames = _load_bench_folder(tmp_path / "small")
    assert len(frames) == 10
    parts = []
    for symbol, frame in frames.items():
        ev = generate_events(frame, SignalSpec(), symbol=symbol)
        parts.append(ev[(ev["t"] >= 50) & (ev["t"] <= len(frame) - 50)])
    events = pd.concat(parts, ignore_index=True)
    labels = label_events(frames, events, ExitSpec())  # taker 0.04% per side, single TP
    stats = label_stats(labels)
    assert stats.events == 1698
    assert stats.incomplete == 0
    assert stats.labels == {-1: 1088, 0: 28, 1: 582}
    assert stats.reasons == {"SL": 1088, "TIME": 28, "TP1": 582}
    # each label is the trade the workload describes: fill at the next open, WORKLOAD returns
    f = 0.0004
    x = labels["ret_net"].to_numpy()
    assert ((x > 0) == (labels["meta_label"] == 1).to_numpy()).all()
    long_tp = labels[(labels["side"] == 1) & (labels["reason"] == "TP1")].iloc[0]
    ev = events.loc[long_tp.name]
    frame = frames[ev["symbol"]]
    entry = frame["open"].iloc[ev["t"] + 1]
    assert long_tp["entry_price"] == entry
    exit_px = entry + 3 * ev["atr"]
    assert long_tp["ret_net"] == pytest.approx((exit_px / entry) * (1 - f) / (1 + f) - 1)


# ---------------------------------------------------------------------------- properties


@settings(max_examples=30, deadline=None)
@given(pick=st.integers(0, 10_000), seed=st.integers(0, 1_000), remove=st.booleans())
def test_labels_do_not_depend_on_bars_after_the_exit(
    candles: pd.DataFrame, events: pd.DataFrame, pick: int, seed: int, remove: bool
) -> None:
    base = label_events(candles, events, EXIT)
    done = base[base["complete"]]
    cut = int(done["exit_bar"].iloc[pick % len(done)]) + 1
    if remove:
        changed = candles.iloc[:cut]
    else:
        other = make_candles(len(candles), seed=seed)
        changed = pd.concat(
            [candles.iloc[:cut], other.iloc[cut:].assign(open_time=candles["open_time"][cut:])]
        )
        changed = changed.reset_index(drop=True)
    exit_bar = base["exit_bar"].to_numpy(dtype=np.int64, na_value=-1)
    keep = base["complete"].to_numpy(dtype=bool) & (exit_bar < cut)
    again = label_events(changed, events[keep], EXIT)
    pd.testing.assert_frame_equal(again, base[keep])


def test_labels_equal_the_kernel_trade(candles: pd.DataFrame, events: pd.DataFrame) -> None:
    labels = label_events(candles, events, EXIT)
    res = simulate_exits(
        candles["open"], candles["high"], candles["low"], events["t"] + 1, events["side"],
        events["sl_dist"], events["tp1_dist"], events["tp2_dist"], events["horizon_bars"], EXIT,
    )  # fmt: skip
    ok = res.complete
    assert ok.sum() >= len(events) - 2
    label = labels["label"].to_numpy(dtype=np.int64, na_value=-9)
    exit_bar = labels["exit_bar"].to_numpy(dtype=np.int64, na_value=-1)
    np.testing.assert_array_equal(label[ok], res.label[ok])
    np.testing.assert_array_equal(labels["ret_net"].to_numpy(), res.ret_net)
    np.testing.assert_array_equal(exit_bar[ok], res.exit_bar[ok])
    assert (label[~ok] == -9).all()
    assert set(labels["reason"]) <= {"SL", "TP1", "TP2", "BE", "TIME", "INCOMPLETE"}
    assert {"TP2", "BE", "SL", "TIME"} <= set(labels["reason"])


def test_label_columns_times_and_bars_held(candles: pd.DataFrame, events: pd.DataFrame) -> None:
    labels = label_events(candles, events, EXIT)
    assert tuple(labels.columns) == LABEL_COLUMNS
    assert labels.index.equals(events.index)
    times = candles["open_time"].to_numpy()
    done = labels[labels["complete"]]
    np.testing.assert_array_equal(done["t0_ms"], times[done["t"]])
    np.testing.assert_array_equal(done["entry_ms"].to_numpy(dtype=np.int64), times[done["t"] + 1])
    exit_bar = done["exit_bar"].to_numpy(dtype=np.int64)
    np.testing.assert_array_equal(done["exit_ms"].to_numpy(dtype=np.int64), times[exit_bar])
    time_exit = (done["reason"] == "TIME").to_numpy()
    t1 = done["t1_ms"].to_numpy(dtype=np.int64)
    np.testing.assert_array_equal(t1[time_exit], times[exit_bar[time_exit]])
    np.testing.assert_array_equal(t1[~time_exit], times[exit_bar[~time_exit]] + HOUR)
    held = done["bars_held"].to_numpy(dtype=np.int64)
    assert (held[time_exit] == SPEC.horizon_bars).all()
    assert ((held[~time_exit] >= 1) & (held[~time_exit] <= SPEC.horizon_bars)).all()
    assert str(labels["label"].dtype) == "Int8"


def test_incomplete_events_are_kept_and_marked(candles: pd.DataFrame) -> None:
    n = len(candles)
    events = pd.DataFrame(
        {
            "t": [n - 3, n - 1, 100],
            "side": [1, -1, 1],
            "sl_dist": [50.0, 50.0, 50.0],
            "tp1_dist": [60.0, 60.0, 60.0],
            "tp2_dist": [70.0, 70.0, 70.0],
            "horizon_bars": [24, 24, 2],
        }
    )
    labels = label_events(candles, events, ExitSpec())
    assert labels["complete"].tolist() == [False, False, True]
    assert labels["reason"].tolist() == ["INCOMPLETE", "INCOMPLETE", "TIME"]
    assert labels["label"].isna().tolist() == [True, True, False]
    assert labels["exit_ms"].isna().tolist() == [True, True, False]
    assert labels["entry_ms"].isna().tolist() == [False, True, False]  # no bar after the last
    assert labels["meta_label"].isna().tolist() == [True, True, False]
    assert np.isnan(labels["ret_net"].iloc[0])
    stats = label_stats(labels)
    assert (stats.events, stats.complete, stats.incomplete) == (3, 1, 2)
    assert stats.reasons["INCOMPLETE"] == 2


def test_several_symbols_equal_one_by_one() -> None:
    frames = {"AAA": make_candles(900, seed=1), "BBB": make_candles(700, seed=2)}
    parts = [generate_events(f, SPEC, symbol=s) for s, f in frames.items()]
    events = pd.concat(parts[::-1], ignore_index=True).sample(frac=1.0, random_state=3)
    together = label_events(frames, events, EXIT)
    for symbol, frame in frames.items():
        rows = events["symbol"] == symbol
        alone = label_events(frame, events[rows], EXIT, timeframe=Timeframe.H1)
        pd.testing.assert_frame_equal(together[rows], alone)


def test_meta_labels_and_stats(candles: pd.DataFrame, events: pd.DataFrame) -> None:
    labels = label_events(candles, events, EXIT)
    meta = meta_labels(labels)
    assert meta.name == "meta_label"
    pd.testing.assert_series_equal(meta, labels["meta_label"])
    done = labels["complete"].to_numpy(dtype=bool)
    assert (meta[done].to_numpy(dtype=int) == (labels["ret_net"][done] > 0)).all()
    stats = label_stats(labels)
    assert sum(stats.labels.values()) == stats.complete
    assert sum(stats.reasons.values()) == stats.events
    assert stats.mean_ret == pytest.approx(labels["ret_net"][done].mean())
    assert stats.meta_positive_rate == pytest.approx((labels["ret_net"][done] > 0).mean())
    as_dict = stats.to_dict()
    assert set(as_dict["labels"]) == {"-1", "0", "1"}  # type: ignore[arg-type]
    empty = label_stats(labels.iloc[:0])
    assert empty.events == 0
    assert np.isnan(empty.mean_ret)


def test_no_events() -> None:
    frames = {"AAA": make_candles(100)}
    events = generate_events(frames["AAA"].iloc[:10], SPEC, symbol="AAA")
    labels = label_events(frames, events, EXIT)
    assert labels.empty
    assert tuple(labels.columns) == LABEL_COLUMNS


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.drop(columns=["sl_dist"]), "missing column.s. sl_dist"),
        (lambda e: e.assign(t=e["t"].astype(float)), "column t has dtype float64"),
        (lambda e: e.assign(t=e["t"] + 10_000), "events row 0: t = .* is not a bar of AAA"),
        (lambda e: e.assign(symbol="ZZZ"), "symbol 'ZZZ' has no candles"),
        (lambda e: e.drop(columns=["symbol"]), "a 'symbol' column is needed"),
        (lambda e: e.assign(side=0), "event row 0: side = 0"),
    ],
)
def test_bad_events_are_one_line_errors(
    candles: pd.DataFrame, events: pd.DataFrame, change: object, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        label_events({"AAA": candles}, change(events), EXIT)  # type: ignore[operator]


def test_stats_and_meta_need_their_columns() -> None:
    with pytest.raises(DataError, match="ret_net"):
        meta_labels(pd.DataFrame({"x": [1]}))
    with pytest.raises(DataError, match="label, reason"):
        label_stats(pd.DataFrame({"ret_net": [0.1], "complete": [True]}))


@pytest.mark.shared_data
def test_real_data_labels(shared_data_dir: Path) -> None:
    c = pd.read_parquet(shared_data_dir / "ETHUSDT_spot_1h.parquet")
    events = generate_events(c, SignalSpec(), symbol="ETHUSDT")
    labels = label_events({"ETHUSDT": c}, events, ExitSpec())
    stats = label_stats(labels)
    open_t = labels.loc[~labels["complete"], "t"]
    assert (open_t >= len(c) - 49).all()  # only a signal near the end can be unresolved
    assert stats.complete > 1000
    done = labels[labels["complete"]]
    assert (done["exit_ms"] >= done["entry_ms"]).all()
    assert (done["entry_ms"] - done["t0_ms"] == HOUR).all()  # entries never after a gap
