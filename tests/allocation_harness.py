"""The allocation service driven through its handlers on a real SQLite store, with no broker.

:class:`Harness` feeds messages to the service the way the consumer does
(batches through :class:`~hub.reliability.consumer.BatchProcessor`, one
transaction each), answers the service's VIIS and GIS requests at once, runs
its expiry timer as the runner does, and can restart the service from its
store (as a new process would) or crash it between preparing and committing
a batch.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime

from hub.allocation.model import Rules
from hub.allocation.rules import load_rules
from hub.allocation.service import AllocationState, service
from hub.reliability.consumer import BatchProcessor, Incoming, outbox_row
from hub.reliability.metrics import Metrics
from hub.reliability.service import ServiceSpec
from hub.reliability.store import Store
from schemas.allocation import ParentAccepted, ParentDeclined
from schemas.base import Message
from schemas.notifications import NotificationSent
from schemas.residence import CheckResidence
from schemas.topics import BY_NAME, DEAD_LETTERS
from simulators.instant import Population, answer

RIGA = load_rules("riga")


class Harness:
    """The service's handlers, a store, a movable clock, and stand-ins for VIIS and GIS."""

    def __init__(
        self, store: Store, now: datetime, *, rules: Rules = RIGA, municipality: str = "riga"
    ) -> None:
        self.now = now
        self.store = store
        self.rules, self.municipality = rules, municipality
        self.published: list[Message] = []
        self.dead_letters: list[dict[str, str]] = []
        """The ``dlq-*`` headers of every message dead-lettered, as text."""
        self.inputs: dict[str, dict[str, bytes]] = {}
        """Every message handled, by topic and event_id: what the topics would hold."""
        self.offset = 0
        self.answer: Callable[[Message], Message | None] = answer  # VIIS and GIS stand-ins
        self.population = Population()
        """The population register's stand-in: it answers the checks before a list with the
        residences fed so far."""
        self.spec: ServiceSpec
        self.state: AllocationState
        self.processor: BatchProcessor
        self._build()

    def _build(self) -> None:
        self.spec, self.state = service(self.rules, self.municipality, clock=lambda: self.now)
        self.processor = BatchProcessor(
            "allocation",
            {h.topic.name: h for h in self.spec.handlers},
            self.store,
            Metrics.create(),
            clock=lambda: self.now,
        )

    async def restart(self) -> AllocationState:
        """A new service on the same store, loaded as at a process start (memory is lost)."""
        self._build()
        assert self.spec.on_start is not None
        await self.spec.on_start(self.store)
        return self.state

    def _records(self, messages: tuple[Message, ...] | list[Message]) -> list[Incoming]:
        records = []
        for row in map(outbox_row, messages):
            self.offset += 1
            self.inputs.setdefault(row.topic, {})[json.loads(row.value)["event_id"]] = row.value
            records.append(Incoming(row.topic, 0, self.offset, row.key, row.value, row.headers))
        return records

    async def feed(self, *messages: Message, crash: bool = False) -> list[Message]:
        """Handle ``messages`` as one batch; answer enrichment requests at once (further
        batches); return all published. With ``crash`` the first batch is prepared, then
        the service dies before committing it, restarts, and the batch is delivered again."""
        batch: list[Message] = list(messages)
        out: list[Message] = []
        while batch:
            records = self._records(batch)
            if crash:
                await self.processor.prepare(records)  # applied in memory, never committed
                await self.restart()
                crash = False
            committed = await self.processor.process(records)
            self.dead_letters += [
                {name: value.decode() for name, value in r.headers if name.startswith("dlq-")}
                for r in committed
                if r.topic == DEAD_LETTERS
            ]
            published = [BY_NAME[r.topic].parse(r.value) for r in committed if r.topic in BY_NAME]
            out += published
            for message in batch:
                self.population.learn(message)
            batch = [reply for reply in map(self._reply, published) if reply is not None]
        self.published += out
        return out

    def _reply(self, message: Message) -> Message | None:
        if isinstance(message, CheckResidence):
            return self.population.check(message, self.now)
        return self.answer(message)

    async def tick(self) -> list[Message]:
        """Run the expiry timer once and commit what it did, as the service runner does."""
        committed = await self.processor.tick(self.spec.timers[0].tick)
        out = [BY_NAME[r.topic].parse(r.value) for r in committed if r.topic in BY_NAME]
        self.published += out
        return out

    def respond(self, kind: type[ParentAccepted | ParentDeclined], offer_id: str) -> Message:
        offer = self.state.offers[offer_id]
        return kind.new(
            producer="vps-adapter",
            municipality=self.municipality,
            offer_id=offer.offer_id,
            child_ref=offer.child_ref,
            responded_at=self.now,
        )

    def receipt(self, offer_id: str) -> Message:
        return NotificationSent.new(
            producer="notify-adapter",
            municipality=self.municipality,
            notification_id=uuid.uuid4(),
            child_ref=self.state.offers[offer_id].child_ref,
            channel="e_adrese",
            offer_id=offer_id,
            sent_at=self.now,
        )
