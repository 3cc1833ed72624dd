"""File formats of the allocation engine: JSON instances and results, Riga's open data.

``hub allocate`` reads an instance — a JSON file in the format of
:class:`InstanceFile`, or Riga's published queue CSV with a seats CSV
(:func:`read_riga_csv`) — runs a round and writes a :class:`ResultFile`.
The JSON Schemas of both JSON formats are committed in ``docs/``
(:func:`write_schemas`); a test fails when they are stale.

The models only convert: every rule about a valid round (known institutions,
unique ids, how many institutions a child may list) is the engine's, which
reports it as an :class:`~hub.allocation.engine.EngineError` or as the
child's ``invalid: …`` reason. Children are known by pseudonymous ids only;
no format carries a personal code.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Self, TypeVar
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, Field, ValidationError

from hub.allocation.criteria import COMMISSION_GROUNDS
from hub.allocation.engine import Allocator, ChildReport, PoolRef, Priority, without_gc_pauses
from hub.allocation.model import (
    Child,
    Facts,
    HeldPlace,
    Instance,
    Institution,
    Location,
    SeatPool,
)
from hub.errors import HubError
from schemas.base import FrozenModel
from schemas.geo import Lks92Point
from schemas.values import MunicipalityCode, UtcDatetime

INSTANCE_FORMAT = "hub-allocation-instance/1"
RESULT_FORMAT = "hub-allocation-result/1"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SchemaKind = Literal["instance", "result"]
SCHEMA_FILES: dict[SchemaKind, str] = {
    "instance": "allocation-instance.schema.json",
    "result": "allocation-result.schema.json",
}
"""File name of each format's JSON Schema, in ``docs/``."""

UNSPECIFIED_GROUND = "unspecified"
"""Commission ground of a child whose out-of-turn ground is confirmed but not named.

Riga's open data only says *that* the commission granted out-of-turn
admission (``priority_commission``), not on which ground. The criterion
``commission`` holds for such a child; criteria naming single grounds do not.
"""

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


class AllocationInputError(HubError):
    """An input file of ``hub allocate`` cannot be used. Fix the place the message names."""


# --------------------------------------------------------------------------- instance format


KNOWN_GROUNDS = (*sorted(COMMISSION_GROUNDS), UNSPECIFIED_GROUND)
"""Commission grounds an instance file may name."""


def _known_ground(name: str) -> str:
    if name not in KNOWN_GROUNDS:
        raise ValueError(f"unknown commission ground; known grounds: {', '.join(KNOWN_GROUNDS)}")
    return name


CommissionGround = Annotated[
    str, AfterValidator(_known_ground), Field(json_schema_extra={"enum": list(KNOWN_GROUNDS)})
]


def _point(location: Location | None) -> Lks92Point | None:
    return None if location is None else Lks92Point(northing=location[0], easting=location[1])


def _location(point: Lks92Point | None) -> Location | None:
    return None if point is None else (point.northing, point.easting)


class GroupEntry(FrozenModel):
    """One group of an institution: the seats of one age group and language.

    The fields are those of :class:`~hub.allocation.model.SeatPool`, less the institution.
    """

    group: str = Field(
        min_length=1, description="Code of the group, unique within the institution (e.g. 3-lv)."
    )
    language: str = Field(
        min_length=1,
        description="Language of instruction (e.g. lv, ru); children fit groups of their language.",
    )
    capacity: int = Field(
        ge=0, description="Seats open to newcomers; places children already hold are not counted."
    )
    age_group: str | None = Field(
        default=None,
        description="Age-group label (Riga: the programme starting age, e.g. 1.5). A child"
        " with a label fits a group with the same label.",
    )
    min_age_months: int | None = Field(
        default=None,
        ge=0,
        description="Without labels: the youngest age admitted, in months at the round date.",
    )
    birth_year_from: int | None = Field(
        default=None, description="Without labels: the earliest birth year admitted."
    )
    birth_year_to: int | None = Field(
        default=None, description="Without labels: the latest birth year admitted."
    )

    def to_pool(self, institution_id: str) -> SeatPool:
        return SeatPool(institution_id=institution_id, **self.model_dump())

    @classmethod
    def from_pool(cls, pool: SeatPool) -> Self:
        return cls.model_validate(pool, from_attributes=True)


