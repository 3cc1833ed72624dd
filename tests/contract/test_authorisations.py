"""Contract tests of the authorisations adapter against the register of authorisations
simulator.

The client and the simulator are written against the same protocol but share no code;
these tests hold them to it. Most run in process (the simulator's ASGI app behind the
client's transport); the fault matrix runs over loopback HTTP, where timeouts are real.
The handler tests check the register's answers become the right events, and a check that
cannot be answered a dead letter and ``AuthorisationCheckFailed``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from adapters.authorisations import AuthorisationsClient, Verification, service
from adapters.authorisations.client import PRESCHOOL, VERIFY, Status
from adapters.authorisations.service import CHECKS, AuthorisationChecks
from hub.errors import PermanentError
from hub.reliability.consumer import BatchProcessor, Incoming, RetrySchedule, Unit
from hub.reliability.deadletters import header
from hub.reliability.metrics import Metrics
from hub.reliability.retry import (
    InvalidResponse,
    Refused,
    RetryPolicy,
    UnavailableError,
    UnexpectedAnswer,
)
from hub.reliability.store import Store
from schemas.authorisations import (
    Authorisation,
    AuthorisationCheckFailed,
    CheckAuthorisation,
    RefusalReason,
)
from schemas.topics import ALLOCATION, AUTHORISATIONS, DEAD_LETTERS
from simulators.authorisations.app import BROKEN_NUMBER, create_app
from simulators.authorisations.register import (
    STATUSES,
    AuthorisationCase,
    Seeded,
    seeded,
)
from simulators.faults import FaultInjection, Faults
from simulators.municipality import SyntheticMunicipality
from tests.contract.common import FAST, each_call_fails, every_fault, mocked

TOWN = SyntheticMunicipality("riga", seed=7, children=200, institutions=3, admission_year=2026)
SEEDED = seeded(TOWN)
RESULTS = "authorisations.results.v1"
REFUSALS = [s for s in STATUSES if s != "valid"]


def _case(expected: str, n: int = 0) -> AuthorisationCase:
    return SEEDED.of(expected)[n]  # type: ignore[arg-type]


def _every_code() -> set[str]:
    codes = {c.personal_code for c in TOWN.children}
    codes |= {g.personal_code for c in TOWN.children for g in c.guardians}
    codes |= {a.agent_personal_code for a in SEEDED.authorisations}
    codes |= {c.agent_personal_code for c in SEEDED.cases}
    return codes | {code.replace("-", "") for code in codes}


def assert_no_personal_code(text: str) -> None:
    """Neither a personal code of the town or the register nor anything shaped like one is in
    ``text`` (an error text: no ids in it that could look like a code)."""
    assert not re.search(r"\d{6}-?\d{5}", text), text
    assert_no_known_code(text)


def assert_no_known_code(text: str) -> None:
    """No personal code of the town or the register is in ``text`` (a message, whose ids
    may hold eleven digits in a row by chance)."""
    assert not any(code in text for code in _every_code()), text


def _asked(case: AuthorisationCase, **changes: Any) -> dict[str, Any]:
    """The verification request for ``case`` (for pre-school matters), with ``changes``."""
    return {
        "issuer": case.issuer,
        "number": case.number,
        "child_personal_code": case.child.personal_code,
        "agent_personal_code": case.agent_personal_code,
        "matter": PRESCHOOL,
        "on": case.on.isoformat(),
    } | changes


def _register(app: FaultInjection | None = None) -> httpx.AsyncClient:
    """An HTTP client of the simulator, in process."""
    transport = httpx.ASGITransport(app=app or create_app(TOWN))
    return httpx.AsyncClient(transport=transport, base_url="http://register.test")


def _client(app: FaultInjection | None = None, policy: RetryPolicy = FAST) -> AuthorisationsClient:
    """The adapter's client of the simulator, in process."""
    transport = httpx.ASGITransport(app=app or create_app(TOWN))
    return AuthorisationsClient("http://register.test", policy=policy, transport=transport)


async def _verify(case: AuthorisationCase, **changes: Any) -> dict[str, Any]:
    async with _register() as http:
        answer = await http.post(VERIFY, json=_asked(case, **changes))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


# --------------------------------------------------------------------------- the seeded register


