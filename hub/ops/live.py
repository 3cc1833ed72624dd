"""The operations view's own reading of Kafka: topics, consumer lag and dead letters.

One consumer without a group (nothing committed, nothing to rebalance) is
assigned every partition of the catalogue's topics, the dead-letter topic and
the retry topics. The topics of :data:`~hub.ops.projection.PROJECTED` and the
dead-letter topic are read from the beginning, so the view is complete after
a restart; the others are followed from their end, only for their counts.

Message counts are the end offsets of the partitions, taken from the high
watermark that every fetch response carries. (The embedded broker answers
list-offsets requests with the base offset of the last batch, so
``end_offsets`` would count short there.)

Consumer lag is, per group and topic, the end offsets minus the group's
committed offsets. Groups come from ``list_consumer_groups`` plus the hub's
services (``<service>`` and ``<service>.retry``); committed offsets are asked
for the known partitions explicitly, because the embedded broker's answer to
"all partitions of the group" cannot be decoded by aiokafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from hub.kafka import client_options, infrastructure_topics
from hub.ops.projection import PROJECTED, Projection
from hub.reliability import deadletters as dl
from hub.settings import Settings
from schemas.topics import DEAD_LETTERS, SERVICES, TOPICS

log = logging.getLogger(__name__)

REFRESH = 2.0
"""Seconds between measurements of consumer lag."""
_METADATA_EVERY = 10.0
_KEEP_LETTERS = 500
_KEEP_REPLAYS = 10_000
_SHOWN_ERROR = 200


class NotReplayable(Exception):
    """The dead letter came from an external system's feed: it has no topic to go back to."""


def service_groups(services: Iterable[str]) -> list[str]:
    """The consumer groups a hub service uses: its name and its retry consumer's."""
    return [group for name in services for group in (name, f"{name}.retry")]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def letter_summary(letter: dl.DeadLetter) -> dict[str, Any]:
    """What the view shows of a dead letter: its labels, with personal codes masked."""
    error = dl.masked(letter.error.encode()).decode("utf-8", "replace")
    return {
        "id": letter.id,
        "dead_at": _iso(letter.dead_at),
        "service": letter.service,
        "reason": letter.reason,
        "event_type": dl.header(letter.headers, "event-type"),
        "key": dl.masked(letter.key or b"").decode("utf-8", "replace"),
        "error_type": letter.error_type,
        "error": error[:_SHOWN_ERROR],
        "attempts": letter.attempts,
        "source_topic": letter.source_topic,
        "source": f"{letter.source_topic}:{letter.source_partition}:{letter.source_offset}",
        "position": letter.position,
        "replayable": letter.replayable,
    }


