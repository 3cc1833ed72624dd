"""The VPS adapter: polls the VPS event feed onto the topics, and shows offers to parents.

Polling was chosen over push because VPS offers no callbacks to external
systems; the feed position is kept in the adapter's store and committed with
the messages each page produced (see :mod:`hub.reliability.poller`), so a
restart neither skips nor loses an entry. Every message's ``event_id`` is
derived from the municipality and the entry's number, so an entry read twice
is published with the same id and consumers skip the repeat.

Feed entries → messages:
- ``institution.registered`` → ``InstitutionRegistered``
- ``application.submitted`` / ``changed`` / ``withdrawn`` → ``ApplicationSubmitted`` /
  ``ApplicationChanged`` / ``ApplicationWithdrawn``
- ``offer.answered`` → ``ParentAccepted`` or ``ParentDeclined``
- ``residence.declared`` → ``ResidenceDeclared``

An entry that does not make a valid message is dead-lettered with the reason;
the feed goes on. VPS child ids become ``child_ref`` = ``CH-<id>``.
"""

from __future__ import annotations

import uuid
from typing import Any

from adapters.vps.client import FeedEvent, VpsClient
from hub.reliability.consumer import Handler, Unit
from hub.reliability.poller import Page, Poller
from hub.reliability.service import ServiceSpec
from schemas.allocation import (
    OfferDeclined,
    OfferExpired,
    OfferMade,
    OfferRevoked,
    ParentAccepted,
    ParentDeclined,
    PlaceAccepted,
)
from schemas.applications import (
    ApplicationChanged,
    ApplicationSubmitted,
    ApplicationWithdrawn,
    Guardian,
)
from schemas.base import Message
from schemas.institutions import InstitutionRegistered, SeatPool
from schemas.residence import ResidenceDeclared
from schemas.topics import VPS

_IDS = uuid.UUID("6f1d3c1e-2b7a-4d0e-9a57-3f0c7d2e8b41")
_STATUS = {
    OfferDeclined: "declined",
    OfferExpired: "expired",
    OfferRevoked: "revoked",
    PlaceAccepted: "accepted",
}


def child_ref(child_id: str) -> str:
    return f"CH-{child_id}"


def vps_child_id(ref: str) -> str:
    return ref.removeprefix("CH-")


