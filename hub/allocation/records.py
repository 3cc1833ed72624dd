"""What the allocation service records of each child and offer (its view's records).

Plain data with their JSON form: the repository (:mod:`hub.allocation.repository`)
stores them, the decisions (:mod:`hub.allocation.decisions`) change them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from schemas.addresses import AddressResolutionFailed, AddressResolved
from schemas.applications import ApplicationSubmitted
from schemas.base import Message
from schemas.enrollment import EnrollmentChecked, EnrollmentCheckFailed
from schemas.residence import ResidenceDeclared

_IDS = uuid.UUID("5a1e0c3e-6f0b-4c2a-9a57-0d3f3e6c1b2a")
"""Namespace of the service's deterministic ids: a redelivered cause yields the same offer."""

LIVE = "live"
FactAnswer = EnrollmentChecked | EnrollmentCheckFailed | AddressResolved | AddressResolutionFailed
"""An answer of VIIS or GIS about one child's facts."""
CLOSED = ("accepted", "declined", "expired", "revoked")


def stable_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(_IDS, ":".join(str(p) for p in parts))


@dataclass
class ChildFile:
    """Everything the service knows of one child's application."""

    application: ApplicationSubmitted
    status: str = "queued"
    """queued, withdrawn, annulled or enrolled."""
    enrollment: EnrollmentChecked | None = None
    enrollment_failed: str | None = None
    address: AddressResolved | None = None
    address_failed: str | None = None
    residences: dict[str, ResidenceDeclared] = field(default_factory=dict)
    enrolled_at: str | None = None
    """``institution/group`` of an accepted place registered in VIIS."""
    enrollment_refused: str | None = None
    """Why VIIS refused to enrol the child in the accepted place (e.g. ``already_enrolled``)."""
    accepted_offer: str | None = None
    """The offer whose place the child holds (accepted); a better one accepted replaces it."""
    asked: str | None = None
    """``correlation_id`` of the latest enrichment requests: answers to older ones are stale."""
    decisions: dict[str, dict[str, str]] = field(default_factory=dict)
    """The commission's decision on each declared claim, by claim key (``adopted``,
    ``large_family``, ``staff_child:<institution>``): status (confirmed or rejected),
    decision number, by whom, on what date, and why (a rejection). A claim without a
    decision is pending and ranks nothing."""
    declined: set[str] = field(default_factory=set)
    """Institutions whose offer the parents declined (or let expire where that counts as a
    decline): never offered to the child again, in any round."""
    verified: dict[str, str] = field(default_factory=dict)
    """The date (ISO) each register's facts were last verified for: ``viis`` (attendance,
    siblings), ``pers`` (declared residence)."""
    rechecking: str | None = None
    """``correlation_id`` of the checks before the pending round, while they are out."""
    awaiting: list[str] = field(default_factory=list)
    """The registers whose answer to those checks is still out (``viis``, ``pers``)."""
    unverified: list[str] = field(default_factory=list)
    """Registers that did not answer the checks before the latest round (the child was left
    out of that list)."""
    authorisation: str | None = None
    """For an application filed by an authorised person: ``pending``, ``verified``,
    ``refused: <reason>`` or ``failed: <reason>`` (the register did not answer; it waits)."""

    def answers(self, message: Message) -> bool:
        """Whether ``message`` answers the latest enrichment requests (not earlier ones)."""
        return self.asked is None or str(message.correlation_id) == self.asked

    def record(
        self,
        answer: EnrollmentChecked
        | EnrollmentCheckFailed
        | AddressResolved
        | AddressResolutionFailed,
    ) -> None:
        """Keep VIIS's or GIS's answer: the fact found, or why it could not be found."""
        if isinstance(answer, EnrollmentChecked):
            self.enrollment, self.enrollment_failed = answer, None
        elif isinstance(answer, EnrollmentCheckFailed):
            self.enrollment_failed = answer.reason
        elif isinstance(answer, AddressResolved):
            self.address, self.address_failed = answer, None
        else:
            self.address_failed = answer.reason

    @property
    def missing(self) -> list[str]:
        """Facts the application still waits for."""
        waiting = []
        if self.enrollment is None:
            waiting.append(
                "viis" + (f" (failed: {self.enrollment_failed})" if self.enrollment_failed else "")
            )
        if self.address is None and self.address_failed is None:
            waiting.append("gis")
        if self.authorisation is not None and self.authorisation != "verified":
            waiting.append(f"authorisation ({self.authorisation})")
        return waiting

    def claims(self) -> dict[str, str]:
        """Every claim the parents declared, by key, with its state: ``pending``,
        ``confirmed`` or ``rejected``."""
        app = self.application.claims
        keys = [g.value for g in app.commission_grounds]
        keys += ["large_family"] if app.large_family else []
        keys += [f"staff_child:{i}" for i in app.parent_staff_at]
        return {k: self.decisions.get(k, {}).get("status", "pending") for k in keys}

    def confirmed(self, claim: str) -> bool:
        return self.decisions.get(claim, {}).get("status") == "confirmed"

    def dump(self) -> str:
        def js(message: Message | None) -> Any:
            return None if message is None else json.loads(message.model_dump_json())

        return json.dumps(
            {
                "application": js(self.application),
                "status": self.status,
                "enrollment": js(self.enrollment),
                "enrollment_failed": self.enrollment_failed,
                "address": js(self.address),
                "address_failed": self.address_failed,
                "residences": {k: js(v) for k, v in self.residences.items()},
                "enrolled_at": self.enrolled_at,
                "enrollment_refused": self.enrollment_refused,
                "accepted_offer": self.accepted_offer,
                "asked": self.asked,
                "decisions": self.decisions,
                "declined": sorted(self.declined),
                "verified": self.verified,
                "rechecking": self.rechecking,
                "awaiting": self.awaiting,
                "unverified": self.unverified,
                "authorisation": self.authorisation,
            },
            sort_keys=True,
        )

    @classmethod
    def load(cls, text: str) -> ChildFile:
        data = json.loads(text)

        def model(kind: type[Message], value: Any) -> Any:
            return None if value is None else kind.model_validate(value)

        return cls(
            application=ApplicationSubmitted.model_validate(data["application"]),
            status=data["status"],
            enrollment=model(EnrollmentChecked, data["enrollment"]),
            enrollment_failed=data["enrollment_failed"],
            address=model(AddressResolved, data["address"]),
            address_failed=data["address_failed"],
            residences={
                k: ResidenceDeclared.model_validate(v) for k, v in data["residences"].items()
            },
            enrolled_at=data["enrolled_at"],
            enrollment_refused=data.get("enrollment_refused"),
            accepted_offer=data.get("accepted_offer"),
            asked=data.get("asked"),
            decisions=data.get("decisions", {}),
            declined=set(data.get("declined", ())),
            verified=data.get("verified", {}),
            rechecking=data.get("rechecking"),
            awaiting=data.get("awaiting", []),
            unverified=data.get("unverified", []),
            authorisation=data.get("authorisation"),
        )


@dataclass
class Offer:
    offer_id: str
    child_ref: str
    application_id: str
    institution_id: str
    group_code: str
    round_id: str | None
    status: str = LIVE
    made_at: str = ""
    notified_on: str | None = None
    respond_by: str | None = None
    closed_at: str | None = None
    decision_number: str | None = None
    """The DVS registration number of the admission decision (an accepted offer)."""

    def dump(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @property
    def decision_key(self) -> str:
        return f"decision:{self.offer_id}"

    @classmethod
    def load(cls, text: str) -> Offer:
        return cls(**json.loads(text))


__all__ = ["CLOSED", "LIVE", "ChildFile", "FactAnswer", "Offer", "stable_id"]
