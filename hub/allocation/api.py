"""Where a child stands, as JSON over HTTP for a portal (and for `hub queue`).

``GET /children/{child_ref}`` answers with the application's status and
missing facts, its live offer or place, its position in each queue it waits
in, and for every institution ranked above its place why it is not there
(the last admitted child's priority against its own). ``GET /health``
answers with counts: children (by status and waiting for facts), the open
round, offers by status. Personal codes never appear in the answers.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hub.allocation.engine import Priority
from hub.allocation.service import LIVE, AllocationState
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
        "institutions": list(app.institutions),
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
    }


def app(state: AllocationState) -> Starlette:
    async def child(request: Request) -> JSONResponse:
        found = child_report(state, request.path_params["child_ref"])
        if found is None:
            return JSONResponse({"error": "unknown child"}, status_code=404)
        return JSONResponse(found)

    async def health(_: Request) -> JSONResponse:
        return JSONResponse(summary(state))

    return Starlette(
        routes=[Route("/children/{child_ref}", child), Route("/health", health)],
    )


def serving(state: AllocationState, port: int, host: str = "127.0.0.1") -> Any:
    """A service task that serves :func:`app` on ``host:port`` until the stop event."""
    return http_task(app(state), port, host)
