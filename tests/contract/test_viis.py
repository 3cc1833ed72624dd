"""Contract tests of the VIIS adapter against the VIIS simulator, served for real over HTTP.

The client and the simulator are written against the same protocol but share
no code; these tests hold them to it, fault by fault, and check the adapter's
handlers turn the answers into the right facts on the bus.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import re
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from adapters.viis import Enrolled, EnrolmentRefusal, ViisClient, client_from_url, service
from adapters.viis.service import EnrollmentChecks, EnrollmentRegistrations
from hub.errors import PermanentError
from hub.reliability.consumer import Unit
from hub.reliability.retry import (
    InvalidResponse,
    Refused,
    RetryPolicy,
    UnavailableError,
    UnexpectedAnswer,
)
from schemas.base import Message
from schemas.enrollment import CheckEnrollment, EnrollmentCheckFailed, RegisterEnrollment
from schemas.topics import ALLOCATION, VIIS
from schemas.values import PersonalCode
from simulators.faults import FaultInjection, Faults
from simulators.municipality import Child, SyntheticMunicipality, old_format_code
from simulators.serving import serving
from simulators.viis.app import BROKEN_INSTITUTION, create_app
from tests.contract.common import FAST, every_fault, mocked

TOWN = SyntheticMunicipality("riga", seed=7, children=200, institutions=5, admission_year=2026)
AS_OF = date(2026, 9, 1)
START = date(2026, 9, 1)
FACTS = "viis.enrollment.facts.v1"
NO_FAULTS = Faults()


def _fast(attempts: int = FAST.attempts) -> RetryPolicy:
    return dataclasses.replace(FAST, attempts=attempts)


def _attending() -> Child:
    return next(c for c in TOWN.children if c.personal_code in TOWN.enrolments)


def _with_siblings() -> Child:
    return next(
        c for c in TOWN.children if c.sibling_codes and c.personal_code not in TOWN.enrolments
    )


def _free(n: int = 0) -> Child:
    """The n-th child who attends nowhere and has no attending sibling."""
    free = [c for c in TOWN.children if c.personal_code not in TOWN.enrolments]
    return [c for c in free if not c.sibling_codes][n]


def _unknown_code() -> str:
    known = {c.personal_code for c in TOWN.children} | set(TOWN.enrolments)
    rng = random.Random(99)
    while (code := old_format_code(date(2022, 5, 5), rng)) in known:
        pass
    return code


def _institution() -> str:
    return TOWN.institutions[0].institution_id


def _group() -> str:
    return TOWN.institutions[0].groups[0].code


def _every_code() -> set[str]:
    codes = {c.personal_code for c in TOWN.children} | set(TOWN.enrolments)
    return codes | {code.replace("-", "") for code in codes}


def assert_no_personal_code(error: BaseException) -> None:
    text = str(error)
    assert not re.search(r"\d{6}-?\d{5}", text), text
    assert not any(code in text for code in _every_code()), text


@contextlib.asynccontextmanager
async def viis(
    faults: Faults = NO_FAULTS,
    *,
    timeout: float = 2.0,
    attempts: int = 3,
    on_retry: Callable[[BaseException], None] | None = None,
) -> AsyncIterator[tuple[ViisClient, FaultInjection]]:
    """The simulator served on loopback, and a client pointed at it."""
    app = create_app(TOWN, faults)
    async with serving(app, name="viis") as served:
        client = client_from_url(served.url, timeout=timeout, policy=_fast(attempts))
        if on_retry is not None:
            client.add_retry_listener(on_retry)
        try:
            yield client, app
        finally:
            await client.close()


def _check(child: Child, municipality: str = "riga") -> CheckEnrollment:
    return CheckEnrollment.new(
        producer=ALLOCATION,
        municipality=municipality,
        child_ref=child.ref,
        child_personal_code=child.personal_code,
        sibling_personal_codes=child.sibling_codes,
        as_of=AS_OF,
    )


def _register(
    child: Child, institution_id: str | None = None, offer_id: UUID | None = None
) -> RegisterEnrollment:
    return RegisterEnrollment.new(
        producer=ALLOCATION,
        municipality="riga",
        child_ref=child.ref,
        child_personal_code=child.personal_code,
        offer_id=offer_id or uuid4(),
        institution_id=institution_id or _institution(),
        group_code=_group(),
        start_date=START,
    )


def _emitted(unit: Unit, cause: Message) -> dict[str, Any]:
    """The one message on ``unit``, checked to continue ``cause``'s flow and to hide codes."""
    assert len(unit.outbox) == 1 and not unit.statements
    row = unit.outbox[0]
    assert row.topic == FACTS
    assert row.key == cause.child_ref.encode()  # type: ignore[attr-defined]
    assert not any(code.encode() in row.value for code in _every_code())
    body: dict[str, Any] = json.loads(row.value)
    assert body["correlation_id"] == str(cause.correlation_id)
    assert body["causation_id"] == str(cause.event_id)
    assert body["producer"] == VIIS and body["municipality"] == cause.municipality
    return body


