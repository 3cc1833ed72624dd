"""A synthetic municipality: institutions and children with their families, from a seed.

Deterministic: the same code, seed and sizes always give the same people,
personal codes, addresses and choices, so tests and demo runs can be
reproduced. Personal codes are valid (old format for children born before
2017-07-01, new format after) but belong to nobody: they are drawn at random.

Every address has a 9-digit code, a street and house number, a postcode and
LKS-92 coordinates (northing, easting) inside the municipality's bounding
box — or, for families declared elsewhere, inside a neighbouring one. Some
children share a family (siblings, one of whom may already attend a
pre-school), some guardians work at an institution (staff), and some
children already attend one. Scale is the number of children: 50 to 30,000.

The population register's declared residences (:attr:`SyntheticMunicipality.declarations`)
cover every child and guardian: most guardians are declared with their child, but in some
families declared here no guardian is (both moved to the neighbouring municipality, or the
only one did), in some only the second guardian moved away, and in some families declared
elsewhere the first guardian is declared here. A guardian who moved keeps the earlier
declaration with the child until the move's ``declared_from``, which may fall in the
admission year itself, so where a guardian lives depends on the date asked.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import cached_property

from schemas.applications import CommissionGround
from schemas.values import personal_code_check_digit

NEW_FORMAT_SINCE = date(2017, 7, 1)
GROUNDS = tuple(g.value for g in CommissionGround)
LANGUAGES = (("lv", 0.85), ("ru", 0.10), ("en", 0.05))
_GENITIVE = {
    "riga": "Rīgas",
    "liepaja": "Liepājas",
    "daugavpils": "Daugavpils",
    "jelgava": "Jelgavas",
}


# Bounding boxes in LKS-92 (EPSG:3059): northing from/to, easting from/to, metres.
BOXES = {
    "riga": (302_000, 322_000, 495_000, 520_000),
    "liepaja": (302_000, 312_000, 310_000, 320_000),
    "daugavpils": (168_000, 178_000, 650_000, 662_000),
    "jelgava": (274_000, 282_000, 477_000, 487_000),
}
_DEFAULT_BOX = BOXES["riga"]
# ATVK territory codes: the municipality's own, and one neighbour for residents elsewhere.
TERRITORIES = {
    "riga": ("0001000", "0807600"),
    "liepaja": ("0017000", "0641000"),
    "daugavpils": ("0005000", "0440200"),
    "jelgava": ("0009000", "0540200"),
}
# The neighbouring municipality where families declared elsewhere live: hub code, town.
NEIGHBOURS = {
    "riga": ("kekava", "Ķekava"),
    "liepaja": ("dienvidkurzeme", "Grobiņa"),
    "daugavpils": ("augsdaugava", "Višķi"),
    "jelgava": ("jelgavas-novads", "Ozolnieki"),
}
_TOWNS = {"riga": "Rīga", "liepaja": "Liepāja", "daugavpils": "Daugavpils", "jelgava": "Jelgava"}
_POSTCODES = {"riga": (1001, 1099), "liepaja": (3401, 3499), "daugavpils": (5401, 5499)}
_STREETS = (
    "Brīvības iela",
    "Krišjāņa Barona iela",
    "Tērbatas iela",
    "Lāčplēša iela",
    "Ģertrūdes iela",
    "Avotu iela",
    "Stabu iela",
    "Miera iela",
    "Kr. Valdemāra iela",
    "Dzirnavu iela",
    "Maskavas iela",
    "Ulmaņa gatve",
    "Kurzemes prospekts",
    "Slokas iela",
    "Daugavgrīvas iela",
    "Ropažu iela",
    "Juglas iela",
    "Salaspils iela",
    "Lielvārdes iela",
    "Zemitāna iela",
)


RESERVED_ADDRESS = "108000001"
"""The GIS simulator's reference address (Krišjāņa Barona iela 1): never generated."""


@dataclass(frozen=True)
class Address:
    """A building address as the address register knows it (status EKS)."""

    code: str
    street: str
    house: str
    town: str
    postcode: str
    territory_code: str
    northing: float
    """KOORD_X, LKS-92 metres north."""
    easting: float
    """KOORD_Y, LKS-92 metres east."""
    in_municipality: bool

    @property
    def full(self) -> str:
        return f"{self.street} {self.house}, {self.town}, {self.postcode}"


@dataclass(frozen=True)
class Declaration:
    """A declared residence as the population register records it, from ``declared_from``
    until the person's next declaration."""

    address_code: str
    territory_code: str
    municipality: str
    """The hub's code of the municipality where it is declared (this one or the neighbour)."""
    declared_from: date


