"""The VPS client: the event feed of the queue and population registers, the population
register's residence checks, offers and refusals shown to parents in the e-service, and
round summaries for the admission list.

Personal codes travel only in request bodies, never in paths, and no error text built here
carries one. Answers are checked against the protocol: a body that is not JSON is retried
(:class:`~hub.reliability.retry.InvalidResponse`), JSON of the wrong shape is not
(:class:`~hub.reliability.retry.UnexpectedAnswer`). The register not knowing a child (404
``unknown_person``) is an answer, not an error: :meth:`VpsClient.residences` returns None.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict

from hub.errors import PermanentError, TransientError
from hub.reliability.retry import HttpPort, Refused, UnexpectedAnswer
from schemas.values import AddressCode, MunicipalityCode, PersonalCode, TerritoryCode

POPULATION = "/v1/population/residence"


class FeedPage(BaseModel):
    """One page of the VPS feed. Only the envelope and each entry's ``seq`` are checked here;
    the entries stay as VPS sent them, so that one bad entry is refused on its own."""

    feed: str
    events: list[dict[str, Any]]
    last: int


class FeedReset(UnexpectedAnswer):
    """The VPS feed is not the one the stored position belongs to (another feed id, or fewer
    entries than already read): entries may be missing or repeated. Not retried; an operator
    reviews the position before polling can go on."""


class OfferNotShownYet(TransientError):
    """VPS does not know the offer yet: its OfferMade may be parked behind this message, so
    the message is tried again later."""


class UnknownApplication(PermanentError):
    """The e-service never took the application the hub refers to: not retried."""


@dataclass(frozen=True, slots=True)
class Declared:
    """A declared residence, as the population register answers it."""

    address_code: str
    territory_code: str
    municipality: str
    """The municipality where it is declared, as VPS names it (the hub's code)."""
    declared_from: date


class _Answer(BaseModel):
    # Tolerant of fields added later; never echoes the input in validation errors.
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)


class _Declared(_Answer):
    address_code: AddressCode
    territory_code: TerritoryCode
    municipality: MunicipalityCode
    declared_from: date


class _Person(_Answer):
    personal_code: PersonalCode
    residence: _Declared | None


class _Population(_Answer):
    as_of: date
    persons: list[_Person]


def _code(value: PersonalCode | str) -> PersonalCode:
    return value if isinstance(value, PersonalCode) else PersonalCode(value)


class VpsClient(HttpPort):
    system = "VPS"

    async def events(self, after: int, limit: int = 200) -> FeedPage:
        """The feed's entries after number ``after`` (at most ``limit``), unparsed.

        :class:`UnexpectedAnswer` when the page is not a feed page, an entry has no
        integer ``seq``, the numbers do not run on from ``after + 1``, or the page is
        empty although the feed says it has entries after ``after``.
        """
        body = await self.json("GET", "/v1/events", params={"after": after, "limit": limit})
        page = self.parse(FeedPage, body, "GET /v1/events")
        numbers = [e.get("seq") for e in page.events]
        if not all(type(n) is int for n in numbers):
            raise UnexpectedAnswer(f"VPS feed entry after {after} has no integer seq")
        if numbers != list(range(after + 1, after + 1 + len(numbers))):
            raise UnexpectedAnswer(f"VPS feed skipped or repeated entries after {after}")
        if not numbers and page.last > after:
            raise UnexpectedAnswer(f"VPS feed has entries up to {page.last} but sent none")
        return page

    async def residences(
        self,
        child: PersonalCode | str,
        guardians: Iterable[PersonalCode | str],
        as_of: date,
    ) -> dict[PersonalCode, Declared | None] | None:
        """Where the child and the guardians have their declared residence on ``as_of``
        (None for a person without one then), keyed by the codes asked, the child first;
        None when the register does not know the child.

        :class:`UnexpectedAnswer` when the answer is of the wrong shape, for another date,
        or leaves out a code asked.
        """
        child_code = _code(child)
        others = [c for c in dict.fromkeys(_code(g) for g in guardians) if c != child_code]
        body = {
            "child_personal_code": child_code.reveal(),
            "guardian_personal_codes": [c.reveal() for c in others],
            "as_of": as_of.isoformat(),
        }
        try:
            found = await self.json("POST", POPULATION, json=body)
        except Refused as refused:
            if refused.status == 404 and refused.error == "unknown_person":
                return None
            raise  # another 4xx (a wrong URL, say): not an answer VPS promises
        answer = self.parse(_Population, found, f"POST {POPULATION}")
        if answer.as_of != as_of:
            raise UnexpectedAnswer(
                f"VPS answered POST {POPULATION} for {answer.as_of}, not for {as_of} as asked"
            )
        persons = {p.personal_code: p.residence for p in answer.persons}
        codes = [child_code, *others]
        missing = sum(1 for c in codes if c not in persons)
        if missing:
            raise UnexpectedAnswer(
                f"VPS answered POST {POPULATION} without {missing} of the {len(codes)} codes asked"
            )
        return {
            c: Declared(**r.model_dump()) if (r := persons[c]) is not None else None for c in codes
        }

    async def refuse_application(self, application_id: str, refusal: dict[str, Any]) -> None:
        """Show the parents that the hub refused the application (idempotent)."""
        try:
            await self.request(
                "PUT",
                f"/v1/applications/{application_id}/refusal",
                expect=(204,),
                json=refusal,
            )
        except Refused as refused:
            if refused.status == 404 and refused.error == "unknown_application":
                raise UnknownApplication(
                    f"VPS does not know application {application_id}: the refusal cannot be shown"
                ) from None
            raise

    async def show_offer(self, offer_id: str, offer: dict[str, Any]) -> bool:
        """Show a new offer to the parents in the e-service; False if VPS has it closed
        already (an answer or a close came first: it stays closed, nothing to do)."""
        try:
            await self.request("PUT", f"/v1/offers/{offer_id}", expect=(204,), json=offer)
        except Refused as refused:
            if refused.status == 409 and refused.error == "closed":
                return False
            raise
        return True

    async def close_offer(self, offer_id: str, status: str) -> None:
        """Show the parents that an offer is accepted, declined, expired or revoked."""
        await self._offer_call(offer_id, "status", {"status": status})

    async def set_deadline(self, offer_id: str, respond_by: date) -> None:
        """Show the parents the last day to answer an offer."""
        await self._offer_call(offer_id, "deadline", {"respond_by": respond_by.isoformat()})

    async def publish_round(self, round_id: str, summary: dict[str, Any]) -> None:
        """Hand an admission round's summary to the e-service (idempotent)."""
        await self.request("PUT", f"/v1/rounds/{round_id}", expect=(204,), json=summary)

    async def _offer_call(self, offer_id: str, what: str, body: dict[str, Any]) -> None:
        try:
            await self.request("PUT", f"/v1/offers/{offer_id}/{what}", expect=(204,), json=body)
        except Refused as refused:
            if refused.status == 404 and refused.error == "unknown_offer":
                raise OfferNotShownYet(f"VPS does not know offer {offer_id} yet") from None
            raise


client_from_url = VpsClient.at
