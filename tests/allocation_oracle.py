"""An independent, slow statement of what the allocation engine must compute.

Preferences and priorities are rebuilt here from the model's plain data, the
way DOMAIN.md and the engine's docstring describe them, without the engine's
indexes or integer keys; the tests hold the engine's results against these.
Random instances for the property tests are generated here too.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

from hypothesis import strategies as st

from hub.allocation.criteria import holds
from hub.allocation.engine import PoolRef, fits, lottery_number
from hub.allocation.model import Child, Facts, HeldPlace, Instance, Institution, Rules, SeatPool

ROUND_DATE = date(2026, 9, 1)
RULES = Rules(
    municipality="test",
    # Institution-specific criteria first: groups then rank children differently,
    # which is what makes stable improvement cycles possible.
    criteria=("sibling", "staff_child", "commission", "mandatory_age", "child_resident"),
    max_institutions=3,
    offer_deadline_days=15,
    lottery_seed=7,
)


def pools_in_order(instance: Instance) -> list[tuple[Institution, SeatPool]]:
    return [
        (inst, pool)
        for inst in sorted(instance.institutions, key=lambda i: i.institution_id)
        for pool in inst.pools
    ]


def takes_part(child: Child, instance: Instance, rules: Rules, on: date) -> bool:
    known = {i.institution_id for i in instance.institutions}
    groups = {(i.institution_id, p.group) for i in instance.institutions for p in i.pools}
    listed = child.institutions
    return (
        len(listed) <= rules.max_institutions
        and len(set(listed)) == len(listed)
        and set(listed) <= known
        and (child.held is None or (child.held.institution_id, child.held.group) in groups)
        and child.desired_start_date <= on
    )


def preferences(child: Child, instance: Instance, rules: Rules, on: date) -> list[PoolRef]:
    """The child's pools, best first: listed ones, then (any institution) the nearest others.

    An institution the parents declined is never among them, listed or not; a place the
    child holds there still ends its list.
    """
    if not takes_part(child, instance, rules, on):
        return []
    ordered = pools_in_order(instance)
    ranked = []
    for iid in child.institutions:
        if child.held and iid == child.held.institution_id:
            break
        if iid in child.declined:
            continue
        ranked += [
            PoolRef(iid, p.group)
            for i, p in ordered
            if i.institution_id == iid and fits(child, p, on)
        ]
    if child.accepts_any and not child.held:
        skip = set(child.institutions) | child.declined
        others = []
        for n, (inst, pool) in enumerate(ordered):
            if inst.institution_id in skip or not fits(child, pool, on):
                continue
            near = child.location and inst.location
            distance = math.dist(child.location, inst.location) if near else math.inf  # type: ignore[arg-type]
            others.append(
                (distance, inst.institution_id, n, PoolRef(inst.institution_id, pool.group))
            )
        ranked += [ref for *_, ref in sorted(others)]
    return ranked


def priority(child: Child, ref: PoolRef, rules: Rules, on: date) -> tuple[object, ...]:
    """What a group sorts children by; smaller is better."""
    unlisted = ref.institution_id not in child.institutions
    unmet = tuple(not holds(name, child, on, rules, ref.institution_id) for name in rules.criteria)
    return (
        unlisted,
        unmet,
        child.registered_at,
        lottery_number(rules.lottery_seed, child.child_id),
    )


def capacities(instance: Instance) -> dict[PoolRef, int]:
    return {
        PoolRef(i.institution_id, p.group): p.capacity
        for i in instance.institutions
        for p in i.pools
    }


def blocking_pairs(
    instance: Instance, matching: dict[str, PoolRef], rules: Rules = RULES, on: date = ROUND_DATE
) -> list[tuple[str, PoolRef]]:
    """(child, group) pairs: the child wants the group, which has room or holds a worse child."""
    seats = capacities(instance)
    by_pool: dict[PoolRef, list[Child]] = {}
    children = {c.child_id: c for c in instance.children}
    for cid, ref in matching.items():
        by_pool.setdefault(ref, []).append(children[cid])
    found = []
    for child in instance.children:
        prefs = preferences(child, instance, rules, on)
        mine = matching.get(child.child_id)
        for ref in prefs[: prefs.index(mine)] if mine in prefs else prefs:
            holders = by_pool.get(ref, [])
            own = priority(child, ref, rules, on)
            if len(holders) < seats[ref] or any(priority(h, ref, rules, on) > own for h in holders):
                found.append((child.child_id, ref))
    return found


def stable_matchings(
    instance: Instance, rules: Rules = RULES, on: date = ROUND_DATE
) -> Iterator[dict[str, PoolRef]]:
    """Every matching that respects capacities, fits and preferences and has no blocking pair."""
    children = list(instance.children)
    options = [[None, *preferences(c, instance, rules, on)] for c in children]
    seats = capacities(instance)
    for choice in itertools.product(*options):
        used: dict[PoolRef, int] = {}
        for ref in choice:
            if ref is not None:
                used[ref] = used.get(ref, 0) + 1
        if any(n > seats[ref] for ref, n in used.items()):
            continue
        matching = {
            c.child_id: ref for c, ref in zip(children, choice, strict=True) if ref is not None
        }
        if not blocking_pairs(instance, matching, rules, on):
            yield matching


def rank(
    child: Child,
    ref: PoolRef | None,
    instance: Instance,
    rules: Rules = RULES,
    on: date = ROUND_DATE,
) -> float:
    """Position of a seat in the child's true preferences; no seat ranks last."""
    prefs = preferences(child, instance, rules, on)
    return prefs.index(ref) if ref in prefs else math.inf


