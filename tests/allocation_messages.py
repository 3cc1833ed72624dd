"""Allocation messages built for tests: the operator's round command, and offers and their
deadlines as the allocation service sends them."""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import uuid4

from schemas.allocation import OfferDeadlineSet, OfferMade, RunRound
from schemas.topics import OPERATOR


def round_command(**changes: Any) -> RunRound:
    """The operator's command to run a round in Riga for places from 1 September 2026;
    ``changes`` replace its fields."""
    fields: dict[str, Any] = {
        "producer": OPERATOR,
        "municipality": "riga",
        "round_id": uuid4(),
        "round_date": date(2026, 9, 1),
        "requested_by": "test",
    }
    return RunRound.new(**(fields | changes))


def offer_made(**changes: Any) -> OfferMade:
    """A new offer in Riga of a place from 1 September 2026; ``changes`` replace its fields
    (``municipality=None`` with ``caused_by`` takes the municipality of the cause)."""
    fields: dict[str, Any] = {
        "producer": "allocation",
        "municipality": "riga",
        "offer_id": uuid4(),
        "child_ref": "CH-0001",
        "round_id": None,
        "application_id": "APP-0001",
        "institution_id": "PII-001",
        "group_code": "2022-lv",
        "language": "lv",
        "start_date": date(2026, 9, 1),
        "response_days": 15,
        "preference_rank": 1,
    }
    return OfferMade.new(**(fields | changes))


def deadline_set(offer: OfferMade, *, notified_on: date, respond_by: date) -> OfferDeadlineSet:
    """The deadline of ``offer``: its guardian counts as notified on ``notified_on``."""
    return OfferDeadlineSet.new(
        producer="allocation",
        municipality=offer.municipality,
        offer_id=offer.offer_id,
        child_ref=offer.child_ref,
        notified_on=notified_on,
        respond_by=respond_by,
    )
