"""The allocation engine: child-proposing deferred acceptance over seat pools.

Pure: plain data in (:mod:`hub.allocation.model`), plain data out. No Kafka,
no SQLite, no clock.

The mechanism
-------------
Each child ranks seat pools: for every listed institution, the pools there
that fit the child's language and age at the round date, in the order the
institutions were listed. A place the child already holds is its outside
option: the child competes only for institutions listed above it and keeps
the place whatever happens; the seat goes to others only when the child
accepts a better one. A child whose parents accept "any institution"
continues, after the listed ones, with every other fitting pool from the
nearest institution outwards; at those pools the child ranks below every
child who listed the institution, so the fallback only takes seats nobody
who asked for them wants.

An institution whose offer the parents declined (``Child.declined``) is
never offered again: not when the child still lists it, nor through the
any-institution fallback. A place the child holds there is still the
child's: declining an offer there said nothing about the seat the child
already has, so it is kept, and the list still stops at it.

A pool ranks children by a key: the municipality's criteria in order (each
holds or not; institution-specific ones such as ``sibling`` are evaluated per
institution), then registration time, then a lottery number drawn from the
published seed and the child's id. Keys are integers, lower is better, and
unique, so the child-optimal stable matching is unique.

Incremental changes
-------------------
After a round, :class:`Allocator` applies single events and reports only the
moves they cause. Each event is split into steps whose result is exactly the
deferred-acceptance outcome of the changed instance:

* a freed seat (withdrawal, released place, added capacity, a held place
  given up) runs a vacancy chain — the best child who wants the seat takes
  it, freeing theirs, and so on — and then applies stable improvement cycles
  (Erdil & Ergin 2008) until none is left: a stable matching without such a
  cycle is the child-optimal one;
* a new proposal (a new child, a child re-entering after a decline, fewer
  seats) continues deferred acceptance from the current state, which is
  valid because the current state is a deferred-acceptance outcome.

Changed priority facts re-rank waiting children at once but move nobody;
they take effect at the next freed seat or round.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import hashlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Literal, NamedTuple

from hub.allocation.criteria import criterion_tests, unknown_criteria
from hub.allocation.model import Child, Facts, HeldPlace, Instance, Institution, Rules, SeatPool
from hub.errors import HubError

# Keys (lower is better): (criteria << 128) | registration µs << 64 | lottery,
# where a criterion's bit is set when it does NOT hold; plus NOT_LISTED at a
# pool of an institution the child did not list (any-institution fallback).
_CRITERIA_SHIFT = 128
_TIE_MASK = (1 << _CRITERIA_SHIFT) - 1
NOT_LISTED = 1 << 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NONE = -1
_END = 1 << 62  # a fallback pointer past any list
_FAR = math.inf
_NO_SPECIAL: dict[int, int] = {}  # shared, never written: no institution-specific criterion
_new = tuple.__new__  # builds a NamedTuple without its keyword-parsing __new__ (hot paths)


class EngineError(HubError):
    """The instance or an event cannot be applied; the message names the child or group."""


class PoolRef(NamedTuple):
    institution_id: str
    group: str


class Move(NamedTuple):
    """A child's place changed: an offered seat or the place it holds; None when it has none."""

    child_id: str
    before: PoolRef | None
    after: PoolRef | None


class Changes(NamedTuple):
    """What the events since the last :meth:`Allocator.take_changes` changed.

    Everything a store of the engine must write again: a child's entry (added,
    changed, or gone when it is no longer in the queue), a group's capacity,
    and the children whose seat or held place moved (whose offers change).
    """

    children: frozenset[str]
    groups: frozenset[PoolRef]
    seats: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.children or self.groups or self.seats)


class Priority(NamedTuple):
    """A decoded priority key: what a group compares children by."""

    criteria: tuple[tuple[str, bool], ...]
    registered_at: datetime
    lottery: int
    listed: bool


class WhyNot(NamedTuple):
    """Why the child has no seat at an institution it ranked above the one it got.

    ``last_admitted`` and ``own`` are priority keys (see :meth:`Allocator.decode`):
    the last child admitted to the group versus the child itself.
    """

    institution_id: str
    group: str | None
    reason: Literal["outranked", "no_fitting_group"]
    last_admitted: int | None
    own: int | None


class QueuePosition(NamedTuple):
    """Where a waiting child stands at a group it ranked: 1 = next in line."""

    institution_id: str
    group: str
    position: int
    waiting: int
    seats: int


class Placement(NamedTuple):
    """Where a child stands. ``reason`` says why it has no seat:
    ``not_yet_due``, ``invalid: …``, ``no_fitting_group`` or ``outranked``."""

    child_id: str
    pool: PoolRef | None
    kind: Literal["listed", "held", "any"] | None
    preference_rank: int | None
    reason: str | None


class GroupState(NamedTuple):
    """A group after the round or event: its seats and its cut-off."""

    pool: PoolRef
    capacity: int
    placed: int
    last_admitted: int | None
    """Priority key of the last child admitted (see :meth:`Allocator.decode`); None if empty."""


class ChildReport(NamedTuple):
    """Everything a parent may ask about one child."""

    placement: Placement
    why_not: tuple[WhyNot, ...]
    queue: tuple[QueuePosition, ...]


def lottery_number(seed: int, child_id: str) -> int:
    """The child's published tie-break number; it does not depend on the other children."""
    return _lottery_of(seed)(child_id)


