"""Polling an external system's feed, with the same guarantees as consuming a topic.

Some systems cannot push: an adapter asks them "what happened after
position P?" A :class:`Poller` says how to ask (``poll``, network I/O, with
the client's retries) and what each item means (``apply``, pure, recording on
a :class:`~hub.reliability.consumer.Unit`). The runner keeps the position in
the service's store and commits it in the same transaction as the messages
the items produce, so a crash repeats at most the last page and nothing is
skipped; consumers de-duplicate the repeats by ``event_id``, which each
poller derives from what identifies the item in its feed.

An item that ``apply`` cannot turn into messages goes to the dead-letter
topic (reason ``invalid_message``, or ``handler_error`` for an unexpected
exception; source ``feed:<service>/<feed>`` with the item's position), and
the position moves past it: one bad item never stops the feed. A poll that
fails is logged and tried again with a growing pause (up to 30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from hub.errors import PermanentError, TransientError
from hub.reliability.consumer import Unit
from hub.reliability.deadletters import FEED_PREFIX, Failure, Reason
from hub.reliability.store import OutboxRow, Store, Writes
from schemas.values import mask_personal_codes

log = logging.getLogger(__name__)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS poll_positions ("
    " feed TEXT PRIMARY KEY, position TEXT NOT NULL, polled_at TEXT NOT NULL)",
)


@dataclass(frozen=True)
class Page:
    """What one poll returned: the items in order and the position after the last one."""

    items: Sequence[Any]
    position: str
    more: bool = False
    """True when the system has further items at once (poll again without waiting)."""


class Poller:
    """How to read one feed. Subclass; override :meth:`poll` and :meth:`apply`."""

    feed = "feed"
    """Names the feed's position in the store (unique within the service)."""
    interval = 1.0
    """Seconds between polls when the feed had nothing new."""

    async def poll(self, position: str | None) -> Page:
        """The items after ``position`` (None: from the start). Network I/O goes here."""
        raise NotImplementedError

    def apply(self, unit: Unit, item: Any) -> None:
        """Record what ``item`` means on ``unit`` (messages, state); pure."""
        raise NotImplementedError

    def committed(self, page: Page) -> None:
        """Called once the page's messages and position are stored (acknowledge them now)."""

    def describe(self, item: Any) -> bytes:
        """The item as bytes for a dead letter (JSON when it can be)."""
        try:
            return json.dumps(item, default=str, ensure_ascii=False).encode()
        except (TypeError, ValueError):
            return repr(item).encode()

    async def close(self) -> None:
        """Release the poller's client; called when the service stops."""


async def position(store: Store, feed: str) -> str | None:
    rows = await store.query("SELECT position FROM poll_positions WHERE feed = ?", (feed,))
    return str(rows[0][0]) if rows else None


def page_writes(service: str, poller: Poller, page: Page, now: datetime) -> tuple[Writes, int]:
    """The page's messages and new position as one batch; the number of items refused."""
    writes = Writes()
    refused = 0
    for number, item in enumerate(page.items):
        unit = Unit()
        try:
            poller.apply(unit, item)
        except Exception as error:
            refused += 1
            reason: Reason = (
                "invalid_message"
                if isinstance(error, PermanentError | ValidationError | ValueError)
                else "handler_error"
            )
            failure = Failure(
                f"{FEED_PREFIX}{service}/{poller.feed}",
                -1,
                number,
                attempts=1,
                first_failure=now,
                last_failure=now,
                error_type=type(error).__name__,
                error=mask_personal_codes(str(error)),
            )
            row = failure.bury(service, reason, None, poller.describe(item), ())
            headers = (*row.headers, ("dlq-feed-position", page.position.encode()))
            writes.outbox.append(OutboxRow(row.topic, row.key, row.value, headers))
            log.warning(
                "feed item refused",
                extra={"service": service, "feed": poller.feed, "error": failure.error[:200]},
            )
            continue
        writes.statements.extend(unit.statements)
        writes.outbox.extend(unit.outbox)
    writes.statements.append(
        (
            "INSERT INTO poll_positions (feed, position, polled_at) VALUES (?, ?, ?)"
            " ON CONFLICT (feed) DO UPDATE SET position = excluded.position,"
            " polled_at = excluded.polled_at",
            (poller.feed, page.position, now.isoformat()),
        )
    )
    return writes, refused


async def run_poller(
    service: str,
    poller: Poller,
    store: Store,
    hand_over: Callable[[list[OutboxRow]], None],
    stop: asyncio.Event,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_items: Callable[[int, int], None] = lambda taken, refused: None,
) -> None:
    """Poll until ``stop`` is set; each page commits with its position, then the relay sends."""
    idle = poller.interval
    while not stop.is_set():
        try:
            before = await position(store, poller.feed)
            page: Page | None = await poller.poll(before)
        except (TransientError, PermanentError) as error:
            # The client has retried a transient failure already; a permanent one (a reset
            # feed, a refused poll) needs an operator: say so loudly and keep asking.
            level = logging.WARNING if isinstance(error, TransientError) else logging.ERROR
            log.log(
                level,
                "feed poll failed",
                extra={
                    "service": service,
                    "feed": poller.feed,
                    "error": mask_personal_codes(str(error))[:200],
                },
            )
            page, idle = None, min(idle * 2, 30.0)
        if page is not None:
            idle = poller.interval
            moved = page.position != before
            if page.items or moved:
                writes, refused = page_writes(service, poller, page, clock())
                hand_over(await store.commit(service, writes))
                poller.committed(page)
                on_items(len(page.items), refused)
            if page.more and page.items and moved:
                continue  # more at once; a page that did not move waits like an idle one
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), idle)


__all__ = ["SCHEMA", "Page", "Poller", "page_writes", "position", "run_poller"]
