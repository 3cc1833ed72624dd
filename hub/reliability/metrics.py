"""Counters of the reliability core, in the Prometheus text format.

Each service counts what it handled, the duplicates it skipped, the calls
it retried, the messages it parked and dead-lettered (by reason), and how
many outbox rows wait to be published. :func:`metrics_endpoint` answers
``GET /metrics`` with them; a process serves it once, however many services it
runs (``hub.services``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class Metrics:
    """The counters of every service in one process, labelled by service."""

    registry: CollectorRegistry
    handled: Counter
    duplicates: Counter
    retried: Counter
    parked: Counter
    dead_lettered: Counter
    backlog: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        registry = registry or CollectorRegistry()

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, ("service", *labels), registry=registry)

        return cls(
            registry=registry,
            handled=counter("hub_messages_handled", "Messages applied."),
            duplicates=counter("hub_duplicates_skipped", "Messages skipped as already applied."),
            retried=counter("hub_calls_retried", "Retries of calls to external systems."),
            parked=counter("hub_messages_parked", "Messages parked on a retry topic."),
            dead_lettered=counter(
                "hub_messages_dead_lettered", "Messages sent to the dead-letter topic.", "reason"
            ),
            backlog=Gauge(
                "hub_outbox_backlog",
                "Outbox rows not yet published.",
                ("service",),
                registry=registry,
            ),
        )

    def value(self, metric: Counter | Gauge, **labels: str) -> float:
        """Current value of one labelled series (0 if never touched); for tests and reports."""
        name = metric._name  # prometheus_client keeps the base name here
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name in (name, f"{name}_total") and sample.labels == labels:
                    return sample.value
        return 0.0

    def total(self, metric: Counter | Gauge, **labels: str) -> float:
        """Sum over the series whose labels include ``labels`` (e.g. every reason of a service)."""
        name = metric._name
        return sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name in (name, f"{name}_total") and labels.items() <= sample.labels.items()
        )


def metrics_endpoint(metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    """``GET /metrics``: every counter of ``metrics`` in the Prometheus text format."""

    async def prometheus(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return prometheus


def metrics_app(metrics: Metrics) -> Starlette:
    """An app that serves :func:`metrics_endpoint` alone (``HUB_METRICS_PORT``)."""
    return Starlette(routes=[Route("/metrics", metrics_endpoint(metrics))])
