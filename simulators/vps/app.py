"""VPS simulator: the parents' e-service, the pre-school queue register and the
population register extract, behind one HTTP API.

Parents (or client-service-centre staff on their behalf, with a power of
attorney, or a person authorised by an orphans' court or a notary) submit,
change and withdraw applications, and answer offers. The population register
records declared residence and its changes. Everything
that happens is appended to one **event feed** (``GET /v1/events?after=N``),
numbered from 1, which the VPS adapter polls; the feed starts with the
municipality's institutions. The feed lives in memory only: every start of
the simulator begins a new feed with a new random id (12 hex digits), which
every page carries as ``feed`` so that a reader can tell a reset feed from
the one it was reading.

Intake (what the e-service refuses, each with a machine reason under
``detail.error`` and, where a rule of the municipality is the reason, a
``detail.message`` in Latvian and English, ``{"lv": …, "en": …}``, citing it):
- ``POST /v1/applications`` and ``PATCH /v1/applications/{application_id}``
  listing more institutions than the municipality's rules allow: 422
  ``too_many_institutions`` with ``limit`` (the rules' ``max_institutions``,
  given to :func:`create_app` by whoever composes the simulators; without it
  only the protocol's bound of 10 holds) and ``listed``;
- ``PATCH`` once the child is on an admission list (the hub has shown it a
  live offer, or one the parents accepted): 409 ``on_admission_list`` — an
  application may be changed only until the child is included in the list
  (Riga: binding regulations Nr. 191, point 16);
- 422 ``unknown_institution``, ``power_of_attorney_required``,
  ``invalid_language``; 409 ``already_queued`` (one active application per
  child); 404 ``unknown_application`` for a change or withdrawal of an
  application that is not active; 422 ``nothing_to_change``.

An application filed by an authorised person names the ``authorisation``
(``issuer`` ``orphans_court`` or ``notary``, ``issuer_name``, ``number``,
``valid_from``, ``valid_until`` or null, ``agent_personal_code``); the
e-service checks its form only (422 if ``valid_until`` is before
``valid_from``) and carries it in the feed entry: whether it holds is for the
register of authorisations, which the hub asks.

``GET /v1/applications/{application_id}`` shows an application as the parents
see it: ``status`` ``active``, ``withdrawn`` or ``refused``, the choice, and
the hub's ``refusal`` if any (404 ``unknown_application``).

Population register (PERS):
- ``POST /v1/population/residence`` with ``{"child_personal_code",
  "guardian_personal_codes": [at most 2], "as_of"}`` answers, for each code
  asked, ``{"personal_code", "subject": "child"|"guardian", "guardian_index",
  "residence"}``, where ``residence`` is the declaration in force on ``as_of``
  (``address_code``, ``territory_code``, ``municipality`` — the hub's code of
  the municipality — and ``declared_from``) or null when the person has none
  then (a declaration whose ``declared_from`` is later than ``as_of`` does not
  count yet; a guardian the register does not know has none). 404
  ``unknown_person`` when it does not know the child. The register knows every
  child and guardian of the synthetic municipality (its ``declarations``),
  and records the child of an application it did not know at the
  application's address, in this municipality.
- ``POST /v1/residence`` records a (changed) declared residence of a child or
  a guardian the register knows or an application names (404
  ``unknown_person`` otherwise), and puts
  a ``residence.declared`` entry on the feed for the child's application and
  for every active application naming the guardian (``subject`` ``guardian``
  with its ``guardian_index``).

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
- ``PUT /v1/applications/{application_id}/refusal`` with ``{"reason":
  "authorisation_refused", "authorisation_reason", "detail", "refused_at"}``
  tells the parents the hub refused the application: it stops being active
  (the child may apply again) and ``GET`` shows the refusal. Idempotent: the
  same refusal again changes nothing (a later one replaces it). 404
  ``unknown_application`` for an application the e-service never took.

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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, Self

from fastapi import FastAPI, HTTPException, Query
from pydantic import AfterValidator, BaseModel, Field, model_validator

from schemas.applications import CommissionGround
from schemas.values import PersonalCode
from simulators.faults import FaultInjection, Faults
from simulators.messages import institution_data
from simulators.municipality import Declaration, SyntheticMunicipality

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
    commission_grounds: list[CommissionGround] = Field(default_factory=list, max_length=7)
    large_family: bool = False
    sibling_personal_codes: list[ValidCode] = Field(default_factory=list, max_length=12)
    parent_staff_at: list[str] = Field(default_factory=list, max_length=10)


class AuthorisationIn(BaseModel):
    """The authorisation an authorised person files under (orphans' court or notary)."""

    issuer: Literal["orphans_court", "notary"]
    issuer_name: str = Field(min_length=1, max_length=120)
    number: str = Field(min_length=1, max_length=40, pattern=r"^[0-9A-Za-z/.\-]+$")
    valid_from: date
    valid_until: date | None = None
    agent_personal_code: ValidCode = Field(description="The authorised person's code.")

    @model_validator(mode="after")
    def _period(self) -> Self:
        if self.valid_until is not None and self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")
        return self


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
    authorisation: AuthorisationIn | None = Field(
        default=None, description="Filed by an authorised person: the authorisation."
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
    """A declared residence of a child or a guardian, as the population register records it."""

    personal_code: ValidCode
    address_code: str = Field(pattern=r"^\d{9}$")
    territory_code: str = Field(pattern=r"^\d{7}$")
    municipality: str
    declared_from: date


class PopulationQuery(BaseModel):
    """Where do a child and its guardians have their declared residence on a date?"""

    child_personal_code: ValidCode
    guardian_personal_codes: list[ValidCode] = Field(default_factory=list, max_length=2)
    as_of: date


class Declared(BaseModel):
    address_code: str
    territory_code: str
    municipality: str = Field(description="The hub's code of the municipality.")
    declared_from: date


class PersonResidence(BaseModel):
    personal_code: str
    subject: Literal["child", "guardian"]
    guardian_index: int | None = None
    residence: Declared | None = Field(description="In force on as_of; null: none then.")


class PopulationAnswer(BaseModel):
    as_of: date
    persons: list[PersonResidence]


class Bilingual(BaseModel):
    lv: str
    en: str


class RefusalIn(BaseModel):
    """The hub refused an application before it counted."""

    reason: Literal["authorisation_refused"]
    authorisation_reason: (
        Literal[
            "unknown",
            "revoked",
            "expired",
            "not_yet_valid",
            "other_person",
            "other_child",
            "other_scope",
        ]
        | None
    ) = None
    detail: str = Field(max_length=500, description="Written for the parents.")
    refused_at: datetime


class ApplicationView(BaseModel):
    """An application as the parents see it in the e-service."""

    application_id: str
    child_id: str
    status: Literal["active", "withdrawn", "refused"]
    registered_at: datetime
    institutions: list[str]
    desired_start_date: date
    language: str
    accepts_any_institution: bool
    channel: str
    authorised: bool = Field(description="Filed by an authorised person.")
    refusal: RefusalIn | None = None


class FeedEvent(BaseModel):
    seq: int
    type: EventType
    at: datetime
    data: dict[str, Any]


class Feed(BaseModel):
    feed: str = Field(description="Id of this feed; a new one at every start of the register.")
    events: list[FeedEvent]
    last: int = Field(description="Number of the newest event in the feed.")


_CHANGE_RULE = {
    "riga": (
        "Rīgas domes 2016. gada 16. februāra saistošie noteikumi Nr. 191, 16. punkts",
        "Riga City Council binding regulations Nr. 191 of 16 February 2016, point 16",
    ),
}
"""Where a municipality's binding regulations say until when an application may change."""


def _refused(status: int, error: str, lv: str, en: str, **extra: Any) -> HTTPException:
    """A refusal the parents read: the machine reason, the message in Latvian and English."""
    message = Bilingual(lv=lv, en=en).model_dump()
    return HTTPException(status, {"error": error, **extra, "message": message})


@dataclass
class Register:
    """The simulator's state: applications, offers, residence and the event feed."""

    town: SyntheticMunicipality
    clock: Callable[[], datetime]
    max_institutions: int | None = None
    """The municipality's limit of institutions per application (None: only the protocol's)."""
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
    recorded: dict[str, list[Declaration]] = field(default_factory=dict)
    """Personal code → declarations recorded since the start, after the town's own."""

    def __post_init__(self) -> None:
        self._ids = random.Random(f"{self.town.code}:{self.town.seed}:child-ids")
        self._issued = set(self.child_ids.values())
        self.institutions = {i.institution_id: i for i in self.town.institutions}
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

    # --- intake ---------------------------------------------------------------------------

    def _within_limit(self, institutions: list[str]) -> None:
        limit = self.max_institutions
        if limit is None or len(institutions) <= limit:
            return
        raise _refused(
            422,
            "too_many_institutions",
            f"Pieteikumā var norādīt ne vairāk kā {limit} pirmsskolas izglītības iestādes"
            f" (norādītas {len(institutions)}): tā nosaka pašvaldības saistošie noteikumi"
            " par uzņemšanu pirmsskolas izglītības iestādēs.",
            f"An application may list at most {limit} pre-school institutions"
            f" ({len(institutions)} listed): the municipality's binding regulations on"
            " admission to pre-school institutions set this limit.",
            limit=limit,
            listed=len(institutions),
        )

    def on_admission_list(self, child_id: str) -> bool:
        """The hub has shown the child an offer that is live or accepted."""
        return any(
            o.child_id == child_id and o.status in ("live", "accepted")
            for o in self.offers.values()
        )

    def submit(self, form: ApplicationIn) -> Accepted:
        if form.language == "xx":
            raise HTTPException(422, {"error": "invalid_language"})
        self._within_limit(form.institutions)
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
        self.applications[application_id] = {**data, "active": True, "status": "active"}
        self.queued[child_id] = application_id
        if any(g.email == BROKEN_EMAIL for g in form.guardians):
            data = {"application_id": application_id}  # a faulty release drops the fields
        self.append("application.submitted", data)
        self.append("residence.declared", self._child_residence(form, child_id))
        return Accepted(application_id=application_id, child_id=child_id, registered_at=now)

    def _child_residence(self, form: ApplicationIn, child_id: str) -> dict[str, Any]:
        """The feed entry of the child's residence: as the register has it now (a child it
        did not know is recorded at the application's address, in this municipality)."""
        code = form.child_personal_code
        if not self.history(code):
            since = date(form.child_birth_date.year, 1, 1)
            declared = self.town.declaration(form.residence_address_code, here=True, since=since)
            self.recorded[code] = [declared]
        history = self.history(code)
        declared = self.declared_on(code, self.clock().date()) or history[-1]
        return _residence_entry(child_id, declared)

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
        if self.on_admission_list(found["child_id"]):
            lv_rule, en_rule = _CHANGE_RULE.get(
                self.town.code,
                (
                    "pašvaldības saistošie noteikumi par uzņemšanu pirmsskolā",
                    "the municipality's binding regulations on pre-school admission",
                ),
            )
            raise _refused(
                409,
                "on_admission_list",
                "Pieteikumu var mainīt tikai līdz brīdim, kad bērns iekļauts pretendentu"
                f" sarakstā ({lv_rule}); bērns jau ir sarakstā.",
                "An application may be changed only until the child is included in the"
                f" applicants' list ({en_rule}); the child is on the list already.",
            )
        if "institutions" in fields:
            self._within_limit(fields["institutions"])
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

    def _close(self, found: dict[str, Any], status: str) -> None:
        found["active"] = False
        found["status"] = status
        if self.queued.get(found["child_id"]) == found["application_id"]:
            del self.queued[found["child_id"]]

    def withdraw(self, application_id: str, reason: str) -> None:
        found = self.application(application_id)
        self._close(found, "withdrawn")
        self.append(
            "application.withdrawn",
            {
                "application_id": application_id,
                "child_id": found["child_id"],
                "reason": reason,
                "withdrawn_at": self.clock().isoformat(),
            },
        )

    def refuse(self, application_id: str, refusal: RefusalIn) -> None:
        """The hub refused the application: it stops being active, and shows why."""
        found = self.applications.get(application_id)
        if found is None:
            raise HTTPException(404, {"error": "unknown_application"})
        found["refusal"] = refusal
        if found["active"]:
            self._close(found, "refused")

    def view(self, application_id: str) -> ApplicationView:
        found = self.applications.get(application_id)
        if found is None:
            raise HTTPException(404, {"error": "unknown_application"})
        return ApplicationView.model_validate(
            {**found, "authorised": found.get("authorisation") is not None}
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

    # --- population register ---------------------------------------------------------------

    def history(self, personal_code: str) -> list[Declaration]:
        """The person's declarations, oldest first (those recorded here after the town's)."""
        own = self.town.declarations.get(personal_code, ())
        return sorted([*own, *self.recorded.get(personal_code, ())], key=lambda d: d.declared_from)

    def declared_on(self, personal_code: str, day: date) -> Declaration | None:
        """The declaration in force on ``day``: the last one declared from that day or before
        (of two from the same day, the one recorded later)."""
        current = [d for d in self.history(personal_code) if d.declared_from <= day]
        return current[-1] if current else None

    def knows(self, personal_code: str) -> bool:
        """A child or guardian of the town, or of an application, or one recorded here."""
        return (
            personal_code in self.town.declarations
            or personal_code in self.recorded
            or personal_code in self.child_ids
            or any(
                g["personal_code"] == personal_code
                for a in self.applications.values()
                for g in a.get("guardians", ())
            )
        )

    def declare(self, body: ResidenceIn) -> None:
        """Record a declaration; the feed reports it for every application it concerns."""
        code = body.personal_code  # normalised by ValidCode
        if not self.knows(code):
            raise HTTPException(404, {"error": "unknown_person"})
        declared = Declaration(
            body.address_code, body.territory_code, body.municipality, body.declared_from
        )
        self.recorded.setdefault(code, []).append(declared)
        child_id = self.child_ids.get(code)
        if child_id is not None:
            self.append("residence.declared", _residence_entry(child_id, declared))
        for application_id in self.queued.values():
            found = self.applications[application_id]
            for index, guardian in enumerate(found["guardians"]):
                if guardian["personal_code"] == code:
                    entry = _residence_entry(found["child_id"], declared, guardian_index=index)
                    self.append("residence.declared", entry)

    def residences(self, query: PopulationQuery) -> PopulationAnswer:
        """Where the child and the guardians asked about are declared on ``as_of``."""
        child = query.child_personal_code
        if not self.history(child):
            raise HTTPException(404, {"error": "unknown_person"})
        asked: list[tuple[str, Literal["child", "guardian"], int | None]] = [
            (child, "child", None),
            *((code, "guardian", i) for i, code in enumerate(query.guardian_personal_codes)),
        ]
        persons = []
        for code, subject, index in asked:
            declared = self.declared_on(code, query.as_of)
            persons.append(
                PersonResidence(
                    personal_code=code,
                    subject=subject,
                    guardian_index=index,
                    residence=Declared.model_validate(declared, from_attributes=True)
                    if declared
                    else None,
                )
            )
        return PopulationAnswer(as_of=query.as_of, persons=persons)


def _residence_entry(
    child_id: str, declared: Declaration, *, guardian_index: int | None = None
) -> dict[str, Any]:
    """The ``data`` of a ``residence.declared`` feed entry."""
    entry: dict[str, Any] = {
        "child_id": child_id,
        "subject": "child" if guardian_index is None else "guardian",
        "address_code": declared.address_code,
        "territory_code": declared.territory_code,
        "municipality": declared.municipality,
        "declared_from": declared.declared_from.isoformat(),
    }
    if guardian_index is not None:
        entry["guardian_index"] = guardian_index
    return entry


def create_app(
    town: SyntheticMunicipality,
    faults: Faults | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    *,
    max_institutions: int | None = None,
) -> FaultInjection:
    """The VPS simulator for ``town``, wrapped in fault injection (none by default).

    ``max_institutions`` is the municipality's limit of institutions per application, as
    its admission rules set it (the hub's ``load_rules(...).max_institutions``: whoever
    composes the simulators reads it there, so that the rules stay its one owner); None
    leaves only the protocol's bound of 10.
    """
    register = Register(town, clock, max_institutions)
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
            # Applications the hub refused, by the reason the parents see.
            "refused": dict(
                Counter(
                    a["refusal"].authorisation_reason or a["refusal"].reason
                    for a in register.applications.values()
                    if a.get("refusal") is not None
                )
            ),
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

    @app.get("/v1/applications/{application_id}")
    async def get_application(application_id: str) -> ApplicationView:
        """The application as the parents see it: active, withdrawn or refused (and why)."""
        return register.view(application_id)

    @app.put("/v1/applications/{application_id}/refusal", status_code=204)
    async def refuse(application_id: str, body: RefusalIn) -> None:
        """The hub refused the application before it counted: it is no longer active (the
        child may apply again) and the parents see why. Idempotent; 404
        ``unknown_application``."""
        register.refuse(application_id, body)

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
        """The population register records a (changed) declared residence of a child or a
        guardian it knows; the feed reports it for each application it concerns."""
        register.declare(body)

    @app.post("/v1/population/residence")
    async def residence(query: PopulationQuery) -> PopulationAnswer:
        """Where the child and its guardians have their declared residence on ``as_of``
        (404 ``unknown_person`` for a child the register does not know)."""
        return register.residences(query)

    @app.get("/v1/events")
    async def events(after: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000)) -> Feed:
        """What happened after event number ``after``, oldest first, with the feed's id."""
        return Feed(
            feed=register.feed_id,
            events=register.events[after : after + limit],
            last=len(register.events),
        )

    return FaultInjection(app, faults or Faults())


__all__ = ["BROKEN_EMAIL", "ApplicationIn", "Register", "create_app"]
