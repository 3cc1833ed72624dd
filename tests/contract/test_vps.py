"""The VPS adapter against the VPS simulator: applications, residence and answers in through
the feed, offers, deadlines and rounds out to the e-service, and every fault the simulator
can inject."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import ValidationError

import tests.allocation_messages
from adapters.vps import FeedReset, OfferNotShownYet, VpsClient, VpsFeed, message_for, service
from adapters.vps.service import Offers, Rounds
from hub.errors import PermanentError, TransientError
from hub.reliability.consumer import Unit
from hub.reliability.poller import SCHEMA, page_writes, position
from hub.reliability.retry import InvalidResponse, RetryPolicy, UnavailableError, UnexpectedAnswer
from hub.reliability.store import Store
from schemas.allocation import (
    InstitutionFill,
    OfferDeadlineSet,
    OfferMade,
    OfferRevoked,
    RoundCompleted,
)
from schemas.topics import BY_NAME, VPS
from simulators.faults import Faults
from simulators.messages import application_form
from simulators.municipality import Child, SyntheticMunicipality
from simulators.serving import serving
from simulators.vps.app import BROKEN_EMAIL, ApplicationIn, Register, create_app
from tests.allocation_messages import deadline_set
from tests.contract.common import FAST, NO_FAULT

TOWN = SyntheticMunicipality("riga", seed=4, children=12, institutions=3, admission_year=2026)
PATIENT = RetryPolicy(attempts=12, initial_wait=0.01, max_wait=0.05, max_seconds=20)


def form(child: Child, **changes: Any) -> dict[str, Any]:
    return application_form(child) | changes


@pytest_asyncio.fixture
async def vps() -> AsyncIterator[str]:
    async with serving(create_app(TOWN), name="vps") as served:
        yield served.url


async def read_all(feed: VpsFeed) -> list[Any]:
    messages, cursor = [], None
    while True:
        page = await feed.poll(cursor)
        for item in page.items:
            unit = Unit()
            feed.apply(unit, item)
            messages += [BY_NAME[r.topic].parse(r.value) for r in unit.outbox]
        cursor = page.position
        if not page.more:
            return messages


async def test_applications_residence_and_answers_come_through_the_feed(vps: str) -> None:
    first, second, third = TOWN.children[:3]
    async with httpx.AsyncClient(base_url=vps) as http:
        assert (await http.post("/v1/applications", json=form(first))).status_code == 201
        on_behalf = form(
            second,
            channel="client_service_centre",
            staff_id="KAC-7",
            power_of_attorney="PA-2026-15",
        )
        accepted = (await http.post("/v1/applications", json=on_behalf)).json()
        third_app = (await http.post("/v1/applications", json=form(third))).json()
        change = {"institutions": [TOWN.institutions[2].institution_id]}
        patch = await http.patch(f"/v1/applications/{accepted['application_id']}", json=change)
        assert patch.status_code == 204
        withdraw = await http.post(
            f"/v1/applications/{third_app['application_id']}/withdraw", json={}
        )
        assert withdraw.status_code == 204

    async with VpsClient(vps, policy=FAST) as client:
        feed = VpsFeed(client, "riga")
        feed.page_size = 4  # several pages
        messages = await read_all(feed)
        kinds = [m.event_type for m in messages]
        assert kinds.count("InstitutionRegistered") == 3
        assert kinds.count("ApplicationSubmitted") == 3 and kinds.count("ResidenceDeclared") == 3
        assert kinds.count("ApplicationChanged") == kinds.count("ApplicationWithdrawn") == 1
        staff_made = next(
            m
            for m in messages
            if m.event_type == "ApplicationSubmitted" and m.submitted_via == "client_service_centre"
        )
        assert staff_made.power_of_attorney_ref == "PA-2026-15"
        assert staff_made.child_personal_code.reveal() == second.personal_code
        assert staff_made.child_ref == f"CH-{accepted['child_id']}"
        # Read again: the same event ids (consumers skip the repeats).
        again = await read_all(VpsFeed(client, "riga"))
        assert [m.event_id for m in again] == [m.event_id for m in messages]

        # An offer shown in the e-service, answered by the parents, read back from the feed.
        offer = offer_made(
            child_ref=staff_made.child_ref,
            application_id=staff_made.application_id,
            institution_id=TOWN.institutions[2].institution_id,
            group_code=TOWN.institutions[2].groups[0].code,
        )
        offers = Offers(client)
        await offers.fetch(offer)
        async with httpx.AsyncClient(base_url=vps) as http:
            shown = (await http.get(f"/v1/offers/{offer.offer_id}")).json()
            assert shown["status"] == "live" and shown["child_id"] == accepted["child_id"]
            answer = {"verdict": "decline"}
            url = f"/v1/offers/{offer.offer_id}/answer"
            assert (await http.post(url, json=answer)).status_code == 204
            assert (await http.post(url, json=answer)).status_code == 409  # answered already
        answered = (await read_all(VpsFeed(client, "riga")))[-1]
        assert answered.event_type == "ParentDeclined" and answered.offer_id == offer.offer_id
        revoked = OfferRevoked.new(
            producer="allocation",
            municipality="riga",
            offer_id=offer.offer_id,
            child_ref=offer.child_ref,
            reason="superseded",
        )
        await offers.fetch(revoked)
        async with httpx.AsyncClient(base_url=vps) as http:
            assert (await http.get(f"/v1/offers/{offer.offer_id}")).json()["status"] == "revoked"


@pytest.mark.parametrize(
    ("changes", "status", "error"),
    [
        ({"channel": "client_service_centre"}, 422, "power_of_attorney_required"),
        ({"institutions": ["PII-404"]}, 422, "unknown_institution"),
        ({"language": "xx"}, 422, "invalid_language"),
        ({"child_personal_code": "161175-19990"}, 422, None),  # wrong check digit
    ],
)
async def test_the_e_service_refuses_bad_applications(
    vps: str, changes: dict[str, Any], status: int, error: str | None
) -> None:
    async with httpx.AsyncClient(base_url=vps) as http:
        answer = await http.post("/v1/applications", json=form(TOWN.children[5], **changes))
    assert answer.status_code == status
    if error:
        assert answer.json()["detail"]["error"] == error


async def test_a_child_is_queued_once(vps: str) -> None:
    async with httpx.AsyncClient(base_url=vps) as http:
        assert (await http.post("/v1/applications", json=form(TOWN.children[6]))).status_code == 201
        again = await http.post("/v1/applications", json=form(TOWN.children[6]))
    assert again.status_code == 409 and again.json()["detail"]["error"] == "already_queued"


async def test_a_malformed_entry_is_dead_lettered_and_the_feed_goes_on(
    vps: str, tmp_path: Path
) -> None:
    broken = form(TOWN.children[7])
    broken["guardians"][0]["email"] = BROKEN_EMAIL
    async with httpx.AsyncClient(base_url=vps) as http:
        assert (await http.post("/v1/applications", json=broken)).status_code == 201
        assert (await http.post("/v1/applications", json=form(TOWN.children[8]))).status_code == 201
    store = await Store.open(tmp_path / "vps.sqlite3", schema=SCHEMA)
    try:
        async with VpsClient(vps, policy=FAST) as client:
            feed = VpsFeed(client, "riga")
            page = await feed.poll(await position(store, feed.feed))
            writes, refused = page_writes("vps-adapter", feed, page, datetime.now(UTC))
            await store.commit("vps-adapter", writes)
            assert refused == 1
            dead = [r for r in writes.outbox if r.topic == "hub.deadletter.v1"]
            assert len(dead) == 1
            labels = dict(dead[0].headers)
            assert labels["dlq-reason"] == b"invalid_message"
            source = labels["dlq-source-topic"].decode()
            assert "vps-adapter" in source and source.endswith("vps-events")
            assert TOWN.children[7].personal_code.encode() not in labels["dlq-error"]
            published = [json.loads(r.value) for r in writes.outbox if r.topic != dead[0].topic]
            assert any(m.get("child_personal_code") for m in published)  # the next one went on
            # The position is committed with the page: the next poll starts after it.
            assert await position(store, feed.feed) == page.position
            assert (await feed.poll(page.position)).items == []
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("faults", "error"),
    [
        (Faults(error_rate=1), UnavailableError),
        (Faults(rate_limit_rate=1, retry_after_seconds=0), UnavailableError),
        (Faults(timeout_rate=1, timeout_seconds=2), UnavailableError),
        (Faults(malformed_rate=1), InvalidResponse),
    ],
)
async def test_every_fault_is_a_clear_error(faults: Faults, error: type[Exception]) -> None:
    async with (
        serving(create_app(TOWN, faults)) as served,
        VpsClient(served.url, timeout=0.3, policy=FAST) as client,
    ):
        with pytest.raises(error) as raised:
            await client.events(0)
    if faults.rate_limit_rate:
        assert raised.value.retry_after == 0  # type: ignore[attr-defined]


async def test_half_the_requests_failing_still_reads_the_whole_feed() -> None:
    patient = RetryPolicy(attempts=12, initial_wait=0.01, max_wait=0.05, max_seconds=20)
    faults = Faults.spread(0.5, seed=3, timeout_seconds=1)
    async with (
        serving(create_app(TOWN, faults)) as served,
        VpsClient(served.url, timeout=0.3, policy=patient) as client,
    ):
        feed = VpsFeed(client, "riga")
        feed.page_size = 1
        messages = await read_all(feed)
    assert [m.institution_id for m in messages] == [i.institution_id for i in TOWN.institutions]


async def test_a_feed_that_skips_entries_is_refused() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        entry = {"seq": 5, "type": "x", "at": "2026-09-01T10:00:00Z", "data": {}}
        return httpx.Response(200, json={"feed": "f1", "events": [entry], "last": 5})

    transport = httpx.MockTransport(answer)
    async with VpsClient("http://vps.test", policy=FAST, transport=transport) as client:
        with pytest.raises(UnexpectedAnswer, match="skipped"):
            await client.events(0)
        page = await client.events(4)
    assert page.events[0]["type"] == "x"  # entries stay raw: the type is checked per entry
    with pytest.raises(ValidationError, match="type"):
        message_for(page.events[0], "riga", page.feed)


# --- feed entries: checked one by one -------------------------------------------------------


def clock() -> datetime:
    return datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def raw_entries(*children: Child) -> tuple[str, list[dict[str, Any]]]:
    """The simulator's feed (institutions, then each child's application and residence)."""
    register = Register(TOWN, clock)
    for child in children:
        register.submit(ApplicationIn.model_validate(form(child)))
    return register.feed_id, [e.model_dump(mode="json") for e in register.events]


def first_of(entries: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return json.loads(json.dumps(next(e for e in entries if e["type"] == kind)))  # a deep copy


@pytest.mark.parametrize(
    ("kind", "field", "garbage"),
    [
        ("application.submitted", "claims", "x"),
        ("institution.registered", "groups", ["x"]),
        ("application.submitted", "institutions", 5),
        ("application.submitted", "guardians", [None]),
        ("residence.declared", "declared_from", ["2026-01-01"]),
    ],
)
def test_an_entry_with_wrong_json_types_is_a_validation_error(
    kind: str, field: str, garbage: Any
) -> None:
    feed, entries = raw_entries(TOWN.children[0])
    entry = first_of(entries, kind)
    assert message_for(entry, "riga", feed).producer == VPS  # the untouched entry maps
    entry["data"][field] = garbage
    with pytest.raises(ValidationError):
        message_for(entry, "riga", feed)


@pytest.mark.parametrize(
    "breakage",
    [{"type": "application.invented"}, {"at": "yesterday"}, {"data": "x"}, {"data": None}],
)
def test_an_entry_with_a_bad_envelope_is_a_validation_error(breakage: dict[str, Any]) -> None:
    feed, entries = raw_entries()
    with pytest.raises(ValidationError):
        message_for(entries[0] | breakage, "riga", feed)


def page_answer(feed: str, entries: list[dict[str, Any]]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        after = int(request.url.params["after"])
        limit = int(request.url.params["limit"])
        body = {"feed": feed, "events": entries[after : after + limit], "last": len(entries)}
        return httpx.Response(200, json=body)

    return httpx.MockTransport(answer)


async def test_one_bad_entry_among_good_ones_is_dead_lettered_and_the_rest_map() -> None:
    feed, entries = raw_entries(TOWN.children[0], TOWN.children[1])
    entries[1]["data"]["groups"] = ["x"]  # the second institution
    entries[3]["at"] = "not a time"  # the first application
    entries[4]["data"]["claims"] = "x"  # not a submission: residence ignores claims
    transport = page_answer(feed, entries)
    async with VpsClient("http://vps.test", policy=FAST, transport=transport) as client:
        feed_poller = VpsFeed(client, "riga")
        page = await feed_poller.poll(None)
    assert len(page.items) == len(entries) == 7 and page.position == f"{feed}:7"
    writes, refused = page_writes("vps-adapter", feed_poller, page, datetime.now(UTC))
    assert refused == 2
    dead = [r for r in writes.outbox if r.topic == "hub.deadletter.v1"]
    published = [json.loads(r.value) for r in writes.outbox if r.topic != "hub.deadletter.v1"]
    assert len(dead) == 2 and len(published) == 5
    assert [m["event_type"] for m in published] == [
        "InstitutionRegistered",
        "InstitutionRegistered",
        "ResidenceDeclared",
        "ApplicationSubmitted",
        "ResidenceDeclared",
    ]
    assert json.loads(dead[0].value)["data"]["groups"] == ["x"]  # the entry as VPS sent it


@pytest.mark.parametrize(
    ("events", "last", "match"),
    [
        ([{"type": "x"}], 1, "no integer seq"),
        ([{"seq": "1"}], 1, "no integer seq"),
        ([{"seq": True}], 1, "no integer seq"),
        ([{"seq": 1}, {"seq": 3}], 3, "skipped"),
        ([], 4, "sent none"),
    ],
)
async def test_a_page_with_bad_numbers_is_refused_as_a_whole(
    events: list[dict[str, Any]], last: int, match: str
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"feed": "f1", "events": events, "last": last})

    transport = httpx.MockTransport(answer)
    async with VpsClient("http://vps.test", policy=FAST, transport=transport) as client:
        with pytest.raises(UnexpectedAnswer, match=match):
            await client.events(0)


@pytest.mark.parametrize(
    "body", [{"events": [], "last": 0}, {"feed": "f1", "events": [1], "last": 1}, []]
)
async def test_a_page_that_is_not_a_feed_page_is_refused(body: Any) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    async with VpsClient("http://vps.test", policy=FAST, transport=transport) as client:
        with pytest.raises(UnexpectedAnswer):
            await client.events(0)


# --- feed ids: a reset feed is never read on silently ---------------------------------------


async def test_a_reset_feed_stops_the_poll_with_a_clear_permanent_error() -> None:
    async with (
        serving(create_app(TOWN), name="vps-a") as first,
        serving(create_app(TOWN), name="vps-b") as second,
        VpsClient(first.url, policy=FAST) as a,
        VpsClient(second.url, policy=FAST) as b,
    ):
        page = await VpsFeed(a, "riga").poll(None)
        feed_a, seq = page.position.split(":")
        assert seq == "3" and len(feed_a) == 12
        again = await VpsFeed(a, "riga").poll(page.position)
        assert again.items == [] and again.position == page.position and not again.more
        with pytest.raises(FeedReset, match="VPS feed was reset") as raised:
            await VpsFeed(b, "riga").poll(page.position)
        assert isinstance(raised.value, PermanentError)
        assert "review the position" in str(raised.value)
        # The same entries of two feeds are two events, not one seen twice.
        from_a = await read_all(VpsFeed(a, "riga"))
        from_b = await read_all(VpsFeed(b, "riga"))
        assert [m.institution_id for m in from_a] == [m.institution_id for m in from_b]
        assert not {m.event_id for m in from_a} & {m.event_id for m in from_b}
        # A position stored before feed ids is taken to be in the current feed.
        legacy = await VpsFeed(b, "riga").poll("2")
        assert [e.raw["seq"] for e in legacy.items] == [3]
        assert legacy.position.endswith(":3") and not legacy.position.startswith(feed_a)


async def test_a_feed_shorter_than_the_position_is_a_reset() -> None:
    feed, entries = raw_entries()
    async with VpsClient("http://vps.test", transport=page_answer(feed, entries)) as client:
        with pytest.raises(FeedReset, match="only 3 entries"):
            await VpsFeed(client, "riga").poll(f"{feed}:9")
        with pytest.raises(PermanentError):
            await VpsFeed(client, "riga").poll("garbled:")


# --- child ids -------------------------------------------------------------------------------


async def test_child_ids_are_issued_at_random_and_one_child_is_one_child_however_written(
    vps: str,
) -> None:
    child = TOWN.children[9]
    code = child.personal_code
    async with httpx.AsyncClient(base_url=vps) as http:
        first = await http.post("/v1/applications", json=form(child))
        assert first.status_code == 201
        unhyphenated = form(child, child_personal_code=code.replace("-", ""))
        again = await http.post("/v1/applications", json=unhyphenated)
        assert again.status_code == 409 and again.json()["detail"]["error"] == "already_queued"
        moved = {
            "personal_code": code.replace("-", ""),
            "address_code": child.address_code,
            "territory_code": "0100000",
            "municipality": "riga",
            "declared_from": "2026-02-01",
        }
        assert (await http.post("/v1/residence", json=moved)).status_code == 204
    expected = random.Random(f"{TOWN.code}:{TOWN.seed}:child-ids").getrandbits(48)
    assert first.json()["child_id"] == f"{expected:012x}"


async def test_an_invalid_sibling_code_is_refused(vps: str) -> None:
    claims = {"large_family": True, "sibling_personal_codes": ["161175-19990"]}
    async with httpx.AsyncClient(base_url=vps) as http:
        answer = await http.post("/v1/applications", json=form(TOWN.children[10], claims=claims))
    assert answer.status_code == 422
    assert "sibling_personal_codes" in json.dumps(answer.json())


# --- offers, deadlines and rounds out to the e-service ---------------------------------------


def offer_made(**changes: Any) -> OfferMade:
    """An offer of a place in one of the town's institutions."""
    institution = TOWN.institutions[0]
    fields: dict[str, Any] = {
        "child_ref": "CH-0123456789ab",
        "application_id": "APP-2026-000001",
        "institution_id": institution.institution_id,
        "group_code": institution.groups[0].code,
    }
    return tests.allocation_messages.offer_made(**(fields | changes))


