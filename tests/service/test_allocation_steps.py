"""The allocation service's steps: a failed step leaves nothing behind, and applications
changed or submitted while a round is open reach the engine as the rules say.

A step that fails half-way (the engine refuses a change after the view has changed, a
decision fails while it offers) is dead-lettered with its reason; the service's memory is
then what its store holds, and a rebuild from the journal gives the same store again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hub.allocation import decisions
from hub.allocation.engine import Allocator, EngineError
from hub.allocation.formats import ChildEntry, InstitutionEntry
from hub.allocation.rebuild import differences, journal_steps, remove_database, replay
from hub.allocation.repository import (
    SCHEMA,
    Repository,
    child_of,
    child_row,
    institution_of,
    institution_row,
    reloaded,
)
from hub.allocation.rules import load_rules
from hub.allocation.service import invariant_problems, service
from hub.allocation.state import AllocationState, snapshot, state_differences
from hub.reliability.consumer import outbox_row
from hub.reliability.store import Store
from schemas.allocation import ParentDeclined, StepTaken
from schemas.applications import ApplicationChanged
from schemas.base import Message
from schemas.documents import RegisterDocument
from schemas.institutions import SeatCapacityChanged
from schemas.notifications import SendNotification
from simulators.municipality import SyntheticMunicipality
from tests.allocation_harness import Harness
from tests.allocation_messages import round_command
from tests.service.test_allocation_service import RIGA
from tests.vps_feed import application_message, institution_message

JOIN = dataclasses.replace(RIGA, late_applications="join")


async def make_harness(tmp_path: Path, rules: Any = RIGA) -> Harness:
    store = await Store.open(tmp_path / "allocation.sqlite3", schema=SCHEMA)
    return Harness(store, datetime(2026, 8, 1, 9, 0, tzinfo=UTC), rules=rules)


@pytest.fixture
async def harness(tmp_path: Path) -> Harness:
    h = await make_harness(tmp_path)
    yield h
    await h.store.close()


async def season(h: Harness, children: int = 60, seed: int = 4) -> SyntheticMunicipality:
    """Institutions and applications registered and enriched, and a round run."""
    town = SyntheticMunicipality(
        "riga", seed=seed, children=children, institutions=4, admission_year=2026
    )
    await h.feed(*(institution_message("riga", i) for i in town.institutions))
    await h.feed(*(application_message("riga", c) for c in town.children))
    await h.feed(round_command())
    assert h.state.live, "the round made no offer"
    return town


async def memory_store_and_rebuild_agree(h: Harness, tmp_path: Path) -> None:
    """The service's memory equals what its store reloads, and a replay of its journal
    gives a store equal to the live one."""
    state = h.state
    assert invariant_problems(state) == []
    assert state_differences(state, await reloaded(state, h.store.path)) == []
    journal = [outbox_row(m).value for m in h.published if isinstance(m, StepTaken)]
    rebuilt = tmp_path / "rebuilt.sqlite3"
    remove_database(rebuilt)
    store = await Store.open(rebuilt, schema=SCHEMA)
    try:
        done = await replay(
            journal_steps(journal, "riga"), h.inputs, store, rules=h.rules, municipality="riga"
        )
    finally:
        await store.close()
    assert differences(h.store.path, rebuilt) == []
    assert done.state is not None and state_differences(state, done.state) == []


def failing_on_call(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, call: int, error: Exception
) -> list[int]:
    """``owner.name`` raises ``error`` on its ``call``-th call (counting from 1); returns
    the count of calls made."""
    original: Callable[..., Any] = getattr(owner, name)
    calls = [0]

    def patched(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, patched)
    return calls


# --------------------------------------------------------------------------- failed steps


async def fails_half_way(
    h: Harness, tmp_path: Path, message: Message, calls: list[int], error: str
) -> list[Message]:
    """Feed ``message`` whose step fails half-way (``calls``: the patched call that fails
    was made); it is dead-lettered with ``error``, takes no step, and leaves the memory as
    it was, equal to the store and to a rebuild."""
    before = snapshot(h.state)
    out = await h.feed(message)
    assert calls[0] > 0, "the step did not reach the failing call"
    assert [d["dlq-reason"] for d in h.dead_letters] == ["handler_error"]
    assert error in h.dead_letters[0]["dlq-error"]
    assert not any(isinstance(m, StepTaken) for m in out)
    assert snapshot(h.state) == before
    await memory_store_and_rebuild_agree(h, tmp_path)
    return out


async def test_a_capacity_cut_the_engine_refuses_half_way_leaves_memory_store_and_rebuild_equal(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await season(harness)
    state = harness.state
    inst = next(i for i in state.institutions.values() if len(i.pools) >= 2)
    cut = SeatCapacityChanged.new(
        producer="vps-adapter",
        municipality="riga",
        institution_id=inst.institution_id,
        pools=tuple(p.model_copy(update={"capacity": max(0, p.capacity - 1)}) for p in inst.pools),
        effective_from=harness.now.date(),
    )
    # The first group's seats are cut (and passed on); the engine refuses the second.
    calls = failing_on_call(
        monkeypatch, Allocator, "change_capacity", 2, EngineError("capacity cannot change")
    )
    await fails_half_way(harness, tmp_path, cut, calls, "capacity cannot change")
    assert calls[0] == 2
    assert state.institutions[inst.institution_id] == inst  # the first group's cut undone
    # The service goes on: the next answer is a step like any other.
    monkeypatch.undo()
    offer_id = sorted(state.live.values())[0]
    await harness.feed(harness.respond(ParentDeclined, offer_id))
    assert state.offers[offer_id].status == "declined"
    await memory_store_and_rebuild_agree(harness, tmp_path)


async def test_a_decision_failing_after_the_engine_moved_is_undone_with_the_engine(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await season(harness)
    # A decline: the engine passes the seat on, then closing the offer fails.
    calls = failing_on_call(monkeypatch, decisions.Step, "close", 1, RuntimeError("close failed"))
    offer_id = sorted(harness.state.live.values())[0]
    decline = harness.respond(ParentDeclined, offer_id)
    await fails_half_way(harness, tmp_path, decline, calls, "close failed")
    assert harness.state.offers[offer_id].status == "live"


async def test_a_message_refused_before_any_change_does_not_reload_the_state(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await season(harness, children=30)
    restores = failing_on_call(monkeypatch, Repository, "restore", 0, RuntimeError())
    offer_id = sorted(harness.state.live.values())[0]
    await harness.feed(harness.respond(ParentDeclined, offer_id))
    await harness.feed(harness.respond(ParentDeclined, offer_id))  # already declined
    assert [d["dlq-reason"] for d in harness.dead_letters] == ["refused"]
    assert "is already declined" in harness.dead_letters[0]["dlq-error"]
    assert restores[0] == 0


# --------------------------------------------------------------------------- open rounds


def change(h: Harness, child_ref: str, institutions: tuple[str, ...]) -> Message:
    file = h.state.children[child_ref].application
    return ApplicationChanged.new(
        producer="vps-adapter",
        municipality="riga",
        child_ref=child_ref,
        application_id=file.application_id,
        institutions=institutions,
        desired_start_date=file.desired_start_date,
        language=file.language,
        accepts_any_institution=file.accepts_any_institution,
        changed_at=h.now,
    )


async def test_a_change_of_a_child_waiting_in_the_open_round_reaches_the_engine_at_once(
    harness: Harness, tmp_path: Path
) -> None:
    await season(harness, children=60)
    state = harness.state
    engine = state.allocator
    assert engine is not None
    waiting = sorted(c for c in engine.children() if c not in state.live and not state.on_list(c))
    assert waiting, "every child has a place"
    child_ref = waiting[0]
    registered_at = engine.child(child_ref).registered_at
    choices = tuple(sorted(state.institutions))[:2]
    await harness.feed(change(harness, child_ref, choices))
    assert engine.child(child_ref).institutions == choices
    assert engine.child(child_ref).registered_at == registered_at  # keeps its place in time
    assert harness.dead_letters == []
    await memory_store_and_rebuild_agree(harness, tmp_path)


async def test_a_change_of_a_child_on_the_admission_list_is_refused(harness: Harness) -> None:
    await season(harness, children=30)
    state = harness.state
    child_ref, offer_id = sorted(state.live.items())[0]
    before = state.children[child_ref].dump()
    out = await harness.feed(change(harness, child_ref, tuple(sorted(state.institutions))[:1]))
    assert harness.dead_letters == []
    assert state.children[child_ref].dump() == before
    assert state.offers[offer_id].status == "live"
    # The parents get the refusal as a decision: registered in the DVS, then sent.
    [registered] = [m for m in out if isinstance(m, RegisterDocument)]
    assert registered.document_type == "refusal" and registered.child_ref == child_ref
    [sent] = [m for m in out if isinstance(m, SendNotification)]
    assert sent.document is not None and sent.document.kind == "refusal"
    assert sent.variables["reason"] == "on_list" and sent.document.appeal


async def late_application(h: Harness) -> str:
    """A new application, complete while the round is open; its child's reference."""
    await season(h, children=20, seed=9)
    late = SyntheticMunicipality("riga", seed=99, children=1, institutions=4, admission_year=2026)
    message = application_message("riga", late.children[0])
    assert message.child_ref not in h.state.children
    h.now += timedelta(hours=1)
    await h.feed(message)
    assert not h.state.children[message.child_ref].missing
    return message.child_ref


