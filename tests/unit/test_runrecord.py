"""Run records: hashes, content ids, atomic writes and one-line errors on bad run directories."""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import atra
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError
from atra.runrecord import (
    TRADE_COLUMNS,
    LoadedRun,
    RunLeg,
    annualization_sentence,
    code_version,
    hash_config,
    hash_frames,
    leg_from_backtest,
    normalize_trades,
    ordered_legs,
    read_run,
    trades_sha256,
    write_run,
)

T0_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC
INITIAL = 10_000.0
REASONS = ("SL", "TP1", "TP2", "TIME")


# --------------------------------------------------------------------------------------------
# a small deterministic backtest: hand-made trades, equity stepping by each trade's P&L


def fake_trades(
    n: int, tf: Timeframe, keep: Callable[[int], bool] = lambda i: True
) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for i in range(n):
        if not keep(i):
            continue
        entry_bar = 5 + 20 * i
        exit_bar = entry_bar + 3 + i % 5
        side = 1 if i % 2 == 0 else -1
        entry = 100.0 + i * 1.5
        move = ((i * 7) % 11 - 4) / 100.0
        exit_ = entry * (1.0 + side * move)
        qty = 10.0
        fees = qty * (entry + exit_) * 0.0004
        slip = qty * (entry + exit_) * 0.0001
        funding = 0.05 * (i % 3 - 1)
        rows.append(
            {
                "symbol": "BTCUSDT" if i % 3 else "ETHUSDT",
                "side": side,
                "entry_time_ms": T0_MS + entry_bar * tf.ms,
                "exit_time_ms": T0_MS + exit_bar * tf.ms,
                "entry_price": entry,
                "exit_price": exit_,
                "quantity": qty,
                "pnl": side * qty * (exit_ - entry) - fees - slip - funding,
                "fees": fees,
                "slippage": slip,
                "funding": funding,
                "reason": REASONS[i % 4],
                "exit_bar": exit_bar,
            }
        )
    return pd.DataFrame(rows)


def step_equity(trades: pd.DataFrame | None, n_bars: int, tf: Timeframe) -> pd.Series:
    times = T0_MS + np.arange(n_bars, dtype=np.int64) * tf.ms
    eq = np.full(n_bars, INITIAL)
    if trades is not None:
        for bar, pnl in zip(trades["exit_bar"], trades["pnl"], strict=True):
            eq[int(bar) :] += pnl
    return pd.Series(eq, index=times)


def buy_hold_equity(n_bars: int, tf: Timeframe) -> pd.Series:
    k = np.arange(n_bars)
    price = 100.0 * np.exp(0.0004 * k + 0.03 * np.sin(k / 37.0))
    return pd.Series(INITIAL * price / price[0], index=T0_MS + k.astype(np.int64) * tf.ms)


def fake_legs(tf: Timeframe = Timeframe.H1, n: int = 60, n_bars: int = 1300) -> list[RunLeg]:
    primary = fake_trades(n, tf)
    filtered = fake_trades(n, tf, keep=lambda i: i % 3 != 0)
    return [
        RunLeg("primary", step_equity(primary, n_bars, tf), primary),
        RunLeg("filtered", step_equity(filtered, n_bars, tf), filtered),
        RunLeg("buy_hold", buy_hold_equity(n_bars, tf), None),
    ]


CONFIG: dict[str, Any] = {"strategy": {"lookback": 24, "threshold": 0.55}, "symbols": ["BTC"]}


def write(root: Path, legs: list[RunLeg] | None = None, **kw: Any) -> Path:
    args: dict[str, Any] = {
        "legs": fake_legs() if legs is None else legs,
        "timeframe": Timeframe.H1,
        "config": CONFIG,
        "data_hash": "d" * 64,
        "seed": 7,
        "data_label": "synthetic",
    }
    args.update(kw)
    return write_run(root, **args)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("runs"), n_trials=5)


@pytest.fixture(scope="module")
def loaded(run_dir: Path) -> LoadedRun:
    return read_run(run_dir)


