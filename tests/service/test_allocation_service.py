"""The allocation service's handlers on a real SQLite store, fed messages directly (no broker).

A small synthetic municipality goes through registration, enrichment (VIIS
and GIS answered by stand-ins), a round, accepts, declines and silences;
after every event the offers must mirror the engine and the invariants
hold, and a service rebuilt from its store must agree with the live one.
"""

from __future__ import annotations

import dataclasses
import random
import sqlite3
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from hub.allocation.engine import Allocator
from hub.allocation.rebuild import RebuildError, counts, differences, journal_steps, replay
from hub.allocation.rules import load_rules
from hub.allocation.service import LIVE, SCHEMA, AllocationState, invariant_problems, service
from hub.reliability.consumer import outbox_row
from hub.reliability.store import Store
from schemas.allocation import ParentAccepted, ParentDeclined, StepTaken
from schemas.applications import ApplicationChanged
from schemas.enrollment import CheckEnrollment
from schemas.residence import ResidenceDeclared
from schemas.topics import topic_for
from simulators.instant import answer
from simulators.municipality import SyntheticMunicipality
from tests.allocation_harness import Harness
from tests.allocation_messages import round_command
from tests.vps_feed import application_message, institution_message

RIGA = load_rules("riga")


def check(state: AllocationState) -> None:
    assert invariant_problems(state) == []
    assert state.allocator is not None
    engine = {cid: (s.institution_id, s.group) for cid, s in state.allocator.matching().items()}
    live = {
        o.child_ref: (o.institution_id, o.group_code)
        for o in state.offers.values()
        if o.status == LIVE
    }
    assert engine == live
    again = Allocator(state.allocator.instance, state.rules, state.round_date)  # type: ignore[arg-type]
    assert again.matching() == state.allocator.matching()


@pytest.fixture
async def harness(tmp_path: Path) -> Harness:
    store = await Store.open(
        tmp_path / "allocation.sqlite3", schema=service(RIGA, "riga")[0].schema
    )
    yield Harness(store, datetime(2026, 8, 1, 9, 0, tzinfo=UTC))
    await store.close()


async def registered(h: Harness, children: int = 120) -> SyntheticMunicipality:
    town = SyntheticMunicipality(
        "riga", seed=4, children=children, institutions=5, admission_year=2026
    )
    await h.feed(*(institution_message("riga", i) for i in town.institutions))
    await h.feed(*(application_message("riga", c) for c in town.children))
    return town


async def round_run(h: Harness, children: int) -> AllocationState:
    """A town of ``children`` applications registered and enriched, then a round run."""
    await registered(h, children=children)
    await h.feed(round_command())
    return h.state


async def test_enrichment_then_a_round_offers_every_seat_the_engine_gives(harness: Harness) -> None:
    await registered(harness)
    state = harness.state
    assert all(not f.missing for f in state.children.values())
    out = await harness.feed(round_command())
    kinds = Counter(m.event_type for m in out)
    assert kinds["OfferMade"] == kinds["SendNotification"] == len(state.allocator.matching()) > 0
    assert kinds["RoundCompleted"] == 1
    # The admission list, and each offer's invitation (registered before it is sent).
    assert kinds["RegisterDocument"] == kinds["OfferMade"] + 1
    check(state)
    for message in out:
        if message.event_type == "SendNotification":
            assert message.recipient.personal_code is not None
            assert topic_for(message).key_of(message).decode() == message.child_ref


async def test_an_application_waits_until_its_facts_are_in(harness: Harness) -> None:
    town = SyntheticMunicipality("riga", seed=2, children=3, institutions=2, admission_year=2026)
    await harness.feed(*(institution_message("riga", i) for i in town.institutions))
    harness.answer = lambda message: None  # VIIS and GIS stay silent
    await harness.feed(application_message("riga", town.children[0]))
    file = harness.state.children[town.children[0].ref]
    assert file.missing == ["viis", "gis"]
    await harness.feed(round_command())
    assert (
        harness.state.allocator is not None and town.children[0].ref not in harness.state.allocator
    )


