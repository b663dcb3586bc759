"""The typed config tree: TOML file, ATRA__ environment overrides, secrets, one-line errors."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr, ValidationError

from atra.config import MAX_RISK_PER_TRADE, AtraConfig, load_config
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "atra.toml"


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={} if env is None else env)
    msg = str(info.value)
    assert "\n" not in msg, "config errors are one line"
    return msg


def field_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(field_paths(ann, (*prefix, name)))
        else:
            out.append((*prefix, name))
    return out


# ------------------------------------------------------------------ defaults and the example


def test_defaults_without_file() -> None:
    cfg = load_config(None, env={})
    assert cfg == AtraConfig()
    assert cfg.live.paper is True
    assert cfg.live.metrics_host == "127.0.0.1"
    assert cfg.live.market is Market.PERP
    assert cfg.live.timeframe is Timeframe.H1
    assert cfg.risk.risk_per_trade <= MAX_RISK_PER_TRADE
    assert cfg.exchange.api_key is None
    assert cfg.secret_values() == ()


def test_example_file_loads_and_states_the_defaults() -> None:
    assert load_config(EXAMPLE, env={}) == AtraConfig()


def test_example_documents_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    for path in field_paths(AtraConfig):
        section = raw
        for key in path[:-1]:
            section = section.get(key, {})
        if path[-1] not in section:  # optional or secret keys: documented in a comment
            assert re.search(rf"#.*\b{path[-1]}\b", text), f"{'.'.join(path)} is undocumented"


def test_models_are_frozen() -> None:
    cfg = AtraConfig()
    with pytest.raises(ValidationError):
        cfg.risk.risk_per_trade = 0.015  # type: ignore[misc]


def test_file_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[live]
symbols = ["SOLUSDT"]
market = "spot"
timeframe = "15m"
paper = false
[meta.lgbm]
num_leaves = 63
[obs]
log_level = "debug"
log_file = "logs/atra.jsonl"
""",
    )
    cfg = load_config(path, env={})
    assert cfg.live.symbols == ("SOLUSDT",)
    assert cfg.live.market is Market.SPOT
    assert cfg.live.timeframe is Timeframe.M15
    assert cfg.live.paper is False
    assert cfg.meta.lgbm.num_leaves == 63
    assert cfg.obs.log_level == "DEBUG"
    assert cfg.obs.log_file == Path("logs/atra.jsonl")
    assert cfg.risk == AtraConfig().risk  # untouched sections keep their defaults


# ------------------------------------------------------------------ file errors


def test_unknown_key_names_file_and_path(tmp_path: Path) -> None:
    path = write(tmp_path, "[risk]\nmax_leverag = 3\n")
    assert error_of(path) == "config.toml: risk.max_leverag: unknown key"


def test_unknown_section_and_nested_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[riks]\nx = 1\n[meta.lgbm]\nleaves = 3\n", name="prod.toml")
    msg = error_of(path)
    assert "prod.toml: riks: unknown key" in msg
    assert "prod.toml: meta.lgbm.leaves: unknown key" in msg


@pytest.mark.parametrize(
    ("toml", "path_expected", "fragment"),
    [
        ('[risk]\nrisk_per_trade = "abc"', "risk.risk_per_trade", "valid number"),
        ("[risk]\nrisk_per_trade = 0.05", "risk.risk_per_trade", "less than or equal to 0.02"),
        ("[risk]\nrisk_per_trade = 0", "risk.risk_per_trade", "greater than 0"),
        ('[risk]\nkelly = "quarter"', "risk.kelly", "'none', 'full' or 'half'"),
        ("[live]\nmetrics_port = 70000", "live.metrics_port", "65535"),
        ('[live]\nsymbols = ["btcusdt"]', "live.symbols", "upper-case"),
        ('[live]\nsymbols = ["BTCUSDT", "BTCUSDT"]', "live.symbols", "unique"),
        ("[live]\nsymbols = []", "live.symbols", "at least one symbol"),
        ('[live]\ntimeframe = "7h"', "live.timeframe", "unknown timeframe '7h'"),
        ('[live]\nmarket = "options"', "live.market", "expected spot or perp"),
        ('[live]\npaper = "maybe"', "live.paper", "valid boolean"),
        (
            "[strategy]\ntp1_atr = 3.0\ntp2_atr = 2.0",
            "strategy",
            "tp2_atr (2.0) must be >= tp1_atr",
        ),
        (
            "[strategy.params]\nfast = 20\nslwo = 30",
            "strategy.params",
            "slwo: unknown parameter of rule ema_cross (expected fast, slow)",
        ),
        (
            "[strategy.params]\nfast = 20\nslow = 5",
            "strategy.params",
            "fast (20) must be < slow (5)",
        ),
        (
            '[strategy]\nrule = "donchian"\n[strategy.params]\nn = 2.5',
            "strategy.params",
            "n: expected a whole number of bars >= 1, got 2.5",
        ),
        (
            '[strategy]\nrule = "tsmom"\n[strategy.params]\nfast = 5',
            "strategy.params",
            "fast: unknown parameter of rule tsmom (expected lookback)",
        ),
        ("[meta]\nthreshold = 1.0", "meta.threshold", "less than 1"),
        ("[exchange]\nread_timeout_s = inf", "exchange.read_timeout_s", "finite number"),
        ("[exchange]\nconnect_timeout_s = nan", "exchange.connect_timeout_s", "finite number"),
        ("[meta]\nthreshold = 0", "meta.threshold", "greater than 0"),
        ('[obs]\nlog_format = "xml"', "obs.log_format", "'json', 'console' or 'auto'"),
        ('[exchange]\nspot_base_url = "ftp://x"', "exchange.spot_base_url", "pattern"),
        ("risk = 5", "risk", "valid dictionary"),
    ],
)
def test_wrong_values_are_one_line_errors(
    tmp_path: Path, toml: str, path_expected: str, fragment: str
) -> None:
    msg = error_of(write(tmp_path, toml + "\n"))
    assert msg.startswith(f"config.toml: {path_expected}: "), msg
    assert fragment in msg