def one_line_error(exc: pytest.ExceptionInfo[BaseException], *fragments: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg
    return msg


# --------------------------------------------------------------------------------------------
# hashes


def test_hash_config_is_canonical() -> None:
    a = {"b": 1, "a": {"y": [1, 2], "x": 0.5}}
    b = {"a": {"x": 0.5, "y": [1, 2]}, "b": 1}
    assert hash_config(a) == hash_config(b)
    assert hash_config(a) != hash_config({**a, "b": 2})
    assert len(hash_config(a)) == 64


def test_hash_config_accepts_common_values() -> None:
    cfg = {
        "path": Path("data"),
        "n": np.int64(3),
        "x": np.float64(0.25),
        "tags": {"b", "a"},
        "pair": (1, 2),
        "tf": Timeframe.H1,
        "market": Market.PERP,
    }
    same = {
        "path": "data",
        "n": 3,
        "x": 0.25,
        "tags": ["a", "b"],
        "pair": [1, 2],
        "tf": "1h",
        "market": "perp",
    }
    assert hash_config(cfg) == hash_config(same)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"x": math.nan}, "non-finite"),
        ({"x": object()}, "type object"),
        ({"x": {(1, 2): 3}}, "keys must be"),
    ],
)
def test_hash_config_rejects_unhashable(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        hash_config(config)
    one_line_error(exc, fragment)


def candles(n: int = 5, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "open_time": T0_MS + np.arange(n, dtype=np.int64) * 3_600_000,
            "close": np.linspace(100.0, 110.0, n) + shift,
            "symbol": ["BTCUSDT"] * n,
        }
    )


def test_hash_frames_is_content_hash() -> None:
    a, b = candles(), candles(shift=1.0)
    assert hash_frames([a, b]) == hash_frames([candles(), candles(shift=1.0)])
    assert hash_frames([a, b]) != hash_frames([b, a])  # order is part of the input
    assert hash_frames([a]) != hash_frames([candles(shift=1e-12)])
    assert hash_frames([a]) != hash_frames([a.rename(columns={"close": "Close"})])
    assert hash_frames([a]) == hash_frames([a.set_index("open_time", drop=False)])  # index ignored
    changed = a.copy()
    changed.loc[2, "symbol"] = "ETHUSDT"
    assert hash_frames([a]) != hash_frames([changed])
    with_none = a.astype({"symbol": object})
    with_none.loc[0, "symbol"] = None
    assert hash_frames([with_none]) != hash_frames([a])
    assert hash_frames([]) != hash_frames([a.iloc[:0]])
    nullable = a.assign(n=pd.array([1, None, 3, 4, 5], dtype="Int64"))
    assert hash_frames([nullable]) == hash_frames([nullable.copy()])
    assert hash_frames([nullable]) != hash_frames([nullable.assign(n=pd.array([1, 2, 3, 4, 5]))])
    aware = a.assign(ts=pd.to_datetime(a["open_time"], unit="ms", utc=True))
    assert hash_frames([aware]) == hash_frames([aware.copy()])
    cat = a.assign(symbol=pd.Categorical(a["symbol"]))
    assert hash_frames([cat]) == hash_frames([cat.copy()])


def test_trades_hash_ignores_row_order_and_extra_columns() -> None:
    tr = fake_trades(20, Timeframe.H1)
    shuffled = tr.sample(frac=1.0, random_state=3)
    assert trades_sha256(tr) == trades_sha256(shuffled)
    assert trades_sha256(tr) == trades_sha256(tr.drop(columns=["quantity", "exit_bar"]))
    assert trades_sha256(tr) == trades_sha256(tr.assign(note="x"))


def test_trades_hash_canonicalises_names_codes_and_zero() -> None:
    tr = fake_trades(8, Timeframe.H1)
    renamed = tr.rename(columns={"entry_time_ms": "entry_ms", "exit_time_ms": "exit_ms"})
    assert trades_sha256(tr) == trades_sha256(renamed)
    codes = tr.assign(reason=tr["reason"].map({"SL": 1, "TP1": 2, "TP2": 3, "TIME": 4}))
    assert trades_sha256(tr) == trades_sha256(codes)
    words = tr.assign(side=tr["side"].map({1: "long", -1: "SHORT"}))
    assert trades_sha256(tr) == trades_sha256(words)
    cat = tr.assign(reason=pd.Categorical(tr["reason"]))
    assert trades_sha256(tr) == trades_sha256(cat)
    zero = tr.assign(funding=0.0)
    assert trades_sha256(zero) == trades_sha256(tr.assign(funding=-0.0))