class InstitutionEntry(FrozenModel):
    """An institution and its groups."""

    institution_id: str = Field(min_length=1, description="Id of the institution, unique.")
    name: str = Field(default="", description="Display name.")
    location: Lks92Point | None = Field(
        default=None,
        description="Where it is (LKS-92 metres): children who accept any institution are"
        " offered the nearest first.",
    )
    groups: tuple[GroupEntry, ...] = Field(description="Its groups taking children.")

    def to_institution(self) -> Institution:
        return Institution(
            institution_id=self.institution_id,
            pools=tuple(g.to_pool(self.institution_id) for g in self.groups),
            name=self.name,
            location=_location(self.location),
        )

    @classmethod
    def from_institution(cls, institution: Institution) -> Self:
        return cls(
            institution_id=institution.institution_id,
            name=institution.name,
            location=_point(institution.location),
            groups=tuple(GroupEntry.from_pool(p) for p in institution.pools),
        )


class FactsEntry(FrozenModel):
    """Priority facts of a child, as verified for the round date."""

    commission_grounds: tuple[CommissionGround, ...] = Field(
        default=(),
        description=f"Out-of-turn grounds confirmed by the commission; '{UNSPECIFIED_GROUND}'"
        " when confirmed without a named ground.",
    )
    child_resident: bool = Field(
        default=False, description="The child's declared residence is in the municipality."
    )
    parent_resident: bool = Field(
        default=False, description="A parent's declared residence is in the municipality."
    )
    large_family: bool = Field(
        default=False, description="Three or more children under 18 in the family's care."
    )
    siblings_at: tuple[str, ...] = Field(
        default=(), description="Institutions a brother or sister attends."
    )
    staff_parent_at: tuple[str, ...] = Field(
        default=(), description="Institutions where a parent works."
    )
    mandatory_age: bool | None = Field(
        default=None,
        description="Of mandatory pre-school age; null: computed from the birth date by the rules.",
    )

    def to_facts(self) -> Facts:
        return Facts(
            commission_grounds=frozenset(self.commission_grounds),
            child_resident=self.child_resident,
            parent_resident=self.parent_resident,
            large_family=self.large_family,
            siblings_at=frozenset(self.siblings_at),
            staff_parent_at=frozenset(self.staff_parent_at),
            mandatory_age=self.mandatory_age,
        )

    @classmethod
    def from_facts(cls, facts: Facts) -> Self:
        return cls(
            commission_grounds=tuple(sorted(facts.commission_grounds)),
            child_resident=facts.child_resident,
            parent_resident=facts.parent_resident,
            large_family=facts.large_family,
            siblings_at=tuple(sorted(facts.siblings_at)),
            staff_parent_at=tuple(sorted(facts.staff_parent_at)),
            mandatory_age=facts.mandatory_age,
        )


class GroupRef(FrozenModel):
    """One group of one institution."""

    institution_id: str = Field(min_length=1, description="Id of the institution.")
    group: str = Field(min_length=1, description="Code of the group within the institution.")

    @classmethod
    def of(cls, place: HeldPlace | PoolRef) -> Self:
        return cls(institution_id=place.institution_id, group=place.group)


