"""The VPS adapter: polls the VPS event feed onto the topics, answers residence checks from
the population register, and shows offers, refusals and admission rounds to parents in the
e-service.

Polling was chosen over push because VPS offers no callbacks to external
systems. The feed position is stored as ``<feed id>:<number of the last entry
read>`` in the adapter's store and committed with the messages each page
produced (see :mod:`hub.reliability.poller`), so a restart neither skips nor
loses an entry. A position without a feed id (``17``, as stored before feed
ids existed) is taken to belong to the feed VPS serves now, with a warning.
Every message's ``event_id`` is a name-based UUID of the municipality, the
feed id and the entry's number, so an entry read twice is published with the
same id and consumers skip the repeat.

A feed that was reset (VPS answers with another feed id than the stored one,
or has fewer entries than already read) stops the poll with
:class:`~adapters.vps.client.FeedReset`, a permanent error the poller logs
at every attempt: nothing is skipped or read twice silently; an operator
reviews the position (and what the new feed repeats) and sets it again.

Feed entries → messages:
- ``institution.registered`` → ``InstitutionRegistered``
- ``application.submitted`` / ``changed`` / ``withdrawn`` → ``ApplicationSubmitted`` /
  ``ApplicationChanged`` / ``ApplicationWithdrawn``
- ``offer.answered`` → ``ParentAccepted`` or ``ParentDeclined``
- ``residence.declared`` → ``ResidenceDeclared`` (a guardian's with its ``guardian_index``)

The client checks only the page and each entry's number; every entry is
checked on its own when it is turned into a message (its ``type``, ``at`` and
the fields of ``data`` for that type, JSON types included; an application's
``authorisation`` must make an ``Authorisation``). An entry that does not make
a valid message is dead-lettered with the reason; the feed goes on. VPS child
ids become ``child_ref`` = ``CH-<id>``. VPS names municipalities by the hub's
codes, so a residence's ``municipality`` is its ``declared_municipality`` as it
is (:func:`declared_municipality`, for the feed and the checks alike).

Population register (``vps.population.checks.v1`` → ``vps.population.residence.v1``):
``CheckResidence`` asks ``POST /v1/population/residence`` (with the client's
retries) and answers ``ResidenceChecked`` with the residences in force on
``as_of`` (a person with none is left out), caused by the check, so its
correlation id carries over. A child the register does not know is answered
at once with ``ResidenceCheckFailed`` ``unknown_person`` (permanent). Other
failures are not caught: a transient one parks the check on the retry topic,
and once it is dead-lettered (the retries spent, or a permanent error) it is
answered with ``ResidenceCheckFailed``: ``unavailable`` (permanent only for an
error that is neither the register's nor transient) or ``invalid_response``
(an answer outside the protocol — garbage, the wrong shape, or a refusal the
protocol does not have), so the allocation service is not left waiting.

Topics → e-service (one client for every handler):
- ``allocation.offers.v1``: ``OfferMade`` shows the offer (an offer VPS has
  closed already stays closed: nothing to do); ``OfferDeadlineSet`` sets its
  answer-by date; ``OfferDeclined`` / ``OfferExpired`` / ``OfferRevoked`` /
  ``PlaceAccepted`` close it with that status. A deadline or close for an
  offer VPS does not know yet is a transient error (its ``OfferMade`` may be
  parked behind it), so the message is tried again later.
- ``allocation.rounds.v1``: ``RoundCompleted`` hands the round's summary
  (offers made, children unplaced, fill per institution) to the e-service,
  which publishes the admission list.
- ``allocation.applications.v1``: ``ApplicationRefused`` shows the refusal
  (reason, the register's reason for an authorisation, the detail for the
  parents) in the e-service, which stops counting the application; showing it
  again is harmless. An application the e-service does not know is a
  permanent error (dead-lettered).

One adapter serves the one municipality its VPS belongs to (``HUB_MUNICIPALITY``): its
handlers skip another municipality's messages on a shared cluster.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from adapters.vps.client import Declared, FeedReset, VpsClient
from hub.errors import PermanentError
from hub.reliability.consumer import Handler, Unit
from hub.reliability.poller import Page, Poller
from hub.reliability.retry import CallFailure
from hub.reliability.service import ServiceSpec
from schemas.allocation import (
    OfferDeadlineSet,
    OfferDeclined,
    OfferExpired,
    OfferMade,
    OfferRevoked,
    ParentAccepted,
    ParentDeclined,
    PlaceAccepted,
    RoundCompleted,
)
from schemas.applications import (
    ApplicationChanged,
    ApplicationRefused,
    ApplicationSubmitted,
    ApplicationWithdrawn,
    Guardian,
)
from schemas.authorisations import Authorisation
from schemas.base import Message
from schemas.institutions import InstitutionRegistered, SeatPool
from schemas.residence import (
    CheckResidence,
    Residence,
    ResidenceChecked,
    ResidenceCheckFailed,
    ResidenceDeclared,
)
from schemas.topics import VPS
from schemas.values import PersonalCode

log = logging.getLogger(__name__)

_IDS = uuid.UUID("6f1d3c1e-2b7a-4d0e-9a57-3f0c7d2e8b41")
_STATUS = {
    OfferDeclined: "declined",
    OfferExpired: "expired",
    OfferRevoked: "revoked",
    PlaceAccepted: "accepted",
}

EntryType = Literal[
    "institution.registered",
    "application.submitted",
    "application.changed",
    "application.withdrawn",
    "offer.answered",
    "residence.declared",
]


class FeedEvent(BaseModel):
    """One entry of the VPS feed; ``data`` is checked per ``type`` by :func:`message_for`."""

    seq: int
    type: EntryType
    at: datetime
    data: dict[str, Any]


# --- what ``data`` holds for each entry type (JSON types checked; extra fields ignored) ----


class _Data(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Group(_Data):
    code: str
    language: str
    min_age_months: int
    birth_year: int | None = None
    capacity: int


class _Institution(_Data):
    institution_id: str
    name: str
    address_code: str
    groups: list[_Group]


class _Guardian(_Data):
    personal_code: str
    email: str | None = None
    phone: str | None = None


class _Claims(_Data):
    commission_grounds: list[str] = Field(default_factory=list)
    large_family: bool = False
    sibling_personal_codes: list[str] = Field(default_factory=list)
    parent_staff_at: list[str] = Field(default_factory=list)


class _Submitted(_Data):
    application_id: str
    child_id: str
    child_personal_code: str
    child_birth_date: date
    guardians: list[_Guardian]
    residence_address_code: str
    institutions: list[str]
    desired_start_date: date
    language: str
    accepts_any_institution: bool = False
    registered_at: datetime
    claims: _Claims = Field(default_factory=_Claims)
    channel: Literal["e_service", "client_service_centre"] = "e_service"
    power_of_attorney: str | None = None
    authorisation: Authorisation | None = None


class _Changed(_Data):
    application_id: str
    child_id: str
    institutions: list[str]
    desired_start_date: date
    language: str
    accepts_any_institution: bool = False
    changed_at: datetime


class _Withdrawn(_Data):
    application_id: str
    child_id: str
    reason: str
    withdrawn_at: datetime


class _Answered(_Data):
    offer_id: str
    child_id: str
    verdict: Literal["accept", "decline"]
    answered_at: datetime


class _Residence(_Data):
    child_id: str
    subject: str
    guardian_index: int | None = None
    address_code: str
    territory_code: str
    municipality: str
    declared_from: date


def child_ref(child_id: str) -> str:
    return f"CH-{child_id}"


def vps_child_id(ref: str) -> str:
    return ref.removeprefix("CH-")


def _institution(d: _Institution, envelope: dict[str, Any]) -> Message:
    return InstitutionRegistered.new(
        **envelope,
        institution_id=d.institution_id,
        name=d.name,
        address_code=d.address_code,
        pools=tuple(
            SeatPool(
                group_code=g.code,
                language=g.language,
                min_age_months=g.min_age_months,
                birth_year_from=g.birth_year,
                birth_year_to=g.birth_year,
                capacity=g.capacity,
            )
            for g in d.groups
        ),
    )


def _submitted(d: _Submitted, envelope: dict[str, Any]) -> Message:
    return ApplicationSubmitted.new(
        **envelope,
        application_id=d.application_id,
        child_ref=child_ref(d.child_id),
        child_personal_code=d.child_personal_code,
        child_birth_date=d.child_birth_date,
        guardians=tuple(
            Guardian(personal_code=g.personal_code, email=g.email, phone=g.phone)
            for g in d.guardians
        ),
        residence_address_code=d.residence_address_code,
        institutions=tuple(d.institutions),
        desired_start_date=d.desired_start_date,
        language=d.language,
        accepts_any_institution=d.accepts_any_institution,
        registered_at=d.registered_at,
        claims={
            "commission_grounds": tuple(d.claims.commission_grounds),
            "large_family": d.claims.large_family,
            "sibling_personal_codes": tuple(d.claims.sibling_personal_codes),
            "parent_staff_at": tuple(d.claims.parent_staff_at),
        },
        submitted_via=d.channel,
        power_of_attorney_ref=d.power_of_attorney,
        authorisation=d.authorisation,
    )


def _same_names(kind: type[Message]) -> Callable[[Any, dict[str, Any]], Message]:
    """The mapping of entries whose ``data`` has the fields of message ``kind`` under their
    names, but for the VPS child id, which becomes the child's ``child_ref``."""

    def build(d: _Changed | _Withdrawn, envelope: dict[str, Any]) -> Message:
        fields = d.model_dump(exclude={"child_id"})
        return kind.new(**envelope, **fields, child_ref=child_ref(d.child_id))

    return build


