"""The e-adrese (official electronic address) HTTP client.

Operations: whether a recipient has an active e-adrese (:meth:`EAdreseClient.is_active`),
SendMessage (:meth:`~EAdreseClient.send`, idempotent by the message's key),
GetMessageServerConfirmation (:meth:`~EAdreseClient.confirmation`) and GetNotificationList
(:meth:`~EAdreseClient.notifications`). A person is addressed by personal code, an institution
as ``_DEFAULT@<registration no.>``.

A message's attachments (``Outgoing.attachments``) travel with it, base64 in the JSON body.
The service refuses a message with 422 and a reason (``no_active_e_adrese``,
``too_many_attachments``, ``attachment_type``, ``attachment_name``, ``attachments_too_large``)
or 409 ``idempotency_conflict`` (the key names another message, attachments included): those
are outcomes, returned as :class:`~adapters.notify.base.Rejected`. Attachments it would refuse
are refused here without a call (:func:`check_attachments`). Every other failure is an error
of :mod:`hub.reliability.retry`: 5xx, 429, timeouts and broken JSON are retried, another 4xx
is :class:`Refused`, well-formed JSON of the wrong shape :class:`UnexpectedAnswer`.

Personal codes travel only in JSON bodies: never in a URL, an exception text or a reference.
"""

from __future__ import annotations

import base64
import re
import warnings
from collections.abc import Sequence
from datetime import datetime
from typing import Literal
from urllib.parse import quote

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictInt

from adapters.notify.base import (
    Accepted,
    AcceptedAnswer,
    Attachment,
    HttpChannel,
    Outcome,
    Outgoing,
    Rejected,
)
from hub.reliability.retry import UnexpectedAnswer
from schemas.values import PersonalCode, mask_personal_codes

MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
"""The most a message's attachments may hold together, in bytes (10 MiB)."""
ALLOWED_TYPES: dict[str, frozenset[str]] = {
    "application/pdf": frozenset({"pdf"}),
    "application/vnd.etsi.asic-e+zip": frozenset({"edoc", "asice"}),
    "application/msword": frozenset({"doc"}),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": frozenset({"docx"}),
    "application/vnd.oasis.opendocument.text": frozenset({"odt"}),
    "application/rtf": frozenset({"rtf"}),
    "text/plain": frozenset({"txt"}),
    "image/jpeg": frozenset({"jpg", "jpeg"}),
    "image/png": frozenset({"png"}),
    "application/vnd.ms-excel": frozenset({"xls"}),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": frozenset({"xlsx"}),
    "application/vnd.oasis.opendocument.spreadsheet": frozenset({"ods"}),
}
"""The media types the e-adrese takes, each with the file-name extensions it may have."""
ALLOWED_EXTENSIONS = frozenset(e for extensions in ALLOWED_TYPES.values() for e in extensions)
"""Attachment types the e-adrese takes, by the extension of the file name."""
CONFLICT = "idempotency_conflict"
REASONS = frozenset(
    {
        "no_active_e_adrese",
        "too_many_attachments",
        "attachment_type",
        "attachment_name",
        "attachments_too_large",
        CONFLICT,
    }
)
"""Refusals (422, or 409 for a conflict) the e-adrese gives for a message; sending it again
cannot help."""

_INSTITUTION = re.compile(r"^_DEFAULT@\d{11}$")


def _extension(name: str) -> str:
    stem, dot, extension = name.rpartition(".")
    return extension.lower() if dot and stem else ""


def check_attachments(attachments: Sequence[Attachment]) -> str | None:
    """Why the e-adrese would refuse these attachments (None if it would not): more than
    :data:`MAX_ATTACHMENTS` (``too_many_attachments``), a media type it does not take or a
    name whose extension does not fit it (``attachment_type``), two with one name
    (``attachment_name``), more than :data:`MAX_ATTACHMENT_BYTES` together
    (``attachments_too_large``)."""
    if len(attachments) > MAX_ATTACHMENTS:
        return "too_many_attachments"
    for attachment in attachments:
        media_type = attachment.media_type.partition(";")[0].strip().lower()
        if _extension(attachment.name) not in ALLOWED_TYPES.get(media_type, ()):
            return "attachment_type"
    if len({attachment.name for attachment in attachments}) < len(attachments):
        return "attachment_name"
    if sum(len(attachment.content) for attachment in attachments) > MAX_ATTACHMENT_BYTES:
        return "attachments_too_large"
    return None


def attachment_json(attachment: Attachment) -> dict[str, str]:
    """``attachment`` as the e-adrese takes it: ``{"name", "media_type", "content_base64"}``."""
    return {
        "name": attachment.name,
        "media_type": attachment.media_type,
        "content_base64": base64.b64encode(attachment.content).decode("ascii"),
    }