async def test_enrichment_answers_are_matched_to_the_latest_request(harness: Harness) -> None:
    town = SyntheticMunicipality("riga", seed=2, children=1, institutions=2, admission_year=2026)
    await harness.feed(*(institution_message("riga", i) for i in town.institutions))
    harness.answer = lambda message: None  # answers are fed by hand below
    child = town.children[0]
    first = await harness.feed(application_message("riga", child))
    changed = ApplicationChanged.new(
        producer="vps-adapter",
        municipality="riga",
        child_ref=child.ref,
        application_id=child.application_id,
        institutions=tuple(reversed(child.choices)),
        desired_start_date=child.desired_start_date,
        language=child.language,
        changed_at=harness.now,
    )
    second = await harness.feed(changed)
    old_check, new_check = (
        next(m for m in out if isinstance(m, CheckEnrollment)) for out in (first, second)
    )
    assert old_check.correlation_id != new_check.correlation_id
    file = harness.state.children[child.ref]
    await harness.feed(answer(old_check))  # the answer to the first request comes late
    assert file.enrollment is None and file.missing[0] == "viis"
    await harness.feed(answer(new_check))
    assert file.enrollment is not None and file.missing == ["gis"]


async def test_declines_accepts_and_silences_cascade_and_keep_the_invariants(
    harness: Harness,
) -> None:
    state = await round_run(harness, children=150)
    check(state)
    rnd = random.Random(8)
    cascades = 0
    for _ in range(60):
        if not state.live:
            break
        offer_id = rnd.choice(sorted(state.live.values()))
        kind = ParentDeclined if rnd.random() < 0.6 else ParentAccepted
        before = len(harness.published)
        await harness.feed(harness.respond(kind, offer_id))
        new = harness.published[before:]
        cascades += sum(1 for m in new if m.event_type == "OfferMade")
        check(state)
    assert cascades > 0
    # Silence: the remaining offers get their deadline from a receipt, then expire.
    harness.now += timedelta(days=1)
    for offer_id in sorted(state.live.values()):
        await harness.feed(harness.receipt(offer_id))
    assert all(state.offers[i].respond_by for i in state.live.values())
    harness.now += timedelta(days=40)
    expired_before = sum(1 for o in state.offers.values() if o.status == "expired")
    unit_out = await harness.tick()
    assert any(m.event_type == "OfferExpired" for m in unit_out)
    assert sum(1 for o in state.offers.values() if o.status == "expired") > expired_before


async def test_the_invariant_check_sees_offers_beyond_the_declared_seats(
    harness: Harness,
) -> None:
    state = await round_run(harness, children=60)
    offer = state.offers[sorted(state.live.values())[0]]
    await harness.feed(harness.respond(ParentAccepted, offer.offer_id))
    assert invariant_problems(state) == []
    # The institution now declares fewer seats than the round has given away in the group.
    inst = state.institutions[offer.institution_id]
    state.institutions[offer.institution_id] = inst.model_copy(
        update={
            "pools": tuple(
                p.model_copy(update={"capacity": 0}) if p.group_code == offer.group_code else p
                for p in inst.pools
            )
        }
    )
    assert any(
        f"{offer.institution_id}/{offer.group_code}:" in problem and "seats declared" in problem
        for problem in invariant_problems(state)
    )
    # A second live offer for the same child is caught too.
    other = state.offers[sorted(state.live.values())[0]]
    twin = dataclasses.replace(other, offer_id=str(uuid.uuid4()))
    state.offers[twin.offer_id] = twin
    assert f"child {other.child_ref} has 2 live offers" in invariant_problems(state)