def _answered(d: _Answered, envelope: dict[str, Any]) -> Message:
    kind = ParentAccepted if d.verdict == "accept" else ParentDeclined
    return kind.new(
        **envelope,
        offer_id=d.offer_id,
        child_ref=child_ref(d.child_id),
        responded_at=d.answered_at,
    )


def declared_municipality(vps_municipality: str) -> str:
    """The hub's code of the municipality VPS names in a residence: VPS uses the hub's codes
    (``riga``, ``kekava``), so it is the same; the message checks its form."""
    return vps_municipality


def _residence(d: _Residence, envelope: dict[str, Any]) -> Message:
    return ResidenceDeclared.new(
        **envelope,
        child_ref=child_ref(d.child_id),
        subject=d.subject,
        guardian_index=d.guardian_index,
        address_code=d.address_code,
        territory_code=d.territory_code,
        declared_municipality=declared_municipality(d.municipality),
        declared_from=d.declared_from,
    )


_MAPPINGS: dict[str, tuple[type[_Data], Callable[[Any, dict[str, Any]], Message]]] = {
    "institution.registered": (_Institution, _institution),
    "application.submitted": (_Submitted, _submitted),
    "application.changed": (_Changed, _same_names(ApplicationChanged)),
    "application.withdrawn": (_Withdrawn, _same_names(ApplicationWithdrawn)),
    "offer.answered": (_Answered, _answered),
    "residence.declared": (_Residence, _residence),
}


