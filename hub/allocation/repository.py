"""Where the allocation service's state is stored: the one module that holds its SQL.

The store has one table per part of the view (children, institutions, offers, rounds,
early residences), the open round's engine inputs (its children and groups, as the engine
holds them now) and the number of the last step taken. :class:`Repository` loads a state
from it, writes a step's effects on the step's unit of work, and keeps the rows as they
will be once the pending units commit (its image), so that a step that fails half-way
can give the state back as it was before the step.

The engine's rows are the service's own: the engine's children and institutions in JSON,
with their sets sorted so the same engine always stores the same text.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields, is_dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from hub.allocation.engine import Allocator, Changes
from hub.allocation.formats import ChildEntry, InstitutionEntry
from hub.allocation.model import Child, Instance, Institution
from hub.allocation.notices import Notice
from hub.allocation.records import ChildFile, Offer
from hub.allocation.state import AllocationState
from hub.reliability.consumer import Unit
from hub.reliability.store import Store
from schemas.institutions import InstitutionRegistered
from schemas.residence import ResidenceDeclared

log = logging.getLogger(__name__)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS children (child_ref TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS institutions (institution_id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS offers (offer_id TEXT PRIMARY KEY, child_ref TEXT NOT NULL,"
    " status TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rounds (round_id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS notices (document_key TEXT PRIMARY KEY, child_ref TEXT NOT NULL,"
    " status TEXT NOT NULL, body TEXT NOT NULL)",
    # The open round's engine inputs, as the engine holds them now.
    "CREATE TABLE IF NOT EXISTS round_children (child_ref TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS round_institutions"
    " (institution_id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    # Residences reported before their child's application arrived (other topic, other pace).
    "CREATE TABLE IF NOT EXISTS early_residences (child_ref TEXT NOT NULL, slot TEXT NOT NULL,"
    " body TEXT NOT NULL, PRIMARY KEY (child_ref, slot))",
    # The number of the last step taken (see StepTaken).
    "CREATE TABLE IF NOT EXISTS steps (one INTEGER PRIMARY KEY CHECK (one = 1),"
    " taken INTEGER NOT NULL)",
)
VIEW_TABLES = (
    "children",
    "early_residences",
    "institutions",
    "notices",
    "offers",
    "rounds",
    "round_children",
    "round_institutions",
)
"""The tables that hold the service's view (what a rebuild must reproduce)."""
TABLES = (*VIEW_TABLES, "steps")
_COLUMNS = {
    "children": (("child_ref",), ("body",)),
    "early_residences": (("child_ref", "slot"), ("body",)),
    "institutions": (("institution_id",), ("body",)),
    "offers": (("offer_id",), ("child_ref", "status", "body")),
    "notices": (("document_key",), ("child_ref", "status", "body")),
    "rounds": (("round_id",), ("body",)),
    "round_children": (("child_ref",), ("body",)),
    "round_institutions": (("institution_id",), ("body",)),
}
"""Key and other columns of each view table."""
_UPSERT = {
    table: f"INSERT INTO {table} ({', '.join(key + rest)})"
    f" VALUES ({', '.join('?' * len(key + rest))}) ON CONFLICT ({', '.join(key)})"
    f" DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in rest)}"
    for table, (key, rest) in _COLUMNS.items()
}
"""Each view table's write: a row keeps its place (rowid), so a load reads rows in the
order they were first written, the order memory holds them in."""

Row = tuple[Any, ...]
Rows = dict[str, dict[Any, Any]]
"""Table → key → row (the columns in table order; the key is the row's primary key), but
``early_residences``: child → its rows."""

# --------------------------------------------------------------------------- engine rows

_T = TypeVar("_T")
_CHILD = TypeAdapter(Child)
_INSTITUTION = TypeAdapter(Institution)