def test_the_register_is_seeded_with_every_kind_of_case() -> None:
    assert {c.expected for c in SEEDED.cases} == set(STATUSES)
    assert len(SEEDED.of("valid")) >= 2  # for pre-school matters, and for every matter
    children = [c.child.ref for c in SEEDED.cases]
    assert len(children) == len(set(children))  # no child in two cases
    town_people = {c.personal_code for c in TOWN.children}
    town_people |= {g.personal_code for c in TOWN.children for g in c.guardians}
    agents = {a.agent_personal_code for a in SEEDED.authorisations}
    assert not agents & town_people  # agents are neither children nor parents
    issuers = {(a.issuer, a.issuer_name) for a in SEEDED.authorisations}
    assert ("orphans_court", "Rīgas bāriņtiesa") in issuers
    assert any(kind == "notary" for kind, _ in issuers)


def test_seeding_is_deterministic_and_leaves_the_town_as_it_was() -> None:
    again = SyntheticMunicipality("riga", seed=7, children=200, institutions=3, admission_year=2026)
    assert seeded(again) == SEEDED
    assert again.children == TOWN.children
    other = seeded(SyntheticMunicipality("riga", seed=8, children=200, admission_year=2026))
    assert other.authorisations != SEEDED.authorisations


@pytest.mark.parametrize(("children", "cases"), [(0, 0), (5, 5), (50, 9), (400, 16)])
def test_the_number_of_cases_follows_the_town(children: int, cases: int) -> None:
    town = SyntheticMunicipality("riga", seed=2, children=children, admission_year=2026)
    assert len(seeded(town).cases) == cases


def test_every_case_names_an_authorisation_the_hub_accepts() -> None:
    for case in SEEDED.cases:
        filed = Authorisation.model_validate(case.authorisation())
        assert filed.number == case.number and filed.valid_from == case.valid_from


# --------------------------------------------------------------------------- the simulator


@pytest.mark.parametrize("case", SEEDED.cases, ids=lambda c: f"{c.expected}-{c.number}")
async def test_every_seeded_case_is_answered_as_expected(case: AuthorisationCase) -> None:
    answer = await _verify(case)
    assert answer["status"] == case.expected


async def test_a_valid_authorisation_answers_its_issuer_and_period() -> None:
    case = _case("valid")  # an orphans' court's, until revoked
    answer = await _verify(case)
    assert answer == {
        "status": "valid",
        "issuer_name": case.issuer_name,
        "valid_from": case.valid_from.isoformat(),
        "valid_until": None,
        "revoked_on": None,
    }


async def test_the_first_and_the_last_day_are_inside_the_period() -> None:
    case = next(c for c in SEEDED.of("valid") if c.valid_until is not None)
    assert case.valid_until is not None
    day = timedelta(days=1)
    answers = [
        (await _verify(case, on=on.isoformat()))["status"]
        for on in (
            case.valid_from - day,
            case.valid_from,
            case.valid_until,
            case.valid_until + day,
        )
    ]
    assert answers == ["not_yet_valid", "valid", "valid", "expired"]


async def test_a_revocation_counts_from_its_day() -> None:
    case = _case("revoked")
    on_the_day = await _verify(case)
    revoked_on = date.fromisoformat(on_the_day["revoked_on"])
    assert revoked_on <= case.on
    assert on_the_day["valid_until"] == (revoked_on - timedelta(days=1)).isoformat()
    before = await _verify(case, on=(revoked_on - timedelta(days=1)).isoformat())
    assert before["status"] == "valid" and before["valid_until"] == on_the_day["valid_until"]


async def test_the_matter_asked_must_be_covered() -> None:
    preschool_only = _case("valid")
    every_matter = next(c for c in SEEDED.of("valid") if c.issuer == "notary")
    assert (await _verify(preschool_only, matter="school"))["status"] == "other_scope"
    for matter in ("school", "healthcare", "property", "general"):
        assert (await _verify(every_matter, matter=matter))["status"] == "valid"