def test_long_inputs_are_not_echoed(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, f'[strategy]\nrule = "{"X" * 80}"\n'))
    assert msg.startswith("config.toml: strategy.rule: ")
    assert "X" * 80 not in msg


def test_several_errors_share_one_line(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "[risk]\nmax_open_positions = 0\nmax_per_symbol = 0\n"))
    assert msg.count("config.toml: risk.") == 2
    assert "; " in msg


def test_missing_file(tmp_path: Path) -> None:
    assert "config file not found" in error_of(tmp_path / "nope.toml")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert "is a directory" in error_of(tmp_path)


def test_invalid_toml(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "[risk\nx = \n"))
    assert msg.startswith("config.toml: invalid TOML: ")
    assert "line 1" in msg


@given(st.floats(min_value=1e-9, max_value=MAX_RISK_PER_TRADE))
def test_risk_per_trade_within_cap_accepted(value: float) -> None:
    cfg = load_config(None, env={"ATRA__RISK__RISK_PER_TRADE": repr(value)})
    assert cfg.risk.risk_per_trade == value


@given(st.floats(min_value=MAX_RISK_PER_TRADE, max_value=10.0, exclude_min=True))
def test_risk_per_trade_above_cap_refused(value: float) -> None:
    with pytest.raises(ConfigError, match=r"risk\.risk_per_trade: .*less than or equal to 0\.02"):
        load_config(None, env={"ATRA__RISK__RISK_PER_TRADE": repr(value)})


# ------------------------------------------------------------------ environment overrides


def test_env_overrides_are_coerced_and_win_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[risk]\nrisk_per_trade = 0.01\n[live]\nsymbols = ['BTCUSDT']\n")
    env = {
        "ATRA__RISK__RISK_PER_TRADE": "0.005",
        "ATRA__RISK__MAX_OPEN_POSITIONS": "3",
        "ATRA__LIVE__PAPER": "false",
        "ATRA__LIVE__SYMBOLS": "ETHUSDT, SOLUSDT",
        "ATRA__LIVE__MARKET": "futures",
        "ATRA__LIVE__TIMEFRAME": "4h",
        "atra__obs__log_level": "warning",  # names are case-insensitive
        "ATRA__META__LGBM__NUM_LEAVES": "63",
        "ATRA__STRATEGY__PARAMS": '{"fast": 10, "slow": 30}',
        "ATRA__DATA__DATA_DIR": "/srv/atra/data",
        "HOME": "/root",  # not ours: ignored
    }
    cfg = load_config(path, env=env)
    assert cfg.risk.risk_per_trade == 0.005
    assert cfg.risk.max_open_positions == 3
    assert cfg.live.paper is False
    assert cfg.live.symbols == ("ETHUSDT", "SOLUSDT")
    assert cfg.live.market is Market.PERP
    assert cfg.live.timeframe is Timeframe.H4
    assert cfg.obs.log_level == "WARNING"
    assert cfg.meta.lgbm.num_leaves == 63
    assert cfg.strategy.params == {"fast": 10.0, "slow": 30.0}
    assert cfg.data.data_dir == Path("/srv/atra/data")


def test_env_json_list_and_empty_optional() -> None:
    env = {"ATRA__LIVE__SYMBOLS": '["XRPUSDT"]', "ATRA__OBS__LOG_FILE": ""}
    cfg = load_config(None, env=env)
    assert cfg.live.symbols == ("XRPUSDT",)
    assert cfg.obs.log_file is None


