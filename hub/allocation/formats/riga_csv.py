"""Riga's open data: the published admission queue CSV, with a CSV of the seats per group.

:func:`read_riga_csv` reads both into an :class:`~hub.allocation.model.Instance`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NamedTuple, TypeVar
from zoneinfo import ZoneInfo

from hub.allocation.formats.common import (
    UNSPECIFIED_GROUND,
    AllocationInputError,
    RowProblem,
    cannot_read,
)
from hub.allocation.model import Child, Facts, Instance, Institution, SeatPool

RIGA_TIME_ZONE = ZoneInfo("Europe/Riga")
QUEUE_COLUMNS = (
    "institution_id",
    "group_language",
    "program_starting_age",
    "application_registered_date",
    "desirable_start_date",
    "child_uid",
    "priority_5years_old",
    "priority_commission",
    "priority_sibling",
    "priority_parent_reg_localgov",
    "priority_child_reg_localgov",
    "chose_not_to_receive_inv",
)
"""Columns the Riga queue CSV must have; others (``id``, ``institution_name``, …) are optional."""
SEATS_COLUMNS = ("institution_id", "group_language", "program_starting_age", "capacity")
"""Columns the seats CSV must have; ``institution_name`` is optional."""

_T = TypeVar("_T")


_LANGUAGE_NAMES = {
    "latviešu": "lv",
    "krievu": "ru",
    "angļu": "en",
    "ukraiņu": "uk",
    "poļu": "pl",
    "lietuviešu": "lt",
    "igauņu": "et",
    "baltkrievu": "be",
}
_LANGUAGE_CODE = re.compile(r"[a-z]{2}")
_STARTING_AGE = re.compile(r"\d{1,2}(?:\.\d{1,2})?")
_TRUE = frozenset({"1", "true", "jā"})
_FALSE = frozenset({"0", "false", "nē"})
_DOTTED = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})(?: (\d{1,2}):(\d{2})(?::(\d{2}))?)?")


def _parse_time(text: str) -> datetime:
    """A date or time as Riga's open data writes it, as an aware datetime.

    ISO 8601 (a date, or a date and time with or without an offset), or
    ``DD.MM.YYYY`` with an optional `` HH:MM[:SS]``. A date means midnight; a
    time without an offset is local time in Riga.
    """
    dotted = _DOTTED.fullmatch(text)
    try:
        if dotted:
            day, month, year, hour, minute, second = (int(g or 0) for g in dotted.groups())
            parsed = datetime(year, month, day, hour, minute, second)
        else:
            parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"expected a date such as 2024-03-01 or 01.03.2024 14:05, got {text!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=RIGA_TIME_ZONE)


def _parse_flag(text: str) -> bool:
    value = text.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected 1 or 0 (true/false, jā/nē), got {text!r}")


def _parse_language(text: str) -> str:
    """A language as a two-letter code, from a code (LV, ru) or a Latvian name (latviešu)."""
    value = text.lower()
    code = _LANGUAGE_NAMES.get(value, value)
    if _LANGUAGE_CODE.fullmatch(code):
        return code
    raise ValueError(f"expected a two-letter code or a name such as latviešu, got {text!r}")


def _parse_starting_age(text: str) -> str:
    """The programme starting age in years, as a label with a decimal point ("1,5" → "1.5")."""
    value = text.replace(",", ".")
    if _STARTING_AGE.fullmatch(value):
        return value
    raise ValueError(f"expected an age in years such as 1,5 or 3, got {text!r}")


def _parse_capacity(text: str) -> int:
    if text.isascii() and text.isdigit():
        return int(text)
    raise ValueError(f"expected a whole number of seats, got {text!r}")


class _Row(NamedTuple):
    line: int
    """1-based line where the row starts."""
    values: dict[str, str]
    """Stripped values by column name."""


class _BadRow(Exception):
    """A row cannot be used; the message says why."""


def _read_csv(path: Path, required: tuple[str, ...]) -> tuple[list[_Row], list[RowProblem]]:
    """The rows of a comma-separated UTF-8 file (with or without a BOM) with a header row.

    A row with another number of fields than the header is a problem. A file
    that cannot be read, is not CSV or lacks a required column raises
    :class:`AllocationInputError`.
    """
    rows: list[_Row] = []
    problems: list[RowProblem] = []
    end = 0  # last line of the record read so far (a quoted value may span lines)
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file)
            header = [name.strip() for name in next(reader, [])]
            missing = [column for column in required if column not in header]
            if missing:
                raise AllocationInputError(f"{path}:1: missing columns: {', '.join(missing)}")
            end = reader.line_num
            for fields in reader:
                line, end = end + 1, reader.line_num
                if not fields:
                    continue  # a blank line
                if len(fields) != len(header):
                    message = f"{len(fields)} fields where the header has {len(header)}"
                    problems.append(RowProblem(str(path), line, None, message))
                    continue
                values = dict(zip(header, (f.strip() for f in fields), strict=True))
                rows.append(_Row(line, values))
    except OSError as exc:
        raise cannot_read(path, exc) from None
    except UnicodeDecodeError as exc:
        raise AllocationInputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise AllocationInputError(f"{path}:{end + 1}: not valid CSV: {exc}") from None
    return rows, problems


def _cell(row: _Row, column: str, parse: Callable[[str], _T]) -> _T:
    """The value of ``column``, parsed; raises :class:`_BadRow` when empty or invalid."""
    text = row.values[column]
    if not text:
        raise _BadRow(f"{column} is empty")
    try:
        return parse(text)
    except ValueError as exc:
        raise _BadRow(f"{column}: {exc}") from None


def _flag(row: _Row, column: str) -> bool:
    """A yes/no column; empty means no."""
    return bool(row.values[column]) and _cell(row, column, _parse_flag)


class _ChildColumns(NamedTuple):
    """The values of a queue row that belong to the child rather than to the institution.

    Named after their columns: every row of one child must agree on them.
    """

    application_registered_date: datetime
    desirable_start_date: date
    group_language: str
    program_starting_age: str
    priority_5years_old: bool
    priority_commission: bool
    priority_parent_reg_localgov: bool
    priority_child_reg_localgov: bool
    chose_not_to_receive_inv: bool

    @classmethod
    def of(cls, row: _Row) -> _ChildColumns:
        """The child's values in ``row``; raises :class:`_BadRow`."""
        return cls(
            application_registered_date=_cell(
                row, "application_registered_date", _parse_time
            ).astimezone(UTC),
            desirable_start_date=_cell(row, "desirable_start_date", _parse_time).date(),
            group_language=_cell(row, "group_language", _parse_language),
            program_starting_age=_cell(row, "program_starting_age", _parse_starting_age),
            priority_5years_old=_flag(row, "priority_5years_old"),
            priority_commission=_flag(row, "priority_commission"),
            priority_parent_reg_localgov=_flag(row, "priority_parent_reg_localgov"),
            priority_child_reg_localgov=_flag(row, "priority_child_reg_localgov"),
            chose_not_to_receive_inv=_flag(row, "chose_not_to_receive_inv"),
        )


