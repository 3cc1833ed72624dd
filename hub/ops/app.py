"""The operations view over HTTP: a static page and the JSON it polls.

    GET  /                                   the page (static HTML, CSS and JS; no build step)
    GET  /health                             whether the view has caught up with the topics
    GET  /api/topics                         every topic: partitions, messages, types read
    GET  /api/lag                            consumer lag per group and topic
    GET  /api/deadletters                    dead letters, newest first, personal codes masked
    POST /api/deadletters/{id}/replay        republish one to its original topic
    GET  /api/round[?municipality=M]         the latest round's figures per institution
    GET  /api/children/{child_ref}/timeline  a child's timeline

The replay endpoint wants an ``X-Hub-Ops`` header, which a page of another
origin cannot send without the browser asking first (and the view never
allows it); on loopback only loopback host names are accepted, so a
rebinding DNS name cannot reach it either.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiokafka.errors import KafkaError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from hub.http import serve
from hub.ops.live import LiveView, NotReplayable
from hub.settings import Settings
from schemas.topics import SERVICES

STATIC = Path(__file__).resolve().parent / "static"
REPLAY_HEADER = "x-hub-ops"
_PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def create_app(view: LiveView, *, host: str = "127.0.0.1") -> Starlette:
    """The Starlette app of the operations view, answering from ``view``."""

    async def index(_: Request) -> Response:
        return FileResponse(
            STATIC / "index.html",
            headers={"Content-Security-Policy": _PAGE_POLICY, "Cache-Control": "no-cache"},
        )

    async def health(_: Request) -> JSONResponse:
        return JSONResponse(view.health())

    async def topics(_: Request) -> JSONResponse:
        return JSONResponse(view.topics())

    async def lag(_: Request) -> JSONResponse:
        return JSONResponse(view.lag())

    async def dead_letters(request: Request) -> JSONResponse:
        try:
            limit = max(0, min(500, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return JSONResponse({"error": "limit must be a number"}, status_code=400)
        return JSONResponse(view.dead_letters(limit))

    async def replay(request: Request) -> JSONResponse:
        if request.headers.get(REPLAY_HEADER) != "replay":
            return JSONResponse({"error": f"send the {REPLAY_HEADER} header"}, status_code=403)
        ident = request.path_params["ident"]
        try:
            return JSONResponse(await view.replay(ident))
        except LookupError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except NotReplayable as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        except KafkaError as exc:
            return JSONResponse({"error": f"replay failed: {exc!r}"}, status_code=502)

    async def round_(request: Request) -> JSONResponse:
        municipality = request.query_params.get("municipality", view.settings.municipality)
        return JSONResponse(view.projection.latest_round(municipality))

    async def timeline(request: Request) -> JSONResponse:
        child_ref = request.path_params["child_ref"].strip()
        found = view.projection.timeline(child_ref)
        if found is None:
            return JSONResponse(
                {"error": f"no message about child {child_ref} has been read"}, status_code=404
            )
        return JSONResponse(found)

    middleware = (
        [Middleware(TrustedHostMiddleware, allowed_hosts=_LOOPBACK_NAMES)]
        if _is_loopback(host)
        else []
    )
    return Starlette(
        routes=[
            Route("/", index),
            Route("/health", health),
            Route("/api/topics", topics),
            Route("/api/lag", lag),
            Route("/api/deadletters", dead_letters),
            Route("/api/deadletters/{ident}/replay", replay, methods=["POST"]),
            Route("/api/round", round_),
            Route("/api/children/{child_ref}/timeline", timeline),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=middleware,
    )


async def serve_ops(
    settings: Settings,
    bootstrap: str,
    stop: asyncio.Event,
    *,
    port: int,
    host: str = "127.0.0.1",
    services: Sequence[str] | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve the operations view of ``bootstrap`` on ``host:port`` until ``stop`` is set.

    It reads Kafka on its own (no consumer group) and needs nothing from the
    other services' processes. ``services`` names the hub services whose
    consumer groups are always shown (default: the catalogue's); ``ready`` is
    set once the page answers. Raises :class:`~hub.errors.HubError` if the
    port is taken.
    """
    view = LiveView(settings, bootstrap, services=tuple(services or SERVICES))
    reading = asyncio.create_task(view.run(stop), name="ops-view")
    try:
        await serve(
            create_app(view, host=host),
            stop,
            port=port,
            host=host,
            what="the operations view",
            ready=ready,
        )
    finally:
        if stop.is_set():
            await reading  # it notices the stop within a fetch
        else:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading


def ops_task(
    settings: Settings,
    bootstrap: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    services: Sequence[str] | None = None,
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """A :class:`~hub.reliability.service.ServiceSpec` task serving the view until the stop
    event (like :func:`hub.allocation.api.serving` for the allocation API)."""

    async def task(stop: asyncio.Event) -> None:
        await serve_ops(settings, bootstrap, stop, port=port, host=host, services=services)

    return task