def test_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRA__LIVE__METRICS_PORT", "9200")
    assert load_config(None).live.metrics_port == 9200


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"ATRA__RISK__MAX_LEVERAG": "3"},
            "ATRA__RISK__MAX_LEVERAG: risk.max_leverag: unknown key",
        ),
        ({"ATRA__NOPE__X": "1"}, "ATRA__NOPE__X: nope: unknown key"),
        ({"ATRA__LIVE__METRICS_PORT": "abc"}, "ATRA__LIVE__METRICS_PORT: live.metrics_port: "),
        ({"ATRA__LIVE__SYMBOLS": "[BTC"}, "ATRA__LIVE__SYMBOLS: live.symbols: "),
        ({"ATRA__LIVE__PAPER__X": "1"}, "ATRA__LIVE__PAPER__X: live.paper: "),
        ({"ATRA__STRATEGY__PARAMS": "fast=3"}, "ATRA__STRATEGY__PARAMS: strategy.params: "),
        ({"ATRA__RISK____X": "1"}, "ATRA__RISK____X: malformed override"),
        ({"ATRA__": "1"}, "ATRA__: malformed override"),
    ],
)
def test_env_errors_name_the_variable(env: dict[str, str], expected: str) -> None:
    assert error_of(None, env).startswith(expected)


def test_env_into_a_value_that_is_not_a_section(tmp_path: Path) -> None:
    path = write(tmp_path, '[risk]\nkelly = "half"\n')
    msg = error_of(path, {"ATRA__RISK__KELLY__MODE": "full"})
    assert msg == "ATRA__RISK__KELLY__MODE: risk.kelly.mode: kelly is not a section"


def test_file_errors_still_name_the_file_when_env_is_set(tmp_path: Path) -> None:
    path = write(tmp_path, "[risk]\nmax_daily_loss = 2.0\n")
    msg = error_of(path, {"ATRA__RISK__RISK_PER_TRADE": "0.01"})
    assert msg.startswith("config.toml: risk.max_daily_loss: ")


# ------------------------------------------------------------------ secrets

API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
API_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"


def secret_env() -> dict[str, str]:
    return {"ATRA__EXCHANGE__API_KEY": API_KEY, "ATRA__EXCHANGE__API_SECRET": API_SECRET}


def test_secrets_come_from_env_and_are_redacted() -> None:
    cfg = load_config(None, env=secret_env())
    assert isinstance(cfg.exchange.api_key, SecretStr)
    assert cfg.exchange.api_key.get_secret_value() == API_KEY
    assert cfg.secret_values() == (API_KEY, API_SECRET)
    for text in (
        repr(cfg),
        str(cfg),
        repr(cfg.exchange),
        cfg.model_dump_json(),
        str(cfg.model_dump()),
    ):
        assert API_KEY not in text
        assert API_SECRET not in text


def test_secret_type_error_does_not_echo_the_value() -> None:
    msg = error_of(None, {"ATRA__EXCHANGE__API_KEY__PART": API_KEY})
    assert msg.startswith("ATRA__EXCHANGE__API_KEY__PART: exchange.api_key: ")
    assert API_KEY not in msg


def test_secret_taken_verbatim() -> None:
    cfg = load_config(None, env={"ATRA__EXCHANGE__API_SECRET": "[not-json, kept as is"})
    assert cfg.exchange.api_secret is not None
    assert cfg.exchange.api_secret.get_secret_value() == "[not-json, kept as is"


def test_empty_secret_means_none() -> None:
    cfg = load_config(None, env={"ATRA__EXCHANGE__API_KEY": ""})
    assert cfg.exchange.api_key is None


@pytest.mark.parametrize("key", ["api_key", "api_secret"])
def test_secrets_in_file_are_refused_without_echo(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, f'[exchange]\n{key} = "{API_KEY}"\n')
    msg = error_of(path)
    assert msg.startswith(
        f"config.toml: exchange.{key}: secrets are read only from the environment"
    )
    assert f"ATRA__EXCHANGE__{key.upper()}" in msg
    assert API_KEY not in msg


def test_nested_override_of_whole_model_via_json() -> None:
    payload: dict[str, Any] = {"num_leaves": 15, "seed": 7}
    cfg = load_config(None, env={"ATRA__META__LGBM": json.dumps(payload)})
    assert (cfg.meta.lgbm.num_leaves, cfg.meta.lgbm.seed) == (15, 7)


