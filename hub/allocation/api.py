"""The allocation service, read-only, as JSON over HTTP: for a portal, for `hub queue`,
for operators and for the demo.

- ``GET /children/{child_ref}``: the application's status and missing facts, every
  priority fact with its source and the date it was verified, the institutions declined,
  its live offer or place, its position in each queue it waits in, and for
  every institution ranked above its place why it is not there (the last
  admitted child's priority against its own).
- ``GET /priority/pending``: the grounds parents declared that the commission has not
  decided yet (``hub priority pending``), oldest application first.
- ``GET /health``: counts: children (by status and waiting for facts), the
  open round, offers by status.
- ``GET /offers`` (``?status=live``, say): every offer with its status, the
  date to answer by, the DVS number of its admission decision and, for an
  accepted one, whether VIIS enrolled the child or refused.
- ``GET /rounds``: every round, with its admission list's DVS document key and
  registration number.
- ``GET /institutions``: the seats each institution declared, and how many are
  under a live offer or taken by an accepted one.
- ``GET /unplaced``: children without an accepted place, counted by why.
- ``GET /checks``: what the service finds wrong with itself: its invariants,
  seats left free while a child waits for them, offers made at an institution the parents
  had declined, priorities holding a ground the commission has not confirmed, and the
  differences between its
  memory and its SQLite store loaded afresh, as a restart would (``null`` when
  it was not told where its store is). Every list is empty when all is well;
  reading the store makes this the one expensive call.

Children appear by reference (``child_ref``) only: personal codes never appear
in the answers. The API binds to loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hub.allocation.engine import Priority
from hub.allocation.service import (
    LIVE,
    AllocationState,
    invariant_problems,
    reloaded,
    state_differences,
)
from hub.allocation.state import declined_offered, unconfirmed_ranked
from hub.http import http_task


def _priority(priority: Priority | None) -> dict[str, Any] | None:
    if priority is None:
        return None
    return {
        "criteria": dict(priority.criteria),
        "registered_at": priority.registered_at.isoformat(),
        "lottery": priority.lottery,
        "listed": priority.listed,
    }


def child_report(state: AllocationState, child_ref: str) -> dict[str, Any] | None:
    """Everything a parent may see about ``child_ref``; None if the service does not know it."""
    file = state.children.get(child_ref)
    if file is None:
        return None
    app = file.application
    report: dict[str, Any] = {
        "child_ref": child_ref,
        "application_id": app.application_id,
        "status": file.status,
        "missing_facts": file.missing,
        "unverified": file.unverified,
        "authorisation": file.authorisation,
        "facts": state.facts_of(file, state.round_date or state.clock().date()),
        "institutions": list(app.institutions),
        "declined": sorted(file.declined),
        "registered_at": app.registered_at.isoformat(),
        "round": state.round_id,
        "offer": None,
        "placement": None,
        "queue": [],
        "why_not": [],
    }
    offer_id = state.live.get(child_ref)
    if offer_id is not None:
        offer = state.offers[offer_id]
        report["offer"] = {
            "offer_id": offer.offer_id,
            "institution_id": offer.institution_id,
            "group": offer.group_code,
            "status": LIVE,
            "respond_by": offer.respond_by,
        }
    engine = state.allocator
    if engine is not None and child_ref in engine:
        placement = engine.placement(child_ref)
        report["placement"] = {
            "institution_id": placement.pool.institution_id if placement.pool else None,
            "group": placement.pool.group if placement.pool else None,
            "kind": placement.kind,
            "preference_rank": placement.preference_rank,
            "reason": placement.reason,
        }
        report["queue"] = [q._asdict() for q in engine.queue(child_ref)]
        report["why_not"] = [
            {
                "institution_id": w.institution_id,
                "group": w.group,
                "reason": w.reason,
                "last_admitted": _priority(
                    engine.decode(w.last_admitted) if w.last_admitted is not None else None
                ),
                "own": _priority(engine.decode(w.own) if w.own is not None else None),
            }
            for w in engine.explain(child_ref)
        ]
    return report


def pending_claims(state: AllocationState) -> list[dict[str, Any]]:
    """Grounds the parents declared that the commission has not decided yet, oldest first
    (queued applications only: nobody decides for a withdrawn one)."""
    found = []
    for file in state.children.values():
        if file.status not in ("queued", "enrolled"):
            continue
        for claim, status in file.claims().items():
            if status == "pending":
                ground, _, institution = claim.partition(":")
                found.append(
                    {
                        "child_ref": file.application.child_ref,
                        "application_id": file.application.application_id,
                        "ground": ground,
                        "institution_id": institution or None,
                        "registered_at": file.application.registered_at.isoformat(),
                        "status": file.status,
                    }
                )
    return sorted(found, key=lambda c: (c["registered_at"], c["child_ref"], c["ground"]))


def summary(state: AllocationState) -> dict[str, Any]:
    """The service at a glance: the queue, what waits for facts, the open round and offers."""
    statuses = Counter(file.status for file in state.children.values())
    return {
        "status": "ok",
        "municipality": state.municipality,
        "institutions": len(state.institutions),
        "children": len(state.children),
        "waiting_for_facts": state.waiting_for_facts(),
        "early_residences": len(state.early),
        "statuses": dict(sorted(statuses.items())),
        "round": state.round_id,
        "live_offers": len(state.live),
        "offers": dict(sorted(Counter(o.status for o in state.offers.values()).items())),
        # Documents for parents: registering (waiting for the DVS's number), sent, dropped
        # (an invitation whose offer closed first), unregistered (the DVS refused it).
        "notices": dict(sorted(Counter(n.status for n in state.notices.values()).items())),
        # Declared grounds of the applications in the queue by the commission's decision
        # (pending ones rank nothing), and
        # applications filed by an authorised person by the register's answer.
        "claims": dict(
            sorted(
                Counter(
                    s
                    for f in state.children.values()
                    if f.status in ("queued", "enrolled")
                    for s in f.claims().values()
                ).items()
            )
        ),
        "authorisations": dict(
            sorted(
                Counter(
                    f.authorisation.partition(":")[0]
                    for f in state.children.values()
                    if f.authorisation is not None
                ).items()
            )
        ),
        "preparing_round": None
        if state.pending is None
        else {k: state.pending[k] for k in ("round_id", "round_date", "outstanding")},
    }


def offers(state: AllocationState, status: str | None = None) -> list[dict[str, Any]]:
    """Every offer (with ``status``, those in it), oldest first.

    ``enrolment`` is said of an accepted offer only: ``enrolled`` once VIIS has
    registered the child, ``refused`` when VIIS refused (``enrollment_refused``
    says why), ``null`` while it has not answered.
    """
    found = []
    for offer in state.offers.values():
        if status is not None and offer.status != status:
            continue
        file = state.children.get(offer.child_ref)
        enrolment = refused = None
        if offer.status == "accepted" and file is not None:
            refused = file.enrollment_refused
            if file.status == "enrolled":
                enrolment = "enrolled"
            elif refused:
                enrolment = "refused"
        found.append(
            {
                "offer_id": offer.offer_id,
                "child_ref": offer.child_ref,
                "round_id": offer.round_id,
                "institution_id": offer.institution_id,
                "group": offer.group_code,
                "status": offer.status,
                "made_at": offer.made_at,
                "respond_by": offer.respond_by,
                "closed_at": offer.closed_at,
                "decision_number": offer.decision_number,
                "enrolment": enrolment,
                "enrollment_refused": refused,
            }
        )
    return found


def rounds(state: AllocationState) -> list[dict[str, Any]]:
    """Every round, oldest first, with its admission list as registered in the DVS."""
    return [
        {
            "round_id": r["round_id"],
            "round_date": r.get("round_date"),
            "open": bool(r.get("open")),
            "offers": r.get("offers"),
            "considered": r.get("considered"),
            "preparing": bool(r.get("pending")),
            # The checks before the list: children whose facts were verified again, facts
            # found changed, children left out because a register did not answer in time.
            "rechecked": r.get("rechecked", 0),
            "facts_changed": r.get("facts_changed", 0),
            "facts_unverified": r.get("facts_unverified", 0),
            "admission_list": {
                "document_key": r.get("document_key"),
                "registration_number": r.get("registration_number"),
                "registration_failed": r.get("registration_failed"),
            },
        }
        for r in sorted(state.rounds.values(), key=lambda r: str(r.get("round_date")))
    ]


def institutions(state: AllocationState) -> list[dict[str, Any]]:
    """Every institution: the seats it declared (all groups) and how many are taken."""
    by_status = Counter((o.institution_id, o.status) for o in state.offers.values())
    return [
        {
            "institution_id": iid,
            "seats": sum(p.capacity for p in inst.pools),
            "offered": by_status[(iid, LIVE)],
            "accepted": by_status[(iid, "accepted")],
        }
        for iid, inst in sorted(state.institutions.items())
    ]


def unplaced(state: AllocationState) -> dict[str, Any]:
    """Children without an accepted place, counted by why: ``expired`` (the offer, or the
    application annulled after it), ``declined``, the engine's reason for the child
    (``outranked``, ``no_fitting_group``, ``not_yet_due``), ``held`` (keeps the place it
    attends), ``placed`` (an offer is open), ``unverified`` (left out of the list: a register
    did not answer the checks before it), or the application's status outside the round."""
    reasons: Counter[str] = Counter()
    statuses_of: dict[str, set[str]] = {}
    for offer in state.offers.values():
        statuses_of.setdefault(offer.child_ref, set()).add(offer.status)
    engine = state.allocator
    for child_ref, file in state.children.items():
        statuses = statuses_of.get(child_ref, set())
        if "accepted" in statuses:
            continue
        if "expired" in statuses or file.status == "annulled":
            reasons["expired"] += 1
        elif "declined" in statuses:
            reasons["declined"] += 1
        elif engine is not None and child_ref in engine:
            placement = engine.placement(child_ref)
            reasons["held" if placement.kind == "held" else placement.reason or "placed"] += 1
        elif file.unverified and file.status == "queued":
            reasons["unverified"] += 1  # a register did not answer the checks before the list
        else:
            reasons[file.status] += 1
    return {"children": sum(reasons.values()), "reasons": dict(reasons.most_common())}