class ChildEntry(FrozenModel):
    """One child in the queue, known only by a pseudonymous id."""

    child_id: str = Field(
        min_length=1, description="Pseudonymous id of the child, unique; never a personal code."
    )
    language: str = Field(min_length=1, description="Language of the group wanted (e.g. lv).")
    desired_start_date: date = Field(
        description="The child takes part in rounds on or after this date."
    )
    institutions: tuple[str, ...] = Field(
        description="Institutions the parents want, most wanted first."
    )
    registered_at: UtcDatetime = Field(
        description="When the application was registered, with a time zone (ISO 8601)."
    )
    birth_date: date | None = Field(
        default=None, description="Birth date; matches groups by age when there are no labels."
    )
    age_group: str | None = Field(
        default=None, description="Age-group label (Riga: programme starting age)."
    )
    facts: FactsEntry = Field(default=FactsEntry(), description="Priority facts.")
    held: GroupRef | None = Field(
        default=None,
        description="A place the child already holds: kept unless a seat at an institution listed"
        " above it is offered.",
    )
    accepts_any: bool = Field(
        default=False,
        description="The parents accept any institution with a free seat after the listed ones.",
    )
    location: Lks92Point | None = Field(
        default=None, description="Home (LKS-92 metres): orders the any-institution fallback."
    )
    declined: tuple[str, ...] = Field(
        default=(),
        description="Institutions whose offer the parents declined: never offered again.",
    )

    def to_child(self) -> Child:
        held = self.held
        return Child(
            child_id=self.child_id,
            language=self.language,
            desired_start_date=self.desired_start_date,
            institutions=self.institutions,
            registered_at=self.registered_at,
            birth_date=self.birth_date,
            age_group=self.age_group,
            facts=self.facts.to_facts(),
            held=HeldPlace(held.institution_id, held.group) if held else None,
            accepts_any=self.accepts_any,
            location=_location(self.location),
            declined=frozenset(self.declined),
        )

    @classmethod
    def from_child(cls, child: Child) -> Self:
        return cls(
            child_id=child.child_id,
            language=child.language,
            desired_start_date=child.desired_start_date,
            institutions=child.institutions,
            registered_at=child.registered_at,
            birth_date=child.birth_date,
            age_group=child.age_group,
            facts=FactsEntry.from_facts(child.facts),
            held=GroupRef.of(child.held) if child.held else None,
            accepts_any=child.accepts_any,
            location=_point(child.location),
            declined=tuple(sorted(child.declined)),
        )


class InstanceFile(FrozenModel):
    """Everything an admission round is computed from, besides the rules and the date."""

    format: Literal["hub-allocation-instance/1"] = Field(
        description="Name and version of this format."
    )
    institutions: tuple[InstitutionEntry, ...] = Field(description="Institutions and their seats.")
    children: tuple[ChildEntry, ...] = Field(description="Children in the queue.")

    def to_instance(self) -> Instance:
        return Instance(
            institutions=tuple(i.to_institution() for i in self.institutions),
            children=tuple(c.to_child() for c in self.children),
        )

    @classmethod
    def from_instance(cls, instance: Instance) -> Self:
        return cls(
            format=INSTANCE_FORMAT,
            institutions=tuple(InstitutionEntry.from_institution(i) for i in instance.institutions),
            children=tuple(ChildEntry.from_child(c) for c in instance.children),
        )


# --------------------------------------------------------------------------- result format


class PriorityEntry(FrozenModel):
    """What a group compares children by: the criteria, then registration time, then lottery."""

    criteria: dict[str, bool] = Field(
        description="Each criterion of the rules, most important first: whether it holds here."
    )
    registered_at: UtcDatetime = Field(description="Registration time of the application (UTC).")
    lottery: int = Field(ge=0, description="The child's number in the published tie-break lottery.")
    listed: bool = Field(
        description="The child listed the institution; false: a seat taken as any-institution"
        " fallback, behind every child who listed it."
    )

    @classmethod
    def from_priority(cls, priority: Priority) -> Self:
        return cls(
            criteria=dict(priority.criteria),
            registered_at=priority.registered_at,
            lottery=priority.lottery,
            listed=priority.listed,
        )


class WhyNotEntry(FrozenModel):
    """Why the child has no seat at an institution it ranked above the place it got."""

    institution_id: str = Field(description="The institution ranked higher.")
    group: str | None = Field(description="The group there; null when none fits the child.")
    reason: Literal["outranked", "no_fitting_group"] = Field(
        description="outranked: the seats went to children of higher priority;"
        " no_fitting_group: no group of the child's language and age."
    )
    last_admitted: PriorityEntry | None = Field(
        description="Priority of the last child admitted to the group; null when nobody was."
    )
    own: PriorityEntry | None = Field(description="The child's own priority at the group.")


class QueueEntry(FrozenModel):
    """Where a waiting child stands at a group it ranked above its place."""

    institution_id: str = Field(description="Id of the institution.")
    group: str = Field(description="Code of the group.")
    position: int = Field(ge=1, description="Place in line: 1 is next.")
    waiting: int = Field(ge=1, description="Children in line for the group.")
    seats: int = Field(ge=0, description="Capacity of the group.")


