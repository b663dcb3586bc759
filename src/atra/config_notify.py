"""``[notify]``: the live loop's messages to Telegram and to a webhook (Discord / Slack / JSON).

Kept beside :mod:`atra.config` (which includes it as ``AtraConfig.notify``). The bot token and
the webhook URL (whose path is itself a credential) are secrets: read only from
``ATRA__NOTIFY__TELEGRAM_TOKEN`` / ``ATRA__NOTIFY__WEBHOOK_URL``, refused in a config file,
redacted in ``repr`` and never logged.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

NotifyEvent = Literal[
    "signal_taken",
    "order_filled",
    "order_refused",
    "position_closed",
    "guard",
    "error",
    "daily_summary",
]
NOTIFY_EVENTS: Final[tuple[NotifyEvent, ...]] = (
    "signal_taken",
    "order_refused",
    "position_closed",
    "guard",
    "error",
    "daily_summary",
)
"""The default events (``order_filled``, an entry filled, is also available)."""
NOTIFY_SECRET_KEYS: Final[frozenset[str]] = frozenset({"telegram_token", "webhook_url"})


class NotifyConfig(BaseModel):
    """``[notify]``: which destinations get which events, how fast and how many may wait."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    destinations: tuple[Literal["telegram", "webhook"], ...] = ()
    """Enabled destinations; empty (the default): no notifications."""
    events: tuple[NotifyEvent, ...] = NOTIFY_EVENTS
    telegram_chat_id: str | None = Field(default=None, pattern=r"^(-?\d{1,20}|@\w{5,64})$")
    telegram_token: SecretStr | None = None
    telegram_api_url: str = Field(default="https://api.telegram.org", pattern=r"^https?://")
    webhook_url: SecretStr | None = None
    webhook_format: Literal["discord", "slack", "json"] = "discord"
    queue_size: int = Field(default=1000, ge=1, le=100_000)
    """Messages waiting per destination; when full the oldest low-priority one is dropped."""
    rate_per_minute: float = Field(default=20.0, gt=0, le=600, allow_inf_nan=False)
    """Sustained messages per minute per destination (a token bucket)."""
    burst: int = Field(default=5, ge=1, le=100)
    timeout_s: float = Field(default=10.0, gt=0, le=120, allow_inf_nan=False)
    """Whole-request timeout of one send (connect, write, read)."""
    max_retries: int = Field(default=3, ge=0, le=10)
    """Retries of a 5xx answer, a timeout or a connection error (429s wait and do not count)."""
    max_retry_after_s: float = Field(default=300.0, gt=0, le=3600, allow_inf_nan=False)
    """A 429 asking to wait longer than this fails the message instead."""
    flush_s: float = Field(default=5.0, ge=0, le=120, allow_inf_nan=False)
    """On shutdown, time allowed to send what is queued; the rest is counted as dropped."""

    @field_validator("destinations", "events")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate entries in {list(value)}")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("https://", "http://")):
            raise ValueError("expected an http(s):// URL")  # the value itself is never shown
        return value

    @model_validator(mode="after")
    def _credentials(self) -> NotifyConfig:
        if "telegram" in self.destinations:
            if self.telegram_token is None:
                raise ValueError(
                    'destinations has "telegram": set ATRA__NOTIFY__TELEGRAM_TOKEN in the '
                    "environment"
                )
            if self.telegram_chat_id is None:
                raise ValueError('destinations has "telegram": set notify.telegram_chat_id')
        if "webhook" in self.destinations and self.webhook_url is None:
            raise ValueError(
                'destinations has "webhook": set ATRA__NOTIFY__WEBHOOK_URL in the environment'
            )
        return self

    def secret_values(self) -> tuple[str, ...]:
        """The configured secret strings (for the log redaction processor)."""
        found = (self.telegram_token, self.webhook_url)
        return tuple(s.get_secret_value() for s in found if s is not None and s.get_secret_value())
