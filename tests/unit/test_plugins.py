"""Plug-ins: the user's own entry rules and features, registered like built-ins and used like
them; their parameters validated like the config; clashes, bad modules and models that need a
missing plug-in refused with one line; the truncation test catches a leaky one."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from pydantic import BaseModel, Field, model_validator

import atra
from atra.adapters.artifacts import load_model, save_model
from atra.adapters.plugins import load_plugins, loaded_plugins
from atra.config import AtraConfig, PluginsConfig, load_config
from atra.core.decision import EVENT_FEATURES
from atra.core.exits.api import ExitSpec
from atra.core.features.context import ModelInputs
from atra.core.features.registry import (
    FeatureContext,
    FeatureFrame,
    compute_features,
    feature_origin,
    feature_registry,
    features_by_family,
    unregister_features,
)
from atra.core.labels import label_events
from atra.core.lookahead import feature_lookahead, pick_cuts, rule_lookahead
from atra.core.meta import MetaModel, MetaParams
from atra.core.signals.events import generate_events, last_bar_events
from atra.core.signals.rules import BUILTIN, find_rule, rule_names, unregister_rules
from atra.core.signals.spec import Rule, SignalSpec
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, ModelError
from atra.research.pipeline import settings_from_config

H = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % H
HERE = __name__  # the origin of every rule and feature this module registers


def candles(
    n: int = 900, seed: int = 3, drop: tuple[int, ...] = (300, 301, 302, 640)
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    drift = np.repeat(rng.normal(0, 0.002, n // 60 + 1), 60)[:n]
    close = 100 * np.exp(np.cumsum(drift + rng.normal(0, 0.006, n)))
    op = np.concatenate(([100.0], close[:-1]))
    frame = pd.DataFrame(
        {
            "open_time": T0 + H * np.arange(n, dtype=np.int64),
            "open": op,
            "high": np.maximum(op, close) * (1 + rng.exponential(0.003, n)),
            "low": np.minimum(op, close) * (1 - rng.exponential(0.003, n)),
            "close": close,
            "volume": rng.lognormal(3, 1, n),
        }
    )
    keep = np.ones(n, dtype=bool)
    keep[list(drop)] = False
    return frame[keep].reset_index(drop=True)


@pytest.fixture(autouse=True)
def _clean_registries() -> Iterator[None]:
    """Every rule and feature a test registers is removed after it (the registries are
    process-wide, like the CLI's)."""
    before = set(sys.modules)
    yield
    unregister_rules(HERE)
    unregister_features(HERE)
    for name in set(sys.modules) - before:
        if name.startswith("plug_"):
            unregister_rules(name)
            unregister_features(name)
            del sys.modules[name]


class ChannelParams(BaseModel):
    n: int = Field(20, ge=2)


def _donchian_copy(bars: pd.DataFrame, p: ChannelParams) -> npt.NDArray[np.int8]:
    """The built-in Donchian rule, written as a plug-in."""
    upper = bars["high"].rolling(p.n).max().shift(1)
    lower = bars["low"].rolling(p.n).min().shift(1)
    up = (bars["close"] > upper).to_numpy()
    down = (bars["close"] < lower).to_numpy()
    first_up = up & ~np.concatenate(([True], up[:-1]))
    first_down = down & ~np.concatenate(([True], down[:-1]))
    return first_up.astype(np.int8) - first_down.astype(np.int8)


def _register_donchian_copy() -> None:
    atra.rule("donchian_copy", params=ChannelParams, warmup=lambda p: p.n + 1)(_donchian_copy)


# ---- rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize("allow_short", [True, False])
def test_a_plugin_rule_flows_exactly_like_the_builtin_it_copies(allow_short: bool) -> None:
    """Same signals as Rule.DONCHIAN on candles with gaps: warm-up after each gap, no signal on
    the last bar before a gap, shorts only where allowed, ATR barriers; then the same labels
    and, bar by bar, the same live-path signal."""
    _register_donchian_copy()
    c = candles()
    plugin = SignalSpec(rule="donchian_copy", params=(("n", 24),), allow_short=allow_short)
    builtin = SignalSpec(rule=Rule.DONCHIAN, donchian_n=24, allow_short=allow_short)
    assert plugin.warmup == builtin.warmup == 25
    ev_p = generate_events(c, plugin, symbol="X", timeframe=Timeframe.H1)
    ev_b = generate_events(c, builtin, symbol="X", timeframe=Timeframe.H1)
    assert len(ev_b) > 20
    assert (ev_b["side"] < 0).any() == allow_short
    pd.testing.assert_frame_equal(ev_p, ev_b)
    exits = ExitSpec()
    pd.testing.assert_frame_equal(
        label_events(c, ev_p, exits, timeframe=Timeframe.H1),
        label_events(c, ev_b, exits, timeframe=Timeframe.H1),
    )
    for t in (*ev_b["t"].to_numpy()[:10], 299, 300, 500):  # 299: the last bar before a gap
        part = c.iloc[: t + 1]
        pd.testing.assert_frame_equal(
            last_bar_events(part, plugin, symbol="X", timeframe=Timeframe.H1),
            last_bar_events(part, builtin, symbol="X", timeframe=Timeframe.H1),
        )


def _strategy(rule: str, params: dict[str, float] | None = None) -> AtraConfig:
    strategy: dict[str, object] = {"rule": rule}
    if params is not None:
        strategy["params"] = params
    return AtraConfig.model_validate({"strategy": strategy})


class CrossParams(BaseModel):
    fast: int = Field(10, ge=1)
    slow: int = Field(30, ge=2)
    band: float = Field(0.0, ge=0.0, lt=0.1)

    @model_validator(mode="after")
    def _order(self) -> CrossParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be < slow ({self.slow})")
        return self


def _register_cross() -> None:
    @atra.rule("my_cross", params=CrossParams, warmup=lambda p: p.slow)
    def my_cross(bars: pd.DataFrame, p: CrossParams) -> npt.NDArray[np.int8]:
        """EMA cross with a band."""
        fast = bars["close"].ewm(span=p.fast, adjust=False).mean()
        slow = bars["close"].ewm(span=p.slow, adjust=False).mean()
        d = (fast / slow - 1.0).to_numpy()
        prev = np.concatenate(([np.nan], d[:-1]))
        return np.where((d > p.band) & (prev <= p.band), 1, 0).astype(np.int8)


def test_plugin_rule_params_are_validated_like_the_config() -> None:
    _register_cross()
    spec = settings_from_config(_strategy("my_cross", {"fast": 5.0, "slow": 40.0}), "spot").signal
    assert (spec.rule, spec.params, spec.rule_name) == (
        "my_cross", (("band", 0.0), ("fast", 5), ("slow", 40)), "my_cross",
    )  # fmt: skip
    assert spec.warmup == 40
    assert spec.allow_short is False
    # no params in the config: the rule's defaults, not the built-in ema_cross defaults
    assert settings_from_config(_strategy("my_cross"), "perp").signal.params == (
        ("band", 0.0), ("fast", 10), ("slow", 30),
    )  # fmt: skip
    cases = {
        "strategy.params.slow: Input should be greater than or equal to 2 (got 1.0)": {"slow": 1},
        "strategy.params.fast: Input should be a valid integer, got a number with a fractional "
        "part (got 2.5)": {"fast": 2.5},
        "strategy.params.speed: unknown parameter of rule my_cross (expected fast, slow, band)": {
            "speed": 3
        },
        "strategy.params: fast (30) must be < slow (30)": {"fast": 30, "slow": 30},
    }
    for message, params in cases.items():
        with pytest.raises(ConfigError) as info:
            settings_from_config(_strategy("my_cross", params), "spot")
        assert str(info.value) == message


def test_an_unknown_rule_is_one_line_listing_the_known_ones(tmp_path: Path) -> None:
    _register_cross()
    path = tmp_path / "atra.toml"
    path.write_text('[strategy]\nrule = "brekout"\nparams = { n = 3 }\n')
    with pytest.raises(ConfigError) as info:
        settings_from_config(load_config(path, env={}), "spot")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(
        "strategy.rule: 'brekout' is not a known rule (known: ema_cross, donchian, tsmom, "
        "my_cross; a plug-in rule needs its module in [plugins] modules"
    )
    assert rule_names()[-1] == "my_cross"


def test_rule_names_may_not_clash() -> None:
    _register_cross()
    ok = atra.rule("donchian_copy", params=ChannelParams)
    ok(_donchian_copy)
    ok(_donchian_copy)  # the same definition again (a reloaded module): replaces itself
    with pytest.raises(ConfigError, match="rule 'donchian' is a built-in rule"):
        atra.rule("donchian")(_donchian_copy)
    with pytest.raises(ConfigError, match="must match"):
        atra.rule("Bad-Name")(_donchian_copy)
    other = dataclasses.replace(find_rule("my_cross"), origin="someone_else.rules")
    from atra.core.signals.rules import register_rule

    with pytest.raises(ConfigError) as info:
        register_rule(other)
    assert str(info.value) == (
        f"plug-in someone_else.rules: rule 'my_cross' is already registered by {HERE}"
    )


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda n: np.zeros(n - 1), r"returned shape \(\d+,\) for \d+ bars"),
        (lambda n: np.full(n, 2), r"returned 2.0 at bar 0 \(open_time \d+\), expected -1"),
        (lambda n: np.full(n, np.nan), r"returned nan at bar 0"),
        (lambda n: np.array(["x"] * n), r"returned <U1 values"),
        (lambda n: n / 0, r"failed: ZeroDivisionError: division by zero"),
    ],
    ids=["shape", "value", "nan", "text", "raises"],
)
def test_a_bad_rule_output_is_one_line(output: object, message: str) -> None:
    @atra.rule("broken")
    def broken(bars: pd.DataFrame, _: None) -> object:
        return output(len(bars))  # type: ignore[operator]

    with pytest.raises(ConfigError, match=f"rule broken \\({HERE}\\) " + message):
        generate_events(candles(), SignalSpec(rule="broken"), symbol="X")


