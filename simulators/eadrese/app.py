"""e-adrese simulator: the official electronic address service (DIV), as HTTP.

The real service is SOAP with mTLS; this one offers its operations as a small REST API with
the same meaning:

- ``POST /v1/addresses/check`` ``{"recipient": …}`` → ``{"active": bool}``: whether the
  recipient has an activated e-adrese. A person is addressed by personal code (``DDMMYY-NNNNN``
  or ``DDMMYYNNNNN``), an institution as ``_DEFAULT@<registration no.>`` (11 digits). A
  recipient that is neither answers 400 ``invalid_recipient``.
- ``POST /v1/messages`` (SendMessage) with the header ``Idempotency-Key`` (required, else 400
  ``missing_idempotency_key``) and the body ``{"recipient", "subject" (at most 250 characters),
  "body", "reference", "attachments": [{"name", "media_type", "content_base64"}]}`` answers 201
  ``{"message_id", "server_received_at"}``. The same key with the same body (attachments
  included, byte for byte) answers 200 with the same message (nothing is sent twice); the same
  key with another body answers 409 ``idempotency_conflict``. Refusals, with 422:
  ``no_active_e_adrese`` (the recipient has not activated an e-adrese),
  ``too_many_attachments`` (more than :data:`MAX_ATTACHMENTS`), ``attachment_type`` (a media
  type not in :data:`ALLOWED_TYPES`, or a name whose extension is not one listed for it),
  ``attachment_name`` (two attachments with one name) and ``attachments_too_large`` (more
  than :data:`MAX_ATTACHMENT_BYTES`, 10 MiB, of content together). A body that breaks the
  schema (a subject too long, content that is not base64, say) answers 400
  ``invalid_request``.
- ``GET /v1/messages/{message_id}/confirmation`` (GetMessageServerConfirmation) →
  ``{"message_id", "server_received_at"}``, 404 ``not_found`` for an unknown id.
- ``GET /v1/messages/{message_id}/attachments`` → ``{"attachments": [{"name", "media_type",
  "size"}]}``, what the recipient sees in the mailbox, and
  ``GET /v1/messages/{message_id}/attachments/{name}`` → the attachment's bytes, with its media
  type as ``Content-Type`` (404 ``not_found`` for an unknown message or name). A message is
  named by its id, never by its recipient.
- ``GET /v1/notifications?after=N&limit=M`` (GetNotificationList) →
  ``{"notifications": [{"seq", "message_id", "kind", "at"}], "last": N}``: the notifications
  numbered after ``N`` (from 1, consecutive), at most ``M`` (default 200, at most 1000);
  ``last`` is the number of the last one listed (``N`` when none is). Every accepted message
  yields ``delivered_to_mailbox`` at once.
- ``GET /health`` says it is up, with the number of ``messages`` accepted.

Magic inputs, for tests and demos:

- the recipient :data:`BROKEN_MAILBOX` (a valid code of someone born on 1 January 1901,
  whom no synthetic municipality generates) makes every call about it answer 500
  ``internal_error``, as a broken mailbox server would; nothing is sent;
- a subject containing ``[opened]`` (:data:`OPENED`) makes the recipient "open" the message at
  once: an ``opened`` notification follows ``delivered_to_mailbox``.

Personal codes travel only in request bodies and are never echoed in an error's ``detail``.
Faults (:mod:`simulators.faults`, header ``X-Simulate-Fault``) are injected in front of the app:
a faulted request never reaches it, so a retried message is not sent twice.

Tests read what was sent from ``app.state.mailbox`` (one dict per accepted message: ``key``,
``message_id``, ``recipient``, ``subject``, ``body``, ``reference``, ``attachments`` (each
``{"name", "media_type", "content"}``, the content as bytes), ``server_received_at``) and may
change ``app.state.active`` (the set of active addresses).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
import warnings
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.values import PersonalCode
from simulators.api import (
    NO_FAULTS,
    ErrorBody,
    IdempotentPost,
    error,
    idempotency_key,
    missing_idempotency_key,
    no_such,
    one_of,
    simulator,
)
from simulators.faults import FaultInjection, Faults

IdempotencyKey = idempotency_key("message")
"""Type of the optional ``Idempotency-Key`` header of the idempotent POST."""

MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
"""The most a message's attachments may hold together, in bytes (10 MiB, decoded)."""
MAX_SUBJECT = 250
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
"""Media types the e-adrese takes (parameters such as ``charset`` aside), each with the
extensions an attachment's name may end in."""
ALLOWED_EXTENSIONS = frozenset(e for extensions in ALLOWED_TYPES.values() for e in extensions)
"""Attachment types the e-adrese takes, by the extension of the file name."""
BROKEN_MAILBOX = "010101-12343"
"""A personal code ending in this makes every call about it answer 500."""
OPENED = "[opened]"
"""A subject containing this yields an ``opened`` notification too."""

