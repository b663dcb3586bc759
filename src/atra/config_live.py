"""``[live]``: the live loop's settings (:class:`LiveConfig`).

Kept beside :mod:`atra.config` (which includes it as ``AtraConfig.live``), so the configuration
tree stays within its module size.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atra.core.symbols import check_symbol
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError


class LiveConfig(BaseModel):
    """The live loop. ``paper`` is the default: real orders need ``paper = false`` AND the
    ``--live`` flag AND API keys in the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    market: Market = Market.PERP
    timeframe: Timeframe = Timeframe.H1
    bar_close_delay_s: float = Field(default=2.0, ge=0)
    cycle_deadline_s: float = Field(default=30.0, gt=0)
    paper: bool = True
    journal_path: Path = Path("data/journal.sqlite")
    metrics_host: str = Field(default="127.0.0.1", min_length=1)
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    model: str | None = None
    """The meta model that decides (a model directory or an id in the models folder); None:
    every primary signal is taken. ``atra live --model`` overrides it."""
    retrain_days: int | None = Field(default=None, ge=0)
    """Retrain the model every N days while running (``--retrain-days``), as ``atra walkforward``
    trains a fold, in a worker; swapped in at a bar. None or 0: off. Needs a model."""
    retrain_anchor: datetime | None = None
    """Retrains at ``anchor + k * retrain_days`` (UTC); None: the first bar the run decides."""
    retrain_from: datetime | None = None
    """First signal time of the training data (UTC); None: the starting model's."""
    retrain_min_events: int = Field(default=200, ge=1)
    """Fewer labelled training events: the retrain fails, the old model keeps deciding."""
    feed: Literal["ws", "rest"] = "rest"
    """Where closed bars come from: ``"ws"`` Binance's kline WebSocket streams (one combined
    stream, REST backfill after every reconnect and for a bar still missing after
    ``stream_wait_s``), ``"rest"`` one klines request per symbol at each bar close."""
    stream_wait_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    """``feed = "ws"``: how long a cycle waits for a symbol's streamed bar before fetching it
    over REST; must leave the REST fetch time inside ``cycle_deadline_s``."""
    perp_stream_url: str = "wss://fstream.binance.com"
    """``feed = "ws"``: USDT-M futures stream base (Binance's production endpoint; the
    combined stream is ``{base}/stream?streams=...``)."""
    spot_stream_url: str = "wss://stream.binance.com:9443"
    """``feed = "ws"``: spot stream base (a spot run, or the spot counterpart of a perpetual
    run whose model reads basis features)."""

    @model_validator(mode="after")
    def _stream_wait(self) -> LiveConfig:
        if self.feed == "ws" and self.stream_wait_s >= self.cycle_deadline_s:
            raise ValueError(
                f"stream_wait_s ({self.stream_wait_s:g}) must be below cycle_deadline_s "
                f"({self.cycle_deadline_s:g}): a missing bar is fetched over REST after it"
            )
        return self

    @field_validator("perp_stream_url", "spot_stream_url")
    @classmethod
    def _stream_url(cls, value: str) -> str:
        if not value.startswith(("wss://", "ws://")) or len(value) <= len("wss://"):
            raise ValueError(f"expected a ws:// or wss:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one symbol is required")
        for sym in value:
            try:
                check_symbol(sym, "live.symbols")
            except ConfigError as exc:  # pydantic reports a ValueError with the field's path
                raise ValueError(str(exc)) from None
        if len(set(value)) != len(value):
            raise ValueError("symbols must be unique")
        return value

    @field_validator("market", mode="before")
    @classmethod
    def _market(cls, value: object) -> object:
        try:
            return Market.parse(value) if isinstance(value, str) else value
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("timeframe", mode="before")
    @classmethod
    def _timeframe(cls, value: object) -> object:
        try:
            return Timeframe.parse(value) if isinstance(value, str) else value
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
