"""VPS simulator: the parents' e-service, the pre-school queue register and the
population register extract, behind one HTTP API.

Parents (or client-service-centre staff on their behalf, with a power of
attorney) submit, change and withdraw applications, and answer offers. The
population register records declared residence and its changes. Everything
that happens is appended to one **event feed** (``GET /v1/events?after=N``),
numbered from 1, which the VPS adapter polls; the feed starts with the
municipality's institutions. The feed lives in memory only: every start of
the simulator begins a new feed with a new random id (12 hex digits), which
every page carries as ``feed`` so that a reader can tell a reset feed from
the one it was reading.

What the hub pushes back, so that parents can see it:
- ``PUT /v1/offers/{offer_id}`` shows an offer; showing a live offer again
  replaces it (the call is idempotent). An offer that is closed (any status
  but ``live``) is never reopened: the call answers 409 ``closed`` and the
  offer stays as it was.
- ``PUT /v1/offers/{offer_id}/status`` sets the offer's status to accepted,
  declined, expired or revoked; ``PUT /v1/offers/{offer_id}/deadline`` sets
  ``respond_by``, the date by which it must be answered. Both answer 404
  ``unknown_offer`` for an offer that was not shown yet.
- ``PUT /v1/rounds/{round_id}`` stores the summary of an admission round
  (applications considered, offers made, children left unplaced, lottery
  seed, fill per institution), replacing an earlier one of the same round;
  it is what the e-service publishes the admission list from.
  ``GET /v1/rounds/{round_id}`` reads it back (404 ``unknown_round``).

Children get a VPS id (12 hex digits) on their first application, drawn from
a generator seeded with the municipality's code and seed (the same sequence
of ids in every run) and not derived from the personal code, so the id says
nothing about the child. It is remembered per personal code, written either
``DDMMYY-NNNNN`` or ``DDMMYYNNNNN`` (one child, one id: a second application
answers 409 ``already_queued`` while the first is active). Personal codes
(the child's, the guardians', the siblings', the population register's) are
validated (422 if invalid) and stored as ``DDMMYY-NNNNN``; they travel only
in request and feed bodies, never in URLs.

Magic inputs (to reach every branch of the adapter):
- a guardian e-mail ``broken@example.lv`` makes the feed entry of that
  application malformed (fields missing), as a faulty VPS release would;
- language ``xx`` is refused with 422, like any invalid field.

Fault injection: see :mod:`simulators.faults` (header ``X-Simulate-Fault``).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query
from pydantic import AfterValidator, BaseModel, Field

from schemas.values import PersonalCode
from simulators.faults import FaultInjection, Faults
from simulators.messages import institution_data
from simulators.municipality import SyntheticMunicipality

BROKEN_EMAIL = "broken@example.lv"
EventType = Literal[
    "institution.registered",
    "application.submitted",
    "application.changed",
    "application.withdrawn",
    "offer.answered",
    "residence.declared",
]


def _code(value: str) -> str:
    """The code as ``DDMMYY-NNNNN``; ValueError (422) for an invalid one."""
    return PersonalCode(value).reveal()


ValidCode = Annotated[str, AfterValidator(_code)]


class GuardianIn(BaseModel):
    personal_code: ValidCode = Field(description="Guardian's personal code.")
    email: str | None = None
    phone: str | None = None


class Claims(BaseModel):
    large_family: bool = False
    sibling_personal_codes: list[ValidCode] = Field(default_factory=list, max_length=12)
    parent_staff_at: list[str] = Field(default_factory=list, max_length=10)


class ApplicationIn(BaseModel):
    """An application as the e-service or a client-service centre takes it."""

    child_personal_code: ValidCode
    child_birth_date: date
    guardians: list[GuardianIn] = Field(min_length=1, max_length=2)
    residence_address_code: str = Field(pattern=r"^\d{9}$")
    institutions: list[str] = Field(min_length=1, max_length=10)
    desired_start_date: date
    language: Literal["lv", "ru", "en", "pl", "uk", "xx"] = "lv"
    accepts_any_institution: bool = False
    claims: Claims = Field(default_factory=Claims)
    channel: Literal["e_service", "client_service_centre"] = "e_service"
    staff_id: str | None = Field(default=None, description="Staff member who took it (centre).")
    power_of_attorney: str | None = Field(
        default=None, description="Reference of the power of attorney (centre, on behalf)."
    )


class Accepted(BaseModel):
    application_id: str
    child_id: str
    registered_at: datetime


class ChangeIn(BaseModel):
    institutions: list[str] | None = Field(default=None, min_length=1, max_length=10)
    desired_start_date: date | None = None
    language: Literal["lv", "ru", "en", "pl", "uk"] | None = None
    accepts_any_institution: bool | None = None


class WithdrawIn(BaseModel):
    reason: Literal["parent_request", "moved_away", "enrolled_elsewhere", "annulled"] = (
        "parent_request"
    )


class OfferIn(BaseModel):
    application_id: str
    child_id: str
    institution_id: str
    group_code: str
    status: Literal["live", "accepted", "declined", "expired", "revoked"] = "live"
    respond_by: date | None = None


class StatusIn(BaseModel):
    status: Literal["accepted", "declined", "expired", "revoked"]


class DeadlineIn(BaseModel):
    respond_by: date = Field(description="Last day the parents may accept or decline.")


class InstitutionFillIn(BaseModel):
    institution_id: str
    capacity: int = Field(ge=0, description="Seats for new children in all groups.")
    offered: int = Field(ge=0, description="Seats under a live offer.")
    accepted: int = Field(ge=0, description="Seats taken by accepted offers.")


class RoundIn(BaseModel):
    """The summary of an admission round, from which the admission list is published."""

    round_date: date
    applications_considered: int = Field(ge=0)
    offers_made: int = Field(ge=0)
    children_unplaced: int = Field(ge=0)
    lottery_seed: int = Field(description="Published seed of the tie-break lottery.")
    institutions: list[InstitutionFillIn] = Field(default_factory=list)


class AnswerIn(BaseModel):
    verdict: Literal["accept", "decline"]


class ResidenceIn(BaseModel):
    personal_code: ValidCode
    address_code: str = Field(pattern=r"^\d{9}$")
    territory_code: str = Field(pattern=r"^\d{7}$")
    municipality: str
    declared_from: date


class FeedEvent(BaseModel):
    seq: int
    type: EventType
    at: datetime
    data: dict[str, Any]


class Feed(BaseModel):
    feed: str = Field(description="Id of this feed; a new one at every start of the register.")
    events: list[FeedEvent]
    last: int = Field(description="Number of the newest event in the feed.")


@dataclass
class Register:
    """The simulator's state: applications, offers, residence and the event feed."""

    town: SyntheticMunicipality
    clock: Callable[[], datetime]
    events: list[FeedEvent] = field(default_factory=list)
    applications: dict[str, dict[str, Any]] = field(default_factory=dict)
    child_ids: dict[str, str] = field(default_factory=dict)
    """Personal code (``DDMMYY-NNNNN``) → VPS child id."""
    offers: dict[str, OfferIn] = field(default_factory=dict)
    answered: dict[str, str] = field(default_factory=dict)
    rounds: dict[str, RoundIn] = field(default_factory=dict)
    feed_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    queued: dict[str, str] = field(default_factory=dict)
    """VPS child id → its active application's id (one at a time)."""

    def __post_init__(self) -> None:
        self._ids = random.Random(f"{self.town.code}:{self.town.seed}:child-ids")
        self._issued = set(self.child_ids.values())
        self.institutions = {i.institution_id: i for i in self.town.institutions}
        self.declared_elsewhere = {
            _code(c.personal_code) for c in self.town.children if not c.declared_here
        }
        for inst in self.town.institutions:
            self.append("institution.registered", institution_data(inst))

    def append(self, kind: EventType, data: dict[str, Any]) -> FeedEvent:
        event = FeedEvent(seq=len(self.events) + 1, type=kind, at=self.clock(), data=data)
        self.events.append(event)
        return event

    def child_id(self, personal_code: str) -> str:
        """The child's VPS id, issued at the first application: random, not derived from the
        code (a hash of a personal code is reversed by trying every code)."""
        code = _code(personal_code)
        if code not in self.child_ids:
            new = f"{self._ids.getrandbits(48):012x}"
            while new in self._issued:
                new = f"{self._ids.getrandbits(48):012x}"
            self.child_ids[code] = new
            self._issued.add(new)
        return self.child_ids[code]

    def offer(self, offer_id: str) -> OfferIn:
        found = self.offers.get(offer_id)
        if found is None:
            raise HTTPException(404, {"error": "unknown_offer"})
        return found

    def show(self, offer_id: str, offer: OfferIn) -> None:
        shown = self.offers.get(offer_id)
        if shown is not None and shown.status != "live":
            raise HTTPException(409, {"error": "closed", "status": shown.status})
        self.offers[offer_id] = offer

    def submit(self, form: ApplicationIn) -> Accepted:
        if form.language == "xx":
            raise HTTPException(422, {"error": "invalid_language"})
        unknown = [i for i in form.institutions if i not in self.institutions]
        if unknown:
            raise HTTPException(422, {"error": "unknown_institution", "institutions": unknown})
        on_behalf = form.channel == "client_service_centre"
        if on_behalf and not (form.staff_id and form.power_of_attorney):
            raise HTTPException(422, {"error": "power_of_attorney_required"})
        child_id = self.child_id(form.child_personal_code)
        if child_id in self.queued:
            raise HTTPException(409, {"error": "already_queued"})
        now = self.clock()
        application_id = f"APP-{now.year}-{len(self.applications) + 1:06d}"
        data = {
            "application_id": application_id,
            "child_id": child_id,
            "registered_at": now.isoformat(),
            **form.model_dump(mode="json"),
        }
        self.applications[application_id] = {**data, "active": True}
        self.queued[child_id] = application_id
        if any(g.email == BROKEN_EMAIL for g in form.guardians):
            data = {"application_id": application_id}  # a faulty release drops the fields
        self.append("application.submitted", data)
        self.append("residence.declared", self._residence(form, child_id))
        return Accepted(application_id=application_id, child_id=child_id, registered_at=now)

    def _residence(self, form: ApplicationIn, child_id: str) -> dict[str, Any]:
        here = _code(form.child_personal_code) not in self.declared_elsewhere
        address = self.town.address(form.residence_address_code, here=here)
        return {
            "child_id": child_id,
            "subject": "child",
            "address_code": form.residence_address_code,
            "territory_code": address.territory_code,
            "municipality": self.town.code if here else self.town.neighbour[0],
            "declared_from": date(form.child_birth_date.year, 1, 1).isoformat(),
        }

    def application(self, application_id: str) -> dict[str, Any]:
        found = self.applications.get(application_id)
        if found is None or not found["active"]:
            raise HTTPException(404, {"error": "unknown_application"})
        return found

    def change(self, application_id: str, change: ChangeIn) -> None:
        found = self.application(application_id)
        fields = change.model_dump(mode="json", exclude_none=True)
        if not fields:
            raise HTTPException(422, {"error": "nothing_to_change"})
        unknown = [i for i in fields.get("institutions", ()) if i not in self.institutions]
        if unknown:
            raise HTTPException(422, {"error": "unknown_institution", "institutions": unknown})
        found.update(fields)
        self.append(
            "application.changed",
            {
                "application_id": application_id,
                "child_id": found["child_id"],
                "changed_at": self.clock().isoformat(),
                **{k: found[k] for k in ChangeIn.model_fields},
            },
        )

    def withdraw(self, application_id: str, reason: str) -> None:
        found = self.application(application_id)
        found["active"] = False
        self.queued.pop(found["child_id"], None)
        self.append(
            "application.withdrawn",
            {
                "application_id": application_id,
                "child_id": found["child_id"],
                "reason": reason,
                "withdrawn_at": self.clock().isoformat(),
            },
        )

    def answer(self, offer_id: str, verdict: str) -> None:
        offer = self.offers.get(offer_id)
        if offer is None:
            raise HTTPException(404, {"error": "unknown_offer"})
        if offer.status != "live" or offer_id in self.answered:
            raise HTTPException(409, {"error": "not_open", "status": offer.status})
        self.answered[offer_id] = verdict
        self.append(
            "offer.answered",
            {
                "offer_id": offer_id,
                "child_id": offer.child_id,
                "application_id": offer.application_id,
                "verdict": verdict,
                "answered_at": self.clock().isoformat(),
            },
        )


