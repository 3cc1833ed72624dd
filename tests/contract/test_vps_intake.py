"""Intake in the VPS e-service (the municipality's limit of institutions, no change once the
child is on an admission list, applications by an authorised person, the hub's refusals) and
the VPS adapter's side of it, in process over httpx's ASGI transport."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from adapters.vps import UnknownApplication, VpsClient, VpsFeed, message_for, service
from adapters.vps.service import Refusals
from hub.allocation.rules import load_rules
from hub.errors import PermanentError
from hub.reliability.poller import page_writes
from schemas.applications import ApplicationRefused, ApplicationSubmitted
from schemas.topics import BY_NAME, DEAD_LETTERS, VPS
from simulators.faults import FaultInjection
from simulators.messages import application_form
from simulators.municipality import SyntheticMunicipality
from simulators.vps.app import create_app
from tests.contract.common import FAST

TOWN = SyntheticMunicipality("riga", seed=6, children=12, institutions=5, admission_year=2026)
LIMIT = load_rules(TOWN.code).max_institutions
INSTITUTIONS = [i.institution_id for i in TOWN.institutions]
URL = "http://vps.test"
AGENT = "161175-19997"


def clock() -> datetime:
    return datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def form(n: int, **changes: Any) -> dict[str, Any]:
    return application_form(TOWN.children[n]) | changes


def authorisation(**changes: Any) -> dict[str, Any]:
    return {
        "issuer": "orphans_court",
        "issuer_name": "Rīgas bāriņtiesa",
        "number": "BT-2026/17",
        "valid_from": "2026-01-15",
        "valid_until": "2027-01-14",
        "agent_personal_code": AGENT,
    } | changes


@asynccontextmanager
async def vps(
    max_institutions: int | None = LIMIT,
) -> AsyncIterator[tuple[httpx.AsyncClient, VpsClient, FaultInjection]]:
    """The e-service with the municipality's limit, in process; a plain client and the
    adapter's."""
    app = create_app(TOWN, clock=clock, max_institutions=max_institutions)
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url=URL) as http,
        VpsClient(URL, policy=FAST, transport=transport) as client,
    ):
        yield http, client, app


async def feed(http: httpx.AsyncClient) -> dict[str, Any]:
    return (await http.get("/v1/events", params={"limit": 1000})).json()


def assert_cites(detail: dict[str, Any], *words: str) -> None:
    assert set(detail["message"]) == {"lv", "en"}
    for word in words:
        assert word in detail["message"]["lv"] and word in detail["message"]["en"]


# --------------------------------------------------------------------------- the limit


def test_the_limit_is_the_municipalitys_rule() -> None:
    assert 1 <= LIMIT < len(INSTITUTIONS)  # the tests below list one more than allowed


async def test_an_application_listing_more_institutions_than_the_rules_allow_is_refused() -> None:
    async with vps() as (http, _, _):
        before = (await feed(http))["last"]
        refused = await http.post("/v1/applications", json=form(0, institutions=INSTITUTIONS))
        too_many = INSTITUTIONS[: LIMIT + 1]
        refused_by_one = await http.post("/v1/applications", json=form(0, institutions=too_many))
        after = (await feed(http))["last"]
        accepted = await http.post(
            "/v1/applications", json=form(0, institutions=INSTITUTIONS[:LIMIT])
        )
    for answer, listed in ((refused, len(INSTITUTIONS)), (refused_by_one, LIMIT + 1)):
        assert answer.status_code == 422
        detail = answer.json()["detail"]
        assert detail["error"] == "too_many_institutions"
        assert detail["limit"] == LIMIT and detail["listed"] == listed
        assert_cites(detail, str(LIMIT))
        assert "saistošie noteikumi" in detail["message"]["lv"]
        assert "binding regulations" in detail["message"]["en"]
    assert after == before  # nothing reached the feed
    assert accepted.status_code == 201


async def test_a_change_to_more_institutions_than_the_rules_allow_is_refused() -> None:
    async with vps() as (http, _, _):
        accepted = (await http.post("/v1/applications", json=form(1))).json()
        url = f"/v1/applications/{accepted['application_id']}"
        before = await feed(http)
        refused = await http.patch(url, json={"institutions": INSTITUTIONS[: LIMIT + 1]})
        after = await feed(http)
        shown = (await http.get(url)).json()
        allowed = await http.patch(url, json={"institutions": INSTITUTIONS[-LIMIT:]})
        changed = (await http.get(url)).json()
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert detail["error"] == "too_many_institutions" and detail["limit"] == LIMIT
    assert_cites(detail, str(LIMIT))
    assert after["last"] == before["last"]
    assert shown["institutions"] == list(TOWN.children[1].choices)  # unchanged
    assert allowed.status_code == 204 and changed["institutions"] == INSTITUTIONS[-LIMIT:]


async def test_without_a_limit_only_the_protocols_bound_holds() -> None:
    async with vps(max_institutions=None) as (http, _, _):
        accepted = await http.post("/v1/applications", json=form(2, institutions=INSTITUTIONS))
        eleven = await http.post("/v1/applications", json=form(3, institutions=["PII-001"] * 11))
    assert accepted.status_code == 201
    assert eleven.status_code == 422 and eleven.json()["detail"][0]["type"] == "too_long"


