"""The bus on FastStream's in-memory test broker: topic, key and headers by message type."""

from __future__ import annotations

from datetime import date

from faststream.kafka import KafkaBroker, KafkaMessage, TestKafkaBroker

from hub.bus import Bus
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


async def test_messages_go_to_their_topic_keyed_and_labelled() -> None:
    broker = KafkaBroker()
    bus = Bus.on(broker)
    seen: list[tuple[str, bytes, dict[str, str], object]] = []
    residence_topic = BY_NAME["vps.population.residence.v1"]
    commands_topic = BY_NAME["allocation.commands.v1"]

    @broker.subscriber(residence_topic.name, commands_topic.name, group_id="t")
    async def collect(msg: KafkaMessage) -> None:
        topic = BY_NAME[msg.raw_message.topic]
        seen.append((topic.name, msg.raw_message.key, dict(msg.headers), topic.parse(msg.body)))

    first, second = _residence("CH-0001"), _residence("CH-0002")
    command = RunRound.new(
        producer="operator",
        municipality="liepaja",
        round_id=first.event_id,
        round_date=date(2026, 5, 4),
        requested_by="admin",
    )
    async with TestKafkaBroker(broker):
        assert await bus.publish_many([first, second]) == 2
        await bus.publish(command)

    assert [(t, k) for t, k, _, _ in seen] == [
        (residence_topic.name, b"CH-0001"),
        (residence_topic.name, b"CH-0002"),
        (commands_topic.name, b"liepaja"),
    ]
    assert [m for *_, m in seen] == [first, second, command]
    headers = seen[2][2]
    assert headers["event-type"] == "RunRound"
    assert headers["producer"] == "operator"
    assert headers["schema-version"] == "1"