@dataclass
class _Application:
    """The rows of one child read so far."""

    line: int
    """Line of the child's first row, whose child values count."""
    columns: _ChildColumns
    institutions: dict[str, int] = field(default_factory=dict)
    """Institutions in file order (the child's ranking), each with the line listing it."""
    siblings_at: set[str] = field(default_factory=set)

    def check(self, columns: _ChildColumns, institution_id: str) -> None:
        """Raise :class:`_BadRow` unless a further row with these values can join."""
        differing = [
            name
            for name, first, this in zip(_ChildColumns._fields, self.columns, columns, strict=True)
            if first != this
        ]
        if differing:
            raise _BadRow(
                f"disagrees with line {self.line}, the child's first row, on {', '.join(differing)}"
            )
        if institution_id in self.institutions:
            raise _BadRow(
                f"institution {institution_id} is already listed on line"
                f" {self.institutions[institution_id]}"
            )

    def child(self, child_uid: str) -> Child:
        c = self.columns
        return Child(
            child_id=child_uid,
            language=c.group_language,
            desired_start_date=c.desirable_start_date,
            institutions=tuple(self.institutions),
            registered_at=c.application_registered_date,
            age_group=c.program_starting_age,
            facts=Facts(
                commission_grounds=frozenset({UNSPECIFIED_GROUND})
                if c.priority_commission
                else frozenset(),
                child_resident=c.priority_child_reg_localgov,
                parent_resident=c.priority_parent_reg_localgov,
                siblings_at=frozenset(self.siblings_at),
                mandatory_age=c.priority_5years_old,
            ),
        )


def _read_seats(path: Path) -> tuple[dict[str, list[SeatPool]], dict[str, str], list[RowProblem]]:
    """Groups by institution in file order, institution names, and the problems of bad rows."""
    rows, problems = _read_csv(path, SEATS_COLUMNS)
    pools: dict[str, list[SeatPool]] = {}
    names: dict[str, str] = {}
    lines: dict[tuple[str, str], int] = {}
    for row in rows:
        try:
            institution_id = _cell(row, "institution_id", str)
            language = _cell(row, "group_language", _parse_language)
            age = _cell(row, "program_starting_age", _parse_starting_age)
            capacity = _cell(row, "capacity", _parse_capacity)
            group = f"{age}-{language}"
            if (institution_id, group) in lines:
                raise _BadRow(
                    f"group {group} of {institution_id} is already on line"
                    f" {lines[(institution_id, group)]}"
                )
        except _BadRow as exc:
            problems.append(RowProblem(str(path), row.line, None, str(exc)))
            continue
        lines[(institution_id, group)] = row.line
        pool = SeatPool(institution_id, group, language, capacity, age_group=age)
        pools.setdefault(institution_id, []).append(pool)
        if name := row.values.get("institution_name"):
            names.setdefault(institution_id, name)
    return pools, names, problems