def _lottery_of(seed: int) -> Callable[[str], int]:
    prefix = hashlib.blake2b(digest_size=8, key=seed.to_bytes(16, "big"))

    def draw(child_id: str) -> int:
        h = prefix.copy()
        h.update(child_id.encode())
        return int.from_bytes(h.digest(), "big")

    return draw


@contextlib.contextmanager
def without_gc_pauses() -> Iterator[None]:
    """Hold off the cycle collector while building many small, acyclic objects.

    Such objects (a round's indexes, a report, a result file) are never
    garbage, yet each pass of the collector walks all of them; at 30,000
    children the passes would double the time of a round. Usable as a
    decorator too.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def age_in_months(birth_date: date, on: date) -> int:
    months = (on.year - birth_date.year) * 12 + on.month - birth_date.month
    return months - (on.day < birth_date.day)


def fits(child: Child, pool: SeatPool, on: date) -> bool:
    """Whether the child fits the group's language and age on ``on``."""
    if child.language != pool.language:
        return False
    if pool.age_group is not None and child.age_group is not None:
        return pool.age_group == child.age_group
    banded = pool.birth_year_from is not None or pool.birth_year_to is not None
    if not banded and pool.min_age_months is None:
        return pool.age_group is None
    if child.birth_date is None:
        return False
    year = child.birth_date.year
    if pool.birth_year_from is not None and year < pool.birth_year_from:
        return False
    if pool.birth_year_to is not None and year > pool.birth_year_to:
        return False
    return pool.min_age_months is None or age_in_months(child.birth_date, on) >= pool.min_age_months


