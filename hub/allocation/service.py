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

The engine's inputs for the open round (its children, with the facts as of
the round date, and its groups) are stored too; at a start the engine is
rebuilt from them and, since single events are exact, it matches the live
offers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from hub.allocation.engine import Allocator, EngineError, Move, PoolRef
from hub.allocation.formats import ChildEntry, InstitutionEntry
from hub.allocation.model import Child, Facts, HeldPlace, Instance, Institution, Rules, SeatPool
from hub.calendar import answer_deadline, deemed_notified, local_date
from hub.errors import PermanentError
from hub.reliability.consumer import Handler, Unit
from hub.reliability.service import ServiceSpec, Timer
from hub.reliability.store import Store
from schemas.addresses import AddressResolutionFailed, AddressResolved, ResolveAddress
from schemas.allocation import (
    InstitutionFill,
    OfferDeadlineSet,
    OfferDeclined,
    OfferExpired,
    OfferMade,
    OfferRevoked,
    ParentAccepted,
    ParentDeclined,
    PlaceAccepted,
    RoundCompleted,
    RunRound,
    StepTaken,
)
from schemas.applications import ApplicationChanged, ApplicationSubmitted, ApplicationWithdrawn
from schemas.base import Message
from schemas.documents import DocumentRegistered, DocumentRegistrationFailed, RegisterDocument
from schemas.enrollment import (
    CheckEnrollment,
    EnrollmentChecked,
    EnrollmentCheckFailed,
    EnrollmentRefused,
    EnrollmentRegistered,
    RegisterEnrollment,
)
from schemas.institutions import InstitutionRegistered, PlaceReleased, SeatCapacityChanged
from schemas.notifications import (
    NotificationDeemedNotified,
    NotificationDelivered,
    NotificationFailed,
    NotificationSent,
    Recipient,
    SendNotification,
)
from schemas.residence import ResidenceDeclared
from schemas.topics import ALLOCATION

