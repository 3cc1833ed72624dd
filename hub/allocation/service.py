"""The allocation service: the engine on the bus.

It keeps a view of the queue (applications, their enrichment, institutions
and seats, offers, rounds) in memory and in its SQLite store, and reacts to
events:

- a new or changed application is enriched on the bus: VIIS is asked where
  the child and its siblings attend, GIS where it lives; until both have
  answered the application waits (its status shows what is missing);
- ``RunRound`` builds the admission list as of a date with the engine, and
  publishes one offer and one notification request per seat, a summary,
  and a request to register the list in the DVS;
- a decline, an expiry, a withdrawal or released or added seats go through
  the engine's incremental path at once: the next offers and any
  revocations are published in the same transaction;
- an acceptance keeps the place, drops the child's lower choices and asks
  VIIS to record the enrolment;
- notification receipts start the legal clock (:mod:`hub.calendar`), and a
  timer expires offers whose deadline has passed.

The service is built in layers, each in a module of its own:

- :mod:`hub.allocation.records` and :mod:`hub.allocation.state`: the memory (the view
  and the open round's engine);
- :mod:`hub.allocation.decisions`: a function per message type that changes the state
  and returns the step's effects (messages to publish, rows changed), and the table
  from message type to decision;
- :mod:`hub.allocation.repository`: the one module with SQL, which loads the state and
  writes a step's effects;
- this module: the steps. Each message (or expiry tick) is one step: its decision, then
  its effects written and journaled (``allocation.journal.v1``) in the step's
  transaction. A step that fails is dead-lettered by the consumer; if it had changed the
  state before it failed, the state is loaded again from the rows as the store will hold
  them, so memory, store and a rebuild from the journal stay equal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hub.allocation.decisions import Step, clock_tick, decide
from hub.allocation.engine import EngineError, PoolRef
from hub.allocation.model import Rules
from hub.allocation.records import CLOSED, LIVE, ChildFile, Offer, stable_id
from hub.allocation.repository import SCHEMA, VIEW_TABLES, Repository, reloaded
from hub.allocation.state import (
    AllocationState,
    invariant_problems,
    snapshot,
    state_differences,
)
from hub.reliability.consumer import Handler, Unit
from hub.reliability.service import ServiceSpec, Timer
from schemas.allocation import StepTaken
from schemas.base import Message
from schemas.topics import ALLOCATION

log = logging.getLogger(__name__)

TOPICS = (
    "vps.pii.applications.v1",
    "vps.pii.institutions.v1",
    "vps.population.residence.v1",
    "viis.enrollment.facts.v1",
    "gis.address.resolved.v1",
    "allocation.commands.v1",
    "allocation.responses.v1",
    "notify.receipts.v1",
    "dvs.documents.registered.v1",
    "authorisations.results.v1",
)
"""The topics the service reads; :data:`hub.allocation.decisions.DECISIONS` says what it
does with each message type on them."""


class Allocation:
    """The service's steps: a decision on the state, then its effects written and journaled
    in the step's transaction; or, when the decision fails, the state as it was."""

    def __init__(self, state: AllocationState) -> None:
        self.state = state
        self.repository = Repository(state)
        self.handlers = [_On(topic, self) for topic in TOPICS]

    def take(
        self,
        unit: Unit,
        source_topic: str | None,
        cause: Message | None,
        decision: Callable[[Step], None],
    ) -> None:
        """Take one step: ``decision`` on a new :class:`Step` caused by ``cause`` (None: a
        clock tick, which is journaled only when it changed something)."""
        state = self.state
        step = Step(state, state.clock(), cause)
        engine = state.allocator
        try:
            decision(step)
        except Exception:
            moved = state.allocator is not engine or (engine is not None and engine.changed)
            if step.effects or moved:
                log.warning(
                    "a step failed half-way: the state is loaded again as it was before it",
                    extra={"topic": source_topic},
                )
                self.repository.restore()
            raise
        if cause is None and not step.effects:
            return
        self._journal(unit, step, source_topic)

    def _journal(self, unit: Unit, step: Step, source_topic: str | None) -> None:
        """Write the step's changes and record it on the journal, in one transaction.

        Batches may commit in another order than their steps were taken (one is
        prepared while another commits, a clock tick runs between), so each
        entry carries its number and the stored count only ever grows.
        """
        state = self.state
        state.sequence += 1
        changes = self.repository.save(
            unit, step.effects.rows, new_round=step.effects.new_round, sequence=state.sequence
        )
        if changes is not None:
            self._check_seats(changes.seats)
        step.emit(
            StepTaken,
            sequence=state.sequence,
            step="message" if source_topic is not None else "clock",
            source_topic=source_topic,
            at=step.at,
        )
        for message in step.effects.messages:
            unit.emit(message)

    def _check_seats(self, children: frozenset[str]) -> None:
        """The children whose seat moved have the live offer the engine gives them."""
        state, engine = self.state, self.state.allocator
        assert engine is not None
        for child_ref in children:
            seat = None
            if child_ref in engine and (placed := engine.placement(child_ref)).kind != "held":
                seat = placed.pool
            offer = state.offers.get(state.live.get(child_ref, ""))
            offered = None if offer is None else PoolRef(offer.institution_id, offer.group_code)
            if seat != offered:
                log.error(
                    "a seat the engine moved has no matching live offer",
                    extra={"child_ref": child_ref, "round": state.round_id},
                )

    def tick(self, unit: Unit) -> None:
        """The timer: a round whose checks have waited long enough is built; offers whose
        answer deadline has passed expire and cascade."""
        self.take(unit, None, None, clock_tick)


class _On(Handler[Any]):
    """A topic of the service: each message is one step, decided by its type."""

    def __init__(self, topic: str, service: Allocation) -> None:
        super().__init__(topic)
        self.service = service

    def apply(self, unit: Unit, message: Any, fetched: Any) -> None:
        if message.municipality != self.service.state.municipality:
            return  # another municipality's service handles it
        self.service.take(unit, self.topic.name, message, lambda step: decide(step, message))


def service(
    rules: Rules,
    municipality: str,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    expiry_interval: float = 60.0,
    recheck_wait: timedelta = timedelta(minutes=10),
) -> tuple[ServiceSpec, AllocationState]:
    """The allocation service's spec, and its state (for the API and tests)."""
    allocation = Allocation(AllocationState(municipality, rules, clock, recheck_wait))
    spec = ServiceSpec(
        ALLOCATION,
        allocation.handlers,
        schema=SCHEMA,
        on_start=allocation.repository.load,
        timers=(Timer(expiry_interval, allocation.tick),),
    )
    return spec, allocation.state


__all__ = [
    "CLOSED",
    "LIVE",
    "SCHEMA",
    "TOPICS",
    "VIEW_TABLES",
    "Allocation",
    "AllocationState",
    "ChildFile",
    "EngineError",
    "Offer",
    "invariant_problems",
    "reloaded",
    "service",
    "snapshot",
    "stable_id",
    "state_differences",
]