async def test_a_service_rebuilt_from_its_store_agrees_with_the_live_one(
    harness: Harness, tmp_path: Path
) -> None:
    state = await round_run(harness, children=80)
    for offer_id in sorted(state.live.values())[:10]:
        await harness.feed(harness.respond(ParentDeclined, offer_id))
    store = harness.processor.store
    spec, rebuilt = service(RIGA, "riga", clock=lambda: harness.now)
    assert spec.on_start is not None
    await spec.on_start(store)
    assert rebuilt.allocator is not None
    assert rebuilt.allocator.matching() == state.allocator.matching()  # type: ignore[union-attr]
    assert {k: v.dump() for k, v in rebuilt.offers.items()} == {
        k: v.dump() for k, v in state.offers.items()
    }
    assert {k: v.dump() for k, v in rebuilt.children.items()} == {
        k: v.dump() for k, v in state.children.items()
    }


async def test_replaying_the_journal_rebuilds_the_same_store(
    harness: Harness, tmp_path: Path
) -> None:
    """The journal, shuffled and with entries twice (as a relay may publish them), over the
    messages handled, gives a store whose view tables equal the live store's."""
    state = await round_run(harness, children=90)
    rnd = random.Random(5)
    for _ in range(12):
        kind = ParentDeclined if rnd.random() < 0.7 else ParentAccepted
        await harness.feed(harness.respond(kind, rnd.choice(sorted(state.live.values()))))
    harness.now += timedelta(hours=3)
    for offer_id in sorted(state.live.values())[:15]:
        await harness.feed(harness.receipt(offer_id))
    harness.now += timedelta(days=40)
    ticked = await harness.tick()
    assert any(m.event_type == "OfferExpired" for m in ticked)
    harness.now += timedelta(minutes=5)
    for _ in range(5):
        await harness.feed(harness.respond(ParentDeclined, rnd.choice(sorted(state.live.values()))))

    journal = [outbox_row(m).value for m in harness.published if isinstance(m, StepTaken)]
    assert sum(1 for m in harness.published if isinstance(m, StepTaken) and m.step == "clock") == 1
    shuffled = journal + journal[::7]
    rnd.shuffle(shuffled)
    steps = journal_steps(shuffled, "riga")
    assert [s.sequence for s in steps] == sorted({s.sequence for s in steps})
    assert len(steps) == len(journal)
    assert journal_steps(shuffled, "liepaja") == []

    path = tmp_path / "rebuilt.sqlite3"
    store = await Store.open(path, schema=SCHEMA)
    try:
        done = await replay(steps, harness.inputs, store, rules=RIGA, municipality="riga")
    finally:
        await store.close()
    assert done.steps == len(steps) and done.ticks == 1
    live = harness.processor.store.path
    assert differences(live, path) == []
    assert counts(path) == counts(live) and counts(path)["offers"] > 0
    # A difference is reported by table and key.
    with sqlite3.connect(path) as db:
        db.execute("UPDATE offers SET status = 'declined' WHERE status = 'live'")
    assert differences(live, path)[0].startswith("offers: ")

    inputs = {topic: dict(messages) for topic, messages in harness.inputs.items()}
    inputs["allocation.responses.v1"].clear()
    other = await Store.open(tmp_path / "other.sqlite3", schema=SCHEMA)
    try:
        with pytest.raises(RebuildError, match="no longer holds"):
            await replay(steps, inputs, other, rules=RIGA, municipality="riga")
    finally:
        await other.close()


async def test_a_residence_reported_before_its_application_waits_for_it(harness: Harness) -> None:
    town = SyntheticMunicipality("riga", seed=2, children=2, institutions=2, admission_year=2026)
    child = town.children[0]
    early = ResidenceDeclared.new(
        producer="vps-adapter",
        municipality="riga",
        child_ref=child.ref,
        subject="child",
        address_code=child.address_code,
        territory_code="0100000",
        declared_municipality="riga",
        declared_from=date(2025, 1, 1),
    )
    out = await harness.feed(early)
    assert out and not harness.state.children  # taken, not parked: nothing to retry
    assert child.ref in harness.state.early
    await harness.feed(*(institution_message("riga", i) for i in town.institutions))
    await harness.feed(application_message("riga", child))
    file = harness.state.children[child.ref]
    assert file.residences["child:0"].address_code == child.address_code
    assert harness.state.early == {}


