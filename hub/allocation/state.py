"""The allocation service's memory: its view of the queue and the engine of the open round.

:class:`AllocationState` holds what the service knows (children, institutions, offers,
rounds) and the engine built for the open round; it maps the view to the engine's inputs.
It holds no SQL (:mod:`hub.allocation.repository` stores it) and takes no decision
(:mod:`hub.allocation.decisions` does). :func:`invariant_problems`, :func:`snapshot` and
:func:`state_differences` are the checks the demo, the tests and the rebuild run on it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from hub.allocation.engine import Allocator
from hub.allocation.model import Child, Facts, HeldPlace, Institution, Rules, SeatPool
from hub.allocation.notices import Notice
from hub.allocation.records import CLOSED, LIVE, ChildFile, Offer
from hub.allocation.rules import MunicipalityRules
from hub.notice import NoticeLaw
from schemas.applications import ApplicationSubmitted
from schemas.institutions import InstitutionRegistered
from schemas.residence import ResidenceDeclared

Seat = tuple[str, str]
"""(institution_id, group_code)"""


class AllocationState:
    """The service's view and its engine, in memory."""

    def __init__(
        self,
        municipality: str,
        rules: Rules,
        clock: Callable[[], datetime],
        recheck_wait: timedelta = timedelta(minutes=10),
    ) -> None:
        self.municipality = municipality
        self.recheck_wait = recheck_wait
        """How long a round waits for the checks before its list (``HUB_RECHECK_WAIT``)."""
        self.rules = rules
        plain = not isinstance(rules, MunicipalityRules)
        self.notice_law: NoticeLaw = NoticeLaw() if plain else rules.notice
        """When notices count as notified (the rules file's; the law's for engine-only rules)."""
        self.appeal: Mapping[str, str] = {} if plain else rules.appeal
        """How to contest a decision, by language (the rules file's ``[documents]``)."""
        self.clock = clock
        self.clear()

    def clear(self) -> None:
        """Forget everything known (a new service, or before the state is loaded again)."""
        self.children: dict[str, ChildFile] = {}
        self.early: dict[str, dict[str, ResidenceDeclared]] = {}
        """Residences of children whose application has not arrived yet, by child and slot."""
        self.institutions: dict[str, InstitutionRegistered] = {}
        self.locations: dict[str, tuple[float, float]] = {}
        self.offers: dict[str, Offer] = {}
        self.live: dict[str, str] = {}  # child_ref → offer_id of its live offer
        self.rounds: dict[str, dict[str, Any]] = {}
        self.notices: dict[str, Notice] = {}
        """Documents for parents by document key, from registration until sent."""
        self.round_id: str | None = None
        self.round_date: date | None = None
        self.pending: dict[str, Any] | None = None
        """The round whose facts are being checked again before its list is built (a row of
        ``rounds`` with ``pending``), if any."""
        self.allocator: Allocator | None = None
        self.sequence = 0
        """The number of the last step taken (one more per step journaled: a step that
        fails, or a clock tick that finds nothing due, takes no number)."""

    def waiting_for_facts(self) -> int:
        """Queued applications that a round would leave out: VIIS or GIS has not answered."""
        return sum(1 for f in self.children.values() if f.status == "queued" and f.missing)

    def start_date(self, application: ApplicationSubmitted) -> date:
        """The day a place offered in the open round starts: the round's date, or later if
        the parents asked for later."""
        return max(self.round_date or date.min, application.desired_start_date)

    def on_list(self, child_ref: str) -> bool:
        """Whether the child is on the open round's admission list: it has a live offer or
        holds a place it accepted."""
        file = self.children.get(child_ref)
        return child_ref in self.live or bool(file and file.accepted_offer)

    def set_institution(self, inst: InstitutionRegistered) -> None:
        """An institution as it is now, with its location if known."""
        self.institutions[inst.institution_id] = inst
        if inst.location is not None:
            self.locations[inst.institution_id] = (inst.location.northing, inst.location.easting)
        else:
            self.locations.pop(inst.institution_id, None)

    def add_offer(self, offer: Offer) -> None:
        self.offers[offer.offer_id] = offer
        if offer.status == LIVE:
            self.live[offer.child_ref] = offer.offer_id

    def pending_date(self) -> date | None:
        """The date of the round being prepared, if any."""
        return None if self.pending is None else date.fromisoformat(self.pending["round_date"])

    def open_round(self, data: dict[str, Any]) -> None:
        """Record a round (loaded or new); an open one becomes the state's round, a pending
        one (its facts being checked) the round being prepared."""
        self.rounds[data["round_id"]] = data
        if data.get("pending"):
            self.pending = data
        if data.get("open"):
            self.round_id, self.round_date = (
                data["round_id"],
                date.fromisoformat(data["round_date"]),
            )

    # ---------------------------------------------------------------- offers and seats

    def live_seats(self) -> dict[str, Seat]:
        """Child → the seat of its live offer."""
        return {
            o.child_ref: (o.institution_id, o.group_code)
            for o in self.offers.values()
            if o.status == LIVE
        }

    def seats_unlike_offers(self) -> int:
        """How many (child, seat) pairs the engine and the live offers disagree on (0 when
        the live offers are exactly the engine's seats, or there is no engine)."""
        if self.allocator is None:
            return 0
        seats = {c: (s.institution_id, s.group) for c, s in self.allocator.matching().items()}
        return len(set(seats.items()) ^ set(self.live_seats().items()))

    # ---------------------------------------------------------------- engine inputs

    def engine_institution(
        self, inst: InstitutionRegistered, capacity: Callable[[str], int] | None = None
    ) -> Institution:
        """The engine's institution: its groups with the seats declared, or ``capacity(group)``."""
        pools = tuple(
            SeatPool(
                inst.institution_id,
                p.group_code,
                p.language,
                p.capacity if capacity is None else capacity(p.group_code),
                min_age_months=p.min_age_months,
                birth_year_from=p.birth_year_from,
                birth_year_to=p.birth_year_to,
            )
            for p in inst.pools
        )
        return Institution(
            inst.institution_id, pools, inst.name, self.locations.get(inst.institution_id)
        )

    def round_institution(self, institution_id: str) -> Institution:
        """The institution as the open round's engine holds it (the seats still open)."""
        engine = self.allocator
        assert engine is not None
        return self.engine_institution(
            self.institutions[institution_id], lambda group: engine.capacity(institution_id, group)
        )

    def engine_child(self, file: ChildFile, on: date) -> Child:
        """The engine's child: the application with its facts as of ``on``."""
        app = file.application
        known = set(self.institutions)
        residences = file.residences.values()

        def resident(subject: str) -> bool:
            return any(
                r.subject == subject
                and r.declared_municipality == self.municipality
                and r.declared_from <= on
                for r in residences
            )

        siblings = file.enrollment.sibling_institution_ids if file.enrollment else ()
        held = None
        if file.enrolled_at:
            iid, _, group = file.enrolled_at.partition("/")
            held = HeldPlace(iid, group)
        elif (
            file.enrollment
            and file.enrollment.attending_institution_id in known
            and file.enrollment.attending_group_code
        ):
            held = HeldPlace(
                file.enrollment.attending_institution_id, file.enrollment.attending_group_code
            )
        location = (
            (file.address.lks92.northing, file.address.lks92.easting) if file.address else None
        )
        return Child(
            child_id=app.child_ref,
            language=app.language,
            desired_start_date=app.desired_start_date,
            institutions=app.institutions,
            registered_at=app.registered_at,
            birth_date=app.child_birth_date,
            # A ground the parents declared ranks the child only once the commission has
            # confirmed it (docs/legal-basis.md, "Priorities"); residence and attendance are
            # as the registers last verified them.
            facts=Facts(
                commission_grounds=frozenset(
                    g.value for g in app.claims.commission_grounds if file.confirmed(g.value)
                ),
                child_resident=resident("child"),
                parent_resident=resident("guardian"),
                large_family=app.claims.large_family and file.confirmed("large_family"),
                siblings_at=frozenset(i for i in siblings if i in known),
                staff_parent_at=frozenset(
                    i
                    for i in app.claims.parent_staff_at
                    if i in known and file.confirmed(f"staff_child:{i}")
                ),
            ),
            held=held,
            accepts_any=app.accepts_any_institution,
            location=location,
            declined=frozenset(file.declined),
        )

    def facts_of(self, file: ChildFile, on: date) -> list[dict[str, Any]]:
        """Every priority fact of the child with its provenance: its value for ``on``, its
        source (``declared``, ``commission``, ``viis``, ``pers``) and when it was verified
        (None: never, e.g. a claim the commission has not decided)."""
        facts = self.engine_child(file, on).facts
        rows: list[dict[str, Any]] = []
        for claim, status in file.claims().items():
            decision = file.decisions.get(claim, {})
            rows.append(
                {
                    "fact": claim,
                    "value": status == "confirmed",
                    "claim": status,
                    "source": "declared" if status == "pending" else "commission",
                    "verified_on": decision.get("decided_on"),
                    "decision_number": decision.get("decision_number"),
                }
            )
        pers = file.verified.get("pers") or max(
            (r.occurred_at.date().isoformat() for r in file.residences.values()), default=None
        )
        rows += [
            {"fact": "child_resident", "value": facts.child_resident, "source": "pers"},
            {"fact": "parent_resident", "value": facts.parent_resident, "source": "pers"},
            {"fact": "siblings_at", "value": sorted(facts.siblings_at), "source": "viis"},
        ]
        for row in rows[-3:]:
            row["verified_on"] = pers if row["source"] == "pers" else file.verified.get("viis")
        return rows