async def test_the_number_ignores_letter_case_but_the_issuer_must_match() -> None:
    case = _case("valid")
    other = "notary" if case.issuer == "orphans_court" else "orphans_court"
    assert (await _verify(case, number=case.number.lower()))["status"] == "valid"
    assert (await _verify(case, issuer=other))["status"] == "unknown"
    unhyphened = {
        "child_personal_code": case.child.personal_code.replace("-", ""),
        "agent_personal_code": case.agent_personal_code.replace("-", ""),
    }
    assert (await _verify(case, **unhyphened))["status"] == "valid"


@pytest.mark.parametrize("expected", ["unknown", "other_child", "other_person"])
async def test_who_is_not_the_agent_of_the_child_learns_nothing_more(expected: str) -> None:
    answer = await _verify(_case(expected))
    assert answer == {
        "status": expected,
        "issuer_name": None,
        "valid_from": None,
        "valid_until": None,
        "revoked_on": None,
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"child_personal_code": "12345"},
        {"agent_personal_code": "161175 19997"},
        {"issuer": "court"},
        {"number": "BT 2025/1"},
        {"number": ""},
        {"number": "N" * 41},
        {"matter": "kindergarten"},
        {"on": "2026-02-30"},
        {"on": None},
        {"reason": "extra field"},
    ],
    ids=[
        "short-code",
        "spaced-code",
        "issuer",
        "spaced-number",
        "empty-number",
        "long-number",
        "matter",
        "no-such-day",
        "no-day",
        "extra-field",
    ],
)
async def test_a_malformed_request_is_422(changes: dict[str, Any]) -> None:
    async with _register() as http:
        answer = await http.post(VERIFY, json=_asked(_case("valid"), **changes))
    assert answer.status_code == 422, answer.text


async def test_a_request_without_a_field_is_422() -> None:
    body = _asked(_case("valid"))
    del body["agent_personal_code"]
    async with _register() as http:
        answer = await http.post(VERIFY, json=body)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "agent_personal_code"]


async def test_the_broken_number_always_answers_500() -> None:
    async with _register() as http:
        answer = await http.post(VERIFY, json=_asked(_case("valid"), number=BROKEN_NUMBER))
    assert answer.status_code == 500 and answer.json() == {"error": "internal_error"}


async def test_the_examples_are_the_seeded_cases() -> None:
    async with _register() as http:
        answer = await http.get("/v1/authorisations/examples")
    examples = answer.json()["examples"]
    assert len(examples) == len(SEEDED.cases)
    for example, case in zip(examples, SEEDED.cases, strict=True):
        assert example["expected"] == case.expected
        assert example["child_ref"] == case.child.ref
        assert example["application_id"] == case.child.application_id
        assert example["child_personal_code"] == case.child.personal_code
        assert example["on"] == case.on.isoformat()
        assert example["authorisation"] == case.authorisation()


async def test_health_and_openapi_are_never_faulted() -> None:
    async with _register(create_app(TOWN, Faults(error_rate=1))) as http:
        health = await http.get("/health")
        spec = (await http.get("/openapi.json")).json()
        verify = await http.post(VERIFY, json=_asked(_case("valid")))
        asked_none = await http.post(
            VERIFY, json=_asked(_case("valid")), headers={"X-Simulate-Fault": "none"}
        )
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "system": "authorisations",
        "authorisations": len(SEEDED.authorisations),
    }
    assert spec["info"]["title"] == "Register of authorisations simulator"
    assert {VERIFY, "/v1/authorisations/examples"} <= set(spec["paths"])
    assert {"VerificationRequest", "Verification", "ErrorBody"} <= set(
        spec["components"]["schemas"]
    )
    assert verify.status_code == 503
    assert asked_none.status_code == 200


# --------------------------------------------------------------------------- the client


def test_the_answers_are_the_contracts_refusal_reasons_and_valid() -> None:
    """The simulator and the client each list the register's answers; the contract's
    refusal reasons are the ones besides ``valid``."""
    assert set(get_args(Status)) == set(STATUSES) == {"valid", *get_args(RefusalReason)}


def _verify_with(client: AuthorisationsClient, case: AuthorisationCase, **changes: Any) -> Any:
    asked = {
        "issuer": case.issuer,
        "number": case.number,
        "child_personal_code": case.child.personal_code,
        "agent_personal_code": case.agent_personal_code,
        "on": case.on,
    } | changes
    return client.verify(**asked)


