"""Running a service: its store, consumers, outbox relay and counters, and a graceful stop.

On SIGTERM (or SIGINT) a service stops fetching, lets the batch in hand
finish and commit, publishes what is left in the outbox, commits its
offsets, leaves its consumer groups and exits 0 — all within
``shutdown_timeout`` seconds. Whatever did not make it is redelivered or
republished at the next start; nothing applied is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from hub.kafka import client_options
from hub.reliability.consumer import (
    BatchProcessor,
    Handler,
    RetrySchedule,
    Unit,
    consume,
    wait_until_due,
)
from hub.reliability.metrics import Metrics
from hub.reliability.poller import SCHEMA as POLL_SCHEMA
from hub.reliability.poller import Poller, run_poller
from hub.reliability.relay import OutboxRelay
from hub.reliability.retry import RetryObservable
from hub.reliability.store import Store
from hub.settings import Settings
from schemas.topics import retry_topic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timer:
    """Work a service does on a clock rather than on a message (e.g. expiring offers).

    ``tick`` runs every ``interval`` seconds; like a handler's ``apply`` it only
    records on the unit, and what it records is committed and published the
    same way as a batch.
    """

    interval: float
    tick: Callable[[Unit], None]


@dataclass(frozen=True)
class ServiceSpec:
    """What a service is: a name (its consumer group and database), handlers, tables."""

    name: str
    handlers: Sequence[Handler[Any]]
    schema: Sequence[str] = ()
    """CREATE statements of the service's own tables (run at every start; use IF NOT EXISTS)."""
    on_start: Callable[[Store], Awaitable[None]] | None = None
    """Rebuilds in-memory state from the store before consuming starts."""
    timers: Sequence[Timer] = ()
    tasks: Sequence[Callable[[asyncio.Event], Awaitable[None]]] = ()
    """Further coroutines to run until the stop event is set (an HTTP API, say)."""
    pollers: Sequence[Poller] = ()
    """Feeds of external systems to poll; positions are kept in the service's store."""
    clients: Sequence[RetryObservable] = ()
    """Clients of external systems whose retried calls the runner counts in its metrics."""