class ChildOutcome(FrozenModel):
    """Where one child stands after the round, and why."""

    child_id: str = Field(description="Pseudonymous id of the child.")
    placement: GroupRef | None = Field(
        description="The seat offered or kept; null when the child has none."
    )
    kind: Literal["listed", "held", "any"] | None = Field(
        description="listed: a listed institution; held: the place the child already holds;"
        " any: an any-institution fallback seat; null without a seat."
    )
    preference_rank: int | None = Field(
        ge=1,
        description="Rank of the institution in the child's list (1 = first choice); null for"
        " an any-institution seat or without a seat.",
    )
    reason: str | None = Field(
        description="Why the child has no seat: outranked, no_fitting_group, not_yet_due"
        " or 'invalid: …'; null with a seat."
    )
    why_not: tuple[WhyNotEntry, ...] = Field(
        description="Each institution ranked above the placement, and why it was not offered."
    )
    queue: tuple[QueueEntry, ...] = Field(
        description="The child's place in line at each group it still waits for."
    )


class GroupOutcome(FrozenModel):
    """One group after the round."""

    institution_id: str = Field(description="Id of the institution.")
    group: str = Field(description="Code of the group.")
    capacity: int = Field(ge=0, description="Seats open to newcomers.")
    placed: int = Field(ge=0, description="Seats offered in this round.")
    last_admitted: PriorityEntry | None = Field(
        description="The cut-off: priority of the last child admitted; null when nobody was."
    )


class Summary(FrozenModel):
    """Counts over the whole round."""

    children: int = Field(ge=0, description="Children in the queue.")
    placed: int = Field(ge=0, description="Children offered a seat (listed or any institution).")
    held: int = Field(ge=0, description="Children keeping the place they hold.")
    unplaced: int = Field(ge=0, description="Children without a seat.")
    seats: int = Field(ge=0, description="Seats open to newcomers, over all groups.")
    unplaced_by_reason: dict[str, int] = Field(
        description="Children without a seat by reason (outranked, no_fitting_group,"
        " not_yet_due, invalid)."
    )


class ResultFile(FrozenModel):
    """The admission lists of one round, with an explanation for every child."""

    format: Literal["hub-allocation-result/1"] = Field(
        description="Name and version of this format."
    )
    municipality: MunicipalityCode = Field(description="Municipality whose rules were applied.")
    round_date: date = Field(description="Date the round was computed for.")
    lottery_seed: int = Field(ge=0, description="Published seed of the tie-break lottery.")
    criteria: tuple[str, ...] = Field(description="Priority criteria, most important first.")
    summary: Summary = Field(description="Counts over the round.")
    groups: tuple[GroupOutcome, ...] = Field(description="Every group, by institution id.")
    children: tuple[ChildOutcome, ...] = Field(description="Every child, in instance order.")


@without_gc_pauses()  # like a round, a result is many small acyclic objects
def build_result(allocator: Allocator, report: dict[str, ChildReport]) -> ResultFile:
    """The result file of a round: ``report`` is ``allocator.report()``."""
    decoded: dict[int, PriorityEntry] = {}

    def priority(key: int | None) -> PriorityEntry | None:
        """The entry of a priority key; each distinct key is decoded once."""
        if key is None:
            return None
        if key not in decoded:
            decoded[key] = PriorityEntry.from_priority(allocator.decode(key))
        return decoded[key]

    children = []
    for child_id, (placement, why_not, queue) in report.items():
        seat = placement.pool
        children.append(
            ChildOutcome(
                child_id=child_id,
                placement=GroupRef.of(seat) if seat else None,
                kind=placement.kind,
                preference_rank=placement.preference_rank,
                reason=placement.reason,
                why_not=tuple(
                    WhyNotEntry(
                        institution_id=w.institution_id,
                        group=w.group,
                        reason=w.reason,
                        last_admitted=priority(w.last_admitted),
                        own=priority(w.own),
                    )
                    for w in why_not
                ),
                queue=tuple(
                    QueueEntry(
                        institution_id=q.institution_id,
                        group=q.group,
                        position=q.position,
                        waiting=q.waiting,
                        seats=q.seats,
                    )
                    for q in queue
                ),
            )
        )
    groups = tuple(
        GroupOutcome(
            institution_id=g.pool.institution_id,
            group=g.pool.group,
            capacity=g.capacity,
            placed=g.placed,
            last_admitted=priority(g.last_admitted),
        )
        for g in allocator.groups()
    )
    kinds = Counter(c.kind for c in children)
    # A reason is a category, or "invalid: <detail>": count by category.
    reasons = Counter(c.reason.partition(":")[0] for c in children if c.reason)
    rules = allocator.rules
    return ResultFile(
        format=RESULT_FORMAT,
        municipality=rules.municipality,
        round_date=allocator.round_date,
        lottery_seed=rules.lottery_seed,
        criteria=rules.criteria,
        summary=Summary(
            children=len(children),
            placed=kinds["listed"] + kinds["any"],
            held=kinds["held"],
            unplaced=kinds[None],
            seats=sum(g.capacity for g in groups),
            unplaced_by_reason=dict(sorted(reasons.items())),
        ),
        groups=groups,
        children=tuple(children),
    )


