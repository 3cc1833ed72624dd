"""The allocation engine: criteria on hand-made cases, then properties on random rounds."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.allocation.criteria import is_of_mandatory_age
from hub.allocation.engine import Allocator, EngineError, PoolRef, lottery_number
from hub.allocation.model import Child, Facts, HeldPlace, Instance, Institution, Rules, SeatPool
from hub.allocation.rules import load_rules
from tests.allocation_oracle import (
    ROUND_DATE,
    RULES,
    blocking_pairs,
    capacities,
    instances,
    preferences,
    rank,
    stable_matchings,
)

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def inst(
    iid: str, seats: int = 1, *, lang: str = "lv", location=None, groups=("g",)
) -> Institution:
    return Institution(iid, tuple(SeatPool(iid, g, lang, seats) for g in groups), location=location)


def kid(cid: str, *listed: str, minutes: int = 0, **fields) -> Child:
    """A child registered ``minutes`` after T0, listing ``listed``, due at the round date."""
    return Child(
        child_id=cid,
        language=fields.pop("language", "lv"),
        desired_start_date=fields.pop("desired_start_date", ROUND_DATE),
        institutions=listed,
        registered_at=T0 + timedelta(minutes=minutes),
        **fields,
    )


def seats(instance: Instance, rules: Rules = RULES, on: date = ROUND_DATE) -> dict[str, str]:
    return {
        cid: ref.institution_id for cid, ref in Allocator(instance, rules, on).matching().items()
    }


# --------------------------------------------------------------------------- criteria


def test_mandatory_age_starts_in_the_calendar_year_the_child_turns_five() -> None:
    riga = load_rules("riga")
    on = date(2026, 1, 5)
    assert is_of_mandatory_age(date(2021, 12, 31), on, riga)  # turns 5 in 2026
    assert not is_of_mandatory_age(date(2022, 1, 1), on, riga)  # turns 5 in 2027
    by_birthday = replace(riga, mandatory_age_rule="birthday")
    assert not is_of_mandatory_age(date(2021, 12, 31), date(2026, 6, 1), by_birthday)
    assert is_of_mandatory_age(date(2021, 6, 1), date(2026, 6, 1), by_birthday)


def test_mandatory_age_outranks_an_earlier_registration() -> None:
    rules = replace(RULES, criteria=("mandatory_age",))
    older = kid("OLD", "A", minutes=10, birth_date=date(2021, 11, 30))
    younger = kid("YOUNG", "A", minutes=0, birth_date=date(2023, 2, 1))
    assert seats(Instance((inst("A"),), (older, younger)), rules) == {"OLD": "A"}


def test_sibling_priority_holds_only_at_the_institution_the_sibling_attends() -> None:
    rules = replace(RULES, criteria=("sibling",))
    with_sibling = kid("SIB", "A", "B", minutes=30, facts=Facts(siblings_at=frozenset({"B"})))
    early = kid("EARLY", "A", "B", minutes=0)
    # At A the sibling counts for nothing and the earlier registration wins;
    # at B the sibling wins over it.
    assert seats(Instance((inst("A"), inst("B")), (with_sibling, early)), rules) == {
        "EARLY": "A",
        "SIB": "B",
    }
    both_want_b = (
        kid("SIB", "B", minutes=30, facts=Facts(siblings_at=frozenset({"B"}))),
        kid("EARLY", "B"),
    )
    assert seats(Instance((inst("B"),), both_want_b), rules) == {"SIB": "B"}


def test_staff_child_priority_is_institution_specific_too() -> None:
    rules = replace(RULES, criteria=("staff_child",))
    staff = kid("STAFF", "A", minutes=5, facts=Facts(staff_parent_at=frozenset({"A"})))
    other = kid("OTHER", "A", minutes=0, facts=Facts(staff_parent_at=frozenset({"B"})))
    assert seats(Instance((inst("A"), inst("B")), (staff, other)), rules) == {"STAFF": "A"}


def test_registration_time_breaks_ties_inside_a_priority_group() -> None:
    rules = replace(RULES, criteria=("child_resident",))
    resident = Facts(child_resident=True)
    children = (
        kid("LATE", "A", minutes=2, facts=resident),
        kid("FIRST", "A", minutes=1, facts=resident),
        kid("NOT-RESIDENT", "A", minutes=0),
    )
    assert seats(Instance((inst("A"),), children), rules) == {"FIRST": "A"}


def test_the_seeded_lottery_breaks_ties_of_registration_time() -> None:
    twins = (kid("X-1", "A"), kid("X-2", "A"))
    instance = Instance((inst("A"),), twins)
    by_seed = {}
    for seed in range(12):
        rules = replace(RULES, lottery_seed=seed)
        winner = next(iter(seats(instance, rules)))
        expected = min(twins, key=lambda c: lottery_number(seed, c.child_id)).child_id
        assert winner == expected
        by_seed[seed] = winner
    assert len(set(by_seed.values())) == 2, "the seed must matter"
    assert seats(instance, replace(RULES, lottery_seed=3)) == seats(
        instance, replace(RULES, lottery_seed=3)
    )


def test_lottery_numbers_do_not_depend_on_the_other_children() -> None:
    assert lottery_number(5, "C-1") == lottery_number(5, "C-1")
    assert lottery_number(5, "C-1") != lottery_number(6, "C-1")
    assert 0 <= lottery_number(5, "C-1") < 2**64


def test_liepaja_orders_its_groups_as_its_regulations_do() -> None:
    liepaja = load_rules("liepaja")
    assert liepaja.criteria[:4] == (
        "without_parental_care",
        "official_entitled_by_law",
        "staff_child",
        "sibling",
    )
    children = (
        kid("SIBLING", "A", minutes=0, facts=Facts(siblings_at=frozenset({"A"}))),
        kid("STAFF", "A", minutes=1, facts=Facts(staff_parent_at=frozenset({"A"}))),
        kid(
            "OFFICIAL",
            "A",
            minutes=2,
            facts=Facts(commission_grounds=frozenset({"official_entitled_by_law"})),
        ),
        kid(
            "NO-CARE",
            "A",
            minutes=3,
            facts=Facts(commission_grounds=frozenset({"without_parental_care"})),
        ),
    )
    order = []
    remaining = list(children)
    while remaining:
        [winner] = seats(Instance((inst("A"),), tuple(remaining)), liepaja)
        order.append(winner)
        remaining = [c for c in remaining if c.child_id != winner]
    assert order == ["NO-CARE", "OFFICIAL", "STAFF", "SIBLING"]


# --------------------------------------------------------------------------- mechanism


def test_eligibility_by_age_group_language_and_start_date() -> None:
    groups = Institution(
        "A",
        (
            SeatPool("A", "2022-lv", "lv", 5, birth_year_from=2022, birth_year_to=2022),
            SeatPool("A", "toddlers", "lv", 5, min_age_months=18),
        ),
    )
    children = (
        kid("FITS", "A", birth_date=date(2022, 5, 1)),
        kid("RU", "A", language="ru", birth_date=date(2022, 5, 1)),
        kid(
            "LATER",
            "A",
            birth_date=date(2022, 5, 1),
            desired_start_date=ROUND_DATE + timedelta(days=1),
        ),
        kid("BABY", "A", birth_date=date(2025, 6, 1)),  # 15 months old at the round date
        kid("TODDLER", "A", birth_date=date(2025, 2, 1)),  # 19 months: the toddler group
    )
    allocator = Allocator(Instance((groups,), children), RULES, ROUND_DATE)
    assert allocator.matching() == {
        "FITS": PoolRef("A", "2022-lv"),
        "TODDLER": PoolRef("A", "toddlers"),
    }
    assert allocator.placement("RU").reason == "no_fitting_group"
    assert allocator.placement("LATER").reason == "not_yet_due"
    assert allocator.placement("BABY").reason == "no_fitting_group"
    assert allocator.explain("RU")[0].reason == "no_fitting_group"


def test_invalid_applications_are_set_aside_with_the_reason() -> None:
    rules = replace(RULES, max_institutions=2)
    children = (
        kid("MANY", "A", "B", "C"),
        kid("UNKNOWN", "A", "Z"),
        kid("TWICE", "A", "A"),
        kid("GOOD", "A"),
        kid("BAD-HELD", "A", held=HeldPlace("A", "nope")),
    )
    allocator = Allocator(Instance((inst("A"), inst("B"), inst("C")), children), rules, ROUND_DATE)
    assert allocator.placement("MANY").reason == "invalid: 3 institutions listed, at most 2 allowed"
    assert allocator.placement("UNKNOWN").reason == "invalid: unknown institution Z"
    assert allocator.placement("TWICE").reason == "invalid: an institution is listed twice"
    assert allocator.placement("BAD-HELD").reason == "invalid: unknown held place A/nope"
    assert allocator.matching() == {"GOOD": PoolRef("A", "g")}


def test_structural_problems_are_errors() -> None:
    with pytest.raises(EngineError, match="child C appears twice"):
        Allocator(Instance((inst("A"),), (kid("C", "A"), kid("C", "A"))), RULES, ROUND_DATE)
    with pytest.raises(EngineError, match="group g of A appears twice"):
        Allocator(Instance((inst("A", groups=("g", "g")),), ()), RULES, ROUND_DATE)
    with pytest.raises(EngineError, match="unknown criteria"):
        Allocator(Instance((), ()), replace(RULES, criteria=("siblings",)), ROUND_DATE)


def test_a_held_place_is_kept_while_waiting_for_a_preferred_one() -> None:
    children = (
        kid("HOLDER", "A", "B", minutes=50, held=HeldPlace("C", "g")),
        kid("FIRST", "A", minutes=0),
    )
    allocator = Allocator(
        Instance((inst("A"), inst("B", seats=0), inst("C", seats=0)), children), RULES, ROUND_DATE
    )
    placement = allocator.placement("HOLDER")
    assert (placement.pool, placement.kind) == (PoolRef("C", "g"), "held")
    assert [w.institution_id for w in allocator.explain("HOLDER")] == ["A", "B"]
    # When A frees up, the holder moves up; its old seat opens only once it accepts.
    moves = allocator.withdraw("FIRST")
    assert [(m.child_id, m.after) for m in moves] == [
        ("FIRST", None),
        ("HOLDER", PoolRef("A", "g")),
    ]
    assert allocator.accept("HOLDER") == []
    assert allocator.instance.institutions[2].pools[0].capacity == 1  # C's seat released


def test_institutions_listed_below_a_held_place_are_not_wanted() -> None:
    child = kid("H", "A", "C", "B", held=HeldPlace("C", "g"))
    allocator = Allocator(
        Instance((inst("A", seats=0), inst("B"), inst("C", seats=0)), (child,)), RULES, ROUND_DATE
    )
    assert allocator.placement("H").kind == "held"
    assert allocator.matching() == {}


def test_any_institution_takes_the_nearest_free_seat_behind_those_who_listed_it() -> None:
    near = inst("NEAR", location=(310_000.0, 500_000.0))
    far = inst("FAR", location=(320_000.0, 510_000.0))
    full = inst("LISTED", seats=0)
    anywhere = kid("ANY", "LISTED", minutes=0, accepts_any=True, location=(310_100.0, 500_100.0))
    lister = kid("LISTER", "NEAR", minutes=60)
    allocator = Allocator(Instance((near, far, full), (anywhere, lister)), RULES, ROUND_DATE)
    # NEAR's only seat goes to the later child who listed it; ANY gets the next nearest.
    assert allocator.matching() == {"LISTER": PoolRef("NEAR", "g"), "ANY": PoolRef("FAR", "g")}
    placement = allocator.placement("ANY")
    assert (placement.kind, placement.preference_rank) == ("any", None)
    alone = Allocator(Instance((near, far, full), (anywhere,)), RULES, ROUND_DATE)
    assert alone.matching() == {"ANY": PoolRef("NEAR", "g")}


def test_explanation_compares_the_last_admitted_with_the_child() -> None:
    rules = replace(RULES, criteria=("sibling", "child_resident"))
    children = (
        kid("WINNER", "A", minutes=9, facts=Facts(siblings_at=frozenset({"A"}))),
        kid("LOSER", "A", "B", minutes=0, facts=Facts(child_resident=True)),
    )
    allocator = Allocator(Instance((inst("A"), inst("B")), children), rules, ROUND_DATE)
    assert allocator.placement("LOSER").pool == PoolRef("B", "g")
    [why] = allocator.explain("LOSER")
    assert (why.institution_id, why.reason) == ("A", "outranked")
    last, own = allocator.decode(why.last_admitted), allocator.decode(why.own)
    assert last.criteria == (("sibling", True), ("child_resident", False))
    assert own.criteria == (("sibling", False), ("child_resident", True))
    assert (last.registered_at, own.registered_at) == (T0 + timedelta(minutes=9), T0)
    assert own.lottery == lottery_number(rules.lottery_seed, "LOSER")
    assert why.last_admitted < why.own


def test_queue_positions_count_only_children_still_waiting() -> None:
    children = tuple(kid(f"C{n}", "A", "B", minutes=n) for n in range(5))
    allocator = Allocator(
        Instance((inst("A", seats=2), inst("B", seats=1)), children), RULES, ROUND_DATE
    )
    assert allocator.matching() == {
        "C0": PoolRef("A", "g"),
        "C1": PoolRef("A", "g"),
        "C2": PoolRef("B", "g"),
    }
    assert [(q.institution_id, q.position, q.waiting) for q in allocator.queue("C2")] == [
        ("A", 1, 3)
    ]
    assert [(q.institution_id, q.position, q.waiting) for q in allocator.queue("C4")] == [
        ("A", 3, 3),
        ("B", 2, 2),
    ]
    report = allocator.report()
    assert report["C4"].queue == allocator.queue("C4")
    assert report["C4"].why_not == allocator.explain("C4")
    assert report["C0"].placement == allocator.placement("C0")


def test_a_freed_seat_can_need_an_improvement_cycle() -> None:
    """Removing C leaves a vacancy chain that stops at a stable but not child-optimal
    matching (B at X, A at Y); the improvement cycle swaps them, as a full round would."""
    rules = replace(RULES, criteria=("staff_child", "sibling"))
    children = (
        kid("A", "X", "Y", facts=Facts(staff_parent_at=frozenset({"Y"}))),
        kid("B", "Y", "X", facts=Facts(siblings_at=frozenset({"X"}))),
        kid("C", "X", facts=Facts(staff_parent_at=frozenset({"X"}), siblings_at=frozenset({"Y"}))),
    )
    allocator = Allocator(Instance((inst("X"), inst("Y")), children), rules, ROUND_DATE)
    assert allocator.matching() == {"C": PoolRef("X", "g"), "A": PoolRef("Y", "g")}
    moves = allocator.withdraw("C")
    assert allocator.matching() == {"A": PoolRef("X", "g"), "B": PoolRef("Y", "g")}
    assert [(m.child_id, m.before, m.after) for m in moves] == [
        ("A", PoolRef("Y", "g"), PoolRef("X", "g")),
        ("B", None, PoolRef("Y", "g")),
        ("C", PoolRef("X", "g"), None),
    ]
    assert allocator.matching() == Allocator(allocator.instance, rules, ROUND_DATE).matching()


def test_declining_removes_the_institution_and_the_child_moves_down() -> None:
    children = (kid("K", "A", "B"), kid("L", "B", minutes=5))
    allocator = Allocator(Instance((inst("A"), inst("B")), children), RULES, ROUND_DATE)
    moves = allocator.decline("K")
    # K takes B (registered earlier than L), so L's offer there is revoked.
    assert [(m.child_id, m.after) for m in moves] == [("K", PoolRef("B", "g")), ("L", None)]
    [changed] = [c for c in allocator.instance.children if c.child_id == "K"]
    assert (changed.institutions, changed.declined) == (("B",), frozenset({"A"}))
    with pytest.raises(EngineError, match="no offered seat"):
        allocator.decline("L")


def test_expiry_follows_the_rules() -> None:
    instance = Instance((inst("A"), inst("B")), (kid("K", "A", "B"),))
    annul = Allocator(instance, replace(RULES, on_expiry="annul"), ROUND_DATE)
    annul.expire("K")
    assert annul.children() == []
    decline = Allocator(instance, replace(RULES, on_expiry="decline"), ROUND_DATE)
    decline.expire("K")
    assert decline.matching() == {"K": PoolRef("B", "g")}


def test_changed_facts_reorder_the_queue_but_take_no_seat() -> None:
    rules = replace(RULES, criteria=("sibling",))
    children = (kid("FIRST", "A", minutes=0), kid("SECOND", "A", minutes=1))
    allocator = Allocator(Instance((inst("A"),), children), rules, ROUND_DATE)
    assert allocator.queue("SECOND")[0].position == 1
    allocator.update_facts("SECOND", Facts(siblings_at=frozenset({"A"})))
    assert allocator.matching() == {"FIRST": PoolRef("A", "g")}  # no offer is revoked
    allocator.change_capacity("A", "g", 1)
    assert allocator.matching() == {"FIRST": PoolRef("A", "g"), "SECOND": PoolRef("A", "g")}
    allocator.withdraw("FIRST")
    allocator.change_capacity("A", "g", -1)
    assert allocator.matching() == {"SECOND": PoolRef("A", "g")}


def test_event_errors_name_the_problem() -> None:
    allocator = Allocator(Instance((inst("A"),), (kid("K", "A"),)), RULES, ROUND_DATE)
    with pytest.raises(EngineError, match="no child NOPE"):
        allocator.withdraw("NOPE")
    with pytest.raises(EngineError, match="no group x at institution A"):
        allocator.change_capacity("A", "x", 1)
    with pytest.raises(EngineError, match="below zero"):
        allocator.change_capacity("A", "g", -2)
    with pytest.raises(EngineError, match="already in the queue"):
        allocator.add_child(kid("K", "A"))


# --------------------------------------------------------------------------- properties

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(instances())
def test_capacities_fit_and_preferences_are_respected(instance: Instance) -> None:
    matching = Allocator(instance, RULES, ROUND_DATE).matching()
    seats_of = capacities(instance)
    for ref in set(matching.values()):
        assert list(matching.values()).count(ref) <= seats_of[ref]
    children = {c.child_id: c for c in instance.children}
    for cid, ref in matching.items():  # individual rationality: only seats the child would take
        assert ref in preferences(children[cid], instance, RULES, ROUND_DATE)


@PROPERTY
@given(instances())
def test_no_justified_envy_and_no_wasted_seat(instance: Instance) -> None:
    assert blocking_pairs(instance, Allocator(instance, RULES, ROUND_DATE).matching()) == []


@PROPERTY
@given(instances())
def test_held_places_are_never_lost(instance: Instance) -> None:
    allocator = Allocator(instance, RULES, ROUND_DATE)
    for child in instance.children:
        placement = allocator.placement(child.child_id)
        if child.held and placement.reason is None:
            assert placement.kind in ("held", "listed")
            if placement.kind == "listed":  # only ever for an institution listed above it
                assert child.held.institution_id not in child.institutions or (
                    child.institutions.index(placement.pool.institution_id)
                    < child.institutions.index(child.held.institution_id)
                )


@PROPERTY
@given(instances(), st.randoms(use_true_random=False))
def test_deterministic_whatever_the_order_of_the_input(
    instance: Instance, rnd: random.Random
) -> None:
    first = Allocator(instance, RULES, ROUND_DATE)
    shuffled = list(instance.children)
    rnd.shuffle(shuffled)
    second = Allocator(Instance(instance.institutions[::-1], tuple(shuffled)), RULES, ROUND_DATE)
    assert first.matching() == second.matching()
    assert first.report() == second.report()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(max_children=5, max_institutions=3))
def test_equals_the_child_optimal_stable_matching_found_by_brute_force(instance: Instance) -> None:
    engine = Allocator(instance, RULES, ROUND_DATE).matching()
    stable = list(stable_matchings(instance))
    assert engine in stable
    children = instance.children
    for other in stable:  # every child likes the engine's matching at least as well
        for child in children:
            assert rank(child, engine.get(child.child_id), instance) <= rank(
                child, other.get(child.child_id), instance
            )


@PROPERTY
@given(instances(max_children=8), st.data())
def test_no_child_gains_by_reordering_or_shortening_its_list(
    instance: Instance, data: st.DataObject
) -> None:
    candidates = [c for c in instance.children if len(c.institutions) >= 1]
    if not candidates:
        return
    child = data.draw(st.sampled_from(candidates))
    truthful = Allocator(instance, RULES, ROUND_DATE).matching().get(child.child_id)
    order = data.draw(st.permutations(child.institutions))
    keep = data.draw(st.integers(1, len(order)))
    lie = replace(child, institutions=tuple(order[:keep]))
    others = tuple(lie if c.child_id == child.child_id else c for c in instance.children)
    lied = (
        Allocator(Instance(instance.institutions, others), RULES, ROUND_DATE)
        .matching()
        .get(child.child_id)
    )
    assert rank(child, lied, instance) >= rank(child, truthful, instance)


_EVENTS = st.sampled_from(["withdraw", "decline", "expire", "accept", "more", "fewer", "add"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(), st.lists(st.tuples(_EVENTS, st.integers(0, 10**6)), max_size=8), st.booleans())
def test_incremental_events_equal_a_full_recomputation(
    instance: Instance, events: list[tuple[str, int]], annul: bool
) -> None:
    rules = replace(RULES, on_expiry="annul" if annul else "decline")
    allocator = Allocator(instance, rules, ROUND_DATE)
    groups = [(i.institution_id, p.group) for i in instance.institutions for p in i.pools]
    for step, (kind, pick) in enumerate(events):
        placed = sorted(allocator.matching())
        children = sorted(allocator.children())
        try:
            if kind in ("decline", "expire", "accept") and placed:
                getattr(allocator, kind)(placed[pick % len(placed)])
            elif kind == "withdraw" and children:
                allocator.withdraw(children[pick % len(children)])
            elif kind in ("more", "fewer"):
                allocator.change_capacity(*groups[pick % len(groups)], 1 if kind == "more" else -1)
            elif kind == "add":
                template = (
                    instance.children[pick % len(instance.children)] if instance.children else None
                )
                if template is None:
                    continue
                allocator.add_child(
                    replace(
                        template,
                        child_id=f"NEW{step}",
                        registered_at=T0 + timedelta(minutes=pick % 7),
                    )
                )
        except EngineError:
            continue  # e.g. fewer seats than none: refused, state unchanged
        recomputed = Allocator(allocator.instance, rules, ROUND_DATE)
        assert allocator.matching() == recomputed.matching(), f"after {kind} (step {step})"
        for cid in allocator.children():
            assert allocator.placement(cid) == recomputed.placement(cid)


def test_moves_report_exactly_the_changed_seats() -> None:
    rnd = random.Random(4)
    institutions = tuple(inst(f"I{n}", seats=2) for n in range(4))
    children = tuple(
        kid(
            f"C{n:02d}",
            *rnd.sample([i.institution_id for i in institutions], 2),
            minutes=rnd.randrange(50),
        )
        for n in range(14)
    )
    allocator = Allocator(Instance(institutions, children), RULES, ROUND_DATE)
    for _ in range(10):
        before = allocator.matching()
        placed = sorted(before)
        moves = allocator.decline(placed[rnd.randrange(len(placed))])
        after = allocator.matching()
        changed = {cid for cid in set(before) | set(after) if before.get(cid) != after.get(cid)}
        assert {m.child_id for m in moves} == changed
        for move in moves:
            assert (move.before, move.after) == (
                before.get(move.child_id),
                after.get(move.child_id),
            )


@PROPERTY
@given(instances())
def test_the_quick_explanation_path_says_what_the_general_one_says(instance: Instance) -> None:
    allocator = Allocator(instance, RULES, ROUND_DATE)
    quick = {cid: allocator.explain(cid) for cid in allocator.children()}
    allocator._one_each = [False] * len(allocator._one_each)  # force the general path
    assert {cid: allocator.explain(cid) for cid in allocator.children()} == quick