def test_a_dataclass_declares_params_too() -> None:
    @dataclasses.dataclass(frozen=True)
    class Lookback:
        k: int = 12

    seen: list[Lookback] = []

    @atra.rule("lookback_up", params=Lookback, warmup=lambda p: p.k)
    def lookback_up(bars: pd.DataFrame, p: Lookback) -> npt.NDArray[np.int8]:
        seen.append(p)
        return np.where(bars["close"] > bars["close"].shift(p.k), 1, 0).astype(np.int8)

    spec = SignalSpec(rule="lookback_up", params=(("k", 30),))
    assert spec.warmup == 30
    ev = generate_events(candles(), spec, symbol="X")
    assert len(ev)
    assert seen[0] == Lookback(30)
    with pytest.raises(
        ConfigError, match=r"^params\.j: unknown parameter of rule lookback_up \(expected k\)$"
    ):
        SignalSpec(rule="lookback_up", params=(("j", 3),))


# ---- features ----------------------------------------------------------------------------------


def test_a_plugin_feature_is_computed_masked_listed_and_modelled() -> None:
    @atra.feature("raw_close", family="price", warmup=5)
    def raw_close(ff: FeatureFrame) -> npt.NDArray[np.float64]:
        """The close itself (no masking of its own)."""
        return ff.close

    c = candles()
    got = compute_features(c, FeatureContext(timeframe=Timeframe.H1), ["raw_close", "ret_1"])
    seg = np.cumsum(np.diff(c["open_time"], prepend=c["open_time"][0] - H) != H) - 1
    since = c.groupby(seg).cumcount().to_numpy()
    want = np.where(since >= 5, c["close"], np.nan)
    np.testing.assert_array_equal(got["raw_close"].to_numpy(), want)
    assert feature_origin("raw_close") == HERE
    assert feature_origin("ret_1") == BUILTIN
    assert list(feature_registry())[-1] == "raw_close"
    assert "raw_close" in [s.name for s in features_by_family("price")]
    assert feature_registry()["raw_close"].definition == "The close itself (no masking of its own)."
    assert ModelInputs.from_features(["raw_close", "ret_1"]).warmup_bars == 5


