"""The population register in the VPS simulator (declared residence of a child and its
guardians on a date) and the VPS adapter's answers to ``CheckResidence``, in process: the
simulator over httpx's ASGI transport, the handler fed records by the batch processor on a
real SQLite store (no broker)."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.vps import VpsClient, message_for, service
from adapters.vps.service import Offers, ResidenceChecks
from hub.errors import PermanentError
from hub.reliability.consumer import BatchProcessor, Incoming, RetrySchedule, Unit
from hub.reliability.deadletters import header
from hub.reliability.metrics import Metrics
from hub.reliability.retry import InvalidResponse, Refused, UnavailableError, UnexpectedAnswer
from hub.reliability.store import OutboxRow, Store
from schemas.residence import CheckResidence, ResidenceCheckFailed
from schemas.topics import ALLOCATION, BY_NAME, DEAD_LETTERS, VPS, retry_topic
from simulators.faults import FaultInjection, Faults
from simulators.messages import application_form
from simulators.municipality import Child, SyntheticMunicipality, old_format_code
from simulators.vps.app import create_app
from tests.allocation_messages import offer_made
from tests.contract.common import FAST, NO_FAULT, mocked

TOWN = SyntheticMunicipality("riga", seed=4, children=300, institutions=3, admission_year=2026)
AS_OF = date(2026, 5, 4)
URL = "http://vps.test"
CHECKS = BY_NAME["vps.population.checks.v1"]
ANSWERS = "vps.population.residence.v1"


def declared_here(code: str, day: date = AS_OF) -> bool:
    found = TOWN.declared_on(code, day)
    return found is not None and found.municipality == TOWN.code


def children_where(child_here: bool, guardians_here: int) -> list[Child]:
    """Children declared here or not on AS_OF, with that many guardians declared here."""
    return [
        c
        for c in TOWN.children
        if declared_here(c.personal_code) == child_here
        and sum(declared_here(g.personal_code) for g in c.guardians) == guardians_here
    ]


def moved_guardian() -> tuple[Child, int, date]:
    """A child whose guardian moved in the admission year: the child, the guardian's index,
    the day of the move."""
    for child in TOWN.children:
        for index, guardian in enumerate(child.guardians):
            history = TOWN.declarations[guardian.personal_code]
            if len(history) == 2 and history[1].declared_from.year == TOWN.admission_year:
                return child, index, history[1].declared_from
    raise AssertionError("no guardian of the town moved in the admission year")


def unknown_code() -> str:
    rng = random.Random(7)
    while (code := old_format_code(date(2022, 5, 5), rng)) in TOWN.declarations:
        pass
    return code


def every_code() -> set[str]:
    codes = set(TOWN.declarations)
    return codes | {c.replace("-", "") for c in codes}


def query(child: Child, as_of: date = AS_OF, guardians: list[str] | None = None) -> dict[str, Any]:
    codes = [g.personal_code for g in child.guardians] if guardians is None else guardians
    return {
        "child_personal_code": child.personal_code,
        "guardian_personal_codes": codes,
        "as_of": as_of.isoformat(),
    }


def check(child: Child, as_of: date = AS_OF) -> CheckResidence:
    return CheckResidence.new(
        producer=ALLOCATION,
        municipality="riga",
        child_ref=child.ref,
        child_personal_code=child.personal_code,
        guardian_personal_codes=tuple(g.personal_code for g in child.guardians),
        as_of=as_of,
    )


def clock() -> datetime:
    return datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@asynccontextmanager
async def vps(faults: Faults | None = None) -> AsyncIterator[tuple[httpx.AsyncClient, VpsClient]]:
    """The simulator in process: a plain HTTP client (never faulted) and the adapter's."""
    app = create_app(TOWN, faults, clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url=URL, headers=NO_FAULT) as http,
        VpsClient(URL, policy=FAST, transport=transport) as client,
    ):
        yield http, client


# --------------------------------------------------------------------------- the town


