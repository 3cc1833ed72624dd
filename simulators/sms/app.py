"""SMS gateway simulator: accepts text messages and reports their delivery by callback.

A plausible REST API of a bulk-SMS provider:

- ``POST /v1/messages`` with the header ``Idempotency-Key`` (required, else 400) and the body
  ``{"to": "+371XXXXXXXX", "text", "reference", "callback_url"}`` accepts one SMS and answers
  202 ``{"sms_id", "accepted_at"}``. The same key with the same body answers 200 with the same
  SMS (nothing is sent twice); the same key with another body answers 409
  ``{"error": "idempotency_conflict"}``. A number that is not ``+371`` and eight digits answers
  422 ``{"error": "invalid_number"}``, a text longer than :data:`MAX_TEXT` characters (four
  concatenated GSM-7 segments) 422 ``{"error": "text_too_long"}``; a body that breaks the
  schema 400 ``{"error": "invalid_request"}``. Neither registers the key.
- The gateway takes at most ``rate_per_second`` requests to ``POST /v1/messages`` (a token
  bucket holding one second's worth); above that it answers 429 ``{"error": "rate_limited"}``
  with ``Retry-After: 1``.
- ``callback_delay`` seconds after accepting, the gateway ``POST``s a delivery report
  ``{"sms_id", "reference", "status", "at", "detail"}`` to the message's ``callback_url``
  (``status`` is ``delivered``, ``temporary_failure`` or ``permanent_failure``). When the
  receiver does not answer 2xx or cannot be reached, the report is sent again, up to
  :data:`CALLBACK_RETRIES` more times, waiting 0.1 s, 0.2 s, 0.4 s, … in between: a receiver
  that was down gets it later. Reports still pending when the server stops are dropped.
- ``GET /v1/messages/{sms_id}`` answers the SMS's status (404 if unknown); ``GET /health``
  says it is up, with the number of SMS sent.

Magic numbers, for tests and demos:

- :data:`PERMANENT_FAILURE` (``+37120000000``) is accepted, then reported
  ``permanent_failure`` (the number is not in service);
- :data:`TEMPORARY_FAILURE_ONCE` (``+37120000001``) is accepted, then reported
  ``temporary_failure`` the first time; a later SMS to it under a new key is ``delivered``;
- every other valid number is ``delivered``.

Phone numbers are personal data: they never appear in URLs, error details or reports.
``app.state.sent`` lists every SMS sent (:class:`Sent`), so tests count SMS per number.

Faults (:mod:`simulators.faults`) are injected in front of the app: a faulted request never
reaches it, so it sends nothing; a request whose answer got lost is repeated with the same
``Idempotency-Key`` and gets the same SMS.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import httpx
from fastapi import Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

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

IdempotencyKey = idempotency_key("SMS")
"""Type of the optional ``Idempotency-Key`` header of the idempotent POST."""

PERMANENT_FAILURE = "+37120000000"
"""Accepted, then reported ``permanent_failure``."""
TEMPORARY_FAILURE_ONCE = "+37120000001"
"""Accepted, then reported ``temporary_failure`` at its first SMS; delivered after that."""
MAX_TEXT = 612
"""Longest text accepted: four concatenated GSM-7 segments of 153 characters."""
CALLBACK_RETRIES = 10
"""How many times a report the receiver did not take is sent again."""
CALLBACK_FIRST_WAIT = 0.1
"""Wait before the first repeat of a report; doubled before each further one."""
NUMBER = re.compile(r"^\+371\d{8}$")

Status = Literal["accepted", "delivered", "temporary_failure", "permanent_failure"]
_DETAILS = {
    "delivered": "delivered to the handset",
    "temporary_failure": "handset unreachable; send again later",
    "permanent_failure": "number not in service",
}


class NewSms(BaseModel):
    """One SMS to send."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(description="Recipient in international form, +371 and eight digits.")
    text: str = Field(min_length=1, description=f"At most {MAX_TEXT} characters.")
    reference: str = Field(min_length=1, max_length=200, description="The sender's reference.")
    callback_url: str = Field(
        min_length=1, max_length=2000, description="Where the delivery report is POSTed."
    )


class SmsAccepted(BaseModel):
    sms_id: str
    accepted_at: datetime


class SmsStatus(BaseModel):
    sms_id: str
    reference: str
    status: Status
    accepted_at: datetime
    updated_at: datetime
    detail: str | None = None


class Sent(NamedTuple):
    """An SMS the gateway sent (once per idempotency key)."""

    key: str
    to: str
    text: str
    reference: str


@dataclass
class SmsSimulator(FaultInjection):
    """The gateway's fault injection; stopping it drops the delivery reports still pending."""

    pending: set[asyncio.Task[None]] = field(default_factory=set)

    def release(self) -> None:
        super().release()
        for task in list(self.pending):
            task.cancel()