def test_feature_registrations_that_are_refused() -> None:
    def fn(ff: FeatureFrame) -> npt.NDArray[np.float64]:
        return ff.close

    atra.feature("mine", family="volume", warmup=1)(fn)
    refusals = {
        "a built-in feature has that name": dict(name="ret_1"),
        "the name is reserved": dict(name="side"),
        "must match": dict(name="Mine"),
        "family 'sentiment' is not one of price, volume, fundamental, alternative, "
        "cross_asset": dict(family="sentiment"),
        "must include 'candles'": dict(inputs=("funding",)),
        "name only candles, funding": dict(inputs=("candles", "orderbook")),
        "warmup must be >= 0 bars": dict(warmup=-1),
    }
    for message, change in refusals.items():
        kw: dict[str, object] = {"name": "other", "family": "price", "warmup": 0, **change}
        name = kw.pop("name")
        with pytest.raises(ConfigError, match=message):
            atra.feature(name, **kw)(fn)  # type: ignore[arg-type]
    from atra.core.features.registry import register_feature

    with pytest.raises(ConfigError, match=f"feature 'mine': already registered by {HERE}"):
        register_feature(feature_registry()["mine"], "someone_else.features")


def test_a_bad_feature_output_is_one_line() -> None:
    @atra.feature("half", family="price", warmup=0)
    def half(ff: FeatureFrame) -> npt.NDArray[np.float64]:
        return ff.close[::2]

    with pytest.raises(ConfigError, match=rf"feature 'half' \({HERE}\) returned shape"):
        compute_features(candles(), FeatureContext(timeframe=Timeframe.H1), ["half"])

    @atra.feature("needs_oi", family="price", warmup=0)
    def needs_oi(ff: FeatureFrame) -> npt.NDArray[np.float64]:
        return np.asarray(pd.DataFrame({"close": ff.close})["open_interest"], dtype=np.float64)

    with pytest.raises(ConfigError) as info:
        compute_features(candles(), FeatureContext(timeframe=Timeframe.H1), ["needs_oi"])
    assert str(info.value) == f"feature 'needs_oi' ({HERE}) failed: KeyError: 'open_interest'"