def test_guardian_residences_are_varied_and_deterministic() -> None:
    assert len(children_where(True, 2)) > len(TOWN.children) // 3  # most: with the child
    assert children_where(True, 0)  # declared here, no guardian declared here
    assert children_where(False, 1)  # not declared here, but a guardian is
    assert children_where(False, 0)  # the whole family elsewhere
    child, index, moved_on = moved_guardian()  # the date asked decides where they live
    guardian = child.guardians[index].personal_code
    assert declared_here(guardian, moved_on - timedelta(days=1)) != declared_here(
        guardian, moved_on
    )
    again = SyntheticMunicipality("riga", seed=4, children=300, institutions=3, admission_year=2026)
    assert again.declarations == TOWN.declarations
    other = SyntheticMunicipality("riga", seed=5, children=300, institutions=3, admission_year=2026)
    assert other.declarations != TOWN.declarations


# --------------------------------------------------------------------------- the simulator


@pytest.mark.parametrize(
    ("child_here", "guardians_here"), [(True, 2), (True, 0), (False, 1), (False, 0)]
)
async def test_the_register_answers_each_persons_residence_on_the_date(
    child_here: bool, guardians_here: int
) -> None:
    child = children_where(child_here, guardians_here)[0]
    async with vps() as (http, _):
        answer = await http.post("/v1/population/residence", json=query(child))
    assert answer.status_code == 200
    body = answer.json()
    assert body["as_of"] == AS_OF.isoformat()
    people = [child.personal_code, *(g.personal_code for g in child.guardians)]
    assert [p["personal_code"] for p in body["persons"]] == people
    assert [(p["subject"], p["guardian_index"]) for p in body["persons"]] == [
        ("child", None),
        *(("guardian", i) for i in range(len(child.guardians))),
    ]
    for person in body["persons"]:
        expected = TOWN.declared_on(person["personal_code"], AS_OF)
        assert expected is not None
        assert person["residence"] == {
            "address_code": expected.address_code,
            "territory_code": expected.territory_code,
            "municipality": expected.municipality,
            "declared_from": expected.declared_from.isoformat(),
        }
    here = [p["residence"]["municipality"] == "riga" for p in body["persons"]]
    assert here[0] is child_here and sum(here[1:]) == guardians_here
    assert {p["residence"]["municipality"] for p in body["persons"]} <= {"riga", "kekava"}


async def test_a_declaration_from_a_later_date_does_not_count_yet() -> None:
    child, index, moved_on = moved_guardian()
    before, after = TOWN.declarations[child.guardians[index].personal_code]
    async with vps() as (http, _):
        on = {}
        for day in (moved_on - timedelta(days=1), moved_on):
            answer = await http.post("/v1/population/residence", json=query(child, day))
            on[day] = answer.json()["persons"][1 + index]["residence"]
        # The child moves too, from a day to come: the day before, the old address holds.
        move = {
            "personal_code": child.personal_code.replace("-", ""),  # however written
            "address_code": "123456789",
            "territory_code": "0807600",
            "municipality": "kekava",
            "declared_from": "2026-08-01",
        }
        assert (await http.post("/v1/residence", json=move)).status_code == 204
        early = await http.post("/v1/population/residence", json=query(child, date(2026, 7, 31)))
        late = await http.post("/v1/population/residence", json=query(child, date(2026, 8, 1)))
    assert on[moved_on - timedelta(days=1)]["address_code"] == before.address_code
    assert on[moved_on]["address_code"] == after.address_code
    assert on[moved_on]["declared_from"] == moved_on.isoformat()
    own = TOWN.declarations[child.personal_code][0]
    assert early.json()["persons"][0]["residence"]["address_code"] == own.address_code
    moved = late.json()["persons"][0]["residence"]
    assert moved == {
        "address_code": "123456789",
        "territory_code": "0807600",
        "municipality": "kekava",
        "declared_from": "2026-08-01",
    }