def _sorted_sets(value: Any) -> Any:
    """A dataclass as plain JSON data, with its sets as sorted lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _sorted_sets(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, tuple | list):
        return [_sorted_sets(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    return value


def child_row(child: Child) -> str:
    return json.dumps(_sorted_sets(child), sort_keys=True)


def institution_row(institution: Institution) -> str:
    return json.dumps(_sorted_sets(institution), sort_keys=True)


def child_of(row: str) -> Child:
    """The child a ``round_children`` row holds (see :func:`_earlier`)."""
    return _earlier(row, _CHILD, lambda text: ChildEntry.model_validate_json(text).to_child())


def institution_of(row: str) -> Institution:
    """The institution a ``round_institutions`` row holds (see :func:`_earlier`)."""
    return _earlier(
        row, _INSTITUTION, lambda text: InstitutionEntry.model_validate_json(text).to_institution()
    )


def _earlier(row: str, adapter: TypeAdapter[_T], entry: Callable[[str], _T]) -> _T:
    """A row in the service's own form; or, in a store written before the service had rows
    of its own, in the instance file's form (read as such, and written anew in the
    service's form the next time it changes)."""
    try:
        return adapter.validate_json(row)
    except ValidationError:
        return entry(row)


# --------------------------------------------------------------------------- the repository


