"""Benchmark of the allocation engine on a Riga-scale round.

    .venv/bin/python bench/allocation.py [--children 30000] [--repeat 5] [--events 10000]

Prints: full round time (median of --repeat runs, with explanations and
queue positions for every child) and peak memory; the time per incremental
event (p50/p99 over --events random events); and the same instance solved
by the PyPI package ``matching`` (hospital–resident, resident-optimal) with
the time ratio and a check that both matchings are identical.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import tracemalloc
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.calibration import python_speed
from hub.allocation.engine import Allocator, EngineError
from hub.allocation.model import (
    Child,
    Facts,
    Instance,
    Institution,
    Rules,
    SeatPool,
)

ROUND_DATE = date(2026, 9, 1)
RULES = Rules(
    municipality="riga",
    criteria=("commission", "mandatory_age", "sibling", "staff_child", "parent_resident"),
    max_institutions=3,
    offer_deadline_days=15,
    lottery_seed=20260504,
)
LANGUAGES = (("lv", 0.75), ("ru", 0.25))
BIRTH_YEARS = (2021, 2022, 2023)  # three age groups


def riga_scale(
    children: int = 30_000, institutions: int = 150, seed: int = 1, any_share: float = 0.0
) -> Instance:
    """A synthetic round: ~8,000 seats, skewed popularity, per-institution priorities."""
    rng = random.Random(seed)
    ids = [f"PII-{i:03d}" for i in range(1, institutions + 1)]
    insts = []
    for iid in ids:
        location = (rng.uniform(300_000, 320_000), rng.uniform(495_000, 520_000))
        pools = tuple(
            SeatPool(
                iid,
                f"{year}-{lang}",
                lang,
                capacity=max(1, round(rng.gauss(12 if lang == "lv" else 5, 3))),
                birth_year_from=year,
                birth_year_to=year,
            )
            for year in BIRTH_YEARS
            for lang, _ in LANGUAGES
        )
        insts.append(Institution(iid, pools, location=location))
    popularity = [1 / (rank + 1) ** 0.8 for rank in range(institutions)]
    kids = []
    start = datetime(2021, 1, 1, tzinfo=UTC)
    for n in range(children):
        k = rng.choice((1, 2, 2, 3, 3, 3))
        listed: list[str] = []
        while len(listed) < k:
            choice = rng.choices(ids, popularity)[0]
            if choice not in listed:
                listed.append(choice)
        kids.append(
            Child(
                child_id=f"C{n:06d}",
                language=rng.choices([lang for lang, _ in LANGUAGES], [w for _, w in LANGUAGES])[0],
                desired_start_date=ROUND_DATE - timedelta(days=rng.randrange(0, 300)),
                institutions=tuple(listed),
                registered_at=start + timedelta(seconds=rng.randrange(0, 4 * 365 * 86_400)),
                birth_date=date(rng.choice(BIRTH_YEARS), rng.randint(1, 12), rng.randint(1, 28)),
                facts=Facts(
                    commission_grounds=frozenset({"adopted"})
                    if rng.random() < 0.02
                    else frozenset(),
                    parent_resident=rng.random() < 0.8,
                    siblings_at=frozenset({rng.choice(listed)})
                    if rng.random() < 0.12
                    else frozenset(),
                    staff_parent_at=frozenset({rng.choice(listed)})
                    if rng.random() < 0.02
                    else frozenset(),
                ),
                location=(rng.uniform(300_000, 320_000), rng.uniform(495_000, 520_000)),
                accepts_any=rng.random() < any_share,
            )
        )
    return Instance(tuple(insts), tuple(kids))


def full_round(instance: Instance) -> tuple[float, Allocator]:
    started = time.perf_counter()
    allocator = Allocator(instance, RULES, ROUND_DATE)
    allocator.report()
    return time.perf_counter() - started, allocator


def peak_memory(instance: Instance) -> int:
    gc.collect()
    tracemalloc.start()
    Allocator(instance, RULES, ROUND_DATE).report()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def incremental(allocator: Allocator, events: int, seed: int = 2) -> list[float]:
    """Time random single events: declines, expiries, withdrawals, added seats, acceptances."""
    rng = random.Random(seed)
    pools = [(p.institution_id, p.group) for i in allocator.instance.institutions for p in i.pools]
    times = []
    while len(times) < events:
        kind = rng.random()
        placed = None
        try:
            if kind < 0.75:
                for _ in range(20):
                    cid = rng.choice(allocator.children())
                    if allocator.placement(cid).kind in ("listed", "any"):
                        placed = cid
                        break
                if placed is None:
                    continue
            started = time.perf_counter()
            if kind < 0.35:
                allocator.decline(placed)  # type: ignore[arg-type]
            elif kind < 0.55:
                allocator.expire(placed)  # type: ignore[arg-type]
            elif kind < 0.75:
                allocator.accept(placed)  # type: ignore[arg-type]
            elif kind < 0.9:
                allocator.withdraw(rng.choice(allocator.children()))
            else:
                allocator.change_capacity(*rng.choice(pools), 1)
            times.append(time.perf_counter() - started)
        except EngineError:
            continue
    return times


def matching_peer(
    instance: Instance, allocator: Allocator
) -> tuple[float, dict[str, tuple[str, str]]]:
    """The same instance as a hospital–resident game solved by `matching` (resident-optimal)."""
    from matching.games import HospitalResident  # noqa: PLC0415 - optional: the bench extra

    residents: dict[str, list[str]] = {}
    hospitals: dict[str, list[str]] = {}
    capacities: dict[str, int] = {}
    for inst in instance.institutions:
        for pool in inst.pools:
            name = f"{pool.institution_id}/{pool.group}"
            capacities[name] = pool.capacity
            hospitals[name] = []
    ranked: dict[str, list[tuple[int, str]]] = {name: [] for name in hospitals}
    for child in instance.children:
        c = allocator._by_id[child.child_id]
        prefs = [
            f"{allocator._pools[p].institution_id}/{allocator._pools[p].group}"
            for p in allocator._prefs[c]
        ]
        if not prefs:
            continue
        residents[child.child_id] = prefs
        for name, key in zip(prefs, allocator._keys[c], strict=True):
            ranked[name].append((key, child.child_id))
    for name, entries in ranked.items():
        hospitals[name] = [cid for _, cid in sorted(entries)]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 100_000))
    try:
        started = time.perf_counter()
        game = HospitalResident.create_from_dictionaries(residents, hospitals, capacities)
        solution = game.solve(optimal="resident")
        seconds = time.perf_counter() - started
    finally:
        sys.setrecursionlimit(limit)
    result = {}
    for hospital, assigned in solution.items():
        inst_id, group = hospital.name.split("/", 1)
        for resident in assigned:
            result[resident.name] = (inst_id, group)
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--children", type=int, default=30_000)
    parser.add_argument("--institutions", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--no-peer", action="store_true", help="skip the `matching` comparison")
    args = parser.parse_args()

    print(python_speed())
    instance = riga_scale(args.children, args.institutions)
    seats = sum(p.capacity for i in instance.institutions for p in i.pools)
    groups = sum(len(i.pools) for i in instance.institutions)
    print(
        f"instance: {len(instance.children):,} children, {len(instance.institutions)} institutions,"
        f" {groups} groups, {seats:,} seats"
    )

    runs = []
    for n in range(args.repeat):
        seconds, allocator = full_round(instance)
        runs.append(seconds)
        print(f"  full round #{n + 1}: {seconds * 1000:.0f} ms")
    placed = len(allocator.matching())
    median, best = statistics.median(runs) * 1000, min(runs) * 1000
    print(
        f"full round (engine + explanations + queue positions): median {median:.0f} ms,"
        f" best {best:.0f} ms over {args.repeat} runs; {placed:,} children placed"
    )
    print(f"peak memory of one round (tracemalloc): {peak_memory(instance) / 2**20:.1f} MiB")
    fallback = riga_scale(args.children, args.institutions, any_share=0.4)
    extra = statistics.median(full_round(fallback)[0] for _ in range(args.repeat))
    print(f"same round with 40% of parents accepting any institution: median {extra * 1000:.0f} ms")

    if not args.no_peer:
        peer_seconds, peer = matching_peer(instance, allocator)
        ours = {cid: (ref.institution_id, ref.group) for cid, ref in allocator.matching().items()}
        same = ours == peer
        print(
            f"`matching` HospitalResident (resident-optimal): {peer_seconds:.2f} s; "
            f"engine is {peer_seconds / statistics.median(runs):.0f}x faster; "
            f"matchings identical: {'YES' if same else 'NO'}"
        )
        if not same:
            differ = sorted(set(ours) ^ set(peer) | {c for c in ours if peer.get(c) != ours[c]})
            print(f"  {len(differ)} children differ, e.g. {differ[:5]}")

    times = sorted(incremental(allocator, args.events))
    p50 = times[len(times) // 2] * 1000
    p99 = times[int(len(times) * 0.99)] * 1000
    worst = times[-1] * 1000
    print(
        f"incremental events: {len(times):,};"
        f" p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {worst:.1f} ms"
    )


if __name__ == "__main__":
    main()
