"""The outbox relay: publishes what handlers wrote to the outbox, in order, then marks it sent.

Rows go out in id order, a batch at a time: all sends are queued on the
producer first (which keeps their order per partition, hence per key), then
all acknowledgements — from every in-sync replica — are awaited together.
Only then are the rows marked sent. If any send fails, none of the batch is
marked and the whole batch goes again: a row is published at least once,
and consumers skip the copies by ``event_id``.

Rows just committed are handed over in memory (:meth:`OutboxRelay.hand_over`),
so the relay reads the table only to catch up: after a start, a failed
send, or a gap in the ids. Published rows are deleted after a day.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from hub.reliability.metrics import Metrics
from hub.reliability.store import OutboxRow, Store

log = logging.getLogger(__name__)


class OutboxRelay:
    """Publishes one store's outbox. Hand it committed rows; run :meth:`run`."""

    def __init__(
        self,
        store: Store,
        producer: AIOKafkaProducer,
        *,
        service: str,
        metrics: Metrics,
        batch_size: int = 1000,
        idle_poll: float = 1.0,
        error_backoff: float = 0.5,
        retention: timedelta = timedelta(days=1),
    ) -> None:
        self._store = store
        self._producer = producer
        self._service = service
        self._metrics = metrics
        self._batch_size = batch_size
        self._idle_poll = idle_poll
        self._error_backoff = error_backoff
        self._retention = retention
        self._wakeup = asyncio.Event()
        self._queue: deque[OutboxRow] = deque()
        self._partitions: dict[str, list[int]] = {}
        self._partitioner = DefaultPartitioner()
        self._next_id = 0  # every row with a smaller id is published
        self._caught_up = False  # True: every committed row is published or in the queue
        self._backlog_counted = 0.0
        self._purged = time.monotonic()

    def hand_over(self, rows: Iterable[OutboxRow]) -> None:
        """Rows just committed to the outbox (with their ids): publish them soon."""
        self._queue.extend(rows)
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set (the caller then calls :meth:`flush`)."""
        while not stop.is_set():
            self._wakeup.clear()
            try:
                sent = await self.publish_pending()
            except KafkaError as exc:
                log.warning("outbox publish failed; will retry", extra={"error": repr(exc)})
                self._queue.clear()  # read again from the table, which is the truth
                self._caught_up = False
                self._partitions.clear()  # and ask the cluster again
                await asyncio.sleep(self._error_backoff)
                continue
            if sent:
                continue  # there may be more
            await self._purge_now_and_then()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._idle_poll)

    async def _next_rows(self) -> list[OutboxRow]:
        """The next rows to publish: from memory when they follow on, else from the table."""
        queue = self._queue
        while queue and queue[0].id is not None and queue[0].id < self._next_id:
            queue.popleft()  # published already, by a catch-up read
        if queue and queue[0].id == self._next_id:
            rows = [queue.popleft()]
            # Only consecutive ids: a gap means rows the table has and memory has not.
            while queue and len(rows) < self._batch_size and queue[0].id == rows[-1].id + 1:  # type: ignore[operator]
                rows.append(queue.popleft())
            return rows
        if self._caught_up and not queue:
            return []
        rows = await self._store.pending(self._batch_size, from_id=self._next_id)
        self._caught_up = len(rows) < self._batch_size  # the table holds nothing more
        return rows

    async def publish_pending(self) -> int:
        """Publish one batch of unsent rows; returns how many (0: nothing was pending)."""
        rows = await self._next_rows()
        if not rows:
            self._metrics.backlog.labels(self._service).set(0)
            return 0
        # Wait for every send, then fail if any failed: nothing is marked sent.
        outcomes = await asyncio.gather(*await self._send(rows), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        last = max(row.id for row in rows if row.id is not None)
        await self._store.mark_sent(last)
        self._next_id = last + 1
        if not self._queue and len(rows) < self._batch_size:  # that was all of it
            self._metrics.backlog.labels(self._service).set(0)
        elif (now := time.monotonic()) > self._backlog_counted + 1.0:  # count at most once a second
            self._backlog_counted = now
            self._metrics.backlog.labels(self._service).set(await self._store.backlog())
        return len(rows)

    async def _send(self, rows: list[OutboxRow]) -> list[asyncio.Future[Any]]:
        """Queue ``rows`` on the producer as record batches, one stream per partition.

        Filling batches directly costs far less per record than one send()
        each. Records go to the partition the default partitioner picks for
        their key (the one every Kafka client picks), in order.
        """
        producer, pick = self._producer, self._partitioner
        open_batches: dict[tuple[str, int], Any] = {}
        sent: list[asyncio.Future[Any]] = []
        for row in rows:
            partitions = self._partitions.get(row.topic)
            if partitions is None:
                partitions = self._partitions[row.topic] = sorted(
                    await producer.partitions_for(row.topic)
                )
            target = (row.topic, pick(row.key, partitions, partitions))
            batch = open_batches.get(target)
            if batch is None:
                batch = open_batches[target] = producer.create_batch()
            headers = list(row.headers)
            if batch.append(key=row.key, value=row.value, timestamp=None, headers=headers) is None:
                sent.append(await producer.send_batch(batch, target[0], partition=target[1]))
                batch = open_batches[target] = producer.create_batch()
                batch.append(key=row.key, value=row.value, timestamp=None, headers=headers)
        for (topic, partition), batch in open_batches.items():
            sent.append(await producer.send_batch(batch, topic, partition=partition))
        return sent

    async def _purge_now_and_then(self) -> None:
        """Delete rows published more than ``retention`` ago, at most once a minute."""
        now = time.monotonic()
        if now - self._purged > 60:
            self._purged = now
            cutoff = datetime.now(UTC) - self._retention
            purged = await self._store.purge_sent(cutoff)
            if purged:
                log.info("outbox purged", extra={"service": self._service, "rows": purged})

    async def flush(self, timeout: float) -> bool:
        """Publish everything pending, for at most ``timeout`` seconds; True if nothing is left."""
        try:
            async with asyncio.timeout(timeout):
                while await self.publish_pending():
                    pass
        except (TimeoutError, KafkaError) as exc:
            log.warning("outbox not fully flushed", extra={"error": repr(exc)})
            return False
        return True
