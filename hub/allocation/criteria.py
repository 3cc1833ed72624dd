"""The priority criteria a municipality's rules may list, in the order it chooses.

A criterion is either about the child (the same at every institution) or
institution-specific (sibling, staff child): the latter makes the admission
list a many-to-many problem, which is why the engine runs deferred
acceptance over seat pools rather than sorting one queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from operator import attrgetter
from typing import Literal

from hub.allocation.model import Child, Rules


@dataclass(frozen=True, slots=True)
class Criterion:
    name: str
    scope: Literal["child", "institution"]
    description: str


def _ground(name: str, what: str) -> Criterion:
    return Criterion(name, "child", f"Out-of-turn ground confirmed by the commission: {what}.")


CRITERIA: dict[str, Criterion] = {
    c.name: c
    for c in (
        Criterion(
            "commission",
            "child",
            "Any out-of-turn (commission) ground confirmed for the child.",
        ),
        _ground("without_parental_care", "the child is left without parental care"),
        _ground("official_entitled_by_law", "a parent is an official entitled to it by law"),
        _ground("parent_preschool_teacher", "a parent is a pre-school teacher or assistant"),
        _ground("parent_professional_soldier", "a parent is a professional soldier"),
        _ground("adopted", "the child is adopted"),
        _ground("parent_with_disability", "a parent has a disability"),
        _ground("triplets_or_more", "the child is one of triplets or more"),
        Criterion(
            "mandatory_age",
            "child",
            "The child is of mandatory pre-school age at the round date (by default: in the"
            " calendar year the child turns 5, i.e. birth year + 5 ≤ round year).",
        ),
        Criterion(
            "child_resident",
            "child",
            "The child's declared residence is in the municipality.",
        ),
        Criterion(
            "parent_resident",
            "child",
            "At least one parent's declared residence is in the municipality.",
        ),
        Criterion(
            "large_family",
            "child",
            "Large family: three or more children under 18 in the family's care.",
        ),
        Criterion(
            "sibling",
            "institution",
            "A brother or sister attends this institution (per VIIS).",
        ),
        Criterion(
            "staff_child",
            "institution",
            "A parent works at this institution.",
        ),
    )
}

COMMISSION_GROUNDS = frozenset(
    name for name, c in CRITERIA.items() if c.description.startswith("Out-of-turn ground")
)


def is_of_mandatory_age(birth_date: date | None, round_date: date, rules: Rules) -> bool:
    """The mandatory-age criterion, by the municipality's rule.

    ``calendar_year``: from the calendar year the child turns ``rules.mandatory_age``
    (birth year + age ≤ round year). ``birthday``: from the birthday itself.
    """
    if birth_date is None:
        return False
    if rules.mandatory_age_rule == "calendar_year":
        return birth_date.year + rules.mandatory_age <= round_date.year
    years = round_date.year - birth_date.year
    if (round_date.month, round_date.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years >= rules.mandatory_age


def child_test(name: str, round_date: date, rules: Rules) -> Callable[[Child], object]:
    """The test of a child-scope criterion, as a function of the child (truthy: it holds)."""

    def mandatory(child: Child) -> bool:
        flag = child.facts.mandatory_age
        if flag is not None:
            return flag
        return is_of_mandatory_age(child.birth_date, round_date, rules)

    if name == "commission":
        return attrgetter("facts.commission_grounds")  # truthy when any ground holds
    if name in COMMISSION_GROUNDS:
        return lambda child: name in child.facts.commission_grounds
    if name == "mandatory_age":
        return mandatory
    if name in ("child_resident", "parent_resident", "large_family"):
        return attrgetter(f"facts.{name}")
    raise KeyError(f"{name!r} is not a child-scope criterion")


def institutions_test(name: str) -> Callable[[Child], frozenset[str]]:
    """The institutions where an institution-scope criterion holds, as a function of the child."""
    if name == "sibling":
        return attrgetter("facts.siblings_at")
    if name == "staff_child":
        return attrgetter("facts.staff_parent_at")
    raise KeyError(f"{name!r} is not an institution-scope criterion")


def holds(name: str, child: Child, round_date: date, rules: Rules, institution_id: str) -> bool:
    """Whether criterion ``name`` holds for ``child`` at ``institution_id`` on ``round_date``."""
    if CRITERIA[name].scope == "institution":
        return institution_id in institutions_test(name)(child)
    return bool(child_test(name, round_date, rules)(child))