def message_for(entry: FeedEvent, municipality: str) -> Message:
    """The hub message of a feed entry; ``ValidationError`` or ``ValueError`` if there is none."""
    d = entry.data
    envelope: dict[str, Any] = {
        "producer": VPS,
        "municipality": municipality,
        "event_id": uuid.uuid5(_IDS, f"{municipality}:{entry.seq}"),
    }
    if entry.type == "institution.registered":
        return InstitutionRegistered.new(
            **envelope,
            institution_id=d.get("institution_id"),
            name=d.get("name"),
            address_code=d.get("address_code"),
            pools=tuple(
                SeatPool(
                    group_code=g.get("code"),
                    language=g.get("language"),
                    min_age_months=g.get("min_age_months"),
                    birth_year_from=g.get("birth_year"),
                    birth_year_to=g.get("birth_year"),
                    capacity=g.get("capacity"),
                )
                for g in d.get("groups") or ()
            ),
        )
    ref = child_ref(str(d.get("child_id")))
    if entry.type == "application.submitted":
        claims = d.get("claims") or {}
        return ApplicationSubmitted.new(
            **envelope,
            application_id=d.get("application_id"),
            child_ref=ref,
            child_personal_code=d.get("child_personal_code"),
            child_birth_date=d.get("child_birth_date"),
            guardians=tuple(
                Guardian(
                    personal_code=g.get("personal_code"), email=g.get("email"), phone=g.get("phone")
                )
                for g in d.get("guardians") or ()
            ),
            residence_address_code=d.get("residence_address_code"),
            institutions=tuple(d.get("institutions") or ()),
            desired_start_date=d.get("desired_start_date"),
            language=d.get("language"),
            accepts_any_institution=bool(d.get("accepts_any_institution")),
            registered_at=d.get("registered_at"),
            claims={
                "large_family": bool(claims.get("large_family")),
                "sibling_personal_codes": tuple(claims.get("sibling_personal_codes") or ()),
                "parent_staff_at": tuple(claims.get("parent_staff_at") or ()),
            },
            submitted_via=d.get("channel") or "e_service",
            power_of_attorney_ref=d.get("power_of_attorney"),
        )
    if entry.type == "application.changed":
        return ApplicationChanged.new(
            **envelope,
            application_id=d.get("application_id"),
            child_ref=ref,
            institutions=tuple(d.get("institutions") or ()),
            desired_start_date=d.get("desired_start_date"),
            language=d.get("language"),
            accepts_any_institution=bool(d.get("accepts_any_institution")),
            changed_at=d.get("changed_at"),
        )
    if entry.type == "application.withdrawn":
        return ApplicationWithdrawn.new(
            **envelope,
            application_id=d.get("application_id"),
            child_ref=ref,
            reason=d.get("reason"),
            withdrawn_at=d.get("withdrawn_at"),
        )
    if entry.type == "offer.answered":
        kind = {"accept": ParentAccepted, "decline": ParentDeclined}.get(str(d.get("verdict")))
        if kind is None:
            raise ValueError(f"offer answer with verdict {d.get('verdict')!r}")
        return kind.new(
            **envelope, offer_id=d.get("offer_id"), child_ref=ref, responded_at=d.get("answered_at")
        )
    if entry.type == "residence.declared":
        return ResidenceDeclared.new(
            **envelope,
            child_ref=ref,
            subject=d.get("subject"),
            address_code=d.get("address_code"),
            territory_code=d.get("territory_code"),
            declared_municipality=d.get("municipality"),
            declared_from=d.get("declared_from"),
        )
    raise ValueError(f"unknown VPS feed entry type {entry.type!r}")


class VpsFeed(Poller):
    """Reads the VPS feed a page at a time; the position is the last entry's number."""

    feed = "vps-events"

    def __init__(
        self, client: VpsClient, municipality: str, *, page_size: int = 200, interval: float = 0.5
    ) -> None:
        self.client, self.municipality, self.page_size = client, municipality, page_size
        self.interval = interval

    async def poll(self, position: str | None) -> Page:
        after = int(position or 0)
        page = await self.client.events(after, self.page_size)
        last = page.events[-1].seq if page.events else after
        return Page(page.events, str(last), more=last < page.last)

    def apply(self, unit: Unit, item: FeedEvent) -> None:
        unit.emit(message_for(item, self.municipality))

    def describe(self, item: Any) -> bytes:
        return item.model_dump_json().encode() if isinstance(item, FeedEvent) else b""

    async def close(self) -> None:
        await self.client.close()


class Offers(Handler[Message]):
    """Shows each offer, and each change of its status, to the parents in the e-service."""

    def __init__(self, client: VpsClient) -> None:
        super().__init__("allocation.offers.v1")
        self.client = client

    async def fetch(self, message: Message) -> Any:
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
        elif type(message) in _STATUS:
            await self.client.close_offer(str(message.offer_id), _STATUS[type(message)])  # type: ignore[attr-defined]
        return None  # deadlines and the like: nothing the e-service shows

    def apply(self, unit: Unit, message: Message, fetched: Any) -> None:
        """Nothing to record: the call was the effect."""


def service(
    client: VpsClient,
    municipality: str,
    *,
    name: str = "vps-adapter",
    feed_client: VpsClient | None = None,
    interval: float = 0.5,
) -> ServiceSpec:
    """The VPS adapter: the feed poller and the offers handler (clients may be one)."""
    feed = VpsFeed(feed_client or client, municipality, interval=interval)
    return ServiceSpec(name, (Offers(client),), pollers=(feed,))
