"""Reliable consumption: a batch of records in, one SQLite transaction, offsets committed after.

A service declares one :class:`Handler` per topic. For every batch the
consumer:

1. parses each record (undecodable or invalid ones go to the dead-letter
   topic at once);
2. drops the ones the inbox has seen (duplicates, counted);
3. runs the handlers' ``fetch`` — the only place for network I/O, outside
   any transaction — concurrently, with the retry policy of the client;
4. runs ``apply`` for each message, which records state changes and
   messages to publish on a :class:`Unit` without touching the database;
5. commits, in one transaction, the inbox, the state changes and the
   outbox — which also holds the parked and dead-lettered copies of the
   messages that failed;
6. wakes the outbox relay, and only then commits the Kafka offsets.

A crash before step 5 redelivers the batch; after it, the inbox skips what
was applied. A failing message never stops its partition: it is parked on
the service's retry topic (transient failures) or dead-lettered
(everything else), and the consumer moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from hub.errors import InvalidMessage, PermanentError, TransientError
from hub.reliability.deadletters import Failure, Reason, header
from hub.reliability.metrics import Metrics
from hub.reliability.store import Headers, OutboxRow, Store, Writes
from schemas.base import Message
from schemas.topics import BY_NAME, Topic, retry_topic, topic_for
from schemas.values import mask_personal_codes

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One Kafka record, as the consumer sees it (a header without a value reads as empty)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers

    @classmethod
    def of(cls, record: ConsumerRecord[Any, Any]) -> Incoming:
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value if record.value is not None else b"",
            tuple((name, value or b"") for name, value in record.headers or ()),
        )

    def source(self, parked: bool) -> tuple[str, int, int]:
        """Topic, partition and offset the message first came from."""
        if not parked:
            return self.topic, self.partition, self.offset
        return (
            header(self.headers, "retry-source-topic") or self.topic,
            _int(header(self.headers, "retry-source-partition"), self.partition),
            _int(header(self.headers, "retry-source-offset"), self.offset),
        )

    def failure(self, error: BaseException, now: datetime, *, parked: bool) -> Failure:
        """This record's failure history, extended by ``error`` (personal codes masked)."""
        attempts, first_failure = 1, now
        if parked:
            attempts = _int(header(self.headers, "retry-attempts"), 0) + 1
            first_failure = _moment(header(self.headers, "retry-first-failure")) or now
        return Failure(
            *self.source(parked),
            attempts=attempts,
            first_failure=first_failure,
            last_failure=now,
            error_type=type(error).__name__,
            error=mask_personal_codes(str(error)),
        )

    @property
    def due(self) -> datetime | None:
        """When a parked record is due again (None: now)."""
        return _moment(header(self.headers, "retry-due"))


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def _moment(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


CONTENT_TYPE = "application/json"


def headers_of(message: Message) -> dict[str, str]:
    """The headers every published message carries: what it is, who sent it, its correlation."""
    return {
        "content-type": CONTENT_TYPE,
        "event-type": message.event_type,
        "schema-version": str(message.schema_version),
        "producer": message.producer,
        "correlation_id": str(message.correlation_id),
    }


def outbox_row(message: Message, *, topic: Topic | str | None = None) -> OutboxRow:
    """A message as an outbox row: its topic, key and headers.

    The topic is the catalogue's for the message's type unless given: a name (another
    topic, the key as the catalogue keys the type) or a :class:`Topic` of a plug-in's own,
    whose messages the catalogue does not know. This is the only way a message is
    published: a service's outbox relay sends the rows, and
    :func:`hub.kafka.publish_messages` sends them for tools.
    """
    spec = topic if isinstance(topic, Topic) else topic_for(message)
    labels = headers_of(message)
    headers = tuple((name, value.encode()) for name, value in labels.items())
    return OutboxRow(
        topic if isinstance(topic, str) else spec.name,
        spec.key_of(message),
        message.model_dump_json().encode(),
        headers,
    )


@dataclass(slots=True)
class Unit:
    """What applying one message changes: SQL statements and messages to publish.

    Nothing touches the database until the batch commits, so a message whose
    ``apply`` fails leaves nothing behind but its parked or dead-lettered copy.
    """

    statements: list[tuple[str, Sequence[Any]]] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        self.statements.append((sql, parameters))

    def emit(self, message: Message, *, topic: Topic | str | None = None) -> None:
        """Publish ``message`` after the commit, on its catalogue topic (or ``topic``: see
        :func:`outbox_row`)."""
        self.outbox.append(outbox_row(message, topic=topic))


class Handler(Generic[M]):
    """How a service handles one topic. Subclass per topic; override :meth:`apply`.

    ``fetch`` is where network I/O goes (calls to external systems): it runs
    before the transaction, with the client's retries. Raise
    :class:`~hub.errors.TransientError` for what may pass (the message is
    parked and tried again) and :class:`~hub.errors.PermanentError` for what
    will not (it is dead-lettered). ``apply`` is pure: it records on the unit.
    """

    def __init__(self, topic: Topic | str) -> None:
        self.topic = BY_NAME[topic] if isinstance(topic, str) else topic

    def parse(self, value: bytes) -> M:
        """The message in ``value``; raises ``pydantic.ValidationError`` when it is not one."""
        return self.topic.parse(value)  # type: ignore[return-value]

    async def fetch(self, message: M) -> Any:
        return None

    def apply(self, unit: Unit, message: M, fetched: Any) -> None:
        raise NotImplementedError

    def given_up(self, message: M, error: BaseException) -> Sequence[Message]:
        """Messages to publish when ``message`` is dead-lettered (retries exhausted, refused,
        or a handler failure): a failure event, so that whoever asked is not left waiting.
        Published in the transaction that records the dead letter."""
        return ()

    async def close(self) -> None:
        """Release what the handler holds (its clients); called when the service stops."""

    @property
    def fetches(self) -> bool:
        return type(self).fetch is not Handler.fetch


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """When a parked message is due again, and after how many attempts it is dead-lettered."""

    max_attempts: int = 5
    first_delay: float = 1.0
    max_delay: float = 300.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure: doubling, with ±20% jitter."""
        base = min(self.max_delay, self.first_delay * 2 ** (attempts - 1))
        return base * random.uniform(0.8, 1.2)  # spreads retries; not for secrecy


@dataclass
class _Item:
    record: Incoming
    handler: Handler[Any]
    message: Message
    event_id: str
    ok: bool = True
    """False once the message failed (and was parked or dead-lettered)."""
    fetched: Any = None


@dataclass
class Prepared:
    """A batch ready to commit: each applied message's changes, and the failures' copies."""

    applied: list[tuple[_Item, Unit]] = field(default_factory=list)
    failed: list[OutboxRow] = field(default_factory=list)
    """Parked and dead-lettered copies of the messages that failed."""
    claimed: set[str] = field(default_factory=set)
    """event_ids held in flight until the batch is committed."""
    timed: list[Unit] = field(default_factory=list)
    """Changes of work done on a clock rather than on a message (a timer's tick)."""
    after: asyncio.Future[None] | None = None
    """Done once the batch prepared before this one has committed (or given up)."""
    done: asyncio.Future[None] | None = None
    """Done once this batch has committed (or given up)."""

    def writes(self) -> Writes:
        writes = Writes(outbox=list(self.failed))
        for item, unit in self.applied:
            writes.handled.append(item.event_id)
            writes.statements.extend(unit.statements)
            writes.outbox.extend(unit.outbox)
        for unit in self.timed:
            writes.statements.extend(unit.statements)
            writes.outbox.extend(unit.outbox)
        return writes


class BatchProcessor:
    """Handles batches of records for one service (steps 1–5 of the module docstring)."""

    def __init__(
        self,
        service: str,
        handlers: Mapping[str, Handler[Any]],
        store: Store,
        metrics: Metrics,
        *,
        schedule: RetrySchedule = RetrySchedule(),
        fetch_concurrency: int = 16,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.service = service
        self.handlers = dict(handlers)
        self.store = store
        self.metrics = metrics
        self.schedule = schedule
        self._retry_topic = retry_topic(service)
        self._fetch_slots = asyncio.Semaphore(fetch_concurrency)
        self._clock = clock
        self._in_flight: set[str] = set()
        """event_ids of prepared batches not yet committed: duplicates, for any other batch."""
        self._last: asyncio.Future[None] | None = None
        """Done once the last batch prepared has committed (see :meth:`_queue`)."""

    async def process(self, records: Sequence[Incoming]) -> list[OutboxRow]:
        """Handle ``records`` and commit the outcome; returns the outbox rows committed."""
        return await self.commit(await self.prepare(records))

    async def prepare(self, records: Sequence[Incoming]) -> Prepared:
        """Steps 1–4: parse, skip duplicates, fetch, apply; nothing is written yet.

        The applied messages' event_ids count as handled for every other batch
        until :meth:`commit` — so the next batch can be prepared while this one
        commits, without either applying a message twice. A message that
        failed is released at once: its parked copy must not look handled.
        """
        batch = Prepared()
        items = [item for record in records if (item := self._parse(record, batch)) is not None]
        items = await self._new_only(items)
        await asyncio.gather(*(self._fetch(item, batch) for item in items if item.handler.fetches))
        for item in items:
            if item.ok:
                self._apply(item, batch)
            if item.ok:
                batch.claimed.add(item.event_id)
            else:
                self._in_flight.discard(item.event_id)
        self._queue(batch)  # no await since the applies: the queue keeps their order
        return batch

    async def tick(self, work: Callable[[Unit], None]) -> list[OutboxRow]:
        """Do timed work (a timer's tick: it records on a unit, as ``apply`` does) and commit
        it in its turn among the batches; returns the outbox rows committed."""
        batch = Prepared()
        unit = Unit()
        work(unit)
        if unit.statements or unit.outbox:
            batch.timed.append(unit)
        self._queue(batch)
        return await self.commit(batch)

    def _queue(self, batch: Prepared) -> None:
        """Give ``batch`` its turn to commit: after every batch prepared before it.

        A service's memory changes when a batch is prepared (``apply``), and what it
        writes is that memory as it was then. Two batches in flight at once (the
        main and the retry consumer, a timer's tick between a batch's prepare and
        its commit) must therefore commit in the order they were prepared, or an
        older image of a row would overwrite a newer one.
        """
        batch.after, batch.done = self._last, asyncio.get_running_loop().create_future()
        self._last = batch.done

    async def commit(self, batch: Prepared) -> list[OutboxRow]:
        """Step 5: commit a prepared batch; returns the outbox rows as stored.

        If the batch cannot be committed because of one message's statements
        (a constraint, a bug in a handler), its messages are committed one by
        one and the failing ones dead-lettered; if even a dead letter cannot
        be written, the store itself is failing and the error is raised.
        """
        try:
            if batch.after is not None:
                await asyncio.shield(batch.after)
            try:
                committed = await self.store.commit(self.service, batch.writes())
                handled = len(batch.applied)
            except sqlite3.Error as exc:
                log.warning(
                    "batch commit failed; committing one by one", extra={"error": repr(exc)}
                )
                committed, handled = await self._one_by_one(batch)
        finally:
            self._in_flight.difference_update(batch.claimed)
            if batch.done is not None and not batch.done.done():
                batch.done.set_result(None)
        if handled:
            self.metrics.handled.labels(self.service).inc(handled)
        return committed

    async def _one_by_one(self, batch: Prepared) -> tuple[list[OutboxRow], int]:
        committed = await self.store.commit(self.service, Writes(outbox=list(batch.failed)))
        handled = 0
        for item, unit in batch.applied:
            alone = Writes([item.event_id], unit.statements, unit.outbox)
            try:
                committed += await self.store.commit(self.service, alone)
                handled += 1
            except sqlite3.Error as exc:
                log.exception("handler's changes cannot be stored", extra=_ids(item))
                rows: list[OutboxRow] = []
                self._bury(item.record, "handler_error", exc, rows, item)
                committed += await self.store.commit(self.service, Writes(outbox=rows))
        for unit in batch.timed:  # if even these cannot be stored, the store is failing
            committed += await self.store.commit(
                self.service, Writes(statements=unit.statements, outbox=unit.outbox)
            )
        return committed, handled

    def _parked(self, record: Incoming) -> bool:
        return record.topic == self._retry_topic

    def _parse(self, record: Incoming, batch: Prepared) -> _Item | None:
        route = record.source(self._parked(record))[0]
        handler = self.handlers.get(route)
        if handler is None:
            error: BaseException = PermanentError(f"no handler for topic {route}")
            self._bury(record, "invalid_message", error, batch.failed)
            return None
        try:
            message = handler.parse(record.value)
        except ValueError as exc:  # pydantic's ValidationError included
            self._bury(record, "invalid_message", _invalid(exc), batch.failed)
            return None
        return _Item(record, handler, message, str(message.event_id))

    async def _new_only(self, items: list[_Item]) -> list[_Item]:
        """The items whose event_id is neither in the inbox, nor in a batch in flight,
        nor earlier in this batch; those it keeps are put in flight."""
        claimed: list[_Item] = []
        duplicates = 0
        for item in items:  # no await in this loop: claiming is atomic
            if item.event_id in self._in_flight:
                duplicates += 1
                continue
            self._in_flight.add(item.event_id)
            claimed.append(item)
        seen = await self.store.duplicates(self.service, [item.event_id for item in claimed])
        fresh = []
        for item in claimed:
            if item.event_id in seen:
                self._in_flight.discard(item.event_id)
                duplicates += 1
            else:
                fresh.append(item)
        if duplicates:
            self.metrics.duplicates.labels(self.service).inc(duplicates)
        return fresh

    async def _fetch(self, item: _Item, batch: Prepared) -> None:
        async with self._fetch_slots:
            try:
                item.fetched = await item.handler.fetch(item.message)
                return
            except TransientError as exc:
                self._park_or_bury(item.record, exc, batch.failed, item)
            except PermanentError as exc:
                self._bury(item.record, "refused", exc, batch.failed, item)
            except Exception as exc:  # a bug in a handler must not stop the service
                log.exception(
                    "fetch failed", extra={"topic": item.handler.topic.name, **_ids(item)}
                )
                self._bury(item.record, "handler_error", exc, batch.failed, item)
        item.ok = False

    def _apply(self, item: _Item, batch: Prepared) -> None:
        unit = Unit()
        try:
            item.handler.apply(unit, item.message, item.fetched)
        except TransientError as exc:
            self._park_or_bury(item.record, exc, batch.failed, item)
        except PermanentError as exc:
            self._bury(item.record, "refused", exc, batch.failed, item)
        except Exception as exc:  # a bug in a handler must not stop the service
            log.exception("apply failed", extra={"topic": item.handler.topic.name, **_ids(item)})
            self._bury(item.record, "handler_error", exc, batch.failed, item)
        else:
            batch.applied.append((item, unit))
            return
        item.ok = False

    def _park_or_bury(
        self,
        record: Incoming,
        error: BaseException,
        rows: list[OutboxRow],
        item: _Item | None = None,
    ) -> None:
        now = self._clock()
        failure = record.failure(error, now, parked=self._parked(record))
        if failure.attempts >= self.schedule.max_attempts:
            self._bury(record, "retries_exhausted", error, rows, item)
            return
        due = now + timedelta(seconds=self.schedule.delay(failure.attempts))
        rows.append(failure.park(self.service, record.key, record.value, record.headers, due))
        self.metrics.parked.labels(self.service).inc()
        self._log("message parked", failure, attempts=failure.attempts)

    def _bury(
        self,
        record: Incoming,
        reason: Reason,
        error: BaseException,
        rows: list[OutboxRow],
        item: _Item | None = None,
    ) -> None:
        failure = record.failure(error, self._clock(), parked=self._parked(record))
        rows.append(failure.bury(self.service, reason, record.key, record.value, record.headers))
        self.metrics.dead_lettered.labels(self.service, reason).inc()
        self._log("message dead-lettered", failure, reason=reason)
        if item is not None:
            rows.extend(self._given_up(item, error))

    @staticmethod
    def _given_up(item: _Item, error: BaseException) -> list[OutboxRow]:
        try:
            return [outbox_row(m) for m in item.handler.given_up(item.message, error)]
        except Exception:  # a failing hook must not lose the dead letter
            log.exception("given_up failed", extra={"topic": item.handler.topic.name, **_ids(item)})
            return []

    @staticmethod
    def _log(what: str, failure: Failure, **extra: Any) -> None:
        log.warning(
            what,
            extra={
                "topic": failure.source_topic,
                "partition": failure.source_partition,
                "offset": failure.source_offset,
                "cause": failure.error_type,
                **extra,
            },
        )


def _invalid(exc: ValueError) -> InvalidMessage:
    """A short account of why a record is not a message; input values are never part of it."""
    if not isinstance(exc, ValidationError):
        return InvalidMessage(f"{type(exc).__name__}: {exc}")
    problems = exc.errors(include_url=False, include_input=False, include_context=False)
    text = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in problems[:5]
    )
    return InvalidMessage(f"{len(problems)} problem(s): {text}")


def _ids(item: _Item) -> dict[str, Any]:
    return {
        "event_id": str(item.message.event_id),
        "correlation_id": str(item.message.correlation_id),
        "partition": item.record.partition,
        "offset": item.record.offset,
    }


async def consume(
    consumer: AIOKafkaConsumer,
    processor: BatchProcessor,
    deliver: Callable[[list[OutboxRow]], None],
    stop: asyncio.Event,
    *,
    batch_size: int,
    linger: float = 0.0,
    before: Callable[[list[Incoming]], Awaitable[bool]] | None = None,
) -> None:
    """Fetch batches, process them, commit their offsets after their transaction; until ``stop``.

    A batch is what the consumer has fetched, up to ``batch_size`` records;
    under load the fetches run ahead, so batches fill by themselves. A
    ``linger`` above zero tops a batch up for that long while records keep
    coming, trading latency for fewer transactions.
    Batches overlap: the next one is fetched and prepared while the previous
    one commits. The order per batch stays: SQLite commit, hand-over to the
    relay (``deliver``), then the Kafka offsets.

    ``before`` may hold a batch back (the retry loop waits for messages to be
    due); when it returns False the batch is left uncommitted, to be
    delivered again after a restart.
    """
    finishing: asyncio.Task[None] | None = None

    async def finish(batch: Prepared, offsets: dict[Any, OffsetAndMetadata]) -> None:
        deliver(await processor.commit(batch))
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The partitions moved to another member during the batch; it will be
            # delivered there again, and that member's inbox skips what is applied.
            log.warning("offset commit failed", extra={"error": repr(exc)})

    try:
        while not stop.is_set():
            batches = await _fill(consumer, batch_size, linger)
            records = [Incoming.of(r) for rs in batches.values() for r in rs]
            if not records:
                continue
            if before is not None and not await before(records):
                break
            batch = await processor.prepare(records)
            if finishing is not None:
                await finishing  # the previous batch is committed before this one
            offsets = {tp: OffsetAndMetadata(rs[-1].offset + 1, "") for tp, rs in batches.items()}
            finishing = asyncio.create_task(finish(batch, offsets))
    finally:
        if finishing is not None:
            await finishing


async def _fill(
    consumer: AIOKafkaConsumer, batch_size: int, linger: float
) -> dict[Any, list[ConsumerRecord[Any, Any]]]:
    """Up to ``batch_size`` records, in partition order, waiting at most ``linger`` for more."""
    batches = await consumer.getmany(timeout_ms=200, max_records=batch_size)
    count = sum(map(len, batches.values()))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + linger
    while count and count < batch_size and (left := deadline - loop.time()) > 0:
        more = await consumer.getmany(timeout_ms=int(left * 1000), max_records=batch_size - count)
        if not more:
            break
        for tp, records in more.items():
            batches.setdefault(tp, []).extend(records)
            count += len(records)
    return batches


def wait_until_due(
    consumer: AIOKafkaConsumer,
    stop: asyncio.Event,
    clock: Callable[[], datetime],
    *,
    poll_every: float = 30.0,
) -> Callable[[list[Incoming]], Awaitable[bool]]:
    """For the retry loop: wait until every record of the batch is due, or ``stop``.

    While it waits, the consumer's partitions are paused and it keeps
    polling every ``poll_every`` seconds, so Kafka does not take it for dead
    (``max.poll.interval.ms``) however long the wait.
    """

    async def hold(records: list[Incoming]) -> bool:
        due = max((r.due for r in records if r.due is not None), default=None)
        if due is None:
            return True
        assigned = consumer.assignment()
        consumer.pause(*assigned)
        try:
            while (left := (due - clock()).total_seconds()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(left, poll_every))
                if stop.is_set():
                    return False
                await consumer.getmany(timeout_ms=0)  # returns nothing: a sign of life
            return True
        finally:
            consumer.resume(*assigned)

    return hold