class Allocator:
    """The state of one municipality's admission: a round, then incremental events.

    Constructing it runs the round. Query :meth:`placement`, :meth:`explain`,
    :meth:`queue`, :meth:`matching` or :meth:`report`; apply events with
    :meth:`withdraw`, :meth:`decline`, :meth:`expire`, :meth:`accept`,
    :meth:`change_capacity`, :meth:`add_child` and :meth:`update_facts`, each
    returning the moves it caused. :attr:`instance` is the instance as changed
    by the events: a new ``Allocator`` on it gives the same seats (except after
    :meth:`update_facts`, by design: new facts never take a seat away).
    """

    def __init__(self, instance: Instance, rules: Rules, round_date: date) -> None:
        unknown = unknown_criteria(rules)
        if unknown:
            raise EngineError(f"unknown criteria in rules: {', '.join(unknown)}")
        self.rules = rules
        self.round_date = round_date
        n = len(rules.criteria)
        bits = [(1 << (n - 1 - i), name) for i, name in enumerate(rules.criteria)]
        self._criteria = bits
        self._all_bits = (1 << n) - 1
        # A priority holds where its child test holds or at the institutions its place
        # test names (criteria.Tests); a composite may have both, on the same bit.
        tests = [(bit, criterion_tests(name, round_date, rules)) for bit, name in bits]
        self._child_tests = [(bit, t.child) for bit, t in tests if t.child is not None]
        self._place_tests = [
            (bit, t.institutions) for bit, t in tests if t.institutions is not None
        ]
        self._lottery = _lottery_of(rules.lottery_seed)
        self._journal: dict[str, int] | None = None
        self._index_institutions(instance.institutions)
        # Per child index. A child whose application changes (decline, accept) is
        # registered again under a new index; the old one is retired.
        self._child: list[Child] = []
        self._status: list[str | None] = []
        # Tuples, not lists: they are never changed, and the cycle collector
        # stops visiting tuples of plain ints after one look.
        self._prefs: list[tuple[int, ...]] = []  # pools, in the child's order
        self._keys: list[tuple[int, ...]] = []  # the child's key at each of them
        self._assign: list[int] = []
        self._pos: list[int] = []  # index in prefs of the seat; len(prefs) if not there
        self._any: list[bool] = []  # takes part in the any-institution fallback
        self._one_each: list[bool] = []  # one group for each institution it listed
        self._fallback: list[list[int] | None] = []  # fallback pools, nearest first (lazy)
        self._fpos: list[int] = []  # next fallback pool to propose to
        self._base: list[int] = []  # key where no institution-specific criterion holds
        self._special: list[dict[int, int]] = []  # institution → key, where one holds
        self._by_id: dict[str, int] = {}
        self._owner: dict[int, int] = {}  # key → child index
        # Per pool: keys of the children ranking it, and of those seated, both sorted.
        self._apps: list[list[int]] = [[] for _ in self._pools]
        self._holders: list[list[int]] = [[] for _ in self._pools]
        # Fallback applicants per group shape by base key, and those with special keys.
        self._any_by_spec: list[list[int]] = [[] for _ in self._specs]
        self._any_special: dict[int, list[int]] = {}
        self._fit_cache: dict[tuple[str, date | None, str | None], frozenset[int]] = {}
        # What events changed since the last take_changes(): see Changes.
        self._changed_children: set[str] = set()
        self._changed_pools: set[int] = set()
        self._moved: set[str] = set()
        self._events_since_take = False
        with without_gc_pauses():
            self._register_all(list(instance.children), sort=False)
            if len(self._by_id) != len(self._child):
                seen: set[str] = set()
                twice = next(
                    c.child_id for c in self._child if c.child_id in seen or seen.add(c.child_id)
                )
                raise EngineError(f"child {twice} appears twice")
            for entries in (*self._apps, *self._any_by_spec):
                entries.sort()
            self._full_round()

    # ------------------------------------------------------------------ setup

    def _index_institutions(self, institutions: Iterable[Institution]) -> None:
        self._institutions: dict[str, Institution] = {}
        self._inst_ids: list[str] = []
        self._inst_loc: list[tuple[float, float] | None] = []
        self._pools: list[SeatPool] = []
        self._refs: list[PoolRef] = []
        self._pool_inst: list[int] = []
        self._pool_spec: list[int] = []
        self._cap: list[int] = []
        self._pool_of: dict[tuple[str, str], int] = {}
        self._by_lang: dict[str, dict[int, list[int]]] = {}  # language → institution → pools
        self._specs: list[SeatPool] = []
        self._spec_pools: list[list[int]] = []
        spec_index: dict[tuple[object, ...], int] = {}
        for inst in sorted(institutions, key=lambda i: i.institution_id):
            iid = inst.institution_id
            if iid in self._institutions:
                raise EngineError(f"institution {iid} appears twice")
            self._institutions[iid] = inst
            i = len(self._inst_ids)
            self._inst_ids.append(iid)
            self._inst_loc.append(inst.location)
            for pool in inst.pools:
                if pool.institution_id != iid:
                    raise EngineError(f"group {pool.group} of {iid} names another institution")
                if (iid, pool.group) in self._pool_of:
                    raise EngineError(f"group {pool.group} of {iid} appears twice")
                if pool.capacity < 0:
                    raise EngineError(f"group {pool.group} of {iid} has a negative capacity")
                p = len(self._pools)
                self._pools.append(pool)
                self._refs.append(PoolRef(iid, pool.group))
                self._pool_inst.append(i)
                self._cap.append(pool.capacity)
                self._pool_of[(iid, pool.group)] = p
                self._by_lang.setdefault(pool.language, {}).setdefault(i, []).append(p)
                shape = (
                    pool.language,
                    pool.age_group,
                    pool.min_age_months,
                    pool.birth_year_from,
                    pool.birth_year_to,
                )
                if shape not in spec_index:
                    spec_index[shape] = len(self._specs)
                    self._specs.append(pool)
                    self._spec_pools.append([])
                self._pool_spec.append(spec_index[shape])
                self._spec_pools[spec_index[shape]].append(p)
        self._inst_index = {iid: i for i, iid in enumerate(self._inst_ids)}

    def _fitting_specs(self, child: Child) -> frozenset[int]:
        cache_key = (child.language, child.birth_date, child.age_group)
        found = self._fit_cache.get(cache_key)
        if found is None:
            found = frozenset(
                s for s, spec in enumerate(self._specs) if fits(child, spec, self.round_date)
            )
            self._fit_cache[cache_key] = found
        return found

    def _problem(self, child: Child) -> str | None:
        """Why an application cannot take part now, or None."""
        listed = child.institutions
        if len(listed) > self.rules.max_institutions:
            return (
                f"invalid: {len(listed)} institutions listed,"
                f" at most {self.rules.max_institutions} allowed"
            )
        if len(listed) > 1 and len(set(listed)) != len(listed):
            return "invalid: an institution is listed twice"
        for iid in listed:
            if iid not in self._inst_index:
                return f"invalid: unknown institution {iid}"
        held = child.held
        if held and (held.institution_id, held.group) not in self._pool_of:
            return f"invalid: unknown held place {held.institution_id}/{held.group}"
        if child.desired_start_date > self.round_date:
            return "not_yet_due"
        return None

    def _keys_for(self, children: list[Child], ties: list[int]) -> list[tuple[int, dict[int, int]]]:
        """Per child: its key where no institution-specific criterion holds, and the exceptions.

        Column by column (one criterion at a time over all children): a round
        evaluates tens of thousands of children, and this is its hot path.
        """
        bits = [self._all_bits] * len(children)
        for bit, test in self._child_tests:
            for k, holds in enumerate(map(test, children)):
                if holds:
                    bits[k] ^= bit
        places: dict[int, dict[int, int]] = {}  # child position → institution → bits
        inst_index = self._inst_index
        for bit, where in self._place_tests:
            for k, institutions in enumerate(map(where, children)):
                for iid in institutions:
                    i = inst_index.get(iid)
                    if i is not None:
                        found = places.setdefault(k, {})
                        found[i] = found.get(i, 0) | bit
        keys = [
            ((b << _CRITERIA_SHIFT) | tie, _NO_SPECIAL) for b, tie in zip(bits, ties, strict=True)
        ]
        for k, found in places.items():
            b, tie = bits[k], ties[k]
            keys[k] = (
                keys[k][0],
                {i: ((b & ~f) << _CRITERIA_SHIFT) | tie for i, f in found.items()},
            )
        return keys

    def _register(self, child: Child) -> int:
        """Index one child and its rankings (it takes no seat yet); returns its index.

        The way events add a child or change its entry (the round indexes all at once).
        """
        self._changed_children.add(child.child_id)
        self._register_all([child], sort=True)
        return len(self._child) - 1

    def _register_all(self, children: list[Child], *, sort: bool) -> None:  # noqa: PLR0915
        """Index children and their rankings. Without ``sort`` the caller sorts the lists.

        The one way children enter the indexes, for a round and for events.
        """
        add = bisect.insort if sort else list.append
        lottery = self._lottery
        ties = [
            ((child.registered_at - _EPOCH) // _MICROSECOND << 64) | lottery(child.child_id)
            for child in children
        ]
        statuses = list(map(self._problem, children))
        keyed = self._keys_for(children, ties)
        fitting, inst_index, by_lang = self._fitting_specs, self._inst_index, self._by_lang
        apps, pool_spec, owner, by_id = self._apps, self._pool_spec, self._owner, self._by_id
        all_prefs, all_keys, any_flags, one_each = [], [], [], []
        c = len(self._child)
        for child, status, (base, special) in zip(children, statuses, keyed, strict=True):
            owner[base] = c
            for key in special.values():
                owner[key] = c
            prefs: list[int] = []
            keys: list[int] = []
            is_any = False
            single = status is None
            if status is None:
                specs = fitting(child)
                stop = child.held.institution_id if child.held else None
                declined = child.declined
                pools_at = by_lang.get(child.language, {})
                for iid in child.institutions:
                    if iid == stop:
                        break  # the child would rather stay than go below its own place
                    if declined and iid in declined:
                        continue  # never offered again, listed or not
                    i = inst_index[iid]
                    key = special.get(i, base) if special else base
                    before = len(prefs)
                    for p in pools_at.get(i, ()):
                        if pool_spec[p] in specs:
                            prefs.append(p)
                            keys.append(key)
                            add(apps[p], key)
                    single = single and len(prefs) == before + 1
                if child.accepts_any and not child.held:
                    is_any = True
                    for s in specs:
                        add(self._any_by_spec[s], base)
                    for i in special:
                        self._any_special.setdefault(i, []).append(c)
            by_id[child.child_id] = c
            all_prefs.append(tuple(prefs))
            all_keys.append(tuple(keys))
            any_flags.append(is_any)
            one_each.append(single)
            c += 1
        n = len(children)
        self._child.extend(children)
        self._status.extend(statuses)
        self._assign.extend([_NONE] * n)
        self._pos.extend([0] * n)
        self._fallback.extend([None] * n)
        self._fpos.extend([0] * n)
        self._base.extend(base for base, _ in keyed)
        self._special.extend(special for _, special in keyed)
        self._prefs.extend(all_prefs)
        self._keys.extend(all_keys)
        self._any.extend(any_flags)
        self._one_each.extend(one_each)

    def _retire(self, c: int) -> None:
        """Take a child (already out of its seat) out of every ranking."""
        for p, k in zip(self._prefs[c], self._keys[c], strict=True):
            self._apps[p].remove(k)
        if self._any[c]:
            self._any[c] = False
            for s in self._fitting_specs(self._child[c]):
                self._any_by_spec[s].remove(self._base[c])
            for i in self._special[c]:
                self._any_special[i].remove(c)

    def _ekey(self, c: int, p: int) -> int:
        """Child ``c``'s key at pool ``p``: as ranked there, else as a fallback applicant."""
        prefs = self._prefs[c]
        if p in prefs:
            return self._keys[c][prefs.index(p)]
        return self._special[c].get(self._pool_inst[p], self._base[c]) + NOT_LISTED

    def _who(self, key: int) -> int:
        return self._owner[key - NOT_LISTED if key >= NOT_LISTED else key]

    # ------------------------------------------------------------------ the round

    def _full_round(self) -> None:
        """Deferred acceptance over the ranked pools, then the any-institution fallback."""
        prefs, keys, holders, cap = self._prefs, self._keys, self._holders, self._cap
        assign, pos, owner = self._assign, self._pos, self._owner
        insort = bisect.insort
        free = [c for c in range(len(self._child)) if prefs[c]]
        while free:
            c = free.pop()
            pr, ks, i = prefs[c], keys[c], pos[c]
            n = len(pr)
            while i < n:
                p, k = pr[i], ks[i]
                h = holders[p]
                if len(h) < cap[p]:
                    insort(h, k)
                    assign[c] = p
                    break
                if h and h[-1] > k:
                    d = owner[h.pop()]
                    insort(h, k)
                    assign[c] = p
                    assign[d] = _NONE
                    pos[d] += 1
                    free.append(d)
                    break
                i += 1
            pos[c] = i
        self._fallback_round()

    def _fallback_round(self) -> None:
        """Seats nobody who ranked them wants, to children who accept any institution.

        Only pools with seats left take part: every other pool is full of
        children who ranked it, and those outrank any fallback applicant. So
        each child ranks only those pools here; its full fallback list is
        built later, if an event ever needs it.
        """
        holders, cap, assign = self._holders, self._cap, self._assign
        left: dict[int, list[int]] = {}  # group shape → pools with seats left
        for p, h in enumerate(holders):
            if len(h) < cap[p]:
                left.setdefault(self._pool_spec[p], []).append(p)
        waiting = [c for c, on in enumerate(self._any) if on and assign[c] == _NONE]
        options = {c: self._fallback_among(c, left) for c in waiting} if left else {}
        queue = [(c, 0) for c in waiting]
        while queue:
            c, i = queue.pop()
            mine = options.get(c, ())
            while i < len(mine):
                p = mine[i]
                k = self._ekey(c, p)
                h = holders[p]
                if len(h) < cap[p]:
                    bisect.insort(h, k)
                    assign[c] = p
                    break
                if h[-1] > k:
                    d = self._who(h.pop())
                    bisect.insort(h, k)
                    assign[c] = p
                    assign[d] = _NONE
                    queue.append((d, options[d].index(p) + 1))
                    break
                i += 1
        for c in waiting:
            self._pos[c] = len(self._prefs[c])
            if assign[c] == _NONE:
                self._fpos[c] = _END  # turned away by every pool it could take

    def _fallback_among(self, c: int, pools_by_spec: dict[int, list[int]]) -> list[int]:
        """The child's fallback pools among ``pools_by_spec``, nearest institution first."""
        child = self._child[c]
        skip = {self._inst_index.get(i) for i in (*child.institutions, *child.declined)}
        ranked = sorted(
            (self._fallback_rank(c, p), p)
            for s in self._fitting_specs(child)
            for p in pools_by_spec.get(s, ())
            if self._pool_inst[p] not in skip
        )
        return [p for _, p in ranked]

    def _has_fallback(self, c: int) -> bool:
        """Whether the any-institution fallback has any pool the child fits (see
        :meth:`_fallback_of`), without ordering them."""
        cached = self._fallback[c]
        if cached is not None:
            return bool(cached)
        child = self._child[c]
        skip = {self._inst_index.get(i) for i in (*child.institutions, *child.declined)}
        pool_inst, spec_pools = self._pool_inst, self._spec_pools
        return any(
            pool_inst[p] not in skip for s in self._fitting_specs(child) for p in spec_pools[s]
        )

    def _fallback_of(self, c: int) -> list[int]:
        """Every pool the child may take beyond its list, nearest institution first."""
        cached = self._fallback[c]
        if cached is None:
            every = {s: self._spec_pools[s] for s in self._fitting_specs(self._child[c])}
            cached = self._fallback[c] = self._fallback_among(c, every)
        return cached

    def _fallback_rank(self, c: int, p: int) -> tuple[float, str, int]:
        """Order of fallback pools: distance (unknown last), then institution id."""
        i = self._pool_inst[p]
        here, there = self._child[c].location, self._inst_loc[i]
        distance = math.dist(here, there) if here and there else _FAR
        return (distance, self._inst_ids[i], p)

    # ------------------------------------------------------------------ wants

    def _desires(self, c: int, p: int) -> bool:
        """Whether child ``c`` would rather have a seat in pool ``p`` than the one it has."""
        prefs = self._prefs[c]
        if p in prefs:
            return prefs.index(p) < self._pos[c]
        if not self._any[c] or self._pos[c] < len(prefs):
            return False
        child = self._child[c]
        iid = self._inst_ids[self._pool_inst[p]]
        if (
            self._pool_spec[p] not in self._fitting_specs(child)
            or iid in child.institutions
            or iid in child.declined
        ):
            return False
        current = self._assign[c]
        return current == _NONE or self._fallback_rank(c, p) < self._fallback_rank(c, current)

    def _wanted(self, c: int) -> set[int]:
        """Every pool child ``c`` would rather have than its seat."""
        wanted = set(self._prefs[c][: self._pos[c]])
        if self._any[c] and self._pos[c] == len(self._prefs[c]):
            fallback = self._fallback_of(c)
            current = self._assign[c]
            wanted.update(fallback if current == _NONE else fallback[: fallback.index(current)])
        return wanted

    def _top_desirer(self, p: int) -> int:
        """The highest-priority child that wants a seat in pool ``p`` (or _NONE)."""
        owner = self._owner
        for key in self._apps[p]:
            c = owner[key]
            if self._desires(c, p):
                return c
        best, best_key = _NONE, 0
        for base in self._any_by_spec[self._pool_spec[p]]:
            c = owner[base]
            if self._desires(c, p):
                best, best_key = c, self._ekey(c, p)
                break
        for c in self._any_special.get(self._pool_inst[p], ()):
            if self._desires(c, p):
                k = self._ekey(c, p)
                if best == _NONE or k < best_key:
                    best, best_key = c, k
        return best

    # ------------------------------------------------------------------ moves

    def _note(self, c: int) -> None:
        """Remember the seat a child had when the current event began."""
        journal = self._journal
        if journal is not None:
            journal.setdefault(self._child[c].child_id, self._where(c))

    def _where(self, c: int) -> int:
        """The child's place: its offered seat, else the place it holds, else none."""
        p = self._assign[c]
        if p == _NONE and self._child[c].held and self._status[c] in (None, "not_yet_due"):
            return self._held_pool(self._child[c])
        return p

    def _seat(self, c: int, p: int) -> None:
        """Put child ``c`` into pool ``p``, out of its current seat if it has one."""
        self._note(c)
        self._unseat(c)
        bisect.insort(self._holders[p], self._ekey(c, p))
        self._assign[c] = p
        prefs = self._prefs[c]
        if p in prefs:
            self._pos[c], self._fpos[c] = prefs.index(p), 0
        else:
            self._pos[c], self._fpos[c] = len(prefs), self._fallback_of(c).index(p)

    def _unseat(self, c: int) -> int:
        q = self._assign[c]
        if q != _NONE:
            self._note(c)
            self._holders[q].remove(self._ekey(c, q))
            self._assign[c] = _NONE
        return q

    def _reject(self, c: int, p: int) -> None:
        """Child ``c`` loses its seat in ``p`` and will propose to the pools after it."""
        self._unseat(c)
        prefs = self._prefs[c]
        if p in prefs:
            self._pos[c], self._fpos[c] = prefs.index(p) + 1, 0
        else:
            self._pos[c], self._fpos[c] = len(prefs), self._fallback_of(c).index(p) + 1

    def _vacancy_chain(self, p: int) -> set[int]:
        """Give a free seat in ``p`` to the best child that wants it, then theirs, and so on.

        Keeps the matching stable. Returns the pools whose holders or wanting
        children changed: where a stable improvement cycle may now begin.
        """
        affected = {p}
        while len(self._holders[p]) < self._cap[p]:
            c = self._top_desirer(p)
            if c == _NONE:
                break
            affected |= self._wanted(c)
            q = self._assign[c]
            self._seat(c, p)
            if q == _NONE:
                break
            affected.add(q)
            p = q
        return affected

    def _eliminate_cycles(self, affected: set[int]) -> None:
        """Apply stable improvement cycles through ``affected`` pools until none is left.

        A stable matching with no such cycle is the child-optimal stable
        matching (Erdil & Ergin 2008), which is what a full round gives.
        """
        while affected:
            cycle = self._find_cycle(affected)
            if cycle is None:
                return
            movers = [(p, self._top_desirer(p)) for p in cycle]
            affected = set(cycle)
            for _, c in movers:
                affected |= self._wanted(c)
                self._unseat(c)
            for p, c in movers:
                self._seat(c, p)

    def _find_cycle(self, starts: set[int]) -> list[int] | None:
        """A cycle pool → seat of its best wanting child → … through one of ``starts``."""
        seen: dict[int, int] = {}  # pool → number of the walk that reached it
        for walk, start in enumerate(sorted(starts)):
            path: list[int] = []
            p = start
            while p != _NONE and p not in seen:
                seen[p] = walk
                path.append(p)
                top = self._top_desirer(p) if len(self._holders[p]) >= self._cap[p] else _NONE
                p = self._assign[top] if top != _NONE else _NONE
            if p != _NONE and seen[p] == walk:
                return path[path.index(p) :]
        return None

    def _propose(self, stack: list[int]) -> None:
        """Continue deferred acceptance for the children on ``stack``."""
        holders, cap = self._holders, self._cap
        while stack:
            c = stack.pop()
            self._note(c)
            for p in self._options(c):
                h = holders[p]
                if len(h) < cap[p]:
                    self._seat(c, p)
                    break
                if h and h[-1] > self._ekey(c, p):
                    d = self._who(h[-1])
                    self._reject(d, p)
                    stack.append(d)
                    self._seat(c, p)
                    break
            else:
                self._pos[c] = len(self._prefs[c])
                self._fpos[c] = _END

    def _options(self, c: int) -> Iterator[int]:
        """The pools child ``c`` proposes to next, in its order, from its pointers on."""
        yield from self._prefs[c][self._pos[c] :]
        if self._any[c]:
            yield from self._fallback_of(c)[self._fpos[c] :]

    def _resize(self, p: int, delta: int) -> None:
        """The one way a group's capacity changes (so that it is recorded as changed)."""
        self._cap[p] += delta
        self._changed_pools.add(p)

    def _add_seats(self, p: int, count: int) -> None:
        self._resize(p, count)
        affected: set[int] = set()
        for _ in range(count):
            affected |= self._vacancy_chain(p)
        self._eliminate_cycles(affected)

    def _remove_seats(self, p: int, count: int) -> None:
        self._resize(p, -count)
        stack = []
        while len(self._holders[p]) > self._cap[p]:
            d = self._who(self._holders[p][-1])
            self._reject(d, p)
            stack.append(d)
        self._propose(stack)

    def _leave(self, c: int) -> None:
        """Child ``c`` leaves the rankings; its seat goes down a vacancy chain."""
        affected = self._wanted(c)
        freed = self._unseat(c)
        self._retire(c)
        if freed != _NONE:
            affected |= self._vacancy_chain(freed)
        self._eliminate_cycles(affected)

    # ------------------------------------------------------------------ events

    def _event(self, apply: Callable[[], None]) -> list[Move]:
        """Run one event, returning the children whose seat changed, by child id."""
        self._journal = {}
        self._events_since_take = True
        try:
            apply()
            journal = self._journal
        finally:
            self._journal = None
        moves = []
        for child_id in sorted(journal):
            c = self._by_id.get(child_id)
            now = self._where(c) if c is not None else _NONE
            if now != journal[child_id]:
                moves.append(Move(child_id, self._ref(journal[child_id]), self._ref(now)))
        self._moved.update(m.child_id for m in moves)
        return moves

    def _index(self, child_id: str) -> int:
        c = self._by_id.get(child_id)
        if c is None:
            raise EngineError(f"no child {child_id} in the queue")
        return c

    def _seat_of(self, child_id: str) -> tuple[int, int]:
        c = self._index(child_id)
        if self._assign[c] == _NONE:
            raise EngineError(f"child {child_id} has no offered seat")
        return c, self._assign[c]

    def _held_pool(self, child: Child) -> int:
        held = child.held
        return self._pool_of[(held.institution_id, held.group)] if held else _NONE

    def withdraw(self, child_id: str) -> list[Move]:
        """The application leaves the queue (a place the child holds stays the child's)."""
        c = self._index(child_id)

        def apply() -> None:
            self._leave(c)
            del self._by_id[child_id]
            self._changed_children.add(child_id)

        return self._event(apply)

    def decline(self, child_id: str) -> list[Move]:
        """Parents declined the offered seat: that institution is never offered again."""
        c, p = self._seat_of(child_id)
        child = self._child[c]
        iid = self._pools[p].institution_id
        changed = replace(
            child,
            institutions=tuple(i for i in child.institutions if i != iid),
            declined=child.declined | {iid},
        )

        def apply() -> None:
            self._leave(c)
            self._propose([self._register(changed)])

        return self._event(apply)

    def expire(self, child_id: str) -> list[Move]:
        """The answer deadline passed: annul the application or decline the seat (rules)."""
        if self.rules.on_expiry == "annul":
            return self.withdraw(child_id)
        return self.decline(child_id)

    def accept(self, child_id: str) -> list[Move]:
        """Parents accepted: the seat becomes the child's held place.

        Institutions listed below it are dropped; the child still waits for
        those listed above. A place the child held before goes down a vacancy
        chain. The child's own seat is not offered to anybody else.
        """
        c, p = self._seat_of(child_id)
        child = self._child[c]
        pool = self._pools[p]
        listed = child.institutions
        if pool.institution_id in listed:
            listed = listed[: listed.index(pool.institution_id)]
        changed = replace(
            child, institutions=listed, held=HeldPlace(pool.institution_id, pool.group)
        )

        def apply() -> None:
            self._unseat(c)
            self._retire(c)
            self._resize(p, -1)  # the seat leaves the market with the child
            d = self._register(changed)
            # Deferred acceptance had turned the child away from every pool above.
            self._pos[d] = len(self._prefs[d])
            if child.held:
                self._add_seats(self._held_pool(child), 1)

        return self._event(apply)

    def change_capacity(self, institution_id: str, group: str, delta: int) -> list[Move]:
        """Seats added to a group (a place released, a group enlarged) or taken away."""
        p = self._pool_of.get((institution_id, group))
        if p is None:
            raise EngineError(f"no group {group} at institution {institution_id}")
        if self._cap[p] + delta < 0:
            raise EngineError(f"capacity of {institution_id}/{group} cannot go below zero")
        if delta > 0:
            return self._event(lambda: self._add_seats(p, delta))
        if delta < 0:
            return self._event(lambda: self._remove_seats(p, -delta))
        return []

    def add_child(self, child: Child) -> list[Move]:
        """A new application joins the queue."""
        if child.child_id in self._by_id:
            raise EngineError(f"child {child.child_id} is already in the queue")

        def apply() -> None:
            c = self._register(child)
            if self._prefs[c] or self._any[c]:
                self._propose([c])

        return self._event(apply)

    def update_facts(self, child_id: str, facts: Facts) -> list[Move]:
        """New priority facts: queue positions change now; seats at the next freed seat or round."""
        c = self._index(child_id)
        seat = self._assign[c]
        if seat != _NONE:
            self._holders[seat].remove(self._ekey(c, seat))
        was_any = self._any[c]
        self._retire(c)
        self._any[c] = was_any
        child = self._child[c] = replace(self._child[c], facts=facts)
        self._changed_children.add(child_id)
        [(base, special)] = self._keys_for([child], [self._base[c] & _TIE_MASK])
        self._base[c], self._special[c] = base, special
        self._owner[base] = c
        for key in special.values():
            self._owner[key] = c
        self._keys[c] = tuple(special.get(self._pool_inst[p], base) for p in self._prefs[c])
        for p, k in zip(self._prefs[c], self._keys[c], strict=True):
            bisect.insort(self._apps[p], k)
        if was_any:
            for s in self._fitting_specs(child):
                bisect.insort(self._any_by_spec[s], base)
            for i in special:
                self._any_special.setdefault(i, []).append(c)
        if seat != _NONE:
            bisect.insort(self._holders[seat], self._ekey(c, seat))
        return []

    # ------------------------------------------------------------------ queries

    @property
    def instance(self) -> Instance:
        """The instance as changed by the events applied so far."""
        institutions = tuple(
            replace(
                inst,
                pools=tuple(
                    replace(pool, capacity=self._cap[self._pool_of[(iid, pool.group)]])
                    for pool in inst.pools
                ),
            )
            for iid, inst in self._institutions.items()
        )
        return Instance(institutions, tuple(self._child[c] for c in self._by_id.values()))

    def take_changes(self) -> Changes:
        """What the events since the last call changed (see :class:`Changes`); starts anew.

        A store of the engine's :attr:`instance` that writes these after every
        step stays equal to it, whichever events the step applied.
        """
        changes = Changes(
            frozenset(self._changed_children),
            frozenset(self._refs[p] for p in self._changed_pools),
            frozenset(self._moved),
        )
        self._changed_children.clear()
        self._changed_pools.clear()
        self._moved.clear()
        self._events_since_take = False
        return changes

    @property
    def changed(self) -> bool:
        """Whether an event has run since the last :meth:`take_changes` (even one that
        failed half-way)."""
        return self._events_since_take or bool(self._changed_children)

    def children(self) -> list[str]:
        return list(self._by_id)

    def __contains__(self, child_id: object) -> bool:
        return child_id in self._by_id

    def child(self, child_id: str) -> Child:
        """The child as the engine now has it (declined institutions, held place …)."""
        return self._child[self._index(child_id)]

    def capacity(self, institution_id: str, group: str) -> int:
        """Seats of a group now open to newcomers (accepted places have left the market)."""
        p = self._pool_of.get((institution_id, group))
        if p is None:
            raise EngineError(f"no group {group} at institution {institution_id}")
        return self._cap[p]

    def matching(self) -> dict[str, PoolRef]:
        """Child id → offered seat, for every child that has one (held places apart)."""
        assign = self._assign
        return {
            cid: self._refs.__getitem__(assign[c])
            for cid, c in self._by_id.items()
            if assign[c] != _NONE
        }

    def _ref(self, p: int) -> PoolRef | None:
        return None if p == _NONE else self._refs[p]

    def groups(self) -> tuple[GroupState, ...]:
        """Every group, in institution-id order: seats, children placed, last admitted."""
        return tuple(
            _new(GroupState, (self._refs[p], self._cap[p], len(h), h[-1] if h else None))
            for p, h in enumerate(self._holders)
        )

    def placement(self, child_id: str) -> Placement:
        return self._placement(self._index(child_id))

    def _placement(self, c: int) -> Placement:
        child, p = self._child[c], self._assign[c]
        kind: Literal["listed", "held", "any"]
        if p != _NONE:
            iid = self._pools[p].institution_id
            kind = "listed" if iid in child.institutions else "any"
        elif child.held and self._status[c] in (None, "not_yet_due"):
            p, iid, kind = self._held_pool(child), child.held.institution_id, "held"
        else:
            reason = self._status[c]
            if reason is None:
                # Outranked only where a group the child may be offered fits it.
                fitting = self._prefs[c] or (self._any[c] and self._has_fallback(c))
                reason = "outranked" if fitting else "no_fitting_group"
            return _new(Placement, (child.child_id, None, None, None, reason))
        rank = child.institutions.index(iid) + 1 if iid in child.institutions else None
        return _new(Placement, (child.child_id, self._refs[p], kind, rank, None))

    def decode(self, key: int) -> Priority:
        """The criteria, registration time and lottery number a priority key stands for."""
        listed = key < NOT_LISTED
        if not listed:
            key -= NOT_LISTED
        bits, tie = key >> _CRITERIA_SHIFT, key & _TIE_MASK
        criteria = tuple((name, not bits & bit) for bit, name in self._criteria)
        registered = _EPOCH + _MICROSECOND * (tie >> 64)
        return Priority(criteria, registered, tie & ((1 << 64) - 1), listed)

    def explain(self, child_id: str) -> tuple[WhyNot, ...]:
        """For each institution ranked above the child's seat: why the child is not there.

        ``outranked`` names a group that fits the child; ``no_fitting_group``
        an institution where none does. An institution the parents declined is
        no longer ranked and is left out.
        """
        return self._why_not(self._index(child_id))

    def _why_not(self, c: int) -> tuple[WhyNot, ...]:
        if self._status[c] is not None:
            return ()
        if self._one_each[c]:
            # Each listed institution has exactly one group: the groups above the
            # seat (all of them without one) are the institutions ranked above it.
            pools, holders = self._pools, self._holders
            return tuple(
                _new(
                    WhyNot,
                    (
                        pools[p].institution_id,
                        pools[p].group,
                        "outranked",
                        h[-1] if (h := holders[p]) else None,
                        k,
                    ),
                )
                for p, k in zip(self._prefs[c][: self._pos[c]], self._keys[c], strict=False)
            )
        child, seat = self._child[c], self._assign[c]
        if seat != _NONE:
            stop = self._pools[seat].institution_id
        else:
            stop = child.held.institution_id if child.held else None
        prefs, keys, holders, pools = self._prefs[c], self._keys[c], self._holders, self._pools
        reasons = []
        declined = child.declined
        n = 0  # walks prefs, which follow the listed institutions in order
        for iid in child.institutions:
            if iid == stop:
                break
            if iid in declined:
                continue  # not ranked any more: no pool of it is in prefs
            found = False
            while n < len(prefs) and pools[prefs[n]].institution_id == iid:
                p, found = prefs[n], True
                last = holders[p][-1] if holders[p] else None
                reasons.append(_new(WhyNot, (iid, pools[p].group, "outranked", last, keys[n])))
                n += 1
            if not found:
                reasons.append(_new(WhyNot, (iid, None, "no_fitting_group", None, None)))
        return tuple(reasons)

    def queue(self, child_id: str) -> tuple[QueuePosition, ...]:
        """The child's place in line at each group it ranked and still waits for."""
        c = self._index(child_id)
        return tuple(
            position
            for p in self._prefs[c]
            if self._desires(c, p)
            for who, position in self._line(p)
            if who == c
        )

    def _line(self, p: int) -> list[tuple[int, QueuePosition]]:
        """(child, position) of every child waiting for a seat in pool ``p``, in order."""
        owner, prefs, pos = self._owner, self._prefs, self._pos
        waiting = [c for c in map(owner.__getitem__, self._apps[p]) if prefs[c].index(p) < pos[c]]
        pool, seats, total = self._pools[p], self._cap[p], len(waiting)
        iid, group = pool.institution_id, pool.group
        return [
            (c, _new(QueuePosition, (iid, group, n, total, seats)))
            for n, c in enumerate(waiting, 1)
        ]

    def report(self) -> dict[str, ChildReport]:
        """Placement, explanation and queue positions of every child, computed together."""
        with without_gc_pauses():
            lines: list[list[QueuePosition]] = [[] for _ in self._child]
            for p in range(len(self._pools)):
                for c, position in self._line(p):
                    lines[c].append(position)
            placement, why_not = self._placement, self._why_not
            return {
                cid: _new(ChildReport, (placement(c), why_not(c), tuple(lines[c])))
                for cid, c in self._by_id.items()
            }