async def test_before_any_declaration_a_person_has_no_residence() -> None:
    child = TOWN.children[0]
    born = date(child.birth_date.year, 1, 1)
    async with vps() as (http, _):
        answer = await http.post(
            "/v1/population/residence", json=query(child, born - timedelta(days=1))
        )
    assert answer.status_code == 200
    assert answer.json()["persons"][0]["residence"] is None


async def test_an_unknown_child_is_404_and_an_unknown_guardian_has_no_residence() -> None:
    child, stranger = TOWN.children[1], unknown_code()
    async with vps() as (http, _):
        unknown = await http.post(
            "/v1/population/residence",
            json={"child_personal_code": stranger, "as_of": AS_OF.isoformat()},
        )
        with_stranger = await http.post(
            "/v1/population/residence", json=query(child, guardians=[stranger])
        )
        invalid = await http.post(
            "/v1/population/residence",
            json={"child_personal_code": "161175-19990", "as_of": AS_OF.isoformat()},
        )
        too_many = await http.post(
            "/v1/population/residence", json=query(child, guardians=[stranger] * 3)
        )
        moved = await http.post(
            "/v1/residence",
            json={
                "personal_code": stranger,
                "address_code": "123456789",
                "territory_code": "0001000",
                "municipality": "riga",
                "declared_from": "2026-01-01",
            },
        )
    assert unknown.status_code == 404 and unknown.json()["detail"]["error"] == "unknown_person"
    assert stranger not in unknown.text
    assert with_stranger.json()["persons"][1] == {
        "personal_code": stranger,
        "subject": "guardian",
        "guardian_index": 0,
        "residence": None,
    }
    assert invalid.status_code == too_many.status_code == 422
    assert moved.status_code == 404 and moved.json()["detail"]["error"] == "unknown_person"


async def test_a_guardian_who_moves_is_reported_on_the_feed_for_each_active_application() -> None:
    child = next(c for c in children_where(True, 2))
    second = child.guardians[1]
    move = {
        "personal_code": second.personal_code,
        "address_code": "123456789",
        "territory_code": "0807600",
        "municipality": "kekava",
        "declared_from": "2026-04-01",
    }
    async with vps() as (http, _):
        accepted = (await http.post("/v1/applications", json=application_form(child))).json()
        assert (await http.post("/v1/residence", json=move)).status_code == 204
        feed = (await http.get("/v1/events")).json()
        checked = await http.post("/v1/population/residence", json=query(child))
    submitted, own, moved = feed["events"][-3:]
    assert submitted["type"] == "application.submitted"
    assert own["type"] == moved["type"] == "residence.declared"
    assert own["data"]["subject"] == "child" and "guardian_index" not in own["data"]
    assert moved["data"] == {
        "child_id": accepted["child_id"],
        "subject": "guardian",
        "guardian_index": 1,
        "address_code": "123456789",
        "territory_code": "0807600",
        "municipality": "kekava",
        "declared_from": "2026-04-01",
    }
    message = message_for(moved, "riga", feed["feed"])
    assert message.event_type == "ResidenceDeclared"
    assert (message.subject, message.guardian_index) == ("guardian", 1)  # type: ignore[attr-defined]
    assert message.declared_municipality == "kekava"  # type: ignore[attr-defined]
    assert message.child_ref == f"CH-{accepted['child_id']}"  # type: ignore[attr-defined]
    residence = checked.json()["persons"][2]["residence"]
    assert residence["municipality"] == "kekava" and residence["declared_from"] == "2026-04-01"


# --------------------------------------------------------------------------- the adapter


def emitted(unit: Unit | list[OutboxRow], cause: CheckResidence) -> dict[str, Any]:
    """The one answer to ``cause``, checked to continue its flow and to hide codes."""
    rows = unit.outbox if isinstance(unit, Unit) else unit
    [row] = [r for r in rows if r.topic == ANSWERS]
    assert row.key == cause.child_ref.encode()
    assert not any(code.encode() in row.value for code in every_code())
    body: dict[str, Any] = json.loads(row.value)
    assert body["correlation_id"] == str(cause.correlation_id)
    assert body["causation_id"] == str(cause.event_id)
    assert body["producer"] == VPS and body["municipality"] == cause.municipality
    assert body["as_of"] == cause.as_of.isoformat()
    return body