@dataclass
class _TokenBucket:
    rate: float
    now: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.at = self.now()

    def take(self) -> bool:
        now = self.now()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class Gateway:
    """The gateway's state: what it sent, each SMS's status, and the reports under way."""

    clock: Callable[[], datetime]
    callback_delay: float
    pending: set[asyncio.Task[None]]
    seed: int = 0

    def __post_init__(self) -> None:
        self.sent: list[Sent] = []
        self.messages: dict[str, SmsStatus] = {}
        self.sends_to: Counter[str] = Counter()
        self.callback_attempts: Counter[str] = Counter()
        """Reports POSTed per SMS id, counting the repeats."""
        self._ids = random.Random(self.seed)

    def accept(self, key: str, body: NewSms) -> SmsStatus:
        """Send a new SMS: record it and report its delivery later."""
        sms_id = f"sms-{self._ids.getrandbits(64):016x}"
        now = self.clock().astimezone(UTC)
        accepted = SmsStatus(
            sms_id=sms_id,
            reference=body.reference,
            status="accepted",
            accepted_at=now,
            updated_at=now,
        )
        self.messages[sms_id] = accepted
        self.sent.append(Sent(key, body.to, body.text, body.reference))
        self.sends_to[body.to] += 1
        task = asyncio.create_task(self._report(sms_id, self._outcome(body.to), body.callback_url))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)
        return accepted

    def _outcome(self, to: str) -> Status:
        if to == PERMANENT_FAILURE:
            return "permanent_failure"
        if to == TEMPORARY_FAILURE_ONCE and self.sends_to[to] == 1:
            return "temporary_failure"
        return "delivered"

    async def _report(self, sms_id: str, status: Status, callback_url: str) -> None:
        await asyncio.sleep(self.callback_delay)
        now = self.clock().astimezone(UTC)
        message = self.messages[sms_id].model_copy(
            update={"status": status, "updated_at": now, "detail": _DETAILS[status]}
        )
        self.messages[sms_id] = message
        body = {
            "sms_id": sms_id,
            "reference": message.reference,
            "status": status,
            "at": now.isoformat(),
            "detail": _DETAILS[status],
        }
        wait = CALLBACK_FIRST_WAIT
        async with httpx.AsyncClient(timeout=2.0) as http:
            for attempt in range(CALLBACK_RETRIES + 1):
                self.callback_attempts[sms_id] += 1
                with contextlib.suppress(httpx.HTTPError, httpx.InvalidURL):
                    answer = await http.post(callback_url, json=body)
                    if answer.is_success:
                        return
                if attempt < CALLBACK_RETRIES:
                    await asyncio.sleep(wait)
                    wait *= 2


def create_app(
    faults: Faults = NO_FAULTS,
    *,
    rate_per_second: float = 50,
    callback_delay: float = 0.05,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    seed: int = 0,
) -> SmsSimulator:
    """The SMS gateway simulator, wrapped in fault injection; its FastAPI app is ``.app``.

    ``app.state`` holds ``sent`` (every SMS sent, :class:`Sent`), ``messages`` (status by SMS
    id), ``callback_attempts`` (reports POSTed per SMS id) and ``gateway`` (:class:`Gateway`).
    """
    if rate_per_second <= 0 or callback_delay < 0:
        raise ValueError("the rate must be positive and the callback delay not negative")
    bucket = _TokenBucket(rate_per_second)
    app = simulator(
        "SMS gateway simulator",
        "Sends SMS and reports their delivery to a callback URL.",
        "SMS gateway",
        counts=lambda: {"messages": len(gateway.sent)},
        clock=clock,
        invalid_as_400=True,
    )
    wrapped = SmsSimulator(app, faults)
    gateway = Gateway(clock, callback_delay, wrapped.pending, seed)
    app.state.gateway = gateway
    app.state.sent = gateway.sent
    app.state.messages = gateway.messages
    app.state.callback_attempts = gateway.callback_attempts
    sends = IdempotentPost[NewSms, SmsStatus]("SMS", _accepted)

    @sends.route(
        app,
        "/v1/messages",
        SmsAccepted,
        status_code=202,
        before="Sent",
        refusals={422: "invalid_number or text_too_long.", 429: "Above the rate; see Retry-After."},
    )
    async def send(body: NewSms, idempotency_key: IdempotencyKey = None) -> Response:
        if not idempotency_key:
            return missing_idempotency_key()
        if not bucket.take():
            answer = error(429, "rate_limited", f"at most {rate_per_second:g} SMS per second")
            answer.headers["Retry-After"] = "1"
            return answer
        repeated = sends.repeated(idempotency_key, body)
        if repeated is not None:
            return repeated
        if not NUMBER.fullmatch(body.to):
            return error(422, "invalid_number", "not a Latvian number (+371 and eight digits)")
        if len(body.text) > MAX_TEXT:
            return error(422, "text_too_long", f"the text is longer than {MAX_TEXT} characters")
        return sends.remember(idempotency_key, body, gateway.accept(idempotency_key, body), 202)

    @app.get("/v1/messages/{sms_id}", response_model=SmsStatus, responses=no_such("SMS"))
    async def status(sms_id: str) -> Any:
        return one_of(gateway.messages, sms_id, "SMS")

    return wrapped


def _accepted(message: SmsStatus, status: int) -> JSONResponse:
    answer = SmsAccepted(sms_id=message.sms_id, accepted_at=message.accepted_at)
    return JSONResponse(answer.model_dump(mode="json"), status_code=status)


__all__ = [
    "MAX_TEXT",
    "PERMANENT_FAILURE",
    "TEMPORARY_FAILURE_ONCE",
    "Gateway",
    "NewSms",
    "Sent",
    "SmsSimulator",
    "create_app",
]
