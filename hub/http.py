"""Serving a service's own HTTP endpoints (an API, a webhook) until the service stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn


def http_task(
    app: Any, port: int, host: str = "127.0.0.1"
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """A :class:`~hub.reliability.service.ServiceSpec` task serving ``app`` until the stop event."""

    async def task(stop: asyncio.Event) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        running = asyncio.create_task(server.serve())
        await stop.wait()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await running

    return task


__all__ = ["http_task"]
