"""Document registration in the DVS (document management system)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import Command, Event, type_name
from schemas.values import ChildRef, DocumentKey, FailureDetail, Permanent, Sha256Hex, UtcDatetime

DocumentType = Literal[
    "incoming_application", "admission_list", "decision", "invitation", "contract"
]


class RegisterDocument(Command):
    """Register a document; the same ``document_key`` always yields the same number."""

    event_type: Literal["RegisterDocument"] = type_name("RegisterDocument")
    document_key: DocumentKey
    document_type: DocumentType = Field(description="Kind of document, as the DVS classifies it.")
    title: str = Field(min_length=1, max_length=300, description="Title in the register.")
    author_unit: str = Field(min_length=1, max_length=100, description="Municipal unit issuing it.")
    media_type: str = Field(default="application/pdf", max_length=100, description="Content type.")
    content_sha256: Sha256Hex
    content_size: int = Field(ge=0, description="Content length in bytes.")
    related_document_keys: tuple[DocumentKey, ...] = Field(
        default=(), description="Documents this one answers or belongs to."
    )
    child_ref: ChildRef | None = Field(default=None, description="Child concerned, if any.")


class DocumentRegistered(Event):
    """DVS registered the document."""

    event_type: Literal["DocumentRegistered"] = type_name("DocumentRegistered")
    document_key: DocumentKey
    registration_number: str = Field(
        min_length=1,
        max_length=64,
        description="Number assigned by the DVS (prefix/year/sequence).",
    )
    registered_at: UtcDatetime = Field(description="When the DVS registered it.")


class DocumentRegistrationFailed(Event):
    """DVS did not register the document."""

    event_type: Literal["DocumentRegistrationFailed"] = type_name("DocumentRegistrationFailed")
    document_key: DocumentKey
    reason: Literal["rejected", "unavailable", "invalid_response"] = Field(
        description="Class of failure."
    )
    detail: FailureDetail
    permanent: Permanent