def write_result(result: ResultFile, path: Path) -> None:
    """Write ``result`` as UTF-8 JSON (non-ASCII letters as they are, indent 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.model_dump_json(indent=1) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- JSON Schemas


def instance_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`InstanceFile`."""
    return {"$schema": JSON_SCHEMA_DIALECT, **InstanceFile.model_json_schema()}


def result_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`ResultFile`, as written."""
    return {"$schema": JSON_SCHEMA_DIALECT, **ResultFile.model_json_schema(mode="serialization")}


def schema_text(kind: SchemaKind) -> str:
    """The JSON Schema of one format as committed in ``docs/``: sorted keys, indent 2."""
    schema = instance_schema() if kind == "instance" else result_schema()
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    """Write both JSON Schemas into ``folder`` (named as in :data:`SCHEMA_FILES`)."""
    written = []
    for kind, name in SCHEMA_FILES.items():
        path = folder / name
        path.write_text(schema_text(kind), encoding="utf-8")
        written.append(path)
    return written


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row of an input CSV file that was skipped, or a child left out on purpose.

    ``kind`` is ``"error"`` for a row that could not be used, ``"excluded"``
    for a child whose parents chose not to receive an invitation.
    """

    file: str
    line: int
    """1-based line where the row starts; the header is line 1."""
    child_uid: str | None
    message: str
    kind: Literal["error", "excluded"] = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@without_gc_pauses()  # like a round, an instance is many small acyclic objects
def read_instance(path: Path, seats: Path | None = None) -> tuple[Instance, list[RowProblem]]:
    """The instance in ``path``, with the problems of skipped rows.

    A ``.json`` file is an :class:`InstanceFile`; a ``.csv`` file is Riga's
    queue, read with the seats CSV ``seats`` by :func:`read_riga_csv`.
    Raises :class:`AllocationInputError`.
    """
    suffix = path.suffix.lower()
    if suffix == ".json":
        if seats is not None:
            raise AllocationInputError(f"{seats}: a seats CSV goes only with a Riga queue CSV")
        return _read_json(path), []
    if suffix == ".csv":
        if seats is None:
            raise AllocationInputError(f"{path}: a Riga queue CSV needs its seats CSV")
        return read_riga_csv(path, seats)
    raise AllocationInputError(f"{path}: expected a .json instance or a Riga queue .csv")


_ERRORS_SHOWN = 3


def _read_json(path: Path) -> Instance:
    """The instance in a JSON file; the error names the JSON path of the first problems."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AllocationInputError(f"{path}: cannot read the file: {exc.strerror}") from None
    try:
        instance_file = InstanceFile.model_validate_json(data)
    except ValidationError as exc:
        # The model hides input values in its messages: they may be personal data.
        errors = exc.errors(include_url=False, include_input=False)
        shown = "; ".join(_json_path(e["loc"]) + e["msg"] for e in errors[:_ERRORS_SHOWN])
        more = f"; … and {len(errors) - _ERRORS_SHOWN} more" if len(errors) > _ERRORS_SHOWN else ""
        raise AllocationInputError(f"{path}: not a valid instance: {shown}{more}") from None
    return instance_file.to_instance()


def _json_path(loc: tuple[int | str, ...]) -> str:
    """Where a problem is, as ``children[3].registered_at: ``; empty for the whole file."""
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return f"{path.removeprefix('.')}: " if path else ""


# --------------------------------------------------------------------------- Riga's open data

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
        raise AllocationInputError(f"{path}: cannot read the file: {exc.strerror}") from None
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
