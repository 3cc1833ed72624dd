"""Restart equivalence: a service reloaded from its store decides as if it had never stopped.

A random program of events is applied to the allocation service through its
handlers, on a real SQLite store, as the consumer applies them: institutions
and applications (some answered by VIIS with a place the child attends
already, some residences reported before their application), rounds,
declines, acceptances (also of a better place by a child who holds one),
receipts and expiries as the clock moves, withdrawals, changed and new
applications, capacity changes, released places, and redelivered messages.

The program is run twice. Straight through; and again with the service
reloaded from its store at random points, and with batches prepared and
thrown away before their commit (a crash), then delivered again. Both runs
must publish the same decisions and leave the same store, and replaying the
journal (``hub allocation rebuild``) must give that store once more.

``HUB_RESTART_SEEDS=N`` runs N programs instead of the default few.
"""

from __future__ import annotations

import os
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hub.allocation.rebuild import differences, journal_steps, replay
from hub.allocation.service import (
    SCHEMA,
    AllocationState,
    invariant_problems,
    state_differences,
)
from hub.reliability.consumer import outbox_row
from hub.reliability.store import Store
from schemas.addresses import ResolveAddress
from schemas.allocation import ParentAccepted, ParentDeclined, StepTaken
from schemas.applications import ApplicationChanged, ApplicationWithdrawn
from schemas.base import Message
from schemas.documents import RegisterDocument
from schemas.enrollment import CheckEnrollment
from schemas.institutions import InstitutionRegistered, PlaceReleased, SeatCapacityChanged
from schemas.notifications import NotificationDelivered
from schemas.residence import ResidenceDeclared
from schemas.topics import VPS
from simulators.instant import answer
from simulators.municipality import SyntheticMunicipality
from tests.allocation_harness import RIGA, Harness
from tests.allocation_messages import round_command
from tests.vps_feed import application_message, institution_message

SEEDS = range(int(os.environ.get("HUB_RESTART_SEEDS", "12")))
START = datetime(2026, 8, 3, 9, 0, tzinfo=UTC)
_IDS = uuid.UUID("0b5e55ed-0000-4000-8000-000000000020")


# --------------------------------------------------------------------------- the program


@dataclass(frozen=True)
class Feed:
    """Messages handled as one batch (with the enrichment answers they call for)."""

    messages: tuple[Message, ...]


@dataclass(frozen=True)
class Tick:
    """The clock is at ``now``; the expiry timer runs."""

    now: datetime


Step = Feed | Tick


class Answers:
    """VIIS, GIS and the DVS answering at once, the same answer (same event id) in every run.

    VIIS says that some children attend a group of the municipality already: the
    place they hold while they wait for one they rank higher.
    """

    def __init__(self, attending: dict[str, tuple[str, str]], clock: Any) -> None:
        self.attending = attending
        self.clock = clock

    def __call__(self, request: Message) -> Message | None:
        reply = answer(request)
        if reply is None:
            return None
        request_id = f"{request.event_type}:{request.correlation_id}"
        if isinstance(request, CheckEnrollment):  # a round's checks share their flow
            request_id += f":{request.child_ref}:{request.as_of}"
        if isinstance(request, RegisterDocument):  # one flow registers several documents
            request_id += f":{request.document_key}"
        update: dict[str, Any] = {
            "event_id": uuid.uuid5(_IDS, f"answer:{request_id}"),
            "causation_id": uuid.uuid5(_IDS, f"request:{request_id}"),
            "occurred_at": self.clock(),
        }
        if isinstance(request, CheckEnrollment) and request.child_ref in self.attending:
            iid, group = self.attending[request.child_ref]
            update |= {"attending_institution_id": iid, "attending_group_code": group}
        if isinstance(request, ResolveAddress | CheckEnrollment | RegisterDocument):
            return reply.model_copy(update=update)
        return reply


@dataclass
class Program:
    """A random season, generated while it runs straight through once (run A)."""

    seed: int
    steps: list[Step] = field(default_factory=list)
    attending: dict[str, tuple[str, str]] = field(default_factory=dict)