_INSTITUTION = re.compile(r"^_DEFAULT@\d{11}$")

NotificationKind = Literal["delivered_to_mailbox", "opened"]


class AddressCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipient: str = Field(
        min_length=1,
        max_length=64,
        description="Personal code, or _DEFAULT@<registration no.> for an institution.",
    )


class AddressStatus(BaseModel):
    active: bool


class Attachment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=255, examples=["decision.edoc"])
    media_type: str = Field(
        min_length=1, max_length=100, examples=["application/vnd.etsi.asic-e+zip"]
    )
    content_base64: str = Field(description="The file's bytes, base64 (RFC 4648, padded).")

    @field_validator("content_base64")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ValueError("not base64") from None
        return value

    @property
    def content(self) -> bytes:
        return base64.b64decode(self.content_base64)


class AttachmentInfo(BaseModel):
    """An attachment as the mailbox lists it."""

    name: str
    media_type: str
    size: int = Field(description="Length in bytes.")


class AttachmentList(BaseModel):
    attachments: list[AttachmentInfo]


class NewMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    recipient: str = Field(min_length=1, max_length=64)
    subject: str = Field(min_length=1, max_length=MAX_SUBJECT)
    body: str = Field(max_length=100_000)
    reference: str = Field(default="", max_length=200, description="Never a personal code.")
    attachments: tuple[Attachment, ...] = ()


class Received(BaseModel):
    """The server received the message (the server confirmation)."""

    message_id: str
    server_received_at: datetime


class Notification(BaseModel):
    seq: int
    message_id: str
    kind: NotificationKind
    at: datetime


class NotificationList(BaseModel):
    notifications: list[Notification]
    last: int


def _address(raw: str) -> str | None:
    """The recipient as the service keys it, or None when it is no e-adrese."""
    raw = raw.strip()
    if _INSTITUTION.match(raw):
        return raw
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return PersonalCode(raw).reveal()
    except ValueError:
        return None


def _broken(address: str) -> bool:
    return address == BROKEN_MAILBOX


def _extension(name: str) -> str:
    stem, dot, extension = name.rpartition(".")
    return extension.lower() if dot and stem else ""


def _refused_attachments(attachments: tuple[Attachment, ...]) -> Response | None:
    """The 422 refusing these attachments, or None when they may go."""
    if len(attachments) > MAX_ATTACHMENTS:
        return error(
            422, "too_many_attachments", f"at most {MAX_ATTACHMENTS} attachments are taken"
        )
    for attachment in attachments:
        media_type = attachment.media_type.partition(";")[0].strip().lower()
        if _extension(attachment.name) not in ALLOWED_TYPES.get(media_type, ()):
            return error(
                422,
                "attachment_type",
                "allowed: " + ", ".join(sorted(ALLOWED_TYPES)) + "; with a name's extension"
                " fitting the type",
            )
    if len({attachment.name for attachment in attachments}) < len(attachments):
        return error(422, "attachment_name", "two attachments have the same name")
    if sum(len(attachment.content) for attachment in attachments) > MAX_ATTACHMENT_BYTES:
        return error(
            422,
            "attachments_too_large",
            f"at most {MAX_ATTACHMENT_BYTES} bytes of attachments are taken",
        )
    return None


