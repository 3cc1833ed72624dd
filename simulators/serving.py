"""Serving the simulators with uvicorn on loopback, one port each.

:func:`serving` is an async context manager that starts an ASGI app on
``127.0.0.1:port`` (a free port when ``port`` is 0), waits until it accepts
connections and stops it when the block ends: tests, the demo and
``hub simulate`` all use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Served:
    name: str
    url: str


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, port: int = 0, *, name: str = "simulator") -> AsyncIterator[Served]:
    """Run ``app`` on loopback until the block ends; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host=HOST, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it (the port taken, say)
            raise RuntimeError(f"{name} stopped before it started on {HOST}:{port}")
        await asyncio.sleep(0.01)
    try:
        yield Served(name, f"http://{HOST}:{port}")
    finally:
        release = getattr(app, "release", None)
        if callable(release):
            release()  # requests held by injected timeouts answer now, so none holds the stop
        server.should_exit = True
        await task


__all__ = ["HOST", "Served", "free_port", "serving"]
