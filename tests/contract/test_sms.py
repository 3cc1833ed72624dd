"""Contract of the SMS gateway simulator and its client, over real HTTP on loopback.

Delivery reports travel back over HTTP too: each test that needs them runs a small
receiver app, which can refuse a report once to show that the gateway sends it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.notify.base import Accepted, Outgoing, Rejected
from adapters.notify.sms import DeliveryReport, SmsClient, client_from_url, parse_report
from hub.reliability.retry import (
    InvalidResponse,
    Refused,
    RetryPolicy,
    UnavailableError,
    UnexpectedAnswer,
)
from simulators.faults import FaultInjection, Faults
from simulators.serving import free_port, serving
from simulators.sms.app import MAX_TEXT, PERMANENT_FAILURE, TEMPORARY_FAILURE_ONCE, create_app
from tests.conftest import eventually
from tests.contract.common import FAST, NO_FAULT, PATIENT, each_call_fails, every_fault, faulted
from tests.contract.common import mocked as mocked_port

PHONE = "+37129876543"


def outgoing(n: int = 1, **changes: Any) -> Outgoing:
    fields: dict[str, Any] = {
        "key": f"offer:riga:{n:04d}:sms",
        "subject": "Bērnudārza vieta",
        "text": f"Jūsu bērnam piedāvāta vieta bērnudārzā. Atbildiet portālā. Nr. {n}",
        "reference": f"OF-{n:04d}",
    }
    return Outgoing(**{**fields, **changes})


@dataclass
class Receiver:
    """The hub's side of delivery reports: collects them, refusing chosen ones once."""

    url: str = ""
    reports: list[DeliveryReport] = field(default_factory=list)
    refuse_once: set[str] = field(default_factory=set)
    """References whose first report is answered 503."""
    refused: Counter[str] = field(default_factory=Counter)

    def app(self) -> Starlette:
        async def callback(request: Request) -> JSONResponse:
            report = parse_report(await request.body())
            if report.reference in self.refuse_once and not self.refused[report.reference]:
                self.refused[report.reference] += 1
                return JSONResponse({"error": "busy"}, status_code=503)
            self.reports.append(report)
            return JSONResponse({"received": report.sms_id})

        return Starlette(routes=[Route("/sms/reports", callback, methods=["POST"])])

    @property
    def callback_url(self) -> str:
        return f"{self.url}/sms/reports"

    def by_reference(self) -> dict[str, list[DeliveryReport]]:
        found: dict[str, list[DeliveryReport]] = {}
        for report in self.reports:
            found.setdefault(report.reference, []).append(report)
        return found

    async def wait_for(self, count: int) -> None:
        await eventually(
            lambda: len(self.reports) >= count, timeout=10, what=f"{count} delivery reports"
        )


@dataclass
class Gateway:
    app: FaultInjection
    url: str

    @property
    def sent(self) -> list[Any]:
        return list(self.app.app.state.sent)  # type: ignore[attr-defined]

    def sent_to(self, number: str) -> int:
        return sum(1 for sms in self.sent if sms.to == number)


@pytest.fixture(scope="module")
async def receiving() -> AsyncIterator[Receiver]:
    collected = Receiver()
    async with serving(collected.app(), name="sms-receiver") as served:
        collected.url = served.url
        yield collected


@pytest.fixture
def receiver(receiving: Receiver) -> Receiver:
    """The module's receiver, emptied for the test."""
    receiving.reports.clear()
    receiving.refuse_once.clear()
    receiving.refused.clear()
    return receiving


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    app = create_app(clock=lambda: datetime(2026, 5, 4, 9, 30, tzinfo=UTC), callback_delay=0.01)
    async with serving(app, name="sms") as served:
        yield Gateway(app, served.url)


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[SmsClient]:
    async with client_from_url(gateway.url, policy=FAST) as port:
        assert isinstance(port, SmsClient)
        yield port


async def test_an_sms_is_accepted_then_reported_delivered(
    gateway: Gateway, client: SmsClient, receiver: Receiver
) -> None:
    receiver.refuse_once.add("OF-0001")  # the hub is down the first time the report comes
    outcome = await client.send(PHONE, outgoing(1, callback_url=receiver.callback_url))
    assert isinstance(outcome, Accepted)
    assert outcome.at == datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
    assert not outcome.delivered  # only the report confirms delivery
    assert gateway.sent == [("offer:riga:0001:sms", PHONE, outgoing(1).text, "OF-0001")]

    await receiver.wait_for(1)
    [report] = receiver.reports
    assert (report.sms_id, report.reference, report.status) == (
        outcome.provider_message_id,
        "OF-0001",
        "delivered",
    )
    assert report.delivered and not report.permanent
    assert report.at == datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
    assert receiver.refused["OF-0001"] == 1
    assert gateway.app.app.state.callback_attempts[report.sms_id] == 2  # type: ignore[attr-defined]

    async with httpx.AsyncClient(base_url=gateway.url, headers=NO_FAULT) as http:
        status = await http.get(f"/v1/messages/{report.sms_id}")
        missing = await http.get("/v1/messages/sms-0000")
        health = await http.get("/health")
    assert status.json()["status"] == "delivered" and status.json()["reference"] == "OF-0001"
    assert PHONE not in status.text
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert health.json() == {
        "status": "ok",
        "system": "SMS gateway",
        "messages": 1,
        "clock": "2026-05-04T09:30:00+00:00",  # the time it keeps
    }


