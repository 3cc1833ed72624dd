"""The outbox relay: publishes what handlers wrote to the outbox, in order, then marks it sent.

Rows go out in id order, a batch at a time: all sends are queued on the
producer first (which keeps their order per partition, hence per key), then
all acknowledgements — from every in-sync replica — are awaited together.
Only then are the rows marked sent. If any send fails, none of the batch is
marked and the whole batch goes again later: a row is published at least
once, and consumers skip the copies by ``event_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from hub.reliability.metrics import Metrics
from hub.reliability.store import Store

log = logging.getLogger(__name__)


class OutboxRelay:
    """Publishes one store's outbox. Call :meth:`wake` after a commit; run :meth:`run`."""

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
    ) -> None:
        self._store = store
        self._producer = producer
        self._service = service
        self._metrics = metrics
        self._batch_size = batch_size
        self._idle_poll = idle_poll
        self._error_backoff = error_backoff
        self._wakeup = asyncio.Event()
        self.published = 0

    def wake(self) -> None:
        """New rows are committed: publish them now rather than at the next poll."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set (the caller then calls :meth:`flush`)."""
        while not stop.is_set():
            self._wakeup.clear()
            try:
                sent = await self.publish_pending()
            except KafkaError as exc:
                log.warning("outbox publish failed; will retry", extra={"error": repr(exc)})
                await asyncio.sleep(self._error_backoff)
                continue
            if sent:
                continue  # there may be more
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._idle_poll)

    async def publish_pending(self) -> int:
        """Publish one batch of unsent rows; returns how many (0: nothing was pending)."""
        rows = await self._store.pending(self._batch_size)
        if not rows:
            self._metrics.backlog.labels(self._service).set(0)
            return 0
        sends = [
            await self._producer.send(row.topic, row.value, key=row.key, headers=list(row.headers))
            for row in rows
        ]
        await asyncio.gather(*sends)  # raises if any send failed: nothing is marked
        await self._store.mark_sent([row.id for row in rows if row.id is not None])
        self.published += len(rows)
        self._metrics.backlog.labels(self._service).set(await self._store.backlog())
        return len(rows)

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