def free_seats(state: AllocationState) -> list[str]:
    """Children who wait for a group that has a free seat (the round would have offered
    it): one line each, naming the child by reference. Empty when no seat is wasted."""
    engine = state.allocator
    if engine is None:
        return []
    open_groups = {
        (g.pool.institution_id, g.pool.group) for g in engine.groups() if g.placed < g.capacity
    }
    found = []
    for child_ref in engine.children():
        if engine.placement(child_ref).pool is not None:
            continue
        for position in engine.queue(child_ref):
            pool = (position.institution_id, position.group)
            if pool in open_groups:
                found.append(f"{child_ref} waits for {pool[0]}/{pool[1]}, which has a free seat")
                break
    return found


async def store_differences(
    state: AllocationState, store: Path, *, attempts: int = 20
) -> list[str]:
    """How the service's memory differs from its store at ``store`` loaded afresh.

    The two are compared when both have taken the same number of steps: a step
    taken while the store was read (its memory changed, its transaction not yet
    committed, or committed meanwhile) makes the reading stale, and it is read
    again, up to ``attempts`` times; then the differences are those of the last.
    """
    for _ in range(attempts - 1):
        fresh = await reloaded(state, store)
        if fresh.sequence == state.sequence:
            return state_differences(state, fresh)
        await asyncio.sleep(0.05)
    return state_differences(state, await reloaded(state, store))


