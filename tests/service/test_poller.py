"""Feed polling: the position commits with the page's messages, bad items are dead-lettered,
a failing or idle feed is asked again after a pause."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from hub.errors import TransientError
from hub.reliability.consumer import Unit
from hub.reliability.deadletters import FEED_PREFIX, header
from hub.reliability.poller import SCHEMA, Page, Poller, position, run_poller
from hub.reliability.store import OutboxRow, Store
from schemas.residence import ResidenceDeclared
from schemas.topics import DEAD_LETTERS


class Feed(Poller):
    """Serves ``pages`` in turn (an exception is raised instead of returned)."""

    feed = "test-feed"
    interval = 0.05

    def __init__(self, pages: list[Page | Exception]) -> None:
        self.pages = pages
        self.asked: list[str | None] = []

    async def poll(self, position: str | None) -> Page:
        self.asked.append(position)
        page = self.pages.pop(0) if self.pages else Page([], position or "0")
        if isinstance(page, Exception):
            raise page
        return page

    def apply(self, unit: Unit, item: Any) -> None:
        if item == "bug":
            raise KeyError("a bug in the mapping")
        unit.emit(
            ResidenceDeclared.new(
                producer="vps-adapter",
                municipality="riga",
                child_ref=item,  # an invalid ref raises ValidationError: invalid_message
                subject="child",
                address_code="101234567",
                territory_code="0001000",
                declared_municipality="riga",
                declared_from=date(2024, 1, 1),
            )
        )


async def run(feed: Feed, store: Store, seconds: float = 0.4) -> list[OutboxRow]:
    sent: list[OutboxRow] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run_poller("svc", feed, store, sent.extend, stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    return sent


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    opened = await Store.open(tmp_path / "p.sqlite3", schema=SCHEMA)
    yield opened
    await opened.close()


async def test_pages_commit_with_their_position_and_bad_items_are_dead_lettered(
    store: Store,
) -> None:
    feed = Feed(
        [
            Page(["CH-0001", "?", "bug"], "3", more=True),
            Page(["CH-0002"], "4"),
        ]
    )
    sent = await run(feed, store)
    assert await position(store, feed.feed) == "4"
    assert feed.asked[:3] == [None, "3", "4"]  # "more" asked again at once, then idled
    topics = [r.topic for r in sent]
    assert topics.count("vps.population.residence.v1") == 2
    dead = [r for r in sent if r.topic == DEAD_LETTERS]
    assert [header(r.headers, "dlq-reason") for r in dead] == ["invalid_message", "handler_error"]
    assert {header(r.headers, "dlq-source-topic") for r in dead} == {f"{FEED_PREFIX}svc/test-feed"}
    assert {header(r.headers, "dlq-feed-position") for r in dead} == {"3"}


async def test_a_page_that_moves_without_items_still_moves_the_position(store: Store) -> None:
    feed = Feed([Page([], "7")])
    await run(feed, store, 0.2)
    assert await position(store, feed.feed) == "7"


async def test_more_without_progress_waits_instead_of_spinning(store: Store) -> None:
    feed = Feed([Page([], "0", more=True)] * 1000)
    await run(feed, store, 0.3)
    assert len(feed.asked) < 20  # about one poll per interval, not a busy loop


async def test_a_failing_feed_is_asked_again_with_growing_pauses(store: Store) -> None:
    feed = Feed([TransientError("VPS busy")] * 100)
    started = datetime.now(UTC)
    await run(feed, store, 0.5)
    assert 2 <= len(feed.asked) <= 5  # 0.05, 0.1, 0.2 … between the polls
    assert (datetime.now(UTC) - started).total_seconds() < 2
    assert await position(store, feed.feed) is None
