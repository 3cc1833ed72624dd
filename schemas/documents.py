"""Documents in the DVS (document management system): registration, then the sealed content.

A document is registered first (``RegisterDocument`` → ``DocumentRegistered`` with its
number, which is printed in the document), then rendered, sealed into an ASiC-E container
(``.edoc``) and sent with ``StoreDocumentContent``; the DVS verifies the seal and the hash
and answers ``DocumentContentStored`` or ``DocumentContentRejected``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

from schemas.base import Command, Event, type_name
from schemas.values import ChildRef, DocumentKey, FailureDetail, Permanent, Sha256Hex, UtcDatetime

DocumentType = Literal[
    "incoming_application",
    "admission_list",
    "decision",
    "invitation",
    "contract",
    "offer_revocation",
    "annulment",
    "refusal",
]

EDOC_MEDIA_TYPE = "application/vnd.etsi.asic-e+zip"
"""Media type of an ASiC-E container (a Latvian ``.edoc``)."""
MAX_CONTENT_BYTES = 512 * 1024
"""The largest content a ``StoreDocumentContent`` carries. Base64 makes it a third larger, and
the whole message must stay under Kafka's default limit of 1 MiB per record (the hub's
producers and topics keep that default)."""
DvsNumber = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="Number assigned by the DVS (prefix/year/sequence).",
        examples=["RD/2026/00012"],
    ),
]


def _from_base64(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PydanticCustomError("base64", "content must be standard base64") from None


Base64Content = Annotated[
    bytes,
    BeforeValidator(_from_base64),
    Field(max_length=MAX_CONTENT_BYTES),
    PlainSerializer(lambda raw: base64.b64encode(raw).decode("ascii"), when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "contentEncoding": "base64",
            "maxLength": -(-MAX_CONTENT_BYTES // 3) * 4,
            "description": (
                f"The document's bytes, standard base64 (RFC 4648, with padding);"
                f" at most {MAX_CONTENT_BYTES} bytes before encoding."
            ),
        }
    ),
]
"""Bytes in Python, standard base64 in JSON."""


class RegisterDocument(Command):
    """Register a document; the same ``document_key`` always yields the same number."""

    event_type: Literal["RegisterDocument"] = type_name("RegisterDocument")
    document_key: DocumentKey
    document_type: DocumentType = Field(description="Kind of document, as the DVS classifies it.")
    title: str = Field(min_length=1, max_length=300, description="Title in the register.")
    author_unit: str = Field(min_length=1, max_length=100, description="Municipal unit issuing it.")
    media_type: str = Field(default="application/pdf", max_length=100, description="Content type.")
    content_sha256: Sha256Hex | None = Field(
        default=None,
        description="SHA-256 of the content; None: the content follows (StoreDocumentContent),"
        " as for a notice, whose registration number is printed on it.",
    )
    content_size: int | None = Field(default=None, ge=0, description="Content length in bytes.")
    related_document_keys: tuple[DocumentKey, ...] = Field(
        default=(), description="Documents this one answers or belongs to."
    )
    child_ref: ChildRef | None = Field(default=None, description="Child concerned, if any.")


class DocumentRegistered(Event):
    """DVS registered the document."""

    event_type: Literal["DocumentRegistered"] = type_name("DocumentRegistered")
    document_key: DocumentKey
    registration_number: DvsNumber
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


class StoreDocumentContent(Command):
    """Store a registered document's sealed content in the DVS, against its registration.

    The DVS verifies the container (an ASiC-E with one data file), its XAdES seal and
    ``content_sha256`` before storing it. Sending the same content again is harmless.
    """

    event_type: Literal["StoreDocumentContent"] = type_name("StoreDocumentContent")
    document_key: DocumentKey
    registration_number: DvsNumber
    file_name: str = Field(
        min_length=1,
        max_length=120,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="File name of the container; no path separators.",
        examples=["RD-2026-00012.edoc"],
    )
    media_type: str = Field(
        default=EDOC_MEDIA_TYPE, max_length=100, description="Content type of the container."
    )
    content: Base64Content = Field(description="The sealed container (base64 in JSON).")
    content_sha256: Sha256Hex
    child_ref: ChildRef | None = Field(default=None, description="Child concerned, if any.")


class DocumentContentStored(Event):
    """The DVS verified the document's seal and hash and stored its content."""

    event_type: Literal["DocumentContentStored"] = type_name("DocumentContentStored")
    document_key: DocumentKey
    registration_number: DvsNumber
    content_sha256: Sha256Hex
    signer: str = Field(
        min_length=1, max_length=200, description="Common name (CN) of the seal's certificate."
    )
    stored_at: UtcDatetime = Field(description="When the DVS stored the content.")


class DocumentContentRejected(Event):
    """The DVS did not store the document's content."""

    event_type: Literal["DocumentContentRejected"] = type_name("DocumentContentRejected")
    document_key: DocumentKey
    reason: Literal[
        "invalid_container",
        "invalid_signature",
        "hash_mismatch",
        "content_conflict",
        "unknown_document",
        "unavailable",
        "invalid_response",
    ] = Field(
        description=(
            "Class of failure: the DVS refused the container, its seal or its hash, holds other"
            " content for the registration, or has no such registration; or it stayed"
            " unavailable, or answered outside its protocol."
        )
    )
    detail: FailureDetail
    permanent: Permanent