def create_app(
    town: SyntheticMunicipality,
    faults: Faults | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FaultInjection:
    """The VPS simulator for ``town``, wrapped in fault injection (none by default)."""
    register = Register(town, clock)
    app = FastAPI(
        title="VPS simulator",
        version="1",
        description="Parents' e-service, pre-school queue register and population register"
        f" extract of {town.name} (synthetic data). Fault header: X-Simulate-Fault.",
    )
    app.state.register = register

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "system": "vps",
            "events": len(register.events),
            "clock": register.clock().isoformat(),
        }

    @app.post("/v1/applications", status_code=201)
    async def submit(form: ApplicationIn) -> Accepted:
        """Register a child in the queue (e-service, or a centre with a power of attorney)."""
        return register.submit(form)

    @app.patch("/v1/applications/{application_id}", status_code=204)
    async def change(application_id: str, change: ChangeIn) -> None:
        """Change the institutions, start date or language; the registration time stays."""
        register.change(application_id, change)

    @app.post("/v1/applications/{application_id}/withdraw", status_code=204)
    async def withdraw(application_id: str, body: WithdrawIn) -> None:
        register.withdraw(application_id, body.reason)

    @app.put("/v1/offers/{offer_id}", status_code=204)
    async def show_offer(offer_id: str, offer: OfferIn) -> None:
        """The hub shows an offer to the parents (again: idempotent). A closed offer is not
        reopened: 409 ``closed``, and it stays closed."""
        register.show(offer_id, offer)

    @app.put("/v1/offers/{offer_id}/status", status_code=204)
    async def offer_status(offer_id: str, body: StatusIn) -> None:
        """The hub closes an offer: the parents see it accepted, declined, expired or revoked.
        404 ``unknown_offer`` if it was not shown yet."""
        offer = register.offer(offer_id)
        register.offers[offer_id] = offer.model_copy(update={"status": body.status})

    @app.put("/v1/offers/{offer_id}/deadline", status_code=204)
    async def offer_deadline(offer_id: str, body: DeadlineIn) -> None:
        """The hub sets the date by which the parents must answer (once they are deemed
        notified). 404 ``unknown_offer`` if the offer was not shown yet."""
        offer = register.offer(offer_id)
        register.offers[offer_id] = offer.model_copy(update={"respond_by": body.respond_by})

    @app.get("/v1/offers/{offer_id}")
    async def get_offer(offer_id: str) -> OfferIn:
        return register.offer(offer_id)

    @app.put("/v1/rounds/{round_id}", status_code=204)
    async def publish_round(round_id: str, body: RoundIn) -> None:
        """The hub reports an admission round's summary; the e-service publishes the admission
        list from it. Idempotent: the same round reported again replaces the summary."""
        register.rounds[round_id] = body

    @app.get("/v1/rounds/{round_id}")
    async def get_round(round_id: str) -> RoundIn:
        found = register.rounds.get(round_id)
        if found is None:
            raise HTTPException(404, {"error": "unknown_round"})
        return found

    @app.post("/v1/offers/{offer_id}/answer", status_code=204)
    async def answer(offer_id: str, body: AnswerIn) -> None:
        """The parents accept or decline an offer in the e-service."""
        register.answer(offer_id, body.verdict)

    @app.post("/v1/residence", status_code=204)
    async def declare(body: ResidenceIn) -> None:
        """The population register records a (changed) declared residence of a queued child."""
        child_id = register.child_ids.get(body.personal_code)  # normalised by ValidCode
        if child_id is None:
            raise HTTPException(404, {"error": "unknown_person"})
        register.append(
            "residence.declared",
            {
                "child_id": child_id,
                "subject": "child",
                "address_code": body.address_code,
                "territory_code": body.territory_code,
                "municipality": body.municipality,
                "declared_from": body.declared_from.isoformat(),
            },
        )

    @app.get("/v1/events")
    async def events(after: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000)) -> Feed:
        """What happened after event number ``after``, oldest first, with the feed's id."""
        return Feed(
            feed=register.feed_id,
            events=register.events[after : after + limit],
            last=len(register.events),
        )

    return FaultInjection(app, faults or Faults())


__all__ = ["BROKEN_EMAIL", "Register", "create_app"]