def create_app(
    active: Iterable[str] = (),
    faults: Faults = NO_FAULTS,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    registration_numbers: Iterable[str] = (),
) -> FaultInjection:
    """The e-adrese simulator, wrapped in fault injection; its FastAPI app is ``.app``.

    ``active`` are the personal codes with an activated e-adrese; each of the
    ``registration_numbers`` (11 digits) is an institution reachable at ``_DEFAULT@<number>``.
    """
    addresses: set[str] = {PersonalCode(code).reveal() for code in active}
    for number in registration_numbers:
        if not re.fullmatch(r"\d{11}", number):
            raise ValueError("a registration number has 11 digits")
        addresses.add(f"_DEFAULT@{number}")
    mailbox: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    notifications: list[Notification] = []

    app = simulator(
        "e-adrese simulator",
        "Official electronic address: sends messages to people's and institutions' mailboxes.",
        "e-adrese",
        counts=lambda: {"messages": len(mailbox)},
        clock=clock,
        invalid_as_400=True,
    )
    app.state.mailbox = mailbox
    app.state.active = addresses
    app.state.notifications = notifications

    def notify(message_id: str, kind: NotificationKind, at: datetime) -> None:
        notifications.append(
            Notification(seq=len(notifications) + 1, message_id=message_id, kind=kind, at=at)
        )

    def received(message: dict[str, Any], status: int) -> JSONResponse:
        answer = Received(
            message_id=message["message_id"], server_received_at=message["server_received_at"]
        )
        return JSONResponse(answer.model_dump(mode="json"), status_code=status)

    sends = IdempotentPost[NewMessage, dict[str, Any]]("message", received)

    @app.post(
        "/v1/addresses/check",
        response_model=AddressStatus,
        responses={
            400: {"model": ErrorBody, "description": "Not a personal code nor an institution."},
            500: {"model": ErrorBody, "description": "The mailbox server failed."},
        },
    )
    async def check(body: AddressCheck) -> Any:
        address = _address(body.recipient)
        if address is None:
            return error(400, "invalid_recipient", "not a personal code nor _DEFAULT@<reg. no.>")
        if _broken(address):
            return error(500, "internal_error", "the mailbox server failed")
        return AddressStatus(active=address in addresses)

    @sends.route(
        app,
        "/v1/messages",
        Received,
        status_code=201,
        before="Sent",
        refusals={
            422: "no_active_e_adrese, too_many_attachments, attachment_type, attachment_name"
            " or attachments_too_large.",
            500: "The mailbox server failed.",
        },
    )
    async def send(body: NewMessage, idempotency_key: IdempotencyKey = None) -> Response:
        if not idempotency_key:
            return missing_idempotency_key()
        address = _address(body.recipient)
        if address is None:
            return error(400, "invalid_recipient", "not a personal code nor _DEFAULT@<reg. no.>")
        if _broken(address):
            return error(500, "internal_error", "the mailbox server failed")
        body = body.model_copy(update={"recipient": address})
        repeated = sends.repeated(idempotency_key, body)
        if repeated is not None:
            return repeated
        if address not in addresses:
            return error(422, "no_active_e_adrese", "the recipient has no active e-adrese")
        refused = _refused_attachments(body.attachments)
        if refused is not None:
            return refused
        now = clock().astimezone(UTC)
        message = {
            "message_id": str(uuid.uuid4()),
            "key": idempotency_key,
            "recipient": address,
            "subject": body.subject,
            "body": body.body,
            "reference": body.reference,
            "attachments": [
                {"name": a.name, "media_type": a.media_type, "content": a.content}
                for a in body.attachments
            ],
            "server_received_at": now,
        }
        mailbox.append(message)
        by_id[message["message_id"]] = message
        notify(message["message_id"], "delivered_to_mailbox", now)
        if OPENED in body.subject:
            notify(message["message_id"], "opened", now)
        return sends.remember(idempotency_key, body, message, 201)

    @app.get(
        "/v1/messages/{message_id}/confirmation",
        response_model=Received,
        responses=no_such("message"),
    )
    async def confirmation(message_id: str) -> Response:
        return received(one_of(by_id, message_id, "message"), 200)

    @app.get(
        "/v1/messages/{message_id}/attachments",
        response_model=AttachmentList,
        responses=no_such("message"),
    )
    async def attachment_list(message_id: str) -> AttachmentList:
        """The message's attachments, as its recipient sees them in the mailbox."""
        message = one_of(by_id, message_id, "message")
        return AttachmentList(
            attachments=[
                AttachmentInfo(name=a["name"], media_type=a["media_type"], size=len(a["content"]))
                for a in message["attachments"]
            ]
        )

    @app.get(
        "/v1/messages/{message_id}/attachments/{name}",
        response_class=Response,
        responses={
            200: {"content": {"application/octet-stream": {}}, "description": "The file."},
            **no_such("message or attachment"),
        },
    )
    async def attachment(message_id: str, name: str) -> Response:
        """One attachment's bytes, with its media type."""
        message = one_of(by_id, message_id, "message")
        found = one_of(
            {a["name"]: a for a in message["attachments"]}, name, "attachment", by="name"
        )
        return Response(found["content"], media_type=found["media_type"])

    @app.get("/v1/notifications", response_model=NotificationList)
    async def notification_list(
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> NotificationList:
        page = notifications[after : after + limit]
        return NotificationList(notifications=page, last=page[-1].seq if page else after)

    return FaultInjection(app, faults)


__all__ = [
    "ALLOWED_EXTENSIONS",
    "ALLOWED_TYPES",
    "BROKEN_MAILBOX",
    "MAX_ATTACHMENTS",
    "MAX_ATTACHMENT_BYTES",
    "MAX_SUBJECT",
    "OPENED",
    "Attachment",
    "AttachmentInfo",
    "AttachmentList",
    "NewMessage",
    "Notification",
    "NotificationList",
    "Received",
    "create_app",
]
