"""The typed, frozen configuration tree, read from TOML and ``ATRA__*`` environment variables.

``load_config(path)`` is called once (by the CLI) and the resulting :class:`AtraConfig` is passed
down; nothing else reads the file or the environment. Every model is frozen and rejects unknown
keys, so a typo is a one-line :class:`~atra.errors.ConfigError` naming the file and the key path::

    config.toml: risk.max_leverag: unknown key

Environment overrides follow freqtrade's convention, ``ATRA__<SECTION>__<KEY>=value`` (nested
models add a level: ``ATRA__META__LGBM__NUM_LEAVES=63``); names are case-insensitive and values
are coerced to the field's type (``"0.01"`` -> float, ``"true"`` -> bool, ``"BTCUSDT,ETHUSDT"`` or
a JSON list -> tuple). An override wins over the file.

Secrets (``exchange.api_key`` / ``api_secret``, ``status_api.token``, ``notify.telegram_token``
/ ``webhook_url``) come only from ``ATRA__<SECTION>__<KEY>``, a file holding one is refused; as
:class:`pydantic.SecretStr` they are redacted in ``repr`` / ``model_dump_json``, read at the edge.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from atra.config_live import LiveConfig
from atra.config_notify import NOTIFY_SECRET_KEYS, NotifyConfig
from atra.core.bounds import MAX_ABS_FUNDING_RATE, MAX_PRICE, MIN_PRICE, Limits
from atra.errors import ConfigError

ENV_PREFIX: Final[str] = "ATRA__"
SECRET_KEYS: Final = frozenset({"api_key", "api_secret", "token"}) | NOTIFY_SECRET_KEYS
MAX_RISK_PER_TRADE: Final[float] = 0.02
"""The hard cap on the fraction of equity at risk in one trade (2%)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BoundsConfig(_Frozen):
    """``[data.bounds]``: a price outside ``[min_price, max_price)`` or a funding rate beyond
    ``+-max_abs_funding_rate`` is refused by ``data import / download / resample / check``,
    naming the file, the row and the key (:class:`~atra.core.bounds.Limits`)."""

    min_price: float = Field(default=MIN_PRICE, gt=0, allow_inf_nan=False)
    max_price: float = Field(default=MAX_PRICE, gt=0, allow_inf_nan=False)
    max_abs_funding_rate: float = Field(default=MAX_ABS_FUNDING_RATE, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> BoundsConfig:
        if self.min_price >= self.max_price:
            raise ValueError(f"min_price ({self.min_price:g}) must be below max_price")
        return self

    def limits(self) -> Limits:
        """The core's :class:`~atra.core.bounds.Limits` with these bounds (no clock)."""
        return Limits(min_price=self.min_price, max_price=self.max_price,
                      max_abs_funding_rate=self.max_abs_funding_rate)  # fmt: skip


class DataConfig(_Frozen):
    """Where candles and funding live, and what a plausible stored value is."""

    data_dir: Path = Path("data")
    exchange: Literal["binance"] = "binance"
    bounds: BoundsConfig = Field(default_factory=BoundsConfig)


RULE_PARAMS: Final[dict[str, dict[str, int]]] = {
    "ema_cross": {"fast": 20, "slow": 50},
    "donchian": {"n": 20},
    "tsmom": {"lookback": 168},
}
"""Each built-in primary rule's parameters (whole numbers of bars, >= 1) and their defaults."""


class StrategyConfig(_Frozen):
    """The primary momentum model and its triple-barrier exits (multiples of ATR)."""

    rule: str = Field(default="ema_cross", pattern=r"^[a-z][a-z0-9_]*$")
    params: dict[str, float] = Field(default_factory=lambda: {"fast": 20.0, "slow": 50.0})
    """The rule's parameters (see :data:`RULE_PARAMS`); an unknown name is refused, a missing
    one takes its default."""
    atr_window: int = Field(default=14, ge=1)
    tp1_atr: float = Field(default=1.0, gt=0)
    tp2_atr: float = Field(default=2.0, gt=0)
    sl_atr: float = Field(default=1.0, gt=0)
    horizon_bars: int = Field(default=24, ge=1)
    tp1_fraction: float = Field(default=1.0, gt=0, le=1)
    """The share of the position closed at TP1; the rest runs to TP2 (or the stop / time
    barrier). 1.0 (default) closes everything at TP1, so ``tp2_atr`` is unused."""
    move_to_be: bool = False
    """After a TP1 partial, move the remainder's stop to the entry price (break-even) from the
    next bar on."""
    spot_shorts: bool = False
    """Spot trades long only unless true; a spot short is a margin short that pays
    ``costs.spot_borrow_bps_per_hour`` (which must then be stated, > 0). Perpetuals always
    trade both sides."""

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        rule = info.data.get("rule")
        known = RULE_PARAMS.get(rule) if isinstance(rule, str) else None
        if known is None:
            return params  # the rule itself is reported (pattern) or by settings_from_config
        for name, value in params.items():
            if name not in known:
                raise ValueError(
                    f"{name}: unknown parameter of rule {rule} (expected {', '.join(known)})"
                )
            if not (math.isfinite(value) and value == int(value) and value >= 1):
                raise ValueError(f"{name}: expected a whole number of bars >= 1, got {value:g}")
        merged = {**known, **{k: int(v) for k, v in params.items()}}
        if rule == "ema_cross" and merged["fast"] >= merged["slow"]:
            raise ValueError(f"fast ({merged['fast']}) must be < slow ({merged['slow']})")
        return params

    def rule_params(self) -> dict[str, int]:
        """The rule's parameters with defaults filled in (whole numbers of bars)."""
        known = RULE_PARAMS.get(self.rule, {})
        return {**known, **{k: int(v) for k, v in self.params.items()}}

    @model_validator(mode="after")
    def _tp_order(self) -> StrategyConfig:
        if self.tp2_atr < self.tp1_atr:
            raise ValueError(f"tp2_atr ({self.tp2_atr}) must be >= tp1_atr ({self.tp1_atr})")
        return self


class CostsConfig(_Frozen):
    """Trading costs in basis points of notional (1 bp = 0.01%)."""

    maker_fee_bps: float = Field(default=2.0, ge=0)
    taker_fee_bps: float = Field(default=5.0, ge=0)
    slippage_bps: float = Field(default=2.0, ge=0)
    spot_borrow_bps_per_hour: float = Field(default=0.0, ge=0, lt=100, allow_inf_nan=False)
    """Margin interest of a spot short: bps of the borrowed notional (quantity x mark) per hour
    held. Binance cross-margin hourly rates of BTC / ETH are of the order of 0.04-0.2 bps/h
    (0.0004%-0.002%). Spot shorts exist only with ``strategy.spot_shorts = true``."""


class RiskConfig(_Frozen):
    """Sizing and the guards the live loop enforces before any order."""

    risk_per_trade: float = Field(default=0.01, gt=0, le=MAX_RISK_PER_TRADE)
    kelly: Literal["none", "full", "half"] = "half"
    max_open_positions: int = Field(default=5, ge=1)
    max_per_symbol: int = Field(default=1, ge=1)
    max_gross_leverage: float = Field(default=3.0, gt=0)
    max_daily_loss: float = Field(default=0.05, gt=0, le=1)
    kill_switch_file: Path = Path("KILL")


class LgbmConfig(_Frozen):
    """LightGBM parameters of the meta model (deterministic by default)."""

    num_leaves: int = Field(default=31, ge=2)
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    n_estimators: int = Field(default=300, ge=1)
    min_child_samples: int = Field(default=50, ge=1)
    feature_fraction: float = Field(default=0.8, gt=0, le=1)
    bagging_fraction: float = Field(default=0.8, gt=0, le=1)
    bagging_freq: int = Field(default=1, ge=0)
    lambda_l2: float = Field(default=1.0, ge=0)
    seed: int = 42


class MetaConfig(_Frozen):
    """The meta model: when to take a primary signal, and how often to retrain."""

    threshold_mode: Literal["fixed", "f1", "expected_value"] = "fixed"
    threshold: float = Field(default=0.55, gt=0, lt=1)
    retrain_days: int = Field(default=30, ge=1)
    embargo_hours: float = Field(default=24.0, ge=0)
    lgbm: LgbmConfig = Field(default_factory=LgbmConfig)


class ExchangeConfig(_Frozen):
    """Exchange endpoints and HTTP client limits. Keys come only from the environment."""

    spot_base_url: str = Field(default="https://api.binance.com", pattern=r"^https?://")
    perp_base_url: str = Field(default="https://fapi.binance.com", pattern=r"^https?://")
    connect_timeout_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    read_timeout_s: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    max_retries: int = Field(default=5, ge=0)
    max_connections: int = Field(default=10, ge=1)
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None


class ResearchConfig(_Frozen):
    """``[research]``: where ``atra search``, ``atra walkforward`` and ``atra ablation`` run
    their fold fits (``--backend``, ``--address``, ``--workers`` override these)."""

    backend: Literal["local", "ray", "dask"] = "local"
    address: str | None = Field(default=None, min_length=1)
    """A running ray / dask cluster (as ``--address``); None: a local one is started."""
    workers: int | None = Field(default=None, ge=1)
    """Workers of the local ray / dask cluster (None: the command's ``--n-jobs``)."""

    @model_validator(mode="after")
    def _cluster_stated_once(self) -> ResearchConfig:
        if self.address is not None and self.backend == "local":
            raise ValueError("research.address needs research.backend = 'ray' or 'dask'")
        if self.address is not None and self.workers is not None:
            raise ValueError(
                "research.workers sizes a local cluster; with research.address the running "
                "cluster's workers are used (set one of them)"
            )
        return self


class StatusApiConfig(_Frozen):
    """``[status_api]``: the read-only HTTP API; ``token`` only from ATRA__STATUS_API__TOKEN."""

    enabled: bool = False
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8108, ge=0, le=65535)
    token: SecretStr | None = None