@dataclass(frozen=True)
class Enrolment:
    """A child who already attends a pre-school: the queue applicant or an older sibling."""

    personal_code: str
    birth_date: date
    institution_id: str
    group_code: str


@dataclass(frozen=True)
class StaffMember:
    personal_code: str
    institution_id: str


@dataclass(frozen=True)
class Group:
    code: str
    language: str
    min_age_months: int
    birth_year: int
    capacity: int


@dataclass(frozen=True)
class Institution:
    institution_id: str
    name: str
    address_code: str
    groups: tuple[Group, ...]


@dataclass(frozen=True)
class Guardian:
    personal_code: str
    email: str | None
    phone: str | None


@dataclass(frozen=True)
class Child:
    ref: str
    application_id: str
    personal_code: str
    birth_date: date
    guardians: tuple[Guardian, ...]
    address_code: str
    language: str
    choices: tuple[str, ...]
    desired_start_date: date
    registered_at: datetime
    accepts_any_institution: bool
    large_family: bool
    family: int = 0
    """Children of one family share guardians and address."""
    sibling_codes: tuple[str, ...] = ()
    """Personal codes of siblings already attending a pre-school of the municipality."""
    declared_here: bool = True
    """Declared residence in the municipality (False: in a neighbouring one)."""
    commission_grounds: tuple[str, ...] = ()
    """Out-of-turn grounds the parents declare (the commission confirms or rejects them)."""