def revoked(offer: OfferMade) -> OfferRevoked:
    return OfferRevoked.new(
        producer="allocation",
        municipality="riga",
        offer_id=offer.offer_id,
        child_ref=offer.child_ref,
        reason="superseded",
    )


def deadline(offer: OfferMade, respond_by: date) -> OfferDeadlineSet:
    return deadline_set(offer, notified_on=date(2026, 6, 1), respond_by=respond_by)


async def test_an_offer_answered_with_200_instead_of_204_is_not_taken_as_shown() -> None:
    offer = offer_made()
    async with (
        serving(create_app(TOWN, Faults(malformed_rate=1))) as served,
        VpsClient(served.url, policy=FAST) as client,
    ):
        with pytest.raises(InvalidResponse):
            await Offers(client).fetch(offer)
        with pytest.raises(InvalidResponse):
            await client.close_offer(str(offer.offer_id), "revoked")
        async with httpx.AsyncClient(base_url=served.url, headers=NO_FAULT) as http:
            assert (await http.get(f"/v1/offers/{offer.offer_id}")).status_code == 404


async def test_with_half_the_requests_failing_every_shown_offer_lands() -> None:
    app = create_app(TOWN, Faults.spread(0.5, seed=11, timeout_seconds=1))
    offers = [offer_made() for _ in range(12)]
    async with (
        serving(app) as served,
        VpsClient(served.url, timeout=0.3, policy=PATIENT) as client,
    ):
        handler = Offers(client)
        for offer in offers:
            await handler.fetch(offer)
        async with httpx.AsyncClient(base_url=served.url, headers=NO_FAULT) as http:
            for offer in offers:
                shown = await http.get(f"/v1/offers/{offer.offer_id}")
                assert shown.status_code == 200 and shown.json()["status"] == "live"
    assert app.injected["malformed"] > 0 and app.injected["error"] > 0