async def handled(message: CheckResidence, client: VpsClient) -> dict[str, Any]:
    checks = ResidenceChecks(client)
    unit = Unit()
    checks.apply(unit, message, await checks.fetch(message))
    return emitted(unit, message)


async def test_a_check_is_answered_with_the_residences_on_the_date() -> None:
    child = children_where(True, 0)[0]  # the child here, no guardian here
    message = check(child)
    async with vps() as (_, client):
        body = await handled(message, client)
    assert body["event_type"] == "ResidenceChecked"
    residences = body["residences"]
    assert [(r["subject"], r["guardian_index"]) for r in residences] == [
        ("child", None),
        *(("guardian", i) for i in range(len(child.guardians))),
    ]
    for residence, person in zip(
        residences, [child.personal_code, *(g.personal_code for g in child.guardians)], strict=True
    ):
        expected = TOWN.declared_on(person, AS_OF)
        assert expected is not None
        assert residence["address_code"] == expected.address_code
        assert residence["territory_code"] == expected.territory_code
        assert residence["declared_municipality"] == expected.municipality
        assert residence["declared_from"] == expected.declared_from.isoformat()
    assert [r["declared_municipality"] for r in residences] == ["riga"] + ["kekava"] * (
        len(residences) - 1
    )


async def test_a_check_maps_municipalities_as_the_feed_does() -> None:
    child = children_where(False, 1)[0]
    async with vps() as (http, client):
        body = await handled(check(child), client)
        await http.post("/v1/applications", json=application_form(child))
        feed = (await http.get("/v1/events")).json()
    entry = feed["events"][-1]
    assert entry["type"] == "residence.declared"
    from_feed = message_for(entry, "riga", feed["feed"])
    assert body["residences"][0]["declared_municipality"] == from_feed.declared_municipality  # type: ignore[attr-defined]
    assert body["residences"][0]["declared_municipality"] == TOWN.neighbour[0]
    assert "riga" in [r["declared_municipality"] for r in body["residences"][1:]]


async def test_a_person_without_a_residence_on_the_date_is_left_out() -> None:
    child = TOWN.children[2]
    born = date(child.birth_date.year, 1, 1)
    message = check(child, as_of=born - timedelta(days=1))
    async with vps() as (_, client):
        body = await handled(message, client)
    assert body["event_type"] == "ResidenceChecked"
    assert [r["subject"] for r in body["residences"]] == ["guardian"] * len(child.guardians)


async def test_a_check_of_a_child_the_register_does_not_know_is_unknown_person() -> None:
    stranger = unknown_code()
    message = CheckResidence.new(
        producer=ALLOCATION,
        municipality="riga",
        child_ref="CH-000000000001",
        child_personal_code=stranger,
        as_of=AS_OF,
    )
    async with vps() as (_, client):
        body = await handled(message, client)
    assert body["event_type"] == "ResidenceCheckFailed"
    assert body["reason"] == "unknown_person" and body["permanent"] is True
    assert stranger not in body["detail"]


async def test_personal_codes_travel_only_in_the_body() -> None:
    child = TOWN.children[3]
    answer = {
        "as_of": AS_OF.isoformat(),
        "persons": [
            {"personal_code": code, "residence": None}
            for code in [child.personal_code, *(g.personal_code for g in child.guardians)]
        ],
    }
    client, seen = mocked(VpsClient, httpx.Response(200, json=answer), url=URL)
    await ResidenceChecks(client).fetch(check(child))
    await client.close()
    [request] = seen
    assert request.url.path == "/v1/population/residence"
    assert not any(code in str(request.url) for code in every_code())
    assert json.loads(request.content) == query(child)


def _answer(child: Child, **residence: Any) -> dict[str, Any]:
    declared = {
        "address_code": "123456789",
        "territory_code": "0001000",
        "municipality": "riga",
        "declared_from": "2024-01-01",
    }
    return {
        "as_of": AS_OF.isoformat(),
        "persons": [
            {"personal_code": code, "residence": declared | residence}
            for code in [child.personal_code, *(g.personal_code for g in child.guardians)]
        ],
    }


