"""Contract of the DVS simulator and its adapter, over real HTTP on loopback."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from adapters.dvs import DvsClient, NewDocument, Registration, Rejection, client_from_url, service
from adapters.dvs.service import Documents, RelatedNotRegistered
from hub.reliability.consumer import Unit
from hub.reliability.retry import (
    InvalidResponse,
    Refused,
    UnavailableError,
    UnexpectedAnswer,
)
from hub.reliability.store import Store, Writes
from schemas.documents import (
    MAX_CONTENT_BYTES,
    DocumentContentRejected,
    DocumentRegistered,
    DocumentRegistrationFailed,
    RegisterDocument,
    StoreDocumentContent,
)
from schemas.topics import ALLOCATION, BY_NAME, DVS
from simulators.dvs.app import NumberFormat, create_app
from simulators.faults import Faults
from simulators.serving import serving
from tests.contract.common import FAST, NO_FAULT, PATIENT, Clock, Simulated, every_fault, faulted
from tests.contract.common import mocked as mocked_port


class Dvs(Simulated):
    async def listed(self) -> list[dict[str, Any]]:
        return await listed(self.url)


async def listed(url: str) -> list[dict[str, Any]]:
    """Every document the simulator at ``url`` registered (asked without a fault)."""
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.get("/v1/documents", headers=NO_FAULT)
    assert answer.status_code == 200
    body = answer.json()
    assert body["count"] == len(body["documents"])
    return list(body["documents"])


def document(n: int = 1, **changes: Any) -> NewDocument:
    fields: dict[str, Any] = {
        "type": "decision",
        "title": f"Decision {n}",
        "author_unit": "Education board",
        "media_type": "application/pdf",
        "sha256": f"{n:064x}",
        "size": 1000 + n,
    }
    return NewDocument(**{**fields, **changes})


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 5, 4, 9, 30, tzinfo=UTC))


@pytest.fixture
async def dvs(clock: Clock) -> AsyncIterator[Dvs]:
    app = create_app(NumberFormat("RD", 5), clock=clock)
    async with Dvs.on_loopback(app, clock, name="dvs") as dvs:
        yield dvs


@pytest.fixture
async def client(dvs: Dvs) -> AsyncIterator[DvsClient]:
    async with client_from_url(dvs.url, policy=FAST) as port:
        assert isinstance(port, DvsClient)
        yield port


async def test_numbers_follow_the_format_and_restart_each_year(dvs: Dvs, client: DvsClient) -> None:
    first = await client.register("doc-0001", document(1))
    second = await client.register("doc-0002", document(2))
    dvs.clock.now = datetime(2027, 1, 2, tzinfo=UTC)
    next_year = await client.register("doc-0003", document(3))
    assert isinstance(first, Registration)
    assert isinstance(second, Registration)
    assert isinstance(next_year, Registration)
    assert [first.registration_number, second.registration_number] == [
        "RD/2026/00001",
        "RD/2026/00002",
    ]
    assert next_year.registration_number == "RD/2027/00001"
    assert first.registered_at == datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
    assert first.document_id != second.document_id

    stored = await client.document("RD/2026/00002")
    assert stored["title"] == "Decision 2" and stored["sha256"] == f"{2:064x}"
    async with httpx.AsyncClient(base_url=dvs.url) as http:
        plain = await http.get("/v1/documents/RD/2026/00002", headers=NO_FAULT)
        missing = await http.get("/v1/documents/RD/2026/09999", headers=NO_FAULT)
        openapi = await http.get("/openapi.json")
    assert plain.json() == stored
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert openapi.json()["info"]["title"] == "DVS simulator"
    assert "/v1/documents" in openapi.json()["paths"]
    assert "ErrorBody" in openapi.json()["components"]["schemas"]
    async with httpx.AsyncClient(base_url=dvs.url) as http:
        health = (await http.get("/health")).json()
    assert health == {
        "status": "ok",
        "system": "DVS",
        "documents": 3,
        "clock": dvs.clock.now.isoformat(),  # the time it keeps
    }


async def test_same_key_same_document_is_one_registration(dvs: Dvs, client: DvsClient) -> None:
    first = await client.register("admission-list:riga:2026-05-04", document(1))
    again = await client.register("admission-list:riga:2026-05-04", document(1))
    assert isinstance(first, Registration)
    assert again == first
    assert len(await dvs.listed()) == 1


async def test_same_key_other_content_is_a_conflict(dvs: Dvs, client: DvsClient) -> None:
    await client.register("doc-0001", document(1))
    outcome = await client.register("doc-0001", document(1, sha256="f" * 64))
    assert isinstance(outcome, Rejection)
    assert (outcome.reason, outcome.status) == ("idempotency_conflict", 409)
    assert len(await dvs.listed()) == 1


async def test_links_resolve_to_registered_documents(dvs: Dvs, client: DvsClient) -> None:
    application = await client.register("app-0001", document(1, type="incoming_application"))
    assert isinstance(application, Registration)
    decision = await client.register(
        "decision-0001", document(2, links=(application.registration_number,))
    )
    assert isinstance(decision, Registration)
    stored = await client.document(decision.registration_number)
    assert stored["links"] == [application.registration_number]

    unknown = await client.register("decision-0002", document(3, links=("RD/2026/00099",)))
    assert isinstance(unknown, Rejection)
    assert (unknown.reason, unknown.status) == ("unknown_link", 422)
    assert "RD/2026/00099" in unknown.detail
    assert len(await dvs.listed()) == 2


async def test_requests_without_key_or_with_a_broken_body_are_bad(dvs: Dvs) -> None:
    body = document(1).model_dump(mode="json")
    async with httpx.AsyncClient(base_url=dvs.url, headers=NO_FAULT) as http:
        keyless = await http.post("/v1/documents", json=body)
        broken = await http.post(
            "/v1/documents", json={**body, "sha256": "xyz"}, headers={"Idempotency-Key": "k-1"}
        )
    assert keyless.status_code == 400
    assert broken.status_code == 400 and broken.json()["error"] == "invalid_request"
    assert await dvs.listed() == []


async def test_magic_reject_is_a_permanent_rejection(dvs: Dvs, client: DvsClient) -> None:
    for _ in range(2):
        outcome = await client.register("doc-0001", document(1, author_unit="REJECT"))
        assert isinstance(outcome, Rejection)
        assert (outcome.reason, outcome.status) == ("rejected", 422)
    assert await dvs.listed() == []


async def test_magic_broken_stays_unavailable(dvs: Dvs, client: DvsClient) -> None:
    retried: list[BaseException] = []
    port = DvsClient(dvs.url, policy=FAST, on_retry=retried.append)
    async with port:
        with pytest.raises(UnavailableError, match="500"):
            await port.register("doc-0001", document(1, author_unit="BROKEN"))
    assert len(retried) == FAST.attempts - 1
    assert await dvs.listed() == []


@every_fault()
async def test_every_fault_fails_transiently(
    faults: Faults, timeout: float, error: type[Exception]
) -> None:
    app = create_app(faults=faults)
    async with serving(app, name="dvs") as served:
        async with client_from_url(served.url, timeout=timeout, policy=FAST) as port:
            assert isinstance(port, DvsClient)
            with pytest.raises(error) as caught:
                await port.register("doc-0001", document(1))
        assert faulted(app) == FAST.attempts
        assert await listed(served.url) == []  # a faulted request never reaches the DVS
    if faults.rate_limit_rate:
        assert isinstance(caught.value, UnavailableError) and caught.value.retry_after == 0


async def test_half_faulted_still_registers_each_document_once() -> None:
    faults = Faults.spread(0.5, seed=7, timeout_seconds=0.5, retry_after_seconds=0)
    app = create_app(faults=faults)
    keys = [f"doc-{n:04d}" for n in range(12)]
    async with serving(app, name="dvs") as served:
        async with client_from_url(served.url, timeout=0.3, policy=PATIENT) as port:
            assert isinstance(port, DvsClient)
            first = [await port.register(key, document(n)) for n, key in enumerate(keys)]
            again = [await port.register(key, document(n)) for n, key in enumerate(keys)]
        registered = await listed(served.url)
    assert all(isinstance(outcome, Registration) for outcome in first)
    assert again == first
    numbers = {outcome.registration_number for outcome in first}  # type: ignore[union-attr]
    assert len(numbers) == len(keys) == len(registered)
    assert {doc["registration_number"] for doc in registered} == numbers
    assert faulted(app) > 0


def mocked(answer: httpx.Response) -> tuple[DvsClient, list[httpx.Request]]:
    return mocked_port(DvsClient, answer)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(201, json={"registration_number": "2026-123", "document_id": "d"}),
        httpx.Response(
            201,
            json={
                "registration_number": "rd/2026/1",
                "registered_at": "2026-05-04T09:30:00Z",
                "document_id": "d",
            },
        ),
        httpx.Response(201, json=["RD/2026/00001"]),
        httpx.Response(422, json={"error": "no_idea"}),
    ],
    ids=["missing-field", "bad-number", "not-an-object", "unknown-refusal"],
)
async def test_wrong_shape_is_unexpected_and_not_retried(answer: httpx.Response) -> None:
    port, seen = mocked(answer)
    async with port:
        with pytest.raises(UnexpectedAnswer):
            await port.register("doc-0001", document(1))
    assert len(seen) == 1
    assert seen[0].headers["Idempotency-Key"] == "doc-0001"


async def test_a_registration_answered_with_another_2xx_is_broken_and_retried() -> None:
    answer = {
        "registration_number": "RD/2026/1",
        "registered_at": "2026-05-04T09:30:00Z",
        "document_id": "d",
    }
    port, seen = mocked(httpx.Response(202, json=answer))
    async with port:
        with pytest.raises(InvalidResponse, match="202"):
            await port.register("doc-0001", document(1))
    assert len(seen) == FAST.attempts


async def test_a_rejection_detail_has_its_personal_codes_masked() -> None:
    body = {"error": "rejected", "detail": "child 161175-19997 is not resident"}
    port, _ = mocked(httpx.Response(422, json=body))
    async with port:
        outcome = await port.register("doc-0001", document(1))
    assert isinstance(outcome, Rejection)
    assert outcome.detail == "child ******-***** is not resident"


def test_a_rejection_is_published_with_its_personal_codes_masked() -> None:
    # Even a Rejection that was not masked on the way in (built by hand here).
    handler = service(DvsClient("http://dvs.test")).handlers[0]
    message = request("decision:riga:refused")
    unit = Unit()
    handler.apply(unit, message, Rejection("rejected", "child 161175-19997 unknown", 422))
    [row] = unit.outbox
    failed = BY_NAME["dvs.documents.registered.v1"].parse(row.value)
    assert isinstance(failed, DocumentRegistrationFailed)
    assert b"161175-19997" not in row.value and b"16117519997" not in row.value
    assert failed.detail == "rejected (HTTP 422): child ******-***** unknown"


async def test_the_service_counts_retries_with_the_runners_counter() -> None:
    port, seen = mocked(httpx.Response(503, json={}))
    spec = service(port)
    handler = spec.handlers[0]
    assert spec.clients == (port,)
    counted: list[BaseException] = []
    port.add_retry_listener(counted.append)  # what the runner does once the service starts
    async with port:
        with pytest.raises(UnavailableError):
            await handler.fetch(request("doc-0001"))
    assert len(seen) == FAST.attempts and len(counted) == FAST.attempts - 1


async def test_mocked_registration_is_read() -> None:
    port, _ = mocked(
        httpx.Response(
            200,
            json={
                "registration_number": "LV-X/2026/7",
                "registered_at": "2026-05-04T12:30:00+03:00",
                "document_id": "d-1",
                "extra": "ignored",
            },
        )
    )
    async with port:
        outcome = await port.register("doc-0001", document(1))
    assert isinstance(outcome, Registration)
    assert outcome.registered_at == datetime(2026, 5, 4, 9, 30, tzinfo=UTC)


def request(key: str, *, related: tuple[str, ...] = (), **changes: Any) -> RegisterDocument:
    fields: dict[str, Any] = {
        "document_key": key,
        "document_type": "decision",
        "title": f"Document {key}",
        "author_unit": "Education board",
        "content_sha256": "ab" * 32,
        "content_size": 2048,
        "related_document_keys": related,
        "child_ref": "CH-5f2a9c1b7d0e",
    }
    return RegisterDocument.new(producer=ALLOCATION, municipality="riga", **{**fields, **changes})


async def test_handler_links_documents_by_their_registration_numbers(
    dvs: Dvs, client: DvsClient, tmp_path: Path
) -> None:
    spec = service(client)
    assert spec.name == DVS and spec.on_start is not None
    store = await Store.open(tmp_path / "dvs.sqlite3", schema=spec.schema)
    try:
        await spec.on_start(store)
        handler, content = spec.handlers
        assert (handler.topic.name, content.topic.name) == (
            "dvs.documents.requests.v1",
            "dvs.documents.content.v1",
        )

        async def handle(message: RegisterDocument) -> None:
            fetched = await handler.fetch(message)
            unit = Unit()
            handler.apply(unit, message, fetched)
            writes = Writes([str(message.event_id)], unit.statements, unit.outbox)
            await store.commit(spec.name, writes)

        listing = request("admission-list:riga:2026-05-04", document_type="admission_list")
        decision = request("decision:riga:CH-5f2a9c1b7d0e", related=(listing.document_key,))
        orphan = request("decision:riga:orphan", related=("admission-list:riga:1999-01-01",))
        refused = request("decision:riga:refused", author_unit="REJECT")
        resent = request(listing.document_key, document_type="admission_list")
        await handle(listing)
        await handle(resent)  # asked again (a new event): the same number, no second document
        await handle(decision)
        with pytest.raises(RelatedNotRegistered):
            await handler.fetch(orphan)
        await handle(refused)

        rows = await store.query("SELECT topic, key, value FROM outbox ORDER BY id")
        registered = BY_NAME["dvs.documents.registered.v1"]
        assert {topic for topic, _, _ in rows} == {registered.name}
        messages = [registered.parse(value) for _, _, value in rows]
        first, repeated, second, failed = messages
        assert isinstance(first, DocumentRegistered)
        assert isinstance(repeated, DocumentRegistered)
        assert isinstance(second, DocumentRegistered)
        assert isinstance(failed, DocumentRegistrationFailed)
        assert first.registration_number == repeated.registration_number == "RD/2026/00001"
        assert second.registration_number == "RD/2026/00002"
        assert (failed.reason, failed.permanent) == ("rejected", True)
        assert failed.detail.startswith("rejected")
        for message, cause in zip(messages, (listing, resent, decision, refused), strict=True):
            assert message.correlation_id == cause.correlation_id
            assert message.causation_id == cause.event_id
            assert message.producer == DVS and message.municipality == "riga"
        assert [key for _, key, _ in rows][2] == decision.document_key.encode()
        assert json.loads(rows[2][2])["document_key"] == decision.document_key

        stored = await client.document(second.registration_number)
        assert stored["links"] == [first.registration_number]
        assert stored["type"] == "decision" and stored["reference"] == "CH-5f2a9c1b7d0e"
        assert await store.query(
            "SELECT document_key, registration_number FROM dvs_registrations"
            " ORDER BY registration_number"
        ) == [
            (listing.document_key, "RD/2026/00001"),
            (decision.document_key, "RD/2026/00002"),
        ]
        assert len(await dvs.listed()) == 2
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("error", "reason", "permanent"),
    [
        (UnavailableError("DVS answered 503"), "unavailable", False),
        (RelatedNotRegistered("related documents not registered yet"), "unavailable", False),
        (InvalidResponse("DVS answered with no JSON"), "invalid_response", False),
        (UnexpectedAnswer("DVS answered with wrong fields"), "invalid_response", True),
        (Refused("DVS refused with 400", status=400), "rejected", True),
    ],
    ids=["unavailable", "related", "broken", "wrong-shape", "refused"],
)
def test_a_request_given_up_publishes_registration_failed(
    error: BaseException, reason: str, permanent: bool
) -> None:
    handler = Documents(DvsClient("http://dvs.test"))
    message = request("decision:riga:CH-5f2a9c1b7d0e")
    [failed] = handler.given_up(message, error)
    assert isinstance(failed, DocumentRegistrationFailed)
    assert (failed.reason, failed.permanent) == (reason, permanent)
    assert failed.document_key == message.document_key
    assert failed.causation_id == message.event_id
    assert failed.correlation_id == message.correlation_id and failed.producer == DVS
    assert str(error) in failed.detail


def test_a_request_given_up_masks_personal_codes() -> None:
    handler = Documents(DvsClient("http://dvs.test"))
    error = UnexpectedAnswer("DVS answered about 161175-19997 " + "x" * 600)
    [failed] = handler.given_up(request("doc-0001"), error)
    assert "161175-19997" not in failed.model_dump_json()
    assert "******-*****" in failed.detail and len(failed.detail) == 500


def content_request(**changes: Any) -> StoreDocumentContent:
    data = b"PK\x03\x04 not really a container"
    fields: dict[str, Any] = {
        "document_key": "decision:riga:CH-5f2a9c1b7d0e",
        "registration_number": "RD/2026/00001",
        "file_name": "RD-2026-00001.edoc",
        "content": data,
        "content_sha256": hashlib.sha256(data).hexdigest(),
    }
    return StoreDocumentContent.new(
        producer=ALLOCATION, municipality="riga", **{**fields, **changes}
    )


def test_content_travels_as_base64_and_is_bounded() -> None:
    message = content_request()
    wire = json.loads(message.model_dump_json())
    assert base64.b64decode(wire["content"]) == message.content
    assert wire["media_type"] == "application/vnd.etsi.asic-e+zip"
    assert StoreDocumentContent.model_validate_json(message.model_dump_json()) == message
    with pytest.raises(ValidationError):
        content_request(content=b"x" * (MAX_CONTENT_BYTES + 1))
    with pytest.raises(ValidationError):
        content_request(file_name="../RD-2026-00001.edoc")
    with pytest.raises(ValidationError):
        StoreDocumentContent.model_validate_json(
            message.model_dump_json().replace(wire["content"], "not base64!")
        )


@pytest.mark.parametrize(
    ("error", "reason", "permanent"),
    [
        (UnavailableError("DVS answered 503"), "unavailable", False),
        (InvalidResponse("DVS answered with no JSON"), "invalid_response", False),
        (UnexpectedAnswer("DVS answered about another document"), "invalid_response", True),
        (Refused("DVS refused with 413", status=413), "invalid_container", True),
        (Refused("DVS refused with 400", status=400), "invalid_response", True),
    ],
    ids=["unavailable", "broken", "wrong-shape", "too-large", "bad-request"],
)
def test_content_given_up_publishes_content_rejected(
    error: BaseException, reason: str, permanent: bool
) -> None:
    handler = Documents(DvsClient("http://dvs.test"))
    message = content_request()
    [rejected] = handler.given_up(message, error)
    assert isinstance(rejected, DocumentContentRejected)
    assert (rejected.reason, rejected.permanent) == (reason, permanent)
    assert rejected.causation_id == message.event_id and str(error) in rejected.detail


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(201, json={"registration_number": "RD/2026/00001"}),
        httpx.Response(
            201,
            json={
                "registration_number": "RD/2026/00002",
                "content_sha256": "0" * 64,
                "signer": "Test e-seal",
                "stored_at": "2026-05-04T09:30:00Z",
            },
        ),
        httpx.Response(422, json={"error": "no_idea"}),
    ],
    ids=["missing-fields", "another-document", "unknown-refusal"],
)
async def test_a_wrong_content_answer_is_unexpected_and_not_retried(answer: httpx.Response) -> None:
    port, seen = mocked(answer)
    async with port:
        with pytest.raises(UnexpectedAnswer):
            await port.store_content("RD/2026/00001", b"data", "0" * 64)
    assert len(seen) == 1
    assert seen[0].url.raw_path == b"/v1/documents/RD%2F2026%2F00001/content"
    assert seen[0].headers["X-Content-SHA256"] == "0" * 64
    assert seen[0].headers["Content-Type"] == "application/vnd.etsi.asic-e+zip"
