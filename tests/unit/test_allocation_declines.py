"""Declines hold across rounds, and the engine's reasons for no seat are exact.

A declined institution is never offered again: not when the child still lists
it, not through the any-institution fallback, not after any event. A child is
``outranked`` only where a group it may be offered fits it; otherwise it has
``no_fitting_group``. Both on hand-made instances through ``hub allocate``,
then on random rounds with declines, held places and any-institution children.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.allocation.engine import Allocator, EngineError, PoolRef, fits
from hub.allocation.formats import ResultFile
from hub.allocation.model import Child, Facts, HeldPlace, Instance, Institution, Rules, SeatPool
from hub.cli import main
from tests.allocation_oracle import (
    ROUND_DATE,
    RULES,
    blocking_pairs,
    instances,
    rank,
    stable_matchings,
)

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- hub allocate


def _group(group: str, year: int, capacity: int = 1) -> dict[str, Any]:
    return {
        "group": group,
        "language": "lv",
        "capacity": capacity,
        "birth_year_from": year,
        "birth_year_to": year,
    }


def _institution(iid: str, northing: float, *groups: dict[str, Any]) -> dict[str, Any]:
    return {
        "institution_id": iid,
        "location": {"northing": northing, "easting": 500_000.0},
        "groups": list(groups),
    }


def _child(child_id: str, born: str, *listed: str, minutes: int = 0, **fields: Any) -> dict:
    return {
        "child_id": child_id,
        "language": "lv",
        "desired_start_date": "2026-09-01",
        "institutions": list(listed),
        "registered_at": (T0 + timedelta(minutes=minutes)).isoformat(),
        "birth_date": born,
        **fields,
    }


def _allocate(tmp_path: Path, institutions: list[dict], children: list[dict]) -> ResultFile:
    """Run ``hub allocate`` on the instance; the result file it wrote."""
    path, out = tmp_path / "instance.json", tmp_path / "result.json"
    instance = {
        "format": "hub-allocation-instance/1",
        "institutions": institutions,
        "children": children,
    }
    path.write_text(json.dumps(instance), encoding="utf-8")
    args = [str(path), "--rules", "riga", "--date", "2026-09-01", "--out", str(out)]
    assert main(["allocate", *args]) == 0
    return ResultFile.model_validate_json(out.read_bytes())


def test_hub_allocate_never_offers_a_declined_institution(tmp_path: Path) -> None:
    result = _allocate(
        tmp_path,
        [
            _institution("A", 300_000.0, _group("2022-lv", 2022)),
            _institution("B", 310_000.0, _group("2022-lv", 2022)),
            _institution("C", 320_000.0, _group("2022-lv", 2022)),
        ],
        [
            # Still lists A, whose offer its parents declined: B, A is not explained.
            _child("LISTS", "2022-03-01", "A", "B", declined=["A"]),
            # A is the nearest free seat, but declined: the next nearest, C.
            _child(
                "ANY",
                "2022-04-01",
                minutes=1,
                accepts_any=True,
                location={"northing": 300_100.0, "easting": 500_000.0},
                declined=["A"],
            ),
            # Keeps the place it holds at A although it declined an offer there.
            _child(
                "HOLDS",
                "2022-05-01",
                "B",
                "A",
                minutes=2,
                held={"institution_id": "A", "group": "2022-lv"},
                declined=["A"],
            ),
        ],
    )
    outcomes = {c.child_id: c for c in result.children}
    lists = outcomes["LISTS"]
    assert (lists.placement.institution_id, lists.kind, lists.preference_rank) == ("B", "listed", 2)
    assert lists.why_not == ()
    any_ = outcomes["ANY"]
    assert (any_.placement.institution_id, any_.kind) == ("C", "any")
    holds = outcomes["HOLDS"]
    assert (holds.placement.institution_id, holds.kind) == ("A", "held")
    assert [(w.institution_id, w.reason) for w in holds.why_not] == [("B", "outranked")]
    assert {(g.institution_id, g.placed) for g in result.groups} == {("A", 0), ("B", 1), ("C", 1)}


def test_hub_allocate_says_no_fitting_group_only_where_none_fits(tmp_path: Path) -> None:
    result = _allocate(
        tmp_path,
        [
            _institution("A", 300_000.0, _group("2022-lv", 2022)),
            _institution("B", 310_000.0, _group("2022-lv", 2022), _group("2023-lv", 2023, 0)),
        ],
        [
            _child("FIRST", "2022-01-01", "A"),
            _child("SECOND", "2022-02-01", "B", minutes=1),
            # Born 2020: no group anywhere fits, even accepting any institution.
            _child("TOO-OLD", "2020-06-01", "A", minutes=2, accepts_any=True),
            # Only B's 2023 group fits, and B was declined: nothing it may be offered fits.
            _child("DECLINED", "2023-06-01", minutes=3, accepts_any=True, declined=["B"]),
            # B's 2023 group fits but has no seat: outranked there, A has no group for it.
            _child("NO-SEAT", "2023-06-01", "A", "B", minutes=4),
            # Fits both 2022 groups, taken by earlier registrations: outranked.
            _child("LATE", "2022-03-01", "A", minutes=5, accepts_any=True),
        ],
    )
    outcomes = {c.child_id: c for c in result.children}
    assert {cid: c.reason for cid, c in outcomes.items()} == {
        "FIRST": None,
        "SECOND": None,
        "TOO-OLD": "no_fitting_group",
        "DECLINED": "no_fitting_group",
        "NO-SEAT": "outranked",
        "LATE": "outranked",
    }
    assert [(w.institution_id, w.group, w.reason) for w in outcomes["TOO-OLD"].why_not] == [
        ("A", None, "no_fitting_group")
    ]
    assert [(w.institution_id, w.group, w.reason) for w in outcomes["NO-SEAT"].why_not] == [
        ("A", None, "no_fitting_group"),
        ("B", "2023-lv", "outranked"),
    ]
    assert [(w.institution_id, w.group, w.reason) for w in outcomes["LATE"].why_not] == [
        ("A", "2022-lv", "outranked")
    ]
    assert result.summary.unplaced_by_reason == {"no_fitting_group": 2, "outranked": 2}


# --------------------------------------------------------------------------- the engine


def _inst(iid: str, seats: int = 1) -> Institution:
    return Institution(iid, (SeatPool(iid, "g", "lv", seats),))


def _kid(cid: str, *listed: str, minutes: int = 0, **fields: Any) -> Child:
    return Child(cid, "lv", ROUND_DATE, listed, T0 + timedelta(minutes=minutes), **fields)


def test_a_declined_institution_is_not_offered_to_a_child_joining_later() -> None:
    allocator = Allocator(Instance((_inst("A"), _inst("B")), ()), RULES, ROUND_DATE)
    moves = allocator.add_child(_kid("K", "A", "B", declined=frozenset({"A"})))
    assert [(m.child_id, m.after) for m in moves] == [("K", PoolRef("B", "g"))]
    assert allocator.explain("K") == ()


def test_a_held_place_at_a_declined_institution_is_kept_and_still_ends_the_list() -> None:
    child = _kid("H", "A", "C", "B", held=HeldPlace("C", "g"), declined=frozenset({"C"}))
    allocator = Allocator(
        Instance((_inst("A", seats=0), _inst("B"), _inst("C")), (child,)), RULES, ROUND_DATE
    )
    placement = allocator.placement("H")
    assert (placement.pool, placement.kind) == (PoolRef("C", "g"), "held")
    assert allocator.matching() == {}  # not B, listed below the held place
    assert [(w.institution_id, w.reason) for w in allocator.explain("H")] == [("A", "outranked")]


# --------------------------------------------------------------------------- properties

ON = ROUND_DATE
DECLINES = instances(max_children=8, declines=True, held_one_in=3)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _listed_above_held(child: Child) -> list[str]:
    held = child.held.institution_id if child.held else None
    listed = list(child.institutions)
    return listed[: listed.index(held)] if held in listed else listed


def _offerable(child: Child, instance: Instance) -> list[PoolRef]:
    """Fitting groups the child may be offered: listed above a held place, or (any
    institution, no held place) anywhere; never at an institution it declined."""
    listed = _listed_above_held(child)
    anywhere = child.accepts_any and child.held is None
    return [
        PoolRef(inst.institution_id, pool.group)
        for inst in instance.institutions
        if inst.institution_id not in child.declined and (anywhere or inst.institution_id in listed)
        for pool in inst.pools
        if fits(child, pool, ON)
    ]


def check(allocator: Allocator, declined: dict[str, set[str]]) -> None:
    """No offer at a declined institution; reasons for no seat and explanations exact.

    ``declined``: child id → every institution the test saw declined for the child.
    """
    instance = allocator.instance
    children = {c.child_id: c for c in instance.children}
    pools = {PoolRef(i.institution_id, p.group): p for i in instance.institutions for p in i.pools}
    for cid, ref in allocator.matching().items():
        assert ref.institution_id not in declined.get(cid, ()), f"{cid} offered {ref}"
        assert ref.institution_id not in children[cid].declined, f"{cid} offered {ref}"
    for cid, (placement, why_not, _) in allocator.report().items():
        child = children[cid]
        assert declined.get(cid, set()) <= child.declined  # the engine forgets no decline
        if placement.reason in ("outranked", "no_fitting_group"):
            expected = "outranked" if _offerable(child, instance) else "no_fitting_group"
            assert placement.reason == expected, cid
        for why in why_not:
            assert why.institution_id in _listed_above_held(child)
            assert why.institution_id not in child.declined
            here = [p for ref, p in pools.items() if ref.institution_id == why.institution_id]
            if why.reason == "outranked":
                assert why.group is not None
                assert fits(child, pools[PoolRef(why.institution_id, why.group)], ON)
            else:
                assert why.group is None
                assert not any(fits(child, p, ON) for p in here)


def _declines_of(instance: Instance) -> dict[str, set[str]]:
    return {c.child_id: set(c.declined) for c in instance.children}


@PROPERTY
@given(DECLINES)
def test_a_round_never_offers_a_declined_institution_and_its_reasons_are_exact(
    instance: Instance,
) -> None:
    allocator = Allocator(instance, RULES, ON)
    check(allocator, _declines_of(instance))
    assert blocking_pairs(instance, allocator.matching()) == []
    quick = {cid: allocator.explain(cid) for cid in allocator.children()}
    allocator._one_each = [False] * len(allocator._one_each)  # force the general path
    assert {cid: allocator.explain(cid) for cid in allocator.children()} == quick


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(max_children=5, max_institutions=3, declines=True, held_one_in=3))
def test_with_declines_the_round_is_the_child_optimal_stable_matching(instance: Instance) -> None:
    engine = Allocator(instance, RULES, ON).matching()
    stable = list(stable_matchings(instance))
    assert engine in stable
    for other in stable:
        for child in instance.children:
            cid = child.child_id
            assert rank(child, engine.get(cid), instance) <= rank(child, other.get(cid), instance)


_EVENTS = st.sampled_from(
    ["withdraw", "decline", "expire", "accept", "more", "fewer", "add", "facts"]
)
_FACTS = st.builds(
    Facts,
    commission_grounds=st.sampled_from([frozenset(), frozenset({"adopted"})]),
    child_resident=st.booleans(),
    siblings_at=st.sets(st.sampled_from(["I0", "I1", "I2", "I3"]), max_size=1).map(frozenset),
    staff_parent_at=st.sets(st.sampled_from(["I0", "I1", "I2", "I3"]), max_size=1).map(frozenset),
)


def _apply(
    allocator: Allocator,
    kind: str,
    pick: int,
    *,
    step: int,
    rules: Rules,
    instance: Instance,
    data: st.DataObject,
    declined: dict[str, set[str]],
) -> bool:
    """Apply one event (``pick`` chooses its child or group); False when none applies."""
    placed, children = sorted(allocator.matching()), sorted(allocator.children())
    groups = [(i.institution_id, p.group) for i in instance.institutions for p in i.pools]
    if kind in ("decline", "expire", "accept"):
        if not placed:
            return False
        cid = placed[pick % len(placed)]
        if kind == "decline" or (kind == "expire" and rules.on_expiry == "decline"):
            declined.setdefault(cid, set()).add(allocator.matching()[cid].institution_id)
        getattr(allocator, kind)(cid)
        return True
    if kind in ("withdraw", "facts"):
        if not children:
            return False
        cid = children[pick % len(children)]
        if kind == "withdraw":
            allocator.withdraw(cid)
        else:
            allocator.update_facts(cid, data.draw(_FACTS))
        return True
    if kind in ("more", "fewer"):
        allocator.change_capacity(*groups[pick % len(groups)], 1 if kind == "more" else -1)
        return True
    if not instance.children:
        return False
    template = instance.children[pick % len(instance.children)]
    ids = [i.institution_id for i in instance.institutions]
    child = replace(
        template,
        child_id=f"NEW{step}",
        registered_at=T0 + timedelta(minutes=pick % 7),
        declined=frozenset(data.draw(st.sets(st.sampled_from(ids)))),
    )
    declined[child.child_id] = set(child.declined)
    allocator.add_child(child)
    return True


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    DECLINES,
    st.lists(st.tuples(_EVENTS, st.integers(0, 10**6)), max_size=8),
    st.booleans(),
    st.data(),
)
def test_events_never_offer_a_declined_institution(
    instance: Instance, events: list[tuple[str, int]], annul: bool, data: st.DataObject
) -> None:
    rules = replace(RULES, on_expiry="annul" if annul else "decline")
    allocator = Allocator(instance, rules, ON)
    declined = _declines_of(instance)
    check(allocator, declined)
    facts_changed = False
    for step, (kind, pick) in enumerate(events):
        try:
            context = {"rules": rules, "instance": instance, "data": data, "declined": declined}
            if not _apply(allocator, kind, pick, step=step, **context):
                continue
        except EngineError:
            continue  # e.g. fewer seats than none: refused, state unchanged
        facts_changed = facts_changed or kind == "facts"
        check(allocator, declined)
        if facts_changed:
            continue  # by design new facts take no seat: no longer a fresh round's result
        recomputed = Allocator(allocator.instance, rules, ON)
        assert allocator.matching() == recomputed.matching(), f"after {kind} (step {step})"
        for cid in allocator.children():
            assert allocator.placement(cid) == recomputed.placement(cid)
            assert allocator.explain(cid) == recomputed.explain(cid)