# --------------------------------------------------------------------------- admission list


def offer(accepted: dict[str, Any], status: str = "live") -> dict[str, Any]:
    institution = TOWN.institutions[0]
    return {
        "application_id": accepted["application_id"],
        "child_id": accepted["child_id"],
        "institution_id": institution.institution_id,
        "group_code": institution.groups[0].code,
        "status": status,
    }


@pytest.mark.parametrize(
    "change",
    [{"institutions": [INSTITUTIONS[0]]}, {"desired_start_date": "2027-09-01"}],
    ids=["institutions", "start-date"],
)
async def test_no_change_once_the_child_is_on_an_admission_list(change: dict[str, Any]) -> None:
    async with vps() as (http, _, _):
        accepted = (await http.post("/v1/applications", json=form(4))).json()
        other = (await http.post("/v1/applications", json=form(5))).json()
        url = f"/v1/applications/{accepted['application_id']}"
        offer_id = str(uuid.uuid4())
        assert (await http.put(f"/v1/offers/{offer_id}", json=offer(accepted))).status_code == 204
        live = await http.patch(url, json=change)
        # Another child's offer is not this child's list.
        unlisted = await http.patch(f"/v1/applications/{other['application_id']}", json=change)
        status = f"/v1/offers/{offer_id}/status"
        await http.put(status, json={"status": "declined"})
        declined = await http.patch(url, json=change)
        second = str(uuid.uuid4())
        await http.put(f"/v1/offers/{second}", json=offer(accepted))
        await http.put(f"/v1/offers/{second}/status", json={"status": "accepted"})
        taken = await http.patch(url, json=change)
        events = (await feed(http))["events"]
    for refused in (live, taken):
        assert refused.status_code == 409
        detail = refused.json()["detail"]
        assert detail["error"] == "on_admission_list"
        assert_cites(detail, "Nr. 191", "16")
        assert "pretendentu sarakstā" in detail["message"]["lv"]
        assert "applicants' list" in detail["message"]["en"]
    assert unlisted.status_code == declined.status_code == 204
    changed = [e["data"]["application_id"] for e in events if e["type"] == "application.changed"]
    assert changed == [other["application_id"], accepted["application_id"]]


# --------------------------------------------------------------------------- authorisation


async def test_an_authorised_persons_application_carries_the_authorisation() -> None:
    async with vps() as (http, client, _):
        body = form(6, authorisation=authorisation())
        accepted = (await http.post("/v1/applications", json=body)).json()
        events = (await feed(http))["events"]
        view = (await http.get(f"/v1/applications/{accepted['application_id']}")).json()
        [item] = [
            i
            for i in (await VpsFeed(client, "riga").poll(None)).items
            if i.raw["type"] == "application.submitted"
        ]
    [entry] = [e for e in events if e["type"] == "application.submitted"]
    assert entry["data"]["authorisation"] == authorisation()
    assert view["authorised"] is True and AGENT not in json.dumps(view)
    message = message_for(item.raw, "riga", item.feed)
    assert isinstance(message, ApplicationSubmitted) and message.authorisation is not None
    assert message.authorisation.issuer == "orphans_court"
    assert message.authorisation.issuer_name == "Rīgas bāriņtiesa"
    assert message.authorisation.number == "BT-2026/17"
    assert message.authorisation.valid_from == date(2026, 1, 15)
    assert message.authorisation.valid_until == date(2027, 1, 14)
    assert message.authorisation.agent_personal_code.reveal() == AGENT
    assert AGENT not in repr(message)
    plain = message_for(
        next(e for e in events if e["type"] == "institution.registered"), "riga", item.feed
    )
    assert plain.event_type == "InstitutionRegistered"


@pytest.mark.parametrize(
    "changes",
    [
        {"valid_until": "2025-12-31"},
        {"issuer": "police"},
        {"number": "BT 17"},
        {"agent_personal_code": "161175-19990"},
        {"issuer_name": ""},
    ],
    ids=["ends-before-it-starts", "issuer", "number", "agent-code", "no-issuer-name"],
)
async def test_a_malformed_authorisation_is_refused_by_the_e_service(
    changes: dict[str, Any],
) -> None:
    async with vps() as (http, _, _):
        answer = await http.post(
            "/v1/applications", json=form(7, authorisation=authorisation(**changes))
        )
    assert answer.status_code == 422
    assert "authorisation" in json.dumps(answer.json()["detail"])


