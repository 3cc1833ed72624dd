"""The priority criteria a municipality's rules may list, in the order it chooses.

A criterion is either about the child (the same at every institution) or
institution-specific (sibling, staff child): the latter makes the admission
list a many-to-many problem, which is why the engine runs deferred
acceptance over seat pools rather than sorting one queue.

A rules file may also combine criteria into one priority, a :class:`Composite`
(``all_of`` or ``any_of`` its parts), registered on the rules
(:attr:`hub.allocation.model.Rules.composites`). Every priority, single or
combined, is evaluated through :func:`criterion_tests`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from operator import attrgetter
from typing import Literal, NamedTuple

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


class Composite(NamedTuple):
    """A priority made of criteria: it holds where all of them (``all_of``) or at least one
    of them (``any_of``) hold.

    ``parts`` are names of :data:`CRITERIA`, not of other composites. A composite with an
    institution-scope part is institution-scope itself: ``all_of`` sibling and
    child_resident holds at the sibling's institution when the child is resident;
    ``any_of`` sibling and child_resident holds everywhere for a resident child and at
    the sibling's institution for any child.
    """

    name: str
    kind: Literal["all_of", "any_of"]
    parts: tuple[str, ...]


COMPOSITE_KINDS: tuple[Literal["all_of", "any_of"], ...] = ("all_of", "any_of")


class Tests(NamedTuple):
    """How the engine evaluates one priority for a child.

    The priority holds at an institution when ``child`` holds for the child (truthy) or
    when the institution is among ``institutions`` of the child; a part left as None
    never holds.
    """

    child: Callable[[Child], object] | None
    institutions: Callable[[Child], frozenset[str]] | None


def composite(name: str, rules: Rules) -> Composite | None:
    """The composite ``name`` of ``rules``, or None when ``name`` is a single criterion."""
    for entry in rules.composites:
        if entry[0] == name:
            return Composite._make(entry)
    return None


def scope(name: str, rules: Rules) -> Literal["child", "institution"]:
    """Whether priority ``name`` of ``rules`` is the same everywhere or institution-specific."""
    found = composite(name, rules)
    if found is None:
        return CRITERIA[name].scope
    institutional = any(CRITERIA[part].scope == "institution" for part in found.parts)
    return "institution" if institutional else "child"


def unknown_criteria(rules: Rules) -> list[str]:
    """Priorities of ``rules`` that name no criterion, and composites' unknown parts."""
    composites = {entry[0]: Composite._make(entry) for entry in rules.composites}
    unknown = [name for name in rules.criteria if name not in CRITERIA and name not in composites]
    for name, found in composites.items():
        unknown += [f"{name}.{part}" for part in found.parts if part not in CRITERIA]
    return unknown


def child_test(name: str, round_date: date, rules: Rules) -> Callable[[Child], object]:
    """The test of a child-scope criterion, as a function of the child (truthy: it holds).

    ``name`` may be a child-scope composite of ``rules``.
    """

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
    if name not in CRITERIA and composite(name, rules) and scope(name, rules) == "child":
        test = criterion_tests(name, round_date, rules).child
        if test is not None:
            return test
    raise KeyError(f"{name!r} is not a child-scope criterion")


def institutions_test(name: str) -> Callable[[Child], frozenset[str]]:
    """The institutions where an institution-scope criterion holds, as a function of the child."""
    if name == "sibling":
        return attrgetter("facts.siblings_at")
    if name == "staff_child":
        return attrgetter("facts.staff_parent_at")
    raise KeyError(f"{name!r} is not an institution-scope criterion")


def criterion_tests(name: str, round_date: date, rules: Rules) -> Tests:
    """How to evaluate priority ``name`` of ``rules`` (a criterion or a composite)."""
    found = composite(name, rules)
    if found is None:
        if CRITERIA[name].scope == "institution":
            return Tests(None, institutions_test(name))
        return Tests(child_test(name, round_date, rules), None)
    on_child = tuple(
        child_test(part, round_date, rules)
        for part in found.parts
        if CRITERIA[part].scope == "child"
    )
    at = tuple(
        institutions_test(part) for part in found.parts if CRITERIA[part].scope == "institution"
    )
    if found.kind == "all_of":
        every = _every(on_child)
        if not at:
            return Tests(every, None)
        return Tests(None, _intersection(at, every))
    return Tests(_some(on_child) if on_child else None, _union(at) if at else None)


def _every(tests: tuple[Callable[[Child], object], ...]) -> Callable[[Child], bool]:
    return lambda child: all(test(child) for test in tests)


def _some(tests: tuple[Callable[[Child], object], ...]) -> Callable[[Child], bool]:
    return lambda child: any(test(child) for test in tests)


def _intersection(
    tests: tuple[Callable[[Child], frozenset[str]], ...], condition: Callable[[Child], bool]
) -> Callable[[Child], frozenset[str]]:
    """The institutions where every test holds, none unless ``condition`` holds too."""

    def where(child: Child) -> frozenset[str]:
        if not condition(child):
            return frozenset()
        found = tests[0](child)
        for test in tests[1:]:
            found &= test(child)
        return found

    return where


def _union(
    tests: tuple[Callable[[Child], frozenset[str]], ...],
) -> Callable[[Child], frozenset[str]]:
    def where(child: Child) -> frozenset[str]:
        found: frozenset[str] = frozenset()
        for test in tests:
            found |= test(child)
        return found

    return where


def holds(name: str, child: Child, round_date: date, rules: Rules, institution_id: str) -> bool:
    """Whether priority ``name`` (a criterion or a composite of ``rules``) holds for ``child``
    at ``institution_id`` on ``round_date``."""
    tests = criterion_tests(name, round_date, rules)
    if tests.child is not None and tests.child(child):
        return True
    return tests.institutions is not None and institution_id in tests.institutions(child)