async def test_a_closed_offer_is_not_reopened(vps: str) -> None:
    offer = offer_made()
    async with VpsClient(vps, policy=FAST) as client, httpx.AsyncClient(base_url=vps) as http:
        offers = Offers(client)
        body = {
            "application_id": offer.application_id,
            "child_id": "0123456789ab",
            "institution_id": offer.institution_id,
            "group_code": offer.group_code,
        }
        assert await client.show_offer(str(offer.offer_id), body) is True
        await offers.fetch(revoked(offer))
        assert await client.show_offer(str(offer.offer_id), body) is False
        await offers.fetch(offer)  # the OfferMade again (a replay): done, not an error
        answer = await http.put(f"/v1/offers/{offer.offer_id}", json=body)
        assert answer.status_code == 409 and answer.json()["detail"]["error"] == "closed"
        assert (await http.get(f"/v1/offers/{offer.offer_id}")).json()["status"] == "revoked"


async def test_closing_or_timing_an_offer_not_shown_yet_is_transient(vps: str) -> None:
    offer = offer_made()
    async with VpsClient(vps, policy=FAST) as client, httpx.AsyncClient(base_url=vps) as http:
        offers = Offers(client)
        for early in (revoked(offer), deadline(offer, date(2026, 6, 16))):
            with pytest.raises(OfferNotShownYet) as raised:
                await offers.fetch(early)
            assert isinstance(raised.value, TransientError)
        url = f"/v1/offers/{offer.offer_id}/status"
        answer = await http.put(url, json={"status": "revoked"})
        assert answer.status_code == 404 and answer.json()["detail"]["error"] == "unknown_offer"
        # Once the OfferMade is through, the parked messages go through too.
        await offers.fetch(offer)
        await offers.fetch(deadline(offer, date(2026, 6, 16)))
        shown = (await http.get(f"/v1/offers/{offer.offer_id}")).json()
        assert shown["respond_by"] == "2026-06-16" and shown["status"] == "live"
        await offers.fetch(revoked(offer))
        assert (await http.get(f"/v1/offers/{offer.offer_id}")).json()["status"] == "revoked"


