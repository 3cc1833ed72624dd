"""The DVS adapter: registers the documents asked for on ``dvs.documents.requests.v1``, and
stores the sealed content of notices sent on ``dvs.documents.content.v1``.

For each ``RegisterDocument`` it registers the document in the DVS under the idempotency key
``document_key`` (so a redelivered request gets the same number) and publishes
``DocumentRegistered`` or, when the DVS refuses it, ``DocumentRegistrationFailed``.

The hub names related documents by ``document_key``, the DVS by registration number: the
adapter keeps the numbers it obtained in its table ``dvs_registrations`` and translates.
A related document not registered yet is a transient failure: the request is parked and
tried again once the other one (often in flight on another partition) has its number.

For each ``StoreDocumentContent`` (sent once the document, which prints its number, has been
rendered and sealed) it stores the container against the registration and publishes
``DocumentContentStored`` with the seal's signer, or ``DocumentContentRejected`` with the
DVS's reason (permanent: the DVS refused the container, the seal or the hash, holds other
content, or has no such registration).

A request that is dead-lettered (retries exhausted, refused, a wrong answer) is answered
``DocumentRegistrationFailed`` or ``DocumentContentRejected`` too, so whoever asked is not
left waiting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from adapters.dvs.client import DvsClient, NewDocument, Registration, Rejection, Stored
from hub.errors import TransientError
from hub.reliability.consumer import Handler, Unit
from hub.reliability.retry import CallFailure, Refused
from hub.reliability.service import ServiceSpec
from hub.reliability.store import Store
from schemas.base import Message
from schemas.documents import (
    DocumentContentRejected,
    DocumentContentStored,
    DocumentRegistered,
    DocumentRegistrationFailed,
    RegisterDocument,
    StoreDocumentContent,
)
from schemas.topics import BY_NAME, DVS, Topic
from schemas.values import failure_detail

REQUESTS = BY_NAME["dvs.documents.requests.v1"]
CONTENT = BY_NAME["dvs.documents.content.v1"]
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS dvs_registrations ("
    " document_key TEXT PRIMARY KEY,"
    " registration_number TEXT NOT NULL,"
    " registered_at TEXT NOT NULL)",
)


class RelatedNotRegistered(TransientError):
    """A related document has no registration number yet; the request waits for it."""


Request = RegisterDocument | StoreDocumentContent
_Refusal = TypeVar("_Refusal", DocumentRegistrationFailed, DocumentContentRejected)
ContentReason = Literal[
    "invalid_container",
    "invalid_signature",
    "hash_mismatch",
    "content_conflict",
    "unknown_document",
    "unavailable",
    "invalid_response",
]


class Documents(Handler[Request]):
    """Registers each requested document in the DVS, and stores each document's content."""

    def __init__(self, client: DvsClient, topic: Topic = REQUESTS) -> None:
        super().__init__(topic)
        self.client = client
        self.store: Store | None = None
        """Set by :meth:`attach` when the service starts; read for related documents."""

    async def attach(self, store: Store) -> None:
        self.store = store

    async def links(self, keys: Sequence[str]) -> tuple[str, ...]:
        """Registration numbers of the documents ``keys``, in their order."""
        if not keys:
            return ()
        if self.store is None:
            raise RuntimeError("the DVS handler has no store: run the service's on_start first")
        marks = ",".join("?" * len(keys))
        rows = await self.store.query(
            "SELECT document_key, registration_number FROM dvs_registrations"
            f" WHERE document_key IN ({marks})",
            tuple(keys),
        )
        numbers = {key: number for key, number in rows}
        missing = [key for key in keys if key not in numbers]
        if missing:
            raise RelatedNotRegistered(f"related documents not registered yet: {missing}")
        return tuple(numbers[key] for key in keys)

    async def fetch(self, message: Request) -> Registration | Stored | Rejection:
        if isinstance(message, StoreDocumentContent):
            return await self.client.store_content(
                message.registration_number, message.content, message.content_sha256
            )
        document = NewDocument(
            type=message.document_type,
            title=message.title,
            author_unit=message.author_unit,
            media_type=message.media_type,
            sha256=message.content_sha256,
            size=message.content_size,
            links=await self.links(message.related_document_keys),
            reference=message.child_ref,
        )
        return await self.client.register(message.document_key, document)

    def apply(self, unit: Unit, message: Request, fetched: Any) -> None:
        if isinstance(message, StoreDocumentContent):
            unit.emit(_content_answer(message, fetched))
        else:
            self.registered(unit, message, fetched)

    def registered(self, unit: Unit, message: RegisterDocument, fetched: Any) -> None:
        """Record and announce the DVS's answer to a registration."""
        if isinstance(fetched, Registration):
            unit.execute(
                "INSERT INTO dvs_registrations (document_key, registration_number, registered_at)"
                " VALUES (?, ?, ?) ON CONFLICT (document_key) DO UPDATE SET"
                " registration_number = excluded.registration_number,"
                " registered_at = excluded.registered_at",
                (
                    message.document_key,
                    fetched.registration_number,
                    fetched.registered_at.isoformat(),
                ),
            )
            unit.emit(
                DocumentRegistered.new(
                    producer=DVS,
                    caused_by=message,
                    document_key=message.document_key,
                    registration_number=fetched.registration_number,
                    registered_at=fetched.registered_at,
                )
            )
        elif isinstance(fetched, Rejection):
            detail = f"{fetched.reason} (HTTP {fetched.status}): {fetched.detail}"
            unit.emit(_failed(message, "rejected", detail, permanent=True))
        else:
            raise TypeError(f"unexpected outcome of a DVS registration: {type(fetched).__name__}")

    def given_up(self, message: Request, error: BaseException) -> Sequence[Message]:
        """``DocumentRegistrationFailed`` or ``DocumentContentRejected`` for a request that was
        dead-lettered."""
        failure = CallFailure.of(error)
        if isinstance(message, StoreDocumentContent):
            return (_content_given_up(message, error, failure),)
        reason = "rejected" if failure.kind == "refused" else failure.kind
        return (_failed(message, reason, failure.detail, permanent=failure.permanent),)

    async def close(self) -> None:
        await self.client.close()