def address(recipient: PersonalCode | str) -> str:
    """The recipient as the e-adrese knows it: a personal code or ``_DEFAULT@<reg. no.>``.

    Raises ValueError (without the value) for anything else.
    """
    if isinstance(recipient, PersonalCode):
        return recipient.reveal()
    if _INSTITUTION.match(recipient.strip()):
        return recipient.strip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a new-format checksum is the register's business
        return PersonalCode(recipient).reveal()


class _Status(BaseModel):
    model_config = ConfigDict(extra="ignore")

    active: StrictBool


class _Received(AcceptedAnswer):
    message_id: str = Field(min_length=1, max_length=200)
    server_received_at: AwareDatetime

    def accepted(self) -> Accepted:
        return Accepted(self.message_id, self.server_received_at)


class Notification(BaseModel):
    """Something that happened to a sent message, numbered by the service."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    seq: StrictInt = Field(ge=1)
    message_id: str = Field(min_length=1, max_length=200)
    kind: Literal["delivered_to_mailbox", "opened"]
    at: AwareDatetime


class NotificationPage(BaseModel):
    """Notifications numbered ``after + 1`` onwards; ask for the next page after ``last``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    notifications: tuple[Notification, ...]
    last: StrictInt = Field(ge=0)


class EAdreseClient(HttpChannel):
    """Client of the e-adrese service (see the module's docstring)."""

    system = "e-adrese"
    refusals = REASONS

    async def is_active(self, recipient: PersonalCode | str) -> bool:
        """Whether ``recipient`` has an activated e-adrese."""
        what = "POST /v1/addresses/check"
        answer = await self.json(
            "POST", "/v1/addresses/check", json={"recipient": address(recipient)}
        )
        return self.parse(_Status, answer, what).active

    async def reaches(self, to: str) -> bool:
        """Only a recipient with an activated e-adrese can be sent to."""
        return await self.is_active(to)

    async def send(self, to: PersonalCode | str, message: Outgoing) -> Outcome:
        """Send ``message`` with its attachments to ``to``'s e-adrese, idempotently by
        ``message.key`` (a repeat must carry the same attachments, byte for byte).

        Returns :class:`Accepted` with the service's message id and server-received time, or
        :class:`Rejected` with the reason (attachments it would refuse are refused here,
        without a call). Raises ``UnavailableError`` / ``InvalidResponse`` when the service
        stayed unavailable or broken, ``Refused`` for another 4xx and ``UnexpectedAnswer`` for
        an answer of the wrong shape.
        """
        reason = check_attachments(message.attachments)
        if reason is not None:
            return Rejected(reason)
        body = {
            "recipient": address(to),
            "subject": message.subject,
            "body": message.text,
            "reference": mask_personal_codes(message.reference),
            "attachments": [attachment_json(a) for a in message.attachments],
        }
        return await self.post_message(
            "/v1/messages", body, message, expect=(201, 200), answer=_Received
        )

    async def confirmation(self, message_id: str) -> datetime:
        """When the service received the message (GetMessageServerConfirmation)."""
        path = f"/v1/messages/{quote(message_id, safe='')}/confirmation"
        what = "GET /v1/messages/…/confirmation"
        confirmed = self.parse(_Received, await self.json("GET", path), what)
        if confirmed.message_id != message_id:
            raise UnexpectedAnswer(f"{self.system} answered {what} about another message")
        return confirmed.server_received_at

    async def notifications(self, after: int, limit: int = 200) -> NotificationPage:
        """The notifications numbered after ``after``, at most ``limit`` of them."""
        if after < 0 or limit < 1:
            raise ValueError("after must be 0 or more and limit at least 1")
        what = "GET /v1/notifications"
        answer = await self.json(
            "GET", "/v1/notifications", params={"after": after, "limit": limit}
        )
        page = self.parse(NotificationPage, answer, what)
        numbers = [n.seq for n in page.notifications]
        if numbers != list(range(after + 1, after + 1 + len(numbers))):
            raise UnexpectedAnswer(f"{self.system} answered {what} with a gap in the numbers")
        if len(numbers) > limit:
            raise UnexpectedAnswer(f"{self.system} answered {what} with more than asked for")
        if page.last != (numbers[-1] if numbers else after):
            raise UnexpectedAnswer(f"{self.system} answered {what} with a wrong last number")
        return page


client_from_url = EAdreseClient.at


__all__ = [
    "ALLOWED_EXTENSIONS",
    "ALLOWED_TYPES",
    "CONFLICT",
    "MAX_ATTACHMENTS",
    "MAX_ATTACHMENT_BYTES",
    "REASONS",
    "Attachment",
    "EAdreseClient",
    "Notification",
    "NotificationPage",
    "address",
    "attachment_json",
    "check_attachments",
    "client_from_url",
]