log = logging.getLogger(__name__)
_IDS = uuid.UUID("5a1e0c3e-6f0b-4c2a-9a57-0d3f3e6c1b2a")
"""Namespace of the service's deterministic ids: a redelivered cause yields the same offer."""

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS children (child_ref TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS institutions (institution_id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS offers (offer_id TEXT PRIMARY KEY, child_ref TEXT NOT NULL,"
    " status TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rounds (round_id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    # The open round's engine inputs, as the engine holds them now.
    "CREATE TABLE IF NOT EXISTS round_children (child_ref TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS round_institutions"
    " (institution_id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    # Residences reported before their child's application arrived (other topic, other pace).
    "CREATE TABLE IF NOT EXISTS early_residences (child_ref TEXT NOT NULL, slot TEXT NOT NULL,"
    " body TEXT NOT NULL, PRIMARY KEY (child_ref, slot))",
    # The number of the last step taken (see StepTaken).
    "CREATE TABLE IF NOT EXISTS steps (one INTEGER PRIMARY KEY CHECK (one = 1),"
    " taken INTEGER NOT NULL)",
)
VIEW_TABLES = (
    "children",
    "early_residences",
    "institutions",
    "offers",
    "rounds",
    "round_children",
    "round_institutions",
)
"""The tables that hold the service's view (what a rebuild must reproduce)."""

_KEYS = {"children": "child_ref", "institutions": "institution_id", "rounds": "round_id"}
"""Key column of the view tables stored as one JSON body per key."""

LIVE = "live"
CLOSED = ("accepted", "declined", "expired", "revoked")


def stable_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(_IDS, ":".join(str(p) for p in parts))


# --------------------------------------------------------------------------- the view


@dataclass
class ChildFile:
    """Everything the service knows of one child's application."""

    application: ApplicationSubmitted
    status: str = "queued"
    """queued, withdrawn, annulled or enrolled."""
    enrollment: EnrollmentChecked | None = None
    enrollment_failed: str | None = None
    address: AddressResolved | None = None
    address_failed: str | None = None
    residences: dict[str, ResidenceDeclared] = field(default_factory=dict)
    enrolled_at: str | None = None
    """``institution/group`` of an accepted place registered in VIIS."""
    enrollment_refused: str | None = None
    """Why VIIS refused to enrol the child in the accepted place (e.g. ``already_enrolled``)."""
    accepted_offer: str | None = None
    """The offer whose place the child holds (accepted); a better one accepted replaces it."""
    asked: str | None = None
    """``correlation_id`` of the latest enrichment requests: answers to older ones are stale."""

    def answers(self, message: Message) -> bool:
        """Whether ``message`` answers the latest enrichment requests (not earlier ones)."""
        return self.asked is None or str(message.correlation_id) == self.asked

    @property
    def missing(self) -> list[str]:
        """Facts the application still waits for."""
        waiting = []
        if self.enrollment is None:
            waiting.append(
                "viis" + (f" (failed: {self.enrollment_failed})" if self.enrollment_failed else "")
            )
        if self.address is None and self.address_failed is None:
            waiting.append("gis")
        return waiting

    def dump(self) -> str:
        def js(message: Message | None) -> Any:
            return None if message is None else json.loads(message.model_dump_json())

        return json.dumps(
            {
                "application": js(self.application),
                "status": self.status,
                "enrollment": js(self.enrollment),
                "enrollment_failed": self.enrollment_failed,
                "address": js(self.address),
                "address_failed": self.address_failed,
                "residences": {k: js(v) for k, v in self.residences.items()},
                "enrolled_at": self.enrolled_at,
                "enrollment_refused": self.enrollment_refused,
                "accepted_offer": self.accepted_offer,
                "asked": self.asked,
            },
            sort_keys=True,
        )

    @classmethod
    def load(cls, text: str) -> ChildFile:
        data = json.loads(text)

        def model(kind: type[Message], value: Any) -> Any:
            return None if value is None else kind.model_validate(value)

        return cls(
            application=ApplicationSubmitted.model_validate(data["application"]),
            status=data["status"],
            enrollment=model(EnrollmentChecked, data["enrollment"]),
            enrollment_failed=data["enrollment_failed"],
            address=model(AddressResolved, data["address"]),
            address_failed=data["address_failed"],
            residences={
                k: ResidenceDeclared.model_validate(v) for k, v in data["residences"].items()
            },
            enrolled_at=data["enrolled_at"],
            enrollment_refused=data.get("enrollment_refused"),
            accepted_offer=data.get("accepted_offer"),
            asked=data.get("asked"),
        )


@dataclass
class Offer:
    offer_id: str
    child_ref: str
    application_id: str
    institution_id: str
    group_code: str
    round_id: str | None
    status: str = LIVE
    made_at: str = ""
    notified_on: str | None = None
    respond_by: str | None = None
    closed_at: str | None = None
    decision_number: str | None = None
    """The DVS registration number of the admission decision (an accepted offer)."""

    def dump(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @property
    def decision_key(self) -> str:
        return f"decision:{self.offer_id}"

    @classmethod
    def load(cls, text: str) -> Offer:
        return cls(**json.loads(text))


class AllocationState:
    """The service's view and its engine; every change is also recorded on a unit."""

    def __init__(self, municipality: str, rules: Rules, clock: Callable[[], datetime]) -> None:
        self.municipality = municipality
        self.rules = rules
        self.clock = clock
        self.children: dict[str, ChildFile] = {}
        self.early: dict[str, dict[str, ResidenceDeclared]] = {}
        """Residences of children whose application has not arrived yet, by child and slot."""
        self.institutions: dict[str, InstitutionRegistered] = {}
        self.locations: dict[str, tuple[float, float]] = {}
        self.offers: dict[str, Offer] = {}
        self.live: dict[str, str] = {}  # child_ref → offer_id of its live offer
        self.rounds: dict[str, dict[str, Any]] = {}
        self.round_id: str | None = None
        self.round_date: date | None = None
        self.allocator: Allocator | None = None
        self.moment = clock()
        """The clock's reading for the step being taken: every time a step records."""
        self.sequence = 0
        """The number of the last step taken (one more per step journaled: a step that
        fails, or a clock tick that finds nothing due, takes no number)."""
        self.touched: dict[str, set[str]] = {}
        """Rows of the view the step being taken has changed, by table (see :meth:`flush`)."""

    def begin(self) -> datetime:
        """Start a step: read the clock once for all its timestamps."""
        self.touched.clear()  # a failed step's record is not the next step's
        self.moment = self.clock()
        return self.moment

    def waiting_for_facts(self) -> int:
        """Queued applications that a round would leave out: VIIS or GIS has not answered."""
        return sum(1 for f in self.children.values() if f.status == "queued" and f.missing)

    # ---------------------------------------------------------------- persistence

    async def load(self, store: Store) -> None:
        for (taken,) in await store.query("SELECT taken FROM steps"):
            self.sequence = taken
        for (body,) in await store.query("SELECT body FROM children"):
            file = ChildFile.load(body)
            self.children[file.application.child_ref] = file
        for child_ref, slot, body in await store.query(
            "SELECT child_ref, slot, body FROM early_residences"
        ):
            self.early.setdefault(child_ref, {})[slot] = ResidenceDeclared.model_validate_json(body)
        for (body,) in await store.query("SELECT body FROM institutions"):
            inst = InstitutionRegistered.model_validate_json(body)
            self.institutions[inst.institution_id] = inst
            if inst.location:
                self.locations[inst.institution_id] = (
                    inst.location.northing,
                    inst.location.easting,
                )
        for (body,) in await store.query("SELECT body FROM offers"):
            offer = Offer.load(body)
            self.offers[offer.offer_id] = offer
            if offer.status == LIVE:
                self.live[offer.child_ref] = offer.offer_id
        for (body,) in await store.query("SELECT body FROM rounds"):
            data = json.loads(body)
            self.rounds[data["round_id"]] = data
            if data.get("open"):
                self.round_id, self.round_date = (
                    data["round_id"],
                    date.fromisoformat(data["round_date"]),
                )
        if self.round_id is not None:
            children = [
                ChildEntry.model_validate_json(b).to_child()
                for (b,) in await store.query("SELECT body FROM round_children")
            ]
            institutions = [
                InstitutionEntry.model_validate_json(b).to_institution()
                for (b,) in await store.query("SELECT body FROM round_institutions")
            ]
            assert self.round_date is not None
            self.allocator = Allocator(
                Instance(tuple(institutions), tuple(children)), self.rules, self.round_date
            )
            seats = {
                cid: (ref.institution_id, ref.group)
                for cid, ref in self.allocator.matching().items()
            }
            offered = {
                o.child_ref: (o.institution_id, o.group_code)
                for o in self.offers.values()
                if o.status == LIVE
            }
            if seats != offered:
                log.error(
                    "engine rebuilt from the store does not match the live offers",
                    extra={"round": self.round_id},
                )

    # ---------------------------------------------------------------- the step's writes

    def changed(self, table: str, key: str) -> None:
        """Record that the step being taken changed the row ``key`` of the view ``table``
        (one of :data:`VIEW_TABLES` but the engine's): :meth:`flush` writes it."""
        self.touched.setdefault(table, set()).add(key)

    def set_institution(self, inst: InstitutionRegistered) -> None:
        """Record an institution as it is now, with its location if known."""
        self.institutions[inst.institution_id] = inst
        if inst.location is not None:
            self.locations[inst.institution_id] = (inst.location.northing, inst.location.easting)
        else:
            self.locations.pop(inst.institution_id, None)
        self.changed("institutions", inst.institution_id)

    def flush(self, unit: Unit) -> None:
        """Write everything the step changed, in the step's transaction.

        The view's rows are the ones the step recorded as changed; the engine's
        rows (its children and groups) are the ones the engine itself reports as
        changed (:meth:`Allocator.take_changes`), so no handler can forget one:
        a seat given back to another group is saved as surely as the one taken.
        """
        for table, keys in sorted(self.touched.items()):
            for key in sorted(keys):
                self._write(unit, table, key)
        self.touched.clear()
        if self.allocator is None:
            return
        changes = self.allocator.take_changes()
        for child_ref in sorted(changes.children):
            self._write_engine_child(unit, child_ref)
        for iid in sorted({g.institution_id for g in changes.groups}):
            self._write_engine_institution(unit, iid)
        self._check_seats(changes.seats)

    def _write(self, unit: Unit, table: str, key: str) -> None:
        column = _KEYS.get(table, "")
        upsert = (
            f"INSERT INTO {table} ({column}, body) VALUES (?, ?)"
            f" ON CONFLICT ({column}) DO UPDATE SET body = excluded.body"
        )
        if table == "children":
            unit.execute(upsert, (key, self.children[key].dump()))
        elif table == "institutions":
            unit.execute(upsert, (key, self.institutions[key].model_dump_json()))
        elif table == "rounds":
            unit.execute(upsert, (key, json.dumps(self.rounds[key], sort_keys=True)))
        elif table == "offers":
            offer = self.offers[key]
            unit.execute(
                "INSERT INTO offers (offer_id, child_ref, status, body) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (offer_id) DO UPDATE SET status = excluded.status,"
                " body = excluded.body",
                (key, offer.child_ref, offer.status, offer.dump()),
            )
        elif table == "early_residences":
            unit.execute("DELETE FROM early_residences WHERE child_ref = ?", (key,))
            for slot, residence in sorted(self.early.get(key, {}).items()):
                unit.execute(
                    "INSERT INTO early_residences (child_ref, slot, body) VALUES (?, ?, ?)",
                    (key, slot, residence.model_dump_json()),
                )
        else:
            raise AssertionError(f"no view table {table}")

    def _write_engine_child(self, unit: Unit, child_ref: str) -> None:
        assert self.allocator is not None
        if child_ref in self.allocator:
            entry = ChildEntry.from_child(self.allocator.child(child_ref))
            unit.execute(
                "INSERT INTO round_children (child_ref, body) VALUES (?, ?)"
                " ON CONFLICT (child_ref) DO UPDATE SET body = excluded.body",
                (child_ref, entry.model_dump_json()),
            )
        else:
            unit.execute("DELETE FROM round_children WHERE child_ref = ?", (child_ref,))

    def _write_engine_institution(self, unit: Unit, institution_id: str) -> None:
        inst = self._round_institution(institution_id)
        unit.execute(
            "INSERT INTO round_institutions (institution_id, body) VALUES (?, ?)"
            " ON CONFLICT (institution_id) DO UPDATE SET body = excluded.body",
            (institution_id, InstitutionEntry.from_institution(inst).model_dump_json()),
        )

    def _check_seats(self, children: Iterable[str]) -> None:
        """The children whose seat moved have the live offer the engine gives them."""
        engine = self.allocator
        assert engine is not None
        for child_ref in children:
            seat = None
            if child_ref in engine and (placed := engine.placement(child_ref)).kind != "held":
                seat = placed.pool
            offer = self.offers.get(self.live.get(child_ref, ""))
            offered = None if offer is None else PoolRef(offer.institution_id, offer.group_code)
            if seat != offered:
                log.error(
                    "a seat the engine moved has no matching live offer",
                    extra={"child_ref": child_ref, "round": self.round_id},
                )

    def _round_institution(self, institution_id: str) -> Institution:
        assert self.allocator is not None
        source = self.institutions[institution_id]
        pools = tuple(
            SeatPool(
                institution_id,
                p.group_code,
                p.language,
                self.allocator.capacity(institution_id, p.group_code),
                min_age_months=p.min_age_months,
                birth_year_from=p.birth_year_from,
                birth_year_to=p.birth_year_to,
            )
            for p in source.pools
        )
        return Institution(institution_id, pools, source.name, self.locations.get(institution_id))

    # ---------------------------------------------------------------- engine inputs

    def engine_institution(self, inst: InstitutionRegistered) -> Institution:
        pools = tuple(
            SeatPool(
                inst.institution_id,
                p.group_code,
                p.language,
                p.capacity,
                min_age_months=p.min_age_months,
                birth_year_from=p.birth_year_from,
                birth_year_to=p.birth_year_to,
            )
            for p in inst.pools
        )
        return Institution(
            inst.institution_id, pools, inst.name, self.locations.get(inst.institution_id)
        )

    def engine_child(self, file: ChildFile, on: date) -> Child:
        """The engine's child: the application with its facts as of ``on``."""
        app = file.application
        known = set(self.institutions)
        residences = file.residences.values()

        def resident(subject: str) -> bool:
            return any(
                r.subject == subject
                and r.declared_municipality == self.municipality
                and r.declared_from <= on
                for r in residences
            )

        siblings = file.enrollment.sibling_institution_ids if file.enrollment else ()
        held = None
        if file.enrolled_at:
            iid, _, group = file.enrolled_at.partition("/")
            held = HeldPlace(iid, group)
        elif (
            file.enrollment
            and file.enrollment.attending_institution_id in known
            and file.enrollment.attending_group_code
        ):
            held = HeldPlace(
                file.enrollment.attending_institution_id, file.enrollment.attending_group_code
            )
        location = (
            (file.address.lks92.northing, file.address.lks92.easting) if file.address else None
        )
        return Child(
            child_id=app.child_ref,
            language=app.language,
            desired_start_date=app.desired_start_date,
            institutions=app.institutions,
            registered_at=app.registered_at,
            birth_date=app.child_birth_date,
            facts=Facts(
                commission_grounds=frozenset(g.value for g in app.claims.commission_grounds),
                child_resident=resident("child"),
                parent_resident=resident("guardian"),
                large_family=app.claims.large_family,
                siblings_at=frozenset(i for i in siblings if i in known),
                staff_parent_at=frozenset(i for i in app.claims.parent_staff_at if i in known),
            ),
            held=held,
            accepts_any=app.accepts_any_institution,
            location=location,
        )


# --------------------------------------------------------------------------- messages out


class Outbox:
    """Builds the service's outgoing messages, caused by the message being handled.

    Without a cause (a clock tick) the messages start a flow of their own.
    ``cause_id`` seeds the ids of new offers, so handling the same cause
    again (after a crash) makes the same offers.
    """

    def __init__(
        self,
        state: AllocationState,
        unit: Unit,
        cause: Message | None,
        cause_id: uuid.UUID | None = None,
    ) -> None:
        self.state = state
        self.unit = unit
        self.cause = cause
        self.cause_id = cause.event_id if cause is not None else cause_id

    def emit(self, kind: type[Message], **fields: Any) -> Message:
        message = kind.new(
            producer=ALLOCATION,
            caused_by=self.cause,
            municipality=self.state.municipality,
            correlation_id=None if self.cause is not None else self.cause_id,
            **fields,
        )
        self.unit.emit(message)
        return message

    def now(self) -> datetime:
        return self.state.moment

    def journal(self, source_topic: str | None) -> None:
        """Write the step's changes and record it on the journal, in one transaction.

        Batches may commit in another order than their steps were taken (one is
        prepared while another commits, a clock tick runs between), so each
        entry carries its number and the stored count only ever grows.
        """
        self.state.flush(self.unit)
        self.state.sequence += 1
        sequence = self.state.sequence
        self.emit(
            StepTaken,
            sequence=sequence,
            step="message" if source_topic is not None else "clock",
            source_topic=source_topic,
            at=self.now(),
        )
        self.unit.execute(
            "INSERT INTO steps (one, taken) VALUES (1, ?)"
            " ON CONFLICT (one) DO UPDATE SET taken = max(taken, excluded.taken)",
            (sequence,),
        )

    def offer(self, child_ref: str, seat: PoolRef, round_id: str | None) -> None:
        """A new live offer for ``child_ref``, and the request to notify the parents."""
        state = self.state
        file = state.children[child_ref]
        app = file.application
        offer_id = stable_id(self.cause_id, child_ref, seat.institution_id, seat.group)
        assert state.allocator is not None and state.round_date is not None
        # The rank in the application as the parents made it (the engine's own list
        # loses the institutions a parent declined).
        listed = app.institutions
        rank = listed.index(seat.institution_id) + 1 if seat.institution_id in listed else None
        pool = next(
            p for p in state.institutions[seat.institution_id].pools if p.group_code == seat.group
        )
        start = max(state.round_date, app.desired_start_date)
        self.emit(
            OfferMade,
            offer_id=offer_id,
            child_ref=child_ref,
            round_id=round_id,
            application_id=app.application_id,
            institution_id=seat.institution_id,
            group_code=seat.group,
            language=pool.language,
            start_date=start,
            preference_rank=rank,
            response_days=state.rules.offer_deadline_days,
        )
        guardian = app.guardians[0]
        self.emit(
            SendNotification,
            notification_id=stable_id("notify", offer_id),
            child_ref=child_ref,
            purpose="offer",
            offer_id=offer_id,
            recipient=Recipient(
                personal_code=guardian.personal_code,
                email=guardian.email,
                phone=guardian.phone,
                # A registered letter goes to the guardian's postal address, else home.
                postal_address_code=guardian.postal_address_code or app.residence_address_code,
            ),
            language=guardian.correspondence_language,
            template="offer",
            variables={
                "institution": state.institutions[seat.institution_id].name,
                "group": seat.group,
                "start_date": start.isoformat(),
                "response_days": str(state.rules.offer_deadline_days),
            },
        )
        offer = Offer(
            str(offer_id),
            child_ref,
            app.application_id,
            seat.institution_id,
            seat.group,
            round_id,
            made_at=self.now().isoformat(),
        )
        state.offers[offer.offer_id] = offer
        state.live[child_ref] = offer.offer_id
        state.changed("offers", offer.offer_id)

    def close(self, child_ref: str, status: str, reason: str = "superseded") -> Offer | None:
        """Close the child's live offer (if it has one) with ``status``; publish it."""
        state = self.state
        offer_id = state.live.pop(child_ref, None)
        if offer_id is None:
            return None
        offer = state.offers[offer_id]
        offer.status, offer.closed_at = status, self.now().isoformat()
        state.changed("offers", offer.offer_id)
        if status == "revoked":
            self.emit(OfferRevoked, offer_id=offer_id, child_ref=child_ref, reason=reason)
        elif status == "declined":
            self.emit(OfferDeclined, offer_id=offer_id, child_ref=child_ref, declined_at=self.now())
        elif status == "expired":
            self.emit(
                OfferExpired,
                offer_id=offer_id,
                child_ref=child_ref,
                respond_by=date.fromisoformat(offer.respond_by or ""),
            )
        return offer

    def moves(
        self, moves: Iterable[Move], *, actor: str | None = None, lost_reason: str = "superseded"
    ) -> None:
        """Turn the engine's moves into revocations and new offers.

        The ``actor`` (the child whose event it is) is left to the caller.
        """
        state = self.state
        assert state.allocator is not None
        for move in moves:
            if move.child_id == actor:
                continue
            self.close(
                move.child_id, "revoked", reason=lost_reason if move.after is None else "superseded"
            )
            if move.after is not None and state.allocator.placement(move.child_id).kind != "held":
                self.offer(move.child_id, move.after, None)


# --------------------------------------------------------------------------- handlers


class _On(Handler[Any]):
    def __init__(self, topic: str, state: AllocationState) -> None:
        super().__init__(topic)
        self.state = state

    def apply(self, unit: Unit, message: Any, fetched: Any) -> None:
        if message.municipality != self.state.municipality:
            return  # another municipality's service handles it
        self.state.begin()
        out = Outbox(self.state, unit, message)
        self.handle(out, message)
        out.journal(self.topic.name)

    def handle(self, out: Outbox, message: Any) -> None:
        raise NotImplementedError


class Applications(_On):
    def handle(self, out: Outbox, message: Any) -> None:
        state = out.state
        if isinstance(message, ApplicationSubmitted):
            old = state.children.get(message.child_ref)
            residences = old.residences if old else {}
            early = state.early.pop(message.child_ref, None)
            if early:
                residences = residences | early
                state.changed("early_residences", message.child_ref)
            state.children[message.child_ref] = ChildFile(message, residences=residences)
            self._enrich(out, message)
        elif isinstance(message, ApplicationChanged):
            file = self._file(message.child_ref)
            file.application = file.application.model_copy(
                update={
                    "institutions": message.institutions,
                    "desired_start_date": message.desired_start_date,
                    "language": message.language,
                    "accepts_any_institution": message.accepts_any_institution,
                }
            )
            self._enrich(out, file.application)
        elif isinstance(message, ApplicationWithdrawn):
            file = self._file(message.child_ref)
            file.status = "withdrawn"
            if state.allocator is not None and message.child_ref in set(state.allocator.children()):
                moves = state.allocator.withdraw(message.child_ref)
                out.close(message.child_ref, "revoked", reason="application_withdrawn")
                out.moves(moves, actor=message.child_ref)
        state.changed("children", message.child_ref)

    def _file(self, child_ref: str) -> ChildFile:
        file = self.state.children.get(child_ref)
        if file is None:
            raise PermanentError(f"no application for child {child_ref}")
        return file

    @staticmethod
    def _enrich(out: Outbox, app: ApplicationSubmitted) -> None:
        request = out.emit(
            CheckEnrollment,
            child_ref=app.child_ref,
            child_personal_code=app.child_personal_code,
            sibling_personal_codes=app.claims.sibling_personal_codes,
            as_of=local_date(out.now()),
        )
        out.emit(ResolveAddress, subject_ref=app.child_ref, address_code=app.residence_address_code)
        out.state.children[app.child_ref].asked = str(request.correlation_id)


class Institutions(_On):
    def handle(self, out: Outbox, message: Any) -> None:
        state = out.state
        if isinstance(message, InstitutionRegistered):
            old = state.institutions.get(message.institution_id)
            moved = old is None or old.address_code != message.address_code
            if message.location is None and old is not None and not moved:
                message = message.model_copy(update={"location": old.location})  # as resolved
            state.set_institution(message)
            if message.location is None and moved:
                out.emit(
                    ResolveAddress,
                    subject_ref=message.institution_id,
                    address_code=message.address_code,
                )
            return
        inst = state.institutions.get(message.institution_id)
        if inst is None:
            raise PermanentError(f"unknown institution {message.institution_id}")
        before = {p.group_code: p.capacity for p in inst.pools}
        if isinstance(message, SeatCapacityChanged):
            pools = message.pools
        else:
            assert isinstance(message, PlaceReleased)
            if message.group_code not in before:
                raise PermanentError(f"no group {message.group_code} at {message.institution_id}")
            pools = tuple(
                p.model_copy(update={"capacity": p.capacity + message.count})
                if p.group_code == message.group_code
                else p
                for p in inst.pools
            )
        deltas = {
            p.group_code: p.capacity - before[p.group_code]
            for p in pools
            if p.group_code in before and p.capacity != before[p.group_code]
        }
        engine = state.allocator
        if engine is not None:
            # Refused before anything changes: a refused message leaves the state as it was.
            for group, delta in deltas.items():
                if engine.capacity(inst.institution_id, group) + delta < 0:
                    raise PermanentError(
                        f"{inst.institution_id}/{group}: {-delta} seats fewer is more than the"
                        f" {engine.capacity(inst.institution_id, group)} not yet accepted"
                    )
        state.set_institution(inst.model_copy(update={"pools": pools}))
        if engine is None:
            return
        for group, delta in deltas.items():
            moves = engine.change_capacity(inst.institution_id, group, delta)
            out.moves(moves, lost_reason="capacity_reduced")


class Residences(_On):
    def handle(self, out: Outbox, message: ResidenceDeclared) -> None:
        state, slot = out.state, f"{message.subject}:{message.guardian_index or 0}"
        file = state.children.get(message.child_ref)
        if file is None:
            # The register reports residence beside the application, on another topic: the
            # application may simply not be here yet. Kept until it comes (``/health``
            # counts them as early residences).
            state.early.setdefault(message.child_ref, {})[slot] = message
            state.changed("early_residences", message.child_ref)
            return
        file.residences[slot] = message
        state.changed("children", message.child_ref)


class EnrollmentFacts(_On):
    def handle(self, out: Outbox, message: Any) -> None:
        file = out.state.children.get(message.child_ref)
        if file is None:
            raise PermanentError(f"no application for child {message.child_ref}")
        if isinstance(message, (EnrollmentChecked, EnrollmentCheckFailed)) and not file.answers(
            message
        ):
            log.info("stale VIIS answer ignored", extra={"child_ref": message.child_ref})
            return
        if isinstance(message, EnrollmentChecked):
            file.enrollment, file.enrollment_failed = message, None
        elif isinstance(message, EnrollmentCheckFailed):
            file.enrollment_failed = message.reason
        elif isinstance(message, (EnrollmentRegistered, EnrollmentRefused)) and str(
            message.offer_id
        ) != (file.accepted_offer or str(message.offer_id)):
            return  # about a place the child has since given up for a better one
        elif isinstance(message, EnrollmentRegistered):
            file.status = "enrolled"
        elif isinstance(message, EnrollmentRefused):
            file.enrollment_refused = message.reason
            log.warning(
                "VIIS refused an enrolment",
                extra={"child_ref": message.child_ref, "reason": message.reason},
            )
        out.state.changed("children", message.child_ref)


class Addresses(_On):
    def handle(self, out: Outbox, message: Any) -> None:
        state = out.state
        inst = state.institutions.get(message.subject_ref)
        if inst is not None:
            if isinstance(message, AddressResolved) and inst.address_code == message.address_code:
                state.set_institution(inst.model_copy(update={"location": message.lks92}))
            return
        file = state.children.get(message.subject_ref)
        if file is None:
            raise PermanentError(f"no child or institution {message.subject_ref}")
        if not file.answers(message):
            log.info("stale GIS answer ignored", extra={"child_ref": message.subject_ref})
            return
        if isinstance(message, AddressResolved):
            file.address, file.address_failed = message, None
        else:
            assert isinstance(message, AddressResolutionFailed)
            file.address_failed = message.reason
        state.changed("children", message.subject_ref)


class Commands(_On):
    def handle(self, out: Outbox, message: RunRound) -> None:
        run_round(out, message)


def run_round(out: Outbox, command: RunRound) -> None:
    """Build the admission list as of ``command.round_date`` and offer every seat it gives."""
    state = out.state
    if state.live:
        raise PermanentError(f"a round is still open: {len(state.live)} offers await an answer")
    on = command.round_date
    ready = [
        f for f in state.children.values() if f.status in ("queued", "enrolled") and not f.missing
    ]
    institutions = tuple(state.engine_institution(i) for i in state.institutions.values())
    children = tuple(state.engine_child(f, on) for f in ready)
    state.allocator = Allocator(Instance(institutions, children), state.rules, on)
    round_id = str(command.round_id)
    state.round_id, state.round_date = round_id, on
    unit = out.unit
    unit.execute("DELETE FROM round_children")
    unit.execute("DELETE FROM round_institutions")
    for child in children:
        unit.execute(
            "INSERT INTO round_children (child_ref, body) VALUES (?, ?)",
            (child.child_id, ChildEntry.from_child(child).model_dump_json()),
        )
    for inst in institutions:
        unit.execute(
            "INSERT INTO round_institutions (institution_id, body) VALUES (?, ?)",
            (inst.institution_id, InstitutionEntry.from_institution(inst).model_dump_json()),
        )
    matching = state.allocator.matching()
    for child_ref, seat in sorted(matching.items()):
        out.offer(child_ref, seat, round_id)
    fills = [
        InstitutionFill(
            institution_id=i.institution_id,
            capacity=sum(p.capacity for p in i.pools),
            offered=sum(1 for s in matching.values() if s.institution_id == i.institution_id),
            accepted=0,
        )
        for i in institutions
    ]
    out.emit(
        RoundCompleted,
        round_id=command.round_id,
        round_date=on,
        applications_considered=len(children),
        offers_made=len(matching),
        children_unplaced=len(children) - len(matching),
        lottery_seed=state.rules.lottery_seed,
        institutions=fills,
    )
    listing = json.dumps(
        sorted([cid, s.institution_id, s.group] for cid, s in matching.items())
    ).encode()
    key = f"admission-list:{state.municipality}:{round_id}"
    out.emit(
        RegisterDocument,
        document_key=key,
        document_type="admission_list",
        title=f"Admission list {on.isoformat()} ({len(matching)} places)",
        author_unit="Education board",
        media_type="application/json",
        content_sha256=hashlib.sha256(listing).hexdigest(),
        content_size=len(listing),
    )
    for rid in state.rounds:
        state.rounds[rid]["open"] = False
        state.changed("rounds", rid)
    state.rounds[round_id] = {
        "round_id": round_id,
        "round_date": on.isoformat(),
        "open": True,
        "offers": len(matching),
        "considered": len(children),
        "waiting_for_facts": state.waiting_for_facts(),
        "document_key": key,
        "registration_number": None,
    }
    state.changed("rounds", round_id)


class Responses(_On):
    def handle(self, out: Outbox, message: Any) -> None:
        state = out.state
        offer = state.offers.get(str(message.offer_id))
        if offer is None or offer.child_ref != message.child_ref:
            raise PermanentError(f"no offer {message.offer_id} for child {message.child_ref}")
        if offer.status != LIVE:
            raise PermanentError(f"offer {message.offer_id} is already {offer.status}")
        assert state.allocator is not None
        child_ref = message.child_ref
        if isinstance(message, ParentDeclined):
            moves = state.allocator.decline(child_ref)
            out.close(child_ref, "declined")
        else:
            assert isinstance(message, ParentAccepted)
            moves = state.allocator.accept(child_ref)
            state.live.pop(child_ref)
            offer.status, offer.closed_at = "accepted", out.now().isoformat()
            state.changed("offers", offer.offer_id)
            file = state.children[child_ref]
            # A better place accepted: the one held so far goes back (the engine has
            # passed its seat on) and VIIS moves the enrolment.
            given_up = state.offers.get(file.accepted_offer or "")
            if given_up is not None and given_up.status == "accepted":
                given_up.status, given_up.closed_at = "revoked", out.now().isoformat()
                state.changed("offers", given_up.offer_id)
                out.emit(
                    OfferRevoked,
                    offer_id=given_up.offer_id,
                    child_ref=child_ref,
                    reason="superseded",
                )
            attends = file.enrollment.attending_institution_id if file.enrollment else None
            transfer_from = given_up.institution_id if given_up is not None else attends
            file.enrolled_at = f"{offer.institution_id}/{offer.group_code}"
            file.accepted_offer, file.enrollment_refused = offer.offer_id, None
            if file.status == "enrolled":
                file.status = "queued"  # until VIIS has recorded the new place
            state.changed("children", child_ref)
            start = max(state.round_date or date.min, file.application.desired_start_date)
            out.emit(
                PlaceAccepted,
                offer_id=message.offer_id,
                child_ref=child_ref,
                application_id=offer.application_id,
                institution_id=offer.institution_id,
                group_code=offer.group_code,
                start_date=start,
                accepted_at=message.responded_at,
            )
            out.emit(
                RegisterEnrollment,
                child_ref=child_ref,
                child_personal_code=file.application.child_personal_code,
                offer_id=message.offer_id,
                institution_id=offer.institution_id,
                group_code=offer.group_code,
                start_date=start,
                transfer_from=transfer_from,
            )
            register_decision(out, offer, start)
        out.moves(moves, actor=child_ref)
        # A new seat the engine gives the actor itself (after a decline) is an offer too.
        own = next((m for m in moves if m.child_id == child_ref), None)
        if (
            own is not None
            and own.after is not None
            and state.allocator.placement(child_ref).kind != "held"
        ):
            out.offer(child_ref, own.after, None)


class Receipts(_On):
    """Delivery receipts start the legal clock of the offer they are about."""

    def handle(self, out: Outbox, message: Any) -> None:
        state = out.state
        if message.offer_id is None or isinstance(message, NotificationFailed):
            return
        offer = state.offers.get(str(message.offer_id))
        if offer is None or offer.status != LIVE or offer.respond_by is not None:
            return  # nothing to start: unknown, closed, or already running
        # A receipt cannot start the clock before the offer existed: another system's
        # clock may run behind this one's.
        made = datetime.fromisoformat(offer.made_at) if offer.made_at else None
        if isinstance(message, NotificationDeemedNotified):
            notified = message.deemed_notified_on
        elif isinstance(message, NotificationSent) and message.channel == "e_adrese":
            notified = deemed_notified(max(message.sent_at, made) if made else message.sent_at)
        elif isinstance(message, NotificationDelivered) and message.channel != "e_adrese":
            notified = local_date(message.delivered_at)
        else:
            return
        if made is not None:
            notified = max(notified, local_date(made))
        respond_by = answer_deadline(notified, state.rules.offer_deadline_days)
        offer.notified_on, offer.respond_by = notified.isoformat(), respond_by.isoformat()
        state.changed("offers", offer.offer_id)
        out.emit(
            OfferDeadlineSet,
            offer_id=message.offer_id,
            child_ref=offer.child_ref,
            notified_on=notified,
            respond_by=respond_by,
        )


def register_decision(out: Outbox, offer: Offer, start: date) -> None:
    """The admission decision of an accepted offer goes to the DVS for registration.

    Its content names the child by reference only; the key is the offer's, so a
    redelivered acceptance registers the same decision once.
    """
    round_data = out.state.rounds.get(offer.round_id or "", {})
    decision = json.dumps(
        {
            "child_ref": offer.child_ref,
            "institution_id": offer.institution_id,
            "group_code": offer.group_code,
            "start_date": start.isoformat(),
            "offer_id": offer.offer_id,
        },
        sort_keys=True,
    ).encode()
    out.emit(
        RegisterDocument,
        document_key=offer.decision_key,
        document_type="decision",
        title=f"Admission decision: {offer.institution_id} group {offer.group_code}",
        author_unit="Education board",
        media_type="application/json",
        content_sha256=hashlib.sha256(decision).hexdigest(),
        content_size=len(decision),
        related_document_keys=tuple(
            k for k in (round_data.get("document_key"),) if isinstance(k, str)
        ),
        child_ref=offer.child_ref,
    )


class Documents(_On):
    def handle(self, out: Outbox, message: Any) -> None:
        state = out.state
        if message.document_key.startswith("decision:"):
            offer = state.offers.get(message.document_key.removeprefix("decision:"))
            if offer is not None and isinstance(message, DocumentRegistered):
                offer.decision_number = message.registration_number
                state.changed("offers", offer.offer_id)
            return
        for data in state.rounds.values():
            if data.get("document_key") == message.document_key:
                if isinstance(message, DocumentRegistered):
                    data["registration_number"] = message.registration_number
                else:
                    assert isinstance(message, DocumentRegistrationFailed)
                    data["registration_failed"] = message.reason
                state.changed("rounds", data["round_id"])


def expire_due(state: AllocationState, unit: Unit) -> None:
    """Expire every live offer whose answer deadline has passed; each expiry cascades."""
    today = local_date(state.begin())
    due = sorted(
        (
            o
            for o in state.offers.values()
            if o.status == LIVE and o.respond_by and date.fromisoformat(o.respond_by) < today
        ),
        key=lambda o: o.offer_id,
    )
    for offer in due:
        if state.live.get(offer.child_ref) != offer.offer_id:
            continue  # an earlier expiry's cascade has already moved this child
        assert state.allocator is not None
        out = Outbox(state, unit, None, stable_id("expiry", offer.offer_id))
        moves = state.allocator.expire(offer.child_ref)
        out.close(offer.child_ref, "expired")
        # A child holding an accepted place keeps it: only the wait for a better one ends.
        if state.rules.on_expiry == "annul" and not state.children[offer.child_ref].accepted_offer:
            state.children[offer.child_ref].status = "annulled"
            state.changed("children", offer.child_ref)
        out.moves(moves, actor=offer.child_ref)
        own = next((m for m in moves if m.child_id == offer.child_ref), None)
        if (
            own is not None
            and own.after is not None
            and state.allocator.placement(offer.child_ref).kind != "held"
        ):
            out.offer(offer.child_ref, own.after, None)
    if due:
        Outbox(state, unit, None, stable_id("tick", state.moment.isoformat())).journal(None)


def invariant_problems(state: AllocationState) -> list[str]:
    """What breaks the offers' invariants now (an empty list when all hold):

    - a child has at most one live offer;
    - every offer is live, accepted, declined, expired or revoked;
    - the live offers are exactly the engine's seats, so no seat is offered twice;
    - the live offers plus the places accepted in the round never exceed the seats the
      institution declared for the group, and the places of children who attended the
      group and have accepted one elsewhere (the engine passes those seats on).
    """
    problems = []
    per_child = Counter(o.child_ref for o in state.offers.values() if o.status == LIVE)
    problems += [f"child {c} has {n} live offers" for c, n in per_child.items() if n > 1]
    problems += [
        f"offer {o.offer_id} has status {o.status}"
        for o in state.offers.values()
        if o.status != LIVE and o.status not in CLOSED
    ]
    if state.allocator is not None:
        seats = {cid: (s.institution_id, s.group) for cid, s in state.allocator.matching().items()}
        live = {
            o.child_ref: (o.institution_id, o.group_code)
            for o in state.offers.values()
            if o.status == LIVE
        }
        if seats != live:
            problems.append(
                f"{len(set(seats.items()) ^ set(live.items()))} live offers differ from the engine"
            )
        per_group = Counter(live.values())
        for (iid, group), n in per_group.items():
            if n > state.allocator.capacity(iid, group):
                problems.append(f"group {iid}/{group} has {n} live offers for fewer seats")
        # Against the seats the institution declared: live offers plus accepted places, where
        # a child who attended the group (VIIS) and accepted a place elsewhere left one more.
        taken = per_group + Counter(
            (o.institution_id, o.group_code)
            for o in state.offers.values()
            if o.status == "accepted" and o.round_id == state.round_id
        )
        left = Counter(
            (f.enrollment.attending_institution_id, f.enrollment.attending_group_code)
            for f in state.children.values()
            if f.accepted_offer and f.enrollment and f.enrollment.attending_institution_id
        )
        for (iid, group), n in taken.items():
            declared = {p.group_code: p.capacity for p in state.institutions[iid].pools}
            seats = declared.get(group, 0) + left[(iid, group)]
            if n > seats:
                problems.append(
                    f"group {iid}/{group}: {n} live or accepted offers, {declared.get(group, 0)}"
                    f" seats declared and {left[(iid, group)]} left by children who moved"
                )
    return problems


def snapshot(state: AllocationState) -> dict[str, Any]:
    """The service's memory, part by part and key: its view as stored, and the engine's
    children, groups and seats (compared by value: a child's sets print in any order)."""
    engine = state.allocator
    return {
        "children": {k: f.dump() for k, f in state.children.items()},
        "offers": {k: o.dump() for k, o in state.offers.items()},
        "live offers": dict(state.live),
        "institutions": {k: i.model_dump_json() for k, i in state.institutions.items()},
        "rounds": {k: json.dumps(r, sort_keys=True) for k, r in state.rounds.items()},
        "open round": {"round": [state.round_id, str(state.round_date)]},
        "early residences": {
            k: {slot: r.model_dump_json() for slot, r in v.items()} for k, v in state.early.items()
        },
        "steps": {"taken": state.sequence},
        "engine children": {}
        if engine is None
        else {c.child_id: c for c in engine.instance.children},
        "engine groups": {} if engine is None else {g.pool: g for g in engine.groups()},
        "engine seats": {} if engine is None else engine.matching(),
    }


def state_differences(live: AllocationState, other: AllocationState) -> list[str]:
    """Where two states differ (an empty list when they are equal), part by part and key."""
    found = []
    a, b = snapshot(live), snapshot(other)
    for part, mine in a.items():
        theirs = b[part]
        keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if keys:
            shown = ", ".join(map(str, keys[:5])) + (" …" if len(keys) > 5 else "")
            found.append(f"{part}: {len(keys)} different ({shown})")
    return found


async def reloaded(state: AllocationState, path: Path) -> AllocationState:
    """A new state loaded from the store at ``path`` (closed, or the service stopped), as a
    restarted service would load it."""
    store = await Store.open(path, schema=SCHEMA)
    try:
        fresh = AllocationState(state.municipality, state.rules, state.clock)
        await fresh.load(store)
    finally:
        await store.close()
    return fresh


def service(
    rules: Rules,
    municipality: str,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    expiry_interval: float = 60.0,
) -> tuple[ServiceSpec, AllocationState]:
    """The allocation service's spec, and its state (for the API and tests)."""
    state = AllocationState(municipality, rules, clock)
    handlers = [
        Applications("vps.pii.applications.v1", state),
        Institutions("vps.pii.institutions.v1", state),
        Residences("vps.population.residence.v1", state),
        EnrollmentFacts("viis.enrollment.facts.v1", state),
        Addresses("gis.address.resolved.v1", state),
        Commands("allocation.commands.v1", state),
        Responses("allocation.responses.v1", state),
        Receipts("notify.receipts.v1", state),
        Documents("dvs.documents.registered.v1", state),
    ]
    spec = ServiceSpec(
        ALLOCATION,
        handlers,
        schema=SCHEMA,
        on_start=state.load,
        timers=(Timer(expiry_interval, lambda unit: expire_due(state, unit)),),
    )
    return spec, state


__all__ = [
    "AllocationState",
    "EngineError",
    "invariant_problems",
    "reloaded",
    "service",
    "snapshot",
    "state_differences",
]