async def test_a_receiver_down_for_a_while_gets_the_report_later(gateway: Gateway) -> None:
    late = Receiver()
    app = late.app()
    async with client_from_url(gateway.url, policy=FAST) as port:
        port_number = free_port()
        late.url = f"http://127.0.0.1:{port_number}"
        outcome = await port.send(PHONE, outgoing(1, callback_url=late.callback_url))
    assert isinstance(outcome, Accepted)
    await asyncio.sleep(0.25)  # the report is tried and fails while nothing listens
    attempts = gateway.app.app.state.callback_attempts  # type: ignore[attr-defined]
    assert attempts[outcome.provider_message_id] >= 2
    async with serving(app, port_number, name="late-receiver"):
        await late.wait_for(1)
    assert [r.sms_id for r in late.reports] == [outcome.provider_message_id]


async def test_the_same_key_twice_sends_one_sms(
    gateway: Gateway, client: SmsClient, receiver: Receiver
) -> None:
    first = await client.send(PHONE, outgoing(1, callback_url=receiver.callback_url))
    again = await client.send(PHONE, outgoing(1, callback_url=receiver.callback_url))
    assert isinstance(first, Accepted)
    assert again == first
    assert gateway.sent_to(PHONE) == 1
    await receiver.wait_for(1)
    await asyncio.sleep(0.1)
    assert len(receiver.reports) == 1


async def test_the_same_key_for_another_sms_is_a_conflict(
    gateway: Gateway, client: SmsClient, receiver: Receiver
) -> None:
    await client.send(PHONE, outgoing(1, callback_url=receiver.callback_url))
    other = await client.send("+37129876500", outgoing(1, callback_url=receiver.callback_url))
    changed = await client.send(
        PHONE, outgoing(1, text="Cits teksts", callback_url=receiver.callback_url)
    )
    assert other == changed == Rejected("idempotency_conflict")
    assert len(gateway.sent) == 1


@pytest.mark.parametrize(
    "number", ["+3712987654", "+371298765431", "+37029876543", "29876543", "+371 2987654"]
)
async def test_an_invalid_number_is_rejected_without_the_number_shown(
    gateway: Gateway, client: SmsClient, receiver: Receiver, number: str
) -> None:
    outcome = await client.send(number, outgoing(1, callback_url=receiver.callback_url))
    assert outcome == Rejected("invalid_number")
    assert number not in repr(outcome)
    assert gateway.sent == []
    # the key was not used up: a corrected number goes out under it
    assert isinstance(
        await client.send(PHONE, outgoing(1, callback_url=receiver.callback_url)), Accepted
    )


async def test_a_text_too_long_is_rejected(
    gateway: Gateway, client: SmsClient, receiver: Receiver
) -> None:
    exact = await client.send(
        PHONE, outgoing(1, text="x" * MAX_TEXT, callback_url=receiver.callback_url)
    )
    longer = await client.send(
        PHONE, outgoing(2, text="x" * (MAX_TEXT + 1), callback_url=receiver.callback_url)
    )
    assert isinstance(exact, Accepted)
    assert longer == Rejected("text_too_long")
    assert len(gateway.sent) == 1


async def test_magic_numbers_fail_permanently_or_once(
    gateway: Gateway, client: SmsClient, receiver: Receiver
) -> None:
    dead = await client.send(PERMANENT_FAILURE, outgoing(1, callback_url=receiver.callback_url))
    flaky = await client.send(
        TEMPORARY_FAILURE_ONCE, outgoing(2, callback_url=receiver.callback_url)
    )
    assert isinstance(dead, Accepted) and isinstance(flaky, Accepted)  # accepted, not delivered
    await receiver.wait_for(2)
    reports = receiver.by_reference()
    assert [r.status for r in reports["OF-0001"]] == ["permanent_failure"]
    assert reports["OF-0001"][0].permanent
    assert [r.status for r in reports["OF-0002"]] == ["temporary_failure"]
    assert not reports["OF-0002"][0].permanent

    # the same key again is still the first SMS (no new send); a new key goes out again
    again = await client.send(
        TEMPORARY_FAILURE_ONCE, outgoing(2, callback_url=receiver.callback_url)
    )
    assert again == flaky
    retried = await client.send(
        TEMPORARY_FAILURE_ONCE,
        outgoing(2, key="offer:riga:0002:sms:2", callback_url=receiver.callback_url),
    )
    assert isinstance(retried, Accepted) and retried != flaky
    await receiver.wait_for(3)
    assert [r.status for r in receiver.by_reference()["OF-0002"]] == [
        "temporary_failure",
        "delivered",
    ]
    assert gateway.sent_to(TEMPORARY_FAILURE_ONCE) == 2
    assert gateway.sent_to(PERMANENT_FAILURE) == 1
    for report in receiver.reports:
        assert "2000000" not in (report.detail or "")