def invariant_problems(state: AllocationState) -> list[str]:
    """What breaks the offers' invariants now (an empty list when all hold):

    - a child has at most one live offer;
    - every offer is live, accepted, declined, expired or revoked;
    - the live offers are exactly the engine's seats, so no seat is offered twice;
    - the live offers plus the places accepted in the round never exceed the seats the
      institution declared for the group, and the places of children who attended the
      group and have accepted one elsewhere (the engine passes those seats on).
    """
    problems = []
    per_child = Counter(o.child_ref for o in state.offers.values() if o.status == LIVE)
    problems += [f"child {c} has {n} live offers" for c, n in per_child.items() if n > 1]
    problems += [
        f"offer {o.offer_id} has status {o.status}"
        for o in state.offers.values()
        if o.status != LIVE and o.status not in CLOSED
    ]
    if state.allocator is None:
        return problems
    if differing := state.seats_unlike_offers():
        problems.append(f"{differing} live offers differ from the engine")
    live = state.live_seats()
    per_group = Counter(live.values())
    for (iid, group), n in per_group.items():
        if n > state.allocator.capacity(iid, group):
            problems.append(f"group {iid}/{group} has {n} live offers for fewer seats")
    # Against the seats the institution declared: live offers plus accepted places, where
    # a child who attended the group (VIIS) and accepted a place elsewhere left one more.
    taken = per_group + Counter(
        (o.institution_id, o.group_code)
        for o in state.offers.values()
        if o.status == "accepted" and o.round_id == state.round_id
    )
    left = Counter(
        (f.enrollment.attending_institution_id, f.enrollment.attending_group_code)
        for f in state.children.values()
        if f.accepted_offer and f.enrollment and f.enrollment.attending_institution_id
    )
    for (iid, group), n in taken.items():
        declared = {p.group_code: p.capacity for p in state.institutions[iid].pools}
        seats = declared.get(group, 0) + left[(iid, group)]
        if n > seats:
            problems.append(
                f"group {iid}/{group}: {n} live or accepted offers, {declared.get(group, 0)}"
                f" seats declared and {left[(iid, group)]} left by children who moved"
            )
    return problems


