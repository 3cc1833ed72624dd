"""The simulated clock of a simulation, which every ``hub run`` and ``hub simulate`` process
follows.

With ``HUB_CLOCK=simulated`` (allowed only with ``HUB_SIMULATION=true``) a
process's services (or simulators) read the time from a :class:`SimulatedClock`:
the system clock plus an offset (:func:`clock_of`). Operators (and end-to-end
tests) move it forward with ``hub clock advance DURATION`` or ``hub clock set
TIME``, which publish a :class:`~schemas.clock.ClockAdvanced` with the new
offset on ``hub.clock.v1``.

Every process reads that topic without a consumer group, from the beginning
(it holds one small message per move), and applies the messages of its own
municipality: before its services start it reads to the end
(:func:`catch_up`), so a restarted process resumes at the time the others
keep; then :func:`follow_clock` applies new moves until the process stops
(:func:`join_clock` does both for a process's settings).
The offset only ever grows, so reading a move twice, or moves out of order,
leaves the same clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from hub.errors import BrokerUnavailable, HubError
from hub.kafka import client_options, publish_messages
from hub.reliability.deadletters import read_topic
from hub.settings import Settings
from schemas.clock import MAX_OFFSET_SECONDS, ClockAdvanced
from schemas.topics import OPERATOR, topic_for

log = logging.getLogger(__name__)

CLOCK_TOPIC = topic_for(ClockAdvanced)
"""``hub.clock.v1``: the moves of every municipality's simulated clock."""

_UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_DURATION = re.compile(rf"(?:{_PART.pattern})+")


class ClockError(HubError):
    """A move of the simulated clock that cannot be made: a bad duration or time, or a move
    backwards. The message says which; nothing was published."""


class ClockMovesBackward(ClockError):
    """The simulated clock only moves forward: services have already acted on its time."""


def parse_duration(text: str) -> timedelta:
    """``20d``, ``36h``, ``90m``, ``45s``, ``2w`` or a sum such as ``1d12h`` or ``1d 12h``
    (decimals allowed: ``1.5h``); raises :class:`ClockError` for anything else, or for a zero
    duration. Reads what :func:`format_duration` writes."""
    compact = "".join(text.split()).lower()
    if not _DURATION.fullmatch(compact):
        raise ClockError(
            f"bad duration {text!r}: expected a number and a unit (w, d, h, m or s),"
            " such as 20d, 36h, 90m, 45s or 1d12h"
        )
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(compact))
    if seconds <= 0:
        raise ClockError(f"bad duration {text!r}: the clock moves forward by more than nothing")
    if seconds > MAX_OFFSET_SECONDS:
        raise ClockError(f"bad duration {text!r}: more than a hundred years")
    return timedelta(seconds=seconds)


def format_duration(span: timedelta) -> str:
    """A non-negative duration to the second, as ``20d 3h 5m 2s`` (``0s`` for none)."""
    seconds = max(0, round(span.total_seconds()))
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    return " ".join([*parts, f"{seconds}s"] if seconds or not parts else parts)


def offset_of(move: ClockAdvanced) -> timedelta:
    """How far ``move`` puts the simulated clock ahead of the system clock."""
    return timedelta(seconds=move.offset_seconds)


class SimulatedClock:
    """The system clock plus an offset that only ever grows.

    Call it for the time (``clock()``, as any clock of the hub). It is shared by
    every service of a process; :meth:`apply` (a move read from ``hub.clock.v1``) and
    :meth:`move_to` (the demo, in-process) move it, and only forward.
    """

    def __init__(self, offset: timedelta = timedelta()) -> None:
        if offset < timedelta():
            raise ValueError("a simulated clock runs ahead of the system clock, never behind")
        self._offset = offset
        self.moves = 0
        """Moves applied that put the clock forward (repeats and older moves do not count)."""
        self.last_move: ClockAdvanced | None = None
        """The move that set the offset, if a message did."""

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self._offset

    @property
    def offset(self) -> timedelta:
        """How far the clock runs ahead of the system clock."""
        return self._offset

    def apply(self, move: ClockAdvanced | timedelta) -> bool:
        """Take a move's offset if it is larger than the current one; True if the clock moved.

        A smaller or equal offset is ignored: services have acted on the later time already,
        and moves may be read twice or out of order.
        """
        offset = move if isinstance(move, timedelta) else offset_of(move)
        if offset <= self._offset:
            return False
        self._offset = offset
        self.moves += 1
        self.last_move = move if isinstance(move, ClockAdvanced) else None
        return True

    def move_to(self, moment: datetime) -> bool:
        """Run ahead so that the clock reads ``moment`` now, unless it reads later already
        (in-process, as the demo moves its services' clock); True if the clock moved."""
        return self.apply(moment - datetime.now(UTC))