@pytest.mark.parametrize("expected", STATUSES)
async def test_the_client_reads_each_answer(expected: str) -> None:
    case = _case(expected)
    async with _client() as client:
        verification = await _verify_with(client, case)
    assert isinstance(verification, Verification)
    assert verification.status == expected
    assert verification.valid == (expected == "valid")
    if expected == "expired":
        assert verification.valid_until == case.valid_until


@every_fault(client_timeout=2.0)
async def test_every_fault_fails_transiently_after_the_retries(
    faults: Faults, timeout: float, error: type[Exception]
) -> None:
    raised = await each_call_fails(
        create_app(TOWN, faults),
        AuthorisationsClient,
        faults,
        timeout,
        error,
        lambda client: _verify_with(client, _case("valid")),
        name="authorisations",
    )
    for failure in raised:
        assert_no_personal_code(str(failure))


async def test_the_broken_number_is_unavailable_after_every_attempt() -> None:
    retried: list[BaseException] = []
    async with _client() as client:
        client.add_retry_listener(retried.append)
        with pytest.raises(UnavailableError) as raised:
            await _verify_with(client, _case("valid"), number=BROKEN_NUMBER)
    assert len(retried) == FAST.attempts - 1
    assert "500" in str(raised.value)
    assert_no_personal_code(str(raised.value))


async def test_a_few_faults_are_outlasted_by_the_retries() -> None:
    faults = Faults(
        error_rate=0.2, rate_limit_rate=0.15, malformed_rate=0.15, retry_after_seconds=0, seed=3
    )
    patient = dataclasses.replace(FAST, attempts=15)
    app = create_app(TOWN, faults)
    async with _client(app, patient) as client:
        answers = [(await _verify_with(client, case)).status for case in SEEDED.cases]
    assert answers == [case.expected for case in SEEDED.cases]
    assert {"error", "rate_limit", "malformed"} & set(app.injected)


def _mock(status: int, body: Any) -> tuple[AuthorisationsClient, list[httpx.Request]]:
    return mocked(AuthorisationsClient, httpx.Response(status, json=body))


@pytest.mark.parametrize(
    "body",
    [
        {"status": "suspended"},
        {"state": "valid"},
        ["valid"],
        {"status": "valid", "valid_from": "someday"},
        {"status": "expired", "valid_from": "2026-05-01", "valid_until": "2026-01-01"},
        {"status": "valid", "valid_from": "2099-01-01", "valid_until": None},
        {"status": "valid", "valid_from": "2020-01-01", "valid_until": "2021-01-01"},
    ],
    ids=[
        "unknown-status",
        "no-status",
        "a-list",
        "not-a-date",
        "period-reversed",
        "valid-not-yet",
        "valid-no-longer",
    ],
)
async def test_an_answer_of_the_wrong_shape_is_unexpected(body: Any) -> None:
    client, seen = _mock(200, body)
    with pytest.raises(UnexpectedAnswer) as raised:
        await _verify_with(client, _case("valid"))
    await client.close()
    assert len(seen) == 1  # permanent: not retried
    assert_no_personal_code(str(raised.value))


async def test_a_body_that_is_not_json_is_retried() -> None:
    client, seen = mocked(AuthorisationsClient, httpx.Response(200, text="<html>gateway</html>"))
    with pytest.raises(InvalidResponse):
        await _verify_with(client, _case("valid"))
    await client.close()
    assert len(seen) == FAST.attempts


async def test_another_2xx_is_broken_and_retried() -> None:
    client, seen = _mock(201, {"status": "valid"})
    with pytest.raises(InvalidResponse, match="201"):
        await _verify_with(client, _case("valid"))
    await client.close()
    assert len(seen) == FAST.attempts


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_a_client_error_is_refused_at_once(status: int) -> None:
    client, seen = _mock(status, {"detail": "no"})
    with pytest.raises(Refused) as raised:
        await _verify_with(client, _case("valid"))
    await client.close()
    assert raised.value.status == status and len(seen) == 1
    assert_no_personal_code(str(raised.value))


