"""The VPS client: the event feed of the queue and population registers, and offers shown
to parents in the e-service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from hub.reliability.retry import HttpPort, RetryPolicy, UnexpectedAnswer


class FeedEvent(BaseModel):
    """One entry of the VPS feed; ``data`` is checked when the entry is turned into a message."""

    seq: int
    type: str
    at: datetime
    data: dict[str, Any]


class FeedPage(BaseModel):
    events: list[FeedEvent]
    last: int


class VpsClient(HttpPort):
    system = "VPS"

    async def events(self, after: int, limit: int = 200) -> FeedPage:
        """The feed's entries after number ``after`` (at most ``limit``)."""
        body = await self.json("GET", "/v1/events", params={"after": after, "limit": limit})
        try:
            page = FeedPage.model_validate(body)
        except ValidationError as exc:
            raise UnexpectedAnswer(f"VPS feed page is not a feed page: {_first(exc)}") from None
        numbers = [e.seq for e in page.events]
        if numbers != list(range(after + 1, after + 1 + len(numbers))):
            raise UnexpectedAnswer(f"VPS feed skipped or repeated entries after {after}")
        return page

    async def show_offer(self, offer_id: str, offer: dict[str, Any]) -> None:
        """Show a new offer to the parents in the e-service."""
        await self.request("PUT", f"/v1/offers/{offer_id}", json=offer)

    async def close_offer(self, offer_id: str, status: str) -> None:
        """Show the parents that an offer is accepted, declined, expired or revoked."""
        await self.request("PUT", f"/v1/offers/{offer_id}/status", json={"status": status})


def _first(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"


def client_from_url(
    url: str, *, timeout: float = 5.0, policy: RetryPolicy | None = None
) -> VpsClient:
    return VpsClient(url, timeout=timeout, policy=policy)
