"""One message of every type goes through the real embedded broker with FastStream."""

from __future__ import annotations

import random
from uuid import uuid4

import pytest
from faststream.kafka import KafkaMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.bus import Bus
from hub.kafka import build_broker
from hub.settings import Settings
from schemas.base import Message
from schemas.topics import BY_NAME, MESSAGE_TYPES, TOPICS, topic_for
from tests.conftest import eventually
from tests.strategies import for_model

pytestmark = pytest.mark.real_broker


def one_of_each(seed: int) -> list[Message]:
    """A valid example of every message type, drawn from the property strategies."""
    examples: list[Message] = []

    @settings(
        max_examples=1,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.tuples(*(for_model(m) for m in MESSAGE_TYPES)))
    def draw(messages: tuple[Message, ...]) -> None:
        examples[:] = messages

    draw()
    random.Random(seed).shuffle(examples)
    return examples


async def test_publish_and_consume_one_of_every_message_type(kafka_settings: Settings) -> None:
    sent = one_of_each(seed=2)
    assert {type(m) for m in sent} == set(MESSAGE_TYPES)

    broker = build_broker(
        kafka_settings, kafka_settings.bootstrap_servers, client_id="contract-test"
    )
    bus = Bus.on(broker)
    received: dict[str, tuple[Message, KafkaMessage]] = {}

    @broker.subscriber(
        *(t.name for t in TOPICS),
        group_id=f"contract-test-{uuid4().hex}",
        auto_offset_reset="earliest",
    )
    async def collect(msg: KafkaMessage) -> None:
        topic = BY_NAME[msg.raw_message.topic]
        message = topic.parse(msg.body)
        received[str(message.event_id)] = (message, msg)

    async with broker:
        await broker.start()
        published = await bus.publish_many(sent)
        # The session broker also carries other tests' messages: wait for ours.
        await eventually(
            lambda: all(str(m.event_id) in received for m in sent), what="every message consumed"
        )

    assert published == len(MESSAGE_TYPES)
    for message in sent:
        got, raw = received[str(message.event_id)]
        topic = topic_for(message)
        assert got == message
        assert raw.raw_message.topic == topic.name
        assert raw.raw_message.key == topic.key_of(message)
        assert raw.headers["event-type"] == message.event_type
        assert raw.headers["content-type"] == "application/json"
        assert raw.correlation_id == str(message.correlation_id)
