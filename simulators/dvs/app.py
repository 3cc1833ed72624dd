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
- ``GET /v1/documents`` lists all registered documents; ``GET /health`` says it is up
  (``{"status": "ok", "system": "DVS", "documents": n}``).

Magic input, for tests and demos: ``author_unit == "REJECT"`` answers 422
``{"error": "rejected"}`` (a permanent refusal) and ``author_unit == "BROKEN"`` always answers
500. Neither registers anything.

Faults (:mod:`simulators.faults`) are injected in front of the app: a faulted request never
reaches it, so it cannot register twice; a request whose answer got lost on the way back is
repeated with the same ``Idempotency-Key`` and gets the same number.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

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

IdempotencyKey = idempotency_key("registration")
"""Type of the optional ``Idempotency-Key`` header of the idempotent POST."""

REJECT = "REJECT"
"""``author_unit`` that the DVS refuses permanently (422 ``rejected``)."""
BROKEN = "BROKEN"
"""``author_unit`` that makes the DVS fail with 500, every time."""

DocumentType = Literal[
    "incoming_application", "decision", "admission_list", "contract", "invitation", "other"
]


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
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 of the content, hex.")
    size: int = Field(ge=0, description="Content length in bytes.")
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


class DocumentList(BaseModel):
    count: int
    documents: list[Document]


@dataclass
class Registry:
    """The documents registered, by number."""

    numbers: NumberFormat
    clock: Callable[[], datetime]

    def __post_init__(self) -> None:
        self.documents: dict[str, Document] = {}
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


def _registered(document: Document, status: int) -> JSONResponse:
    answer = Registered.model_validate(document.model_dump())
    return JSONResponse(answer.model_dump(mode="json"), status_code=status)


def create_app(
    numbers: NumberFormat = NumberFormat(),
    faults: Faults = NO_FAULTS,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FaultInjection:
    """The DVS simulator, wrapped in fault injection; its FastAPI app is ``.app``."""
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
    "REJECT",
    "Document",
    "NewDocument",
    "NumberFormat",
    "Registered",
    "create_app",
]