class ObsConfig(_Frozen):
    """Logging. ``auto`` renders pretty lines on a TTY and JSON lines otherwise."""

    log_format: Literal["json", "console", "auto"] = "auto"
    log_file: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class SeriesConfig(_Frozen):
    """A ``[[features.series]]`` entry: one daily series (keys: ``examples/series.toml``)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    path: Path | None = None
    source: Literal["fear_greed", "coinmetrics"] | None = None
    asset: str | None = Field(default=None, pattern=r"^[a-z0-9]{2,12}$")
    url: str | None = Field(default=None, pattern=r"^https?://")
    columns: tuple[str, ...] = ()
    time_col: str = Field(default="time", pattern=r"^\w+$")
    lag_hours: float = Field(ge=0, le=720, allow_inf_nan=False)
    max_age_hours: float = Field(gt=0, le=8760, allow_inf_nan=False)
    family: Literal["alternative", "fundamental"]
    applies_to: tuple[str, ...] = ()

    @field_validator("applies_to", mode="before")
    @classmethod
    def _market(cls, value: object) -> object:
        if isinstance(value, str) and value != "market":
            raise ValueError('expected "market" or a list of base assets such as ["ETH"]')
        return () if value == "market" else value

    @model_validator(mode="after")
    def _rules(self) -> SeriesConfig:
        from atra.core.features.context import series_config_problem  # loads pandas: only here

        problem = series_config_problem(
            self.name, self.family, self.lag_hours * 3_600_000, self.columns, self.applies_to,
            self.source, self.asset, has_url=self.url is not None,
        )  # fmt: skip
        if problem is not None:
            raise ValueError(problem)
        return self


class FeaturesConfig(_Frozen):
    """Inputs of the features beside the candles."""

    series: tuple[SeriesConfig, ...] = ()
    """External daily series, read by every deciding command (``examples/series.toml``)."""

    @field_validator("series")
    @classmethod
    def _unique(cls, value: tuple[SeriesConfig, ...]) -> tuple[SeriesConfig, ...]:
        names = [s.name for s in value]
        if len(set(names)) != len(names):
            raise ValueError(f"series names must be unique, got {names}")
        return value


class PluginsConfig(_Frozen):
    """The user's own rules and features (``@atra.rule`` / ``@atra.feature``): ``modules`` to
    import (``["my_pkg.rules"]``, installed or on ``PYTHONPATH``) and, with ``entry_points``,
    every installed package's ``atra.plugins`` entry point; loaded by the CLI."""

    modules: tuple[Annotated[str, Field(pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")], ...] = ()
    entry_points: bool = True


class AtraConfig(_Frozen):
    """The whole configuration tree; every section has working defaults."""

    data: DataConfig = Field(default_factory=DataConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    costs: CostsConfig = Field(default_factory=CostsConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    meta: MetaConfig = Field(default_factory=MetaConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)
    exchange: ExchangeConfig = Field(default_factory=ExchangeConfig)
    research: ResearchConfig = Field(default_factory=ResearchConfig)
    status_api: StatusApiConfig = Field(default_factory=StatusApiConfig)
    obs: ObsConfig = Field(default_factory=ObsConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)

    @model_validator(mode="after")
    def _spot_borrow_stated(self) -> AtraConfig:
        if self.strategy.spot_shorts and not self.costs.spot_borrow_bps_per_hour > 0:
            raise ValueError(
                "strategy.spot_shorts = true needs costs.spot_borrow_bps_per_hour > 0 (a spot "
                "short borrows the asset on margin; state its hourly interest, e.g. 0.1 = "
                "0.001%/h)"
            )
        return self

    def secret_values(self) -> tuple[str, ...]:
        """The configured secret strings, for the log redaction processor (never logged)."""
        found = (self.exchange.api_key, self.exchange.api_secret, self.status_api.token)
        return tuple(s.get_secret_value() for s in found if s is not None and s.get_secret_value())


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> AtraConfig:
    """Read ``path`` (TOML; defaults only when ``None``), apply ``ATRA__*`` overrides from ``env``
    (``os.environ`` when ``None``) and validate. Any problem is one :class:`ConfigError` line."""
    source = path.name if path is not None else "defaults"
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_toml(path)
        _refuse_file_secrets(raw, source)
    env_map = os.environ if env is None else env
    env_paths: dict[tuple[str, ...], str] = {}
    for name, value in sorted(env_map.items()):
        if name.upper().startswith(ENV_PREFIX):
            keys = tuple(k.lower() for k in name[len(ENV_PREFIX) :].split("__"))
            if not all(keys):
                raise ConfigError(f"{name}: malformed override (expected ATRA__SECTION__KEY)")
            _set_path(raw, keys, _coerce_env(keys, value), name)
            env_paths[keys] = name
    try:
        return AtraConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, env_paths)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: invalid TOML: {exc}") from None


def _refuse_file_secrets(raw: Mapping[str, Any], source: str) -> None:
    for name in ("exchange", "status_api", "notify"):
        section = raw.get(name)
        for key in sorted(SECRET_KEYS & set(section)) if isinstance(section, Mapping) else ():
            env_name = f"{ENV_PREFIX}{name.upper()}__{key.upper()}"
            raise ConfigError(
                f"{source}: {name}.{key}: secrets are read only from the environment "
                f"({env_name}); remove it from the file"
            )


def _set_path(raw: dict[str, Any], keys: tuple[str, ...], value: object, name: str) -> None:
    node = raw
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{name}: {'.'.join(keys)}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def _field_annotation(keys: tuple[str, ...]) -> object:
    """The annotation of the field at ``keys`` (``None`` when the path is not a field)."""
    model: object = AtraConfig
    annotation: object = None
    for key in keys:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(key)
        if field is None:
            return None
        annotation = field.annotation
        model = annotation
    return annotation


def _is_optional(annotation: object) -> bool:
    origin = get_origin(annotation)
    return origin in (Union, types.UnionType) and type(None) in get_args(annotation)


def _coerce_env(keys: tuple[str, ...], value: str) -> object:
    """Turn an environment string into what pydantic's lax mode accepts for that field."""
    annotation = _field_annotation(keys)
    text = value.strip()
    if text == "" and _is_optional(annotation):
        return None
    if keys[-1] in SECRET_KEYS:
        return value  # taken verbatim: a secret is never reinterpreted
    if get_origin(annotation) in (tuple, list, dict) or text.startswith(("[", "{")):
        if text.startswith(("[", "{")):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return value  # let validation report the type error on this key
        if get_origin(annotation) in (tuple, list):
            return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _msg_of(err: Mapping[str, Any]) -> str:
    """The message of one pydantic error without its ``Value error, `` prefix."""
    return str(err["msg"]).removeprefix("Value error, ")


def _format_errors(
    exc: ValidationError, source: str, env_paths: Mapping[tuple[str, ...], str]
) -> str:
    parts = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        origin = source
        for env_path, env_name in env_paths.items():  # the override at, above or below loc
            n = min(len(env_path), len(loc))
            if env_path[:n] == loc[:n]:
                origin = env_name
                break
        key = ".".join(loc)
        if not loc:  # a rule across sections: the override it names, else the file
            named = (name for path, name in env_paths.items() if ".".join(path) in _msg_of(err))
            parts.append(f"{next(named, source)}: {_msg_of(err)}")
            continue
        if err["type"] == "extra_forbidden":
            parts.append(f"{origin}: {key}: unknown key")
            continue
        msg = _msg_of(err)
        if not set(loc) & SECRET_KEYS:
            shown = repr(err.get("input"))
            if len(shown) <= 60:
                msg += f" (got {shown})"
        parts.append(f"{origin}: {key}: {msg}")
    return "; ".join(parts)
