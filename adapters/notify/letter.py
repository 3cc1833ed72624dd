"""The print-and-post service's HTTP client: registered letters, and the feed of their status.

The service answers ``POST /v1/letters`` with 201 (accepted now) or 200 (accepted before
under the same key, with the same body) and refuses with 422 ``undeliverable_address`` or
409 ``idempotency_conflict``: those refusals are :class:`Rejected`. 5xx, 429, timeouts and
broken answers are transient errors of :mod:`hub.reliability.retry`, retried by the policy.

A letter is *posted* (with a registered-mail tracking number) some time after it was
accepted, on the day asked for when the letter has one (``Outgoing.post_on``, sent as
``post_on``) and was accepted by then; the hub learns the real posting time by polling
:meth:`LetterClient.events`, whose pages are checked to run on from the position asked for.
The post prints ``Outgoing.printed`` (a PDF, sent as ``document_base64``) when there is one,
else the text.

The recipient's name and address code are personal data: they travel only in the request
body, never in a URL, a log line or an exception text.
"""

from __future__ import annotations

import base64
from typing import Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from adapters.notify.base import (
    Accepted,
    AcceptedAnswer,
    HttpChannel,
    Outcome,
    Outgoing,
)
from hub.reliability.retry import UnexpectedAnswer

TRACKING_PATTERN = r"^[A-Z]{2}\d{9}[A-Z]{2}$"
"""A UPU S10 item identifier, e.g. ``RR123456785LV``."""
REASONS = frozenset({"undeliverable_address", "idempotency_conflict"})
"""Refusals (422, or 409 for a conflict) the service gives for a letter."""


class LetterEvent(BaseModel):
    """One status change of a letter in the service's feed."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    seq: int = Field(ge=1)
    letter_id: str = Field(min_length=1, max_length=200)
    reference: str = Field(min_length=1, max_length=200)
    status: Literal["accepted", "posted"]
    at: AwareDatetime
    tracking_number: str | None = Field(default=None, pattern=TRACKING_PATTERN)

    @model_validator(mode="after")
    def _posted_has_tracking(self) -> Self:
        if self.status == "posted" and self.tracking_number is None:
            raise ValueError("a posted letter has a tracking number")
        return self


class LetterPage(BaseModel):
    """One page of the feed: its events, numbered on from the position asked for."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    events: tuple[LetterEvent, ...]
    last: int = Field(ge=0, description="Number of the newest event in the feed.")


class _Accepted(AcceptedAnswer):
    letter_id: str = Field(min_length=1, max_length=200)
    status: Literal["accepted", "posted"]
    accepted_at: AwareDatetime

    def accepted(self) -> Accepted:
        return Accepted(self.letter_id, self.accepted_at)


class LetterClient(HttpChannel):
    """Client of the print-and-post REST API (``POST /v1/letters``, ``GET /v1/events``)."""

    system = "post"
    refusals = REASONS

    async def send(self, to: str, message: Outgoing) -> Outcome:
        """Have ``message`` printed and posted as a registered letter to the address code
        ``to``, addressed to ``message.addressee``, under the key ``message.key``: its PDF
        (``message.printed``) if it has one, posted on ``message.post_on`` if that is given.
        The attachments are not sent (a letter carries what is printed).

        :class:`Accepted` with the letter's id (posting is reported in the feed), or
        :class:`Rejected` with ``undeliverable_address`` or ``idempotency_conflict``. Raises
        ``UnavailableError`` / ``InvalidResponse`` when the service stayed unavailable or
        broken (transient), ``Refused`` for another 4xx and ``UnexpectedAnswer`` for an
        answer of the wrong shape (permanent); ValueError for a message without addressee.
        """
        if not message.addressee:
            raise ValueError("a registered letter needs an addressee")
        body: dict[str, Any] = {
            "recipient_name": message.addressee,
            "address_code": to,
            "subject": message.subject,
            "text": message.text,
            "reference": message.reference,
        }
        if message.post_on is not None:
            body["post_on"] = message.post_on.isoformat()
        if message.printed is not None:
            body["document_base64"] = base64.b64encode(message.printed).decode("ascii")
        return await self.post_message(
            "/v1/letters", body, message, expect=(201, 200), answer=_Accepted
        )

    async def events(self, after: int, limit: int = 200) -> LetterPage:
        """The feed's status changes after number ``after`` (at most ``limit``).

        :class:`UnexpectedAnswer` when the page has the wrong shape, its numbers do not run
        on from ``after + 1``, it holds more than ``limit`` events, or it is empty although
        the feed says it has events after ``after``.
        """
        if after < 0 or limit < 1:
            raise ValueError("after must not be negative and limit must be positive")
        body = await self.json("GET", "/v1/events", params={"after": after, "limit": limit})
        page = self.parse(LetterPage, body, "GET /v1/events")
        numbers = [event.seq for event in page.events]
        if numbers != list(range(after + 1, after + 1 + len(numbers))) or len(numbers) > limit:
            raise UnexpectedAnswer(f"post feed skipped or repeated events after {after}")
        if not numbers and page.last > after:
            raise UnexpectedAnswer(f"post feed has events up to {page.last} but sent none")
        if numbers and page.last < numbers[-1]:
            raise UnexpectedAnswer(f"post feed says it ends at {page.last} before its events")
        return page


client_from_url = LetterClient.at


__all__ = [
    "REASONS",
    "TRACKING_PATTERN",
    "LetterClient",
    "LetterEvent",
    "LetterPage",
    "client_from_url",
]