async def test_above_the_rate_the_gateway_answers_429(receiver: Receiver) -> None:
    # One SMS in the bucket, a new one every 20 s: the second send is over the rate however
    # slowly the test runs.
    app = create_app(rate_per_second=0.05, callback_delay=0.01)
    once = RetryPolicy(attempts=1, initial_wait=0.01, max_wait=0.05, max_seconds=5)
    async with serving(app, name="sms") as served:
        async with client_from_url(served.url, policy=once) as port:
            for n in range(1):
                assert isinstance(
                    await port.send(PHONE, outgoing(n, callback_url=receiver.callback_url)),
                    Accepted,
                )
            with pytest.raises(UnavailableError, match="429") as caught:
                await port.send(PHONE, outgoing(2, callback_url=receiver.callback_url))
        async with httpx.AsyncClient(base_url=served.url, headers=NO_FAULT) as http:
            raw = await http.post(
                "/v1/messages",
                json={"to": PHONE, "text": "t", "reference": "r", "callback_url": "http://x"},
                headers={"Idempotency-Key": "k"},
            )
    assert caught.value.retry_after == 1
    assert PHONE not in str(caught.value)
    assert raw.status_code == 429 and raw.headers["Retry-After"] == "1"
    assert raw.json()["error"] == "rate_limited"
    assert len(app.app.state.sent) == 1  # type: ignore[attr-defined]


async def test_a_patient_client_gets_everything_through_the_rate_limit(
    receiver: Receiver,
) -> None:
    app = create_app(rate_per_second=4, callback_delay=0.01)
    async with serving(app, name="sms") as served:
        async with client_from_url(served.url, policy=PATIENT) as port:
            outcomes = await asyncio.gather(
                *(
                    port.send(PHONE, outgoing(n, callback_url=receiver.callback_url))
                    for n in range(7)
                )
            )
        await receiver.wait_for(7)
    assert all(isinstance(outcome, Accepted) for outcome in outcomes)
    assert len({o.provider_message_id for o in outcomes}) == 7  # type: ignore[union-attr]
    assert len(app.app.state.sent) == 7  # type: ignore[attr-defined]
    assert sorted(r.reference for r in receiver.reports) == [f"OF-{n:04d}" for n in range(7)]


@every_fault()
async def test_every_fault_fails_transiently(
    faults: Faults, timeout: float, error: type[Exception]
) -> None:
    app = create_app(faults=faults)
    (caught,) = await each_call_fails(
        app,
        SmsClient,
        faults,
        timeout,
        error,
        lambda port: port.send(PHONE, outgoing(1, callback_url="http://127.0.0.1:9/none")),
        name="sms",
    )
    assert app.app.state.sent == []  # type: ignore[attr-defined]
    assert PHONE not in str(caught) and PHONE[-8:] not in str(caught)


async def test_half_faulted_delivers_each_sms_exactly_once(receiver: Receiver) -> None:
    faults = Faults.spread(0.5, seed=11, timeout_seconds=0.5, retry_after_seconds=0)
    app = create_app(faults, rate_per_second=1000, callback_delay=0.01)
    phones = [f"+3712{n:07d}" for n in range(100, 120)]
    async with serving(app, name="sms") as served:
        async with client_from_url(served.url, timeout=0.3, policy=PATIENT) as port:
            outcomes = await asyncio.gather(
                *(
                    port.send(phone, outgoing(n, callback_url=receiver.callback_url))
                    for n, phone in enumerate(phones)
                )
            )
        await receiver.wait_for(20)
        await asyncio.sleep(0.1)
    assert all(isinstance(outcome, Accepted) for outcome in outcomes)
    ids = [o.provider_message_id for o in outcomes]  # type: ignore[union-attr]
    sent = app.app.state.sent  # type: ignore[attr-defined]
    assert Counter(sms.to for sms in sent) == Counter(phones)  # one SMS per number
    assert sorted(r.sms_id for r in receiver.reports) == sorted(ids)  # one report per SMS
    assert all(r.status == "delivered" for r in receiver.reports)
    assert faulted(app) > 0


