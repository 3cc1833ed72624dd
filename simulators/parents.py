"""Parents at the e-service: they apply, see the offers and answer them.

:class:`Parents` reads ``allocation.offers.v1`` for one municipality, keeps
the live offer of each child and the deadline of every offer the parents
were notified of, and answers in one of two ways:

- published straight to ``allocation.responses.v1`` (:meth:`Parents.answer`,
  :meth:`Parents.send`): each answer returns a :class:`Reaction`, the
  messages the allocation service published because of it (found by their
  ``causation_id``) and how long the first new offer took to arrive, which is
  the cascade latency the benchmark measures;
- in the VPS e-service over HTTP, as people do (:meth:`Parents.apply`,
  :meth:`Parents.answer_notified`), deciding each offer as :class:`Choices`
  says: accept, decline, or stay silent and let it expire. The VPS adapter
  carries those answers onto the topics. The demo plays a season this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal
from uuid import UUID

import httpx
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
from simulators.faults import HEADER

OFFERS = BY_NAME["allocation.offers.v1"]
Verdict = Literal["accept", "decline", "silent"]


class ParentsError(Exception):
    """The e-service refused what the parents sent, or never showed an offer to answer."""


@dataclass(frozen=True)
class Choices:
    """How the parents decide on an offer once they are notified of it.

    ``accept`` and ``decline`` are shares of offers (adding up to at most 1);
    the parents of the rest stay silent, and their offers expire. Draws come
    from a generator seeded with ``seed``, one per offer in the order the
    offers are notified.
    """

    accept: float = 1.0
    decline: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.accept < 0 or self.decline < 0 or self.accept + self.decline > 1:
            raise ValueError("accept and decline are shares of offers adding up to at most 1")

    def verdict(self, draw: float) -> Verdict:
        """The decision a uniform ``draw`` from [0, 1) stands for."""
        if draw < self.accept:
            return "accept"
        return "decline" if draw < self.accept + self.decline else "silent"


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
    """The parents of one municipality's children, as far as applications and offers go.

    Use ``async with``. ``eservice`` is the base URL of the VPS e-service (needed by
    :meth:`apply` and :meth:`answer_notified`), ``choices`` how they decide on offers,
    and ``concurrency`` how many of them use the e-service at once.
    """

    def __init__(
        self,
        bootstrap: str,
        municipality: str,
        *,
        eservice: str | None = None,
        choices: Choices | None = None,
        concurrency: int = 32,
        answer_timeout: float = 600.0,
        **client_options: Any,
    ) -> None:
        self.municipality = municipality
        self.live: dict[str, OfferMade] = {}
        """child_ref → the child's live offer, as published."""
        self.offers: dict[str, OfferMade] = {}
        """offer_id → every offer published, live or closed."""
        self.notified: dict[str, date] = {}
        """offer_id → the date to answer by, for every offer the parents were notified of."""
        self.decided: dict[str, Verdict] = {}
        """offer_id → what the parents decided (:meth:`answer_notified`)."""
        self.answered: Counter[str] = Counter()
        """What the e-service took: accept, decline; too_late (the offer closed first)."""
        self.submitted = 0
        """Applications the e-service has taken (:meth:`apply`)."""
        self.choices = choices or Choices()
        self._draws = random.Random(self.choices.seed)
        self._answer_timeout = answer_timeout
        self._gate = asyncio.Semaphore(concurrency)
        self._answering: set[asyncio.Task[None]] = set()
        self._errors: list[BaseException] = []
        self._eservice_url, self._concurrency = eservice, concurrency
        self._http: httpx.AsyncClient | None = None
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
        if self._eservice_url is not None:
            self._http = httpx.AsyncClient(
                base_url=self._eservice_url,
                # Parents use the e-service; injected faults are for the hub's adapters.
                headers={HEADER: "none"},
                timeout=30,
                limits=httpx.Limits(max_connections=self._concurrency),
            )
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
        tasks = [t for t in (*self._answering, self._reader) if t is not None]
        for task in tasks:
            task.cancel()
        # An answer that failed has said so through answer_notified() (or is moot now).
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._consumer.stop()
        await self._producer.stop()
        if self._http is not None:
            await self._http.aclose()

    @property
    def made(self) -> int:
        """Offers published so far (each once, however often it was read)."""
        return len(self.offers)

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
            self.offers[str(message.offer_id)] = message
            if message.respond_by is not None:
                self.notified[str(message.offer_id)] = message.respond_by
        elif isinstance(message, OfferDeadlineSet):
            self.notified[str(message.offer_id)] = message.respond_by
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

    # ------------------------------------------------------------ at the e-service

    async def apply(self, forms: Iterable[dict[str, Any]]) -> int:
        """Submit every application (a JSON body of ``POST /v1/applications``) to the
        e-service, ``concurrency`` at a time; :attr:`submitted` counts them as they go.
        Raises :class:`ParentsError` if the e-service refuses one."""

        async def submit(form: dict[str, Any]) -> None:
            async with self._gate:
                answer = await self._eservice().post("/v1/applications", json=form)
            if answer.status_code != httpx.codes.CREATED:
                raise ParentsError(
                    f"the VPS e-service refused an application: {answer.status_code}"
                )
            self.submitted += 1

        await asyncio.gather(*(submit(form) for form in forms))
        return self.submitted

    def answer_notified(self) -> list[tuple[OfferMade, Verdict]]:
        """Decide every live offer the parents were notified of and have not decided yet,
        and start answering the accepted and declined ones in the e-service (in the
        background: :attr:`answering` counts them). Returns the decisions taken now.
        Raises :class:`ParentsError` if an earlier answer could not be given."""
        if self._errors:
            raise ParentsError(str(self._errors[0])) from self._errors[0]
        decisions = []
        for offer in list(self.live.values()):
            offer_id = str(offer.offer_id)
            if offer_id in self.decided or offer_id not in self.notified:
                continue
            verdict = self.choices.verdict(self._draws.random())
            self.decided[offer_id] = verdict
            decisions.append((offer, verdict))
            if verdict != "silent":
                task = asyncio.create_task(self._answer_online(offer_id, verdict))
                self._answering.add(task)
                task.add_done_callback(self._answered)
        return decisions

    @property
    def answering(self) -> int:
        """Answers on their way to the e-service."""
        return len(self._answering)

    def awaiting_effect(self) -> list[OfferMade]:
        """Live offers the parents answered, or were not notified of yet: the service has
        something to do about each (the answer or the receipt is on its way)."""
        return [
            o
            for o in self.live.values()
            if str(o.offer_id) not in self.notified
            or self.decided.get(str(o.offer_id), "silent") != "silent"
        ]

    def _answered(self, task: asyncio.Task[None]) -> None:
        self._answering.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._errors.append(task.exception())  # type: ignore[arg-type]

    async def _answer_online(self, offer_id: str, verdict: Literal["accept", "decline"]) -> None:
        """Answer in the e-service; the offer may not be shown there yet (its adapter lags).

        One of ``concurrency`` places is held until the answer is taken, so that
        offers not shown yet do not flood the e-service with retries."""
        deadline = time.monotonic() + self._answer_timeout
        async with self._gate:
            while time.monotonic() < deadline:
                answer = await self._eservice().post(
                    f"/v1/offers/{offer_id}/answer", json={"verdict": verdict}
                )
                if answer.status_code == httpx.codes.NO_CONTENT:
                    self.answered[verdict] += 1
                    return
                if answer.status_code == httpx.codes.CONFLICT:  # closed before the answer
                    self.answered["too_late"] += 1
                    return
                await asyncio.sleep(0.2)
        raise ParentsError(f"offer {offer_id} never showed in the e-service")

    def _eservice(self) -> httpx.AsyncClient:
        if self._http is None:
            raise ParentsError("these parents were not given the e-service's address")
        return self._http