# --------------------------------------------------------------------------- attendance


async def test_attendance_of_attending_free_and_unknown_children() -> None:
    attending, free, unknown = _attending(), _free(), _unknown_code()
    asked = [attending.personal_code, free.personal_code, unknown]
    enrolment = TOWN.enrolments[attending.personal_code]
    async with viis() as (client, _):
        found = await client.attendance(asked, AS_OF)
    assert list(found) == [PersonalCode(c) for c in asked]
    here = found[PersonalCode(attending.personal_code)]
    assert here is not None
    assert here.institution_id == enrolment.institution_id
    assert here.group_code == enrolment.group_code
    assert found[PersonalCode(free.personal_code)] is None
    assert found[PersonalCode(unknown)] is None


async def test_attendance_of_siblings() -> None:
    child = _with_siblings()
    async with viis() as (client, _):
        found = await client.attendance([child.personal_code, *child.sibling_codes], AS_OF)
    assert found[PersonalCode(child.personal_code)] is None
    for code in child.sibling_codes:
        sibling = found[PersonalCode(code)]
        assert sibling is not None
        assert sibling.institution_id == TOWN.enrolments[code].institution_id


async def test_attendance_of_nobody_asks_nothing() -> None:
    client = client_from_url("http://viis.invalid", policy=_fast())
    assert await client.attendance([], AS_OF) == {}
    await client.close()


# --------------------------------------------------------------------------- enrolments


async def test_enrolment_is_recorded_and_attended_from_its_start() -> None:
    child = _free()
    async with viis() as (client, _):
        outcome = await client.enrol(child.personal_code, _institution(), _group(), START, uuid4())
        before = await client.attendance([child.personal_code], date(2026, 8, 31))
        after = await client.attendance([child.personal_code], START)
    assert isinstance(outcome, Enrolled)
    assert outcome.enrolment_id and outcome.registered_at.tzinfo is not None
    assert before[PersonalCode(child.personal_code)] is None
    attends = after[PersonalCode(child.personal_code)]
    assert attends is not None and attends.institution_id == _institution()


async def test_enrolling_twice_is_refused_as_already_enrolled() -> None:
    child = _free()
    async with viis() as (client, _):
        first = await client.enrol(child.personal_code, _institution(), _group(), START, uuid4())
        second = await client.enrol(child.personal_code, _institution(), _group(), START, uuid4())
        seeded = await client.enrol(
            _attending().personal_code, _institution(), _group(), START, "r"
        )
    assert isinstance(first, Enrolled)
    assert second == seeded
    assert isinstance(second, EnrolmentRefusal) and second.reason == "already_enrolled"


async def test_the_same_request_again_answers_the_same_enrolment() -> None:
    child, request_id = _free(), uuid4()
    async with viis() as (client, _):
        first = await client.enrol(child.personal_code, _institution(), _group(), START, request_id)
        again = await client.enrol(child.personal_code, _institution(), _group(), START, request_id)
    assert isinstance(first, Enrolled)
    assert again == first


async def test_unknown_institution_is_refused() -> None:
    async with viis() as (client, _):
        outcome = await client.enrol(_free().personal_code, "PII-404", _group(), START, uuid4())
    assert isinstance(outcome, EnrolmentRefusal)
    assert outcome.reason == "unknown_institution" and "PII-404" in outcome.detail


async def test_broken_institution_is_unavailable_after_every_attempt() -> None:
    retried: list[BaseException] = []
    async with viis(on_retry=retried.append) as (client, _):
        with pytest.raises(UnavailableError) as raised:
            await client.enrol(_free().personal_code, BROKEN_INSTITUTION, _group(), START, uuid4())
    assert len(retried) == 2  # three attempts
    assert "500" in str(raised.value)
    assert_no_personal_code(raised.value)


# --------------------------------------------------------------------------- faults


