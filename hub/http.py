"""Serving a service's own HTTP endpoints (an API, a webhook, a page) until the service stops."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from hub.errors import HubError


def listen(host: str, port: int, *, what: str = "the service") -> socket.socket:
    """A socket bound to ``host:port``; a port already taken is one clear error, at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise HubError(f"{what} cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


async def serve(
    app: Any,
    stop: asyncio.Event,
    *,
    port: int,
    host: str = "127.0.0.1",
    what: str = "the service",
    ready: asyncio.Event | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set (``ready``: set once it answers)."""
    sock = listen(host, port, what=what)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        if ready is not None:
            while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn's flag
                await asyncio.sleep(0.02)
            ready.set()
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, serving], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    finally:
        server.should_exit = True
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        finally:
            sock.close()


def http_task(
    app: Any, port: int, host: str = "127.0.0.1"
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """A :class:`~hub.reliability.service.ServiceSpec` task serving ``app`` until the stop event."""

    async def task(stop: asyncio.Event) -> None:
        await serve(app, stop, port=port, host=host)

    return task


__all__ = ["http_task", "listen", "serve"]
