"""The VPS adapter against the VPS simulator: applications, residence and answers in through
the feed, offers out to the e-service, and every fault the simulator can inject."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adapters.vps import VpsClient, VpsFeed, message_for
from adapters.vps.service import Offers
from hub.reliability.consumer import Unit
from hub.reliability.poller import SCHEMA, page_writes, position
from hub.reliability.retry import InvalidResponse, RetryPolicy, UnavailableError, UnexpectedAnswer
from hub.reliability.store import Store
from schemas.allocation import OfferMade, OfferRevoked
from schemas.topics import BY_NAME
from simulators.faults import Faults
from simulators.municipality import Child, SyntheticMunicipality
from simulators.serving import serving
from simulators.vps.app import BROKEN_EMAIL, create_app

TOWN = SyntheticMunicipality("riga", seed=4, children=12, institutions=3, admission_year=2026)
FAST = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05, max_seconds=5)


def form(child: Child, **changes: Any) -> dict[str, Any]:
    body = {
        "child_personal_code": child.personal_code,
        "child_birth_date": child.birth_date.isoformat(),
        "guardians": [
            {"personal_code": g.personal_code, "email": g.email, "phone": g.phone}
            for g in child.guardians
        ],
        "residence_address_code": child.address_code,
        "institutions": list(child.choices),
        "desired_start_date": child.desired_start_date.isoformat(),
        "language": child.language,
        "claims": {"large_family": child.large_family},
    }
    return body | changes


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
        offer = OfferMade.new(
            producer="allocation",
            municipality="riga",
            offer_id=uuid.uuid4(),
            child_ref=staff_made.child_ref,
            round_id=None,
            application_id=staff_made.application_id,
            institution_id=TOWN.institutions[2].institution_id,
            group_code=TOWN.institutions[2].groups[0].code,
            language="lv",
            start_date=datetime(2026, 9, 1, tzinfo=UTC).date(),
            response_days=15,
            preference_rank=1,
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
            assert labels["dlq-source-topic"] == b"vps-adapter:vps-events"
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
        return httpx.Response(200, json={"events": [entry], "last": 5})

    transport = httpx.MockTransport(answer)
    async with VpsClient("http://vps.test", policy=FAST, transport=transport) as client:
        with pytest.raises(UnexpectedAnswer, match="skipped"):
            await client.events(0)
        entry = await client.events(4)
    with pytest.raises(ValueError, match="unknown VPS feed entry type"):
        message_for(entry.events[0], "riga")