def mocked(answer: httpx.Response) -> tuple[SmsClient, list[httpx.Request]]:
    return mocked_port(SmsClient, answer)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(202, json={"sms_id": "sms-1"}),
        httpx.Response(202, json={"sms_id": "", "accepted_at": "2026-05-04T09:30:00Z"}),
        httpx.Response(202, json={"sms_id": "sms-1", "accepted_at": "2026-05-04T09:30:00"}),
        httpx.Response(202, json=["sms-1"]),
        httpx.Response(422, json={"error": "no_idea"}),
        httpx.Response(409, json={"detail": "conflict"}),
    ],
    ids=["missing-field", "empty-id", "naive-time", "not-an-object", "unknown-refusal", "no-error"],
)
async def test_wrong_shape_is_unexpected_and_not_retried(answer: httpx.Response) -> None:
    port, seen = mocked(answer)
    async with port:
        with pytest.raises(UnexpectedAnswer) as caught:
            await port.send(PHONE, outgoing(1, callback_url="http://hub.test/sms/reports"))
    assert len(seen) == 1
    assert PHONE not in str(caught.value) and PHONE[-8:] not in str(caught.value)
    request = seen[0]
    assert request.headers["Idempotency-Key"] == "offer:riga:0001:sms"
    assert PHONE not in str(request.url) and "29876543" not in str(request.url)
    assert json.loads(request.content)["to"] == PHONE


async def test_another_refusal_is_refused_without_the_number() -> None:
    port, seen = mocked(httpx.Response(400, json={"error": "invalid_request"}))
    async with port:
        with pytest.raises(Refused) as caught:
            await port.send(PHONE, outgoing(1, callback_url="http://hub.test/sms/reports"))
    assert caught.value.status == 400 and len(seen) == 1
    assert PHONE not in str(caught.value) and "29876543" not in str(caught.value)


async def test_another_2xx_is_broken_and_retried() -> None:
    port, seen = mocked(
        httpx.Response(201, json={"sms_id": "sms-1", "accepted_at": "2026-05-04T09:30:00Z"})
    )
    async with port:
        with pytest.raises(InvalidResponse, match="201"):
            await port.send(PHONE, outgoing(1, callback_url="http://hub.test/sms/reports"))
    assert len(seen) == FAST.attempts


async def test_retries_log_no_phone_number() -> None:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    logger = logging.getLogger("hub.reliability.retry")
    logger.addHandler(handler)
    try:
        port, _ = mocked(httpx.Response(503, json={"error": "down", "to": PHONE}))
        async with port:
            with pytest.raises(UnavailableError) as caught:
                await port.send(PHONE, outgoing(1, callback_url="http://hub.test/sms/reports"))
    finally:
        logger.removeHandler(handler)
    assert len(records) == FAST.attempts - 1
    shown = " ".join(f"{r.getMessage()} {r.__dict__}" for r in records) + str(caught.value)
    assert "29876543" not in shown


async def test_mocked_acceptance_is_read() -> None:
    port, _ = mocked(
        httpx.Response(
            200,
            json={"sms_id": "sms-7", "accepted_at": "2026-05-04T12:30:00+03:00", "extra": 1},
        )
    )
    async with port:
        outcome = await port.send(PHONE, outgoing(1, callback_url="http://hub.test/sms/reports"))
    assert outcome == Accepted("sms-7", datetime(2026, 5, 4, 9, 30, tzinfo=UTC))


def test_a_report_is_parsed_from_json_or_bytes() -> None:
    body = {
        "sms_id": "sms-1",
        "reference": "OF-0001",
        "status": "temporary_failure",
        "at": "2026-05-04T09:30:00Z",
        "detail": "handset unreachable",
        "extra": True,
    }
    report = parse_report(body)
    assert parse_report(json.dumps(body).encode()) == report == parse_report(json.dumps(body))
    assert report.status == "temporary_failure" and not report.delivered
    assert report.at == datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
    assert parse_report({**body, "detail": None}).detail is None


@pytest.mark.parametrize(
    "body",
    [
        {"sms_id": "sms-1", "reference": "OF-1", "status": "read", "at": "2026-05-04T09:30:00Z"},
        {"sms_id": "sms-1", "reference": "OF-1", "status": "delivered"},
        {"sms_id": "sms-1", "reference": "OF-1", "status": "delivered", "at": "2026-05-04"},
        ["sms-1"],
        b"{not json",
        f'{{"sms_id": "{PHONE}", "status": 3}}',
    ],
    ids=["unknown-status", "no-time", "naive-time", "not-an-object", "not-json", "leaky"],
)
def test_a_wrong_report_is_unexpected_and_shows_no_values(body: Any) -> None:
    with pytest.raises(UnexpectedAnswer, match="delivery report") as caught:
        parse_report(body)
    assert PHONE not in str(caught.value) and "29876543" not in str(caught.value)
