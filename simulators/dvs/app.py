"""DVS simulator: a document management system (like LIETVARIS) that registers documents.

No public API of a municipal DVS is documented, so this one is a plausible REST API:

- ``POST /v1/documents`` with the header ``Idempotency-Key`` (required, else 400) registers a
  document and answers 201 with its registration number, e.g. ``PII/2026/000123`` (prefix,
  year of registration, sequence per year zero-padded to a width; see :class:`NumberFormat`).
  The same key with the same body answers 200 with the same number (a retried request); the
  same key with a different body answers 409 ``{"error": "idempotency_conflict"}``. ``links``
  name related documents by registration number; an unknown one answers 422
  ``{"error": "unknown_link"}``. A body that breaks the schema answers 400
  ``{"error": "invalid_request"}``.
- ``GET /v1/documents/{registration_number}`` returns a registered document (404 if none).
  The number's slashes may be written as they are or URL-encoded (``%2F``):
  ``/v1/documents/PII/2026/000123`` and ``/v1/documents/PII%2F2026%2F000123`` are the same.
- ``PUT /v1/documents/{registration_number}/content`` stores a registered document's content:
  the body is the sealed container itself (``Content-Type: application/vnd.etsi.asic-e+zip``,
  an ASiC-E ``.edoc``) and the header ``X-Content-SHA256`` (hex) or ``Digest: sha-256=…``
  (base64, RFC 3230) carries the SHA-256 the sender computed. The DVS answers 404 for an
  unknown number, 400 ``missing_digest`` without a digest, 415 for another content type,
  413 for a body over :data:`MAX_CONTENT_BYTES`, 422 ``hash_mismatch`` when the body's
  SHA-256 differs from the header, 422 ``invalid_container`` or ``invalid_signature`` when
  :mod:`.container` refuses it, and otherwise 201 ``{"registration_number",
  "content_sha256", "signer", "stored_at"}``. The same content again answers 200 with the
  same body; other content for a document that has content answers 409 ``content_conflict``.
  ``GET`` of the same path returns the stored bytes (404 when there are none).
- ``GET /v1/documents`` lists all registered documents (each with ``has_content``,
  ``content_sha256`` and ``signer``); ``GET /v1/summary`` counts them by type, registered and
  with verified content; ``GET /health`` says it is up
  (``{"status": "ok", "system": "DVS", "documents": n}``).

Magic input, for tests and demos: ``author_unit == "REJECT"`` answers 422
``{"error": "rejected"}`` (a permanent refusal) and ``author_unit == "BROKEN"`` always answers
500. Neither registers anything.

Faults (:mod:`simulators.faults`) are injected in front of the app: a faulted request never
reaches it, so it cannot register twice; a request whose answer got lost on the way back is
repeated with the same ``Idempotency-Key`` and gets the same number.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from cryptography import x509
from fastapi import Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

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
from simulators.dvs.container import EDOC_MEDIA_TYPE, Refused, verify_container
from simulators.faults import FaultInjection, Faults

IdempotencyKey = idempotency_key("registration")
"""Type of the optional ``Idempotency-Key`` header of the idempotent POST."""

REJECT = "REJECT"
"""``author_unit`` that the DVS refuses permanently (422 ``rejected``)."""
BROKEN = "BROKEN"
"""``author_unit`` that makes the DVS fail with 500, every time."""

DocumentType = Literal[
    "incoming_application",
    "decision",
    "admission_list",
    "contract",
    "invitation",
    "offer_revocation",
    "annulment",
    "refusal",
    "other",
]
MAX_CONTENT_BYTES = 8 * 1024 * 1024
"""The largest content the DVS stores (413 ``too_large`` beyond)."""


@dataclass(frozen=True)
class NumberFormat:
    """Registration numbers ``{prefix}/{year}/{sequence}``, the sequence restarting each year."""

    prefix: str = "PII"
    width: int = 6

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Z0-9-]+", self.prefix):
            raise ValueError("the prefix must be upper-case letters, digits or hyphens")
        if not 1 <= self.width <= 12:
            raise ValueError("the width must be between 1 and 12 digits")

    def number(self, year: int, sequence: int) -> str:
        return f"{self.prefix}/{year}/{sequence:0{self.width}d}"


class NewDocument(BaseModel):
    """A document to register: its metadata and a fingerprint of its content."""

    model_config = ConfigDict(extra="forbid")

    type: DocumentType = Field(description="Kind of document.")
    title: str = Field(min_length=1, max_length=300)
    author_unit: str = Field(min_length=1, max_length=100, description="Unit issuing it.")
    media_type: str = Field(min_length=1, max_length=100, examples=["application/pdf"])
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="SHA-256 of the content, hex; none when the content follows (PUT content).",
    )
    size: int | None = Field(default=None, ge=0, description="Content length in bytes.")
    links: list[str] = Field(
        default_factory=list, description="Registration numbers of related documents."
    )
    reference: str | None = Field(default=None, max_length=200, description="Free text.")


class Registered(BaseModel):
    """The answer to a registration."""

    registration_number: str = Field(examples=["PII/2026/000123"])
    registered_at: datetime
    document_id: str = Field(description="The DVS's internal id of the document.")


class Document(NewDocument, Registered):
    """A registered document, as the DVS keeps it."""

    has_content: bool = Field(default=False, description="Whether its content is stored.")
    content_sha256: str | None = Field(default=None, description="SHA-256 of the content, hex.")
    signer: str | None = Field(default=None, description="CN of the content's seal.")


class DocumentList(BaseModel):
    count: int
    documents: list[Document]


class ContentStored(BaseModel):
    """The answer to a stored content."""

    registration_number: str = Field(examples=["PII/2026/000123"])
    content_sha256: str = Field(description="SHA-256 of the stored content, hex.")
    signer: str = Field(description="Common name (CN) of the seal's certificate.")
    stored_at: datetime


@dataclass(frozen=True)
class Content:
    """A document's stored content and what verifying it found."""

    data: bytes
    stored: ContentStored