# ---- the truncation test -----------------------------------------------------------------------


def test_the_truncation_test_catches_a_leaky_plugin_feature_and_rule() -> None:
    @atra.feature("peek_next", family="price", warmup=0)
    def peek_next(ff: FeatureFrame) -> npt.NDArray[np.float64]:
        return np.append(ff.close[1:], np.nan) / ff.close - 1.0

    @atra.rule("peek_rule")
    def peek_rule(bars: pd.DataFrame, _: None) -> npt.NDArray[np.int8]:
        nxt = bars["close"].shift(-1)
        return np.where(nxt > bars["close"] * 1.004, 1, 0).astype(np.int8)

    _register_donchian_copy()
    c = candles()
    ctx = FeatureContext(timeframe=Timeframe.H1)
    cuts = pick_cuts(c["open_time"].to_numpy(), H, 15, seed=4)
    found = feature_lookahead(c, ctx, cuts)
    assert {f.name for f in found} == {"peek_next"}
    assert all(f.first_ms == f.cut_ms and np.isnan(f.truncated) for f in found)
    leaky = rule_lookahead(c, SignalSpec(rule="peek_rule"), cuts, Timeframe.H1)
    assert leaky
    assert {f.name for f in leaky} == {"rule:peek_rule"}
    for spec in (SignalSpec(rule="donchian_copy"), SignalSpec(), SignalSpec(rule=Rule.TSMOM)):
        assert rule_lookahead(c, spec, cuts, Timeframe.H1) == []


# ---- loading plug-in modules -------------------------------------------------------------------


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> str:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / f"{name}.py").write_text("import numpy as np\nimport atra\n" + body)
    return name


FEATURE_BODY = """
@atra.feature("{feature}", family="price", warmup=0)
def f(ff):
    return ff.close
"""


def test_config_modules_are_imported_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = tmp_path / "imports.txt"
    name = _module(tmp_path, monkeypatch, "plug_once", FEATURE_BODY.format(feature="once_feat")
                   + f"\nwith open({str(counter)!r}, 'a') as fh:\n    fh.write('x')\n")  # fmt: skip
    cfg = load_config(None, env={"ATRA__PLUGINS__MODULES": name})
    assert cfg.plugins == PluginsConfig(modules=(name,))
    load_plugins(cfg.plugins)
    load_plugins(cfg.plugins)
    assert counter.read_text() == "x"
    assert feature_origin("once_feat") == name
    assert loaded_plugins().modules[name] == "plugins.modules"