def scaled(message: InstitutionRegistered, rnd: random.Random) -> InstitutionRegistered:
    """Few seats per group, so that children compete and cascades run long."""
    pools = tuple(p.model_copy(update={"capacity": rnd.randint(1, 4)}) for p in message.pools)
    return message.model_copy(update={"pools": pools})


def envelope(kind: type[Message], **payload: Any) -> Any:
    return kind.new(producer=VPS, municipality="riga", **payload)


class Driver:
    """Chooses each next step from the state of run A, applies it there, and records it."""

    def __init__(self, harness: Harness, program: Program) -> None:
        self.h, self.program = harness, program
        self.rnd = random.Random(program.seed)
        self.history: list[Message] = []

    @property
    def state(self) -> AllocationState:
        return self.h.state

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rnd.getrandbits(128), version=4)

    async def feed(self, *messages: Message, again: bool = False) -> None:
        """Handle ``messages`` (ids drawn from the seed, so that offer ids and so every later
        choice repeat for a seed), unless they are redelivered (``again``)."""
        if not again:
            messages = tuple(
                m.model_copy(update={"event_id": self.uuid(), "correlation_id": self.uuid()})
                for m in messages
            )
        self.program.steps.append(Feed(tuple(messages)))
        self.history += messages
        await self.h.feed(*messages)
        problems = offers_follow_the_engine(self.state)
        assert problems == [], (
            f"seed {self.program.seed}, step {len(self.program.steps)}: {problems}"
        )

    async def tick(self, days: int) -> None:
        self.h.now += timedelta(days=days, minutes=self.rnd.randint(1, 59))
        self.program.steps.append(Tick(self.h.now))
        await self.h.tick()

    async def season(self) -> None:
        rnd = self.rnd
        town = SyntheticMunicipality(
            "riga",
            seed=self.program.seed,
            children=rnd.randint(30, 70),
            institutions=rnd.randint(2, 4),
            admission_year=2026,
        )
        institutions = [scaled(institution_message("riga", i), rnd) for i in town.institutions]
        pools = [(i.institution_id, p.group_code) for i in institutions for p in i.pools]
        children = list(town.children)
        rnd.shuffle(children)
        late = children[: len(children) // 6]  # they apply while the round is open
        for child in children:
            if rnd.random() < 0.12:
                self.program.attending[child.ref] = rnd.choice(pools)
        self.h.answer = Answers(self.program.attending, lambda: self.h.now)
        # A residence reported before its application: kept until the application comes.
        early = [self.residence(c.ref) for c in children[-3:]]
        await self.feed(*institutions, *early)
        first = [application_message("riga", c) for c in children[len(late) :]]
        while first:
            take, first = first[: rnd.randint(1, 12)], first[rnd.randint(1, 12) :]
            await self.feed(*take)
        await self.feed(self.round())
        for _ in range(rnd.randint(60, 110)):
            await self.act(late, institutions)
        # Silence to the end: every live offer is notified, and the clock runs past them all.
        for _ in range(6):
            if not self.state.live:
                break
            await self.feed(*(self.h.receipt(o) for o in sorted(self.state.live.values())))
            await self.tick(25)

    def round(self) -> Message:
        return round_command(round_id=uuid.UUID(int=self.rnd.getrandbits(128)))

    def residence(self, child_ref: str) -> Message:
        return envelope(
            ResidenceDeclared,
            child_ref=child_ref,
            subject="child",
            address_code="100000001",
            territory_code="0100000",
            declared_municipality="riga",
            declared_from=date(2025, 1, 1),
        )

    def better_offers(self) -> list[str]:
        """Live offers of children who hold an accepted place: accepting one trades up."""
        state = self.state
        return sorted(
            offer_id
            for child_ref, offer_id in state.live.items()
            if state.children[child_ref].accepted_offer
        )

    async def act(self, late: list[Any], institutions: list[InstitutionRegistered]) -> None:
        """One random step; several answers may share a batch."""
        rnd, state, h = self.rnd, self.state, self.h
        live = sorted(state.live.values())
        draw = rnd.random()
        if better := self.better_offers():
            if draw < 0.35:
                await self.feed(h.respond(ParentAccepted, rnd.choice(better)))
                return
            draw = rnd.random()
        if live and draw < 0.45:
            chosen = rnd.sample(live, min(len(live), rnd.randint(1, 3)))
            kinds = [ParentAccepted if rnd.random() < 0.55 else ParentDeclined for _ in chosen]
            await self.feed(*(h.respond(kind, o) for kind, o in zip(kinds, chosen, strict=True)))
        elif live and draw < 0.55:
            unclocked = [o for o in live if not state.offers[o].respond_by] or live
            chosen = rnd.sample(unclocked, min(len(unclocked), rnd.randint(1, 5)))
            await self.feed(*(self.notified(o) for o in chosen))
        elif draw < 0.63:
            await self.tick(rnd.randint(0, 20))
        elif draw < 0.70:
            queued = sorted(r for r, f in state.children.items() if f.status == "queued")
            if queued:
                child_ref = rnd.choice(queued)
                await self.feed(
                    envelope(
                        ApplicationWithdrawn,
                        application_id=state.children[child_ref].application.application_id,
                        child_ref=child_ref,
                        reason="parent_request",
                        withdrawn_at=h.now,
                    )
                )
        elif draw < 0.78:
            await self.feed(self.capacity_change(institutions))
        elif draw < 0.84:
            iid, group = rnd.choice(
                [(i.institution_id, p.group_code) for i in institutions for p in i.pools]
            )
            await self.feed(
                envelope(
                    PlaceReleased,
                    institution_id=iid,
                    group_code=group,
                    count=rnd.randint(1, 2),
                    reason="child_left",
                    released_at=h.now,
                )
            )
        elif draw < 0.89 and late:
            await self.feed(application_message("riga", late.pop()))
        elif draw < 0.93:
            await self.feed(self.changed())
        elif draw < 0.96 and self.history:
            await self.feed(rnd.choice(self.history), again=True)  # the inbox skips it
        elif not state.live:
            await self.feed(self.round())  # the next round, once the last one has settled
        else:
            await self.tick(rnd.randint(1, 3))

    def notified(self, offer_id: str) -> Message:
        offer = self.state.offers[offer_id]
        if self.rnd.random() < 0.5:
            return self.h.receipt(offer_id)
        return NotificationDelivered.new(
            producer="notify-adapter",
            municipality="riga",
            notification_id=uuid.uuid4(),
            child_ref=offer.child_ref,
            channel="email",
            offer_id=offer_id,
            delivered_at=self.h.now,
        )

    def capacity_change(self, institutions: list[InstitutionRegistered]) -> Message:
        """A group enlarged or cut, by no more than the engine has seats open."""
        rnd, state = self.rnd, self.state
        iid = rnd.choice(institutions).institution_id
        inst = state.institutions[iid]
        pools = []
        for pool in inst.pools:
            open_now = pool.capacity
            if state.allocator is not None:
                open_now = state.allocator.capacity(iid, pool.group_code)
            delta = rnd.randint(-min(2, open_now), 2) if rnd.random() < 0.6 else 0
            pools.append(pool.model_copy(update={"capacity": max(0, pool.capacity + delta)}))
        return envelope(
            SeatCapacityChanged,
            institution_id=iid,
            pools=tuple(pools),
            effective_from=date(2026, 9, 1),
        )

    def changed(self) -> Message:
        state, rnd = self.state, self.rnd
        child_ref = rnd.choice(sorted(state.children))
        app = state.children[child_ref].application
        institutions = list(app.institutions)
        rnd.shuffle(institutions)
        return envelope(
            ApplicationChanged,
            child_ref=child_ref,
            application_id=app.application_id,
            institutions=tuple(institutions),
            desired_start_date=app.desired_start_date,
            language=app.language,
            accepts_any_institution=app.accepts_any_institution,
            changed_at=self.h.now,
        )


# --------------------------------------------------------------------------- the runs


def offers_follow_the_engine(state: AllocationState) -> list[str]:
    """The invariants a restart could break: one live offer per child, live offers exactly
    the engine's seats, none over the engine's seats. (Against the capacities declared,
    :func:`invariant_problems` counts only one round's places: with several rounds and
    places given up between them it does not apply, and restarts do not change it.)"""
    return [p for p in invariant_problems(state) if "seats declared" not in p]


def decisions(messages: list[Message]) -> list[tuple[str, dict[str, Any]]]:
    """What the service published, without what differs between runs by design (the
    published message's own id and wall-clock stamp)."""
    return [
        (m.event_type, m.model_dump(mode="json", exclude={"event_id", "occurred_at"}))
        for m in messages
    ]


async def straight(program: Program, path: Path) -> Harness:
    """Run A: generate the program while applying it, never stopping."""
    h = Harness(await Store.open(path, schema=SCHEMA), START)
    try:
        await Driver(h, program).season()
    except BaseException:
        await h.store.close()
        raise
    return h


async def interrupted(
    program: Program, path: Path, rnd: random.Random
) -> tuple[Harness, list[str]]:
    """Run B: the same steps, with restarts and crashes at random points."""
    h = Harness(await Store.open(path, schema=SCHEMA), START)
    h.answer = Answers(program.attending, lambda: h.now)
    interruptions: list[str] = []
    try:
        await take(h, program, rnd, interruptions)
    except BaseException:
        await h.store.close()
        raise
    return h, interruptions


async def take(h: Harness, program: Program, rnd: random.Random, interruptions: list[str]) -> None:
    for n, step in enumerate(program.steps):
        if rnd.random() < 0.12:
            state = await h.restart()
            interruptions.append(f"restart before step {n}")
            problems = offers_follow_the_engine(state)
            assert problems == [], f"after the restart before step {n}: {problems}"
        if isinstance(step, Tick):
            h.now = step.now
            await h.tick()
            continue
        crash = rnd.random() < 0.08
        if crash:
            interruptions.append(f"crash in step {n}")
        await h.feed(*step.messages, crash=crash)


@pytest.mark.parametrize("seed", SEEDS)
async def test_restarts_change_no_decision(seed: int, tmp_path: Path) -> None:
    program = Program(seed)
    a = await straight(program, tmp_path / "a.sqlite3")
    try:
        b, interruptions = await interrupted(
            program, tmp_path / "b.sqlite3", random.Random(f"restarts:{seed}")
        )
        try:
            where = f"seed {seed}, {', '.join(interruptions)}"
            await same_decisions_and_stores(a, b, tmp_path / "rebuilt.sqlite3", where)
        finally:
            await b.store.close()
    finally:
        await a.store.close()


async def same_decisions_and_stores(a: Harness, b: Harness, rebuilt: Path, where: str) -> None:
    """Both runs published the same, their stores and reloads agree, and so does a rebuild."""
    assert "restart" in where and "crash" in where, f"{where}: no restart or no crash tested"
    # The same decisions, in the same order.
    first_difference = next(
        (
            n
            for n, (x, y) in enumerate(
                zip(decisions(a.published), decisions(b.published), strict=False)
            )
            if x != y
        ),
        None,
    )
    assert first_difference is None, (
        f"{where}: message {first_difference} differs:\n"
        f"  straight:    {decisions(a.published)[first_difference]}\n"
        f"  interrupted: {decisions(b.published)[first_difference]}"
    )
    assert len(a.published) == len(b.published), where
    # The same store, and the memory of each equal to what its store reloads.
    assert differences(a.store.path, b.store.path) == [], where
    for h in (a, b):
        live = h.state
        assert state_differences(live, await h.restart()) == [], where
    # The journal replayed (hub allocation rebuild) gives the same store again.
    journal = [outbox_row(m).value for m in a.published if isinstance(m, StepTaken)]
    store = await Store.open(rebuilt, schema=SCHEMA)
    try:
        await replay(
            journal_steps(journal, "riga"), a.inputs, store, rules=RIGA, municipality="riga"
        )
    finally:
        await store.close()
    assert differences(a.store.path, rebuilt) == [], where
    kinds = {m.event_type for m in a.published}
    assert {"OfferMade", "OfferDeclined", "PlaceAccepted"} <= kinds, sorted(kinds)