async def test_personal_codes_travel_only_in_the_body() -> None:
    case = _case("valid")
    client, seen = _mock(200, {"status": "valid"})
    await _verify_with(client, case)
    await client.close()
    (request,) = seen
    assert request.method == "POST" and request.url.path == VERIFY
    assert not request.url.query
    for code in (case.child.personal_code, case.agent_personal_code):
        assert code.replace("-", "") not in str(request.url).replace("-", "")
        assert not any(code in value for value in request.headers.values())
    assert json.loads(request.content) == _asked(case)


# --------------------------------------------------------------------------- the handler


def _check(case: AuthorisationCase) -> CheckAuthorisation:
    return CheckAuthorisation.new(
        producer=ALLOCATION,
        municipality="riga",
        child_ref=case.child.ref,
        application_id=case.child.application_id,
        child_personal_code=case.child.personal_code,
        authorisation=Authorisation.model_validate(case.authorisation()),
        on=case.on,
    )


def _emitted(unit: Unit, cause: CheckAuthorisation) -> dict[str, Any]:
    """The one message on ``unit``, checked to answer ``cause`` and to hide personal codes."""
    assert len(unit.outbox) == 1 and not unit.statements
    row = unit.outbox[0]
    assert row.topic == RESULTS
    assert row.key == cause.child_ref.encode()
    assert_no_known_code(row.value.decode())
    body: dict[str, Any] = json.loads(row.value)
    assert body["correlation_id"] == str(cause.correlation_id)
    assert body["causation_id"] == str(cause.event_id)
    assert body["producer"] == AUTHORISATIONS and body["municipality"] == "riga"
    assert body["child_ref"] == cause.child_ref
    assert body["application_id"] == cause.application_id
    return body


async def _handle(case: AuthorisationCase) -> dict[str, Any]:
    message = _check(case)
    async with _client() as client:
        checks = AuthorisationChecks(client)
        unit = Unit()
        checks.apply(unit, message, await checks.fetch(message))
    return _emitted(unit, message)


async def test_a_valid_authorisation_is_verified() -> None:
    case = next(c for c in SEEDED.of("valid") if c.valid_until is not None)
    body = await _handle(case)
    assert body["event_type"] == "AuthorisationVerified"
    assert body["valid_until"] == case.valid_until.isoformat()  # type: ignore[union-attr]
    open_ended = await _handle(_case("valid"))
    assert open_ended["event_type"] == "AuthorisationVerified"
    assert open_ended["valid_until"] is None


@pytest.mark.parametrize("reason", REFUSALS)
async def test_each_refusal_is_published_with_its_reason(reason: str) -> None:
    case = _case(reason)
    body = await _handle(case)
    assert body["event_type"] == "AuthorisationRefused"
    assert body["reason"] == reason
    assert body["detail"] and case.number not in body["detail"]
    if reason == "expired":
        assert case.valid_until is not None and case.valid_until.isoformat() in body["detail"]


def _given_up(error: BaseException) -> AuthorisationCheckFailed:
    client, _ = _mock(500, {})
    message = _check(_case("valid"))
    (failed,) = service(client).handlers[0].given_up(message, error)
    assert isinstance(failed, AuthorisationCheckFailed)
    assert failed.causation_id == message.event_id
    assert failed.correlation_id == message.correlation_id
    assert failed.child_ref == message.child_ref and failed.producer == AUTHORISATIONS
    assert failed.application_id == message.application_id
    return failed


@pytest.mark.parametrize(
    ("error", "reason", "permanent"),
    [
        (UnavailableError("the register answered 503"), "unavailable", False),
        (InvalidResponse("the register answered with no JSON"), "invalid_response", False),
        (UnexpectedAnswer("the register answered wrong fields"), "invalid_response", True),
        (Refused("the register refused with 422", status=422), "invalid_response", True),
        (PermanentError("something else"), "unavailable", True),
    ],
    ids=["unavailable", "broken", "wrong-shape", "refused", "other"],
)
def test_a_check_given_up_publishes_check_failed(
    error: BaseException, reason: str, permanent: bool
) -> None:
    failed = _given_up(error)
    assert (failed.reason, failed.permanent) == (reason, permanent)
    assert type(error).__name__ in failed.detail and str(error) in failed.detail


def test_a_check_given_up_masks_personal_codes() -> None:
    failed = _given_up(UnexpectedAnswer("the register answered about 161175-19997 " + "x" * 600))
    assert "161175-19997" not in failed.detail and "******-*****" in failed.detail
    assert len(failed.detail) == 500


