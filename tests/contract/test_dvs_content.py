"""Contract of the DVS's document content: the simulator verifies a sealed .edoc (ASiC-E with
a XAdES seal) before storing it, and the adapter turns its answers into messages.

The containers are sealed by the hub's own sealing (:mod:`hub.documents.edoc`), as the hub
sends them; the simulator verifies them with its own code.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import zipfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from adapters.dvs import DvsClient, Registration, Rejection, Stored, client_from_url, service
from hub.reliability.consumer import Unit
from hub.reliability.retry import UnavailableError
from hub.reliability.store import Store, Writes
from schemas.base import Message
from schemas.documents import (
    DocumentContentRejected,
    DocumentContentStored,
    DocumentRegistered,
    RegisterDocument,
    StoreDocumentContent,
)
from schemas.topics import ALLOCATION, BY_NAME
from simulators.dvs.app import NumberFormat, create_app
from simulators.faults import Faults
from tests.contract.common import FAST, NO_FAULT, Clock, Simulated, faulted
from tests.contract.test_dvs import document

edoc = pytest.importorskip("hub.documents.edoc")

EDOC = "application/vnd.etsi.asic-e+zip"
PDF = b"%PDF-1.7\n% Decision RD/2026/00001\n1 0 obj << >> endobj\n%%EOF\n"
Seal = Callable[..., bytes]


@pytest.fixture(scope="module")
def seal_key(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An e-seal (key and self-issued certificate), generated once for the module."""
    directory = tmp_path_factory.mktemp("dvs-seal")
    key_path, cert_path = edoc.generate_seal("Test e-seal", "Test pašvaldība", directory)
    return edoc.SealKey.from_files(key_path, cert_path)


@pytest.fixture
def sealed(seal_key: Any) -> Seal:
    """``sealed(number, pdf=PDF)``: the document ``number`` sealed as the hub seals it."""

    def seal(number: str, pdf: bytes = PDF, key: Any = None) -> bytes:
        name = number.replace("/", "-") + ".pdf"
        return edoc.seal(key or seal_key, name, pdf, at=datetime.now(UTC))  # type: ignore[no-any-return]

    return seal


def replaced(container: bytes, name: str, data: bytes) -> bytes:
    """``container`` with the entry ``name`` holding ``data`` (a well-formed ZIP still)."""
    source = zipfile.ZipFile(io.BytesIO(container))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            target.writestr(info, data if info.filename == name else source.read(info))
    return out.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_headers(data: bytes, digest: str | None = None) -> dict[str, str]:
    return {**NO_FAULT, "Content-Type": EDOC, "X-Content-SHA256": digest or sha(data)}