def event_id(municipality: str, feed: str, seq: int) -> uuid.UUID:
    """The ``event_id`` of the message made from entry ``seq`` of feed ``feed``."""
    return uuid.uuid5(_IDS, f"{municipality}:{feed}:{seq}")


def message_for(entry: FeedEvent | Mapping[str, Any], municipality: str, feed: str) -> Message:
    """The hub message of one entry of feed ``feed`` (the entry as VPS sent it, or parsed).

    Raises ``pydantic.ValidationError`` (a ``ValueError``) when the entry or its ``data``
    does not make a message: a missing field, a wrong JSON type, a value the message refuses.
    """
    event = entry if isinstance(entry, FeedEvent) else FeedEvent.model_validate(entry)
    model, build = _MAPPINGS[event.type]
    data = model.model_validate(event.data)
    envelope: dict[str, Any] = {
        "producer": VPS,
        "municipality": municipality,
        "event_id": event_id(municipality, feed, event.seq),
    }
    return build(data, envelope)


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One feed entry as VPS sent it, with the id of the feed it came from."""

    feed: str
    raw: dict[str, Any]


def parse_position(position: str | None) -> tuple[str | None, int]:
    """``"<feed id>:<seq>"`` → (feed id, seq); None → (None, 0); a bare number (stored before
    feed ids) → (None, number). A :class:`PermanentError` for anything else."""
    if position is None:
        return None, 0
    feed, sep, seq = position.rpartition(":")
    if not seq.isdigit() or (sep and not feed):
        raise PermanentError(f"stored VPS feed position {position!r} is not '<feed id>:<number>'")
    return (feed if sep else None), int(seq)


class VpsFeed(Poller):
    """Reads the VPS feed a page at a time; the position is ``<feed id>:<last entry read>``."""

    feed = "vps-events"

    def __init__(
        self, client: VpsClient, municipality: str, *, page_size: int = 200, interval: float = 0.5
    ) -> None:
        self.client, self.municipality, self.page_size = client, municipality, page_size
        self.interval = interval

    async def poll(self, position: str | None) -> Page:
        stored, after = parse_position(position)
        page = await self.client.events(after, self.page_size)
        if stored is not None and page.feed != stored:
            raise FeedReset(
                f"VPS feed was reset: the position is entry {after} of feed {stored}, but VPS"
                f" now serves feed {page.feed} ({page.last} entries); review the position"
                f" '{self.feed}' before polling goes on (entries may be missing or repeated)"
            )
        if page.last < after:
            raise FeedReset(
                f"VPS feed was reset: the position is entry {after} of feed {page.feed}, but"
                f" the feed has only {page.last} entries; review the position '{self.feed}'"
                " before polling goes on (entries may be missing or repeated)"
            )
        if stored is None and position is not None:
            log.warning(
                "VPS feed position without a feed id taken to be in the current feed",
                extra={"feed": page.feed, "after": after},
            )
        last = page.events[-1]["seq"] if page.events else after
        return Page(
            [FeedEntry(page.feed, raw) for raw in page.events],
            f"{page.feed}:{last}",
            more=last < page.last,
        )

    def apply(self, unit: Unit, item: FeedEntry) -> None:
        unit.emit(message_for(item.raw, self.municipality, item.feed))

    def describe(self, item: Any) -> bytes:
        raw = item.raw if isinstance(item, FeedEntry) else item
        try:
            return json.dumps(raw, default=str, ensure_ascii=False).encode()
        except (TypeError, ValueError):
            return repr(raw).encode()

    async def close(self) -> None:
        await self.client.close()


class _OneMunicipality:
    """A handler of the one municipality this VPS belongs to: another municipality's
    messages on a shared cluster are its own adapter's, and are skipped (None: all)."""

    municipality: str | None

    def ours(self, message: Message) -> bool:
        if self.municipality is None or message.municipality == self.municipality:
            return True
        log.debug(
            "message of another municipality skipped",
            extra={"event_id": str(message.event_id), "municipality": message.municipality},
        )
        return False


