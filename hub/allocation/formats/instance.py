"""The JSON instance format: what an admission round is computed from (:class:`InstanceFile`).

Its JSON Schema is committed as ``docs/allocation-instance.schema.json``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, ValidationError

from hub.allocation.criteria import COMMISSION_GROUNDS
from hub.allocation.engine import PoolRef
from hub.allocation.formats.common import (
    UNSPECIFIED_GROUND,
    AllocationInputError,
    cannot_read,
    json_schema,
)
from hub.allocation.model import (
    Child,
    Facts,
    HeldPlace,
    Instance,
    Institution,
    Location,
    SeatPool,
)
from schemas.base import FrozenModel
from schemas.geo import Lks92Point
from schemas.values import UtcDatetime

INSTANCE_FORMAT = "hub-allocation-instance/1"


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
        description="Institutions whose offer the parents declined: never offered again, even"
        " when listed or reachable as any institution; a place the child holds there is kept.",
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


def instance_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`InstanceFile`."""
    return json_schema(InstanceFile)


_ERRORS_SHOWN = 3


def read_instance_json(path: Path) -> Instance:
    """The instance in a JSON file; the error names the JSON path of the first problems."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise cannot_read(path, exc) from None
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
