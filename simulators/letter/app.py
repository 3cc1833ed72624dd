"""Letter simulator: a print-and-post service that sends registered letters, the last resort.

A plausible REST API of a hybrid-mail provider:

- ``POST /v1/letters`` with the header ``Idempotency-Key`` (required, else 400) and the body
  ``{"recipient_name", "address_code", "subject", "text", "reference"}``, optionally with
  ``"post_on"`` (an ISO date: the day to hand the letter to the post) and
  ``"document_base64"`` (the PDF to print instead of ``text``, base64, at most
  :data:`MAX_DOCUMENT_BYTES`), accepts a letter and answers 201 ``{"letter_id", "status":
  "accepted", "accepted_at"}``. The same key with the same body (the document byte for byte)
  answers 200 with the same letter and its status now (nothing is printed twice); the same key
  with another body answers 409 ``{"error": "idempotency_conflict"}``. ``address_code`` is
  the address register's nine-digit code; a code starting with ``0`` (``000000000``, say) is
  an address the post cannot deliver to and answers 422 ``{"error": "undeliverable_address"}``
  (the key is not registered). A body that breaks the schema (a document that is not base64
  of a PDF, say) answers 400 ``invalid_request``.
- A letter is *posted* as registered mail with a tracking number in the UPU S10 form
  (``RR000000014LV``: two letters, eight serial digits, a check digit, the country):
  without ``post_on``, ``post_after`` seconds after it was accepted (by ``clock``). **A letter
  accepted by the end of its** ``post_on`` **(Riga time) is posted on** ``post_on``:
  ``post_after`` after acceptance, but not before that day begins (00:00 Europe/Riga) nor
  after 23:59:59 that day (nor before it was accepted). A letter accepted
  after its ``post_on`` has passed (a ``post_on`` in the past is allowed) is posted
  ``post_after`` after acceptance, on a later day: the feed says when it really was. Letters
  are moved lazily, when any request arrives, in the order they fall due.
- ``GET /v1/events?after=N&limit=M`` is the feed of status changes, numbered from 1:
  ``{"events": [{"seq", "letter_id", "reference", "status": "accepted" | "posted", "at",
  "tracking_number"}], "last": n}`` (``tracking_number`` only on ``posted``); ``last`` is
  the number of the newest event.
- ``GET /v1/letters/{letter_id}`` answers a letter's status and ``post_on`` (404 if unknown);
  ``GET /health`` says it is up, with the number of letters.

The recipient's name and address, and the printed document, are personal data: they are never
in a URL, the feed or an error detail. ``app.state.letters`` holds the letters
(:class:`Letter`, the PDF as ``Letter.document``) for tests.

Faults (:mod:`simulators.faults`) are injected in front of the app: a faulted request never
reaches it, so it accepts nothing.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from fastapi import Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from simulators.api import (
    NO_FAULTS,
    IdempotentPost,
    error,
    idempotency_key,
    missing_idempotency_key,
    no_such,
    one_of,
    simulator,
)
from simulators.faults import FaultInjection, Faults

IdempotencyKey = idempotency_key("letter")
"""Type of the optional ``Idempotency-Key`` header of the idempotent POST."""

LetterStatus = Literal["accepted", "posted"]
RIGA = ZoneInfo("Europe/Riga")
MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
"""The largest PDF the post prints for one letter (10 MiB)."""
_S10_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)


def tracking_number(serial: int, service: str = "RR", country: str = "LV") -> str:
    """A UPU S10 item identifier: service, eight serial digits, check digit, country."""
    if not 0 <= serial < 10**8:
        raise ValueError("the serial has eight digits")
    digits = f"{serial:08d}"
    check = 11 - sum(int(d) * w for d, w in zip(digits, _S10_WEIGHTS, strict=True)) % 11
    check = {10: 0, 11: 5}.get(check, check)
    return f"{service}{digits}{check}{country}"


class NewLetter(BaseModel):
    """A letter to print and post as registered mail."""

    model_config = ConfigDict(extra="forbid")

    recipient_name: str = Field(min_length=1, max_length=200)
    address_code: str = Field(pattern=r"^\d{9}$", description="Address register code.")
    subject: str = Field(min_length=1, max_length=300)
    text: str = Field(min_length=1, max_length=50_000)
    reference: str = Field(min_length=1, max_length=200)
    post_on: date | None = Field(
        default=None,
        description="The day to hand the letter to the post; accepted by then, posted then.",
    )
    document_base64: str | None = Field(
        default=None,
        max_length=(MAX_DOCUMENT_BYTES + 2) // 3 * 4,
        description="The PDF to print instead of the text, base64 (RFC 4648, padded).",
    )

    @field_validator("document_base64")
    @classmethod
    def _pdf(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                document = base64.b64decode(value, validate=True)
            except binascii.Error:
                raise ValueError("not base64") from None
            if not document.startswith(b"%PDF-"):
                raise ValueError("not a PDF")
        return value

    @property
    def document(self) -> bytes | None:
        """The PDF to print, when one came."""
        return None if self.document_base64 is None else base64.b64decode(self.document_base64)


class LetterAccepted(BaseModel):
    letter_id: str
    status: LetterStatus
    accepted_at: datetime


class LetterOut(LetterAccepted):
    reference: str
    post_on: date | None = None
    posted_at: datetime | None = None
    tracking_number: str | None = None


class Event(BaseModel):
    seq: int
    letter_id: str
    reference: str
    status: LetterStatus
    at: datetime
    tracking_number: str | None = None


class Feed(BaseModel):
    events: list[Event]
    last: int = Field(description="Number of the newest event in the feed.")


@dataclass
class Letter:
    """A letter as the service keeps it."""

    letter_id: str
    key: str
    body: NewLetter
    accepted_at: datetime
    status: LetterStatus = "accepted"
    posted_at: datetime | None = None
    tracking_number: str | None = None

    @property
    def document(self) -> bytes | None:
        """The PDF the post prints (None: it prints the text)."""
        return self.body.document

    def due(self, post_after: timedelta) -> datetime:
        """When the letter is posted (see the module's docstring)."""
        earliest = self.accepted_at + post_after
        if self.body.post_on is None:
            return earliest
        day = self.body.post_on
        last = datetime.combine(day, time(23, 59, 59), RIGA).astimezone(UTC)
        if self.accepted_at >= datetime.combine(day + timedelta(days=1), time(), RIGA):
            return earliest  # too late for that day
        opens = datetime.combine(day, time(), RIGA).astimezone(UTC)
        return max(min(max(earliest, opens), last), self.accepted_at)

    def out(self) -> LetterOut:
        return LetterOut(
            letter_id=self.letter_id,
            status=self.status,
            accepted_at=self.accepted_at,
            reference=self.body.reference,
            post_on=self.body.post_on,
            posted_at=self.posted_at,
            tracking_number=self.tracking_number,
        )


def create_app(
    faults: Faults = NO_FAULTS,
    *,
    post_after: float = 0.2,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FaultInjection:
    """The letter simulator, wrapped in fault injection; its FastAPI app is ``.app``."""
    if post_after < 0:
        raise ValueError("post_after must not be negative")
    letters: dict[str, Letter] = {}
    sends = IdempotentPost[NewLetter, Letter]("letter", _accepted)
    events: list[Event] = []
    delay = timedelta(seconds=post_after)

    app = simulator(
        "Letter simulator",
        "Print-and-post service: sends registered letters and reports when they are posted.",
        "post",
        counts=lambda: {"letters": len(letters)},
        clock=clock,
        invalid_as_400=True,
    )
    app.state.letters = letters
    app.state.events = events

    def record(letter: Letter, at: datetime) -> None:
        events.append(
            Event(
                seq=len(events) + 1,
                letter_id=letter.letter_id,
                reference=letter.body.reference,
                status=letter.status,
                at=at,
                tracking_number=letter.tracking_number,
            )
        )

    def post_due() -> None:
        now = clock().astimezone(UTC)
        due = sorted(
            (x for x in letters.values() if x.status == "accepted" and x.due(delay) <= now),
            key=lambda x: (x.due(delay), x.letter_id),
        )
        for letter in due:
            letter.status = "posted"
            letter.posted_at = letter.due(delay)
            letter.tracking_number = tracking_number(int(letter.letter_id[1:]))
            record(letter, letter.posted_at)

    @app.middleware("http")
    async def lazily_post(request: Request, call_next: Callable[[Request], Any]) -> Response:
        post_due()
        return await call_next(request)  # type: ignore[no-any-return]

    @sends.route(
        app,
        "/v1/letters",
        LetterAccepted,
        status_code=201,
        before="Accepted",
        refusals={422: "The address is undeliverable."},
    )
    async def send(body: NewLetter, idempotency_key: IdempotencyKey = None) -> Response:
        if not idempotency_key:
            return missing_idempotency_key()
        repeated = sends.repeated(idempotency_key, body)
        if repeated is not None:
            return repeated
        if body.address_code.startswith("0"):
            return error(422, "undeliverable_address", "the post does not deliver there")
        letter = Letter(
            letter_id=f"L{len(letters) + 1:08d}",
            key=idempotency_key,
            body=body,
            accepted_at=clock().astimezone(UTC),
        )
        letters[letter.letter_id] = letter
        record(letter, letter.accepted_at)
        return sends.remember(idempotency_key, body, letter, 201)

    @app.get("/v1/letters/{letter_id}", response_model=LetterOut, responses=no_such("letter"))
    async def letter(letter_id: str) -> Any:
        return one_of(letters, letter_id, "letter").out()

    @app.get("/v1/events", response_model=Feed, response_model_exclude_none=True)
    async def feed(after: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000)) -> Feed:
        """Status changes after number ``after``, oldest first (at most ``limit``)."""
        return Feed(events=events[after : after + limit], last=len(events))

    return FaultInjection(app, faults)


def _accepted(letter: Letter, status: int) -> JSONResponse:
    answer = LetterAccepted(
        letter_id=letter.letter_id, status=letter.status, accepted_at=letter.accepted_at
    )
    return JSONResponse(answer.model_dump(mode="json"), status_code=status)


__all__ = [
    "MAX_DOCUMENT_BYTES",
    "RIGA",
    "Event",
    "Feed",
    "Letter",
    "NewLetter",
    "create_app",
    "tracking_number",
]