def _failed(
    message: RegisterDocument,
    reason: Literal["rejected", "unavailable", "invalid_response"],
    detail: str,
    *,
    permanent: bool,
) -> DocumentRegistrationFailed:
    return _refusal(DocumentRegistrationFailed, message, reason, detail, permanent=permanent)


def _refusal(
    kind: type[_Refusal], message: Request, reason: str, detail: str, *, permanent: bool
) -> _Refusal:
    """The DVS's refusal of ``message`` (a registration or a content), its detail made safe."""
    return kind.new(
        producer=DVS,
        caused_by=message,
        document_key=message.document_key,
        reason=reason,
        detail=failure_detail(detail),  # the DVS's text may quote anything
        permanent=permanent,
    )


def _content_answer(
    message: StoreDocumentContent, fetched: Any
) -> DocumentContentStored | DocumentContentRejected:
    if isinstance(fetched, Stored):
        return DocumentContentStored.new(
            producer=DVS,
            caused_by=message,
            document_key=message.document_key,
            registration_number=fetched.registration_number,
            content_sha256=fetched.content_sha256,
            signer=fetched.signer,
            stored_at=fetched.stored_at,
        )
    reason = _CONTENT_REFUSALS.get(fetched.reason) if isinstance(fetched, Rejection) else None
    if reason is None:
        raise TypeError(f"unexpected outcome of storing DVS content: {type(fetched).__name__}")
    detail = f"{fetched.reason} (HTTP {fetched.status}): {fetched.detail}"
    return _rejected(message, reason, detail, permanent=True)


_CONTENT_REFUSALS: dict[str, ContentReason] = {
    "invalid_container": "invalid_container",
    "invalid_signature": "invalid_signature",
    "hash_mismatch": "hash_mismatch",
    "content_conflict": "content_conflict",
    "unknown_document": "unknown_document",
}
"""The DVS's refusals of content, as ``DocumentContentRejected`` names them."""


def _content_given_up(
    message: StoreDocumentContent, error: BaseException, failure: CallFailure
) -> DocumentContentRejected:
    reason: ContentReason
    if isinstance(error, Refused) and error.status in (413, 415):
        reason = "invalid_container"  # too large, or not a container's type
    elif failure.kind == "refused":
        reason = "invalid_response"  # the DVS did not take a request of its own protocol
    else:
        reason = failure.kind
    return _rejected(message, reason, failure.detail, permanent=failure.permanent)


def _rejected(
    message: StoreDocumentContent, reason: ContentReason, detail: str, *, permanent: bool
) -> DocumentContentRejected:
    return _refusal(DocumentContentRejected, message, reason, detail, permanent=permanent)


def service(client: DvsClient, name: str = DVS) -> ServiceSpec:
    """The DVS adapter as a service of the hub's runtime."""
    handler = Documents(client)
    content = Documents(client, CONTENT)  # the notices' sealed content, from the notifications
    return ServiceSpec(
        name,
        (handler, content),
        schema=SCHEMA,
        on_start=handler.attach,
        clients=(client,),
    )


__all__ = ["SCHEMA", "Documents", "RelatedNotRegistered", "service"]