async def accepted_then_offered_better(h: Harness) -> tuple[str, str]:
    """A child accepts an offer below its first choice; declines free a seat it ranked
    higher, and it is offered that one. Returns (accepted offer, better offer)."""
    town = SyntheticMunicipality("riga", seed=6, children=150, institutions=2, admission_year=2026)
    await h.feed(*(institution_message("riga", i) for i in town.institutions))
    await h.feed(*(application_message("riga", c) for c in town.children))
    state = h.state
    await h.feed(round_command())
    engine = state.allocator
    assert engine is not None
    lower = {
        o.child_ref: o.offer_id
        for o in state.offers.values()
        if o.status == LIVE
        and (engine.placement(o.child_ref).preference_rank or 1) > 1
        and engine.queue(o.child_ref)
    }
    assert lower, "no child got an offer below a choice it still waits for"
    wanted = {(q.institution_id, q.group) for c in lower for q in engine.queue(c)}
    for offer_id in sorted(lower.values()):
        await h.feed(h.respond(ParentAccepted, offer_id))
    for _ in range(len(state.offers) * 2):
        better = [(lower[c], o) for c, o in state.live.items() if c in lower and o != lower[c]]
        if better:
            check(state)
            return better[0]
        others = sorted(
            (o for c, o in state.live.items() if c not in lower),
            key=lambda o: (
                (state.offers[o].institution_id, state.offers[o].group_code) not in wanted,
                o,
            ),
        )
        if not others:
            break
        await h.feed(h.respond(ParentDeclined, others[0]))
    raise AssertionError("no declined seat reached a child holding a lower place")


async def test_accepting_a_better_place_gives_up_the_one_held_and_transfers_in_viis(
    harness: Harness,
) -> None:
    held, better = await accepted_then_offered_better(harness)
    state = harness.state
    before = len(harness.published)
    await harness.feed(harness.respond(ParentAccepted, better))
    new = harness.published[before:]
    old = state.offers[held]
    assert old.status == "revoked" and state.offers[better].status == "accepted"
    revoked = [m for m in new if m.event_type == "OfferRevoked"]
    assert [(str(m.offer_id), m.reason) for m in revoked] == [(held, "superseded")]
    enrol = [m for m in new if m.event_type == "RegisterEnrollment"]
    assert len(enrol) == 1 and enrol[0].transfer_from == old.institution_id
    documents = [m for m in new if m.event_type == "RegisterDocument"]
    # The admission decision of the better place, and the revocation of the one given up.
    assert sorted(m.document_key for m in documents) == [
        f"decision:{better}",
        f"revocation:{held}",
    ]
    assert state.children[old.child_ref].accepted_offer == better
    check(state)


async def test_a_better_offer_left_unanswered_expires_and_the_held_place_stays(
    harness: Harness,
) -> None:
    held, better = await accepted_then_offered_better(harness)
    state = harness.state
    harness.now += timedelta(days=1)
    await harness.feed(harness.receipt(better))
    harness.now += timedelta(days=40)
    await harness.tick()
    child = state.offers[held].child_ref
    assert state.offers[better].status == "expired"
    assert state.offers[held].status == "accepted"
    assert state.children[child].status != "annulled"
    # It leaves the queue for better places; the seat it holds is not offered to anyone.
    assert state.allocator is not None and child not in state.allocator
    check(state)


async def test_a_receipt_from_a_clock_running_behind_starts_the_deadline_no_earlier_than_the_offer(
    harness: Harness,
) -> None:
    state = await round_run(harness, children=40)
    offer_id = sorted(state.live.values())[0]
    made = datetime.fromisoformat(state.offers[offer_id].made_at)
    late = harness.receipt(offer_id).model_copy(update={"sent_at": made - timedelta(days=30)})
    await harness.feed(late)
    offer = state.offers[offer_id]
    # e-adrese: deemed notified on the second working day after the offer, not after the stamp.
    assert date.fromisoformat(offer.notified_on or "") > made.date()
