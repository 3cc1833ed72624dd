"""A service's SQLite store: its state, its inbox of handled messages, its outbox.

Two connections: one writer, whose every statement goes through one lock
so a transaction is never interleaved with anything else (a statement
slipped in between BEGIN and COMMIT would join the transaction); and one
reader, which in WAL mode sees only committed data and never waits for the
writer. No transaction is held open across a network call: callers do
their network I/O first and hand the store finished writes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any, Literal

import aiosqlite

log = logging.getLogger(__name__)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS inbox (
        consumer   TEXT NOT NULL,
        event_id   TEXT NOT NULL,
        handled_at TEXT NOT NULL,
        PRIMARY KEY (consumer, event_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS outbox (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        topic      TEXT NOT NULL,
        key        BLOB,
        value      BLOB NOT NULL,
        headers    TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    # Rows up to `sent_up_to` are published: the relay publishes in id order,
    # so one number marks a whole batch sent.
    """CREATE TABLE IF NOT EXISTS outbox_sent (
        one        INTEGER PRIMARY KEY CHECK (one = 1),
        sent_up_to INTEGER NOT NULL,
        sent_at    TEXT NOT NULL
    )""",
    "INSERT OR IGNORE INTO outbox_sent (one, sent_up_to, sent_at) VALUES (1, 0, '')",
)
_UNSENT = "id > (SELECT sent_up_to FROM outbox_sent)"

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One message to publish: what a handler emitted, a parked or a dead-lettered copy."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = ()
    id: int | None = None
    """Row id, set once stored; rows are published in id order."""


@dataclass(slots=True)
class Writes:
    """Everything one batch changes, committed together by :meth:`Store.commit`."""

    handled: list[str] = field(default_factory=list)
    """event_ids applied: recorded in the inbox."""
    statements: list[tuple[str, Sequence[Any]]] = field(default_factory=list)
    """State changes, in order."""
    outbox: list[OutboxRow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.handled or self.statements or self.outbox)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _encode_headers(headers: Headers) -> str:
    return json.dumps([[name, value.decode("utf-8", "surrogateescape")] for name, value in headers])


def _decode_headers(text: str) -> Headers:
    return tuple(
        (name, value.encode("utf-8", "surrogateescape")) for name, value in json.loads(text)
    )


def unpublished(path: Path) -> int:
    """Outbox rows of the store at ``path`` not yet published, read by a connection of its own."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        [(count,)] = db.execute(f"SELECT count(*) FROM outbox WHERE {_UNSENT}")
        return int(count)


class Store:
    """The SQLite database of one service. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(
        self, writer: aiosqlite.Connection, reader: aiosqlite.Connection, path: Path
    ) -> None:
        self._db = writer
        self._reader = reader
        self.path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        schema: Iterable[str] = (),
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> Store:
        """Open (and create) the database with the hub's tables and the service's ``schema``.

        ``synchronous=NORMAL`` in WAL mode survives any crash of the process;
        ``FULL`` also survives a power cut, at the cost of an fsync per commit.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute(f"PRAGMA synchronous={synchronous}")
            await db.execute("PRAGMA busy_timeout=5000")
            for statement in (*_SCHEMA, *schema):
                await db.execute(statement)
            reader = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        except BaseException:
            await db.close()
            raise
        return cls(db, reader, path)

    async def close(self) -> None:
        async with self._lock:
            await self._reader.close()
            await self._db.close()

    async def duplicates(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` the consumer has handled already."""
        if not event_ids:
            return set()
        marks = ",".join("?" * len(event_ids))
        rows = await self._read(
            f"SELECT event_id FROM inbox WHERE consumer = ? AND event_id IN ({marks})",
            (consumer, *event_ids),
        )
        return {row[0] for row in rows}

    async def commit(self, consumer: str, writes: Writes) -> list[OutboxRow]:
        """Apply one batch atomically; returns the outbox rows as stored, with their ids.

        Order inside the transaction (all or nothing):
          1. record the handled event_ids in the inbox;
          2. apply the state changes, in order;
          3. append the outgoing messages to the outbox.
        The caller commits the Kafka offsets only after this returns, and the
        relay publishes the outbox afterwards: a crash at any point either
        redelivers the batch (the inbox then skips what was applied) or
        republishes outbox rows (consumers skip those by event_id).
        """
        if not writes:
            return []
        now = _now()
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                # 1. inbox
                await self._db.executemany(
                    "INSERT INTO inbox (consumer, event_id, handled_at) VALUES (?, ?, ?)",
                    [(consumer, event_id, now) for event_id in writes.handled],
                )
                # 2. state: consecutive runs of one statement go in one call
                for sql, run in groupby(writes.statements, key=lambda s: s[0]):
                    await self._db.executemany(sql, [params for _, params in run])
                # 3. outbox
                await self._db.executemany(
                    "INSERT INTO outbox (topic, key, value, headers, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [
                        (row.topic, row.key, row.value, _encode_headers(row.headers), now)
                        for row in writes.outbox
                    ],
                )
                # One writer, one transaction: the rows just inserted have consecutive ids.
                last = 0
                if writes.outbox:
                    [(last,)] = await self._db.execute_fetchall("SELECT last_insert_rowid()")
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
        first = last - len(writes.outbox) + 1
        return [
            OutboxRow(row.topic, row.key, row.value, row.headers, first + n)
            for n, row in enumerate(writes.outbox)
        ]

    async def pending(self, limit: int, *, from_id: int = 0) -> list[OutboxRow]:
        """The oldest unsent outbox rows (with ids from ``from_id`` on), in id order."""
        rows = await self._read(
            f"SELECT id, topic, key, value, headers FROM outbox WHERE {_UNSENT} AND id >= ?"
            " ORDER BY id LIMIT ?",
            (from_id, limit),
        )
        return [
            OutboxRow(topic, key, value, _decode_headers(headers), row_id)
            for row_id, topic, key, value, headers in rows
        ]

    async def mark_sent(self, up_to: int) -> None:
        """Mark every row up to id ``up_to`` sent (the relay publishes in id order)."""
        async with self._lock:
            await self._db.execute(
                "UPDATE outbox_sent SET sent_up_to = max(sent_up_to, ?), sent_at = ?",
                (up_to, _now()),
            )

    async def purge_sent(self, older_than: datetime) -> int:
        """Delete published outbox rows written before ``older_than``; returns how many."""
        async with self._lock:
            cursor = await self._db.execute(
                f"DELETE FROM outbox WHERE NOT ({_UNSENT}) AND created_at < ?",
                (older_than.isoformat(timespec="microseconds"),),
            )
            return cursor.rowcount

    async def backlog(self) -> int:
        """Outbox rows not yet published."""
        rows = await self._read(f"SELECT count(*) FROM outbox WHERE {_UNSENT}")
        return int(rows[0][0])

    async def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only query (state inspection, tests, the CLI)."""
        return [tuple(row) for row in await self._read(sql, parameters)]

    async def _read(self, sql: str, parameters: Sequence[Any] = ()) -> Iterable[Any]:
        return await self._reader.execute_fetchall(sql, parameters)
