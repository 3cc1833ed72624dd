"""The hub's services by name, run alone or together, each with ``/health`` and ``/metrics``.

``hub run SERVICE`` runs one of :data:`SERVICES` so that each can be deployed
and scaled on its own; ``hub run all`` (and the demo) run every one of them
in one process, side by side, sharing one metrics registry. Either way the
process serves on ``127.0.0.1:HUB_HEALTH_PORT``:

- ``GET /health`` — every service of the process: its phase (``starting``,
  ``running``, ``stopping``, ``stopped``, ``failed``), assigned partitions,
  messages handled, duplicates skipped, parked and dead-lettered, and the
  outbox backlog; 200 when every service runs, 503 otherwise; and the time the
  services read (``clock``) and whether it is the system or a simulated clock
  (``clock_mode``);
- ``GET /health/{service}`` — one of them;
- ``GET /metrics`` — the Prometheus counters of every service of the process.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.errors import ConfigurationError
from hub.http import http_task
from hub.reliability.metrics import Metrics
from hub.reliability.service import ServiceRunner, ServiceSpec
from hub.settings import Settings
from hub.wiring import ADAPTERS, adapter, notify_service

SERVICES = ("allocation", *ADAPTERS)
"""What ``hub run`` runs; ``all`` is every one of them in one process."""

HEALTH_PORTS = {"allocation": 8720, "all": 8720} | {
    name: 8721 + i for i, name in enumerate(ADAPTERS)
}
"""Where each service serves ``/health`` unless ``HUB_HEALTH_PORT`` says otherwise."""

Task = Callable[[asyncio.Event], Awaitable[None]]
ClockMode = Literal["system", "simulated"]


@dataclass
class Built:
    """One service put together: its spec, and the state its API and the demo look at."""

    spec: ServiceSpec
    state: Any = None


def build(
    name: str,
    settings: Settings,
    *,
    clock: Callable[[], datetime] | None = None,
    api: bool = True,
) -> Built:
    """The service ``name`` as settings describe it (``clock`` for a simulated time)."""
    if name == "allocation":
        from hub.allocation.api import serving
        from hub.allocation.rules import load_rules
        from hub.allocation.service import service

        spec, state = service(
            load_rules(settings.rules or settings.municipality),
            settings.municipality,
            expiry_interval=settings.expiry_interval,
            **({"clock": clock} if clock is not None else {}),
        )
        if api:
            host, _, port = settings.allocation_api.rpartition(":")
            store = settings.data_dir / f"{spec.name}.sqlite3"  # the runner's, for /checks
            served = serving(state, int(port), host or "127.0.0.1", store=store)
            spec = dataclasses.replace(spec, tasks=(*spec.tasks, served))
        return Built(spec, state)
    if name == "notify-adapter":
        spec, state = notify_service(settings, **({"clock": clock} if clock is not None else {}))
        return Built(spec, state)
    if name in ADAPTERS:
        return Built(adapter(name, settings))
    raise ConfigurationError(f"no service {name!r}; there are {', '.join(SERVICES)} and all")


def health_port(settings: Settings, name: str) -> int | None:
    """The port ``name`` (a service, or ``all``) serves health on; None when switched off."""
    if settings.health_port is None:
        return HEALTH_PORTS.get(name)
    return settings.health_port or None


def health_app(
    runners: Sequence[ServiceRunner],
    metrics: Metrics,
    *,
    clock: Callable[[], datetime] | None = None,
    clock_mode: ClockMode = "system",
) -> Starlette:
    """``/health``, ``/health/{service}`` and ``/metrics`` of the runners of one process.

    ``/health`` also says what time the process's services read (``clock``, ISO 8601) and
    whether that is the system clock or a simulated one (``clock_mode``), so a test of a
    simulation can wait until every process has seen a move of the clock.
    """
    by_name = {r.spec.name: r for r in runners}
    now = clock or (lambda: datetime.now(UTC))

    async def health(_: Request) -> JSONResponse:
        services = [r.status() for r in runners]
        ok = all(s["status"] == "running" for s in services)
        return JSONResponse(
            {
                "status": "ok" if ok else "unavailable",
                "clock": now().isoformat(),
                "clock_mode": clock_mode,
                "services": services,
            },
            status_code=200 if ok else 503,
        )

    async def one(request: Request) -> JSONResponse:
        runner = by_name.get(request.path_params["service"])
        if runner is None:
            return JSONResponse(
                {"error": "unknown service", "services": sorted(by_name)}, status_code=404
            )
        status = runner.status()
        return JSONResponse(status, status_code=200 if status["status"] == "running" else 503)

    async def prometheus(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/health/{service}", one),
            Route("/metrics", prometheus),
        ]
    )


@dataclass
class Services:
    """Services run side by side in one process until a stop event (``hub run``, the demo)."""

    built: dict[str, Built]
    settings: Settings
    bootstrap: str
    metrics: Metrics = field(default_factory=Metrics.create)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    clock_mode: ClockMode = "system"
    """``simulated`` when ``clock`` is not the system clock (``HUB_CLOCK``, the demo's)."""
    runners: list[ServiceRunner] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.runners = [
            ServiceRunner(
                b.spec, self.settings, self.bootstrap, metrics=self.metrics, clock=self.clock
            )
            for b in self.built.values()
        ]

    def state(self, name: str) -> Any:
        return self.built[name].state

    async def run(
        self, stop: asyncio.Event, *, port: int | None = None, tasks: Sequence[Task] = ()
    ) -> bool:
        """Run every service (and ``tasks``) until ``stop``; True if all stopped cleanly.

        A service that fails stops the others: a half-running hub is worse than a
        stopped one that its supervisor restarts. So does a task that fails (the
        ``/health`` endpoint on a port already taken): its error is raised once the
        services have stopped.
        """
        extra = list(tasks)
        if port:
            app = health_app(
                self.runners, self.metrics, clock=self.clock, clock_mode=self.clock_mode
            )
            extra.append(http_task(app, port))

        async def run(runner: ServiceRunner) -> bool:
            try:
                return await runner.run(stop)
            finally:
                stop.set()  # one service stopping, for whatever reason, stops them all

        failed: list[BaseException] = []

        def stop_if_failed(helper: asyncio.Task[None]) -> None:
            # A helper that fails (/health whose port is taken, say) stops the process too:
            # running on without it would hide the service from whoever watches it.
            error = None if helper.cancelled() else helper.exception()
            if error is not None:
                failed.append(error)
                stop.set()

        runs = [asyncio.create_task(run(r), name=r.spec.name) for r in self.runners]
        helpers = [asyncio.create_task(t(stop)) for t in extra]
        for helper in helpers:
            helper.add_done_callback(stop_if_failed)
        try:
            results = await asyncio.gather(*runs, return_exceptions=True)
        finally:
            stop.set()
            await asyncio.gather(*helpers, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if failed:
            raise failed[0]
        return all(results)


def assemble(
    names: Sequence[str],
    settings: Settings,
    bootstrap: str,
    *,
    clock: Callable[[], datetime] | None = None,
    api: bool = True,
) -> Services:
    """The services ``names`` (``all``: every one), ready to :meth:`Services.run`.

    ``clock`` (a simulated time) is the time of every one of them: their runners, the
    allocation service and the notification service.
    """
    wanted = SERVICES if "all" in names else tuple(names)
    built = {name: build(name, settings, clock=clock, api=api) for name in wanted}
    options: dict[str, Any] = {}
    if clock is not None:
        options = {"clock": clock, "clock_mode": "simulated"}
    return Services(built, settings, bootstrap, **options)


__all__ = [
    "HEALTH_PORTS",
    "SERVICES",
    "Built",
    "ClockMode",
    "Services",
    "assemble",
    "build",
    "health_app",
    "health_port",
]