async def test_an_application_completed_while_a_round_is_open_waits_for_the_next_round(
    harness: Harness, tmp_path: Path
) -> None:
    child_ref = await late_application(harness)
    assert harness.state.allocator is not None and child_ref not in harness.state.allocator
    assert child_ref not in harness.state.live
    await memory_store_and_rebuild_agree(harness, tmp_path)


async def test_where_the_rules_say_join_a_late_application_joins_the_open_round(
    tmp_path: Path,
) -> None:
    h = await make_harness(tmp_path, JOIN)
    try:
        child_ref = await late_application(h)
        engine = h.state.allocator
        assert engine is not None and child_ref in engine
        assert invariant_problems(h.state) == []
        await memory_store_and_rebuild_agree(h, tmp_path)
    finally:
        await h.store.close()


def test_the_rules_files_say_how_late_applications_are_taken() -> None:
    assert load_rules("riga").late_applications == "next_round"
    state = AllocationState("riga", JOIN, lambda: datetime.now(UTC))
    assert state.rules.late_applications == "join"
    assert service(RIGA, "riga")[0].handlers


# --------------------------------------------------------------------------- stored rows


async def test_engine_rows_round_trip_and_rows_of_an_earlier_store_still_load(
    harness: Harness,
) -> None:
    await season(harness, children=40)
    engine = harness.state.allocator
    assert engine is not None
    children = [engine.child(c) for c in engine.children()]
    institutions = [harness.state.round_institution(i) for i in harness.state.institutions]
    assert any(c.location for c in children) and any(i.location for i in institutions)
    for child in children:
        assert child_of(child_row(child)) == child
        assert child_of(ChildEntry.from_child(child).model_dump_json()) == child
        assert child_row(child) == child_row(child_of(child_row(child)))  # the same text
    for inst in institutions:
        assert institution_of(institution_row(inst)) == inst
        assert institution_of(InstitutionEntry.from_institution(inst).model_dump_json()) == inst
