"""The batch processor on a real SQLite store, fed records directly (no broker)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from hub.errors import PermanentError, TransientError
from hub.reliability.consumer import BatchProcessor, Handler, Incoming, RetrySchedule, Unit
from hub.reliability.deadletters import header
from hub.reliability.metrics import Metrics
from hub.reliability.store import Store
from schemas.addresses import AddressResolutionFailed
from schemas.base import Message
from schemas.residence import ResidenceDeclared
from schemas.topics import BY_NAME, DEAD_LETTERS, retry_topic

TOPIC = BY_NAME["vps.population.residence.v1"]
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


class Residences(Handler[ResidenceDeclared]):
    """Counts residences; fails on purpose for some address codes."""

    def __init__(self) -> None:
        super().__init__(TOPIC)
        self.fetched: list[str] = []

    async def fetch(self, message: ResidenceDeclared) -> Any:
        self.fetched.append(message.child_ref)
        if message.address_code == "100000001":
            raise TransientError("register busy")
        if message.address_code == "100000002":
            raise PermanentError("register refused: unknown address")
        return message.address_code

    def apply(self, unit: Unit, message: ResidenceDeclared, fetched: Any) -> None:
        if message.address_code == "100000003":
            raise KeyError("a bug")
        unit.execute(
            "INSERT INTO seen (child_ref, address) VALUES (?, ?)", (message.child_ref, fetched)
        )


def residence(child: str, address: str = "101234567") -> ResidenceDeclared:
    return ResidenceDeclared.new(
        producer="vps-adapter",
        municipality="riga",
        child_ref=child,
        subject="child",
        address_code=address,
        territory_code="0010000",
        declared_municipality="riga",
        declared_from=date(2024, 1, 1),
    )


def record(value: bytes, offset: int = 0, headers: tuple = ()) -> Incoming:
    return Incoming(TOPIC.name, 0, offset, b"k", value, headers)


@pytest.fixture
async def processor(tmp_path: Path) -> BatchProcessor:
    store = await Store.open(
        tmp_path / "s.sqlite3", schema=["CREATE TABLE seen (child_ref TEXT, address TEXT)"]
    )
    yield BatchProcessor(
        "svc",
        {TOPIC.name: Residences()},
        store,
        Metrics.create(),
        schedule=RetrySchedule(max_attempts=3, first_delay=10, max_delay=60),
        clock=lambda: NOW,
    )
    await store.close()


async def outbox(p: BatchProcessor) -> list[tuple[str, dict[str, str]]]:
    rows = await p.store.pending(1000)
    return [(r.topic, {k: v.decode() for k, v in r.headers}) for r in rows]


async def test_applies_and_skips_duplicates_in_and_across_batches(
    processor: BatchProcessor,
) -> None:
    first, second = residence("CH-0001"), residence("CH-0002")
    await processor.process(
        [record(first.model_dump_json().encode(), 0), record(first.model_dump_json().encode(), 1)]
    )
    await processor.process(
        [record(first.model_dump_json().encode(), 2), record(second.model_dump_json().encode(), 3)]
    )
    assert await processor.store.query("SELECT child_ref FROM seen ORDER BY child_ref") == [
        ("CH-0001",),
        ("CH-0002",),
    ]
    assert processor.metrics.value(processor.metrics.duplicates, service="svc") == 2
    assert processor.metrics.value(processor.metrics.handled, service="svc") == 2
    handled = await processor.store.query("SELECT count(*) FROM inbox WHERE consumer = 'svc'")
    assert handled == [(2,)]


async def test_invalid_records_are_dead_lettered_without_their_content(
    processor: BatchProcessor,
) -> None:
    bad = residence("CH-0001").model_dump_json().replace("101234567", "161175-19997").encode()
    await processor.process(
        [record(b"\xff\xfe not json", 0), record(bad, 1), record(b'{"event_type": "X"}', 2)]
    )
    rows = await outbox(processor)
    assert [topic for topic, _ in rows] == [DEAD_LETTERS] * 3
    assert {h["dlq-reason"] for _, h in rows} == {"invalid_message"}
    assert all(h["dlq-source-topic"] == TOPIC.name and h["dlq-service"] == "svc" for _, h in rows)
    assert [h["dlq-source-offset"] for _, h in rows] == ["0", "1", "2"]
    assert "address_code" in rows[1][1]["dlq-error"]
    assert not any("161175" in h["dlq-error"] for _, h in rows)


async def test_transient_failures_are_parked_then_dead_lettered_after_the_last_attempt(
    processor: BatchProcessor,
) -> None:
    message = residence("CH-0009", address="100000001")
    value = message.model_dump_json().encode()
    await processor.process([record(value, 7)])
    [parked] = await processor.store.pending(10)
    assert parked.topic == retry_topic("svc")
    assert header(parked.headers, "retry-attempts") == "1"
    due = datetime.fromisoformat(header(parked.headers, "retry-due") or "")
    assert NOW + timedelta(seconds=8) <= due <= NOW + timedelta(seconds=12)
    await processor.store.mark_sent(parked.id)
    # Delivered again from the retry topic: the second failure parks it once more.
    again = Incoming(parked.topic, 0, 0, parked.key, parked.value, parked.headers)
    await processor.process([again])
    [parked2] = await processor.store.pending(10)
    assert header(parked2.headers, "retry-attempts") == "2"
    assert header(parked2.headers, "retry-source-offset") == "7"
    await processor.store.mark_sent(parked2.id)
    await processor.process(
        [Incoming(parked2.topic, 0, 1, parked2.key, parked2.value, parked2.headers)]
    )
    [dead] = await processor.store.pending(10)
    assert dead.topic == DEAD_LETTERS
    assert header(dead.headers, "dlq-reason") == "retries_exhausted"
    assert header(dead.headers, "dlq-attempts") == "3"
    assert header(dead.headers, "dlq-source-offset") == "7"
    assert header(dead.headers, "retry-attempts") is None  # labels of the parking are gone
    assert dead.value == value and dead.key == b"k"
    assert processor.metrics.value(processor.metrics.parked, service="svc") == 2


async def test_a_refusal_and_a_handler_bug_dead_letter_only_their_message(
    processor: BatchProcessor,
) -> None:
    batch = [
        residence("CH-0001"),
        residence("CH-0002", address="100000002"),
        residence("CH-0003", address="100000003"),
        residence("CH-0004"),
    ]
    await processor.process([record(m.model_dump_json().encode(), n) for n, m in enumerate(batch)])
    assert await processor.store.query("SELECT child_ref FROM seen ORDER BY child_ref") == [
        ("CH-0001",),
        ("CH-0004",),
    ]
    reasons = [h["dlq-reason"] for _, h in await outbox(processor)]
    assert reasons == ["refused", "handler_error"]
    handled = {r[0] for r in await processor.store.query("SELECT event_id FROM inbox")}
    assert handled == {str(batch[0].event_id), str(batch[3].event_id)}  # failures can be replayed


async def test_statements_that_cannot_be_stored_dead_letter_only_their_message(
    processor: BatchProcessor,
) -> None:
    class Broken(Residences):
        def apply(self, unit: Unit, message: ResidenceDeclared, fetched: Any) -> None:
            unit.execute(
                "INSERT INTO seen (child_ref, address) VALUES (?, ?)", (message.child_ref, fetched)
            )
            unit.emit(message)
            if message.child_ref == "CH-0002":
                unit.execute("INSERT INTO nowhere VALUES (1)")

    processor.handlers[TOPIC.name] = Broken()
    batch = [residence("CH-0001"), residence("CH-0002"), residence("CH-0003")]
    await processor.process([record(m.model_dump_json().encode(), n) for n, m in enumerate(batch)])
    seen = await processor.store.query("SELECT child_ref FROM seen ORDER BY child_ref")
    assert seen == [("CH-0001",), ("CH-0003",)]
    handled = {r[0] for r in await processor.store.query("SELECT event_id FROM inbox")}
    assert handled == {str(batch[0].event_id), str(batch[2].event_id)}
    rows = await outbox(processor)
    assert [h.get("dlq-reason") for _, h in rows] == [None, "handler_error", None]
    assert rows[1][1]["dlq-source-offset"] == "1"


async def test_a_parked_message_comes_back_and_is_applied(processor: BatchProcessor) -> None:
    """A message whose apply failed transiently must not look handled when its copy returns."""

    class FlakyOnce(Residences):
        failed = False

        def apply(self, unit: Unit, message: ResidenceDeclared, fetched: Any) -> None:
            if not self.failed:
                self.failed = True
                raise TransientError("state not ready")
            super().apply(unit, message, fetched)

    processor.handlers[TOPIC.name] = FlakyOnce()
    await processor.process([record(residence("CH-0007").model_dump_json().encode())])
    [parked] = await processor.store.pending(10)
    await processor.store.mark_sent(parked.id)
    again = Incoming(parked.topic, 0, 0, parked.key, parked.value, parked.headers)
    await processor.process([again])
    assert await processor.store.query("SELECT child_ref FROM seen") == [("CH-0007",)]
    assert processor.metrics.value(processor.metrics.duplicates, service="svc") == 0


async def test_a_header_without_a_value_does_not_stop_the_consumer(
    processor: BatchProcessor,
) -> None:
    raw = ConsumerRecord(TOPIC.name, 0, 5, 0, 0, b"k", b"{bad json", None, 9, 0, [("trace", None)])
    await processor.process([Incoming.of(raw)])
    [(topic, headers)] = await outbox(processor)
    assert topic == DEAD_LETTERS and headers["trace"] == ""


async def test_emitted_messages_reach_the_outbox_with_catalogue_topic_key_and_headers(
    processor: BatchProcessor,
) -> None:
    class Echo(Residences):
        def apply(self, unit: Unit, message: ResidenceDeclared, fetched: Any) -> None:
            unit.emit(message)

    processor.handlers[TOPIC.name] = Echo()
    message = residence("CH-0042")
    await processor.process([record(message.model_dump_json().encode())])
    [row] = await processor.store.pending(10)
    assert (row.topic, row.key) == (TOPIC.name, b"CH-0042")
    assert header(row.headers, "event-type") == "ResidenceDeclared"
    assert ResidenceDeclared.model_validate_json(row.value) == message


class Answering(Residences):
    """Residences that also tell the asker when it gives a message up."""

    def given_up(self, message: ResidenceDeclared, error: BaseException) -> list[Message]:
        return [
            AddressResolutionFailed.new(
                producer="gis-adapter",
                caused_by=message,
                subject_ref=message.child_ref,
                address_code=message.address_code,
                reason="unavailable" if isinstance(error, TransientError) else "unknown_address",
                detail=str(error)[:100],
                permanent=not isinstance(error, TransientError),
            )
        ]


async def test_a_given_up_message_publishes_its_failure_event_with_the_dead_letter(
    processor: BatchProcessor,
) -> None:
    processor.handlers[TOPIC.name] = Answering()
    ok, refused = residence("CH-0001"), residence("CH-0002", address="100000002")
    await processor.process(
        [record(ok.model_dump_json().encode(), 0), record(refused.model_dump_json().encode(), 1)]
    )
    rows = await processor.store.pending(10)
    assert [r.topic for r in rows] == [DEAD_LETTERS, "gis.address.resolved.v1"]
    failed = AddressResolutionFailed.model_validate_json(rows[1].value)
    assert failed.causation_id == refused.event_id and failed.permanent
    assert failed.correlation_id == refused.correlation_id

    # Retries exhausted: the failure event says so, and goes out with the last dead letter.
    value = residence("CH-0003", address="100000001").model_dump_json().encode()
    delivery = record(value, 5)
    for n in range(3):
        for row in await processor.store.pending(10):
            await processor.store.mark_sent(row.id)
        await processor.process([delivery])
        parked = (await processor.store.pending(10))[0]
        delivery = Incoming(parked.topic, 0, n, parked.key, parked.value, parked.headers)
    rows = await processor.store.pending(10)
    assert [r.topic for r in rows] == [DEAD_LETTERS, "gis.address.resolved.v1"]
    exhausted = AddressResolutionFailed.model_validate_json(rows[1].value)
    assert exhausted.reason == "unavailable" and not exhausted.permanent
