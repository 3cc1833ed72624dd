"""What a service publishes, as its outbox holds it: topic, key and headers by message type.

The messages go the way every service's messages go: recorded on a unit, committed
to a real SQLite store, read back by the relay's query. The relay then sends these
rows unchanged (``tests/integration/test_every_message_on_real_broker.py``).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from hub.reliability.consumer import BatchProcessor, Unit
from hub.reliability.metrics import Metrics
from hub.reliability.store import Store
from schemas.allocation import RunRound
from schemas.residence import ResidenceDeclared
from schemas.topics import BY_NAME


def _residence(child_ref: str) -> ResidenceDeclared:
    return ResidenceDeclared.new(
        producer="vps-adapter",
        municipality="riga",
        child_ref=child_ref,
        subject="child",
        address_code="101234567",
        territory_code="0010000",
        declared_municipality="riga",
        declared_from=date(2024, 1, 1),
    )


async def test_messages_go_to_their_topic_keyed_and_labelled(tmp_path: Path) -> None:
    first, second = _residence("CH-0001"), _residence("CH-0002")
    command = RunRound.new(
        producer="operator",
        municipality="liepaja",
        round_id=first.event_id,
        round_date=date(2026, 5, 4),
        requested_by="admin",
    )

    def emit(unit: Unit) -> None:
        for message in (first, second, command):
            unit.emit(message)

    store = await Store.open(tmp_path / "service.sqlite3")
    try:
        processor = BatchProcessor("service", {}, store, Metrics.create())
        handed_over = await processor.tick(emit)
        pending = await store.pending(10)
    finally:
        await store.close()

    assert pending == handed_over  # the relay gets the same rows from memory or the table
    residence_topic = BY_NAME["vps.population.residence.v1"]
    commands_topic = BY_NAME["allocation.commands.v1"]
    assert [(r.topic, r.key) for r in pending] == [
        (residence_topic.name, b"CH-0001"),
        (residence_topic.name, b"CH-0002"),
        (commands_topic.name, b"liepaja"),
    ]
    assert [BY_NAME[r.topic].parse(r.value) for r in pending] == [first, second, command]
    headers = {name: value.decode() for name, value in pending[2].headers}
    assert headers == {
        "content-type": "application/json",
        "event-type": "RunRound",
        "schema-version": "1",
        "producer": "operator",
        "correlation_id": str(command.correlation_id),
    }