def test_a_failing_module_is_one_line_and_leaves_nothing_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = FEATURE_BODY.format(feature="half_done") + "\nraise RuntimeError('boom')\n"
    name = _module(tmp_path, monkeypatch, "plug_fails", body)
    with pytest.raises(ConfigError) as info:
        load_plugins(PluginsConfig(modules=(name,)))
    assert (
        str(info.value) == "plugins.modules: plug-in module 'plug_fails' failed: RuntimeError: boom"
    )
    assert feature_origin("half_done") is None
    with pytest.raises(ConfigError) as info:
        load_plugins(PluginsConfig(modules=("plug_absent.rules",)))
    assert str(info.value) == (
        "plugins.modules: cannot import plug-in module 'plug_absent.rules': No module named "
        "'plug_absent' (install its package or put it on PYTHONPATH)"
    )


def test_two_plugins_may_not_register_one_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _module(tmp_path, monkeypatch, "plug_a", FEATURE_BODY.format(feature="dup_feat"))
    b = _module(tmp_path, monkeypatch, "plug_b", FEATURE_BODY.format(feature="dup_feat"))
    load_plugins(PluginsConfig(modules=(a,)))
    with pytest.raises(ConfigError) as info:
        load_plugins(PluginsConfig(modules=(b,)))
    assert str(info.value) == (
        "plugins.modules: plug-in module 'plug_b' failed: plug-in plug_b: feature 'dup_feat': "
        "already registered by plug_a"
    )
    assert feature_origin("dup_feat") == "plug_a"


def test_entry_points_of_installed_packages_are_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package's ``atra.plugins`` entry point, as pip would install it (a dist-info folder
    on sys.path), unless the config turns entry points off."""
    name = _module(tmp_path, monkeypatch, "plug_ep", FEATURE_BODY.format(feature="ep_feat"))
    info = tmp_path / "plug_ep_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plug-ep-pkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[atra.plugins]\nmine = {name}\n")
    load_plugins(PluginsConfig(entry_points=False))
    assert feature_origin("ep_feat") is None
    load_plugins(PluginsConfig())
    assert feature_origin("ep_feat") == name
    assert loaded_plugins().modules[name] == "entry point mine = plug_ep (plug-ep-pkg)"


# ---- models trained with a plug-in -------------------------------------------------------------


def test_a_model_records_its_plugins_and_is_refused_without_them(tmp_path: Path) -> None:
    _register_cross()

    @atra.feature("raw_vol", family="volume", warmup=0)
    def raw_vol(ff: FeatureFrame) -> npt.NDArray[np.float64]:
        return ff.volume

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 2)), columns=["raw_vol", "ret_1"])
    for col in EVENT_FEATURES:
        X[col] = rng.normal(size=300)
    y = (X["raw_vol"] + rng.normal(0, 1, 300) > 0).astype(int).to_numpy()
    model = MetaModel(MetaParams(n_estimators=10, num_leaves=4, inner_splits=0)).fit(X, y)
    spec = SignalSpec(rule="my_cross")
    reg = save_model(model, tmp_path, train_start_ms=0, train_end_ms=1, data_hash="d",
                     extra={"signal_spec": {"rule": spec.rule_name}})  # fmt: skip
    meta = json.loads((reg.path / "meta.json").read_text())
    assert meta["plugins"] == {"features": {"raw_vol": HERE}, "rule": {"my_cross": HERE}}
    assert load_model(reg.path, list(X.columns)).model_id == reg.model_id
    unregister_features(HERE)
    with pytest.raises(ModelError) as info:
        load_model(reg.path, list(X.columns))
    assert str(info.value) == (
        f"model {reg.model_id} was trained with the feature 'raw_vol' of plug-in {HERE}, which "
        f"is not registered (add '{HERE}' to [plugins] modules or install its package)"
    )
    # a model of built-ins only records nothing (its id is what it was before plug-ins)
    plain = MetaModel(MetaParams(n_estimators=10, num_leaves=4, inner_splits=0))
    plain.fit(X[["ret_1", *EVENT_FEATURES]], y)
    plain_reg = save_model(plain, tmp_path, train_start_ms=0, train_end_ms=1, data_hash="d")
    assert "plugins" not in json.loads((plain_reg.path / "meta.json").read_text())


def test_the_public_names() -> None:
    assert atra.rule is not None
    assert atra.feature is not None
    assert atra.FeatureFrame is FeatureFrame
    assert atra.Market is Market
