"""Priorities the regulations recognise, through the allocation service's own steps.

Declared grounds rank a child only once the commission confirms them; the facts are
verified again before every list (with a bounded wait); a declined institution is never
offered again, in any round; an application filed by an authorised person counts only once
the register of authorisations confirms the authorisation.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hub.allocation.api import child_report, unplaced
from hub.allocation.rules import load_rules
from hub.allocation.service import service
from hub.allocation.state import declined_offered, unconfirmed_ranked
from hub.reliability.store import Store
from schemas.allocation import ParentDeclined, RoundCompleted
from schemas.applications import ApplicationRefused, ApplicationSubmitted, CommissionGround
from schemas.authorisations import Authorisation, AuthorisationRefused, AuthorisationVerified
from schemas.base import Message
from schemas.enrollment import CheckEnrollment
from schemas.institutions import InstitutionRegistered
from schemas.priority import PriorityConfirmed, PriorityRejected
from schemas.residence import CheckResidence, ResidenceDeclared
from simulators.instant import answer
from simulators.municipality import SyntheticMunicipality
from tests.allocation_harness import Harness
from tests.allocation_messages import round_command
from tests.vps_feed import application_message, institution_message

RIGA = load_rules("riga")
ROUND = date(2026, 9, 1)


@pytest.fixture
async def h(tmp_path: Path) -> Harness:
    store = await Store.open(
        tmp_path / "allocation.sqlite3", schema=service(RIGA, "riga")[0].schema
    )
    yield Harness(store, datetime(2026, 8, 1, 9, 0, tzinfo=UTC))
    await store.close()


def _one_seat(town: SyntheticMunicipality) -> InstitutionRegistered:
    """The town's first institution with a single seat in a group every child fits."""
    inst = institution_message("riga", town.institutions[0])
    pool = inst.pools[0].model_copy(
        update={"capacity": 1, "birth_year_from": 2019, "birth_year_to": 2026, "min_age_months": 0}
    )
    return inst.model_copy(update={"pools": (pool,)})


def _applying(
    town: SyntheticMunicipality, index: int, institution: str, **changes: Any
) -> ApplicationSubmitted:
    """The ``index``-th of the town's children born in 2023 (none of mandatory age), applying
    for ``institution`` only, registered on the ``index``-th day of 2026."""
    child = [c for c in town.children if c.birth_date.year == 2023][index]
    app = application_message("riga", child)
    return app.model_copy(
        update={
            "institutions": (institution,),
            "language": "lv",
            "accepts_any_institution": False,
            "registered_at": datetime(2026, 1, 1 + index, tzinfo=UTC),
            "desired_start_date": ROUND,
            **changes,
        }
    )


def _decision(kind: type[Message], child_ref: str, ground: str, **extra: Any) -> Message:
    return kind.new(
        producer="operator",
        municipality="riga",
        child_ref=child_ref,
        ground=ground,
        decision_number="K-7/2026",
        decided_by="commission",
        decided_on=date(2026, 8, 2),
        **extra,
    )


async def _two_children_one_seat(h: Harness) -> tuple[str, str]:
    """A first-registered child without claims and a later one claiming an out-of-turn
    ground (adoption), both only for one seat."""
    town = SyntheticMunicipality("riga", seed=5, children=40, institutions=1, admission_year=2026)
    inst = _one_seat(town)
    first = _applying(town, 0, inst.institution_id)
    claims = first.claims.model_copy(
        update={"commission_grounds": (CommissionGround.ADOPTED,), "sibling_personal_codes": ()}
    )
    second = _applying(town, 1, inst.institution_id, claims=claims)
    await h.feed(inst, first, second)
    return first.child_ref, second.child_ref


def _offered(out: list[Message]) -> set[str]:
    return {m.child_ref for m in out if m.event_type == "OfferMade"}


async def test_a_declared_ground_ranks_only_once_the_commission_confirms_it(h: Harness) -> None:
    plain, claimed = await _two_children_one_seat(h)
    assert h.state.children[claimed].claims() == {"adopted": "pending"}
    out = await h.feed(round_command())
    assert _offered(out) == {plain}  # the pending claim raised nothing: registration time
    facts = {f["fact"]: f for f in h.state.facts_of(h.state.children[claimed], ROUND)}
    assert facts["adopted"]["source"] == "declared" and facts["adopted"]["value"] is False

    engine = h.state.allocator
    assert engine is not None and engine.queue(claimed)[0].position == 1  # behind nobody waiting
    before = engine.decode(engine.explain(claimed)[0].own).criteria
    out = await h.feed(_decision(PriorityConfirmed, claimed, "adopted"))
    # Re-ranked at once: its priority holds the ground now; an offer already made stands,
    # and the next seat freed goes to it.
    after = engine.decode(engine.explain(claimed)[0].own).criteria
    assert dict(before)["commission"] is False and dict(after)["commission"] is True
    assert _offered(out) == set()
    live = next(o for o in h.state.offers.values() if o.status == "live")
    out = await h.feed(h.respond(ParentDeclined, live.offer_id))
    assert _offered(out) == {claimed}
    assert unconfirmed_ranked(h.state) == []
    facts = {f["fact"]: f for f in h.state.facts_of(h.state.children[claimed], ROUND)}
    assert facts["adopted"] | {"value": True, "source": "commission"} == facts["adopted"]
    assert facts["adopted"]["verified_on"] == "2026-08-02"
    h.state.children[claimed].decisions.clear()  # as if the decision were never taken
    assert unconfirmed_ranked(h.state) == [f"{claimed}: adopted"]