async def checks(state: AllocationState, store: Path | None = None) -> dict[str, Any]:
    """The answer of ``GET /checks`` (see the module's docstring)."""
    return {
        "invariants": invariant_problems(state),
        "free_seats": free_seats(state),
        "declined_offered": declined_offered(state),
        "unconfirmed_ranked": unconfirmed_ranked(state),
        "store": None if store is None else await store_differences(state, store),
    }


def app(state: AllocationState, store: Path | None = None) -> Starlette:
    """The API over ``state``; ``store`` is the service's SQLite database, for ``/checks``."""

    async def child(request: Request) -> JSONResponse:
        found = child_report(state, request.path_params["child_ref"])
        if found is None:
            return JSONResponse({"error": "unknown child"}, status_code=404)
        return JSONResponse(found)

    async def health(_: Request) -> JSONResponse:
        return JSONResponse(summary(state))

    async def offer_list(request: Request) -> JSONResponse:
        return JSONResponse({"offers": offers(state, request.query_params.get("status"))})

    async def round_list(_: Request) -> JSONResponse:
        return JSONResponse({"rounds": rounds(state)})

    async def institution_list(_: Request) -> JSONResponse:
        return JSONResponse({"institutions": institutions(state)})

    async def without_place(_: Request) -> JSONResponse:
        return JSONResponse(unplaced(state))

    async def self_checks(_: Request) -> JSONResponse:
        return JSONResponse(await checks(state, store))

    async def claims_pending(_: Request) -> JSONResponse:
        return JSONResponse(pending_claims(state))

    return Starlette(
        routes=[
            Route("/children/{child_ref}", child),
            Route("/health", health),
            Route("/offers", offer_list),
            Route("/rounds", round_list),
            Route("/institutions", institution_list),
            Route("/unplaced", without_place),
            Route("/checks", self_checks),
            Route("/priority/pending", claims_pending),
        ],
    )


def serving(
    state: AllocationState, port: int, host: str = "127.0.0.1", *, store: Path | None = None
) -> Any:
    """A service task that serves :func:`app` on ``host:port`` until the stop event."""
    return http_task(app(state, store), port, host)
