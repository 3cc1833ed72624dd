"""The VPS client: the event feed of the queue and population registers, offers shown to
parents in the e-service, and round summaries for the admission list."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel

from hub.errors import TransientError
from hub.reliability.retry import HttpPort, Refused, UnexpectedAnswer


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