async def test_a_rejected_ground_never_ranks_and_an_undeclared_one_is_refused(h: Harness) -> None:
    plain, claimed = await _two_children_one_seat(h)
    await h.feed(_decision(PriorityRejected, claimed, "adopted", reason="no court ruling"))
    assert h.state.children[claimed].claims() == {"adopted": "rejected"}
    out = await h.feed(round_command())
    assert _offered(out) == {plain}
    await h.feed(_decision(PriorityConfirmed, plain, "triplets_or_more"))
    assert h.dead_letters[-1]["dlq-reason"] == "refused"
    assert "no declared claim 'triplets_or_more'" in h.dead_letters[-1]["dlq-error"]
    assert h.state.children[plain].decisions == {}


async def test_every_list_verifies_residence_again_and_counts_what_changed(h: Harness) -> None:
    town = SyntheticMunicipality("riga", seed=5, children=40, institutions=1, admission_year=2026)
    inst = _one_seat(town)
    apps = [_applying(town, i, inst.institution_id) for i in range(2)]
    declared = [
        ResidenceDeclared.new(
            producer="vps-adapter",
            municipality="riga",
            child_ref=app.child_ref,
            subject="child",
            address_code="100000001",
            territory_code="0100000",
            declared_municipality="riga",
            declared_from=date(2024, 1, 1),
        )
        for app in apps
    ]
    await h.feed(inst, *apps, *declared)
    # The earlier child moved away since: only the register knows it yet.
    moved = h.population.known[apps[0].child_ref]["child:0"]
    h.population.known[apps[0].child_ref]["child:0"] = moved.model_copy(
        update={"declared_municipality": "marupe"}
    )
    out = await h.feed(round_command())
    checks = [m for m in out if isinstance(m, CheckResidence | CheckEnrollment)]
    assert {(type(m).__name__, m.child_ref, m.as_of) for m in checks} == {
        (kind, app.child_ref, ROUND)
        for kind in ("CheckResidence", "CheckEnrollment")
        for app in apps
    }
    summary = next(m for m in out if isinstance(m, RoundCompleted))
    assert (summary.facts_rechecked, summary.facts_changed, summary.facts_unverified) == (2, 1, 0)
    assert _offered(out) == {apps[1].child_ref}  # the resident child ranks first now
    file = h.state.children[apps[0].child_ref]
    assert file.verified == {"viis": "2026-09-01", "pers": "2026-09-01"}
    # Verified for the round's date: the next list of the same date asks nothing again.
    for o in [o for o in h.state.offers.values() if o.status == "live"]:
        await h.feed(h.respond(ParentDeclined, o.offer_id))
    out = await h.feed(round_command())
    assert not any(isinstance(m, CheckResidence | CheckEnrollment) for m in out)


async def test_a_register_that_does_not_answer_leaves_the_child_out_as_not_verified(
    h: Harness,
) -> None:
    town = SyntheticMunicipality("riga", seed=5, children=40, institutions=1, admission_year=2026)
    inst = _one_seat(town)
    apps = [_applying(town, i, inst.institution_id) for i in range(2)]
    await h.feed(inst, *apps)
    silent = apps[0].child_ref
    h.answer = lambda m: None if getattr(m, "child_ref", "") == silent else answer(m)
    out = await h.feed(round_command())
    assert not any(isinstance(m, RoundCompleted) for m in out)  # it waits
    assert h.state.pending is not None and h.state.pending["outstanding"] == 1
    restarted = await h.restart()  # the wait survives a restart
    assert restarted.pending is not None
    h.now += timedelta(minutes=9)
    assert not any(isinstance(m, RoundCompleted) for m in await h.tick())  # still waiting
    assert h.state.pending is not None
    h.now += timedelta(minutes=2)  # ten minutes (the default wait) have passed
    out = await h.tick()
    summary = next(m for m in out if isinstance(m, RoundCompleted))
    assert summary.facts_unverified == 1 and summary.applications_considered == 1
    assert _offered(out) == {apps[1].child_ref}
    assert h.state.children[silent].unverified == ["viis"]  # the population register answered
    assert unplaced(h.state)["reasons"]["unverified"] == 1
    assert child_report(h.state, silent)["unverified"] == ["viis"]
    assert h.state.pending is None


