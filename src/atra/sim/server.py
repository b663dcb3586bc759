"""What the fake servers share: an aiohttp application served on ``host:port`` (port 0: a free
one, known once started), its URL, and ``async with`` around ``start``/``stop``."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from aiohttp import web


class LocalServer:
    """Base of a server a subclass builds the application of: its ``start`` passes the app to
    :meth:`_serve`, its ``stop`` ends with :meth:`_close`."""

    host: str
    port: int
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        await self._close()

    async def _serve(self, app: web.Application) -> None:
        """Serve ``app``; ``port`` becomes the one bound."""
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])

    async def _close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