class TypeCount(BaseModel):
    registered: int = Field(description="Documents of the type registered.")
    with_content: int = Field(description="Of them, those with verified content stored.")


class Summary(BaseModel):
    documents: int
    with_content: int
    by_type: dict[str, TypeCount]


Sha256Header = Annotated[
    str | None,
    Header(alias="X-Content-SHA256", description="SHA-256 of the body, hex."),
]
DigestHeader = Annotated[
    str | None,
    Header(alias="Digest", description="RFC 3230 digest of the body: sha-256=<base64>."),
]


@dataclass
class Registry:
    """The documents registered, by number."""

    numbers: NumberFormat
    clock: Callable[[], datetime]

    def __post_init__(self) -> None:
        self.documents: dict[str, Document] = {}
        self.contents: dict[str, Content] = {}
        self._sequences: defaultdict[int, int] = defaultdict(int)

    def register(self, body: NewDocument) -> Document:
        now = self.clock().astimezone(UTC)
        self._sequences[now.year] += 1
        number = self.numbers.number(now.year, self._sequences[now.year])
        document = Document(
            **body.model_dump(),
            registration_number=number,
            registered_at=now,
            document_id=str(uuid.uuid4()),
        )
        self.documents[number] = document
        return document

    def store(self, number: str, data: bytes, sha256: str, signer: str) -> ContentStored:
        """Keep ``data`` as the content of document ``number`` (verified by the caller)."""
        stored = ContentStored(
            registration_number=number,
            content_sha256=sha256,
            signer=signer,
            stored_at=self.clock().astimezone(UTC),
        )
        self.contents[number] = Content(data, stored)
        self.documents[number] = self.documents[number].model_copy(
            update={"has_content": True, "content_sha256": sha256, "signer": signer}
        )
        return stored

    def summary(self) -> Summary:
        by_type: dict[str, TypeCount] = {}
        for number, document in sorted(self.documents.items()):
            count = by_type.setdefault(document.type, TypeCount(registered=0, with_content=0))
            count.registered += 1
            count.with_content += number in self.contents
        return Summary(
            documents=len(self.documents), with_content=len(self.contents), by_type=by_type
        )


def _registered(document: Document, status: int) -> JSONResponse:
    answer = Registered.model_validate(document.model_dump())
    return JSONResponse(answer.model_dump(mode="json"), status_code=status)


def _stored(stored: ContentStored, status: int) -> JSONResponse:
    return JSONResponse(stored.model_dump(mode="json"), status_code=status)


def _digest(sha256: str | None, digest: str | None) -> str | None:
    """The hex SHA-256 the sender gave: ``X-Content-SHA256`` or ``Digest: sha-256=…``."""
    if sha256:
        return sha256.strip().lower()
    for part in (digest or "").split(","):
        algorithm, _, value = part.strip().partition("=")
        if algorithm.lower() == "sha-256" and value:
            try:
                return base64.b64decode(value, validate=True).hex()
            except (binascii.Error, ValueError):
                return value
    return None


_CONTENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {EDOC_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}
_CONTENT_REFUSALS: dict[int | str, dict[str, Any]] = {
    200: {"model": ContentStored, "description": "The same content was stored before."},
    400: {"model": ErrorBody, "description": "No digest header (missing_digest)."},
    404: {"model": ErrorBody, "description": "No document with that number."},
    409: {"model": ErrorBody, "description": "Other content is stored (content_conflict)."},
    413: {"model": ErrorBody, "description": "The content is too large (too_large)."},
    415: {"model": ErrorBody, "description": "Not an ASiC-E container's content type."},
    422: {
        "model": ErrorBody,
        "description": "hash_mismatch, invalid_container or invalid_signature.",
    },
}


