"""Parents at the e-service: they see the offers and answer them.

:class:`Parents` reads ``allocation.offers.v1`` for one municipality, keeps
the live offer of each child, and publishes accepts and declines to
``allocation.responses.v1``. Each answer returns a :class:`Reaction`: the
messages the allocation service published because of it (found by their
``causation_id``) and how long the first new offer took to arrive, which is
the cascade latency the benchmark measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hub.reliability.consumer import outbox_row
from schemas.allocation import (
    OFFER_CLOSED,
    OfferDeadlineSet,
    OfferDeclined,
    OfferMade,
    ParentAccepted,
    ParentDeclined,
    PlaceAccepted,
)
from schemas.base import Message
from schemas.topics import BY_NAME, VPS

OFFERS = BY_NAME["allocation.offers.v1"]


@dataclass
class Reaction:
    """What one answer caused: the service's messages and when they came."""

    answer: Message
    sent: float
    """``time.perf_counter()`` just before the answer was handed to the producer."""
    messages: list[Message] = field(default_factory=list)
    first_offer: OfferMade | None = None
    first_offer_after: float | None = None
    """Seconds from sending the answer to reading the first offer it caused."""
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the service's verdict on the answered offer has been read."""
    offered: asyncio.Event = field(default_factory=asyncio.Event)
    sending: asyncio.Future[Any] | None = None

    @property
    def offers(self) -> list[OfferMade]:
        return [m for m in self.messages if isinstance(m, OfferMade)]


class Parents:
    """The parents of one municipality's children, as far as offers go. Use ``async with``."""

    def __init__(self, bootstrap: str, municipality: str, **client_options: Any) -> None:
        self.municipality = municipality
        self.live: dict[str, OfferMade] = {}
        """child_ref → the child's live offer, as published."""
        self.made = 0
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=10,  # the embedded broker answers a fetch at the end of the wait
            **client_options,
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=0, **client_options
        )
        self._waiting: dict[UUID, Reaction] = {}
        self._read_more = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Parents:
        await self._producer.start()
        await self._consumer.start()
        await self._consumer.topics()
        partitions = [
            TopicPartition(OFFERS.name, p)
            for p in sorted(self._consumer.partitions_for_topic(OFFERS.name) or ())
        ]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._consumer.stop()
        await self._producer.stop()

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    self._see(OFFERS.parse(record.value), now)
            if batches:
                self._read_more.set()

    async def wait_until(self, done: Callable[[], bool], timeout: float = 60.0) -> None:
        """Wait until ``done()`` holds after reading the offers topic (raises TimeoutError)."""
        async with asyncio.timeout(timeout):
            while not done():
                self._read_more.clear()
                await self._read_more.wait()

    def _see(self, message: Message, now: float) -> None:
        if message.municipality != self.municipality:
            return
        if isinstance(message, OfferMade):
            self.live[message.child_ref] = message
            self.made += 1
        elif isinstance(message, OFFER_CLOSED):
            live = self.live.get(message.child_ref)
            if live is not None and live.offer_id == message.offer_id:
                del self.live[message.child_ref]
        reaction = self._waiting.get(message.causation_id) if message.causation_id else None
        if reaction is None:
            return
        reaction.messages.append(message)
        if isinstance(message, OfferMade) and reaction.first_offer is None:
            reaction.first_offer, reaction.first_offer_after = message, now - reaction.sent
            reaction.offered.set()
        if isinstance(message, (OfferDeclined, PlaceAccepted, OfferDeadlineSet)):
            reaction.confirmed.set()

    async def answer(
        self, child_ref: str, verdict: Literal["accept", "decline"], *, timeout: float = 10.0
    ) -> Reaction:
        """Answer the child's live offer; returns once the service has confirmed the answer
        and the offers it caused have arrived (see :meth:`settle`)."""
        reaction = self.send(child_ref, verdict)
        await self.settle(reaction, timeout=timeout)
        return reaction

    def send(self, child_ref: str, verdict: Literal["accept", "decline"]) -> Reaction:
        """Publish the answer without waiting; :meth:`settle` waits for its effects."""
        offer = self.live[child_ref]
        kind = ParentAccepted if verdict == "accept" else ParentDeclined
        return self.publish(
            kind.new(
                producer=VPS,
                municipality=self.municipality,
                offer_id=offer.offer_id,
                child_ref=child_ref,
                responded_at=datetime.now(UTC),
            )
        )

    def publish(self, message: Message) -> Reaction:
        """Publish any message (a delivery receipt, say) and collect what it causes.

        The service's verdict that :meth:`settle` waits for is the declined or
        accepted offer for an answer and the deadline for a receipt.
        """
        row = outbox_row(message)
        reaction = Reaction(message, time.perf_counter())
        self._waiting[message.event_id] = reaction
        reaction.sending = asyncio.ensure_future(
            self._producer.send_and_wait(
                row.topic, row.value, key=row.key, headers=list(row.headers)
            )
        )
        return reaction

    async def settle(
        self, reaction: Reaction, *, timeout: float = 10.0, grace: float = 0.2
    ) -> None:
        """Wait for the answer's confirmation (raises TimeoutError), then for its offers.

        The service publishes the confirmation and the offers an answer makes
        from one transaction, so they arrive together; an answer that made none
        is given ``grace`` seconds to be sure.
        """
        if reaction.sending is not None:
            await reaction.sending
        await asyncio.wait_for(reaction.confirmed.wait(), timeout)
        if reaction.first_offer is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reaction.offered.wait(), grace)
        self._waiting.pop(reaction.answer.event_id, None)
