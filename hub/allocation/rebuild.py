"""Rebuild the allocation service's state from the topics (``hub allocation rebuild``).

The service records every step it takes on ``allocation.journal.v1``, in
the transaction that records the step's effects: the message it applied
(by ``event_id`` and topic) or a clock tick that expired offers, with the
step's number and the clock reading it used. Replaying the journal through
the service's own handlers, with those clock readings, over the messages
still on the input topics gives the same view; the rebuilt database is
written beside the live one and compared with it table by table. The
rebuilt store is also loaded back, as a restarted service would load it, and
compared with the replayed memory: a step that changes what it does not save
shows there even when the live store has the same gap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hub.allocation.model import Rules
from hub.allocation.repository import SCHEMA, VIEW_TABLES, reloaded, table_rows
from hub.allocation.service import Allocation
from hub.allocation.state import AllocationState, state_differences
from hub.errors import HubError
from hub.reliability.consumer import Unit
from hub.reliability.deadletters import read_topic
from hub.reliability.store import Store, Writes
from schemas.allocation import StepTaken
from schemas.topics import ALLOCATION, BY_NAME

JOURNAL = BY_NAME["allocation.journal.v1"]
_COMMIT_EVERY = 500


class RebuildError(HubError):
    """The topics cannot give the state back (a step's message is gone, say)."""


def journal_steps(values: Iterable[bytes], municipality: str) -> list[StepTaken]:
    """The municipality's steps in the order they were taken, each once."""
    steps: dict[int, StepTaken] = {}
    for value in values:
        try:
            step = JOURNAL.parse(value)
        except ValidationError:
            continue  # not a journal entry: nothing the service wrote
        assert isinstance(step, StepTaken)
        if step.municipality == municipality:
            steps.setdefault(step.sequence, step)  # a republished entry has the same number
    return [steps[n] for n in sorted(steps)]


def index_by_event_id(values: Iterable[bytes]) -> dict[str, bytes]:
    """Raw messages by ``event_id``; records that are not hub messages are left out."""
    index: dict[str, bytes] = {}
    for value in values:
        try:
            event_id = json.loads(value)["event_id"]
        except (ValueError, TypeError, KeyError):
            continue
        if isinstance(event_id, str):
            index.setdefault(event_id, value)
    return index


@dataclass
class Replayed:
    steps: int = 0
    messages: int = 0
    ticks: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    state: AllocationState | None = None
    """The service's state after the replay (its memory, not its store)."""
    unsaved: list[str] = field(default_factory=list)
    """Where the rebuilt store, loaded as at a restart, differs from the replayed memory:
    a step that changed something it did not save (empty when the store keeps it all)."""


async def replay(
    steps: list[StepTaken],
    sources: Mapping[str, Mapping[str, bytes]],
    store: Store,
    *,
    rules: Rules,
    municipality: str,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Replayed:
    """Take ``steps`` again into ``store`` (a new one), through the service's handlers.

    ``sources`` maps each step's topic to its messages by ``event_id``.
    Raises :class:`RebuildError` when a step's message is not there.
    """
    reading: list[datetime] = [steps[0].at if steps else datetime.fromtimestamp(0)]
    allocation = Allocation(AllocationState(municipality, rules, lambda: reading[0]))
    state = allocation.state
    handlers = {h.topic.name: h for h in allocation.handlers}
    done = Replayed(state=state)
    writes = Writes()
    for step in steps:
        state.sequence, reading[0] = step.sequence - 1, step.at  # journal() numbers it again
        unit = Unit()
        if step.step == "clock":
            allocation.tick(unit)
            done.ticks += 1
        else:
            topic, event_id = step.source_topic or "", str(step.causation_id)
            handler = handlers.get(topic)
            raw = sources.get(topic, {}).get(event_id)
            if handler is None or raw is None:
                raise RebuildError(
                    f"step {step.sequence} applied message {event_id} from {topic},"
                    " which that topic no longer holds (is its retention limited?)"
                )
            handler.apply(unit, handler.parse(raw), None)
            writes.handled.append(event_id)
            done.messages += 1
            done.by_topic[topic] = done.by_topic.get(topic, 0) + 1
        writes.statements += unit.statements
        done.steps += 1
        if len(writes.statements) >= _COMMIT_EVERY or done.steps == len(steps):
            await store.commit(ALLOCATION, writes)
            writes = Writes()
            progress(done.steps, len(steps))
    return done


def differences(live: Path, rebuilt: Path) -> list[str]:
    """How the view tables of two stores differ (an empty list when they are equal)."""
    found = []
    for table in VIEW_TABLES:
        old, new = table_rows(live, table), table_rows(rebuilt, table)
        only_live = sorted(set(old) - set(new))
        only_rebuilt = sorted(set(new) - set(old))
        changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
        for what, keys in (
            ("only in the live store", only_live),
            ("only in the rebuilt store", only_rebuilt),
            ("different", changed),
        ):
            if keys:
                shown = ", ".join(map(str, keys[:5])) + (" …" if len(keys) > 5 else "")
                found.append(f"{table}: {len(keys)} {what} ({shown})")
    return found


def counts(path: Path) -> dict[str, int]:
    """Rows per view table."""
    return {table: len(table_rows(path, table)) for table in VIEW_TABLES}


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def rebuild(
    bootstrap: str,
    *,
    rules: Rules,
    municipality: str,
    output: Path,
    say: Callable[[str], None] = lambda line: None,
    **client_options: Any,
) -> Replayed:
    """Read the journal and the topics it names, and replay them into a new store at ``output``."""
    say(f"reading {JOURNAL.name} …")
    journal = await read_topic(bootstrap, JOURNAL.name, **client_options)
    steps = journal_steps((r.value for r in journal), municipality)
    if not steps:
        raise RebuildError(f"{JOURNAL.name} holds no steps of municipality {municipality!r}")
    sources = {}
    for topic in sorted({s.source_topic for s in steps if s.source_topic}):
        records = await read_topic(bootstrap, topic, **client_options)
        sources[topic] = index_by_event_id(r.value for r in records)
        say(f"read {topic}: {len(records):,} records")
    say(f"replaying {len(steps):,} steps of {municipality} …")
    remove_database(output)
    store = await Store.open(output, schema=SCHEMA)
    try:
        done = await replay(
            steps,
            sources,
            store,
            rules=rules,
            municipality=municipality,
            progress=lambda done, total: say(f"  {done:,}/{total:,} steps"),
        )
    finally:
        await store.close()
    assert done.state is not None
    done.unsaved = state_differences(done.state, await reloaded(done.state, output))
    return done


__all__ = [
    "JOURNAL",
    "RebuildError",
    "Replayed",
    "counts",
    "differences",
    "index_by_event_id",
    "journal_steps",
    "rebuild",
    "remove_database",
    "replay",
]
