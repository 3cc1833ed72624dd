"""Publishing catalogue messages: the right topic, key and headers, every time.

One publisher object per topic is created once, from the catalogue, so the
topics and their message schemas also appear in the AsyncAPI document.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable, Mapping

from faststream.kafka import KafkaBroker, KafkaPublisher

from schemas.base import Message
from schemas.topics import TOPICS, Topic, topic_for

CONTENT_TYPE = "application/json"


def register_publishers(
    broker: KafkaBroker, topics: Iterable[Topic] = TOPICS
) -> dict[str, KafkaPublisher]:
    """Create the FastStream publisher of each topic on ``broker``."""
    return {
        t.name: broker.publisher(
            t.name,
            title=f"{t.name}:publish",
            description=describe(t),
            schema=t.payload_type,
        )
        for t in topics
    }


def describe(topic: Topic) -> str:
    """Human description of a topic for the AsyncAPI document."""
    return (
        f"{topic.description} Key: `{topic.key}`. Partitions: {topic.partitions}. "
        f"Produced by {topic.producer}; consumed by {', '.join(topic.consumers)}. "
        f"Messages: {', '.join(m.__name__ for m in topic.messages)}."
    )


def headers_of(message: Message) -> dict[str, str]:
    return {
        "content-type": CONTENT_TYPE,
        "event-type": message.event_type,
        "schema-version": str(message.schema_version),
        "producer": message.producer,
    }


class Bus:
    """Sends messages to the topic the catalogue assigns to their type."""

    def __init__(self, publishers: Mapping[str, KafkaPublisher]) -> None:
        self._publishers = publishers

    @classmethod
    def on(cls, broker: KafkaBroker, topics: Iterable[Topic] = TOPICS) -> Bus:
        return cls(register_publishers(broker, topics))

    async def publish(self, message: Message) -> None:
        """Publish one message and wait until all in-sync replicas have it."""
        await self._send(message, confirm=True)

    async def publish_many(self, messages: Iterable[Message]) -> int:
        """Publish messages in order, then wait for all acknowledgements together.

        Order is kept per key (and so per partition), because the producer
        sends in the order it was given. Returns how many were published.
        """
        pending = [await self._send(m, confirm=False) for m in messages]
        # FastStream's in-memory test broker delivers at once and returns no future.
        await asyncio.gather(*(p for p in pending if inspect.isawaitable(p)))
        return len(pending)

    async def _send(self, message: Message, *, confirm: bool):  # type: ignore[no-untyped-def]
        topic = topic_for(message)
        return await self._publishers[topic.name].publish(
            message.model_dump_json().encode(),
            key=topic.key_of(message),
            headers=headers_of(message),
            correlation_id=str(message.correlation_id),
            no_confirm=not confirm,
        )
