"""The allocation service's read-only HTTP API over a service driven through its handlers.

A small season (registration, a round, accepts with VIIS enrolments and DVS
decisions, declines) runs on a real SQLite store with no broker; the API then
answers what the demo and operators read: offers, rounds, institutions, the
children left without a place, and the service's own checks, the store
reloaded against its memory among them. No answer holds a personal code.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.allocation.api import app
from hub.allocation.rules import load_rules
from hub.allocation.service import service
from hub.reliability.store import Store
from schemas.allocation import ParentAccepted, ParentDeclined
from schemas.base import Message
from schemas.documents import DocumentRegistered, RegisterDocument
from schemas.enrollment import EnrollmentRegistered, RegisterEnrollment
from schemas.topics import DVS, VIIS
from simulators.instant import answer
from simulators.municipality import SyntheticMunicipality
from tests.allocation_harness import Harness
from tests.allocation_messages import round_command
from tests.vps_feed import application_message, institution_message

RIGA = load_rules("riga")
CODE_SHAPE = re.compile(r"(?<![\w-])\d{6}-?\d{5}(?![\w-])")


def answer_all(message: Message) -> Message | None:
    """VIIS and GIS as in the harness, and VIIS enrolling and the DVS registering at once."""
    if isinstance(message, RegisterEnrollment):
        return EnrollmentRegistered.new(
            producer=VIIS,
            caused_by=message,
            child_ref=message.child_ref,
            offer_id=message.offer_id,
            institution_id=message.institution_id,
            viis_enrollment_id=f"E-{message.offer_id.hex[:8]}",
            registered_at=datetime(2026, 8, 2, tzinfo=UTC),
        )
    if isinstance(message, RegisterDocument):
        return DocumentRegistered.new(
            producer=DVS,
            caused_by=message,
            document_key=message.document_key,
            registration_number=f"PII/2026/{abs(hash(message.document_key)) % 10**6:06d}",
            registered_at=datetime(2026, 8, 2, tzinfo=UTC),
        )
    return answer(message)


@pytest.fixture
async def season(tmp_path: Path) -> AsyncIterator[tuple[Harness, SyntheticMunicipality]]:
    path = tmp_path / "allocation.sqlite3"
    store = await Store.open(path, schema=service(RIGA, "riga")[0].schema)
    harness = Harness(store, datetime(2026, 8, 1, 9, 0, tzinfo=UTC))
    harness.answer = answer_all
    town = SyntheticMunicipality("riga", seed=4, children=90, institutions=4, admission_year=2026)
    await harness.feed(*(institution_message("riga", i) for i in town.institutions))
    await harness.feed(*(application_message("riga", c) for c in town.children))
    await harness.feed(round_command())
    first = sorted(harness.state.live.values())
    for offer_id in first[:6]:
        await harness.feed(harness.respond(ParentAccepted, offer_id))
    for offer_id in first[6:10]:
        await harness.feed(harness.respond(ParentDeclined, offer_id))
    yield harness, town
    await store.close()


async def get(harness: Harness, path: str, *, store: Path | None = None) -> Any:
    api = app(harness.state, store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://api"
    ) as http:
        answer = await http.get(path)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_offers_say_each_offer_s_status_decision_and_enrolment(
    season: tuple[Harness, SyntheticMunicipality],
) -> None:
    harness, _ = season
    state = harness.state
    offers = (await get(harness, "/offers"))["offers"]
    assert {o["offer_id"]: o["status"] for o in offers} == {
        k: o.status for k, o in state.offers.items()
    }
    accepted = (await get(harness, "/offers?status=accepted"))["offers"]
    assert len(accepted) == 6 and {o["status"] for o in accepted} == {"accepted"}
    assert all(o["enrolment"] == "enrolled" and o["decision_number"] for o in accepted)
    live = (await get(harness, "/offers?status=live"))["offers"]
    assert {o["offer_id"] for o in live} == set(state.live.values())
    assert all(o["enrolment"] is None for o in live)
    declined = Counter(o["status"] for o in offers)["declined"]
    assert declined == 4


async def test_rounds_institutions_and_the_unplaced_add_up(
    season: tuple[Harness, SyntheticMunicipality],
) -> None:
    harness, town = season
    state = harness.state
    [only] = (await get(harness, "/rounds"))["rounds"]
    assert only["round_id"] == state.round_id and only["open"]
    assert only["admission_list"]["document_key"].startswith("admission-list:riga:")
    assert only["admission_list"]["registration_number"].startswith("PII/2026/")

    institutions = (await get(harness, "/institutions"))["institutions"]
    assert [i["institution_id"] for i in institutions] == sorted(
        i.institution_id for i in town.institutions
    )
    messages = [institution_message("riga", i) for i in town.institutions]
    declared = {m.institution_id: sum(p.capacity for p in m.pools) for m in messages}
    assert {i["institution_id"]: i["seats"] for i in institutions} == declared
    assert sum(i["accepted"] for i in institutions) == 6
    assert sum(i["offered"] for i in institutions) == len(state.live)

    unplaced = await get(harness, "/unplaced")
    assert unplaced["children"] == len(town.children) - 6
    assert unplaced["children"] == sum(unplaced["reasons"].values())
    # A child who declined counts so, even with a later offer open; one with only an open
    # offer is placed but has not accepted yet.
    decliners = {o.child_ref for o in state.offers.values() if o.status == "declined"}
    assert unplaced["reasons"]["declined"] == len(decliners) == 4
    assert unplaced["reasons"]["placed"] == len(set(state.live) - decliners)


async def test_checks_pass_and_see_memory_that_its_store_does_not_hold(
    season: tuple[Harness, SyntheticMunicipality], tmp_path: Path
) -> None:
    harness, _ = season
    store = tmp_path / "allocation.sqlite3"
    checks = await get(harness, "/checks", store=store)
    assert checks == {
        "invariants": [],
        "free_seats": [],
        "declined_offered": [],
        "unconfirmed_ranked": [],
        "store": [],
    }
    # Without its store the API says it did not compare (rather than that all is well).
    assert (await get(harness, "/checks"))["store"] is None

    # A change in memory that was never written: the store reloaded tells.
    state = harness.state
    offer = state.offers[sorted(state.live.values())[0]]
    offer.respond_by = "2026-09-30"
    checks = await get(harness, "/checks", store=store)
    assert checks["store"] and checks["store"][0].startswith("offers: 1 different")
    # A second live offer for a child breaks an invariant.
    twin = type(offer)(**{**offer.__dict__, "offer_id": str(uuid.uuid4())})
    state.offers[twin.offer_id] = twin
    problems = (await get(harness, "/checks", store=store))["invariants"]
    assert f"child {offer.child_ref} has 2 live offers" in problems


async def test_no_answer_holds_a_personal_code(
    season: tuple[Harness, SyntheticMunicipality], tmp_path: Path
) -> None:
    harness, town = season
    codes = {c.personal_code for c in town.children}
    codes |= {g.personal_code for c in town.children for g in c.guardians}
    codes |= {c.replace("-", "") for c in codes}
    child = sorted(harness.state.live)[0]
    paths = ["/health", "/offers", "/rounds", "/institutions", "/unplaced", f"/children/{child}"]
    said = [json.dumps(await get(harness, p)) for p in paths]
    said.append(json.dumps(await get(harness, "/checks", store=tmp_path / "allocation.sqlite3")))
    text = "\n".join(said)
    assert child in text
    assert not [c for c in codes if c in text]
    assert not CODE_SHAPE.search(text)