async def test_the_handler_lets_an_unavailable_register_through() -> None:
    case = dataclasses.replace(_case("valid"), number=BROKEN_NUMBER)
    message = _check(case)
    async with _client() as client:
        checks = service(client).handlers[0]
        with pytest.raises(UnavailableError) as raised:
            await checks.fetch(message)
    assert_no_personal_code(str(raised.value))
    (failed,) = checks.given_up(message, raised.value)
    assert failed.reason == "unavailable" and not failed.permanent  # type: ignore[attr-defined]


def test_the_service_is_the_catalogues_adapter() -> None:
    client, _ = _mock(500, {})
    spec = service(client)
    assert spec.name == AUTHORISATIONS
    assert [h.topic.name for h in spec.handlers] == [CHECKS]
    assert spec.clients == (client,)


# --------------------------------------------------------------------------- dead letters


def _record(value: bytes, offset: int) -> Incoming:
    return Incoming(CHECKS, 0, offset, b"CH-key", value, ())


async def test_garbage_is_dead_lettered_and_answered_while_the_rest_is_handled(
    tmp_path: Path,
) -> None:
    """A check the register answers with garbage is dead-lettered with why and answered
    ``AuthorisationCheckFailed``; a check that is no message at all is dead-lettered without
    its content; the good check in the same batch is answered as ever."""
    valid, garbage = _case("valid"), _case("expired")

    def answer(request: httpx.Request) -> httpx.Response:
        asked = json.loads(request.content)
        if asked["number"] == garbage.number:
            return httpx.Response(200, json={"status": "maybe"})
        return httpx.Response(200, json={"status": "valid", "valid_until": None})

    client, _ = mocked(AuthorisationsClient, answer)
    spec = service(client)
    good = _check(valid).model_dump_json()
    broken_code = good.replace(valid.child.personal_code, "161175-19990")  # a wrong check digit
    store = await Store.open(tmp_path / "authorisations.sqlite3")
    try:
        processor = BatchProcessor(
            spec.name,
            {CHECKS: spec.handlers[0]},
            store,
            Metrics.create(),
            schedule=RetrySchedule(max_attempts=3),
        )
        records = [
            _record(_check(garbage).model_dump_json().encode(), 0),
            _record(broken_code.encode(), 1),
            _record(good.encode(), 2),
        ]
        await processor.process(records)
        rows = await store.pending(10)
    finally:
        await store.close()
        await client.close()
    dead = {header(r.headers, "dlq-source-offset"): r for r in rows if r.topic == DEAD_LETTERS}
    results = {json.loads(r.value)["event_type"]: r for r in rows if r.topic == RESULTS}
    assert len(rows) == 4 and set(dead) == {"0", "1"}
    assert set(results) == {"AuthorisationCheckFailed", "AuthorisationVerified"}
    failed, verified = results["AuthorisationCheckFailed"], results["AuthorisationVerified"]
    answered = json.loads(failed.value)
    assert (answered["reason"], answered["permanent"]) == ("invalid_response", True)
    assert answered["application_id"] == garbage.child.application_id
    assert "UnexpectedAnswer" in answered["detail"]
    assert json.loads(verified.value)["application_id"] == valid.child.application_id
    assert header(dead["0"].headers, "dlq-reason") == "refused"
    assert header(dead["0"].headers, "dlq-error-type") == "UnexpectedAnswer"
    assert "wrong fields: ['status']" in (header(dead["0"].headers, "dlq-error") or "")
    assert header(dead["1"].headers, "dlq-reason") == "invalid_message"
    assert "161175" not in (header(dead["1"].headers, "dlq-error") or "")
    for row in (failed, verified):
        assert_no_known_code(row.value.decode())
    for row in rows:
        assert_no_known_code(json.dumps([(k, v.decode()) for k, v in row.headers]))


def test_the_seeded_register_of_another_municipality_differs() -> None:
    liepaja = seeded(SyntheticMunicipality("liepaja", seed=7, children=200, admission_year=2026))
    assert isinstance(liepaja, Seeded)
    assert {a.issuer_name for a in liepaja.authorisations if a.issuer == "orphans_court"} == {
        "Liepājas bāriņtiesa"
    }