def read_riga_csv(path: Path, seats_path: Path) -> tuple[Instance, list[RowProblem]]:
    """An instance from Riga's open-data queue CSV and a CSV of the seats per group.

    Each queue row is one (child, institution) entry; the rows of one
    ``child_uid`` form that child's application, institutions ranked in file
    order. ``child_uid`` becomes the child id (it is pseudonymous: the open
    data carries no personal codes, and none are made up here). Columns:

    - ``group_language`` → language: ``latviešu``/``LV``/``lv`` → ``lv``,
      ``krievu`` → ``ru`` (and other Latvian language names), or any
      two-letter code, lower-cased;
    - ``program_starting_age`` → age group label, ``1,5`` → ``1.5``. The data
      has no birth dates: children fit groups by this label;
    - ``application_registered_date`` → registration time and
      ``desirable_start_date`` → desired start date: ISO 8601 or
      ``DD.MM.YYYY [HH:MM[:SS]]``, local times in Europe/Riga;
    - flags (``1``/``0``, ``true``/``false``, ``jā``/``nē``, empty = no):
      ``priority_5years_old`` → ``Facts.mandatory_age`` (set either way),
      ``priority_commission`` → the commission ground
      :data:`UNSPECIFIED_GROUND` (the ground itself is not published),
      ``priority_sibling`` → a sibling at that row's institution only,
      ``priority_parent_reg_localgov`` → ``parent_resident``,
      ``priority_child_reg_localgov`` → ``child_resident``;
      ``chose_not_to_receive_inv`` = 1 leaves the child out (a problem of kind
      ``"excluded"``);
    - ``id``, ``private_kg_fin_by_localgov``, ``nanny_fin_by_localgov`` and any
      other column are ignored: co-financing of a private place or a nanny
      does not change a child's priority.

    The seats CSV has the columns ``institution_id``, ``institution_name``
    (optional), ``group_language``, ``program_starting_age`` and ``capacity``;
    each row is a group coded ``<starting age>-<language>`` (e.g. ``1.5-lv``).
    Institution names come from either file, the seats file first.

    Bad rows are skipped and reported, each with its line (the header is
    line 1): missing or invalid values, an institution without seats, an
    institution listed twice for a child, a row disagreeing with the child's
    first row on a child value (registration, start date, language, age group,
    child-level flags). Raises :class:`AllocationInputError` for a file that
    cannot be read or lacks a required column.
    """
    pools, names, problems = _read_seats(seats_path)
    rows, queue_problems = _read_csv(path, QUEUE_COLUMNS)
    applications: dict[str, _Application] = {}
    for row in rows:
        child_uid = row.values["child_uid"] or None
        try:
            if child_uid is None:
                raise _BadRow("child_uid is empty")
            institution_id = _cell(row, "institution_id", str)
            if institution_id not in pools:
                raise _BadRow(f"institution {institution_id} has no seats in {seats_path}")
            columns = _ChildColumns.of(row)
            sibling = _flag(row, "priority_sibling")
            application = applications.get(child_uid)
            if application is not None:
                application.check(columns, institution_id)
        except _BadRow as exc:
            queue_problems.append(RowProblem(str(path), row.line, child_uid, str(exc)))
            continue
        if application is None:
            application = applications[child_uid] = _Application(row.line, columns)
            if columns.chose_not_to_receive_inv:
                message = "child left out: the parents chose not to receive an invitation"
                queue_problems.append(
                    RowProblem(str(path), row.line, child_uid, message, kind="excluded")
                )
        application.institutions[institution_id] = row.line
        if sibling:
            application.siblings_at.add(institution_id)
        if name := row.values.get("institution_name"):
            names.setdefault(institution_id, name)
    instance = Instance(
        institutions=tuple(
            Institution(institution_id, tuple(group_pools), name=names.get(institution_id, ""))
            for institution_id, group_pools in pools.items()
        ),
        children=tuple(
            application.child(child_uid)
            for child_uid, application in applications.items()
            if not application.columns.chose_not_to_receive_inv
        ),
    )
    return instance, problems + sorted(queue_problems, key=lambda p: p.line)
