"""The notification queues and their sending tasks (see :mod:`atra.adapters.notify`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Final

import httpx

from atra.adapters.notify.destinations import Destination, destinations_of, retry_after_s
from atra.adapters.notify.messages import Notification
from atra.config import AtraConfig
from atra.obs import Metrics, get_logger

__all__ = ["Notifier", "TokenBucket"]

log = get_logger("atra.adapters.notify")

SENT: Final[str] = "sent"
FAILED: Final[str] = "failed"
DROPPED: Final[str] = "dropped"
MAX_429_WAITS: Final[int] = 10
"""A message answered 429 this many times in a row fails (a receiver that never recovers)."""


class TokenBucket:
    """``rate_per_minute`` tokens a minute, at most ``burst`` saved up; :meth:`take` waits."""

    def __init__(
        self,
        rate_per_minute: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate_per_minute > 0 or burst < 1:
            raise ValueError("rate_per_minute must be > 0 and burst >= 1")
        self.rate_s = rate_per_minute / 60.0
        self.burst = float(burst)
        self.tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate_s)
        self._at = now

    def wait_s(self) -> float:
        """Seconds until a token is available (0: now)."""
        self._refill()
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate_s

    async def take(self) -> None:
        """Wait for a token and take it."""
        while (wait := self.wait_s()) > 0:
            await asyncio.sleep(wait)
        self.tokens -= 1.0

    def hold(self) -> None:
        """Spend every saved token (after a 429: no burst right after the wait)."""
        self._refill()
        self.tokens = min(self.tokens, 0.0)


class _SecretFilter(logging.Filter):
    """Masks the destinations' URLs in the HTTP library's own log records (httpx logs every
    request's URL at INFO; the bot token and the webhook path are in it)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(s in text for s in self.secrets):
            for s in self.secrets:
                text = text.replace(s, "***")
            record.msg, record.args = text, None
        return True


class _Lane:
    """One destination's queue, bucket and sending task."""

    def __init__(self, dest: Destination, size: int, bucket: TokenBucket) -> None:
        self.dest = dest
        self.size = size
        self.bucket = bucket
        self.queue: deque[Notification] = deque()
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.busy = False
        self.task: asyncio.Task[None] | None = None


class Notifier:
    """Bounded queues and one sending task per destination (see :mod:`atra.adapters.notify`).

    ``events``: the event names to send (others are ignored); None: all."""

    def __init__(
        self,
        destinations: Sequence[Destination],
        *,
        events: Collection[str] | None = None,
        queue_size: int = 1000,
        rate_per_minute: float = 20.0,
        burst: int = 5,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        max_retry_after_s: float = 300.0,
        backoff_s: float = 1.0,
        flush_s: float = 5.0,
        metrics: Metrics | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.events = None if events is None else frozenset(events)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_retry_after_s = max_retry_after_s
        self.backoff_s = backoff_s
        self.flush_s = flush_s
        self.metrics = metrics or Metrics()
        self.lanes = [
            _Lane(d, queue_size, TokenBucket(rate_per_minute, burst)) for d in destinations
        ]
        self._filter = _SecretFilter([lane.dest.url for lane in self.lanes])
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    @classmethod
    def from_config(cls, config: AtraConfig, metrics: Metrics | None = None) -> Notifier | None:
        """The notifier ``[notify]`` describes; None when it enables no destination."""
        cfg = config.notify
        dests = destinations_of(config)
        if not dests:
            return None
        return cls(dests, events=cfg.events, queue_size=cfg.queue_size,
                   rate_per_minute=cfg.rate_per_minute, burst=cfg.burst, timeout_s=cfg.timeout_s,
                   max_retries=cfg.max_retries, max_retry_after_s=cfg.max_retry_after_s,
                   flush_s=cfg.flush_s, metrics=metrics)  # fmt: skip

    # ---- the loop's side: never awaits -----------------------------------------------------

    def wants(self, event: str) -> bool:
        """Whether ``event`` is sent at all (the configured events)."""
        return self.events is None or event in self.events

    def notify(self, note: Notification) -> None:
        """Queue ``note`` for every destination and return at once."""
        if not self.wants(note.event):
            return
        for lane in self.lanes:
            if self._closed:
                self._count(lane, note, DROPPED)
                log.warning("notification_dropped", status="closed", event_name=note.event,
                            endpoint=lane.dest.label)  # fmt: skip
                continue
            if len(lane.queue) >= lane.size:
                victim = self._evict(lane, note)
                self._count(lane, victim, DROPPED)
                log.warning("notification_dropped", status="queue_full", event_name=victim.event,
                            endpoint=lane.dest.label, queue_size=lane.size)  # fmt: skip
                if victim is note:
                    continue
            lane.queue.append(note)
            lane.idle.clear()
            lane.wake.set()

    @staticmethod
    def _evict(lane: _Lane, incoming: Notification) -> Notification:
        """Make room in a full queue: its oldest low-priority message goes; with none, the
        oldest message when ``incoming`` is high priority, else ``incoming`` itself."""
        for k, queued in enumerate(lane.queue):
            if not queued.high_priority:
                del lane.queue[k]
                return queued
        if incoming.high_priority:
            return lane.queue.popleft()
        return incoming

    @property
    def pending(self) -> int:
        """Messages queued or being sent, over every destination."""
        return sum(len(lane.queue) + lane.busy for lane in self.lanes)

    # ---- the sending side ------------------------------------------------------------------

    async def start(self) -> None:
        """Start one sending task per destination."""
        if self._client is not None:
            return
        logging.getLogger("httpx").addFilter(self._filter)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s))
        for lane in self.lanes:
            lane.task = asyncio.create_task(self._run(lane), name=f"notify-{lane.dest.kind}")
        log.info("notifications_started", endpoint=[lane.dest.label for lane in self.lanes])

    async def aclose(self, flush_s: float | None = None) -> None:
        """Stop taking messages, send what is queued for up to ``flush_s`` seconds (default:
        the configured one), then cancel; what is left is counted as dropped."""
        self._closed = True
        wait_s = self.flush_s if flush_s is None else flush_s
        if self.lanes and self._client is not None:
            idle = [asyncio.create_task(lane.idle.wait()) for lane in self.lanes]
            _, late = await asyncio.wait(idle, timeout=wait_s)
            for t in late:
                t.cancel()
        for lane in self.lanes:
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
                lane.task = None
            unsent = list(lane.queue)
            lane.queue.clear()
            for note in unsent:
                self._count(lane, note, DROPPED)
            if unsent:
                log.warning("notifications_unsent", endpoint=lane.dest.label, count=len(unsent))
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        logging.getLogger("httpx").removeFilter(self._filter)

    async def __aenter__(self) -> Notifier:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, lane: _Lane) -> None:
        while True:
            if not lane.queue:
                lane.idle.set()
                lane.wake.clear()
                await lane.wake.wait()
                continue
            note = lane.queue.popleft()
            lane.busy = True
            try:
                outcome = await self._deliver(lane, note)
            except asyncio.CancelledError:
                lane.queue.appendleft(note)  # counted as unsent by aclose
                raise
            finally:
                lane.busy = False
            self._count(lane, note, outcome)

    async def _deliver(self, lane: _Lane, note: Notification) -> str:
        """Send ``note`` to ``lane``'s destination: SENT or FAILED (after its retries)."""
        assert self._client is not None
        dest = lane.dest
        retries = waits = 0
        while True:
            await lane.bucket.take()
            problem: str
            try:
                async with asyncio.timeout(self.timeout_s):
                    resp = await self._client.post(dest.url, json=dest.body(note))
            except (httpx.TransportError, TimeoutError) as exc:  # never str(exc): it has the URL
                problem = "timeout" if isinstance(exc, TimeoutError | httpx.TimeoutException) \
                    else type(exc).__name__  # fmt: skip
            else:
                status = resp.status_code
                if 200 <= status < 300:
                    log.debug("notification_sent", event_name=note.event, endpoint=dest.label)
                    return SENT
                if status == 429:
                    wait = retry_after_s(resp)
                    waits += 1
                    if wait is None:
                        wait = self.backoff_s * 2 ** min(waits, 6)
                    if wait > self.max_retry_after_s or waits > MAX_429_WAITS:
                        return self._failed(note, dest, f"429, retry after {wait:g} s")
                    log.info("notification_rate_limited", endpoint=dest.label, status=429,
                             retry_after_s=wait, event_name=note.event)  # fmt: skip
                    lane.bucket.hold()
                    await asyncio.sleep(wait)
                    continue
                if status < 500:  # refused: retrying the same request cannot help
                    return self._failed(note, dest, f"HTTP {status}: {_description(resp)}")
                problem = f"HTTP {status}"
            if retries >= self.max_retries:
                return self._failed(note, dest, f"{problem} after {retries + 1} attempts")
            retries += 1
            delay = self.backoff_s * 2 ** (retries - 1)
            log.info("notification_retry", endpoint=dest.label, attempt=retries, error=problem,
                     event_name=note.event)  # fmt: skip
            await asyncio.sleep(delay)

    @staticmethod
    def _failed(note: Notification, dest: Destination, why: str) -> str:
        log.warning("notification_failed", endpoint=dest.label, event_name=note.event, error=why)
        return FAILED

    def _count(self, lane: _Lane, note: Notification, outcome: str) -> None:
        self.metrics.notifications_total.labels(
            destination=lane.dest.kind, event=note.event, outcome=outcome
        ).inc()


def _description(resp: httpx.Response) -> str:
    """A refusal's reason, short: Telegram's ``description`` or the start of the body."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("description"), str):
        return str(data["description"])[:200]
    return resp.text[:200].replace("\n", " ")