async def test_a_declined_institution_is_never_offered_again_in_a_later_round(h: Harness) -> None:
    town = SyntheticMunicipality("riga", seed=5, children=40, institutions=2, admission_year=2026)
    first, second = (_one_seat(town), institution_message("riga", town.institutions[1]))
    second = second.model_copy(
        update={"pools": (_one_seat(town).pools[0].model_copy(update={"capacity": 5}),)}
    )
    app = _applying(town, 0, first.institution_id).model_copy(
        update={"institutions": (first.institution_id, second.institution_id)}
    )
    await h.feed(first, second, app)
    out = await h.feed(round_command())
    offer = next(m for m in out if m.event_type == "OfferMade")
    assert offer.institution_id == first.institution_id
    out = await h.feed(h.respond(ParentDeclined, str(offer.offer_id)))
    assert [m.institution_id for m in out if m.event_type == "OfferMade"] == [second.institution_id]
    assert h.state.children[app.child_ref].declined == {first.institution_id}
    assert declined_offered(h.state) == []
    offer = next(o for o in h.state.offers.values() if o.status == "live")
    await h.feed(h.respond(ParentDeclined, offer.offer_id))
    await h.restart()
    out = await h.feed(round_command(round_date=date(2026, 10, 1)))
    assert _offered(out) == set()  # both declined: neither comes back
    assert h.state.allocator is not None
    assert h.state.allocator.child(app.child_ref).declined == {
        first.institution_id,
        second.institution_id,
    }
    assert declined_offered(h.state) == []
    again = next(o for o in h.state.offers.values() if o.institution_id == first.institution_id)
    again = dataclasses.replace(again, offer_id="forged", made_at="2099-01-01T00:00:00+00:00")
    h.state.add_offer(again)  # an offer the service would never make: the check sees it
    assert declined_offered(h.state) == [
        f"offer forged: {first.institution_id} offered to {app.child_ref} after a decline"
    ]


def _authorised(app: ApplicationSubmitted, agent: str) -> ApplicationSubmitted:
    authorisation = Authorisation(
        issuer="orphans_court",
        issuer_name="Rīgas bāriņtiesa",
        number="BT-2026/17",
        valid_from=date(2026, 1, 1),
        agent_personal_code=agent,
    )
    return app.model_copy(update={"authorisation": authorisation})


async def test_an_authorised_application_counts_only_once_the_register_confirms_it(
    h: Harness,
) -> None:
    town = SyntheticMunicipality("riga", seed=5, children=40, institutions=1, admission_year=2026)
    inst = _one_seat(town)
    agent = town.children[3].guardians[0].personal_code
    apps = [_authorised(_applying(town, i, inst.institution_id), agent) for i in range(2)]
    out = await h.feed(inst, *apps)
    checks = [m for m in out if m.event_type == "CheckAuthorisation"]
    assert [m.child_ref for m in checks] == [a.child_ref for a in apps]
    assert str(agent) not in str(checks[0])  # codes print masked
    assert h.state.children[apps[0].child_ref].missing == ["authorisation (pending)"]
    answers = [
        AuthorisationVerified.new(
            producer="authorisations-adapter",
            caused_by=checks[0],
            child_ref=apps[0].child_ref,
            application_id=apps[0].application_id,
        ),
        AuthorisationRefused.new(
            producer="authorisations-adapter",
            caused_by=checks[1],
            child_ref=apps[1].child_ref,
            application_id=apps[1].application_id,
            reason="revoked",
            detail="revoked on 2026-03-01",
        ),
    ]
    out = await h.feed(*answers)
    refused = [m for m in out if isinstance(m, ApplicationRefused)]
    assert [(m.child_ref, m.authorisation_reason) for m in refused] == [
        (apps[1].child_ref, "revoked")
    ]
    assert h.state.children[apps[1].child_ref].status == "refused"
    # The parents get the refusal as a decision, registered and then sent.
    key = f"refusal:{apps[1].child_ref}:{apps[1].application_id}"
    assert [m.document_type for m in out if getattr(m, "document_key", None) == key] == ["refusal"]
    [sent] = [
        m for m in out if m.event_type == "SendNotification" and m.document.document_key == key
    ]
    assert sent.variables["reason"] == "authorisation_refused"
    assert h.state.children[apps[0].child_ref].missing == []
    out = await h.feed(round_command())
    assert _offered(out) == {apps[0].child_ref}
    summary = next(m for m in out if isinstance(m, RoundCompleted))
    assert summary.applications_considered == 1
    assert uuid.UUID(str(summary.round_id))