@pytest.mark.parametrize(
    "changes",
    [
        {"valid_until": "2025-12-31"},
        {"issuer": "police"},
        {"number": "BT 17"},
        {"agent_personal_code": "161175-19990"},
        {"valid_from": None},
    ],
    ids=["ends-before-it-starts", "issuer", "number", "agent-code", "no-start"],
)
async def test_a_malformed_authorisation_in_the_feed_dead_letters_that_entry(
    changes: dict[str, Any],
) -> None:
    async with vps() as (http, client, _):
        await http.post("/v1/applications", json=form(8, authorisation=authorisation()))
        await http.post("/v1/applications", json=form(9))
        poller = VpsFeed(client, "riga")
        page = await poller.poll(None)
    broken = next(i for i in page.items if i.raw["type"] == "application.submitted")
    broken.raw["data"]["authorisation"] |= changes  # as a faulty VPS release might send it
    with pytest.raises(ValidationError):
        message_for(broken.raw, "riga", broken.feed)
    writes, refused = page_writes(VPS, poller, page, datetime.now(UTC))
    assert refused == 1
    [dead] = [r for r in writes.outbox if r.topic == DEAD_LETTERS]
    labels = dict(dead.headers)
    assert labels["dlq-reason"] == b"invalid_message"
    assert b"authorisation" in labels["dlq-error"]
    assert b"161175" not in labels["dlq-error"]
    published = [json.loads(r.value) for r in writes.outbox if r.topic != DEAD_LETTERS]
    kinds = [m["event_type"] for m in published]
    assert kinds.count("ApplicationSubmitted") == 1  # the other application went on
    assert kinds.count("ResidenceDeclared") == 2


# --------------------------------------------------------------------------- refusals


REFUSAL = {
    "reason": "authorisation_refused",
    "authorisation_reason": "expired",
    "detail": "Pilnvarojums vairs nav spēkā. / The authorisation is no longer valid.",
    "refused_at": "2026-03-03T10:00:00+00:00",
}


async def test_a_refused_application_is_inactive_shows_why_and_the_child_may_apply_again() -> None:
    async with vps() as (http, _, _):
        accepted = (await http.post("/v1/applications", json=form(10))).json()
        url = f"/v1/applications/{accepted['application_id']}"
        first = await http.put(f"{url}/refusal", json=REFUSAL)
        shown = (await http.get(url)).json()
        again = await http.put(f"{url}/refusal", json=REFUSAL)
        shown_again = (await http.get(url)).json()
        change = await http.patch(url, json={"desired_start_date": "2027-09-01"})
        reapplied = await http.post("/v1/applications", json=form(10))
        unknown = await http.put("/v1/applications/APP-2026-999999/refusal", json=REFUSAL)
        bad = await http.put(f"{url}/refusal", json=REFUSAL | {"reason": "dislike"})
    assert first.status_code == again.status_code == 204
    assert shown["status"] == "refused" and shown == shown_again
    refusal = shown["refusal"]
    assert refusal["reason"] == "authorisation_refused"
    assert refusal["authorisation_reason"] == "expired"
    assert refusal["detail"] == REFUSAL["detail"]
    assert datetime.fromisoformat(refusal["refused_at"]) == datetime(2026, 3, 3, 10, tzinfo=UTC)
    assert change.status_code == 404
    assert reapplied.status_code == 201
    assert reapplied.json()["child_id"] == accepted["child_id"]
    assert reapplied.json()["application_id"] != accepted["application_id"]
    assert unknown.status_code == 404
    assert unknown.json()["detail"]["error"] == "unknown_application"
    assert bad.status_code == 422


def refused(application_id: str, child_ref: str) -> ApplicationRefused:
    return ApplicationRefused.new(
        producer="allocation",
        municipality="riga",
        application_id=application_id,
        child_ref=child_ref,
        reason="authorisation_refused",
        authorisation_reason="other_child",
        detail="Pilnvarojums izdots citam bērnam. / The authorisation is for another child.",
        refused_at=datetime(2026, 3, 4, 8, 30, tzinfo=UTC),
    )


async def test_the_adapter_shows_the_hubs_refusal_in_the_e_service() -> None:
    spec = service(VpsClient(URL), "riga")
    topics = {h.topic.name for h in spec.handlers}
    assert "allocation.applications.v1" in topics and "vps.population.checks.v1" in topics
    for topic in topics:
        assert VPS in BY_NAME[topic].consumers
    async with vps() as (http, client, app):
        accepted = (await http.post("/v1/applications", json=form(11))).json()
        message = refused(accepted["application_id"], f"CH-{accepted['child_id']}")
        handler = Refusals(client)
        await handler.fetch(message)
        await handler.fetch(message)  # a redelivery: the same refusal, no error
        shown = (await http.get(f"/v1/applications/{accepted['application_id']}")).json()
        asked = app.injected["none"]
        with pytest.raises(UnknownApplication) as raised:
            await handler.fetch(refused("APP-2026-999999", "CH-000000000001"))
        unknown_calls = app.injected["none"] - asked
    assert shown["status"] == "refused"
    assert shown["refusal"] == {
        "reason": "authorisation_refused",
        "authorisation_reason": "other_child",
        "detail": message.detail,
        "refused_at": "2026-03-04T08:30:00Z",
    }
    assert isinstance(raised.value, PermanentError)  # dead-lettered, not retried
    assert unknown_calls == 1 and "APP-2026-999999" in str(raised.value)
    await spec.pollers[0].close()