def old_format_code(born: date, rng: random.Random) -> str:
    """A valid old-format code DDMMYY-CNNNN for someone born on ``born``."""
    century = {18: "0", 19: "1", 20: "2"}[born.year // 100]
    head = f"{born:%d%m%y}{century}{rng.randrange(1000):03d}"
    return f"{head[:6]}-{head[6:]}{personal_code_check_digit(head)}"


def new_format_code(rng: random.Random) -> str:
    """A new-format code 3X…, with the usual check digit so no warning is raised."""
    head = f"3{rng.randrange(2, 10)}{rng.randrange(10**8):08d}"
    return f"{head[:6]}-{head[6:]}{personal_code_check_digit(head)}"


def personal_code_for(born: date, rng: random.Random) -> str:
    return new_format_code(rng) if born >= NEW_FORMAT_SINCE else old_format_code(born, rng)


class SyntheticMunicipality:
    """Institutions and queue applicants of one municipality, generated from ``seed``."""

    def __init__(
        self,
        code: str = "riga",
        *,
        seed: int = 1,
        children: int = 50,
        institutions: int = 8,
        max_choices: int = 3,
        admission_year: int | None = None,
    ) -> None:
        if children < 0 or institutions < 1 or max_choices < 1:
            raise ValueError("need children >= 0, institutions >= 1 and max_choices >= 1")
        self.code = code
        self.seed = seed
        self.admission_year = admission_year or date.today().year
        rng = random.Random(f"{code}:{seed}")
        self._issued: set[str] = set()
        self.institutions = tuple(self._institution(i, rng) for i in range(1, institutions + 1))
        self.children = tuple(self._child(i, rng, max_choices) for i in range(1, children + 1))
        # Families, residence, attendance and staff come from a stream of their own, so the
        # children above stay what they were for a seed.
        self._families(random.Random(f"{code}:{seed}:families"))
        self._grounds(random.Random(f"{code}:{seed}:grounds"))
        self.addresses = {a.code: a for a in self._addresses()}

    @property
    def box(self) -> tuple[int, int, int, int]:
        return BOXES.get(self.code, _DEFAULT_BOX)

    @property
    def neighbour(self) -> tuple[str, str]:
        """The neighbouring municipality's hub code and town name."""
        return NEIGHBOURS.get(self.code, NEIGHBOURS["riga"])

    @property
    def territory(self) -> str:
        return TERRITORIES.get(self.code, TERRITORIES["riga"])[0]

    def declaration(self, address_code: str, *, here: bool, since: date) -> Declaration:
        """A declaration at ``address_code``, in this municipality or in the neighbouring one."""
        own, neighbour = TERRITORIES.get(self.code, TERRITORIES["riga"])
        return Declaration(
            address_code,
            own if here else neighbour,
            self.code if here else self.neighbour[0],
            since,
        )

    @cached_property
    def declarations(self) -> Mapping[str, tuple[Declaration, ...]]:
        """Personal code → the declared residences of every child and guardian, oldest first.

        A child is declared at its address from 1 January of its birth year. Guardians, per
        family, from a stream of their own (the rest of the town stays what it was for a
        seed): in families declared here, 10 % have no guardian declared here and 8 % (of
        two-guardian families) have the second guardian declared elsewhere; in families
        declared elsewhere, 35 % have the first guardian declared here. Such a guardian
        lived with the child before, and moved on a day within the three years before the
        admission year or in it; every other guardian is declared with the child.
        """
        rng = random.Random(f"{self.code}:{self.seed}:guardian-residence")
        taken = set(self.addresses)
        found: dict[str, tuple[Declaration, ...]] = {}
        seen: set[int] = set()
        for child in self.children:
            here = child.declared_here
            found[child.personal_code] = (
                self.declaration(
                    child.address_code, here=here, since=date(child.birth_date.year, 1, 1)
                ),
            )
            if child.family in seen:
                continue  # siblings share the guardians
            seen.add(child.family)
            roll = rng.random()
            for index, guardian in enumerate(child.guardians):
                since = date(child.birth_date.year - rng.randint(0, 8), rng.randint(1, 12), 1)
                with_child = self.declaration(child.address_code, here=here, since=since)
                moved = (
                    (here and roll < 0.10)
                    or (here and roll < 0.18 and index == 1)
                    or (not here and roll < 0.35 and index == 0)
                )
                if not moved:
                    found[guardian.personal_code] = (with_child,)
                    continue
                address = self._address_code(rng)
                while address in taken:
                    address = self._address_code(rng)
                taken.add(address)
                year = self.admission_year - rng.randint(0, 3)
                day = max(date(year, rng.randint(1, 12), rng.randint(1, 28)), since + timedelta(1))
                found[guardian.personal_code] = (
                    with_child,
                    self.declaration(address, here=not here, since=day),
                )
        return found

    def declared_on(self, personal_code: str, day: date) -> Declaration | None:
        """The person's declaration in force on ``day`` (None: none yet, or not known)."""
        history = self.declarations.get(personal_code, ())
        current = [d for d in history if d.declared_from <= day]
        return current[-1] if current else None

    def _grounds(self, rng: random.Random) -> None:
        """About one child in 25 has parents who declare an out-of-turn ground."""
        self.children = tuple(
            replace(c, commission_grounds=(rng.choice(GROUNDS),)) if rng.random() < 0.04 else c
            for c in self.children
        )

    def _families(self, rng: random.Random) -> None:
        """Make some children siblings, give some an attending sibling, find staff and attenders."""
        children = list(self.children)
        self.enrolments: dict[str, Enrolment] = {}
        """Personal code → where that child attends now."""
        self.staff: tuple[StaffMember, ...] = ()
        staff: list[StaffMember] = []
        family = 0
        i = 0
        while i < len(children):
            family += 1
            size = 1 if rng.random() < 0.8 else 2
            head = children[i]
            declared_here = rng.random() < 0.9
            older: tuple[str, ...] = ()
            if rng.random() < 0.25:
                born = date(head.birth_date.year - rng.randint(1, 3), rng.randint(1, 12), 15)
                code = self._unique(born, rng)
                inst = rng.choice(self.institutions)
                group = rng.choice(inst.groups)
                self.enrolments[code] = Enrolment(code, born, inst.institution_id, group.code)
                older = (code,)
            if rng.random() < 0.05:
                inst = rng.choice(self.institutions)
                staff.extend(
                    StaffMember(g.personal_code, inst.institution_id) for g in head.guardians[:1]
                )
            for j in range(i, min(i + size, len(children))):
                child = children[j]
                if j > i:  # a younger or older sibling in the same queue
                    child = replace(child, guardians=head.guardians, address_code=head.address_code)
                child = replace(
                    child,
                    family=family,
                    sibling_codes=older,
                    declared_here=declared_here,
                    large_family=child.large_family or (size > 1 and bool(older)),
                )
                if rng.random() < 0.04:  # already attends, and asks for a better place
                    inst = rng.choice(self.institutions)
                    self.enrolments[child.personal_code] = Enrolment(
                        child.personal_code,
                        child.birth_date,
                        inst.institution_id,
                        rng.choice(inst.groups).code,
                    )
                children[j] = child
            i += size
        self.children = tuple(children)
        self.staff = tuple(staff)

    def _addresses(self) -> list[Address]:
        """Every address the municipality's people and institutions use, from its code."""
        outside = {c.address_code for c in self.children if not c.declared_here}
        codes = sorted(
            {i.address_code for i in self.institutions} | {c.address_code for c in self.children}
        )
        return [self.address(code, here=code not in outside) for code in codes]

    def address(self, code: str, *, here: bool = True) -> Address:
        """The address with this code (deterministic: the code seeds its details)."""
        rng = random.Random(f"{self.code}:{self.seed}:address:{code}")
        n_from, n_to, e_from, e_to = self.box
        if not here:  # a neighbouring municipality: just east of the box
            e_from, e_to = e_to + 2_000, e_to + 12_000
        own, neighbour = TERRITORIES.get(self.code, TERRITORIES["riga"])
        return Address(
            code=code,
            street=rng.choice(_STREETS),
            house=str(rng.randint(1, 140)),
            town=_TOWNS.get(self.code, self.code.capitalize()) if here else self.neighbour[1],
            postcode=f"LV-{rng.randint(*_POSTCODES.get(self.code, (2000, 5799)))}",
            territory_code=own if here else neighbour,
            northing=round(rng.uniform(n_from, n_to), 2),
            easting=round(rng.uniform(e_from, e_to), 2),
            in_municipality=here,
        )

    @property
    def name(self) -> str:
        return _GENITIVE.get(self.code, self.code.capitalize())

    def _address_code(self, rng: random.Random) -> str:
        """Nine digits whose first three are a type code 101–199."""
        n = rng.randrange(10**8)
        code = f"1{n % 99 + 1:02d}{n // 99 % 10**6:06d}"
        return "108000002" if code == RESERVED_ADDRESS else code

    def _unique(self, born: date, rng: random.Random, *, old: bool = False) -> str:
        """A personal code nobody else in the municipality has (drawn again on a clash)."""
        while True:
            code = old_format_code(born, rng) if old else personal_code_for(born, rng)
            if code not in self._issued:
                self._issued.add(code)
                return code

    def _institution(self, number: int, rng: random.Random) -> Institution:
        groups = []
        for age in range(1, 7):  # programme starting ages 1..6 years
            birth_year = self.admission_year - age
            for language, share in LANGUAGES:
                if language != "lv" and rng.random() > share * 3:
                    continue
                groups.append(
                    Group(
                        code=f"{birth_year}-{language}",
                        language=language,
                        min_age_months=18 if age == 1 else 12 * age,
                        birth_year=birth_year,
                        capacity=rng.choice((8, 10, 12, 15, 20)),
                    )
                )
        return Institution(
            institution_id=f"PII-{number:03d}",
            name=f"{self.name} {number}. pirmsskolas izglītības iestāde",
            address_code=self._address_code(rng),
            groups=tuple(groups),
        )

    def _child(self, number: int, rng: random.Random, max_choices: int) -> Child:
        born = date(self.admission_year - rng.randint(1, 6), 1, 1) + timedelta(
            days=rng.randrange(365)
        )
        language = rng.choices([lang for lang, _ in LANGUAGES], [w for _, w in LANGUAGES])[0]
        choices = rng.sample(
            [i.institution_id for i in self.institutions],
            k=min(max_choices, len(self.institutions)),
        )
        guardians = tuple(
            Guardian(
                personal_code=self._unique(
                    date(born.year - rng.randint(22, 42), rng.randint(1, 12), rng.randint(1, 28)),
                    rng,
                    old=True,
                ),
                email=f"parent{number}-{g}@example.lv" if rng.random() < 0.9 else None,
                phone=f"+3712{rng.randrange(10**7):07d}" if rng.random() < 0.8 else None,
            )
            for g in range(rng.choice((1, 2, 2)))
        )
        registered = min(
            datetime(born.year, born.month, 1, tzinfo=UTC)
            + timedelta(days=rng.randrange(60, 400), seconds=rng.randrange(86_400)),
            datetime(self.admission_year, 3, 1, tzinfo=UTC),
        )
        start_year = max(self.admission_year, born.year + 2)
        return Child(
            ref=f"CH-{rng.getrandbits(48):012x}",
            application_id=f"APP-{self.admission_year}-{number:06d}",
            personal_code=self._unique(born, rng),
            birth_date=born,
            guardians=guardians,
            address_code=self._address_code(rng),
            language=language,
            choices=tuple(choices),
            desired_start_date=date(start_year, 9, 1),
            registered_at=registered,
            accepts_any_institution=rng.random() < 0.4,
            large_family=rng.random() < 0.12,
        )
