"""Parked and dead-lettered messages: how they are labelled, read back and replayed.

A message that failed transiently is *parked* on its service's retry topic
with ``retry-*`` headers, until it is due again. A message that cannot be
handled — undecodable, invalid, refused, or out of attempts — is *dead-lettered*
on :data:`~schemas.topics.DEAD_LETTERS` with ``dlq-*`` headers that say why.
Both keep the original key, value and headers, so a replay is the original
message: `hub dlq replay` republishes it to its original topic with a new
``delivery-id`` header, and the consumer's inbox skips it if it was applied
after all.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from hub.reliability.store import Headers, OutboxRow
from schemas.topics import DEAD_LETTERS, retry_topic
from schemas.values import mask_personal_codes

Reason = Literal["invalid_message", "refused", "retries_exhausted", "handler_error"]
"""Why a message was dead-lettered:

- ``invalid_message``: not a valid message of its topic (bytes, JSON, schema, type);
- ``refused``: a permanent failure, such as an external system answering 4xx;
- ``retries_exhausted``: it kept failing transiently until the last attempt;
- ``handler_error``: the handler failed in a way the hub did not expect (a bug).
"""

DLQ_PREFIX = "dlq-"
FEED_PREFIX = "feed:"
"""Source of a dead letter that came from polling a system's feed, not from a topic."""
RETRY_PREFIX = "retry-"
DELIVERY_ID = "delivery-id"
REPLAY_OF = "replay-of"
_MAX_ERROR = 500


def _text(value: object) -> bytes:
    return str(value).encode()


def _stamp(when: datetime) -> bytes:
    return when.isoformat(timespec="milliseconds").encode()


def original_headers(headers: Headers) -> Headers:
    """The headers the message was published with, without the hub's parking and
    dead-letter labels (a ``replay-of`` stays: it links a replay to its dead letter)."""
    return tuple(
        (name, value)
        for name, value in headers
        if not name.startswith((DLQ_PREFIX, RETRY_PREFIX)) and name != DELIVERY_ID
    )


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong with a message so far: where it came from, how often, why."""

    source_topic: str
    source_partition: int
    source_offset: int
    attempts: int
    first_failure: datetime
    last_failure: datetime
    error_type: str
    error: str

    def _labels(self, prefix: str) -> Headers:
        """Where the message came from and why it failed, as headers named ``prefix`` + field."""
        fields = (
            ("source-topic", _text(self.source_topic)),
            ("source-partition", _text(self.source_partition)),
            ("source-offset", _text(self.source_offset)),
            ("attempts", _text(self.attempts)),
            ("first-failure", _stamp(self.first_failure)),
            ("error-type", _text(self.error_type)),
            ("error", self.error[:_MAX_ERROR].encode()),
        )
        return tuple((prefix + name, value) for name, value in fields)

    def park(
        self, service: str, key: bytes | None, value: bytes, headers: Headers, due: datetime
    ) -> OutboxRow:
        """The copy of the message that waits on the service's retry topic until ``due``."""
        labels = (*self._labels(RETRY_PREFIX), ("retry-due", _stamp(due)))
        return OutboxRow(retry_topic(service), key, value, original_headers(headers) + labels)

    def bury(
        self, service: str, reason: Reason, key: bytes | None, value: bytes, headers: Headers
    ) -> OutboxRow:
        """The copy of the message on the dead-letter topic."""
        labels = (
            ("dlq-id", _text(uuid.uuid4())),
            ("dlq-reason", _text(reason)),
            ("dlq-service", _text(service)),
            ("dlq-last-failure", _stamp(self.last_failure)),
            *self._labels(DLQ_PREFIX),
        )
        return OutboxRow(DEAD_LETTERS, key, value, original_headers(headers) + labels)