@dataclass(frozen=True)
class RuntimeOptions:
    """How a service runs; :meth:`from_settings` reads them from ``HUB_*`` settings."""

    batch_size: int = 500
    schedule: RetrySchedule = field(default_factory=RetrySchedule)
    shutdown_timeout: float = 20.0
    fetch_concurrency: int = 16
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    fetch_max_wait: float = 0.05
    """Seconds a fetch of the main consumer may wait at the broker (the retry consumer: 0.5)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> RuntimeOptions:
        return cls(
            batch_size=settings.batch_size,
            schedule=RetrySchedule(
                settings.max_attempts, settings.retry_first_delay, settings.retry_max_delay
            ),
            shutdown_timeout=settings.shutdown_timeout,
            synchronous=settings.sqlite_synchronous,
            fetch_max_wait=settings.fetch_max_wait,
            fetch_concurrency=settings.fetch_concurrency,
        )


class ServiceRunner:
    """Runs one :class:`ServiceSpec` against a Kafka cluster until asked to stop."""

    def __init__(
        self,
        spec: ServiceSpec,
        settings: Settings,
        bootstrap: str,
        *,
        options: RuntimeOptions | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.bootstrap = bootstrap
        self.options = options or RuntimeOptions.from_settings(settings)
        self.metrics = metrics or Metrics.create()
        self.clock = clock
        self.store: Store | None = None
        self.ready = asyncio.Event()
        """Set once the consumers have started (partitions may still be assigning)."""
        self.phase: Literal["starting", "running", "stopping", "stopped", "failed"] = "starting"
        self._consumer: AIOKafkaConsumer | None = None

    def status(self) -> dict[str, Any]:
        """What ``/health`` says of this service: its phase, partitions and counters."""
        name, metrics = self.spec.name, self.metrics
        assigned = self._consumer.assignment() if self._consumer is not None else set()
        return {
            "service": name,
            "status": self.phase,
            "partitions": len(assigned),
            "handled": int(metrics.value(metrics.handled, service=name)),
            "duplicates_skipped": int(metrics.value(metrics.duplicates, service=name)),
            "parked": int(metrics.value(metrics.parked, service=name)),
            "dead_lettered": int(metrics.total(metrics.dead_lettered, service=name)),
            "outbox_backlog": int(metrics.value(metrics.backlog, service=name)),
        }

    async def run(self, stop: asyncio.Event) -> bool:
        """Run until ``stop`` is set; returns True if the shutdown was clean and in time."""
        spec, options = self.spec, self.options
        security = client_options(self.settings)
        store = self.store = await Store.open(
            self.settings.data_dir / f"{spec.name}.sqlite3",
            schema=(*spec.schema, *(POLL_SCHEMA if spec.pollers else ())),
            synchronous=options.synchronous,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=spec.name,
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
            **security,
        )

        def consumer(*topics: str, group: str, fetch_max_wait: float) -> AIOKafkaConsumer:
            return AIOKafkaConsumer(
                *topics,
                bootstrap_servers=self.bootstrap,
                client_id=spec.name,
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=4 * 1024 * 1024,
                fetch_max_wait_ms=int(fetch_max_wait * 1000),
                session_timeout_ms=int(self.settings.session_timeout * 1000),
                heartbeat_interval_ms=int(self.settings.heartbeat_interval * 1000),
                **security,
            )

        main = self._consumer = consumer(
            *(h.topic.name for h in spec.handlers),
            group=spec.name,
            fetch_max_wait=options.fetch_max_wait,
        )
        # Parked messages wait seconds at least: their consumer need not ask often.
        retries = consumer(retry_topic(spec.name), group=f"{spec.name}.retry", fetch_max_wait=0.5)
        processor = BatchProcessor(
            spec.name,
            {h.topic.name: h for h in spec.handlers},
            store,
            self.metrics,
            schedule=options.schedule,
            fetch_concurrency=options.fetch_concurrency,
            clock=self.clock,
        )
        relay = OutboxRelay(store, producer, service=spec.name, metrics=self.metrics)
        retried = self.metrics.retried.labels(spec.name)
        for client in spec.clients:
            client.add_retry_listener(lambda _error: retried.inc())

        started: list[Any] = []
        clean = False
        try:
            if spec.on_start is not None:
                await spec.on_start(store)
            for client in (producer, main, retries):
                await client.start()
                started.append(client)
            self.ready.set()
            self.phase = "running"
            workers = [
                asyncio.create_task(relay.run(stop), name=f"{spec.name}-relay"),
                asyncio.create_task(
                    consume(main, processor, relay.hand_over, stop, batch_size=options.batch_size),
                    name=f"{spec.name}-consumer",
                ),
                asyncio.create_task(
                    consume(
                        retries,
                        processor,
                        relay.hand_over,
                        stop,
                        batch_size=50,
                        before=wait_until_due(retries, stop, self.clock),
                    ),
                    name=f"{spec.name}-retries",
                ),
                *(
                    asyncio.create_task(self._every(timer, processor, relay, stop))
                    for timer in spec.timers
                ),
                *(asyncio.create_task(task(stop)) for task in spec.tasks),
                *(
                    asyncio.create_task(
                        run_poller(
                            spec.name,
                            poller,
                            store,
                            relay.hand_over,
                            stop,
                            clock=self.clock,
                            on_items=lambda taken, _refused: self.metrics.handled.labels(
                                spec.name
                            ).inc(taken),
                        ),
                        name=f"{spec.name}-{poller.feed}",
                    )
                    for poller in spec.pollers
                ),
            ]
            clean = await self._supervise(stop, workers, relay)
        except BaseException:
            self.phase = "failed"
            raise
        finally:
            if self.phase != "failed":
                self.phase = "stopped"
            for client in reversed(started):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.stop(), options.shutdown_timeout)
            await store.close()
            for handler in spec.handlers:
                await handler.close()
            for poller in spec.pollers:
                await poller.close()
        return clean

    @staticmethod
    async def _every(
        timer: Timer, processor: BatchProcessor, relay: OutboxRelay, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timer.interval)
            if stop.is_set():
                return
            relay.hand_over(await processor.tick(timer.tick))

    async def _supervise(
        self, stop: asyncio.Event, workers: list[asyncio.Task[None]], relay: OutboxRelay
    ) -> bool:
        """Wait for ``stop`` (or a worker failing), then shut down within the timeout."""
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *workers], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not waiter and t.exception() is not None]
        stop.set()
        self.phase = "stopping"
        waiter.cancel()
        try:
            async with asyncio.timeout(self.options.shutdown_timeout):
                await asyncio.gather(*workers, return_exceptions=True)
                flushed = await relay.flush(self.options.shutdown_timeout)
        except TimeoutError:
            log.error("shutdown took too long", extra={"service": self.spec.name})
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            return False
        for task in failed:
            raise task.exception()  # type: ignore[misc]
        return flushed


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGTERM and SIGINT."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