def test_trades_hash_sees_every_change() -> None:
    tr = fake_trades(8, Timeframe.H1)
    base = trades_sha256(tr)
    for col in ("entry_price", "exit_price", "pnl", "fees", "slippage", "funding"):
        changed = tr.copy()
        changed.loc[3, col] = changed.loc[3, col] * (1 + 1e-15) + 1e-300
        assert trades_sha256(changed) != base, col
    assert trades_sha256(tr.assign(side=-tr["side"])) != base
    assert trades_sha256(tr.assign(reason="SL")) != base
    assert trades_sha256(tr.iloc[1:]) != base
    assert trades_sha256(tr.assign(exit_time_ms=tr["exit_time_ms"] + 1)) != base


@pytest.mark.parametrize(
    ("mutate", "fragments"),
    [
        (lambda t: t.drop(columns=["pnl", "fees"]), ("missing trade column(s) pnl, fees",)),
        (lambda t: t.assign(pnl=[math.nan] + [1.0] * (len(t) - 1)), ("pnl at row 0", "finite")),
        (lambda t: t.assign(fees=["x"] * len(t)), ("fees at row 0",)),
        (lambda t: t.assign(side=0), ("side 0",)),
        (lambda t: t.assign(side="flat"), ("side 'flat'",)),
        (lambda t: t.assign(entry_time_ms=None), ("entry_ms at row 0 is missing",)),
    ],
)
def test_bad_trades_are_one_line_data_errors(
    mutate: Callable[[pd.DataFrame], pd.DataFrame], fragments: tuple[str, ...]
) -> None:
    with pytest.raises(DataError) as exc:
        trades_sha256(mutate(fake_trades(4, Timeframe.H1)))
    one_line_error(exc, *fragments)


def test_normalize_trades_orders_columns() -> None:
    frame = normalize_trades(fake_trades(4, Timeframe.H1))
    assert tuple(frame.columns[: len(TRADE_COLUMNS)]) == TRADE_COLUMNS
    assert list(frame.columns[len(TRADE_COLUMNS) :]) == ["quantity", "exit_bar"]
    assert frame["entry_ms"].dtype == np.int64