def header(headers: Headers, name: str) -> str | None:
    """The value of header ``name`` as text (None if absent)."""
    for key, value in headers:
        if key == name:
            return (value or b"").decode("utf-8", "replace")
    return None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic, decoded."""

    id: str
    reason: str
    service: str
    error_type: str
    error: str
    attempts: int
    first_failure: datetime | None
    last_failure: datetime | None
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    """The original headers, without the dlq-* labels."""
    dead_at: datetime
    position: str
    """Where it is on the dead-letter topic: ``partition:offset``."""

    @property
    def replayable(self) -> bool:
        """A feed entry has no topic to go back to: it is fixed at the source system."""
        return bool(self.source_topic) and not self.source_topic.startswith(FEED_PREFIX)

    @classmethod
    def of(cls, record: ConsumerRecord[Any, Any]) -> DeadLetter:
        headers: Headers = tuple((name, value or b"") for name, value in record.headers or ())

        def get(name: str, default: str = "") -> str:
            return header(headers, name) or default

        def when(name: str) -> datetime | None:
            try:
                return datetime.fromisoformat(get(name)) if get(name) else None
            except ValueError:
                return None

        def number(name: str, default: int) -> int:
            try:
                return int(get(name) or default)
            except ValueError:
                return default

        return cls(
            id=get("dlq-id", f"{record.partition}:{record.offset}"),
            reason=get("dlq-reason", "unknown"),
            service=get("dlq-service", "unknown"),
            error_type=get("dlq-error-type"),
            error=get("dlq-error"),
            attempts=number("dlq-attempts", 0),
            first_failure=when("dlq-first-failure"),
            last_failure=when("dlq-last-failure"),
            source_topic=get("dlq-source-topic"),
            source_partition=number("dlq-source-partition", -1),
            source_offset=number("dlq-source-offset", -1),
            key=record.key,
            value=record.value or b"",
            headers=original_headers(headers),
            dead_at=datetime.fromtimestamp(record.timestamp / 1000, UTC),
            position=f"{record.partition}:{record.offset}",
        )


async def read_topic(
    bootstrap: str, topic: str, *, idle_polls: int = 3, **client_options: Any
) -> list[ConsumerRecord[Any, Any]]:
    """Every record now on ``topic``, partition by partition (no consumer group, no commits).

    The end of each partition is the high watermark that fetch responses
    carry. (The embedded broker answers list-offsets requests with the base
    offset of the last batch rather than the end, so ``end_offsets`` would
    stop short there.) A partition that gives no records and no watermark
    for ``idle_polls`` polls in a row is taken as empty; one with a watermark
    it has not reached is read on (given up only after twenty times as many).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **client_options
    )
    try:
        await consumer.start()
        await consumer.topics()  # fetches the cluster's metadata
        known = consumer.partitions_for_topic(topic) or ()
        partitions = [TopicPartition(topic, p) for p in sorted(known)]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord[Any, Any]] = []
        behind = set(partitions)
        idle = dict.fromkeys(partitions, 0)
        while behind:
            batch = await consumer.getmany(*behind, timeout_ms=300)
            for tp in list(behind):
                got = batch.get(tp, [])
                records.extend(got)
                end = consumer.highwater(tp)
                idle[tp] = 0 if got else idle[tp] + 1
                caught_up = end is not None and await consumer.position(tp) >= end
                # A partition known to hold more may sit out a few polls while the others'
                # records come first: only one that never answered is taken as empty soon.
                patience = idle_polls if end is None else idle_polls * 20
                if caught_up or idle[tp] >= patience:
                    behind.discard(tp)
        return records
    finally:
        await consumer.stop()


async def dead_letters(bootstrap: str, **client_options: Any) -> list[DeadLetter]:
    """The dead-letter topic, oldest first."""
    records = await read_topic(bootstrap, DEAD_LETTERS, **client_options)
    return sorted((DeadLetter.of(r) for r in records), key=lambda d: (d.dead_at, d.position))


def select(
    letters: Iterable[DeadLetter],
    *,
    topic: str | None = None,
    service: str | None = None,
    reasons: Iterable[str] | None = None,
    since: datetime | None = None,
) -> list[DeadLetter]:
    """The dead letters that match every filter given."""
    wanted = set(reasons) if reasons is not None else None
    return [
        d
        for d in letters
        if (topic is None or d.source_topic == topic)
        and (service is None or d.service == service)
        and (wanted is None or d.reason in wanted)
        and (since is None or d.dead_at >= since)
    ]


def find(letters: Sequence[DeadLetter], prefix: str) -> DeadLetter:
    """The dead letter whose id (or ``partition:offset``) starts with ``prefix``."""
    found = [d for d in letters if d.id.startswith(prefix) or d.position == prefix]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise LookupError(f"{what} dead letters match {prefix!r}")
    return found[0]


async def replay(letters: Sequence[DeadLetter], bootstrap: str, **client_options: Any) -> int:
    """Republish each dead letter to its original topic, with its key and a new delivery id.

    Letters that are not :attr:`~DeadLetter.replayable` are left out; returns how many were
    sent.
    """
    letters = [d for d in letters if d.replayable]
    if not letters:
        return 0
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **client_options)
    try:
        await producer.start()
        sent = [
            await producer.send(
                d.source_topic,
                d.value,
                key=d.key,
                headers=[*d.headers, (DELIVERY_ID, _text(uuid.uuid4())), (REPLAY_OF, _text(d.id))],
            )
            for d in letters
        ]
        await asyncio.gather(*sent)
        return len(sent)
    finally:
        await producer.stop()


def masked(value: bytes) -> bytes:
    """``value`` with anything shaped like a personal code replaced by ``******-*****``."""
    return mask_personal_codes(value.decode("utf-8", "surrogateescape")).encode(
        "utf-8", "surrogateescape"
    )
