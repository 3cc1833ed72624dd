"""Connecting to Kafka: the cluster (external or embedded), client options, topics.

Nothing here connects at import time; :func:`kafka_cluster` is called from the
composition root. Services publish through their outbox relay
(:mod:`hub.reliability.relay`); :func:`publish_messages` sends the same rows for tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from hub.embedded import EmbeddedBroker, wait_for_kafka
from hub.errors import BrokerStartError, BrokerUnavailable, TopicSetupError
from hub.reliability.consumer import outbox_row
from hub.settings import Settings
from schemas.base import Message
from schemas.topics import (
    DEAD_LETTERS,
    INFRASTRUCTURE_PARTITIONS,
    SERVICES,
    TOPICS,
    Topic,
    retry_topic,
)

log = logging.getLogger(__name__)

_SASL = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}


def kafka_security(settings: Settings) -> BaseSecurity | None:
    """FastStream's security object for the configured protocol (None for PLAINTEXT)."""
    context = settings.ssl_context()
    if settings.sasl_mechanism:
        assert settings.sasl_username and settings.sasl_password  # checked by Settings
        return _SASL[settings.sasl_mechanism](
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value(),
            ssl_context=context,
            use_ssl=settings.uses_tls,
        )
    if settings.uses_tls:
        return BaseSecurity(ssl_context=context, use_ssl=True)
    return None


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for plain aiokafka clients (admin, bare producers)."""
    return parse_security(kafka_security(settings))


@contextlib.asynccontextmanager
async def kafka_cluster(settings: Settings, *, connect_timeout: float = 15.0) -> AsyncIterator[str]:
    """Yield the bootstrap address of a reachable Kafka cluster.

    With ``HUB_BOOTSTRAP_SERVERS`` set, that cluster is checked for an answer;
    otherwise the embedded broker is started for the duration of the block.
    """
    if settings.bootstrap_servers:
        try:
            await wait_for_kafka(
                settings.bootstrap_servers, timeout=connect_timeout, **client_options(settings)
            )
        except BrokerStartError as exc:
            raise BrokerUnavailable(str(exc)) from None
        yield settings.bootstrap_servers
        return
    async with EmbeddedBroker(port=settings.broker_port, log_dir=settings.data_dir) as broker:
        yield broker.bootstrap


def infrastructure_topics() -> list[str]:
    """The dead-letter topic and each service's retry topic."""
    return [DEAD_LETTERS, *(retry_topic(service) for service in SERVICES)]


@dataclass(frozen=True)
class TopicStatus:
    """What :func:`ensure_topics` found or did for one topic."""

    name: str
    created: bool
    partitions: int
    wanted_partitions: int

    @property
    def under_partitioned(self) -> bool:
        return self.partitions < self.wanted_partitions


async def ensure_topics(
    settings: Settings,
    bootstrap: str,
    topics: Iterable[Topic] = TOPICS,
    *,
    services: Iterable[str] = (),
) -> list[TopicStatus]:
    """Create the missing topics of the catalogue and the infrastructure; safe to repeat.

    ``services`` adds the retry topics of services outside the catalogue
    (simulators, stand-ins). Existing topics are left alone (Kafka cannot
    shrink partitions) and reported with their actual partition count.
    """
    wanted: dict[str, tuple[int, dict[str, str]]] = {
        t.name: (t.partitions, dict(t.config)) for t in topics
    }
    for name in (*infrastructure_topics(), *map(retry_topic, services)):
        wanted[name] = (INFRASTRUCTURE_PARTITIONS, {})
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options(settings))
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        created: set[str] = set()
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name,
                        num_partitions=wanted[name][0],
                        replication_factor=settings.replication_factor,
                        topic_configs=wanted[name][1],
                    )
                    for name in missing
                ]
            )
            for name, code, *rest in response.topic_errors:
                if code == 0:
                    created.add(name)
                elif code != TopicAlreadyExistsError.errno:  # created meanwhile by someone else
                    detail = rest[0] if rest and rest[0] else for_code(code).__name__
                    raise TopicSetupError(f"cannot create topic {name}: {detail}")
        described = {d["topic"]: d for d in await admin.describe_topics(list(wanted))}
    except KafkaError as exc:
        raise TopicSetupError(f"topic setup failed: {exc!r}") from exc
    finally:
        await admin.close()
    report = []
    for name, (partitions, _) in wanted.items():
        info = described.get(name)
        if info is None or info["error_code"]:
            raise TopicSetupError(f"topic {name} is not visible after creation")
        status = TopicStatus(name, name in created, len(info["partitions"]), partitions)
        if status.under_partitioned:
            log.warning(
                "topic has fewer partitions than the catalogue asks",
                extra={"topic": name, "partitions": status.partitions, "wanted": partitions},
            )
        report.append(status)
    return report


async def publish_messages(bootstrap: str, messages: Iterable[Message], **options: Any) -> int:
    """Publish catalogue messages on their topics, with their keys and headers; wait for all.

    For tools, simulators and tests: a service publishes through its outbox instead.
    Returns how many were published.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **options)
    await producer.start()
    try:
        sent = []
        for row in map(outbox_row, messages):
            sent.append(
                await producer.send(row.topic, row.value, key=row.key, headers=list(row.headers))
            )
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return len(sent)