@dataclass
class LiveView:
    """Reads Kafka for the operations view; :meth:`run` until the stop event."""

    settings: Settings
    bootstrap: str
    services: Sequence[str] = SERVICES
    projection: Projection = field(default_factory=Projection)
    refresh: float = REFRESH

    def __post_init__(self) -> None:
        self.options = client_options(self.settings)
        self.read_fully = {t.name for t in PROJECTED} | {DEAD_LETTERS}
        self.topic_names = [t.name for t in TOPICS] + infrastructure_topics()
        self.started_at = datetime.now(UTC)
        self.records_read = 0
        self.skipped = 0
        self.ends: dict[TopicPartition, int] = {}
        self.partitions: dict[str, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._assigned: set[TopicPartition] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._letters: deque[dict[str, Any]] = deque(maxlen=_KEEP_LETTERS)
        self.letters_total = 0
        self._replayed: dict[str, dict[str, Any]] = {}
        self._lag: dict[str, Any] = {"groups": [], "measured_at": None}
        self.errors: dict[str, str] = {}
        self.notes: set[str] = set()

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the topics and measure lag until ``stop``; Kafka errors are retried."""
        await asyncio.gather(
            self._keep(self._follow, stop, "topics"), self._keep(self._measure, stop, "lag")
        )

    async def _keep(self, work: Any, stop: asyncio.Event, what: str) -> None:
        """Run ``work`` again after a pause whenever it fails; the view never brings down
        the process it runs in."""
        while not stop.is_set():
            try:
                await work(stop)
            except Exception as exc:
                name = type(exc).__name__
                text = str(exc) if name in str(exc) else f"{name}: {exc}"
                if self.errors.get(what) != text[:300]:  # once per new problem, not every round
                    log.warning(
                        "operations view: reading %s failed, retrying: %s",
                        what,
                        text,
                        exc_info=log.isEnabledFor(logging.DEBUG),
                    )
                self.errors[what] = text[:300]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.refresh)

    async def _follow(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id="hub-ops",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=250,
            **self.options,
        )
        self._consumer, self._assigned = consumer, set()
        try:
            await consumer.start()
            next_metadata = 0.0
            while not stop.is_set():
                if time.monotonic() >= next_metadata:
                    await self._assign(consumer)
                    next_metadata = time.monotonic() + _METADATA_EVERY
                batch = await consumer.getmany(timeout_ms=300, max_records=1000)
                for tp, records in batch.items():
                    for record in records:
                        try:
                            self._take(tp.topic, record)
                        except Exception:  # a bug here must not stop the view at this record
                            self.skipped += 1
                            log.warning(
                                "operations view: record skipped",
                                extra={"topic": tp.topic, "offset": record.offset},
                                exc_info=True,
                            )
                    self._positions[tp] = records[-1].offset + 1
                    self.records_read += len(records)
                for tp in self._assigned:
                    end = consumer.highwater(tp)
                    if end is not None:
                        self.ends[tp] = end
                self.errors.pop("topics", None)
                await asyncio.sleep(0)  # a long backlog must not starve the HTTP server
        finally:
            self._consumer = None
            await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        """Assign every partition of the wanted topics that exist; keep positions."""
        await consumer.topics()  # fresh metadata
        wanted: set[TopicPartition] = set()
        for name in self.topic_names:
            partitions = consumer.partitions_for_topic(name) or set()
            if partitions:
                self.partitions[name] = len(partitions)
            wanted.update(TopicPartition(name, p) for p in partitions)
        if wanted == self._assigned:
            return
        consumer.assign(sorted(wanted))
        self._assigned = wanted
        for tp, position in self._positions.items():
            if tp in wanted:
                consumer.seek(tp, position)
        new = [tp for tp in sorted(wanted) if tp not in self._positions]
        # In bulk: each call waits for the fetcher's next round (up to fetch_max_wait).
        if beginning := [tp for tp in new if tp.topic in self.read_fully]:
            await consumer.seek_to_beginning(*beginning)
        if end := [tp for tp in new if tp.topic not in self.read_fully]:
            await consumer.seek_to_end(*end)

    def _take(self, topic: str, record: ConsumerRecord[Any, Any]) -> None:
        replay_of = dl.header(tuple(record.headers or ()), dl.REPLAY_OF)
        if replay_of and replay_of not in self._replayed:
            self._remember_replay(replay_of, {"topic": topic, "at": _iso(_when(record))})
        if topic == DEAD_LETTERS:
            self._letters.append(letter_summary(dl.DeadLetter.of(record)))
            self.letters_total += 1
        elif topic in self.read_fully and record.value is not None:
            self.projection.ingest(topic, record.value)

    async def _measure(self, stop: asyncio.Event) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, client_id="hub-ops", **self.options
        )
        try:
            await admin.start()
            while not stop.is_set():
                self._lag = await self._lag_now(admin)
                self.errors.pop("lag", None)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.refresh)
        finally:
            await admin.close()

    async def _lag_now(self, admin: AIOKafkaAdminClient) -> dict[str, Any]:
        groups = set(service_groups(self.services))
        try:
            groups.update(g for g, kind in await admin.list_consumer_groups() if kind != "connect")
            self.notes.discard("list_consumer_groups unsupported")
        except Exception:  # older brokers, or an answer aiokafka cannot decode
            self.notes.add("list_consumer_groups unsupported")
        ends = dict(self.ends)
        partitions = sorted(ends)
        rows = []
        for group in sorted(groups):
            if not partitions:
                break
            try:
                committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
            except Exception as exc:
                log.debug("no offsets for group %s: %r", group, exc)
                continue
            if all(meta.offset < 0 for meta in committed.values()):
                continue
            state, members = await _describe(admin, group)
            per_topic: dict[str, list[int]] = {}
            for tp, meta in committed.items():
                if meta.offset < 0 or tp not in ends:
                    continue
                figures = per_topic.setdefault(tp.topic, [0, 0, 0, 0])
                figures[0] += meta.offset
                figures[1] += ends[tp]
                figures[2] += max(0, ends[tp] - meta.offset)
                figures[3] += 1
            rows.extend(
                {
                    "group": group,
                    "state": state,
                    "members": members,
                    "topic": topic,
                    "committed": done,
                    "end": end,
                    "lag": lag,
                    "partitions": count,
                }
                for topic, (done, end, lag, count) in sorted(per_topic.items())
            )
        return {"groups": rows, "measured_at": _iso(datetime.now(UTC))}

    # ------------------------------------------------------------------ answers

    def topics(self) -> dict[str, Any]:
        """Every catalogue and infrastructure topic with its partitions and message count."""
        ends: dict[str, int] = {}
        for tp, end in self.ends.items():
            ends[tp.topic] = ends.get(tp.topic, 0) + end
        catalogue = {t.name: t for t in TOPICS}
        types = self.projection.message_types()
        rows = []
        for name in self.topic_names:
            topic = catalogue.get(name)
            rows.append(
                {
                    "topic": name,
                    "catalogue": topic is not None,
                    "partitions": self.partitions.get(name),
                    "messages": ends.get(name),
                    "producer": topic.producer if topic else None,
                    "consumers": list(topic.consumers) if topic else [],
                    "types": types.get(name, {}),
                }
            )
        return {"topics": rows}

    def lag(self) -> dict[str, Any]:
        return self._lag | {"notes": sorted(self.notes)}

    def dead_letters(self, limit: int = 100) -> dict[str, Any]:
        """The newest dead letters first (by when they were dead-lettered: the topic's
        partitions are read in no order of time), each marked if it was replayed."""
        shown = sorted(self._letters, key=lambda d: d["dead_at"], reverse=True)[:limit]
        return {
            "total": self.letters_total,
            "dead_letters": [
                d | {"replayed": self._replayed.get(d["id"])} for d in shown if limit > 0
            ],
        }

    async def replay(self, ident: str) -> dict[str, Any]:
        """Republish one dead letter to its topic, as `hub dlq replay` does.

        Raises LookupError if no single dead letter matches ``ident`` and
        :class:`NotReplayable` for one from a system's feed.
        """
        letters = await dl.dead_letters(self.bootstrap, **self.options)
        letter = dl.find(letters, ident)
        if not letter.replayable:
            raise NotReplayable(
                f"dead letter {letter.id[:8]} came from {letter.source_topic}, not a topic:"
                " correct the entry at the source system"
            )
        sent = await dl.replay([letter], self.bootstrap, **self.options)
        result = {"topic": letter.source_topic, "at": _iso(datetime.now(UTC))}
        self._remember_replay(letter.id, result)
        return {"id": letter.id, "replayed": sent} | result

    def _remember_replay(self, ident: str, how: dict[str, Any]) -> None:
        if len(self._replayed) >= _KEEP_REPLAYS:
            del self._replayed[next(iter(self._replayed))]
        self._replayed[ident] = how

    def health(self) -> dict[str, Any]:
        """Whether the view has read everything there was when it last looked."""
        consumer = self._consumer
        behind = None
        if consumer is not None and self._assigned:
            behind = sum(
                max(0, self.ends[tp] - self._positions.get(tp, 0))
                for tp in self._assigned
                if tp.topic in self.read_fully and tp in self.ends
            )
        return {
            "status": "ok" if not self.errors else "degraded",
            "bootstrap": self.bootstrap,
            "municipality": self.settings.municipality,
            "started_at": _iso(self.started_at),
            "records_read": self.records_read,
            "records_skipped": self.skipped,
            "behind": behind,
            "caught_up": behind == 0 and all(tp in self.ends for tp in self._assigned),
            "children": self.projection.children(),
            "errors": dict(self.errors),
        }


async def _describe(admin: AIOKafkaAdminClient, group: str) -> tuple[str | None, int | None]:
    """The group's state and member count, or Nones. One group a request: the embedded
    broker's answer about several groups at once cannot be decoded."""
    try:
        (described,) = await admin.describe_consumer_groups([group])
        ((error, _, state, *_, members),) = described.groups
    except Exception:
        return None, None
    return (state or None, len(members)) if not error else (None, None)


def _when(record: ConsumerRecord[Any, Any]) -> datetime:
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)
