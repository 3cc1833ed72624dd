"""The register of authorisations the simulator holds, seeded from the synthetic municipality.

An authorisation (a power of attorney) is given by an orphans' court (bāriņtiesa) or a
notary to one person, the agent, for one child and for some matters, for a period; it may
be revoked. Whoever applies on behalf of a child's parents names it, and the municipality
asks the register whether it holds on the day the application was filed (Riga binding
regulations Nr. 191, point 7.2).

:func:`seeded` makes the register's contents from a town, deterministically (a random
stream of its own, so the town's people stay what they are for a seed), together with
:class:`AuthorisationCase`\\ s: applications an agent could file, each with the answer the
register gives. The demo and the tests pick valid and invalid authorisations from them.
Each case is stated for its child's registration day (``child.registered_at``), the day
the synthetic municipality files that child's application.

The register answers in this order, so that whoever is not the agent of a child learns
nothing about the authorisation's dates: ``unknown`` (no such number from that issuer),
``other_child``, ``other_person``, ``other_scope`` (it does not cover the matter asked),
``revoked`` (on or after the day it was revoked), ``not_yet_valid``, ``expired``; else
``valid``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from simulators.municipality import Child, SyntheticMunicipality, old_format_code

Issuer = Literal["orphans_court", "notary"]
Scope = Literal["preschool", "school", "healthcare", "property", "general"]
SCOPES: tuple[Scope, ...] = ("preschool", "school", "healthcare", "property", "general")
EVERY_MATTER: Scope = "general"
"""An authorisation for every matter covers any matter asked about."""
Status = Literal[
    "valid",
    "unknown",
    "revoked",
    "expired",
    "not_yet_valid",
    "other_person",
    "other_child",
    "other_scope",
]
STATUSES: tuple[Status, ...] = (
    "valid",
    "unknown",
    "revoked",
    "expired",
    "not_yet_valid",
    "other_person",
    "other_child",
    "other_scope",
)

KINDS: tuple[str, ...] = (
    "valid",
    "valid_every_matter",
    "revoked",
    "expired",
    "not_yet_valid",
    "other_person",
    "other_child",
    "other_scope",
    "unknown",
)
"""The cases :func:`seeded` makes, in turn, one child each (two for ``other_child``)."""
CHILDREN_PER_CASE = 25
"""About one child in this many gets a case (at least one case of each kind if there are
children enough)."""

_NOTARIES = (
    "Zvērināta notāre Ilze Kalniņa",
    "Zvērināts notārs Jānis Ozols",
    "Zvērināta notāre Līga Bērziņa",
    "Zvērināts notārs Andris Liepiņš",
)


@dataclass(frozen=True)
class RegisteredAuthorisation:
    """An authorisation as the register holds it."""

    issuer: Issuer
    issuer_name: str
    number: str
    child_personal_code: str
    agent_personal_code: str
    scopes: tuple[Scope, ...]
    valid_from: date
    valid_until: date | None
    """The last day it is valid; None: until revoked."""
    revoked_on: date | None = None
    """The first day it is no longer valid because it was revoked."""

    @property
    def last_day(self) -> date | None:
        """The last day it is valid, revocation included (None: open-ended)."""
        if self.revoked_on is None:
            return self.valid_until
        day_before = self.revoked_on - timedelta(days=1)
        return day_before if self.valid_until is None else min(self.valid_until, day_before)

    def covers(self, matter: Scope) -> bool:
        return matter in self.scopes or EVERY_MATTER in self.scopes

    def status(self, child: str, agent: str, matter: Scope, on: date) -> Status:
        """What the register answers for this authorisation (see the module's order)."""
        if _digits(child) != _digits(self.child_personal_code):
            return "other_child"
        if _digits(agent) != _digits(self.agent_personal_code):
            return "other_person"
        if not self.covers(matter):
            return "other_scope"
        if self.revoked_on is not None and on >= self.revoked_on:
            return "revoked"
        if on < self.valid_from:
            return "not_yet_valid"
        if self.valid_until is not None and on > self.valid_until:
            return "expired"
        return "valid"


@dataclass(frozen=True)
class AuthorisationCase:
    """An application an agent could file for ``child`` on ``on``, naming an authorisation,
    and what the register answers when asked about pre-school matters (``expected``)."""

    expected: Status
    child: Child
    on: date
    issuer: Issuer
    issuer_name: str
    number: str
    valid_from: date
    valid_until: date | None
    agent_personal_code: str

    def authorisation(self) -> dict[str, Any]:
        """The authorisation as the application names it (the fields of the hub's
        ``schemas.authorisations.Authorisation``, as JSON)."""
        return {
            "issuer": self.issuer,
            "issuer_name": self.issuer_name,
            "number": self.number,
            "valid_from": self.valid_from.isoformat(),
            "valid_until": self.valid_until.isoformat() if self.valid_until else None,
            "agent_personal_code": self.agent_personal_code,
        }


@dataclass(frozen=True)
class Seeded:
    """What :func:`seeded` makes: the register's contents and the cases filed against it."""

    authorisations: tuple[RegisteredAuthorisation, ...]
    cases: tuple[AuthorisationCase, ...]

    def of(self, expected: Status) -> list[AuthorisationCase]:
        """The cases the register answers with ``expected``."""
        return [c for c in self.cases if c.expected == expected]


def _digits(code: str) -> str:
    return code.replace("-", "")


@dataclass
class _Seeder:
    town: SyntheticMunicipality
    rng: random.Random
    taken: set[str]
    serial: int = 0
    authorisations: list[RegisteredAuthorisation] = field(default_factory=list)

    def agent(self, on: date) -> str:
        """A personal code of an adult nobody in the town has."""
        while True:
            born = date(on.year - self.rng.randint(25, 70), self.rng.randint(1, 12), 15)
            code = old_format_code(born, self.rng)
            if code not in self.taken:
                self.taken.add(code)
                return code

    def number(self, issuer: Issuer, year: int) -> str:
        self.serial += 1
        prefix = "BT" if issuer == "orphans_court" else "NOT"
        return f"{prefix}-{year}/{self.serial:05d}"

    def issuer(self) -> tuple[Issuer, str]:
        if self.rng.random() < 0.5:
            return "orphans_court", f"{self.town.name} bāriņtiesa"
        return "notary", self.rng.choice(_NOTARIES)

    def register(
        self,
        child: Child,
        on: date,
        *,
        valid_from: date,
        valid_until: date | None,
        scopes: tuple[Scope, ...] = ("preschool",),
        revoked_on: date | None = None,
        issuer: tuple[Issuer, str] | None = None,
    ) -> RegisteredAuthorisation:
        kind, name = issuer or self.issuer()
        entry = RegisteredAuthorisation(
            issuer=kind,
            issuer_name=name,
            number=self.number(kind, valid_from.year),
            child_personal_code=child.personal_code,
            agent_personal_code=self.agent(on),
            scopes=scopes,
            valid_from=valid_from,
            valid_until=valid_until,
            revoked_on=revoked_on,
        )
        self.authorisations.append(entry)
        return entry

    def days(self, low: int, high: int) -> timedelta:
        return timedelta(days=self.rng.randint(low, high))

    def case(self, kind: str, child: Child, pool: Iterator[Child]) -> AuthorisationCase:
        on = child.registered_at.date()
        term = (on - self.days(30, 300), on + self.days(200, 900))
        filed_for, agent, expected = child, None, kind
        if kind == "valid":
            entry = self.register(
                child,
                on,
                valid_from=on - self.days(10, 300),
                valid_until=None,
                issuer=("orphans_court", f"{self.town.name} bāriņtiesa"),
            )
        elif kind == "valid_every_matter":
            entry = self.register(
                child,
                on,
                valid_from=term[0],
                valid_until=term[1],
                scopes=("general",),
                issuer=("notary", self.rng.choice(_NOTARIES)),
            )
            expected = "valid"
        elif kind == "revoked":
            entry = self.register(
                child,
                on,
                valid_from=on - self.days(200, 600),
                valid_until=on + self.days(100, 600),
                revoked_on=on - self.days(1, 90),
            )
        elif kind == "expired":
            valid_until = on - self.days(1, 120)
            entry = self.register(
                child, on, valid_from=valid_until - self.days(180, 720), valid_until=valid_until
            )
        elif kind == "not_yet_valid":
            valid_from = on + self.days(1, 60)
            entry = self.register(
                child, on, valid_from=valid_from, valid_until=valid_from + self.days(180, 720)
            )
        elif kind == "other_person":
            entry = self.register(child, on, valid_from=term[0], valid_until=term[1])
            agent = self.agent(on)  # someone the register has no authorisation for
        elif kind == "other_child":
            entry = self.register(child, on, valid_from=term[0], valid_until=term[1])
            filed_for = next(pool)  # named for the register's child, filed for another
            on = filed_for.registered_at.date()
        elif kind == "other_scope":
            scopes = (self.rng.choice(("healthcare", "property", "school")),)
            entry = self.register(child, on, valid_from=term[0], valid_until=term[1], scopes=scopes)
        elif kind == "unknown":
            kind_, name = self.issuer()
            return AuthorisationCase(
                expected="unknown",
                child=child,
                on=on,
                issuer=kind_,
                issuer_name=name,
                number=self.number(kind_, term[0].year),  # never registered
                valid_from=term[0],
                valid_until=None,
                agent_personal_code=self.agent(on),
            )
        else:
            raise ValueError(f"no such kind of case: {kind}")
        return AuthorisationCase(
            expected=expected,  # type: ignore[arg-type]
            child=filed_for,
            on=on,
            issuer=entry.issuer,
            issuer_name=entry.issuer_name,
            number=entry.number,
            valid_from=entry.valid_from,
            valid_until=entry.valid_until,
            agent_personal_code=agent or entry.agent_personal_code,
        )


def seeded(town: SyntheticMunicipality) -> Seeded:
    """The register's authorisations for ``town``, and the cases filed against them.

    About one child in :data:`CHILDREN_PER_CASE` gets a case, the kinds (:data:`KINDS`) in
    turn, at least one of each when the town has children enough; no child is in two
    cases. The same town always gives the same register.
    """
    rng = random.Random(f"{town.code}:{town.seed}:authorisations")
    taken = {c.personal_code for c in town.children}
    taken |= {g.personal_code for c in town.children for g in c.guardians}
    taken |= set(town.enrolments) | {s.personal_code for s in town.staff}
    seeder = _Seeder(town, rng, taken)
    pool = iter(rng.sample(town.children, len(town.children)))
    wanted = max(len(KINDS), len(town.children) // CHILDREN_PER_CASE)
    cases: list[AuthorisationCase] = []
    try:
        for n in range(wanted):
            cases.append(seeder.case(KINDS[n % len(KINDS)], next(pool), pool))
    except StopIteration:
        pass  # a town too small for every kind
    return Seeded(tuple(seeder.authorisations), tuple(cases))


class Register:
    """The register, in memory: authorisations by issuer and number (letter case aside)."""

    def __init__(self, authorisations: tuple[RegisteredAuthorisation, ...]) -> None:
        self.by_number = {(a.issuer, a.number.upper()): a for a in authorisations}

    def find(self, issuer: Issuer, number: str) -> RegisteredAuthorisation | None:
        return self.by_number.get((issuer, number.strip().upper()))

    def verify(
        self, issuer: Issuer, number: str, *, child: str, agent: str, matter: Scope, on: date
    ) -> tuple[Status, RegisteredAuthorisation | None]:
        """The register's answer about an authorisation, and the authorisation it found."""
        found = self.find(issuer, number)
        if found is None:
            return "unknown", None
        return found.status(child, agent, matter, on), found


__all__ = [
    "EVERY_MATTER",
    "KINDS",
    "SCOPES",
    "STATUSES",
    "AuthorisationCase",
    "Issuer",
    "Register",
    "RegisteredAuthorisation",
    "Scope",
    "Seeded",
    "Status",
    "seeded",
]
