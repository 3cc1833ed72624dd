"""Composite priorities: reading them from a rules file, and the engine ranking by them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from hub.allocation.criteria import (
    CRITERIA,
    Composite,
    child_test,
    criterion_tests,
    holds,
    scope,
    unknown_criteria,
)
from hub.allocation.engine import Allocator, EngineError
from hub.allocation.model import Child, Facts, Instance, Institution, Rules, SeatPool
from hub.allocation.rules import RulesError, load_rules, parse_rules

ROUND = date(2026, 5, 4)
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
RULES = Rules(
    municipality="ogre", criteria=("child_resident",), max_institutions=3,
    offer_deadline_days=15, lottery_seed=1,
)  # fmt: skip
BOTH = Composite("child_and_parent_resident", "all_of", ("child_resident", "parent_resident"))

# Line numbers matter: the error cases below edit single lines of this file.
VALID = """\
municipality = "ogre"
max_institutions = 3
offer_deadline_days = 15
lottery_seed = 7
priorities = [
    "commission",  # a comment may name "sibling" or open a {
    { name = "child_and_parent_resident", all_of = ["child_resident", "parent_resident"] },
    "child_resident",
    { name = "sibling_or_staff", any_of = ["sibling", "staff_child"] }, "large_family",
]
"""
TABLE = '{ name = "child_and_parent_resident", all_of = ["child_resident", "parent_resident"] },'


def test_a_file_with_composites() -> None:
    rules = parse_rules(VALID)
    assert rules.criteria == (
        "commission",
        "child_and_parent_resident",
        "child_resident",
        "sibling_or_staff",
        "large_family",
    )
    assert rules.composites == (
        BOTH,
        Composite("sibling_or_staff", "any_of", ("sibling", "staff_child")),
    )
    assert unknown_criteria(rules) == []
    assert (scope("child_and_parent_resident", rules), scope("sibling_or_staff", rules)) == (
        "child",
        "institution",
    )


@pytest.mark.parametrize(
    ("replacement", "expected_line", "message"),
    [
        (
            TABLE.replace('"parent_resident"]', '"parent_residant"]'),
            7,
            "unknown criterion 'parent_residant' in composite 'child_and_parent_resident';"
            " known criteria: adopted,",
        ),
        (
            TABLE.replace('name = "child_and_parent_resident", ', ""),
            7,
            'a composite in priorities needs a name: { name = "...", all_of = [...] }',
        ),
        (
            TABLE.replace('"child_and_parent_resident"', '"Both"'),
            7,
            "a composite's name must be a lower-case name matching ^[a-z][a-z0-9_]{1,47}$,"
            " got 'Both'",
        ),
        (
            TABLE.replace('"child_and_parent_resident"', "5"),
            7,
            "a composite's name must be a lower-case name matching",
        ),
        (
            TABLE.replace('"child_and_parent_resident"', '"sibling"'),
            7,
            "composite 'sibling' has the name of a criterion; give the combination a name",
        ),
        (
            TABLE.replace("all_of", "one_of"),
            7,
            "unknown key one_of in composite 'child_and_parent_resident';"
            " known keys: all_of, any_of, name",
        ),
        (
            TABLE.replace("] }", '], any_of = ["sibling", "staff_child"] }'),
            7,
            "composite 'child_and_parent_resident' needs exactly one of all_of, any_of",
        ),
        (
            TABLE.replace(', all_of = ["child_resident", "parent_resident"]', ""),
            7,
            "composite 'child_and_parent_resident' needs exactly one of all_of, any_of",
        ),
        (
            TABLE.replace('["child_resident", "parent_resident"]', '"child_resident"'),
            7,
            "composite 'child_and_parent_resident': all_of must be an array of criterion names",
        ),
        (
            TABLE.replace(', "parent_resident"', ""),
            7,
            "composite 'child_and_parent_resident': all_of must list at least two criteria,"
            " got ['child_resident']",
        ),
        (
            TABLE.replace('"parent_resident"', '"child_resident"'),
            7,
            "duplicated criterion 'child_resident' in composite 'child_and_parent_resident'",
        ),
        (
            TABLE.replace('"parent_resident"]', '"sibling_or_staff"]'),
            7,
            "composite 'child_and_parent_resident' lists the composite 'sibling_or_staff':"
            " a composite combines criteria, not other composites",
        ),
        (
            TABLE.replace('"child_and_parent_resident"', '"sibling_or_staff"'),
            9,
            "duplicated criterion 'sibling_or_staff' in priorities on line 9;"
            " first listed on line 7",
        ),
        ("5,", 7, "priorities must list criterion names or composite tables, got 5"),
    ],
)
def test_composite_errors_name_the_line_to_fix(
    replacement: str, expected_line: int, message: str
) -> None:
    assert VALID.count(TABLE) == 1
    with pytest.raises(RulesError) as error:
        parse_rules(VALID.replace(TABLE, replacement), "ogre.toml")
    assert str(error.value).startswith(f"ogre.toml:{expected_line}: ")
    assert message in str(error.value)


def test_a_name_inside_a_composite_does_not_move_the_line_of_the_name_listed_alone() -> None:
    # "child_resident" is quoted on line 7 (a part) before it is listed alone on line 8.
    twice = VALID.replace('    "child_resident",\n', '    "child_resident", "child_resident",\n')
    with pytest.raises(RulesError, match=r"^ogre\.toml:8: .*first listed on line 8$"):
        parse_rules(twice, "ogre.toml")
    unknown = VALID.replace('    "child_resident",\n', '    "child_residant",\n')
    with pytest.raises(RulesError, match=r"^ogre\.toml:8: unknown criterion 'child_residant'"):
        parse_rules(unknown, "ogre.toml")


def test_a_composite_may_not_take_the_name_of_a_later_single_criterion_twice() -> None:
    later = VALID.replace('"large_family",', '"child_and_parent_resident",')
    with pytest.raises(RulesError, match=r"^ogre\.toml:9: duplicated criterion .* line 7$"):
        parse_rules(later, "ogre.toml")


# --------------------------------------------------------------------------- evaluation


def kid(cid: str, *listed: str, minutes: int = 0, **facts: object) -> Child:
    return Child(
        child_id=cid,
        language="lv",
        desired_start_date=ROUND,
        institutions=listed,
        registered_at=T0 + timedelta(minutes=minutes),
        facts=Facts(**facts),  # type: ignore[arg-type]
    )


def inst(iid: str, seats: int = 1) -> Institution:
    return Institution(iid, (SeatPool(iid, "g", "lv", seats),))


def seats(children: tuple[Child, ...], rules: Rules, *institutions: str) -> dict[str, str]:
    instance = Instance(tuple(inst(i) for i in institutions or ("A",)), children)
    allocator = Allocator(instance, rules, ROUND)
    return {cid: ref.institution_id for cid, ref in allocator.matching().items()}


def test_child_and_parent_declared_outranks_a_parent_alone_and_a_child_alone() -> None:
    rules = replace(
        RULES, criteria=(BOTH.name, "child_resident"), composites=(BOTH,)
    )  # the order Riga's file uses
    parent_only = kid("PARENT", "A", minutes=0, parent_resident=True)
    child_only = kid("CHILD", "A", minutes=1, child_resident=True)
    both = kid("BOTH", "A", minutes=2, child_resident=True, parent_resident=True)
    assert seats((parent_only, child_only, both), rules) == {"BOTH": "A"}
    assert seats((parent_only, child_only), rules) == {"CHILD": "A"}
    allocator = Allocator(Instance((inst("A"),), (parent_only, both)), rules, ROUND)
    [why] = allocator.explain("PARENT")
    assert allocator.decode(why.own).criteria == (
        ("child_and_parent_resident", False),
        ("child_resident", False),
    )
    assert allocator.decode(why.last_admitted).criteria == (
        ("child_and_parent_resident", True),
        ("child_resident", True),
    )


def test_under_riga_s_rules_a_parent_declared_alone_gains_nothing() -> None:
    riga = load_rules("riga")
    parent_only = kid("PARENT", "A", minutes=0, parent_resident=True)
    neither = kid("NEITHER", "A", minutes=1)
    child_only = kid("CHILD", "A", minutes=2, child_resident=True)
    both = kid("BOTH", "A", minutes=3, child_resident=True, parent_resident=True)
    # The child declared with a parent first, then the child declared alone, each against
    # earlier registrations whose only status is a parent declared in Riga.
    assert seats((parent_only, neither, child_only, both), riga) == {"BOTH": "A"}
    assert seats((parent_only, neither, child_only), riga) == {"CHILD": "A"}
    # Without the child declared, the parent's declaration does not count: registration
    # time decides.
    assert seats((neither, parent_only), riga) == {"PARENT": "A"}
    assert seats(
        (replace(parent_only, registered_at=T0 + timedelta(minutes=5)), neither), riga
    ) == {"NEITHER": "A"}


def test_an_all_of_with_an_institution_part_holds_only_there() -> None:
    resident_sibling = Composite("resident_sibling", "all_of", ("sibling", "child_resident"))
    rules = replace(RULES, criteria=(resident_sibling.name,), composites=(resident_sibling,))
    assert scope(resident_sibling.name, rules) == "institution"
    at_b = frozenset({"B"})
    early = kid("EARLY", "A", "B", minutes=0)
    resident = kid("RES", "A", "B", minutes=5, siblings_at=at_b, child_resident=True)
    visitor = kid("VISIT", "B", minutes=1, siblings_at=at_b)
    # At B the resident with a sibling there wins; the sibling alone is not enough.
    assert seats((early, resident, visitor), rules, "A", "B") == {"EARLY": "A", "RES": "B"}
    assert holds(resident_sibling.name, resident, ROUND, rules, "B")
    assert not holds(resident_sibling.name, resident, ROUND, rules, "A")
    assert not holds(resident_sibling.name, visitor, ROUND, rules, "B")


def test_an_any_of_mixing_scopes_holds_everywhere_for_the_child_part() -> None:
    either = Composite("sibling_or_resident", "any_of", ("sibling", "child_resident"))
    rules = replace(RULES, criteria=(either.name,), composites=(either,))
    tests = criterion_tests(either.name, ROUND, rules)
    assert tests.child is not None and tests.institutions is not None
    resident = kid("RES", "A", minutes=5, child_resident=True)
    sibling = kid("SIB", "B", minutes=6, siblings_at=frozenset({"B"}))
    early = kid("EARLY", "A", "B", minutes=0)
    assert seats((resident, sibling, early), rules, "A", "B") == {"RES": "A", "SIB": "B"}
    assert [holds(either.name, sibling, ROUND, rules, i) for i in "AB"] == [False, True]
    assert [holds(either.name, resident, ROUND, rules, i) for i in "AB"] == [True, True]


def test_a_child_scope_composite_has_a_child_test() -> None:
    grounds = Composite("care_or_adopted", "any_of", ("without_parental_care", "adopted"))
    rules = replace(RULES, criteria=(grounds.name,), composites=(grounds,))
    test = child_test(grounds.name, ROUND, rules)
    assert test(kid("X", commission_grounds=frozenset({"adopted"})))
    assert not test(kid("Y", commission_grounds=frozenset({"triplets_or_more"})))
    with pytest.raises(KeyError):
        child_test("sibling", ROUND, rules)


def test_the_engine_refuses_rules_that_name_no_criterion() -> None:
    broken = Composite("broken", "all_of", ("child_resident", "nobody"))
    rules = replace(RULES, criteria=("broken", "missing"), composites=(broken,))
    assert unknown_criteria(rules) == ["missing", "broken.nobody"]
    with pytest.raises(EngineError, match=r"unknown criteria in rules: missing, broken\.nobody"):
        Allocator(Instance((inst("A"),), ()), rules, ROUND)


def test_every_single_criterion_is_its_own_test() -> None:
    for name, criterion in CRITERIA.items():
        tests = criterion_tests(name, ROUND, RULES)
        assert (tests.child is None) == (criterion.scope == "institution")
        assert (tests.institutions is None) == (criterion.scope == "child")
