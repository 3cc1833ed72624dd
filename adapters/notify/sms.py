"""The SMS gateway's HTTP client: sends one SMS per idempotency key, reads delivery reports.

The gateway answers ``POST /v1/messages`` with 202 (accepted now) or 200 (accepted before
under the same key, with the same body) and refuses with 422 ``invalid_number`` or
``text_too_long``, or 409 ``idempotency_conflict``: those refusals are :class:`Rejected`
(sending again cannot help). 429 (with ``Retry-After``), 5xx, timeouts and broken answers are
transient errors of :mod:`hub.reliability.retry`, retried by the client's policy.

Acceptance is not delivery: the gateway later ``POST``s a delivery report to the callback URL
given with the SMS (:attr:`Outgoing.callback_url <adapters.notify.base.Outgoing.callback_url>`);
the notification service reads it with :func:`parse_report`.

An SMS cannot carry a document: a message's attachments, ``post_on`` and ``printed`` are
not sent (an SMS only reminds; the document reaches the parent on another channel).

Phone numbers are personal data: they travel only in request bodies, never in a URL, a log
line or an exception text.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from adapters.notify.base import (
    Accepted,
    AcceptedAnswer,
    HttpChannel,
    Outcome,
    Outgoing,
)
from hub.reliability.retry import UnexpectedAnswer

DeliveryStatus = Literal["delivered", "temporary_failure", "permanent_failure"]
REASONS = frozenset({"invalid_number", "text_too_long", "idempotency_conflict"})
"""Refusals (422, or 409 for a conflict) the gateway gives for an SMS."""


class DeliveryReport(BaseModel):
    """What the gateway reports about one SMS, POSTed to its callback URL."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sms_id: str = Field(min_length=1, max_length=200)
    reference: str = Field(min_length=1, max_length=200)
    status: DeliveryStatus
    at: AwareDatetime
    detail: str | None = Field(default=None, max_length=500)

    @property
    def delivered(self) -> bool:
        return self.status == "delivered"

    @property
    def permanent(self) -> bool:
        """True when sending the SMS again cannot deliver it (the number is not in service)."""
        return self.status == "permanent_failure"


class _Accepted(AcceptedAnswer):
    sms_id: str = Field(min_length=1, max_length=200)
    accepted_at: AwareDatetime

    def accepted(self) -> Accepted:
        return Accepted(self.sms_id, self.accepted_at)


def _fields(exc: ValidationError) -> list[str]:
    return sorted({".".join(str(p) for p in e["loc"]) or "(body)" for e in exc.errors()})


def parse_report(body: Any) -> DeliveryReport:
    """A delivery report from its JSON (already decoded, or as ``str``/``bytes``).

    :class:`UnexpectedAnswer` naming the wrong fields (never their values) when it is not one.
    """
    try:
        if isinstance(body, str | bytes | bytearray):
            return DeliveryReport.model_validate_json(body)
        return DeliveryReport.model_validate(body)
    except ValidationError as exc:
        raise UnexpectedAnswer(
            f"SMS gateway sent a delivery report with wrong fields: {_fields(exc)}"
        ) from None


class SmsClient(HttpChannel):
    """Client of the SMS gateway's REST API (``POST /v1/messages``)."""

    system = "SMS gateway"
    refusals = REASONS

    async def send(self, to: str, message: Outgoing) -> Outcome:
        """Send ``message.text`` to the phone number ``to`` under the key ``message.key``;
        its attachments are left out (an SMS carries none).

        :class:`Accepted` with the gateway's SMS id (delivery is reported to
        ``message.callback_url`` later), or :class:`Rejected` with ``invalid_number``,
        ``text_too_long`` or ``idempotency_conflict``. Raises ``UnavailableError`` /
        ``InvalidResponse`` when the gateway stayed unavailable or broken (transient),
        ``Refused`` for another 4xx and ``UnexpectedAnswer`` for an answer of the wrong shape
        (permanent).
        """
        body = {
            "to": to,
            "text": message.text,
            "reference": message.reference,
            "callback_url": message.callback_url,
        }
        return await self.post_message(
            "/v1/messages", body, message, expect=(202, 200), answer=_Accepted
        )


client_from_url = SmsClient.at


__all__ = [
    "REASONS",
    "DeliveryReport",
    "DeliveryStatus",
    "SmsClient",
    "client_from_url",
    "parse_report",
]
