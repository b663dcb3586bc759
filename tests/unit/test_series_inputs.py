"""External series as configured inputs: ``[[features.series]]`` validation, ``atra data
import-series`` into the store (day grid, duplicates refused, gaps reported, never filled),
``data list`` / ``check``, reading the configured series, and their scope in the one decision
context (market-wide or by base asset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.adapters.series import configured_series, validate_series_frame
from atra.adapters.series_store import SeriesStore
from atra.cli import main
from atra.config import AtraConfig, SeriesConfig, load_config
from atra.core.features.context import SeriesInput, assemble_context, base_asset_of
from atra.core.features.external import SERIES
from atra.core.features.sources import PointInTimeSeries
from atra.core.types import Market, Timeframe
from atra.data.series import import_series, series_name_of
from atra.errors import ConfigError, DataError
from atra.research.dataset import SymbolData, Universe, build_dataset, symbol_features

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400_000
H = 3_600_000
D0 = 1_704_067_200_000  # 2024-01-01


def entry(**over: object) -> str:
    fields = {"name": '"fear_greed"', "lag_hours": "1.0", "max_age_hours": "48.0",
              "family": '"alternative"', **{k: str(v) for k, v in over.items()}}  # fmt: skip
    return "[[features.series]]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items())


def load(tmp_path: Path, text: str) -> AtraConfig:
    path = tmp_path / "atra.toml"
    path.write_text(text)
    return load_config(path, env={})


# ---- config ---------------------------------------------------------------------------------


def test_the_example_configures_the_four_shared_series_with_their_rules() -> None:
    cfg = load_config(ROOT / "examples" / "series.toml", env={})
    got = {s.name: s for s in cfg.features.series}
    assert set(got) == set(SERIES)
    for name, rule in SERIES.items():
        s = got[name]
        assert s.family == rule.family.value
        assert s.lag_hours * H >= rule.lag_ms  # never earlier than the README says
        assert s.applies_to == (() if rule.base_asset is None else (rule.base_asset,))
        assert set(rule.columns) <= set(s.columns or rule.columns)
    assert got["onchain_eth"].asset == "eth"
    assert got["fear_greed"].source == "fear_greed"


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {"lag_hours": "0.5"},
            "features.series.0: lag_hours: 0.5 is shorter than when the "
            "built-in series fear_greed is known (1 h",
        ),
        (
            {"family": '"fundamental"'},
            "features.series.0: family: the built-in series fear_greed is alternative",
        ),
        (
            {"applies_to": '["BTC"]'},
            'features.series.0: applies_to: the built-in series fear_greed applies to "market"',
        ),
        ({"applies_to": '"ETH"'}, 'features.series.0.applies_to: expected "market" or a list'),
        (
            {"source": '"coinmetrics"', "asset": '"btc"', "columns": '["mvrv"]'},
            "features.series.0: source: the built-in series fear_greed comes from fear_greed",
        ),
        ({"asset": '"btc"'}, "features.series.0: asset: only a coinmetrics source"),
        ({"url": '"http://127.0.0.1:1"'}, "features.series.0: url: only a series with a source"),
        (
            {"name": '"sent"', "source": '"coinmetrics"', "columns": '["mvrv"]'},
            "features.series.0: asset: a coinmetrics source needs its asset",
        ),
        (
            {"name": '"sent"', "source": '"coinmetrics"', "asset": '"sol"', "columns": '["x"]'},
            "features.series.0: columns: coinmetrics serves ",
        ),
        ({"columns": '["fear greed"]'}, "features.series.0: columns: expected unique column"),
        ({"max_age_hours": "0"}, "features.series.0.max_age_hours: Input should be greater"),
        ({"lag_hours": "nan"}, "features.series.0.lag_hours: Input should be a finite number"),
        ({"name": '"Fear"'}, "features.series.0.name: String should match pattern"),
        ({"lagg": "3"}, "features.series.0.lagg: unknown key"),
    ],
)
def test_a_bad_series_entry_is_one_line_naming_the_key(
    tmp_path: Path, over: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, entry(**over))
    assert str(err.value).startswith("atra.toml: " + message)
    assert "\n" not in str(err.value)


def test_missing_keys_and_duplicate_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"features\.series\.0\.family: Field required"):
        load(tmp_path, entry().replace('family = "alternative"\n', ""))
    with pytest.raises(ConfigError, match=r"features\.series: series names must be unique"):
        load(tmp_path, entry() + entry())


def test_custom_series_scopes_and_a_built_in_with_a_longer_lag_load(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        entry(lag_hours="6.0")
        + entry(name='"news"', family='"alternative"', applies_to='["SOL", "ETH"]',
                path='"news.csv"', columns='["count"]')
        + entry(name='"onchain_eth"', family='"fundamental"', lag_hours="30",
                applies_to='["ETH"]', source='"coinmetrics"', asset='"eth"',
                columns='["price_usd", "market_cap_usd", "mvrv", "supply", '
                '"realized_price_usd"]'),
    )  # fmt: skip
    fg, news, eth = cfg.features.series
    assert fg.applies_to == ()
    assert fg.lag_hours == 6.0
    assert news.applies_to == ("SOL", "ETH")
    assert news.path == Path("news.csv")
    assert eth.source == "coinmetrics"
    assert eth.applies_to == ("ETH",)
    assert load(tmp_path, entry(applies_to='"market"')).features.series[0].applies_to == ()


# ---- scope ----------------------------------------------------------------------------------


def _series(name: str, days: int = 10, start: int = D0) -> PointInTimeSeries:
    t = start + np.arange(days, dtype=np.int64) * DAY
    return PointInTimeSeries(name, pd.DataFrame({"time": t, "v": np.arange(days, dtype=float)}),
                             lag_ms=H, max_age_ms=2 * DAY)  # fmt: skip


@pytest.mark.parametrize(
    ("symbol", "base"),
    [("ETHUSDT", "ETH"), ("ETHBTC", "ETH"), ("BTCUSDT", "BTC"), ("SOLFDUSD", "SOL"),
     ("1000PEPEUSDT", "1000PEPE"), ("USDT", None), ("ABCXYZ", None)],
)  # fmt: skip
def test_base_asset_of(symbol: str, base: str | None) -> None:
    assert base_asset_of(symbol) == base


def test_the_context_holds_the_series_that_apply_to_the_symbol() -> None:
    wide, eth = SeriesInput(_series("fear_greed")), SeriesInput(_series("onchain_eth"), ("ETH",))
    names = {
        sym: [s.name for s in assemble_context(Timeframe.H1, Market.SPOT, series=(wide, eth),
                                               symbol=sym).series]
        for sym in ("BTCUSDT", "ETHUSDT", "ETHBTC")
    }  # fmt: skip
    assert names == {"BTCUSDT": ["fear_greed"], "ETHUSDT": ["fear_greed", "onchain_eth"],
                     "ETHBTC": ["fear_greed", "onchain_eth"]}  # fmt: skip
    with pytest.raises(ConfigError, match="scoped to base assets: pass symbol="):
        assemble_context(Timeframe.H1, Market.SPOT, series=(eth,))
    with pytest.raises(ConfigError, match="series names must be unique"):
        assemble_context(Timeframe.H1, Market.SPOT, series=(wide, wide), symbol="BTCUSDT")


def _bars(n: int, start: int = D0) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame({"open_time": start + np.arange(n, dtype=np.int64) * H, "open": close,
                         "high": close * 1.01, "low": close * 0.99, "close": close,
                         "volume": np.full(n, 5.0)})  # fmt: skip


def test_the_universe_gives_each_symbol_its_series_and_reports_none_absent() -> None:
    frames = {s: _bars(600) for s in ("BTCUSDT", "ETHUSDT")}
    data = {s: SymbolData(s, f, None, None) for s, f in frames.items()}
    fg = SeriesInput(_series("fg", 40, D0 - 10 * DAY))
    eth = SeriesInput(_series("eth_flow", 40, D0 - 10 * DAY), ("ETH",))
    uni = Universe("binance", Market.SPOT, Timeframe.H1, D0, None, data, None, (fg, eth))
    assert [s.name for s in uni.context("BTCUSDT").series] == ["fg"]
    assert [s.name for s in uni.context("ETHUSDT").series] == ["fg", "eth_flow"]
    feats, absent = symbol_features(uni, "BTCUSDT", ["fg_v", "eth_flow_v"])
    assert absent == []  # eth_flow does not apply to BTC: not "absent data"
    assert feats["eth_flow_v"].isna().all()
    assert feats["fg_v"].notna().sum() > 500
    eth_feats, _ = symbol_features(uni, "ETHUSDT", ["eth_flow_v"])
    # the value of day D is known from D 01:00 (lag 1 h): the bar closing at 02:00 sees it
    at = eth_feats.set_index("open_time")["eth_flow_v"]
    assert at[D0] == 9.0  # bar 00:00-01:00 closes at the lag instant: still day D-1's value
    assert at[D0 + H] == 10.0


# ---- validation and the store ---------------------------------------------------------------


def _daily(days: list[int], **cols: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"time": [D0 + d * DAY for d in days], **cols})


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (_daily([0, 1, 1], v=[1.0, 2.0, 3.0]), r"row 3 \(time 2024-01-02.*\): duplicate day"),
        (_daily([0, 2, 1], v=[1.0, 2.0, 3.0]), r"row 3 .*: time goes backwards"),
        (pd.DataFrame({"time": [D0, D0 + H], "v": [1.0, 2.0]}), r"row 2 .*not a day's 00:00"),
        (_daily([0, 1], v=[1.0, float("nan")]), r"row 2 .*: v is nan \(values must be finite"),
        (_daily([0, 1], v=[1.0, np.inf]), r"row 2 .*: v is inf"),
        (pd.DataFrame({"time": [D0 // 1000], "v": [1.0]}), "time looks like seconds"),
        (pd.DataFrame({"time": [D0], "v": ["x"]}), "column 'v' must be numeric"),
        (pd.DataFrame({"t": [D0], "v": [1.0]}), "missing time column 'time'"),
    ],
)
def test_a_bad_daily_series_is_one_line_naming_the_row(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(DataError, match=message) as err:
        validate_series_frame(frame, name="s", source="s.csv")
    assert str(err.value).startswith("s.csv: ")


def test_gaps_are_reported_never_filled() -> None:
    frame = _daily([0, 1, 4, 5, 7], v=[1.0, 2.0, 3.0, 4.0, 5.0])
    out, report = validate_series_frame(frame, name="s", source="s.csv")
    assert len(out) == 5  # nothing added
    gaps = [(g.first_missing_ms, g.missing) for g in report.gaps]
    assert gaps == [(D0 + 2 * DAY, 2), (D0 + 6 * DAY, 1)]
    assert (report.gap_count, report.missing_days) == (2, 3)


def test_import_merges_atomically_idempotently_and_refuses_conflicts(tmp_path: Path) -> None:
    store = SeriesStore(tmp_path / "store")
    src = tmp_path / "sent_daily.csv"
    _daily([0, 1, 3], score=[1.0, 2.0, 4.0]).to_csv(src, index=False)
    first = import_series(store, src)
    assert series_name_of(src) == first.report.name == "sent"
    assert (first.merge.rows_added, first.merge.rows_after, first.report.missing_days) == (3, 3, 1)
    mtime = store.path("sent").stat().st_mtime_ns
    again = import_series(store, src)
    assert again.merge.rows_added == 0
    assert store.path("sent").stat().st_mtime_ns == mtime  # an identical import writes nothing
    more = tmp_path / "more.csv"
    _daily([2, 3, 4], score=[3.0, 4.0, 5.0]).to_csv(more, index=False)
    assert import_series(store, more, name="sent").merge.rows_added == 2
    np.testing.assert_array_equal(store.read("sent")["score"], [1.0, 2.0, 3.0, 4.0, 5.0])
    bad = tmp_path / "bad.csv"
    _daily([4], score=[9.0]).to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"bad\.csv: time 2024-01-05.*score stored 5\.0, new 9\.0"):
        import_series(store, bad, name="sent")
    other = tmp_path / "other.csv"
    _daily([9], level=[1.0]).to_csv(other, index=False)
    with pytest.raises(DataError, match="is stored with columns score; this file has level"):
        import_series(store, other, name="sent")
    assert len(store.read("sent")) == 5  # refused imports left the store as it was
    with pytest.raises(DataError, match="invalid series name 'Sent'"):
        import_series(store, src, name="Sent")


@pytest.mark.shared_data
def test_import_series_cli_on_the_shared_files(
    shared_series_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    out = {}
    for name in ("fear_greed", "onchain_btc_activity"):
        args = ["data", "import-series", str(shared_series_dir / f"{name}_daily.parquet")]
        assert main([*args, "--data-dir", str(data)]) == 0
        out[name] = capsys.readouterr().out
    assert "series fear_greed: 2,522 row(s)" in out["fear_greed"]
    assert "2 gap(s), 4 missing day(s)" in out["fear_greed"]
    assert "gap: 2018-04-14..2018-04-16 (3 day(s) missing)" in out["fear_greed"]
    assert "gap: 2024-10-26..2024-10-26 (1 day(s) missing)" in out["fear_greed"]
    assert "series onchain_btc_activity: 1,827 row(s)" in out["onchain_btc_activity"]
    assert "0 gap(s)" in out["onchain_btc_activity"]
    assert main(["data", "list", "--data-dir", str(data)]) == 0
    listed = capsys.readouterr().out
    assert "series/fear_greed" in listed
    assert "2,522" in listed
    assert main(["data", "check", "--data-dir", str(data), "--verbose"]) == 0
    checked = capsys.readouterr().out
    assert "2 series valid." in checked
    assert "series fear_greed: 2 gap(s), missing (UTC):" in checked
    code = main(["data", "import-series", str(shared_series_dir / "README.md"),
                 "--data-dir", str(data)])  # fmt: skip
    assert code != 0
    assert capsys.readouterr().err.count("\n") == 1  # one line


def test_configured_series_read_the_store_or_the_path(tmp_path: Path) -> None:
    store = SeriesStore(tmp_path)
    frame = _daily([0, 1, 2], fear_greed=[10.0, 20.0, 30.0])
    store.write("fear_greed", frame)
    csv = tmp_path / "news.csv"
    pd.DataFrame({"day": ["2024-01-01", "2024-01-02"], "count": [3, 4], "junk": [0, 0]}).to_csv(
        csv, index=False
    )
    cfgs = [
        SeriesConfig(name="fear_greed", lag_hours=2, max_age_hours=48, family="alternative"),
        SeriesConfig(name="news", path=csv, time_col="day", columns=("count",), lag_hours=0,
                     max_age_hours=24, family="alternative", applies_to=("ETH",)),
    ]  # fmt: skip
    fg, news = configured_series(cfgs, tmp_path)
    assert (fg.series.lag_ms, fg.series.max_age_ms, fg.applies_to) == (2 * H, 48 * H, ())
    assert news.series.value_columns == ("count",)
    assert news.applies_to == ("ETH",)
    np.testing.assert_array_equal(news.series.times_ms(), [D0, D0 + DAY])
    assert [s.name for s in configured_series(cfgs, tmp_path, names=["news"])] == ["news"]
    missing = [SeriesConfig(name="onchain_btc", lag_hours=30, max_age_hours=48,
                            family="fundamental")]  # fmt: skip
    with pytest.raises(DataError, match="no path configured and no series onchain_btc in the "
                       r"store .*atra data import-series FILE --name onchain_btc"):  # fmt: skip
        configured_series(missing, tmp_path)


def test_a_dataset_uses_the_series_features_by_default(tmp_path: Path) -> None:
    frames = {"BTCUSDT": _bars(2500, D0 - 60 * DAY)}
    data = {s: SymbolData(s, f, None, None) for s, f in frames.items()}
    t = D0 - 200 * DAY + np.arange(300, dtype=np.int64) * DAY
    fg = PointInTimeSeries("fear_greed", pd.DataFrame({"time": t, "fear_greed": np.linspace(
        10, 90, 300)}), lag_ms=H, max_age_ms=2 * DAY)  # fmt: skip
    uni = Universe("binance", Market.SPOT, Timeframe.H1, D0 - 20 * DAY, None, data, None,
                   (SeriesInput(fg),))  # fmt: skip
    from atra.research.pipeline import settings_from_config

    st = settings_from_config(AtraConfig(), Market.SPOT)
    ds = build_dataset(uni, st.signal, st.exit)
    assert {"fg_level", "fg_z_30d", "fg_extreme_fear"} <= set(ds.bar_features)
    assert not any(n.startswith("mvrv") for n in ds.bar_features)  # not configured
    assert ds.X["fg_level"].notna().all()