# --------------------------------------------------------------------------- random instances

_START = datetime(2024, 1, 1, tzinfo=UTC)


@st.composite
def instances(
    draw: st.DrawFn,
    max_children: int = 10,
    max_institutions: int = 4,
    *,
    declines: bool = False,
    held_one_in: int = 10,
) -> Instance:
    """Small random rounds with every feature the engine has: bands, languages, held places,
    siblings and staff at particular institutions, any-institution children, unknown
    distances, future start dates, and registration ties left to the lottery.

    With ``declines``, children also name institutions whose offers their parents
    declined, listed or not (the held place's too). About one child in ``held_one_in``
    may hold a place.
    """
    ids = [f"I{n}" for n in range(draw(st.integers(1, max_institutions)))]
    institutions = []
    for iid in ids:
        shapes = draw(
            st.lists(
                st.sampled_from([(2022, "lv"), (2023, "lv"), (2022, "ru")]),
                min_size=1,
                max_size=3,
                unique=True,
            )
        )
        pools = tuple(
            SeatPool(
                iid,
                f"{year}-{lang}",
                lang,
                draw(st.integers(0, 2)),
                birth_year_from=year,
                birth_year_to=year,
            )
            for year, lang in shapes
        )
        location = draw(
            st.none() | st.tuples(st.integers(300_000, 301_000), st.integers(500_000, 501_000))
        )
        institutions.append(Institution(iid, pools, location=location))
    children = []
    for n in range(draw(st.integers(0, max_children))):
        listed = draw(st.lists(st.sampled_from(ids), max_size=min(3, len(ids)), unique=True))
        pools = [
            (iid, p.group) for iid, inst in zip(ids, institutions, strict=True) for p in inst.pools
        ]
        held = (
            draw(st.none() | st.sampled_from(pools).map(lambda g: HeldPlace(*g)))
            if draw(st.integers(0, held_one_in - 1)) == 0
            else None
        )
        declined = (
            frozenset(draw(st.lists(st.sampled_from(ids), max_size=len(ids), unique=True)))
            if declines
            else frozenset()
        )
        children.append(
            Child(
                child_id=f"C{n:02d}",
                language=draw(st.sampled_from(["lv", "lv", "ru"])),
                desired_start_date=ROUND_DATE
                + timedelta(days=draw(st.sampled_from([-30, -1, 0, 0, 0, 5]))),
                institutions=tuple(listed),
                registered_at=_START + timedelta(days=draw(st.integers(0, 3))),
                birth_date=date(
                    draw(st.sampled_from([2021, 2022, 2023])), draw(st.integers(1, 12)), 1
                ),
                facts=Facts(
                    commission_grounds=frozenset(draw(st.sampled_from([(), (), (), ("adopted",)]))),
                    child_resident=draw(st.booleans()),
                    siblings_at=frozenset(draw(st.lists(st.sampled_from(ids), max_size=1))),
                    staff_parent_at=frozenset(draw(st.lists(st.sampled_from(ids), max_size=1))),
                ),
                held=held,
                accepts_any=draw(st.booleans()),
                location=draw(
                    st.none()
                    | st.tuples(st.integers(300_000, 301_000), st.integers(500_000, 501_000))
                ),
                declined=declined,
            )
        )
    return Instance(tuple(institutions), tuple(children))