class Repository:
    """Loads and stores one service's :class:`AllocationState`."""

    def __init__(self, state: AllocationState) -> None:
        self.state = state
        self.image: Rows = {table: {} for table in TABLES}
        """The rows as the store holds them once every pending unit has committed."""

    # ---------------------------------------------------------------- loading

    async def load(self, store: Store) -> None:
        """Load the state from ``store`` (at a start)."""
        self.image = {table: {} for table in TABLES}
        for table in TABLES:
            for row in await store.query(f"SELECT * FROM {table}"):
                self._remember(table, row)
        self.restore()

    def restore(self) -> None:
        """Give the state back as the rows hold it (after a step failed half-way)."""
        state, rows = self.state, self.image
        state.clear()
        for _, taken in rows["steps"].values():
            state.sequence = taken
        for _, body in rows["children"].values():
            file = ChildFile.load(body)
            state.children[file.application.child_ref] = file
        for child_ref, slots in rows["early_residences"].items():
            state.early[child_ref] = {
                slot: ResidenceDeclared.model_validate_json(body) for _, slot, body in slots
            }
        for _, body in rows["institutions"].values():
            state.set_institution(InstitutionRegistered.model_validate_json(body))
        for *_, body in rows["offers"].values():
            state.add_offer(Offer.load(body))
        for _, body in rows["rounds"].values():
            state.open_round(json.loads(body))
        for *_, body in rows["notices"].values():
            notice = Notice.load(body)
            state.notices[notice.document_key] = notice
        if state.round_id is None:
            return
        assert state.round_date is not None
        children = tuple(child_of(b) for _, b in rows["round_children"].values())
        institutions = tuple(institution_of(b) for _, b in rows["round_institutions"].values())
        state.allocator = Allocator(Instance(institutions, children), state.rules, state.round_date)
        if differing := state.seats_unlike_offers():
            log.error(
                "engine rebuilt from the store does not match the live offers",
                extra={"round": state.round_id, "differing": differing},
            )

    # ---------------------------------------------------------------- writing

    def save(
        self,
        unit: Unit,
        rows: Mapping[str, Iterable[str]],
        *,
        new_round: bool = False,
        sequence: int | None = None,
    ) -> Changes | None:
        """Write on ``unit`` the view ``rows`` a step changed (table → keys), the engine's
        rows that changed (all of them after a new round) and the step's number.

        Returns what the engine reported as changed (None without an engine).
        """
        for table, keys in sorted(rows.items()):
            for key in sorted(keys):
                self._write_view(unit, table, key)
        changes = None
        engine = self.state.allocator
        if engine is not None:
            changes = engine.take_changes()
            if new_round:
                self._clear(unit, "round_children")
                self._clear(unit, "round_institutions")
                children: Iterable[str] = engine.children()
                institutions: Iterable[str] = self.state.institutions
            else:
                children = sorted(changes.children)
                institutions = sorted({g.institution_id for g in changes.groups})
            for child_ref in children:
                if child_ref in engine:
                    self._put(
                        unit, "round_children", (child_ref, child_row(engine.child(child_ref)))
                    )
                else:
                    self._delete(unit, "round_children", child_ref)
            for iid in institutions:
                row = institution_row(self.state.round_institution(iid))
                self._put(unit, "round_institutions", (iid, row))
        if sequence is not None:
            unit.execute(
                "INSERT INTO steps (one, taken) VALUES (1, ?)"
                " ON CONFLICT (one) DO UPDATE SET taken = max(taken, excluded.taken)",
                (sequence,),
            )
            taken = self.image["steps"].get(1, (1, 0))[1]
            self.image["steps"][1] = (1, max(taken, sequence))
        return changes

    def _write_view(self, unit: Unit, table: str, key: str) -> None:
        state = self.state
        if table == "children":
            self._put(unit, table, (key, state.children[key].dump()))
        elif table == "institutions":
            self._put(unit, table, (key, state.institutions[key].model_dump_json()))
        elif table == "rounds":
            self._put(unit, table, (key, json.dumps(state.rounds[key], sort_keys=True)))
        elif table == "offers":
            offer = state.offers[key]
            self._put(unit, table, (key, offer.child_ref, offer.status, offer.dump()))
        elif table == "notices":
            notice = state.notices[key]
            self._put(unit, table, (key, notice.child_ref, notice.status, notice.dump()))
        elif table == "early_residences":
            unit.execute("DELETE FROM early_residences WHERE child_ref = ?", (key,))
            self.image[table].pop(key, None)
            for slot, residence in sorted(state.early.get(key, {}).items()):
                self._put(unit, table, (key, slot, residence.model_dump_json()))
        else:
            raise AssertionError(f"no view table {table}")

    def _put(self, unit: Unit, table: str, row: Row) -> None:
        unit.execute(_UPSERT[table], row)
        self._remember(table, row)

    def _remember(self, table: str, row: Row) -> None:
        if table == "early_residences":  # by child: its slots come and go together
            slots = self.image[table].get(row[0], ())
            self.image[table][row[0]] = (*(r for r in slots if r[1] != row[1]), tuple(row))
        else:
            self.image[table][row[0]] = tuple(row)

    def _delete(self, unit: Unit, table: str, key: str) -> None:
        (column,), _ = _COLUMNS[table]
        unit.execute(f"DELETE FROM {table} WHERE {column} = ?", (key,))
        self.image[table].pop(key, None)

    def _clear(self, unit: Unit, table: str) -> None:
        unit.execute(f"DELETE FROM {table}")
        self.image[table].clear()


# --------------------------------------------------------------------------- other stores


async def reloaded(state: AllocationState, path: Path) -> AllocationState:
    """A new state loaded from the store at ``path`` (closed, or the service stopped), as a
    restarted service would load it."""
    store = await Store.open(path, schema=SCHEMA)
    try:
        fresh = AllocationState(state.municipality, state.rules, state.clock)
        await Repository(fresh).load(store)
    finally:
        await store.close()
    return fresh


def table_rows(path: Path, table: str) -> dict[Any, Row]:
    """The rows of a view table of the store at ``path``, by key (read-only)."""
    if table not in VIEW_TABLES:
        raise ValueError(f"no view table {table}")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(f"SELECT * FROM {table}")
        if table == "early_residences":
            return {(row[0], row[1]): tuple(row) for row in rows}
        return {row[0]: tuple(row) for row in rows}


__all__ = [
    "SCHEMA",
    "TABLES",
    "VIEW_TABLES",
    "Repository",
    "child_of",
    "child_row",
    "institution_of",
    "institution_row",
    "reloaded",
    "table_rows",
]