# --------------------------------------------------------------------------- the simulator


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The simulator (numbers RD/2026/…) in process, with RD/2026/00001 registered."""
    app = create_app(NumberFormat("RD", 5))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://dvs.test"
    ) as client:
        await register(client)
        yield client


async def register(client: httpx.AsyncClient, n: int = 1, **changes: Any) -> str:
    body = document(n, **changes).model_dump(mode="json")
    answer = await client.post("/v1/documents", json=body, headers={"Idempotency-Key": f"k-{n}"})
    assert answer.status_code == 201
    number: str = answer.json()["registration_number"]
    return number


async def put(client: httpx.AsyncClient, number: str, data: bytes, **kw: Any) -> httpx.Response:
    return await client.put(
        f"/v1/documents/{number}/content", content=data, headers=put_headers(data, **kw)
    )


async def test_a_sealed_document_is_stored_once_and_can_be_read_back(
    http: httpx.AsyncClient, sealed: Seal
) -> None:
    container = sealed("RD/2026/00001")
    first = await put(http, "RD/2026/00001", container)
    again = await put(http, "RD/2026/00001", container)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == first.json()
    assert first.json()["signer"] == "Test e-seal"
    assert first.json()["content_sha256"] == sha(container)

    read = await http.get("/v1/documents/RD%2F2026%2F00001/content")
    assert read.content == container and read.headers["content-type"] == EDOC
    shown = (await http.get("/v1/documents/RD/2026/00001")).json()
    assert (shown["has_content"], shown["content_sha256"], shown["signer"]) == (
        True,
        sha(container),
        "Test e-seal",
    )
    await register(http, 2, type="annulment")
    assert (await http.get("/v1/summary")).json() == {
        "documents": 2,
        "with_content": 1,
        "by_type": {
            "decision": {"registered": 1, "with_content": 1},
            "annulment": {"registered": 1, "with_content": 0},
        },
    }
    missing = await http.get("/v1/documents/RD/2026/00002/content")
    assert missing.status_code == 404


async def test_other_content_for_a_stored_document_is_a_conflict(
    http: httpx.AsyncClient, sealed: Seal
) -> None:
    first = sealed("RD/2026/00001")
    other = sealed("RD/2026/00001", PDF + b"% second version\n")
    assert (await put(http, "RD/2026/00001", first)).status_code == 201
    conflict = await put(http, "RD/2026/00001", other)
    assert conflict.status_code == 409 and conflict.json()["error"] == "content_conflict"
    assert (await http.get("/v1/documents/RD/2026/00001/content")).content == first


def _data_file(container: bytes) -> str:
    names = zipfile.ZipFile(io.BytesIO(container)).namelist()
    [name] = [n for n in names if n.endswith(".pdf")]
    return name


def _tampered_pdf(container: bytes) -> bytes:
    return replaced(container, _data_file(container), PDF.replace(b"Decision", b"Decisiom"))


def _not_a_zip(container: bytes) -> bytes:
    return b"%PDF-1.7 not a container"


def _compressed_mimetype(container: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(container))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    return out.getvalue()


def _second_data_file(container: bytes) -> bytes:
    out = io.BytesIO(container)
    with zipfile.ZipFile(out, "a") as archive:
        archive.writestr("annex.pdf", PDF)
    return out.getvalue()


def _tampered_signature(container: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(container))
    xml = source.read("META-INF/signatures0.xml")
    signed_at = re.search(rb"<xades:SigningTime>(\d{4})", xml)
    assert signed_at is not None
    moved = xml.replace(signed_at.group(0), b"<xades:SigningTime>1999", 1)
    return replaced(container, "META-INF/signatures0.xml", moved)


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (_tampered_pdf, "invalid_signature"),
        (_tampered_signature, "invalid_signature"),
        (_not_a_zip, "invalid_container"),
        (_compressed_mimetype, "invalid_container"),
        (_second_data_file, "invalid_container"),
    ],
    ids=["tampered-pdf", "tampered-signature", "not-a-zip", "mimetype-deflated", "two-files"],
)
async def test_a_container_that_does_not_verify_is_refused(
    http: httpx.AsyncClient, sealed: Seal, spoil: Callable[[bytes], bytes], reason: str
) -> None:
    spoilt = spoil(sealed("RD/2026/00001"))
    answer = await put(http, "RD/2026/00001", spoilt)
    assert answer.status_code == 422 and answer.json()["error"] == reason
    assert (await http.get("/v1/documents/RD/2026/00001")).json()["has_content"] is False


async def test_the_hash_must_match_and_be_given(http: httpx.AsyncClient, sealed: Seal) -> None:
    container = sealed("RD/2026/00001")
    wrong = await put(http, "RD/2026/00001", container, digest="0" * 64)
    assert wrong.status_code == 422 and wrong.json()["error"] == "hash_mismatch"
    headers = {**NO_FAULT, "Content-Type": EDOC}
    path = "/v1/documents/RD/2026/00001/content"
    missing = await http.put(path, content=container, headers=headers)
    assert missing.status_code == 400 and missing.json()["error"] == "missing_digest"
    plain = await http.put(
        path, content=container, headers={**put_headers(container), "Content-Type": "text/plain"}
    )
    assert plain.status_code == 415
    digest = "sha-256=" + base64.b64encode(hashlib.sha256(container).digest()).decode()
    rfc3230 = await http.put(path, content=container, headers={**headers, "Digest": digest})
    assert rfc3230.status_code == 201


async def test_an_unknown_registration_is_not_found(http: httpx.AsyncClient, sealed: Seal) -> None:
    answer = await put(http, "RD/2026/00042", sealed("RD/2026/00042"))
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"


async def test_trusted_certificates_limit_whose_seal_is_stored(
    sealed: Seal, seal_key: Any, tmp_path: Path
) -> None:
    key_path, cert_path = edoc.generate_seal("Other e-seal", "Other", tmp_path)
    other = edoc.SealKey.from_files(key_path, cert_path)
    trusted: list[x509.Certificate] = [seal_key.certificate]
    app = create_app(NumberFormat("RD", 5), trusted_certificates=trusted)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http:
        number = await register(http)
        refused = await put(http, number, sealed(number, key=other))
        stored = await put(http, number, sealed(number))
    assert refused.status_code == 422 and refused.json()["error"] == "invalid_signature"
    assert "not trusted" in refused.json()["detail"]
    assert stored.status_code == 201


# --------------------------------------------------------------------------- the adapter


class Dvs(Simulated):
    pass


@pytest.fixture
async def dvs() -> AsyncIterator[Dvs]:
    clock = Clock(datetime(2026, 5, 4, 9, 30, tzinfo=UTC))
    async with Dvs.on_loopback(
        create_app(NumberFormat("RD", 5), clock=clock), clock, name="dvs"
    ) as dvs:
        yield dvs


@pytest.fixture
async def client(dvs: Dvs) -> AsyncIterator[DvsClient]:
    async with client_from_url(dvs.url, policy=FAST) as port:
        assert isinstance(port, DvsClient)
        yield port


async def test_the_client_stores_content_and_reads_refusals(
    client: DvsClient, sealed: Seal
) -> None:
    registered = await client.register("decision:riga:CH-1", document(1))
    assert isinstance(registered, Registration)
    number = registered.registration_number
    container = sealed(number)
    stored = await client.store_content(number, container, sha(container))
    again = await client.store_content(number, container, sha(container))
    assert isinstance(stored, Stored) and again == stored
    assert stored.signer == "Test e-seal"
    assert stored.stored_at == datetime(2026, 5, 4, 9, 30, tzinfo=UTC)

    outcomes = [
        await client.store_content(number, b"x", sha(b"x")),
        await client.store_content("RD/2026/00099", container, sha(container)),
        await client.store_content(number, container, "0" * 64),
    ]
    assert [(o.reason, o.status) for o in outcomes if isinstance(o, Rejection)] == [
        ("content_conflict", 409),
        ("unknown_document", 404),
        ("hash_mismatch", 422),
    ]


async def test_a_faulted_dvs_stays_unavailable(sealed: Seal) -> None:
    app = create_app(faults=Faults(error_rate=1))
    container = sealed("PII/2026/000001")
    async with (
        Dvs.on_loopback(app, Clock(datetime.now(UTC)), name="dvs") as dvs,
        DvsClient(dvs.url, policy=FAST) as port,
    ):
        with pytest.raises(UnavailableError):
            await port.store_content("PII/2026/000001", container, sha(container))
    assert faulted(app) == FAST.attempts


def request(key: str, **fields: Any) -> RegisterDocument:
    return RegisterDocument.new(
        producer=ALLOCATION,
        municipality="riga",
        document_key=key,
        document_type="decision",
        title=f"Decision {key}",
        author_unit="Education board",
        content_sha256="ab" * 32,
        content_size=2048,
        **fields,
    )


def content(asked: RegisterDocument, number: str, data: bytes) -> StoreDocumentContent:
    return StoreDocumentContent.new(
        producer=ALLOCATION,
        caused_by=asked,
        document_key=asked.document_key,
        registration_number=number,
        file_name=number.replace("/", "-") + ".edoc",
        content=data,
        content_sha256=sha(data),
    )


async def test_the_service_registers_then_stores_the_sealed_content(
    client: DvsClient, sealed: Seal, tmp_path: Path
) -> None:
    spec = service(client)
    registrations, contents = spec.handlers
    store = await Store.open(tmp_path / "dvs.sqlite3", schema=spec.schema)
    answers = BY_NAME["dvs.documents.registered.v1"]
    try:
        assert spec.on_start is not None
        await spec.on_start(store)

        async def handle(message: RegisterDocument | StoreDocumentContent) -> Message:
            handler = contents if isinstance(message, StoreDocumentContent) else registrations
            unit = Unit()
            handler.apply(unit, message, await handler.fetch(message))
            await store.commit(
                spec.name, Writes([str(message.event_id)], unit.statements, unit.outbox)
            )
            [row] = unit.outbox
            assert row.topic == answers.name and row.key == message.document_key.encode()
            return answers.parse(row.value)

        asked = request("decision:riga:CH-1")
        registered = await handle(asked)
        assert isinstance(registered, DocumentRegistered)
        number = registered.registration_number
        container = sealed(number)
        stored = await handle(content(asked, number, container))
        other = await handle(content(asked, number, sealed(number, PDF + b"% v2\n")))
        asked_2 = request("decision:riga:CH-2")
        number_2 = (await handle(asked_2)).registration_number  # type: ignore[attr-defined]
        spoilt = await handle(content(asked_2, number_2, _tampered_pdf(sealed(number_2))))
        unknown = await handle(content(asked, "RD/2026/00077", container))
    finally:
        await store.close()

    assert isinstance(stored, DocumentContentStored)
    assert (stored.registration_number, stored.signer) == (number, "Test e-seal")
    assert stored.content_sha256 == sha(container) and stored.causation_id is not None
    assert isinstance(other, DocumentContentRejected)
    assert isinstance(spoilt, DocumentContentRejected)
    assert isinstance(unknown, DocumentContentRejected)
    assert (other.reason, other.permanent) == ("content_conflict", True)
    assert (spoilt.reason, spoilt.permanent) == ("invalid_signature", True)
    assert spoilt.detail.startswith("invalid_signature (HTTP 422): ")
    assert (unknown.reason, unknown.permanent) == ("unknown_document", True)
    assert "(HTTP 404)" in unknown.detail