async def test_a_round_summary_reaches_the_e_service(vps: str) -> None:
    assert VPS in BY_NAME["allocation.rounds.v1"].consumers
    spec = service(VpsClient(vps, policy=FAST), "riga")
    assert {h.topic.name for h in spec.handlers} == {
        "allocation.offers.v1",
        "allocation.rounds.v1",
        "allocation.applications.v1",
        "vps.population.checks.v1",
    }
    first, second = TOWN.institutions[:2]
    summary = RoundCompleted.new(
        producer="allocation",
        municipality="riga",
        round_id=uuid.uuid4(),
        round_date=date(2026, 5, 4),
        applications_considered=40,
        offers_made=31,
        children_unplaced=9,
        lottery_seed=12345,
        institutions=(
            InstitutionFill(
                institution_id=first.institution_id, capacity=20, offered=18, accepted=2
            ),
            InstitutionFill(
                institution_id=second.institution_id, capacity=11, offered=11, accepted=0
            ),
        ),
    )
    rounds = next(h for h in spec.handlers if isinstance(h, Rounds))
    try:
        await rounds.fetch(summary)
        await rounds.fetch(summary)  # again (a replay): the same summary
    finally:
        await spec.pollers[0].close()
    async with httpx.AsyncClient(base_url=vps) as http:
        stored = (await http.get(f"/v1/rounds/{summary.round_id}")).json()
    assert stored["offers_made"] == 31 and stored["children_unplaced"] == 9
    assert stored["institutions"] == [
        {"institution_id": first.institution_id, "capacity": 20, "offered": 18, "accepted": 2},
        {"institution_id": second.institution_id, "capacity": 11, "offered": 11, "accepted": 0},
    ]