GARBAGE: dict[str, Any] = {
    "municipality-not-a-code": lambda c: _answer(c, municipality="Rīga"),
    "address-code-short": lambda c: _answer(c, address_code="12345"),
    "no-date": lambda c: _answer(c, declared_from=None),
    "another-day": lambda c: _answer(c) | {"as_of": "2026-05-05"},
    "a-code-left-out": lambda c: _answer(c) | {"persons": _answer(c)["persons"][1:]},
    "persons-not-a-list": lambda c: {"as_of": AS_OF.isoformat(), "persons": "none"},
    "a-list": lambda c: [],
}


@pytest.mark.parametrize("garbage", list(GARBAGE), ids=list(GARBAGE))
async def test_an_answer_of_the_wrong_shape_is_unexpected_and_not_retried(garbage: str) -> None:
    child = children_where(True, 2)[0]
    client, seen = mocked(VpsClient, httpx.Response(200, json=GARBAGE[garbage](child)), url=URL)
    with pytest.raises(UnexpectedAnswer) as raised:
        await ResidenceChecks(client).fetch(check(child))
    await client.close()
    assert len(seen) == 1
    assert not any(code in str(raised.value) for code in every_code())


@pytest.mark.parametrize(
    ("answer", "error", "attempts"),
    [
        (httpx.Response(200, content=b"<html>gateway</html>"), InvalidResponse, 3),
        (httpx.Response(503, json={"error": "down"}), UnavailableError, 3),
        (httpx.Response(404, json={"detail": "Not Found"}), Refused, 1),
        (httpx.Response(422, json={"detail": []}), Refused, 1),
    ],
    ids=["not-json", "unavailable", "404-without-reason", "422"],
)
async def test_other_failures_are_raised_with_the_retry_rules(
    answer: httpx.Response, error: type[Exception], attempts: int
) -> None:
    child = TOWN.children[4]
    client, seen = mocked(VpsClient, answer, url=URL)
    with pytest.raises(error):
        await ResidenceChecks(client).fetch(check(child))
    await client.close()
    assert len(seen) == attempts


@pytest.mark.parametrize(
    ("error", "reason", "permanent"),
    [
        (UnavailableError("VPS answered 503"), "unavailable", False),
        (InvalidResponse("VPS answered with no JSON"), "invalid_response", False),
        (UnexpectedAnswer("VPS answered with wrong fields"), "invalid_response", True),
        (Refused("VPS refused with 422", status=422), "invalid_response", True),
        (PermanentError("something else"), "unavailable", True),
    ],
    ids=["unavailable", "broken", "wrong-shape", "refused", "other"],
)
def test_a_check_given_up_is_answered_with_check_failed(
    error: BaseException, reason: str, permanent: bool
) -> None:
    message = check(TOWN.children[5])
    client, _ = mocked(VpsClient, httpx.Response(500), url=URL)
    [failed] = ResidenceChecks(client).given_up(message, error)
    assert isinstance(failed, ResidenceCheckFailed)
    assert (failed.reason, failed.permanent) == (reason, permanent)
    assert failed.causation_id == message.event_id
    assert failed.correlation_id == message.correlation_id
    assert failed.child_ref == message.child_ref and failed.as_of == AS_OF
    assert str(error) in failed.detail


# --------------------------------------------------------------------------- through the consumer


def record(message: CheckResidence, offset: int = 0) -> Incoming:
    return Incoming(
        CHECKS.name, 0, offset, CHECKS.key_of(message), message.model_dump_json().encode(), ()
    )