def create_app(
    numbers: NumberFormat = NumberFormat(),
    faults: Faults = NO_FAULTS,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    trusted_certificates: Collection[x509.Certificate] | None = None,
) -> FaultInjection:
    """The DVS simulator, wrapped in fault injection; its FastAPI app is ``.app``.

    ``trusted_certificates``: the seal certificates whose content it stores; None accepts
    any certificate a container embeds (a real DVS checks the seal issuer's trust).
    """
    registry = Registry(numbers, clock)
    app = simulator(
        "DVS simulator",
        "Document management system: registers documents and assigns numbers.",
        "DVS",
        counts=lambda: {"documents": len(registry.documents)},
        clock=clock,
        invalid_as_400=True,
    )
    app.state.registry = registry
    registrations = IdempotentPost[NewDocument, Document]("document", _registered)

    @registrations.route(
        app,
        "/v1/documents",
        Registered,
        status_code=201,
        before="Registered",
        refusals={422: "Unknown link, or refused (rejected).", 500: "The DVS failed."},
    )
    async def register(body: NewDocument, idempotency_key: IdempotencyKey = None) -> Response:
        if not idempotency_key:
            return missing_idempotency_key()
        if body.author_unit == BROKEN:
            return error(500, "internal_error", "the DVS failed (magic author_unit BROKEN)")
        repeated = registrations.repeated(idempotency_key, body)
        if repeated is not None:
            return repeated
        if body.author_unit == REJECT:
            return error(422, "rejected", "the DVS refused the document")
        unknown = [link for link in body.links if link not in registry.documents]
        if unknown:
            return error(422, "unknown_link", "no document " + ", ".join(unknown))
        return registrations.remember(idempotency_key, body, registry.register(body), 201)

    @app.get("/v1/documents")
    async def documents() -> DocumentList:
        listed = list(registry.documents.values())
        return DocumentList(count=len(listed), documents=listed)

    @app.get("/v1/summary")
    async def summary() -> Summary:
        """Documents by type: how many are registered and how many have verified content."""
        return registry.summary()

    # Before GET /v1/documents/{number:path}, which would take ".../content" as a number.
    @app.put(
        "/v1/documents/{registration_number:path}/content",
        status_code=201,
        response_model=ContentStored,
        responses=_CONTENT_REFUSALS,
        openapi_extra=_CONTENT_BODY,
    )
    async def store_content(
        registration_number: str,
        request: Request,
        x_content_sha256: Sha256Header = None,
        digest: DigestHeader = None,
    ) -> Response:
        """Store the document's sealed content, once its container, seal and hash verify."""
        one_of(registry.documents, registration_number, "document", by="number")
        claimed = _digest(x_content_sha256, digest)
        if claimed is None:
            return error(400, "missing_digest", "X-Content-SHA256 or Digest is required")
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != EDOC_MEDIA_TYPE:
            return error(415, "unsupported_media_type", f"the content must be {EDOC_MEDIA_TYPE}")
        body = await request.body()
        if len(body) > MAX_CONTENT_BYTES:
            return error(413, "too_large", f"at most {MAX_CONTENT_BYTES} bytes")
        actual = hashlib.sha256(body).hexdigest()
        if actual != claimed:
            return error(422, "hash_mismatch", "the body's SHA-256 differs from the digest")
        stored_before = _stored_before(registration_number, actual)
        if stored_before is not None:
            return stored_before
        try:
            verified = await run_in_threadpool(verify_container, body, trusted=trusted_certificates)
        except Refused as refused:
            return error(422, refused.reason, refused.detail)
        # Asked again while this one was being verified: the first to finish is kept.
        stored_before = _stored_before(registration_number, actual)
        if stored_before is not None:
            return stored_before
        return _stored(registry.store(registration_number, body, actual, verified.signer), 201)

    def _stored_before(registration_number: str, sha256: str) -> Response | None:
        """The answer when the document has content already: 200 if it is this, else 409."""
        earlier = registry.contents.get(registration_number)
        if earlier is None:
            return None
        if earlier.stored.content_sha256 == sha256:
            return _stored(earlier.stored, 200)
        return error(409, "content_conflict", "the document has other content")

    @app.get(
        "/v1/documents/{registration_number:path}/content",
        response_class=Response,
        responses={
            200: {"content": {EDOC_MEDIA_TYPE: {}}, "description": "The stored content."},
            **no_such("content"),
        },
    )
    async def content(registration_number: str) -> Response:
        """The stored content of the document, as it was sent."""
        stored = one_of(registry.contents, registration_number, "content", by="number")
        return Response(stored.data, media_type=EDOC_MEDIA_TYPE)

    @app.get(
        "/v1/documents/{registration_number:path}",
        response_model=Document,
        responses=no_such("document"),
    )
    async def document(registration_number: str) -> Any:
        return one_of(registry.documents, registration_number, "document", by="number")

    return FaultInjection(app, faults)


__all__ = [
    "BROKEN",
    "MAX_CONTENT_BYTES",
    "REJECT",
    "ContentStored",
    "Document",
    "NewDocument",
    "NumberFormat",
    "Registered",
    "Summary",
    "create_app",
]
