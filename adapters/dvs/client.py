"""The DVS's HTTP client: registers documents, idempotently by key, then stores their content.

The DVS answers a registration with 201 (new) or 200 (the key was registered before, with
the same body), and refuses one with 409 (the key names another document) or 422 (an
unknown link, or the DVS rejects the document). Those refusals are outcomes of the
protocol, returned as :class:`Rejection`; every other failure is an error of
:mod:`hub.reliability.retry` (5xx, 429, timeouts, broken JSON and another 2xx are retried).
A rejection's ``detail`` is the DVS's own text, with anything shaped like a personal code
masked: it ends up in messages and logs.

A registered document's content (a sealed ``.edoc``) is stored with a PUT that sends the
SHA-256 along; the DVS answers 201 (stored) or 200 (the same content was stored before), and
refuses with 404 (no such registration), 409 (other content is stored) or 422 (the hash, the
container or the seal does not verify): those too are :class:`Rejection` outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from hub.reliability.retry import HttpPort, Refused, UnexpectedAnswer
from schemas.values import mask_personal_codes

NUMBER_PATTERN = r"^[A-Z0-9-]+/\d{4}/\d+$"
_OUTCOMES = frozenset({409, 422})
"""Statuses of a registration that are answers (a refusal with its reason), not errors."""

RejectionReason = Literal["rejected", "idempotency_conflict", "unknown_link"]
ContentRejectionReason = Literal[
    "invalid_container", "invalid_signature", "hash_mismatch", "content_conflict"
]
_CONTENT_OUTCOMES = frozenset({404, 409, 422})
"""Statuses of storing content that are answers, not errors (404: no such registration)."""
EDOC_MEDIA_TYPE = "application/vnd.etsi.asic-e+zip"


class NewDocument(BaseModel):
    """A document to register, in the DVS's vocabulary."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal[
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
    title: str
    author_unit: str
    media_type: str
    sha256: str | None = None
    size: int | None = None
    links: tuple[str, ...] = ()
    """Registration numbers of related documents."""
    reference: str | None = None


class Registration(BaseModel):
    """The DVS registered the document (now or at an earlier request with the same key)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    registration_number: str = Field(pattern=NUMBER_PATTERN, max_length=64)
    registered_at: AwareDatetime
    document_id: str = Field(min_length=1)


class Stored(BaseModel):
    """The DVS verified and stored the content (now or at an earlier request)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    registration_number: str = Field(pattern=NUMBER_PATTERN, max_length=64)
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    signer: str = Field(min_length=1, max_length=200)
    """Common name of the seal's certificate, as the DVS read it."""
    stored_at: AwareDatetime


class _Refusal(BaseModel):
    model_config = ConfigDict(extra="ignore")

    error: RejectionReason
    detail: str | None = None


class _ContentRefusal(BaseModel):
    model_config = ConfigDict(extra="ignore")

    error: ContentRejectionReason
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """The DVS refused the document; repeating the request cannot change that.

    ``detail`` is the DVS's explanation, personal codes masked.
    """

    reason: RejectionReason | ContentRejectionReason | Literal["unknown_document"]
    detail: str
    status: int


class DvsClient(HttpPort):
    """Client of the DVS REST API (``POST /v1/documents``, ``GET /v1/documents/{number}``)."""

    system = "DVS"

    async def register(self, key: str, document: NewDocument) -> Registration | Rejection:
        """Register ``document`` under the idempotency ``key``; retries transient failures.

        Raises ``UnavailableError`` or ``InvalidResponse`` when the DVS stayed unavailable or
        broken (transient), ``Refused`` for another 4xx and ``UnexpectedAnswer`` for an answer
        of the wrong shape (permanent).
        """
        what = "POST /v1/documents"
        body = document.model_dump(mode="json")

        try:
            answer = await self.json(
                "POST",
                "/v1/documents",
                json=body,
                headers={"Idempotency-Key": key},
                expect=(201, 200),
            )
        except Refused as refused:
            if refused.status not in _OUTCOMES:
                raise
            rejected = self.parse(_Refusal, refused.body, what)
            detail = mask_personal_codes(rejected.detail or rejected.error)
            return Rejection(rejected.error, detail[:300], refused.status)
        return self.parse(Registration, answer, what)

    async def store_content(
        self, registration_number: str, content: bytes, sha256: str
    ) -> Stored | Rejection:
        """Store ``content`` (a sealed container) as the content of the registered document;
        retries transient failures, and the same content again is harmless.

        A 404 is the rejection ``unknown_document``. Raises like :meth:`register`, and
        ``UnexpectedAnswer`` when the DVS answers for another document or other content.
        """
        path = f"/v1/documents/{quote(registration_number, safe='')}/content"
        what = "PUT /v1/documents/…/content"
        try:
            answer = await self.json(
                "PUT",
                path,
                content=content,
                headers={"Content-Type": EDOC_MEDIA_TYPE, "X-Content-SHA256": sha256},
                expect=(201, 200),
            )
        except Refused as refused:
            if refused.status not in _CONTENT_OUTCOMES:
                raise
            if refused.status == 404:
                return Rejection("unknown_document", "the DVS has no such registration", 404)
            rejected = self.parse(_ContentRefusal, refused.body, what)
            detail = mask_personal_codes(rejected.detail or rejected.error)
            return Rejection(rejected.error, detail[:300], refused.status)
        stored = self.parse(Stored, answer, what)
        if (stored.registration_number, stored.content_sha256) != (registration_number, sha256):
            raise UnexpectedAnswer(f"DVS answered {what} about another document or content")
        return stored

    async def document(self, registration_number: str) -> dict[str, Any]:
        """The registered document with that number (``Refused`` with 404 if there is none)."""
        answer = await self.json("GET", f"/v1/documents/{quote(registration_number, safe='')}")
        if not isinstance(answer, dict):
            raise UnexpectedAnswer("DVS answered GET /v1/documents/… with no object")
        return answer


client_from_url = DvsClient.at


__all__ = [
    "EDOC_MEDIA_TYPE",
    "NUMBER_PATTERN",
    "ContentRejectionReason",
    "DvsClient",
    "NewDocument",
    "Registration",
    "Rejection",
    "RejectionReason",
    "Stored",
    "client_from_url",
]