@asynccontextmanager
async def processor(
    tmp_path: Path, transport: httpx.AsyncBaseTransport
) -> AsyncIterator[BatchProcessor]:
    """The adapter's handlers as its consumer runs them, against ``transport``."""
    store = await Store.open(tmp_path / "vps-adapter.sqlite3")
    client = VpsClient(URL, policy=FAST, transport=transport)
    spec = service(client, "riga")
    try:
        yield BatchProcessor(
            VPS,
            {h.topic.name: h for h in spec.handlers},
            store,
            Metrics.create(),
            schedule=RetrySchedule(max_attempts=2, first_delay=0, max_delay=0),
        )
    finally:
        await client.close()
        await store.close()


async def test_the_consumer_publishes_the_answer_and_skips_a_redelivery(tmp_path: Path) -> None:
    child = children_where(False, 1)[0]
    message = check(child)
    app = create_app(TOWN, clock=clock)
    async with processor(tmp_path, httpx.ASGITransport(app=app)) as consumer:
        rows = await consumer.process([record(message)])
        again = await consumer.process([record(message, 1)])
    body = emitted(rows, message)
    assert body["event_type"] == "ResidenceChecked" and len(body["residences"]) == 1 + len(
        child.guardians
    )
    assert again == []  # the inbox saw it


async def test_garbage_from_the_register_is_dead_lettered_and_answered_as_failed(
    tmp_path: Path,
) -> None:
    child = children_where(True, 2)[0]
    message = check(child)
    garbage = httpx.MockTransport(
        lambda r: httpx.Response(200, json=_answer(child, municipality=""))
    )
    async with processor(tmp_path, garbage) as consumer:
        rows = await consumer.process([record(message)])
    [dead] = [r for r in rows if r.topic == DEAD_LETTERS]
    assert header(dead.headers, "dlq-source-topic") == CHECKS.name
    assert header(dead.headers, "dlq-error-type") == "UnexpectedAnswer"
    assert "persons.0.residence.municipality" in (header(dead.headers, "dlq-error") or "")
    assert dead.value == message.model_dump_json().encode()  # the request as it came
    body = emitted(rows, message)
    assert body["event_type"] == "ResidenceCheckFailed"
    assert (body["reason"], body["permanent"]) == ("invalid_response", True)


async def test_an_unavailable_register_parks_the_check_then_answers_unavailable(
    tmp_path: Path,
) -> None:
    message = check(TOWN.children[6])
    app = create_app(TOWN, Faults(error_rate=1), clock=clock)
    async with processor(tmp_path, httpx.ASGITransport(app=app)) as consumer:
        first = await consumer.process([record(message)])
        [parked] = first
        assert parked.topic == retry_topic(VPS)
        assert not [r for r in first if r.topic == ANSWERS]  # nothing answered yet
        redelivered = Incoming(parked.topic, 0, 0, parked.key, parked.value, parked.headers)
        second = await consumer.process([redelivered])
    assert isinstance(app, FaultInjection) and app.injected["error"] == 2 * FAST.attempts
    [dead] = [r for r in second if r.topic == DEAD_LETTERS]
    assert header(dead.headers, "dlq-attempts") == "2"
    body = emitted(second, message)
    assert body["event_type"] == "ResidenceCheckFailed"
    assert (body["reason"], body["permanent"]) == ("unavailable", False)
    assert "503" in body["detail"]


async def test_another_municipalitys_requests_are_left_to_its_own_adapter() -> None:
    class Untouchable:
        async def residences(self, *_: object) -> None:
            raise AssertionError("the register of another municipality was asked")

        async def show_offer(self, *_: object) -> None:
            raise AssertionError("another municipality's e-service was called")

    client: Any = Untouchable()
    check = CheckResidence.new(
        producer=ALLOCATION,
        municipality="liepaja",
        child_ref="CH-0123456789ab",
        child_personal_code=old_format_code(date(2022, 1, 10), random.Random(1)),
        as_of=date(2026, 9, 1),
    )
    handler = ResidenceChecks(client, "riga")
    assert await handler.fetch(check) is None
    handler.apply(None, check, None)  # type: ignore[arg-type]  # nothing emitted, nothing asked
    offer = offer_made(municipality="liepaja")
    assert await Offers(client, "riga").fetch(offer) is None