class _EServiceCalls(_OneMunicipality, Handler[Message]):
    """A handler whose effect is a call to the e-service: it records nothing itself."""

    source: ClassVar[str]
    """The topic it consumes."""

    def __init__(self, client: VpsClient, municipality: str | None = None) -> None:
        super().__init__(self.source)
        self.client, self.municipality = client, municipality

    async def fetch(self, message: Message) -> Any:
        if self.ours(message):
            await self.call(message)
        return None

    async def call(self, message: Message) -> None:
        """The e-service call ``message`` asks for (if any)."""

    def apply(self, unit: Unit, message: Message, fetched: Any) -> None:
        """Nothing to record: the call was the effect."""


class Offers(_EServiceCalls):
    """Shows each offer, its deadline and its closing to the parents in the e-service."""

    source = "allocation.offers.v1"

    async def call(self, message: Message) -> None:
        if isinstance(message, OfferMade):
            await self.client.show_offer(
                str(message.offer_id),
                {
                    "application_id": message.application_id,
                    "child_id": vps_child_id(message.child_ref),
                    "institution_id": message.institution_id,
                    "group_code": message.group_code,
                    "respond_by": message.respond_by.isoformat() if message.respond_by else None,
                },
            )
        elif isinstance(message, OfferDeadlineSet):
            await self.client.set_deadline(str(message.offer_id), message.respond_by)
        elif type(message) in _STATUS:
            await self.client.close_offer(str(message.offer_id), _STATUS[type(message)])  # type: ignore[attr-defined]


class Rounds(_EServiceCalls):
    """Hands each admission round's summary to the e-service for the admission list."""

    source = "allocation.rounds.v1"

    async def call(self, message: Message) -> None:
        if isinstance(message, RoundCompleted):
            await self.client.publish_round(str(message.round_id), round_summary(message))


class Refusals(_EServiceCalls):
    """Shows the parents each application the hub refused before it counted."""

    source = "allocation.applications.v1"

    async def call(self, message: Message) -> None:
        if isinstance(message, ApplicationRefused):
            await self.client.refuse_application(message.application_id, refusal(message))


