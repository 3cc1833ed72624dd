"""A synthetic municipality: institutions and children with their families, from a seed.

Deterministic: the same code, seed and sizes always give the same people,
personal codes and choices, so tests and demo runs can be reproduced.
Personal codes are valid (old format for children born before 2017-07-01,
new format after) but belong to nobody: they are drawn at random.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from schemas.values import personal_code_check_digit

NEW_FORMAT_SINCE = date(2017, 7, 1)
LANGUAGES = (("lv", 0.85), ("ru", 0.10), ("en", 0.05))
_GENITIVE = {
    "riga": "Rīgas",
    "liepaja": "Liepājas",
    "daugavpils": "Daugavpils",
    "jelgava": "Jelgavas",
}


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
        self.institutions = tuple(self._institution(i, rng) for i in range(1, institutions + 1))
        self.children = tuple(self._child(i, rng, max_choices) for i in range(1, children + 1))

    @property
    def name(self) -> str:
        return _GENITIVE.get(self.code, self.code.capitalize())

    def _address_code(self, rng: random.Random) -> str:
        return f"1{rng.randrange(10**8):08d}"

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
                personal_code=old_format_code(
                    date(born.year - rng.randint(22, 42), rng.randint(1, 12), rng.randint(1, 28)),
                    rng,
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
            personal_code=personal_code_for(born, rng),
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
