"""A one-route aiohttp server on 127.0.0.1 for tests of HTTP clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def local_server(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]], method: str = "*"
) -> AsyncIterator[str]:
    """Serve every path with ``handle`` (for ``method``) on a free port; yields the base URL."""
    app = web.Application()
    app.router.add_route(method, "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