def refusal(message: ApplicationRefused) -> dict[str, Any]:
    """The body of ``PUT /v1/applications/{application_id}/refusal``."""
    return {
        "reason": message.reason,
        "authorisation_reason": message.authorisation_reason,
        "detail": message.detail,
        "refused_at": message.refused_at.isoformat(),
    }


Residences = dict[PersonalCode, Declared | None]


class ResidenceChecks(_OneMunicipality, Handler[CheckResidence]):
    """``CheckResidence`` → ``ResidenceChecked``, or ``ResidenceCheckFailed``."""

    source = "vps.population.checks.v1"

    def __init__(self, client: VpsClient, municipality: str | None = None) -> None:
        super().__init__(self.source)
        self.client, self.municipality = client, municipality

    async def fetch(self, message: CheckResidence) -> Residences | None:
        if not self.ours(message):
            return None
        return await self.client.residences(
            message.child_personal_code, message.guardian_personal_codes, message.as_of
        )

    def apply(self, unit: Unit, message: CheckResidence, fetched: Residences | None) -> None:
        if not self.ours(message):
            return
        if fetched is None:
            unit.emit(
                ResidenceCheckFailed.new(
                    producer=VPS,
                    caused_by=message,
                    child_ref=message.child_ref,
                    as_of=message.as_of,
                    reason="unknown_person",
                    detail="the VPS population register does not know the child",
                    permanent=True,
                )
            )
            return
        asked: dict[PersonalCode, tuple[Literal["child", "guardian"], int | None]] = {}
        for index, code in enumerate(message.guardian_personal_codes):
            asked.setdefault(code, ("guardian", index))
        asked[message.child_personal_code] = ("child", None)
        residences = sorted(
            (
                Residence(
                    subject=subject,
                    guardian_index=index,
                    address_code=declared.address_code,
                    territory_code=declared.territory_code,
                    declared_municipality=declared_municipality(declared.municipality),
                    declared_from=declared.declared_from,
                )
                for code, (subject, index) in asked.items()
                if (declared := fetched[code]) is not None
            ),
            key=lambda r: -1 if r.guardian_index is None else r.guardian_index,
        )
        unit.emit(
            ResidenceChecked.new(
                producer=VPS,
                caused_by=message,
                child_ref=message.child_ref,
                as_of=message.as_of,
                residences=tuple(residences),
            )
        )

    def given_up(self, message: CheckResidence, error: BaseException) -> Sequence[Message]:
        """``ResidenceCheckFailed`` for a check that was dead-lettered."""
        failure = CallFailure.of(error)
        reason: Literal["unavailable", "invalid_response"] = (
            "unavailable" if failure.kind == "unavailable" else "invalid_response"
        )
        return (
            ResidenceCheckFailed.new(
                producer=VPS,
                caused_by=message,
                child_ref=message.child_ref,
                as_of=message.as_of,
                reason=reason,
                detail=failure.detail,
                permanent=failure.permanent,
            ),
        )


def round_summary(message: RoundCompleted) -> dict[str, Any]:
    """The body of ``PUT /v1/rounds/{round_id}``."""
    return {
        "round_date": message.round_date.isoformat(),
        "applications_considered": message.applications_considered,
        "offers_made": message.offers_made,
        "children_unplaced": message.children_unplaced,
        "lottery_seed": message.lottery_seed,
        "institutions": [
            {
                "institution_id": f.institution_id,
                "capacity": f.capacity,
                "offered": f.offered,
                "accepted": f.accepted,
            }
            for f in message.institutions
        ],
    }


def service(
    client: VpsClient,
    municipality: str,
    *,
    name: str = "vps-adapter",
    feed_client: VpsClient | None = None,
    interval: float = 0.5,
) -> ServiceSpec:
    """The VPS adapter: the feed poller, and the handlers of offers, rounds, refusals and
    residence checks (clients may be one). Retries of the handlers' client are counted in
    the service's metrics."""
    feed = VpsFeed(feed_client or client, municipality, interval=interval)
    handlers = (
        Offers(client, municipality),
        Rounds(client, municipality),
        Refusals(client, municipality),
        ResidenceChecks(client, municipality),
    )
    return ServiceSpec(name, handlers, pollers=(feed,), clients=(client,))