def test_rule_params_take_defaults_for_missing_names(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[strategy.params]\nslow = 80\n"), env={})
    assert cfg.strategy.rule_params() == {"fast": 20, "slow": 80}


def test_rule_param_errors_name_the_env_variable() -> None:
    msg = error_of(None, env={"ATRA__STRATEGY__PARAMS": '{"fast": 50, "slow": 20}'})
    assert msg == (
        "ATRA__STRATEGY__PARAMS: strategy.params: fast (50) must be < slow (20) "
        "(got {'fast': 50, 'slow': 20})"
    )


# ------------------------------------------------------------------ spot shorts and borrow


def test_spot_is_long_only_by_default() -> None:
    cfg = AtraConfig()
    assert cfg.strategy.spot_shorts is False
    assert cfg.costs.spot_borrow_bps_per_hour == 0.0


@pytest.mark.parametrize(
    "toml",
    [
        "[strategy]\nspot_shorts = true\n",
        "[strategy]\nspot_shorts = true\n[costs]\nspot_borrow_bps_per_hour = 0.0\n",
    ],
)
def test_spot_shorts_need_a_stated_borrow_rate(tmp_path: Path, toml: str) -> None:
    msg = error_of(write(tmp_path, toml))
    assert msg.startswith("config.toml: strategy.spot_shorts = true needs "), msg
    assert "costs.spot_borrow_bps_per_hour > 0" in msg
    with pytest.raises(ValidationError, match="spot_borrow_bps_per_hour"):
        AtraConfig.model_validate({"strategy": {"spot_shorts": True}})


def test_spot_shorts_with_a_borrow_rate(tmp_path: Path) -> None:
    toml = "[strategy]\nspot_shorts = true\n[costs]\nspot_borrow_bps_per_hour = 0.1\n"
    cfg = load_config(write(tmp_path, toml), env={})
    assert cfg.strategy.spot_shorts is True
    assert cfg.costs.spot_borrow_bps_per_hour == 0.1
    # a rate without spot shorts is allowed (it is simply never charged)
    rate_only = load_config(None, env={"ATRA__COSTS__SPOT_BORROW_BPS_PER_HOUR": "0.2"})
    assert (rate_only.strategy.spot_shorts, rate_only.costs.spot_borrow_bps_per_hour) == (
        False,
        0.2,
    )


def test_spot_shorts_error_names_the_override() -> None:
    msg = error_of(None, {"ATRA__STRATEGY__SPOT_SHORTS": "true"})
    assert msg.startswith("ATRA__STRATEGY__SPOT_SHORTS: strategy.spot_shorts = true needs")


@pytest.mark.parametrize(
    ("value", "fragment"), [("-0.1", "greater than or equal to 0"), ("nan", "finite number")]
)
def test_borrow_rate_must_be_a_finite_rate(tmp_path: Path, value: str, fragment: str) -> None:
    msg = error_of(None, {"ATRA__COSTS__SPOT_BORROW_BPS_PER_HOUR": value})
    assert msg.startswith(
        "ATRA__COSTS__SPOT_BORROW_BPS_PER_HOUR: costs.spot_borrow_bps_per_hour: "
    ), msg
    assert fragment in msg


# ------------------------------------------------------------------ [data.bounds]


def test_data_bounds_build_the_cores_limits(tmp_path: Path) -> None:
    from atra.core.bounds import DEFAULT_LIMITS

    assert load_config(None, env={}).data.bounds.limits() == DEFAULT_LIMITS
    toml = "[data.bounds]\nmin_price = 0.5\nmax_price = 2e5\nmax_abs_funding_rate = 0.01\n"
    limits = load_config(write(tmp_path, toml), env={}).data.bounds.limits()
    assert (limits.min_price, limits.max_price, limits.max_abs_funding_rate) == (0.5, 2e5, 0.01)
    assert limits.now_ms is None  # the clock is the caller's
    env = {"ATRA__DATA__BOUNDS__MAX_PRICE": "1e6"}
    assert load_config(write(tmp_path, toml), env=env).data.bounds.max_price == 1e6


@pytest.mark.parametrize(
    ("toml", "key", "fragment"),
    [
        ("max_price = inf", "data.bounds.max_price", "finite number"),
        ("max_price = nan", "data.bounds.max_price", "finite number"),
        ("max_price = 0", "data.bounds.max_price", "greater than 0"),
        ("min_price = -1e-8", "data.bounds.min_price", "greater than 0"),
        ('min_price = "cheap"', "data.bounds.min_price", "valid number"),
        ("max_abs_funding_rate = -0.01", "data.bounds.max_abs_funding_rate", "greater than 0"),
        ("max_abs_funding_rate = inf", "data.bounds.max_abs_funding_rate", "finite number"),
        ("min_price = 10\nmax_price = 5", "data.bounds", "min_price (10) must be below max_price"),
        ("max_prize = 5", "data.bounds.max_prize", "unknown key"),
    ],
)
def test_a_bad_bound_is_refused_at_load_naming_the_key(
    tmp_path: Path, toml: str, key: str, fragment: str
) -> None:
    msg = error_of(write(tmp_path, f"[data.bounds]\n{toml}\n"))
    assert msg.startswith(f"config.toml: {key}: "), msg
    assert fragment in msg