_money = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(
    pnls=st.lists(_money, min_size=1, max_size=12),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_trades_hash_survives_shuffle_and_csv_round_trip(
    pnls: list[float], seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    n = len(pnls)
    tr = fake_trades(n, Timeframe.H1).assign(
        pnl=pnls, fees=[abs(p) / 7.0 for p in pnls], symbol=[f"S{i % 2}" for i in range(n)]
    )
    expected = trades_sha256(tr)
    assert trades_sha256(tr.sample(frac=1.0, random_state=seed % 1000)) == expected
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    normalize_trades(tr).to_csv(path, index=False)
    back = pd.read_csv(path, dtype={"symbol": str, "reason": str})
    assert trades_sha256(back) == expected


# --------------------------------------------------------------------------------------------
# code version


def test_code_version_outside_git_is_the_package_version(tmp_path: Path) -> None:
    assert code_version(tmp_path) == atra.__version__


def test_code_version_in_a_git_checkout(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    (tmp_path / "a.txt").write_text("1\n")
    git("init", "-q")
    git("add", "a.txt")
    git("commit", "-q", "-m", "init")
    head = git("rev-parse", "HEAD")
    assert code_version(tmp_path) == f"{atra.__version__}+g{head}"
    (tmp_path / "b.txt").write_text("untracked files do not make a checkout dirty\n")
    assert code_version(tmp_path) == f"{atra.__version__}+g{head}"
    (tmp_path / "a.txt").write_text("2\n")
    assert code_version(tmp_path) == f"{atra.__version__}+g{head}+dirty"


def test_code_version_of_the_package_names_the_version() -> None:
    assert code_version().startswith(atra.__version__)


def test_code_version_without_a_usable_directory(tmp_path: Path) -> None:
    assert code_version(tmp_path / "missing") == atra.__version__


def test_flat_equity_has_no_estimator_variance(tmp_path: Path) -> None:
    flat = pd.Series(INITIAL, index=T0_MS + np.arange(50, dtype=np.int64) * 3_600_000)
    run = read_run(write(tmp_path, legs=[RunLeg("buy_hold", flat, None)], n_trials=3))
    leg = run.metrics["legs"]["buy_hold"]
    assert leg["trials_sharpe_variance_source"] == "sharpe_estimator_variance"
    assert leg["returns"]["trials_sharpe_variance"] == 0.0
    assert leg["returns"]["sharpe"] is None
    assert run.record.trades_sha256 == {}


# --------------------------------------------------------------------------------------------
# write_run / read_run


def test_write_run_layout(run_dir: Path, loaded: LoadedRun) -> None:
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == [
        "equity.csv",
        "metrics.json",
        "run.json",
        "trades_filtered.csv",
        "trades_primary.csv",
    ]
    rec = loaded.record
    assert rec.run_id == run_dir.name
    assert len(rec.run_id) == 12
    assert rec.config_hash == hash_config(CONFIG)
    assert rec.data_hash == "d" * 64
    assert rec.seed == 7
    assert rec.timeframe == "1h"
    assert rec.data_label == "synthetic"
    assert rec.code_version == code_version()
    assert rec.annualization == "Sharpe annualised x sqrt(8760) (1h bars, 365-day year)"
    assert set(rec.trades_sha256) == {"primary", "filtered"}
    legs = fake_legs()
    assert rec.trades_sha256["primary"] == trades_sha256(legs[0].trades)  # type: ignore[arg-type]
    assert list(loaded.equity.columns) == ["open_time_ms", "primary", "filtered", "buy_hold"]
    np.testing.assert_array_equal(loaded.equity["primary"], legs[0].equity.to_numpy())
    np.testing.assert_array_equal(loaded.equity["open_time_ms"], legs[0].equity.index)
    assert loaded.leg_names == ["primary", "filtered", "buy_hold"]
    assert loaded.timeframe is Timeframe.H1
    assert loaded.oos_predictions is None
    run_json = json.loads((run_dir / "run.json").read_text())
    assert run_json["schema_version"] == 1


def test_metrics_are_annualised_with_psr_and_dsr(loaded: LoadedRun) -> None:
    m = loaded.metrics
    assert m["annualization_factor"] == pytest.approx(math.sqrt(8760))
    assert m["bars_per_year"] == 8760
    assert m["n_trials"] == 5
    primary = m["legs"]["primary"]
    assert primary["returns"]["annualization_factor"] == pytest.approx(math.sqrt(8760))
    assert primary["returns"]["n_trials"] == 5
    assert primary["trials_sharpe_variance_source"] == "sharpe_estimator_variance"
    assert primary["returns"]["trials_sharpe_variance"] > 0.0
    assert primary["returns"]["expected_max_sharpe"] > 0.0
    assert primary["returns"]["dsr"] < primary["returns"]["psr"]
    assert primary["trades"]["n_trades"] == 60
    assert m["legs"]["filtered"]["trades"]["n_trades"] == 40
    bh = m["legs"]["buy_hold"]
    assert bh["has_trades"] is False
    assert bh["exposure"] is None
    assert bh["trades_per_day"] is None
    tr = fake_trades(60, Timeframe.H1)
    costs = primary["costs"]
    assert costs["paid"]["fees"] == pytest.approx(tr["fees"].sum())
    assert costs["paid"]["funding"] == pytest.approx(tr["funding"].sum())
    years = primary["returns"]["years"]
    assert costs["per_year_fraction"]["fees"] == pytest.approx(tr["fees"].sum() / INITIAL / years)
    assert costs["per_year_percent"]["total"].endswith("%")
    assert "initial equity per year" in costs["per_year_unit"]
    assert 0.0 < primary["exposure"] < 1.0


def test_writing_the_same_run_twice_is_a_no_op(tmp_path: Path) -> None:
    first = write(tmp_path)
    before = (first / "run.json").read_text()
    second = write(tmp_path)
    assert second == first
    assert (first / "run.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp dirs left


def test_different_trades_give_a_different_hash_and_id(tmp_path: Path) -> None:
    first = read_run(write(tmp_path))
    legs = fake_legs()
    changed = legs[0].trades.copy()  # type: ignore[union-attr]
    changed.loc[0, "pnl"] += 0.01
    legs[0] = RunLeg("primary", legs[0].equity, changed)
    second = read_run(write(tmp_path, legs=legs))
    assert second.record.run_id != first.record.run_id
    assert second.record.trades_sha256["primary"] != first.record.trades_sha256["primary"]
    assert second.record.trades_sha256["filtered"] == first.record.trades_sha256["filtered"]


@pytest.mark.parametrize(
    "change",
    [{"seed": 8}, {"data_hash": "e" * 64}, {"config": {"x": 1}}, {"data_label": "real"},
     {"n_trials": 2}, {"timeframe": Timeframe.H4}],
)  # fmt: skip
def test_every_identity_field_changes_the_id(tmp_path: Path, change: dict[str, Any]) -> None:
    base = write(tmp_path / "a")
    assert write(tmp_path / "b", **change).name != base.name


def test_oos_predictions_notes_and_given_variance(tmp_path: Path) -> None:
    oos = pd.DataFrame({"open_time": [T0_MS, T0_MS + 3_600_000], "p_take": [0.6, 0.4]})
    path = write(
        tmp_path,
        oos_predictions=oos,
        notes={"folds": 4, "path": Path("x")},
        n_trials=3,
        trials_sharpe_variance=0.5,
    )
    run = read_run(path)
    assert run.oos_predictions is not None
    pd.testing.assert_frame_equal(run.oos_predictions, oos)
    assert run.record.notes == {"folds": 4, "path": "x"}
    primary = run.metrics["legs"]["primary"]
    assert primary["trials_sharpe_variance_source"] == "given"
    assert primary["returns"]["trials_sharpe_variance"] == 0.5


def test_notes_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        write(tmp_path, notes={"x": math.inf})
    one_line_error(exc, "notes:", "non-finite")


def test_a_leg_with_no_trades_at_all(tmp_path: Path) -> None:
    legs = fake_legs(n=6, n_bars=200)
    empty = legs[0].trades.iloc[:0]  # type: ignore[union-attr]
    legs[0] = RunLeg("primary", step_equity(None, 200, Timeframe.H1), empty)
    run = read_run(write(tmp_path, legs=legs))
    assert run.trades["primary"].empty
    assert run.metrics["legs"]["primary"]["trades"]["n_trades"] == 0
    assert run.metrics["legs"]["primary"]["exposure"] == 0.0
    assert run.record.trades_sha256["primary"] == trades_sha256(empty)


def test_daily_run_is_annualised_with_365(tmp_path: Path) -> None:
    tf = Timeframe.D1
    run = read_run(write(tmp_path, legs=fake_legs(tf, n=10, n_bars=260), timeframe=tf))
    assert run.record.annualization == "Sharpe annualised x sqrt(365) (1d bars, 365-day year)"
    assert annualization_sentence(tf) == run.record.annualization
    assert run.metrics["legs"]["primary"]["returns"]["annualization_factor"] == pytest.approx(
        math.sqrt(365)
    )
    assert run.metrics["legs"]["primary"]["trials_sharpe_variance_source"] == "single_trial"


def test_ordered_legs() -> None:
    assert ordered_legs(["zeta", "buy_hold", "primary", "alpha"]) == [
        "primary",
        "buy_hold",
        "zeta",
        "alpha",
    ]


def _legs_with(index: int, **kw: Any) -> list[RunLeg]:
    legs = fake_legs(n=6, n_bars=200)
    leg = legs[index]
    legs[index] = RunLeg(kw.get("name", leg.name), kw.get("equity", leg.equity),
                         kw.get("trades", leg.trades))  # fmt: skip
    return legs


def _eq(values: list[float], times: list[Any] | None = None) -> pd.Series:
    index = times if times is not None else [T0_MS + i for i in range(len(values))]
    return pd.Series(values, index=index)


@pytest.mark.parametrize(
    ("legs", "kw", "error", "fragments"),
    [
        (None, {"data_label": "fake"}, ConfigError, ("data_label='fake'",)),
        ([], {}, ConfigError, ("at least one leg",)),
        (_legs_with(1, name="primary"), {}, ConfigError, ("unique",)),
        (None, {"n_trials": 0}, ConfigError, ("n_trials=0",)),
        (_legs_with(0, name="a/b"), {}, ConfigError, ("leg name 'a/b'",)),
        (_legs_with(2, equity=_eq([1.0])), {}, DataError, ("buy_hold", "1 point(s)")),
        (_legs_with(2, equity=_eq([1.0, -2.0])), {}, DataError, ("row 1", "-2.0")),
        (_legs_with(2, equity=_eq([1.0, 2.0], [5, 5])), {}, DataError, ("increasing at row 1",)),
        (_legs_with(2, equity=_eq([1.0, 2.0], ["a", "b"])), {}, DataError, ("int64",)),
        (_legs_with(2, equity=_eq([1.0, 2.0], [1.5, 2.5])), {}, DataError, ("dtype float64",)),
        (_legs_with(2, equity=_eq([1.0, 2.0, 3.0])), {}, DataError, ("index differs",)),
        (_legs_with(0, trades=pd.DataFrame({"symbol": ["X"]})), {}, DataError, ("leg primary",)),
    ],
)
def test_write_run_rejects_bad_input(
    tmp_path: Path,
    legs: list[RunLeg] | None,
    kw: dict[str, Any],
    error: type[Exception],
    fragments: tuple[str, ...],
) -> None:
    with pytest.raises(error) as exc:
        write(tmp_path, legs=legs, **kw)
    one_line_error(exc, *fragments)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_write_run_refuses_to_reuse_a_corrupt_directory(tmp_path: Path) -> None:
    path = write(tmp_path)
    (path / "run.json").write_text("{not json")
    with pytest.raises(DataError) as exc:
        write(tmp_path)
    one_line_error(exc, "run.json", "corrupt JSON")


def test_write_run_refuses_a_directory_with_another_id(tmp_path: Path) -> None:
    path = write(tmp_path)
    raw = json.loads((path / "run.json").read_text())
    (path / "run.json").write_text(json.dumps({**raw, "run_id": "000000000000"}))
    with pytest.raises(DataError) as exc:
        write(tmp_path)
    one_line_error(exc, "does not match its directory")


# --------------------------------------------------------------------------------------------
# read_run errors: one line naming the file


@pytest.fixture
def fresh_run(tmp_path: Path) -> Path:
    return write(tmp_path, legs=fake_legs(n=6, n_bars=200))


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


CORRUPTIONS: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    ("no run.json", lambda p: (p / "run.json").unlink(), ("run.json", "missing")),
    ("bad json", lambda p: (p / "run.json").write_text("{"), ("run.json", "corrupt JSON")),
    ("binary", lambda p: (p / "run.json").write_bytes(b"\xff\xfe\x00"), ("run.json", "corrupt")),
    ("list", lambda p: (p / "run.json").write_text("[]"), ("run.json", "JSON object")),
    (
        "missing key",
        lambda p: _edit_json(p / "run.json", lambda d: {k: v for k, v in d.items() if k != "seed"}),
        ("run.json", "missing key(s) seed"),
    ),
    (
        "bad label",
        lambda p: _edit_json(p / "run.json", lambda d: {**d, "data_label": "maybe"}),
        ("run.json", "data_label 'maybe'"),
    ),
    (
        "bad timeframe",
        lambda p: _edit_json(p / "run.json", lambda d: {**d, "timeframe": "7h"}),
        ("run.json", "unknown timeframe '7h'"),
    ),
    (
        "notes not object",
        lambda p: _edit_json(p / "run.json", lambda d: {**d, "notes": []}),
        ("run.json", "JSON objects"),
    ),
    ("no metrics", lambda p: (p / "metrics.json").unlink(), ("metrics.json", "missing")),
    (
        "no legs",
        lambda p: _edit_json(p / "metrics.json", lambda d: {**d, "legs": {}}),
        ("metrics.json", "'legs'"),
    ),
    ("no equity", lambda p: (p / "equity.csv").unlink(), ("equity.csv", "missing")),
    ("empty equity", lambda p: (p / "equity.csv").write_text(""), ("equity.csv", "corrupt CSV")),
    (
        "equity columns",
        lambda p: (p / "equity.csv").write_text("a,b\n1,2\n3,4\n"),
        ("equity.csv", "columns ['a', 'b']"),
    ),
    (
        "equity hole",
        lambda p: (p / "equity.csv").write_text(
            "open_time_ms,primary,filtered,buy_hold\n1,2,3,\n2,2,3,4\n"
        ),
        ("equity.csv", "complete rows"),
    ),
    ("no trades", lambda p: (p / "trades_primary.csv").unlink(), ("trades_primary.csv", "missing")),
    (
        "trades lost a column",
        lambda p: (
            pd.read_csv(p / "trades_primary.csv")
            .drop(columns=["pnl"])
            .to_csv(p / "trades_primary.csv", index=False)
        ),
        ("trades_primary.csv", "missing trade column(s) pnl"),
    ),
    (
        "trades tampered",
        lambda p: (
            pd.read_csv(p / "trades_filtered.csv")
            .assign(pnl=lambda t: t["pnl"] + 1.0)
            .to_csv(p / "trades_filtered.csv", index=False)
        ),
        ("trades_filtered.csv", "does not match run.json"),
    ),
    (
        "oos corrupt",
        lambda p: (p / "oos_predictions.csv").write_bytes(b'"unterminated\n'),
        ("oos_predictions.csv", "corrupt CSV"),
    ),
]


@pytest.mark.parametrize(
    ("corrupt", "fragments"), [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS]
)
def test_read_run_of_a_broken_directory_is_one_line(
    fresh_run: Path, corrupt: Callable[[Path], None], fragments: tuple[str, ...]
) -> None:
    corrupt(fresh_run)
    with pytest.raises(DataError) as exc:
        read_run(fresh_run)
    one_line_error(exc, *fragments)


def test_read_run_of_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        read_run(tmp_path / "nope")
    one_line_error(exc, "nope", "not a run directory")


# --------------------------------------------------------------------------------------------
# a real portfolio backtest, recorded


def _walk(n: int, seed: int) -> pd.DataFrame:
    close = 100.0 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0.0, 0.01, n)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    return pd.DataFrame(
        {
            "open_time": T0_MS + np.arange(n, dtype=np.int64) * 3_600_000,
            "open": open_,
            "high": np.maximum(open_, close) * 1.004,
            "low": np.minimum(open_, close) * 0.996,
            "close": close,
            "volume": np.ones(n),
        }
    )


def test_a_real_backtest_round_trips(tmp_path: Path) -> None:
    from atra.core.backtest import run_backtest

    candles_by_symbol = {"BTCUSDT": _walk(400, 1), "ETHUSDT": _walk(400, 2)}
    events = pd.DataFrame(
        {
            "symbol": ["BTCUSDT", "ETHUSDT"] * 15,
            "t": np.repeat(np.arange(15) * 25 + 5, 2),
            "side": [1, -1] * 15,
            "sl_dist": 1.5,
            "tp1_dist": 1.5,
            "tp2_dist": 3.0,
            "horizon_bars": 12,
        }
    )
    result = run_backtest(candles_by_symbol, events)
    assert len(result.trades) > 0
    leg = leg_from_backtest("primary", result)
    assert leg.equity.iloc[0] == result.initial_equity
    assert leg.equity.index[1] == result.open_time_ms[0]
    assert leg.equity.index[0] == result.open_time_ms[0] - Timeframe.H1.ms
    run = read_run(write(tmp_path, legs=[leg]))
    assert run.record.trades_sha256["primary"] == trades_sha256(result.trades)
    expected = result.stats()
    got = run.metrics["legs"]["primary"]
    assert got["returns"]["sharpe"] == pytest.approx(expected.returns.sharpe, rel=1e-12)
    assert got["trades"]["fees_paid"] == pytest.approx(expected.trades.fees_paid, rel=1e-12)
    assert got["trades"]["n_trades"] == len(result.trades)
    assert set(run.trades["primary"]["reason"]) <= {"SL", "TP1", "TP2", "TIME", "BE", "END"}
    # the same backtest again is the same run
    again = run_backtest(candles_by_symbol, events)
    assert write(tmp_path, legs=[leg_from_backtest("primary", again)]) == run.path


def test_leg_from_an_empty_backtest() -> None:
    class Empty:
        trades = pd.DataFrame()
        open_time_ms = np.zeros(0, np.int64)
        equity = np.zeros(0)
        initial_equity = 1.0
        timeframe = Timeframe.H1

    with pytest.raises(DataError) as exc:
        leg_from_backtest("primary", Empty())
    one_line_error(exc, "no bars")
