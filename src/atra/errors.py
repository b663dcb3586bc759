"""The ATRA error tree, grouped by what the caller must do.

Every layer may import this module; it imports nothing from ATRA. The CLI maps each class to
its own exit code and prints one line ``ErrorType: message``.
"""

from __future__ import annotations


class AtraError(Exception):
    """Base of every error ATRA raises on purpose. ``exit_code`` is the CLI's exit status."""

    exit_code: int = 1
    hint: str = ""


class ConfigError(AtraError):
    """Bad configuration or command-line arguments: fix and rerun."""

    exit_code = 3


class DataError(AtraError):
    """Bad or missing data (file, row, rule): never retried."""

    exit_code = 4


class ModelError(AtraError):
    """A model cannot be trained, loaded or applied (schema mismatch, no data)."""

    exit_code = 5


class ExchangeError(AtraError):
    """The exchange answered something unusable, or refused the request for good."""

    exit_code = 6


class TransientExchangeError(ExchangeError):
    """A failure worth retrying (timeout, connection reset, 5xx). Retried by adapters only."""

    exit_code = 6


class RateLimited(TransientExchangeError):
    """HTTP 429: the client must wait ``retry_after_s`` seconds before the next request."""

    exit_code = 7

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class IPBanned(ExchangeError):
    """HTTP 418: the IP is banned until ``until_s`` (monotonic-clock seconds). Loud, not retried."""

    exit_code = 8

    def __init__(self, message: str, ban_s: float) -> None:
        super().__init__(message)
        self.ban_s = ban_s


class OrderRejected(ExchangeError):
    """The exchange rejected an order (filters, balance): do not resend as is."""

    exit_code = 9


class RiskLimitBreached(AtraError):
    """A risk guard refused an action (max positions, daily loss, leverage, kill switch)."""

    exit_code = 10
