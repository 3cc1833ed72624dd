"""One message of every type goes through the real embedded broker the way services send it:
committed to a service's outbox, published by its outbox relay, read by a plain consumer."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from uuid import NAMESPACE_URL, uuid4, uuid5

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import HealthCheck, given, settings

from hub.kafka import client_options
from hub.reliability.consumer import BatchProcessor, Unit
from hub.reliability.metrics import Metrics
from hub.reliability.relay import OutboxRelay
from hub.reliability.store import Store
from hub.settings import Settings
from schemas.base import Message
from schemas.topics import BY_NAME, MESSAGE_TYPES, TOPICS, topic_for
from tests.conftest import eventually
from tests.strategies import for_model

pytestmark = pytest.mark.real_broker


def one_of_each(seed: int) -> list[Message]:
    """A valid example of every message type, drawn from the property strategies (each type
    on its own: one draw of them all together is too large for Hypothesis to finish)."""
    examples: list[Message] = []
    for message_type in MESSAGE_TYPES:

        @settings(
            max_examples=1,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(for_model(message_type))
        def draw(message: Message) -> None:
            # Each type's draw is derandomized alike: an id of its own tells them apart.
            own = uuid5(NAMESPACE_URL, f"{seed}:{message.event_type}")
            examples.append(message.model_copy(update={"event_id": own}))

        draw()
    random.Random(seed).shuffle(examples)
    return examples


async def test_publish_and_consume_one_of_every_message_type(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    sent = one_of_each(seed=2)
    assert {type(m) for m in sent} == set(MESSAGE_TYPES)
    bootstrap, options = kafka_settings.bootstrap_servers, client_options(kafka_settings)
    received: dict[str, tuple[Message, ConsumerRecord[bytes, bytes]]] = {}

    consumer = AIOKafkaConsumer(
        *(t.name for t in TOPICS),
        bootstrap_servers=bootstrap,
        group_id=f"contract-test-{uuid4().hex}",
        auto_offset_reset="earliest",
        **options,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **options)
    store = await Store.open(tmp_path / "publisher.sqlite3")
    metrics = Metrics.create()
    relay = OutboxRelay(store, producer, service="publisher", metrics=metrics)
    processor = BatchProcessor("publisher", {}, store, metrics)

    def emit(unit: Unit) -> None:
        for message in sent:
            unit.emit(message)

    async def collect() -> None:
        async for record in consumer:
            message = BY_NAME[record.topic].parse(record.value)
            received[str(message.event_id)] = (message, record)

    await consumer.start()
    await producer.start()
    reading = asyncio.create_task(collect())
    try:
        relay.hand_over(await processor.tick(emit))
        assert await relay.flush(timeout=30)
        assert await store.backlog() == 0  # every row is marked sent
        # The session broker also carries other tests' messages: wait for ours.
        await eventually(
            lambda: all(str(m.event_id) in received for m in sent), what="every message consumed"
        )
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
        await store.close()

    partitioner = DefaultPartitioner()
    for message in sent:
        got, record = received[str(message.event_id)]
        topic = topic_for(message)
        headers = {name: value.decode() for name, value in record.headers}
        assert got == message
        assert record.topic == topic.name
        assert record.key == topic.key_of(message)
        partitions = sorted(consumer.partitions_for_topic(topic.name) or ())
        # the partition every Kafka client picks for the key, so ordering per key holds
        assert record.partition == partitioner(record.key, partitions, partitions)
        assert headers["event-type"] == message.event_type
        assert headers["content-type"] == "application/json"
        assert headers["schema-version"] == str(message.schema_version)
        assert headers["producer"] == message.producer
        assert headers["correlation_id"] == str(message.correlation_id)