def moves_of(
    records: Iterable[ConsumerRecord[Any, Any]], municipality: str
) -> Iterator[ClockAdvanced]:
    """The valid moves of ``municipality`` among ``records`` of ``hub.clock.v1``, in order.

    Other municipalities' moves and records that are not a valid move are skipped: a
    stray record must not stop a process's clock.
    """
    for record in records:
        if record.value is None:
            continue
        try:
            move = CLOCK_TOPIC.parse(record.value)
        except ValidationError:
            log.warning(
                "simulated clock: record skipped, not a valid move",
                extra={
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                },
            )
            continue
        if isinstance(move, ClockAdvanced) and move.municipality == municipality:
            yield move


async def read_moves(
    bootstrap: str, municipality: str, **client_options: Any
) -> list[ClockAdvanced]:
    """Every move of ``municipality``'s clock now on ``hub.clock.v1``, oldest first (no consumer
    group, nothing committed). Raises aiokafka's ``KafkaError`` when the cluster fails."""
    records = await read_topic(bootstrap, CLOCK_TOPIC.name, **client_options)
    records.sort(key=lambda r: (r.partition, r.offset))
    return list(moves_of(records, municipality))


async def catch_up(
    clock: SimulatedClock, bootstrap: str, municipality: str, **client_options: Any
) -> int:
    """Apply every move of ``municipality`` now on the topic to ``clock``; how many moved it.

    Called before a process's services start, so a restarted process resumes at the
    simulated time the others keep rather than at the system time.
    """
    before = clock.moves
    for move in await read_moves(bootstrap, municipality, **client_options):
        clock.apply(move)
    return clock.moves - before


async def read_clock(bootstrap: str, municipality: str, **client_options: Any) -> SimulatedClock:
    """``municipality``'s simulated clock as the moves now on ``hub.clock.v1`` set it."""
    clock = SimulatedClock()
    await catch_up(clock, bootstrap, municipality, **client_options)
    return clock


async def follow_clock(
    clock: SimulatedClock,
    bootstrap: str,
    municipality: str,
    stop: asyncio.Event,
    *,
    retry_after: float = 2.0,
    **client_options: Any,
) -> None:
    """Apply ``municipality``'s moves to ``clock`` as they are published, until ``stop``.

    Reads ``hub.clock.v1`` from the beginning without a consumer group (each process
    needs every move, and has nothing to commit). A Kafka failure is logged and the
    reading starts again after ``retry_after`` seconds, as it does while the topic does
    not exist yet (``hub simulate`` may start before anyone creates it): the clock keeps
    its offset meanwhile, and the process its services. Returns soon after ``stop`` is set.
    """

    async def keep_following() -> None:
        problem = ""
        while not stop.is_set():
            try:
                await _follow(clock, bootstrap, municipality, stop, **client_options)
            except Exception as exc:
                text = f"{type(exc).__name__}: {exc}"
                if text != problem:  # once per new problem, not every retry
                    log.warning(
                        "simulated clock: reading %s failed, retrying: %s", CLOCK_TOPIC.name, text
                    )
                problem = text
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_after)

    # Kafka calls may hang well past the stop (a broker gone, say): the stop wins the race.
    following = asyncio.create_task(keep_following(), name="simulated-clock")
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (following, stopping):
            task.cancel()
        await asyncio.gather(following, stopping, return_exceptions=True)


async def _follow(
    clock: SimulatedClock,
    bootstrap: str,
    municipality: str,
    stop: asyncio.Event,
    **client_options: Any,
) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="hub-clock",
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=250,  # the embedded broker answers only at the end of the wait
        **client_options,
    )
    await consumer.start()
    try:
        # The partitions as the consumer found them when it started: it does not learn of a
        # topic created later (aiokafka's topics() does not update them), so while the topic
        # does not exist yet, follow_clock starts a new consumer after a while. The wait
        # also matters: stopping an aiokafka consumer before its own start-up task has run
        # raises CancelledError, which would end the following.
        known = consumer.partitions_for_topic(CLOCK_TOPIC.name) or ()
        partitions = [TopicPartition(CLOCK_TOPIC.name, p) for p in sorted(known)]
        if not partitions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            return
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for move in moves_of(records, municipality):
                    if clock.apply(move):
                        log.info(
                            "simulated clock moved",
                            extra={
                                "municipality": municipality,
                                "clock": clock().isoformat(timespec="seconds"),
                                "offset_seconds": clock.offset.total_seconds(),
                                "requested_by": move.requested_by,
                            },
                        )
    finally:
        await consumer.stop()