def _call(operation: str, client: ViisClient) -> Any:
    child = _free()
    if operation == "attendance":
        return client.attendance([child.personal_code, *_with_siblings().sibling_codes], AS_OF)
    return client.enrol(child.personal_code, _institution(), _group(), START, uuid4())


@pytest.mark.parametrize("operation", ["attendance", "enrol"])
@every_fault(client_timeout=2.0)
async def test_every_fault_fails_transiently_after_the_retries(
    operation: str, faults: Faults, timeout: float, error: type[Exception]
) -> None:
    expected = error
    retried: list[BaseException] = []
    async with viis(faults, timeout=timeout, on_retry=retried.append) as (client, app):
        with pytest.raises(expected) as raised:
            await _call(operation, client)
    assert [type(e) for e in retried] == [expected, expected]
    assert sum(app.injected.values()) == 3
    if faults.rate_limit_rate:
        assert isinstance(raised.value, UnavailableError) and raised.value.retry_after == 0
    assert_no_personal_code(raised.value)


async def test_half_the_requests_faulted_still_succeeds_with_enough_attempts() -> None:
    faults = Faults.spread(0.5, seed=11, timeout_seconds=1, retry_after_seconds=0)
    async with viis(faults, timeout=0.3, attempts=15) as (client, app):
        for child in TOWN.children[:8]:
            found = await client.attendance([child.personal_code], AS_OF)
            assert list(found) == [PersonalCode(child.personal_code)]
        outcomes = [
            await client.enrol(_free(n).personal_code, _institution(), _group(), START, uuid4())
            for n in range(4)
        ]
    assert all(isinstance(o, Enrolled) for o in outcomes)
    assert {"error", "rate_limit", "timeout", "malformed"} & set(app.injected)
    assert app.injected["none"] == 12


async def test_health_and_openapi_are_never_faulted() -> None:
    async with (
        serving(create_app(TOWN, Faults(error_rate=1))) as served,
        httpx.AsyncClient(base_url=served.url) as http,
    ):
        health = await http.get("/health")
        spec = (await http.get("/openapi.json")).json()
        search = await http.post("/v1/attendance/search", json={"personal_codes": []})
    assert health.status_code == 200 and health.json() == {"status": "ok", "system": "VIIS"}
    assert spec["info"]["title"] == "VIIS simulator"
    assert {"/v1/attendance/search", "/v1/enrolments"} <= set(spec["paths"])
    assert {"AttendanceSearch", "EnrolmentRequest", "ErrorBody"} <= set(
        spec["components"]["schemas"]
    )
    assert search.status_code == 503


# --------------------------------------------------------------------------- protocol breaks


def _mock(status: int, body: Any) -> tuple[ViisClient, list[httpx.Request]]:
    return mocked(ViisClient, httpx.Response(status, json=body))


@pytest.mark.parametrize(
    "body",
    [
        {"rows": []},
        {"results": "none"},
        {"results": [{"personal_code": "not a code", "institution_id": None, "group_code": None}]},
        {"results": [{"personal_code": "PLACEHOLDER", "institution_id": 12, "group_code": None}]},
        {"results": [{"personal_code": "PLACEHOLDER", "group_code": None}]},
        {"results": []},
    ],
    ids=["no-results", "results-not-a-list", "bad-code", "bad-id", "missing-id", "code-left-out"],
)
async def test_attendance_of_the_wrong_shape_is_unexpected(body: dict[str, Any]) -> None:
    code = _attending().personal_code
    client, seen = _mock(200, json.loads(json.dumps(body).replace("PLACEHOLDER", code)))
    with pytest.raises(UnexpectedAnswer) as raised:
        await client.attendance([code], AS_OF)
    await client.close()
    assert len(seen) == 1  # permanent: not retried
    assert_no_personal_code(raised.value)


@pytest.mark.parametrize(
    "body",
    [
        {"id": "VIIS-1"},
        {"enrolment_id": "VIIS-1", "registered_at": "2026-05-01T10:00:00"},
        {"enrolment_id": "", "registered_at": "2026-05-01T10:00:00Z"},
        ["VIIS-1"],
    ],
    ids=["no-id", "naive-time", "empty-id", "a-list"],
)
async def test_enrolment_of_the_wrong_shape_is_unexpected(body: Any) -> None:
    client, seen = _mock(201, body)
    with pytest.raises(UnexpectedAnswer) as raised:
        await client.enrol(_free().personal_code, _institution(), _group(), START, uuid4())
    await client.close()
    assert len(seen) == 1
    assert_no_personal_code(raised.value)


