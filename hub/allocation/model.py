"""Plain data of the allocation engine: seats, children, the municipality's rules.

Everything here is immutable and free of I/O. The engine reads these and
returns plain data; file formats and the bus convert to and from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

Location = tuple[float, float]
"""LKS-92 coordinates (northing, easting) in metres."""


@dataclass(frozen=True, slots=True)
class SeatPool:
    """Seats of one group: an institution × age group × language, with a capacity.

    ``capacity`` counts the seats open to newcomers. A seat a child already
    holds (see :class:`HeldPlace`) is not among them until the child accepts
    a place elsewhere.

    A child fits the age group when, at the round date, the labels match
    (``age_group`` on both sides, as in Riga's open data "programme starting
    age") or, without labels, when the child was born within the birth-year
    band and is at least ``min_age_months`` old.
    """

    institution_id: str
    group: str
    language: str
    capacity: int
    age_group: str | None = None
    min_age_months: int | None = None
    birth_year_from: int | None = None
    birth_year_to: int | None = None


@dataclass(frozen=True, slots=True)
class Institution:
    institution_id: str
    pools: tuple[SeatPool, ...]
    name: str = ""
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    """Priority facts of a child, as verified for the round date.

    ``mandatory_age`` left as None is computed from the birth date by the
    municipality's rule; a value given here (e.g. from an export that carries
    the flag) is taken as is.
    """

    commission_grounds: frozenset[str] = frozenset()
    child_resident: bool = False
    parent_resident: bool = False
    large_family: bool = False
    siblings_at: frozenset[str] = frozenset()
    staff_parent_at: frozenset[str] = frozenset()
    mandatory_age: bool | None = None


@dataclass(frozen=True, slots=True)
class HeldPlace:
    """A seat the child already has (attending, or an accepted offer).

    It is the child's guaranteed fallback: the child only competes for
    institutions listed above it, and the seat is released to others only
    when the child accepts a better one.
    """

    institution_id: str
    group: str


@dataclass(frozen=True, slots=True)
class Child:
    """One child in the queue, known only by a pseudonymous id."""

    child_id: str
    language: str
    desired_start_date: date
    institutions: tuple[str, ...]
    registered_at: datetime
    birth_date: date | None = None
    age_group: str | None = None
    facts: Facts = field(default_factory=Facts)
    held: HeldPlace | None = None
    accepts_any: bool = False
    location: Location | None = None
    declined: frozenset[str] = frozenset()
    """Institutions whose offer the parents declined: never offered again."""


@dataclass(frozen=True, slots=True)
class Rules:
    """A municipality's admission rules (see ``hub/allocation/rules/*.toml``)."""

    municipality: str
    criteria: tuple[str, ...]
    max_institutions: int
    offer_deadline_days: int
    lottery_seed: int
    name: str = ""
    mandatory_age: int = 5
    mandatory_age_rule: Literal["calendar_year", "birthday"] = "calendar_year"
    on_expiry: Literal["decline", "annul"] = "decline"
    late_applications: Literal["next_round", "join"] = "next_round"
    """An application complete while a round is open: waits for the next round, or joins
    the open round at once (it may take a seat no child with priority over it holds)."""
    composites: tuple[tuple[str, Literal["all_of", "any_of"], tuple[str, ...]], ...] = ()
    """The combined priorities among ``criteria``, each ``(name, kind, parts)`` (a
    :class:`hub.allocation.criteria.Composite`): ``all_of`` holds where every part holds,
    ``any_of`` where at least one does. ``criteria`` stays a tuple of names."""


@dataclass(frozen=True, slots=True)
class Instance:
    """Everything a round is computed from, besides the rules and the date."""

    institutions: tuple[Institution, ...]
    children: tuple[Child, ...]