def clock_follower(
    clock: SimulatedClock, bootstrap: str, municipality: str, **client_options: Any
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """:func:`follow_clock` as a task of a process (``Services.run(tasks=…)``)."""

    async def task(stop: asyncio.Event) -> None:
        await follow_clock(clock, bootstrap, municipality, stop, **client_options)

    return task


def clock_of(settings: Settings) -> SimulatedClock | None:
    """A simulated clock at no offset for ``HUB_CLOCK=simulated``; None for the system clock.

    Give it to what the process runs, then :func:`join_clock` before they start.
    """
    if settings.clock != "simulated":
        return None
    return SimulatedClock()


async def join_clock(
    clock: SimulatedClock, settings: Settings, bootstrap: str
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """Catch ``clock`` up with the moves of ``settings.municipality`` on ``bootstrap``, and
    return the task that follows the later ones (:func:`clock_follower`).

    Called before the process serves anything (``hub run``, ``hub simulate``), so that
    a restarted process resumes at the simulated time the others keep. Raises
    :class:`~hub.errors.BrokerUnavailable` when the topic cannot be read.
    """
    options = client_options(settings)
    try:
        await catch_up(clock, bootstrap, settings.municipality, **options)
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"cannot read the simulated clock from {bootstrap}: {exc!r}"
        ) from None
    return clock_follower(clock, bootstrap, settings.municipality, **options)


def describe(clock: SimulatedClock, municipality: str) -> str:
    """One line for an operator: what ``clock`` reads, and how far ahead it runs."""
    return (
        f"simulated clock of {municipality}: {clock():%Y-%m-%d %H:%M:%S %Z}"
        f" ({format_duration(clock.offset)} ahead of the system clock)"
    )


async def advance_clock(
    bootstrap: str,
    municipality: str,
    *,
    by: timedelta | None = None,
    to: datetime | None = None,
    requested_by: str,
    **client_options: Any,
) -> datetime:
    """Move ``municipality``'s simulated clock forward ``by`` a duration or ``to`` a time.

    Reads the current offset from ``hub.clock.v1``, publishes a larger one and returns
    the new simulated time. Raises :class:`ClockMovesBackward` if ``to`` is not after the
    simulated time now, :class:`ClockError` for a move that is not exactly one of the two
    or out of range. Two operators moving the same clock at once may both publish; the
    processes keep the larger offset.
    """
    if (by is None) == (to is None):
        raise ClockError("move the clock either by a duration or to a time, not both or neither")
    if to is not None and (to.tzinfo is None or to.utcoffset() is None):
        raise ClockError(f"the time {to.isoformat()} has no time zone: add one, such as +03:00")
    clock = await read_clock(bootstrap, municipality, **client_options)
    now = datetime.now(UTC)
    if by is not None:
        if by <= timedelta():
            raise ClockMovesBackward(f"the simulated clock only moves forward, not by {by}")
        offset = clock.offset + by
    else:
        assert to is not None
        offset = to - now
        if offset <= clock.offset:
            raise ClockMovesBackward(
                f"the simulated clock of {municipality} reads"
                f" {(now + clock.offset).isoformat(timespec='seconds')}; it only moves forward,"
                f" not back to {to.isoformat()}"
            )
    try:
        move = ClockAdvanced.new(
            producer=OPERATOR,
            municipality=municipality,
            offset_seconds=offset.total_seconds(),
            moved_to=now + offset,
            requested_by=requested_by,
        )
    except (ValidationError, OverflowError):
        raise ClockError(
            f"cannot move the simulated clock of {municipality} {offset} ahead of the system"
            " clock: at most a hundred years, by an operator name of 1 to 64 characters"
        ) from None
    await publish_messages(bootstrap, [move], **client_options)
    return move.moved_to


__all__ = [
    "CLOCK_TOPIC",
    "ClockError",
    "ClockMovesBackward",
    "SimulatedClock",
    "advance_clock",
    "catch_up",
    "clock_follower",
    "clock_of",
    "describe",
    "follow_clock",
    "format_duration",
    "join_clock",
    "moves_of",
    "offset_of",
    "parse_duration",
    "read_clock",
    "read_moves",
]
