"""The hub's services by name, run alone or together, each with ``/health`` and ``/metrics``.

``hub run SERVICE`` runs one service so that each can be deployed and scaled on
its own; ``hub run all`` (and the demo) run every installed one in one process,
side by side, sharing one metrics registry. Services are plug-ins: each is an
entry point of the ``hub.services`` group (:mod:`hub.plugins`), the hub's own
ones (:data:`SERVICES`) as much as a third party's. Either way the process
serves on ``127.0.0.1:HUB_HEALTH_PORT``:

- ``GET /health`` — every service of the process: its phase (``starting``,
  ``running``, ``stopping``, ``stopped``, ``failed``), assigned partitions,
  messages handled, duplicates skipped, parked and dead-lettered, and the
  outbox backlog; 200 when every service runs, 503 otherwise; and the time the
  services read (``clock``) and whether it is the system or a simulated clock
  (``clock_mode``);
- ``GET /health/{service}`` — one of them;
- ``GET /metrics`` — the Prometheus counters of every service of the process.

With ``HUB_METRICS_PORT`` the process also serves ``/metrics`` alone on that port:
once, however many services it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hub import plugins
from hub.http import http_task
from hub.plugins import Built
from hub.reliability.metrics import Metrics, metrics_app, metrics_endpoint
from hub.reliability.service import ServiceRunner
from hub.settings import Settings
from schemas.topics import ALLOCATION, AUTHORISATIONS, BY_NAME, DVS, GIS, NOTIFY, VIIS, VPS, Topic

SERVICES = (ALLOCATION, VPS, VIIS, GIS, DVS, NOTIFY, AUTHORISATIONS)
"""The catalogue's services (:mod:`schemas.topics` names them), in the order ``hub run all``
runs them (a service added later comes last, so the others keep their health ports);
services of other installed packages follow, by name."""

HEALTH_PORTS = {ALLOCATION: 8720, "all": 8720} | {
    name: 8721 + i for i, name in enumerate(SERVICES[1:])
}
"""Where each service serves ``/health`` unless ``HUB_HEALTH_PORT`` says otherwise (a
service of another package: nowhere unless it says)."""

Task = Callable[[asyncio.Event], Awaitable[None]]
ClockMode = Literal["system", "simulated"]


def installed() -> tuple[str, ...]:
    """Every service installed as a ``hub.services`` plug-in: what ``hub run all`` runs."""
    found = plugins.names(plugins.SERVICES)
    return (
        *(name for name in SERVICES if name in found),
        *(name for name in found if name not in SERVICES),
    )


def build(
    name: str,
    settings: Settings,
    *,
    clock: Callable[[], datetime] | None = None,
    api: bool = True,
) -> Built:
    """The service ``name`` as settings describe it (``clock`` for a simulated time)."""
    return plugins.build_service(name, settings, clock=clock, api=api)


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

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/health/{service}", one),
            Route("/metrics", metrics_endpoint(metrics)),
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

    def topics(self) -> list[Topic]:
        """Topics of the services' own beyond the catalogue: what they declare and what
        their handlers consume (a plug-in's); ``hub run`` creates them with the catalogue's."""
        own: dict[str, Topic] = {}
        for built in self.built.values():
            for topic in (*built.topics, *(h.topic for h in built.spec.handlers)):
                if topic.name not in BY_NAME:
                    own.setdefault(topic.name, topic)
        return list(own.values())

    async def run(
        self, stop: asyncio.Event, *, port: int | None = None, tasks: Sequence[Task] = ()
    ) -> bool:
        """Run every service (and ``tasks``) until ``stop``; True if all stopped cleanly.

        ``port``: where ``/health`` (and ``/metrics``) are served; ``/metrics`` is also
        served alone on ``HUB_METRICS_PORT`` when that is set, once for the process.
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
        if self.settings.metrics_port:
            extra.append(http_task(metrics_app(self.metrics), self.settings.metrics_port))

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
    """The services ``names`` (``all``: every one installed), ready to :meth:`Services.run`.

    ``clock`` (a simulated time) is the time of every one of them: their runners, the
    allocation service and the notification service.
    """
    wanted = installed() if "all" in names else tuple(names)
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
    "installed",
]
