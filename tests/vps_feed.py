"""The synthetic municipality's hub messages, made by the VPS adapter's own mapping.

Tests and benchmarks that feed applications and institutions to the allocation
service take them from here: each is the feed entry VPS would serve
(:mod:`simulators.messages`) turned into a message by ``adapters.vps.message_for``,
so a change to the adapter's mapping shows in every test that uses them.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from adapters.vps import message_for
from schemas.applications import ApplicationSubmitted
from schemas.institutions import InstitutionRegistered
from simulators.messages import application_data, institution_data
from simulators.municipality import Child, Institution


def _from_feed(kind: str, data: dict[str, Any], municipality: str, at: str) -> Any:
    # Each call reads a feed of its own, so every message gets an event_id of its own.
    entry = {"seq": 1, "type": kind, "at": at, "data": data}
    return message_for(entry, municipality, feed=uuid4().hex[:12])


def institution_message(municipality: str, inst: Institution) -> InstitutionRegistered:
    """``InstitutionRegistered`` of ``inst``, as the adapter reads it from the feed."""
    return _from_feed(
        "institution.registered", institution_data(inst), municipality, "2020-01-01T00:00:00Z"
    )


def application_message(municipality: str, child: Child) -> ApplicationSubmitted:
    """``ApplicationSubmitted`` of the child, as the adapter reads it from the feed."""
    return _from_feed(
        "application.submitted",
        application_data(child),
        municipality,
        child.registered_at.isoformat(),
    )


__all__ = ["application_message", "institution_message"]