def declined_offered(state: AllocationState) -> list[str]:
    """Offers made at an institution after the child's parents had declined an offer there
    for the same application, or let it expire where that counts as declining (an empty
    list when declines held)."""
    declined: dict[tuple[str, str, str], str] = {}
    for o in state.offers.values():
        if o.status == "declined" or (o.status == "expired" and state.rules.on_expiry != "annul"):
            key = (o.child_ref, o.application_id, o.institution_id)
            declined[key] = min(declined.get(key, o.closed_at or ""), o.closed_at or "")
    return sorted(
        f"offer {o.offer_id}: {o.institution_id} offered to {o.child_ref} after a decline"
        for o in state.offers.values()
        if (at := declined.get((o.child_ref, o.application_id, o.institution_id))) is not None
        and o.made_at > at
    )


def unconfirmed_ranked(state: AllocationState) -> list[str]:
    """Children whose priority in the open round holds a ground the commission has not
    confirmed (an empty list when only confirmed claims rank)."""
    engine = state.allocator
    if engine is None:
        return []
    found = []
    for child_ref in engine.children():
        facts, file = engine.child(child_ref).facts, state.children.get(child_ref)
        if file is None:
            continue
        claims = [*facts.commission_grounds, *(f"staff_child:{i}" for i in facts.staff_parent_at)]
        claims += ["large_family"] if facts.large_family else []
        found += [f"{child_ref}: {c}" for c in claims if not file.confirmed(c)]
    return sorted(found)


def snapshot(state: AllocationState) -> dict[str, Any]:
    """The service's memory, part by part and key: its view as stored, and the engine's
    children, groups and seats (compared by value: a child's sets print in any order)."""
    engine = state.allocator
    return {
        "children": {k: f.dump() for k, f in state.children.items()},
        "offers": {k: o.dump() for k, o in state.offers.items()},
        "live offers": dict(state.live),
        "institutions": {k: i.model_dump_json() for k, i in state.institutions.items()},
        "rounds": {k: json.dumps(r, sort_keys=True) for k, r in state.rounds.items()},
        "open round": {"round": [state.round_id, str(state.round_date)]},
        "early residences": {
            k: {slot: r.model_dump_json() for slot, r in v.items()} for k, v in state.early.items()
        },
        "steps": {"taken": state.sequence},
        "engine children": {}
        if engine is None
        else {c.child_id: c for c in engine.instance.children},
        "engine groups": {} if engine is None else {g.pool: g for g in engine.groups()},
        "engine seats": {} if engine is None else engine.matching(),
    }


def state_differences(live: AllocationState, other: AllocationState) -> list[str]:
    """Where two states differ (an empty list when they are equal), part by part and key."""
    found = []
    a, b = snapshot(live), snapshot(other)
    for part, mine in a.items():
        theirs = b[part]
        keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if keys:
            shown = ", ".join(map(str, keys[:5])) + (" …" if len(keys) > 5 else "")
            found.append(f"{part}: {len(keys)} different ({shown})")
    return found


__all__ = [
    "AllocationState",
    "Seat",
    "declined_offered",
    "invariant_problems",
    "snapshot",
    "state_differences",
    "unconfirmed_ranked",
]
