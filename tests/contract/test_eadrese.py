"""Contract of the e-adrese simulator and its client, over real HTTP on loopback."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

from adapters.notify.base import Accepted, Attachment, Outgoing, Rejected
from adapters.notify.eadrese import (
    MAX_ATTACHMENT_BYTES,
    EAdreseClient,
    NotificationPage,
    check_attachments,
    client_from_url,
)
from hub.notice import NoticeLaw
from hub.reliability.retry import (
    InvalidResponse,
    Refused,
    RetryPolicy,
    UnavailableError,
    UnexpectedAnswer,
)
from schemas.values import PersonalCode, personal_code_check_digit
from simulators.eadrese.app import BROKEN_MAILBOX, create_app
from simulators.faults import Faults
from simulators.serving import serving
from tests.contract.common import (
    FAST,
    NO_FAULT,
    Clock,
    Simulated,
    each_call_fails,
    every_fault,
    faulted,
)
from tests.contract.common import mocked as mocked_port

INSTITUTION = "90000012345"


def personal_codes(ending: str | None = None) -> Iterator[str]:
    """Valid old-format personal codes (born 1980s), those ending in ``ending`` if given."""
    for serial in range(100_000):
        head = f"{1 + serial % 28:02d}{1 + serial // 28 % 12:02d}8{serial % 10}1{serial % 1000:03d}"
        code = f"{head[:6]}-{head[6:]}{personal_code_check_digit(head)}"
        if ending is None or code.endswith(ending):
            yield code


def codes(n: int, ending: str | None = None) -> list[str]:
    found: list[str] = []
    for code in personal_codes(ending):
        if code not in found and code != BROKEN_MAILBOX:
            found.append(code)
        if len(found) == n:
            return found
    raise AssertionError("not enough codes")


ACTIVE, OTHER_ACTIVE, INACTIVE = codes(3)
BROKEN = BROKEN_MAILBOX
EVERY_CODE = (ACTIVE, OTHER_ACTIVE, INACTIVE, BROKEN)


def leaks(text: str) -> bool:
    return any(c in text or c.replace("-", "") in text for c in EVERY_CODE)


class EAdrese(Simulated):
    @property
    def mailbox(self) -> list[dict[str, Any]]:
        return list(self.app.app.state.mailbox)  # type: ignore[attr-defined]

    def sent_to(self, recipient: str) -> int:
        return sum(1 for m in self.mailbox if m["recipient"] == recipient)

    @property
    def requests(self) -> int:
        return sum(self.app.injected.values())


def outgoing(key: str = "offer:riga:CH-1", subject: str = "Offer", **changes: Any) -> Outgoing:
    fields = {"key": key, "subject": subject, "text": "You have an offer.", "reference": "OF-1"}
    return Outgoing(**{**fields, **changes})


PDF = Attachment("decision.pdf", "application/pdf", b"%PDF-1.7\n" + bytes(range(256)) * 4)
EDOC = Attachment("decision.edoc", "application/vnd.etsi.asic-e+zip", b"PK\x03\x04" + bytes(300))


@pytest.fixture
async def eadrese() -> AsyncIterator[EAdrese]:
    clock = Clock(datetime(2026, 5, 4, 9, 30, tzinfo=UTC))
    app = create_app(
        active=[ACTIVE, OTHER_ACTIVE.replace("-", ""), BROKEN],
        clock=clock,
        registration_numbers=[INSTITUTION],
    )
    async with EAdrese.on_loopback(app, clock, name="e-adrese") as eadrese:
        yield eadrese


@pytest.fixture
async def client(eadrese: EAdrese) -> AsyncIterator[EAdreseClient]:
    async with client_from_url(eadrese.url, policy=FAST) as port:
        assert isinstance(port, EAdreseClient)
        yield port


async def test_address_check(eadrese: EAdrese, client: EAdreseClient) -> None:
    assert await client.is_active(ACTIVE) is True
    assert await client.is_active(PersonalCode(ACTIVE)) is True
    assert await client.is_active(ACTIVE.replace("-", "")) is True
    assert await client.is_active(OTHER_ACTIVE) is True  # activated written without a hyphen
    assert await client.is_active(INACTIVE) is False
    assert await client.is_active(f"_DEFAULT@{INSTITUTION}") is True
    assert await client.is_active("_DEFAULT@40003000000") is False
    with pytest.raises(ValueError) as caught:
        await client.is_active("not-an-address")
    assert "not-an-address" not in str(caught.value)
    async with httpx.AsyncClient(base_url=eadrese.url, headers=NO_FAULT) as http:
        bad = await http.post("/v1/addresses/check", json={"recipient": "_DEFAULT@123"})
        health = (await http.get("/health")).json()
        openapi = (await http.get("/openapi.json")).json()
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_recipient"
    assert health == {
        "status": "ok",
        "system": "e-adrese",
        "messages": 0,
        "clock": eadrese.clock.now.isoformat(),  # the time it keeps
    }
    assert {"/v1/messages", "/v1/notifications", "/v1/addresses/check"} <= set(openapi["paths"])


async def test_send_is_accepted_with_id_and_server_time(
    eadrese: EAdrese, client: EAdreseClient
) -> None:
    outcome = await client.send(PersonalCode(ACTIVE), outgoing(attachments=(EDOC, PDF)))
    assert isinstance(outcome, Accepted)
    assert outcome.provider_message_id and outcome.delivered is False
    assert outcome.at == datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
    assert await client.confirmation(outcome.provider_message_id) == outcome.at
    [stored] = eadrese.mailbox
    assert stored["recipient"] == ACTIVE and stored["key"] == "offer:riga:CH-1"
    assert stored["subject"] == "Offer" and stored["body"] == "You have an offer."
    assert stored["reference"] == "OF-1" and stored["message_id"] == outcome.provider_message_id
    assert stored["attachments"] == [
        {"name": a.name, "media_type": a.media_type, "content": a.content} for a in (EDOC, PDF)
    ]
    institution = await client.send(f"_DEFAULT@{INSTITUTION}", outgoing("inst-1"))
    assert isinstance(institution, Accepted)
    assert eadrese.sent_to(f"_DEFAULT@{INSTITUTION}") == 1
    with pytest.raises(Refused) as unknown:
        await client.confirmation("no-such-message")
    assert unknown.value.status == 404 and unknown.value.error == "not_found"


async def test_same_key_twice_is_one_message(eadrese: EAdrese, client: EAdreseClient) -> None:
    first = await client.send(ACTIVE, outgoing())
    again = await client.send(ACTIVE.replace("-", ""), outgoing())
    assert isinstance(first, Accepted)
    assert again == first
    assert eadrese.sent_to(ACTIVE) == 1


async def test_same_key_other_message_is_a_conflict(
    eadrese: EAdrese, client: EAdreseClient
) -> None:
    await client.send(ACTIVE, outgoing())
    other_text = await client.send(ACTIVE, outgoing(text="Something else."))
    other_recipient = await client.send(OTHER_ACTIVE, outgoing())
    assert other_text == other_recipient == Rejected("idempotency_conflict")
    assert len(eadrese.mailbox) == 1


async def test_the_attachments_are_part_of_the_message(
    eadrese: EAdrese, client: EAdreseClient
) -> None:
    first = await client.send(ACTIVE, outgoing(attachments=(EDOC,)))
    again = await client.send(ACTIVE, outgoing(attachments=(EDOC,)))
    resealed = Attachment(EDOC.name, EDOC.media_type, EDOC.content + b"\x00")
    other_bytes = await client.send(ACTIVE, outgoing(attachments=(resealed,)))
    none = await client.send(ACTIVE, outgoing())
    assert isinstance(first, Accepted) and again == first
    assert other_bytes == none == Rejected("idempotency_conflict")
    assert len(eadrese.mailbox) == 1


async def test_a_reader_gets_the_attachments_back_by_message_id(
    eadrese: EAdrese, client: EAdreseClient
) -> None:
    sent = await client.send(ACTIVE, outgoing(attachments=(EDOC, PDF)))
    assert isinstance(sent, Accepted)
    messages = f"/v1/messages/{sent.provider_message_id}"
    async with httpx.AsyncClient(base_url=eadrese.url, headers=NO_FAULT) as http:
        listed = (await http.get(f"{messages}/attachments")).json()
        edoc = await http.get(f"{messages}/attachments/decision.edoc")
        pdf = await http.get(f"{messages}/attachments/decision.pdf")
        missing = await http.get(f"{messages}/attachments/other.pdf")
        unknown = await http.get("/v1/messages/no-such-message/attachments")
    assert listed == {
        "attachments": [
            {"name": a.name, "media_type": a.media_type, "size": len(a.content)}
            for a in (EDOC, PDF)
        ]
    }
    assert edoc.content == EDOC.content
    assert edoc.headers["content-type"] == "application/vnd.etsi.asic-e+zip"
    assert pdf.content == PDF.content and pdf.headers["content-type"] == "application/pdf"
    assert missing.status_code == unknown.status_code == 404


async def test_no_active_e_adrese_is_rejected(eadrese: EAdrese, client: EAdreseClient) -> None:
    outcome = await client.send(INACTIVE, outgoing())
    assert outcome == Rejected("no_active_e_adrese")
    assert eadrese.mailbox == []
    eadrese.app.app.state.active.add(INACTIVE)  # type: ignore[attr-defined]
    assert isinstance(await client.send(INACTIVE, outgoing()), Accepted)  # the key was free


def file(name: str, media_type: str = "application/pdf", size: int = 1) -> Attachment:
    return Attachment(name, media_type, bytes(size))


def test_check_attachments() -> None:
    assert check_attachments([]) is None
    assert check_attachments([file(f"{n}.pdf") for n in range(10)]) is None
    assert check_attachments([file(f"{n}.pdf") for n in range(11)]) == "too_many_attachments"
    ok = [
        file("a.PDF"),
        file("a.edoc", "application/vnd.etsi.asic-e+zip"),
        file("b.asice", "Application/VND.ETSI.ASIC-E+ZIP"),
        file("a.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        file("a.odt", "application/vnd.oasis.opendocument.text"),
        file("scan.jpeg", "image/jpeg"),
        file("a.png", "image/png"),
        file("x.tar.ods", "application/vnd.oasis.opendocument.spreadsheet"),
        file("r.txt", "text/plain; charset=utf-8"),
    ]
    assert check_attachments(ok) is None
    for name in ("virus.exe", "pdf", ".pdf", "a.pdf.zip", "noextension"):
        assert check_attachments([file(name)]) == "attachment_type", name
    for media_type in ("application/zip", "application/x-msdownload", "image/png", "x/y", ""):
        assert check_attachments([file("a.pdf", media_type)]) == "attachment_type", media_type
    assert check_attachments([file("a.pdf"), file("a.pdf")]) == "attachment_name"
    half = MAX_ATTACHMENT_BYTES // 2
    assert check_attachments([file("a.pdf", size=half), file("b.pdf", size=half)]) is None
    too_large = [file("a.pdf", size=half), file("b.pdf", size=half + 1)]
    assert check_attachments(too_large) == "attachments_too_large"


async def test_refused_attachments_are_refused_without_a_request(
    eadrese: EAdrese, client: EAdreseClient
) -> None:
    before = eadrese.requests
    many = await client.send(ACTIVE, outgoing(attachments=(PDF,) * 11))
    eleven = tuple(file(f"{n}.pdf") for n in range(11))
    distinct = await client.send(ACTIVE, outgoing(attachments=eleven))
    exe = await client.send(ACTIVE, outgoing(attachments=(PDF, file("setup.exe", "x/y"))))
    zipped = await client.send(ACTIVE, outgoing(attachments=(file("a.pdf", "application/zip"),)))
    assert many == distinct == Rejected("too_many_attachments")
    assert exe == zipped == Rejected("attachment_type")
    assert eadrese.requests == before
    assert eadrese.mailbox == []


async def test_the_simulator_refuses_attachments_too(eadrese: EAdrese) -> None:
    body = {"recipient": ACTIVE, "subject": "S", "body": "B", "reference": "R"}
    pdf = {"name": "a.pdf", "media_type": "application/pdf", "content_base64": "JVBERi0="}
    half = base64.b64encode(bytes(MAX_ATTACHMENT_BYTES // 2 + 1)).decode()
    refused = [
        ("too_many_attachments", [{**pdf, "name": f"{n}.pdf"} for n in range(11)]),
        ("attachment_type", [{**pdf, "name": "a.exe"}]),
        ("attachment_type", [{**pdf, "media_type": "application/x-msdownload"}]),
        ("attachment_name", [pdf, pdf]),
        (
            "attachments_too_large",
            [{**pdf, "content_base64": half}, {**pdf, "name": "b.pdf", "content_base64": half}],
        ),
    ]
    async with httpx.AsyncClient(base_url=eadrese.url, headers=NO_FAULT) as http:
        answers = [
            (
                reason,
                await http.post(
                    "/v1/messages",
                    json={**body, "attachments": attachments},
                    headers={"Idempotency-Key": f"key-{n}"},
                ),
            )
            for n, (reason, attachments) in enumerate(refused)
        ]
        garbled = await http.post(
            "/v1/messages",
            json={**body, "attachments": [{**pdf, "content_base64": "not base64!"}]},
            headers={"Idempotency-Key": "4"},
        )
        keyless = await http.post("/v1/messages", json=body)
        long = await http.post(
            "/v1/messages", json={**body, "subject": "x" * 251}, headers={"Idempotency-Key": "3"}
        )
    for reason, answer in answers:
        assert answer.status_code == 422 and answer.json()["error"] == reason, reason
    assert garbled.status_code == 400 and garbled.json()["error"] == "invalid_request"
    assert keyless.status_code == 400 and keyless.json()["error"] == "missing_idempotency_key"
    assert long.status_code == 400 and long.json()["error"] == "invalid_request"
    assert eadrese.mailbox == []


async def test_another_refusal_is_raised(eadrese: EAdrese, client: EAdreseClient) -> None:
    with pytest.raises(Refused) as caught:
        await client.send(ACTIVE, outgoing(subject="x" * 251))
    assert caught.value.status == 400 and caught.value.error == "invalid_request"
    assert not leaks(str(caught.value))
    assert eadrese.mailbox == []


async def test_notifications_follow_sent_messages(eadrese: EAdrese, client: EAdreseClient) -> None:
    empty = await client.notifications(0)
    assert empty == NotificationPage(notifications=(), last=0)
    first = await client.send(ACTIVE, outgoing("k-1"))
    opened = await client.send(OTHER_ACTIVE, outgoing("k-2", subject="Offer [opened]"))
    assert isinstance(first, Accepted) and isinstance(opened, Accepted)
    page = await client.notifications(0)
    assert [(n.seq, n.message_id, n.kind) for n in page.notifications] == [
        (1, first.provider_message_id, "delivered_to_mailbox"),
        (2, opened.provider_message_id, "delivered_to_mailbox"),
        (3, opened.provider_message_id, "opened"),
    ]
    assert page.last == 3
    assert all(n.at == first.at for n in page.notifications)
    paged = await client.notifications(1, limit=1)
    assert [n.seq for n in paged.notifications] == [2] and paged.last == 2
    assert await client.notifications(3) == NotificationPage(notifications=(), last=3)


async def test_magic_broken_mailbox_stays_unavailable(eadrese: EAdrese) -> None:
    retried: list[BaseException] = []
    async with EAdreseClient(eadrese.url, policy=FAST, on_retry=retried.append) as port:
        with pytest.raises(UnavailableError, match="500") as sending:
            await port.send(BROKEN, outgoing())
        with pytest.raises(UnavailableError) as checking:
            await port.is_active(BROKEN)
    assert len(retried) == 2 * (FAST.attempts - 1)
    assert eadrese.mailbox == []
    for error in (sending.value, checking.value, *retried):
        assert not leaks(str(error))


@every_fault()
async def test_every_fault_fails_transiently(
    faults: Faults, timeout: float, error: type[Exception]
) -> None:
    app = create_app(active=[ACTIVE], faults=faults)
    (caught,) = await each_call_fails(
        app,
        EAdreseClient,
        faults,
        timeout,
        error,
        lambda port: port.send(ACTIVE, outgoing()),
        name="e-adrese",
    )
    assert app.app.state.mailbox == []  # type: ignore[attr-defined]
    assert not leaks(str(caught))


async def test_half_faulted_delivers_each_message_exactly_once() -> None:
    recipients = codes(20)
    faults = Faults.spread(0.5, seed=11, timeout_seconds=0.5, retry_after_seconds=0)
    app = create_app(active=recipients, faults=faults)
    patient = RetryPolicy(attempts=12, initial_wait=0.01, max_wait=0.05, max_seconds=15)
    async with (
        serving(app, name="e-adrese") as served,
        client_from_url(served.url, timeout=0.3, policy=patient) as port,
    ):
        first = [await port.send(code, outgoing(f"offer-{n}")) for n, code in enumerate(recipients)]
        again = [await port.send(code, outgoing(f"offer-{n}")) for n, code in enumerate(recipients)]
    mailbox = app.app.state.mailbox  # type: ignore[attr-defined]
    assert all(isinstance(outcome, Accepted) for outcome in first)
    assert again == first
    assert len(mailbox) == 20
    assert sorted(m["recipient"] for m in mailbox) == sorted(recipients)
    assert faulted(app) > 0


def mocked(*answers: httpx.Response) -> tuple[EAdreseClient, list[httpx.Request]]:
    return mocked_port(EAdreseClient, *answers)


RECEIVED = {"message_id": "m-1", "server_received_at": "2026-05-04T12:30:00+03:00"}


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(201, json={"message_id": "m-1"}),
        httpx.Response(201, json={**RECEIVED, "server_received_at": "2026-05-04T12:30:00"}),
        httpx.Response(201, json={**RECEIVED, "message_id": ""}),
        httpx.Response(201, json=["m-1"]),
        httpx.Response(422, json={"error": "no_idea"}),
        httpx.Response(422, json={"detail": "no reason at all"}),
    ],
    ids=["missing-field", "naive-time", "empty-id", "not-an-object", "unknown-refusal", "no-error"],
)
async def test_a_wrong_shape_send_is_unexpected_and_not_retried(answer: httpx.Response) -> None:
    port, seen = mocked(answer)
    async with port:
        with pytest.raises(UnexpectedAnswer) as caught:
            await port.send(ACTIVE, outgoing())
    assert len(seen) == 1
    assert seen[0].headers["Idempotency-Key"] == "offer:riga:CH-1"
    assert not leaks(str(caught.value))


async def test_other_wrong_shapes_are_unexpected() -> None:
    cases = [
        ("active", httpx.Response(200, json={"active": "yes"})),
        ("active", httpx.Response(200, json={})),
        ("confirmation", httpx.Response(200, json={**RECEIVED, "message_id": "m-2"})),
        ("confirmation", httpx.Response(200, json={"message_id": "m-1"})),
        ("notifications", httpx.Response(200, json={"notifications": [], "last": 7})),
        (
            "notifications",
            httpx.Response(
                200,
                json={
                    "notifications": [
                        {"seq": 6, "message_id": "m-1", "kind": "opened", "at": RECEIVED[k]}
                        for k in ("server_received_at",)
                    ],
                    "last": 6,
                },
            ),
        ),
        (
            "notifications",
            httpx.Response(
                200,
                json={
                    "notifications": [
                        {"seq": 1, "message_id": "m-1", "kind": "read", "at": "2026-05-04T09:00Z"}
                    ],
                    "last": 1,
                },
            ),
        ),
    ]
    for call, answer in cases:
        port, seen = mocked(answer)
        async with port:
            with pytest.raises(UnexpectedAnswer):
                if call == "active":
                    await port.is_active(ACTIVE)
                elif call == "confirmation":
                    await port.confirmation("m-1")
                else:
                    await port.notifications(0)
        assert len(seen) == 1, answer.content


async def test_personal_codes_travel_only_in_bodies() -> None:
    port, seen = mocked(
        httpx.Response(200, json={"active": True}),
        httpx.Response(201, json=RECEIVED),
        httpx.Response(200, json=RECEIVED),
    )
    async with port:
        assert await port.is_active(PersonalCode(ACTIVE)) is True
        sent = await port.send(
            PersonalCode(ACTIVE), outgoing(key="offer-1", reference=f"child {ACTIVE}")
        )
        assert isinstance(sent, Accepted)
        assert sent.at == datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
        assert await port.confirmation("m-1") == sent.at
    check, send, confirm = seen
    for request in seen:
        assert not leaks(str(request.url)) and not leaks(str(request.headers))
    assert ACTIVE in check.content.decode()
    assert ACTIVE in send.content.decode()
    assert b"child ******-*****" in send.content  # never in the provider's reference
    assert confirm.url.path == "/v1/messages/m-1/confirmation"


async def test_mocked_5xx_is_retried_and_masked() -> None:
    port, seen = mocked(
        httpx.Response(503, json={"error": f"down for {ACTIVE}"}),
        httpx.Response(200, json=RECEIVED),
    )
    async with port:
        outcome = await port.send(ACTIVE, outgoing())
    assert outcome == Accepted("m-1", datetime(2026, 5, 4, 9, 30, tzinfo=UTC))
    assert len(seen) == 2

    port, seen = mocked(httpx.Response(202, json=RECEIVED))
    async with port:
        with pytest.raises(InvalidResponse, match="202") as caught:
            await port.send(ACTIVE, outgoing())
    assert len(seen) == FAST.attempts and not leaks(str(caught.value))


@pytest.mark.parametrize(
    ("sent", "notified"),
    [
        (datetime(2026, 11, 13, 10, 0, tzinfo=UTC), date(2026, 11, 17)),  # Friday → Tuesday
        (datetime(2026, 11, 16, 10, 0, tzinfo=UTC), date(2026, 11, 19)),  # 18 Nov a holiday
        (datetime(2026, 12, 22, 10, 0, tzinfo=UTC), date(2026, 12, 28)),  # over Christmas
    ],
    ids=["friday", "holiday", "christmas"],
)
async def test_deemed_notified_from_the_server_time(
    eadrese: EAdrese, client: EAdreseClient, sent: datetime, notified: date
) -> None:
    eadrese.clock.now = sent
    outcome = await client.send(ACTIVE, outgoing())
    assert isinstance(outcome, Accepted) and outcome.at == sent
    law = NoticeLaw()
    assert law.deemed_notified("e_adrese", outcome.at) == notified
    confirmed = await client.confirmation(outcome.provider_message_id)
    assert law.deemed_notified("e_adrese", confirmed) == notified
