"""Counters of the reliability core, in the Prometheus text format.

Each service counts what it handled, the duplicates it skipped, the calls
it retried, the messages it parked and dead-lettered (by reason), and how
many outbox rows wait to be published. :func:`serve` exposes a registry
on ``http://127.0.0.1:PORT/metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


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


def serve(metrics: Metrics, port: int, host: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` on ``host:port`` in a background thread; returns the server."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server
