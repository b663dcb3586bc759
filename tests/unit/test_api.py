"""The notebook API (``import atra``): light lazy names, loading candles from what people have,
and the research steps as thin calls of the pipeline (the same numbers as the evaluation)."""

from __future__ import annotations

import ast
import datetime as dt
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import atra
from atra.adapters.store import CandleStore, DatasetKey
from atra.api.candles import Candles, time_ms
from atra.config import AtraConfig
from atra.core.signals.events import EVENT_COLUMNS
from atra.core.synthetic.market import SyntheticMarket
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError
from atra.research.pipeline import settings_from_config

ROOT_INIT = Path(atra.__file__)
DAY_MS = 86_400_000
H = 3_600_000
HEAVY = ("lightgbm", "sklearn", "numba", "pandas", "pyarrow", "atra.api", "atra.research")


# ---- the package root ---------------------------------------------------------------------


def test_import_atra_stays_light() -> None:
    code = f"import sys, atra; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_is_a_plain_string_assignment() -> None:
    tree = ast.parse(ROOT_INIT.read_text(encoding="utf-8"))
    found = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
        and isinstance(node.value, ast.Constant)
    ]
    assert found == [atra.__version__]


def test_every_public_name_resolves_and_is_typed() -> None:
    lazy: dict[str, str] = atra._LAZY
    assert set(atra.__all__) == {"__version__", *lazy}
    assert dir(atra) == sorted(atra.__all__)
    for name, module in lazy.items():
        value = getattr(atra, name)
        assert sys.modules[module].__dict__[name] is value
    # the TYPE_CHECKING imports name the same modules, so type checkers see what runs
    tree = ast.parse(ROOT_INIT.read_text(encoding="utf-8"))
    block = next(n for n in tree.body if isinstance(n, ast.If))
    typed = {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == lazy
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = atra.nope


# ---- loading candles ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return atra.synthetic_market(("BTCUSDT", "ETHUSDT"), bars=24 * 330, seed=5)


@pytest.fixture(scope="module")
def spot(market: SyntheticMarket) -> list[Candles]:
    return [
        atra.load_candles(market.spot[s], s, market="spot", exchange="synthetic")
        for s in market.spot
    ]


def test_frames_in_either_shape_give_the_same_candles(market: SyntheticMarket) -> None:
    ours = atra.load_candles(market.spot["BTCUSDT"], "BTCUSDT", market="spot")
    theirs = ours.to_pandas().rename(columns=str.upper)
    theirs["ADJ CLOSE"] = 1.0
    again = atra.load_candles(theirs, "BTC/USDT")
    pd.testing.assert_frame_equal(again.frame, ours.frame)
    assert (again.symbol, again.market, again.timeframe) == ("BTCUSDT", Market.SPOT, Timeframe.H1)
    assert again.ignored_columns == ("ADJ CLOSE",)
    assert "BTCUSDT spot 1h: 7920 bars" in repr(again)


def test_perp_with_funding(market: SyntheticMarket) -> None:
    perp = atra.load_candles(
        market.perp["ETHUSDT"], "ETH/USDT:USDT", funding=market.funding["ETHUSDT"]
    )
    assert (perp.symbol, perp.market) == ("ETHUSDT", Market.PERP)
    assert perp.funding is not None
    pd.testing.assert_frame_equal(perp.funding, market.funding["ETHUSDT"])
    with pytest.raises(ConfigError, match="funding is paid on perpetuals only"):
        atra.load_candles(market.spot["ETHUSDT"], "ETH/USDT", funding=market.funding["ETHUSDT"])


@pytest.mark.parametrize(
    ("symbol", "market_name", "error", "says"),
    [
        (None, None, ConfigError, "give the symbol"),
        ("BTCUSDT", None, ConfigError, "give market='spot' or 'perp'"),
        ("BTC/USD:BTC", None, ConfigError, "coin-margined"),
        ("BTC/USDT:USDT-240329", None, ConfigError, "dated futures"),
    ],
)
def test_symbols_that_cannot_load(
    market: SyntheticMarket, symbol: str | None, market_name: str | None, error: type, says: str
) -> None:
    with pytest.raises(error, match=says):
        atra.load_candles(market.spot["BTCUSDT"], symbol, market=market_name)


def test_range_selection(market: SyntheticMarket) -> None:
    frame = market.spot["BTCUSDT"]
    start = int(frame["open_time"].iloc[100])
    end = dt.datetime.fromtimestamp(int(frame["open_time"].iloc[200]) / 1000, tz=dt.UTC)
    got = atra.load_candles(frame, "BTC/USDT", start=start, end=end)
    assert got.frame["open_time"].tolist() == frame["open_time"].iloc[100:200].tolist()
    assert got.report.rows == 100
    assert got.report.first_ms == start
    with pytest.raises(ConfigError, match="has no time zone"):
        atra.load_candles(frame, "BTC/USDT", start=dt.datetime(2022, 1, 2))
    with pytest.raises(ConfigError, match="empty range"):
        atra.load_candles(frame, "BTC/USDT", start="2022-02-01", end="2022-01-01")
    with pytest.raises(DataError, match=r"no bars in the range \[2030-01-01T00:00:00Z, end\)"):
        atra.load_candles(frame, "BTC/USDT", start="2030-01-01")


def test_parquet_files(market: SyntheticMarket, tmp_path: Path) -> None:
    named = tmp_path / "BTCUSDT_spot_1h.parquet"
    market.spot["BTCUSDT"].to_parquet(named)
    got = atra.load_candles(named)
    assert (got.symbol, got.market, got.timeframe) == ("BTCUSDT", Market.SPOT, Timeframe.H1)
    pd.testing.assert_frame_equal(got.frame, market.spot["BTCUSDT"])
    with pytest.raises(ConfigError, match="the file name says BTCUSDT spot, but ETHUSDT spot"):
        atra.load_candles(named, "ETH/USDT")
    with pytest.raises(ConfigError, match="the file name says 1h, but 4h"):
        atra.load_candles(named, timeframe="4h")
    # a pandas frame saved with its DatetimeIndex, under any name
    own = tmp_path / "my_btc_bars.parquet"
    got.to_pandas().rename(columns=str.title).to_parquet(own)
    pd.testing.assert_frame_equal(atra.load_candles(own, "BTC/USDT").frame, got.frame)
    with pytest.raises(ConfigError, match="give the symbol"):
        atra.load_candles(own)
    broken = tmp_path / "ETHUSDT_spot_1h.parquet"
    broken.write_bytes(named.read_bytes()[:200])
    with pytest.raises(DataError, match="not a readable Parquet file"):
        atra.load_candles(broken)
    (tmp_path / "BTCUSDT_spot_1h.parquet.CHECKSUM").write_text(f"{'0' * 64}  {named.name}\n")
    with pytest.raises(DataError, match="sha256 checksum mismatch"):
        atra.load_candles(named)
    with pytest.raises(DataError, match="no such file or store directory"):
        atra.load_candles(tmp_path / "missing.parquet", "BTC/USDT")
    (tmp_path / "x.csv").write_text("open_time\n")
    with pytest.raises(DataError, match=r"expected a \.parquet file or a store directory"):
        atra.load_candles(tmp_path / "x.csv", "BTC/USDT")


def test_store_directory(market: SyntheticMarket, tmp_path: Path) -> None:
    store = CandleStore(tmp_path)
    store.write_candles(
        DatasetKey("synthetic", Market.PERP, "BTCUSDT", Timeframe.H1), market.perp["BTCUSDT"]
    )
    store.write_funding("synthetic", "BTCUSDT", market.funding["BTCUSDT"])
    end = int(market.perp["BTCUSDT"]["open_time"].iloc[500])
    got = atra.load_candles(
        tmp_path, "BTC/USDT:USDT", timeframe="1h", exchange="synthetic", end=end
    )
    assert (got.symbol, got.market, len(got)) == ("BTCUSDT", Market.PERP, 500)
    assert got.funding is not None
    assert int(got.funding["funding_time"].max()) < end
    with pytest.raises(ConfigError, match="give the timeframe"):
        atra.load_candles(tmp_path, "BTC/USDT:USDT", exchange="synthetic")
    with pytest.raises(DataError, match="no candles synthetic/spot/BTCUSDT/1h in the store"):
        atra.load_candles(tmp_path, "BTC/USDT", timeframe="1h", exchange="synthetic")
    with pytest.raises(ConfigError, match="funding is read from the store"):
        atra.load_candles(
            tmp_path, "BTC/USDT:USDT", timeframe="1h", exchange="synthetic",
            funding=market.funding["BTCUSDT"],
        )  # fmt: skip


@pytest.mark.shared_data
def test_real_binance_files(shared_data_dir: Path) -> None:
    spot = atra.load_candles(shared_data_dir / "BTCUSDT_spot_1h.parquet")
    assert (spot.report.gap_count, spot.report.missing_bars) == (27, 122)  # data README
    perp = atra.load_candles(
        shared_data_dir / "BTCUSDT_perp_1h.parquet",
        "BTC/USDT:USDT",
        end="2021-01-01",
        funding=shared_data_dir / "BTCUSDT_perp_funding.parquet",
    )
    assert perp.market is Market.PERP
    assert perp.report.gap_count == 0
    assert perp.funding is not None
    assert perp.funding["funding_time"].max() < time_ms("2021-01-01", "end")


# ---- the universe -------------------------------------------------------------------------


def test_universe_range_and_context(spot: list[Candles], market: SyntheticMarket) -> None:
    btc, eth = spot
    first = int(btc.frame["open_time"].iloc[0])
    uni = atra.universe(spot, start=first + 30 * DAY_MS, end=first + 60 * DAY_MS, warmup_bars=24)
    for data in uni.symbols.values():
        times = data.candles["open_time"]
        assert (times.iloc[0], times.iloc[-1]) == (first + 29 * DAY_MS, first + 60 * DAY_MS - H)
    assert uni.btc is uni.symbols["BTCUSDT"].candles
    only_eth = atra.universe([eth], btc=btc)
    assert only_eth.btc is not None
    assert only_eth.btc.equals(btc.frame)
    with pytest.raises(ConfigError, match="do not pass btc too"):
        atra.universe(spot, btc=btc)
    perp = atra.load_candles(market.perp["ETHUSDT"], "ETH/USDT:USDT", exchange="synthetic")
    with_basis = atra.universe([eth], counterparts=[perp])
    assert with_basis.symbols["ETHUSDT"].counterpart is not None
    with pytest.raises(ConfigError, match="a universe has one market"):
        atra.universe([btc, perp])
    with pytest.raises(ConfigError, match="duplicate symbols"):
        atra.universe([btc, btc])
    with pytest.raises(ConfigError, match="expected a symbol of the universe on the other market"):
        atra.universe([btc], counterparts=[perp])


# ---- the research steps -------------------------------------------------------------------


@pytest.fixture(scope="module")
def wf(spot: list[Candles]) -> atra.WalkForward:
    config = atra.WalkForwardConfig(min_train_days=120, min_train_events=60, embargo_hours=48)
    return atra.walk_forward(atra.universe(spot), config)


def test_settings_are_the_configs(tmp_path: Path) -> None:
    rs = settings_from_config(AtraConfig(), "spot")
    got = atra.settings()
    assert (got.signal, got.exit, got.meta, got.walkforward) == (
        rs.signal, rs.exit, rs.meta, rs.walkforward,
    )  # fmt: skip
    toml = tmp_path / "atra.toml"
    toml.write_text("[strategy]\nhorizon_bars = 12\n[risk]\nrisk_per_trade = 0.005\n")
    custom = atra.settings(toml)
    assert custom.signal.horizon_bars == 12
    assert custom.backtest.sizing.risk_fraction == 0.005


def test_features_of_one_symbol(spot: list[Candles]) -> None:
    uni = atra.universe(spot)
    feats = atra.features(uni, "ETH/USDT", ["ret_1", "rv_24"])
    assert list(feats.columns) == ["open_time", "ret_1", "rv_24"]
    assert feats["open_time"].equals(uni.symbols["ETHUSDT"].candles["open_time"])
    assert atra.features(spot[0]).shape[0] == len(spot[0])
    with pytest.raises(ConfigError, match="give the symbol"):
        atra.features(uni)
    with pytest.raises(ConfigError, match=r"'ETH/USDT:USDT' \(ETHUSDT perp\) is not in the data"):
        atra.features(uni, "ETH/USDT:USDT")
    with pytest.raises(ConfigError, match="needs funding"):
        atra.features(uni, "BTCUSDT", ["funding_rate"])


def test_signals_and_labels_are_the_datasets(spot: list[Candles]) -> None:
    start = int(spot[0].frame["open_time"].iloc[0]) + 40 * DAY_MS
    uni = atra.universe(spot, start=start)
    events = atra.signals(uni)
    assert (events["time_ms"] >= start).all()
    assert events["time_ms"].is_monotonic_increasing
    for sym, rows in events.groupby("symbol"):
        candles = uni.symbols[str(sym)].candles
        assert (candles["open_time"].to_numpy()[rows["t"]] == rows["time_ms"]).all()
    labelled = atra.labels(uni, events)
    ds = atra.dataset(uni)
    pd.testing.assert_frame_equal(events, ds.events.loc[:, list(EVENT_COLUMNS)])
    for col in ("label", "meta_label", "ret_net", "t1_ms", "complete"):
        pd.testing.assert_series_equal(labelled[col], ds.events[col], check_dtype=False)
    assert labelled["reason"].astype(str).tolist() == ds.events["reason"].tolist()
    assert set(labelled["label"].dropna().unique()) <= {-1, 0, 1}
    assert atra.features(ds, "BTCUSDT").equals(atra.features(uni, "BTCUSDT"))


def test_events_from_other_candles_are_refused(spot: list[Candles]) -> None:
    uni = atra.universe(spot)
    events = atra.signals(uni)
    shifted = events.assign(t=events["t"] + 1)
    wrong_bar = r"events row 0: \w+ t = \d+ is .*\(events must come from signals\(\)"
    with pytest.raises(DataError, match=wrong_bar):
        atra.labels(uni, shifted)
    with pytest.raises(DataError, match="symbol 'SOLUSDT' is not in the data"):
        atra.backtest(uni, events.assign(symbol="SOLUSDT"))
    with pytest.raises(DataError, match="missing column"):
        atra.labels(uni, events.drop(columns="time_ms"))


def test_backtest_of_signals(spot: list[Candles]) -> None:
    uni = atra.universe(spot)
    events = atra.signals(uni)
    traded = atra.backtest(uni, events)
    assert len(traded.trades) > 0
    none = atra.backtest(uni, events.assign(take=False))
    assert len(none.trades) == 0
    assert np.all(none.equity == none.initial_equity)
    ignored = atra.backtest(uni, events.assign(take=False), filtered=False)
    assert ignored.trades_sha256() == traded.trades_sha256()
    middle = int(events["time_ms"].iloc[len(events) // 2])
    late = atra.universe(spot, start=middle, warmup_bars=len(spot[0]))  # the same candles
    with pytest.raises(DataError, match="before the backtest start"):
        atra.backtest(late, events)
    with pytest.raises(ConfigError, match="give the events"):
        atra.backtest(uni)


def test_spot_is_long_only_unless_the_config_says_margin(
    spot: list[Candles], market: SyntheticMarket
) -> None:
    assert atra.settings().signal.allow_short is False
    assert atra.settings(market="perp").signal.allow_short is True
    uni = atra.universe(spot)
    longs = atra.signals(uni)
    assert len(longs) > 0
    assert set(longs["side"]) == {1}
    assert set(atra.dataset(uni).events["side"]) == {1}
    perp = atra.load_candles(market.perp["BTCUSDT"], "BTC/USDT:USDT")
    assert set(atra.signals(perp)["side"]) == {-1, 1}
    margin = AtraConfig.model_validate(
        {"strategy": {"spot_shorts": True}, "costs": {"spot_borrow_bps_per_hour": 0.2}}
    )
    both = atra.settings(margin, market="spot")
    assert both.signal.allow_short is True
    assert both.backtest.spot_borrow_rate_per_hour == pytest.approx(2e-5)
    events = atra.signals(uni, both.signal)
    assert set(events["side"]) == {-1, 1}
    result = atra.backtest(uni, events, both.backtest)
    shorts = result.trades["side"] == -1
    assert shorts.any()
    assert (result.trades.loc[shorts, "borrow"] > 0.0).all()
    assert (result.trades.loc[~shorts, "borrow"] == 0.0).all()


def test_perp_backtest_needs_funding(market: SyntheticMarket) -> None:
    frame, fund = market.perp["BTCUSDT"], market.funding["BTCUSDT"]
    bare = atra.load_candles(frame, "BTC/USDT:USDT")
    with pytest.raises(DataError, match="perpetual symbol BTCUSDT has no funding history"):
        atra.backtest(bare, atra.signals(bare))
    paid = atra.load_candles(frame, "BTC/USDT:USDT", funding=fund)
    result = atra.backtest(paid, atra.signals(paid))
    assert len(result.trades) > 0
    assert result.trades["funding"].abs().sum() > 0.0


def test_walk_forward_backtest_is_the_evaluations(wf: atra.WalkForward, tmp_path: Path) -> None:
    assert len(wf.predictions) > 0
    assert "all" in wf.metrics.index
    filtered, primary = atra.backtest(wf), atra.backtest(wf, filtered=False)
    evaluation = atra.report(wf, runs_dir=tmp_path, render=False)
    for ours, leg in ((filtered, "filtered"), (primary, "primary")):
        theirs = evaluation.backtests[leg]
        assert ours.trades_sha256() == theirs.trades_sha256()
        np.testing.assert_array_equal(ours.equity, theirs.equity)
        np.testing.assert_array_equal(ours.open_time_ms, theirs.open_time_ms)
    oos_start = min(f.test_start_ms for f in wf.result.folds)
    assert int(filtered.open_time_ms[0]) >= oos_start
    assert len(filtered.trades) <= len(primary.trades)
    assert evaluation.run.record.data_label == "synthetic"
    with pytest.raises(ConfigError, match="pass no events"):
        atra.backtest(wf, wf.predictions)


def test_stats_annualise_with_sqrt_8760(wf: atra.WalkForward) -> None:
    result = atra.backtest(wf, filtered=False)
    stats = atra.stats(result)
    assert stats.returns.annualization_factor == pytest.approx(math.sqrt(8760))
    assert stats.trades.n_trades == len(result.trades) > 0
    assert atra.stats(result, n_trials=10).returns.n_trials == 10
    with pytest.raises(ConfigError, match="expected a BacktestResult"):
        atra.stats(wf)  # type: ignore[arg-type]


def test_report_renders_html(wf: atra.WalkForward, tmp_path: Path) -> None:
    evaluation = atra.report(wf, runs_dir=tmp_path)
    assert evaluation.report_path is not None
    assert evaluation.report_path.read_text(encoding="utf-8").lstrip().startswith("<!")
    assert evaluation.run_dir.parent == tmp_path


def test_no_signal_gives_an_empty_events_frame(market: SyntheticMarket) -> None:
    few = atra.load_candles(market.spot["BTCUSDT"].iloc[:30], "BTC/USDT")  # < the EMA warm-up
    events = atra.signals(few)
    assert list(events.columns) == list(EVENT_COLUMNS)
    assert events.empty
    assert len(atra.backtest(few, events).trades) == 0


@pytest.mark.parametrize(
    ("call", "error", "says"),
    [
        (lambda c: atra.universe([]), ConfigError, "no candles given"),
        (lambda c: atra.universe([c[0].frame]), ConfigError, "expected Candles"),
        (lambda c: atra.universe(c, warmup_bars=-1), ConfigError, "warmup_bars must be >= 0"),
        (lambda c: atra.universe(c, end="2000-01-01"), DataError, "no bars in the range"),
        (lambda c: atra.universe(c, start=True), ConfigError, "expected a time, got True"),
        (lambda c: atra.universe(c, start=1.5), ConfigError, "expected epoch ms, an ISO"),
        (
            lambda c: atra.universe(c, start=pd.Timestamp("2022-01-01 00:00:00.0005", tz="UTC")),
            ConfigError,
            "not a whole millisecond",
        ),
        (lambda c: atra.features("BTCUSDT"), ConfigError, "expected Candles, a list of Candles"),
        (lambda c: atra.labels(c, [1, 2]), ConfigError, "events: expected a DataFrame"),
        (
            lambda c: atra.labels(c, atra.signals(c).astype({"t": float})),
            DataError,
            "column t has dtype float64",
        ),
        (lambda c: atra.report(c, runs_dir="x"), ConfigError, "expected the result of"),
    ],
)
def test_argument_errors_are_one_line(
    spot: list[Candles], call: object, error: type, says: str
) -> None:
    with pytest.raises(error) as info:
        call(spot)  # type: ignore[operator]
    assert says in str(info.value)
    assert "\n" not in str(info.value)


def test_counterpart_given_twice_and_missing_funding_file(
    spot: list[Candles], market: SyntheticMarket, tmp_path: Path
) -> None:
    perp = atra.load_candles(market.perp["BTCUSDT"], "BTC/USDT:USDT")
    with pytest.raises(ConfigError, match="counterpart BTCUSDT given twice"):
        atra.universe(spot, counterparts=[perp, perp])
    with pytest.raises(DataError, match="no such funding file"):
        atra.load_candles(perp.frame, "BTC/USDT:USDT", funding=tmp_path / "none.parquet")
    market.funding["BTCUSDT"].to_parquet(tmp_path / "f.parquet")
    from_file = atra.load_candles(perp.frame, "BTC/USDT:USDT", funding=tmp_path / "f.parquet")
    assert from_file.funding is not None
    assert from_file.funding.equals(market.funding["BTCUSDT"])


def test_settings_from_a_config_object() -> None:
    cfg = AtraConfig.model_validate({"strategy": {"horizon_bars": 6}})
    assert atra.settings(cfg).signal.horizon_bars == 6


def test_a_tp1_partial_in_the_config_reaches_labels_and_backtest(
    spot: list[Candles], tmp_path: Path
) -> None:
    """``strategy.tp1_fraction`` / ``move_to_be`` are the labels' and the backtest's exits: a
    half at TP1 leaves a second leg that ends at TP2, break-even or the time barrier."""
    toml = tmp_path / "atra.toml"
    toml.write_text("[strategy]\ntp1_fraction = 0.5\nmove_to_be = true\n")
    split = atra.settings(toml)
    assert (split.exit.tp1_fraction, split.exit.move_to_be) == (0.5, True)
    assert (split.backtest.tp1_fraction, split.backtest.move_to_be) == (0.5, True)
    uni = atra.universe(spot)
    events = atra.signals(uni, split.signal)
    whole = atra.backtest(uni, events, atra.settings().backtest).trades
    halves = atra.backtest(uni, events, split.backtest).trades
    assert set(whole["leg1_fraction"].dropna()) <= {1.0}
    two_legs = halves[halves["leg1_fraction"] == 0.5]
    assert len(two_legs) > 0
    second = set(two_legs["leg2_reason"].astype(str))
    assert second <= {"TP2", "BE", "TIME", "SL"}
    assert {"TP2", "BE"} <= second
    assert not np.allclose(halves["pnl"].sum(), whole["pnl"].sum())
    assert not atra.labels(uni, events, split.exit)["ret_net"].equals(
        atra.labels(uni, events, atra.settings().exit)["ret_net"]
    )