@pytest.mark.parametrize(
    ("status", "body"),
    [(404, {"detail": "Not Found"}), (409, {"error": "something_else"}), (422, {"detail": []})],
)
async def test_other_client_errors_are_refused_not_published(status: int, body: Any) -> None:
    client, seen = _mock(status, body)
    with pytest.raises(Refused) as raised:
        await client.enrol(_free().personal_code, _institution(), _group(), START, uuid4())
    await client.close()
    assert raised.value.status == status and len(seen) == 1
    assert_no_personal_code(raised.value)


async def test_an_enrolment_answered_with_another_2xx_is_broken_and_retried() -> None:
    client, seen = _mock(202, {"enrolment_id": "VIIS-1", "registered_at": "2026-05-01T10:00:00Z"})
    with pytest.raises(InvalidResponse, match="202"):
        await client.enrol(_free().personal_code, _institution(), _group(), START, uuid4())
    await client.close()
    assert len(seen) == 3  # transient: every attempt


async def test_an_enrolment_answered_200_is_the_earlier_one() -> None:
    client, _ = _mock(200, {"enrolment_id": "VIIS-1", "registered_at": "2026-05-01T10:00:00Z"})
    outcome = await client.enrol(_free().personal_code, _institution(), _group(), START, uuid4())
    await client.close()
    assert isinstance(outcome, Enrolled) and outcome.enrolment_id == "VIIS-1"


async def test_personal_codes_travel_only_in_bodies() -> None:
    client, seen = _mock(201, {"enrolment_id": "VIIS-1", "registered_at": "2026-05-01T10:00:00Z"})
    child = _free()
    await client.enrol(child.personal_code, _institution(), _group(), START, uuid4())
    await client.close()
    request = seen[0]
    assert child.personal_code not in str(request.url)
    assert not any(child.personal_code in value for value in request.headers.values())
    assert json.loads(request.content)["personal_code"] == child.personal_code


# --------------------------------------------------------------------------- handlers


async def test_check_publishes_attendance_and_sibling_institutions() -> None:
    child = _with_siblings()
    message = _check(child)
    async with viis() as (client, _):
        checks = EnrollmentChecks("viis.enrollment.checks.v1", client, "riga")
        unit = Unit()
        checks.apply(unit, message, await checks.fetch(message))
    body = _emitted(unit, message)
    siblings = tuple(dict.fromkeys(TOWN.enrolments[c].institution_id for c in child.sibling_codes))
    assert body["event_type"] == "EnrollmentChecked"
    assert body["child_ref"] == child.ref and body["as_of"] == AS_OF.isoformat()
    assert body["attending_institution_id"] is None
    assert tuple(body["sibling_institution_ids"]) == siblings


async def test_check_of_an_attending_child_names_the_institution_and_group() -> None:
    child = _attending()
    enrolment = TOWN.enrolments[child.personal_code]
    message = _check(child)
    async with viis() as (client, _):
        spec = service(client, "riga")
        checks = spec.handlers[0]
        unit = Unit()
        checks.apply(unit, message, await checks.fetch(message))
    body = _emitted(unit, message)
    assert body["attending_institution_id"] == enrolment.institution_id
    assert body["attending_group_code"] == enrolment.group_code


async def test_registration_publishes_registered_then_refused() -> None:
    child = _free()
    first, second = _register(child), _register(child)
    # The allocation service asks again for the same offer: a new message, the same offer id.
    reissued = _register(child, offer_id=first.offer_id)
    assert reissued.event_id != first.event_id
    messages = (first, first, reissued, second)
    async with viis() as (client, _):
        registrations = EnrollmentRegistrations("viis.enrollment.registrations.v1", client, None)
        units = [Unit() for _ in messages]
        # The first message twice (a redelivery), then re-issued: one enrolment, published alike.
        for unit, message in zip(units, messages, strict=True):
            registrations.apply(unit, message, await registrations.fetch(message))
    registered, redelivered, again, refused = (
        _emitted(u, m) for u, m in zip(units, messages, strict=True)
    )
    assert {registered["event_type"], redelivered["event_type"], again["event_type"]} == {
        "EnrollmentRegistered"
    }
    assert (
        registered["viis_enrollment_id"]
        == redelivered["viis_enrollment_id"]
        == again["viis_enrollment_id"]
    )
    assert registered["offer_id"] == again["offer_id"] == str(first.offer_id)
    assert registered["institution_id"] == _institution()
    assert refused["event_type"] == "EnrollmentRefused"
    assert refused["reason"] == "already_enrolled" and refused["offer_id"] == str(second.offer_id)


async def test_the_enrolment_request_id_is_the_offer_id() -> None:
    client, seen = _mock(201, {"enrolment_id": "VIIS-1", "registered_at": "2026-05-01T10:00:00Z"})
    message = _register(_free())
    await service(client).handlers[1].fetch(message)
    await client.close()
    assert json.loads(seen[0].content)["request_id"] == str(message.offer_id)


async def test_registration_at_an_unknown_institution_publishes_refused() -> None:
    message = _register(_free(), institution_id="PII-404")
    async with viis() as (client, _):
        registrations = service(client).handlers[1]
        unit = Unit()
        registrations.apply(unit, message, await registrations.fetch(message))
    body = _emitted(unit, message)
    assert body["event_type"] == "EnrollmentRefused" and body["reason"] == "unknown_institution"


async def test_handlers_let_failures_through_without_personal_codes() -> None:
    register = _register(_free(), institution_id=BROKEN_INSTITUTION)
    check = _check(_with_siblings())
    async with viis(Faults(malformed_rate=1)) as (client, _):
        spec = service(client, "riga")
        with pytest.raises(InvalidResponse) as malformed:
            await spec.handlers[0].fetch(check)
    async with viis() as (client, _):
        with pytest.raises(UnavailableError) as broken:
            await service(client).handlers[1].fetch(register)
    for raised in (malformed, broken):
        assert_no_personal_code(raised.value)


async def test_messages_of_another_municipality_are_skipped() -> None:
    client, seen = _mock(500, {})
    spec = service(client, "liepaja")
    assert [h.topic.name for h in spec.handlers] == [
        "viis.enrollment.checks.v1",
        "viis.enrollment.registrations.v1",
    ]
    check, register = _check(_free()), _register(_free())
    for handler, message in zip(spec.handlers, (check, register), strict=True):
        unit = Unit()
        handler.apply(unit, message, await handler.fetch(message))
        assert unit.outbox == []
    assert seen == []
    await client.close()


async def test_the_service_counts_retries_with_the_runners_counter() -> None:
    client, seen = _mock(503, {})
    spec = service(client)
    assert spec.clients == (client,)
    counted: list[BaseException] = []
    for observed in spec.clients:  # what the runner does once the service starts
        observed.add_retry_listener(counted.append)
    with pytest.raises(UnavailableError):
        await spec.handlers[1].fetch(_register(_free()))
    await client.close()
    assert len(seen) == 3 and len(counted) == 2
    assert all(isinstance(e, UnavailableError) for e in counted)


# --------------------------------------------------------------------------- given up


def _given_up(error: BaseException, municipality: str = "riga") -> list[EnrollmentCheckFailed]:
    client, _ = _mock(500, {})
    checks = service(client, municipality).handlers[0]
    message = _check(_with_siblings())
    emitted = list(checks.given_up(message, error))
    for failed in emitted:
        assert isinstance(failed, EnrollmentCheckFailed)
        assert failed.causation_id == message.event_id
        assert failed.correlation_id == message.correlation_id
        assert failed.child_ref == message.child_ref and failed.producer == VIIS
    return emitted  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("error", "reason", "permanent"),
    [
        (UnavailableError("VIIS answered 503"), "unavailable", False),
        (InvalidResponse("VIIS answered with no JSON"), "invalid_response", False),
        (UnexpectedAnswer("VIIS answered with wrong fields"), "invalid_response", True),
        (Refused("VIIS refused with 403", status=403), "refused", True),
        (PermanentError("something else"), "unavailable", True),
    ],
    ids=["unavailable", "broken", "wrong-shape", "refused", "other"],
)
def test_a_check_given_up_publishes_check_failed(
    error: BaseException, reason: str, permanent: bool
) -> None:
    (failed,) = _given_up(error)
    assert (failed.reason, failed.permanent) == (reason, permanent)
    assert type(error).__name__ in failed.detail and str(error) in failed.detail


def test_a_check_given_up_masks_personal_codes() -> None:
    (failed,) = _given_up(UnexpectedAnswer("VIIS answered about 161175-19997 " + "x" * 600))
    assert "161175-19997" not in failed.detail and "******-*****" in failed.detail
    assert len(failed.detail) == 500
    assert not any(code in failed.model_dump_json() for code in _every_code())


def test_a_check_of_another_municipality_given_up_publishes_nothing() -> None:
    assert _given_up(UnavailableError("down"), municipality="liepaja") == []
