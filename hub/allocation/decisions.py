"""What the allocation service decides for each message: functions from state and message to
effects.

:func:`decide` looks the message's type up in :data:`DECISIONS` and runs the decision on a
:class:`Step`. A decision changes the state (the view and the open round's engine) and
records its effects on the step: the messages to publish (offers, revocations, requests to
VIIS, GIS, the notification service and the DVS) and the rows of the view it changed. It
touches no database and no broker: the service (:mod:`hub.allocation.service`) writes the
effects in the step's transaction. A decision that refuses a message raises
:class:`~hub.errors.PermanentError`, before it changes anything where it can; where it
cannot, the service restores the state as it was before the step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from hub.allocation import notices
from hub.allocation.engine import Allocator, Move, PoolRef
from hub.allocation.model import Instance
from hub.allocation.records import LIVE, ChildFile, FactAnswer, Offer, stable_id
from hub.allocation.state import AllocationState
from hub.calendar import local_date
from hub.errors import PermanentError
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
)
from schemas.applications import (
    ApplicationChanged,
    ApplicationRefused,
    ApplicationSubmitted,
    ApplicationWithdrawn,
)
from schemas.authorisations import (
    AuthorisationCheckFailed,
    AuthorisationRefused,
    AuthorisationVerified,
    CheckAuthorisation,
)
from schemas.base import Message
from schemas.documents import (
    DocumentContentRejected,
    DocumentContentStored,
    DocumentRegistered,
    DocumentRegistrationFailed,
    RegisterDocument,
)
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
    NotificationPosted,
    NotificationSent,
)
from schemas.priority import PriorityConfirmed, PriorityRejected
from schemas.residence import (
    CheckResidence,
    Residence,
    ResidenceChecked,
    ResidenceCheckFailed,
    ResidenceDeclared,
)
from schemas.topics import ALLOCATION

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- effects


@dataclass
class Effects:
    """What one step does besides changing memory: messages to publish, rows to write."""

    messages: list[Message] = field(default_factory=list)
    rows: dict[str, set[str]] = field(default_factory=dict)
    """Rows of the view changed, by table (see :data:`hub.allocation.repository.VIEW_TABLES`)."""
    new_round: bool = False
    """A round was built: the engine's stored inputs are replaced as a whole."""

    def __bool__(self) -> bool:
        return bool(self.messages or self.rows or self.new_round)


class Step:
    """One step's decisions being taken: the state, the cause, the time and the effects.

    Without a cause (a clock tick) the messages start a flow of their own.
    ``cause_id`` seeds the ids of new offers, so taking the same step again (after a
    crash, in a rebuild) makes the same offers.
    """

    def __init__(
        self,
        state: AllocationState,
        at: datetime,
        cause: Message | None = None,
        cause_id: uuid.UUID | None = None,
    ) -> None:
        self.state = state
        self.at = at
        self.cause = cause
        self.cause_id = cause.event_id if cause is not None else cause_id
        self.effects = Effects()

    def emit(self, kind: type[Message], **fields: Any) -> Message:
        message = kind.new(
            producer=ALLOCATION,
            caused_by=self.cause,
            municipality=self.state.municipality,
            correlation_id=None if self.cause is not None else self.cause_id,
            **fields,
        )
        self.effects.messages.append(message)
        return message

    def changed(self, table: str, key: str) -> None:
        """The row ``key`` of the view ``table`` changed (the engine's rows are found by
        the engine itself, see :meth:`Allocator.take_changes`)."""
        self.effects.rows.setdefault(table, set()).add(key)

    def child(self, child_ref: str) -> ChildFile:
        """The child's record, to be changed by this step; refused if there is none."""
        file = self.state.children.get(child_ref)
        if file is None:
            raise PermanentError(f"no application for child {child_ref}")
        self.changed("children", child_ref)
        return file

    def offer_changed(self, offer: Offer, status: str | None = None) -> None:
        if status is not None:
            offer.status, offer.closed_at = status, self.at.isoformat()
        self.changed("offers", offer.offer_id)

    # ---------------------------------------------------------------- offers

    def offer(self, child_ref: str, seat: PoolRef, round_id: str | None) -> None:
        """A new live offer for ``child_ref``, and the request to notify the parents."""
        state = self.state
        app = state.children[child_ref].application
        offer_id = stable_id(self.cause_id, child_ref, seat.institution_id, seat.group)
        assert state.round_date is not None
        # The rank in the application as the parents made it (the engine's own list
        # loses the institutions a parent declined).
        listed = app.institutions
        rank = listed.index(seat.institution_id) + 1 if seat.institution_id in listed else None
        institution = state.institutions[seat.institution_id]
        pool = next(p for p in institution.pools if p.group_code == seat.group)
        start = state.start_date(app)
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
        offer = Offer(
            str(offer_id),
            child_ref,
            app.application_id,
            seat.institution_id,
            seat.group,
            round_id,
            made_at=self.at.isoformat(),
        )
        state.add_offer(offer)
        self.offer_changed(offer)
        notices.issue(self, "invitation", child_ref, offer=offer)

    def close(self, child_ref: str, status: str, reason: str = "superseded") -> Offer | None:
        """Close the child's live offer (if it has one) with ``status``; publish it."""
        offer_id = self.state.live.pop(child_ref, None)
        if offer_id is None:
            return None
        offer = self.state.offers[offer_id]
        self.offer_changed(offer, status)
        if status == "revoked":
            self.emit(OfferRevoked, offer_id=offer_id, child_ref=child_ref, reason=reason)
            notices.offer_closed(self, offer, reason)
        elif status == "declined":
            self.emit(OfferDeclined, offer_id=offer_id, child_ref=child_ref, declined_at=self.at)
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

        The ``actor`` (the child whose event it is) loses no offer here (the caller has
        closed it); a new seat the engine gives the actor is offered like any other.
        """
        engine = self.state.allocator
        assert engine is not None
        for move in moves:
            if move.child_id != actor:
                reason = lost_reason if move.after is None else "superseded"
                self.close(move.child_id, "revoked", reason=reason)
            if move.after is not None and engine.placement(move.child_id).kind != "held":
                self.offer(move.child_id, move.after, None)


Decision = Callable[[Step, Any], None]

# --------------------------------------------------------------------------- applications


def _enrich(step: Step, app: ApplicationSubmitted) -> None:
    """Ask VIIS (enrolment, siblings) and GIS (address) for the application's facts."""
    request = step.emit(
        CheckEnrollment,
        child_ref=app.child_ref,
        child_personal_code=app.child_personal_code,
        sibling_personal_codes=app.claims.sibling_personal_codes,
        as_of=local_date(step.at),
    )
    step.emit(ResolveAddress, subject_ref=app.child_ref, address_code=app.residence_address_code)
    step.state.children[app.child_ref].asked = str(request.correlation_id)


def _check_authorisation(step: Step, app: ApplicationSubmitted) -> None:
    """An application filed by an authorised person counts only once the register of
    authorisations confirms the authorisation (Riga binding regulations Nr. 191, point 7.2:
    docs/legal-basis.md, "Priorities and intake")."""
    if app.authorisation is None:
        return
    step.state.children[app.child_ref].authorisation = "pending"
    step.emit(
        CheckAuthorisation,
        child_ref=app.child_ref,
        application_id=app.application_id,
        child_personal_code=app.child_personal_code,
        authorisation=app.authorisation,
        on=local_date(app.registered_at),
    )


def _join_open_round(step: Step, child_ref: str) -> None:
    """A child that is not in the open round's engine joins it now, where the rules say
    so and its facts are in (``late_applications = "join"``, docs/rules.md)."""
    state, engine = step.state, step.state.allocator
    file = state.children[child_ref]
    if (
        engine is None
        or state.round_date is None
        or state.rules.late_applications != "join"
        or child_ref in engine
        or file.status != "queued"
        or file.missing
    ):
        return
    step.moves(engine.add_child(state.engine_child(file, state.round_date)))


def application_submitted(step: Step, message: ApplicationSubmitted) -> None:
    state = step.state
    old = state.children.get(message.child_ref)
    residences = old.residences if old else {}
    early = state.early.pop(message.child_ref, None)
    if early:
        residences = residences | early
        step.changed("early_residences", message.child_ref)
    file = ChildFile(message, residences=residences)
    if old is not None and old.application.application_id == message.application_id:
        # The same application again (a register's replay): the commission's decisions
        # and the declined institutions stay with it.
        file.decisions, file.declined = old.decisions, old.declined
    state.children[message.child_ref] = file
    step.changed("children", message.child_ref)
    _enrich(step, message)
    _check_authorisation(step, message)


def application_changed(step: Step, message: ApplicationChanged) -> None:
    """The parents changed the institutions, the start date or the language.

    Possible until the child is on the admission list (Riga binding regulations Nr. 191,
    point 16: docs/rules.md, "Changes while a round is open"); a change keeps the original
    registration time. A child waiting in the open round is entered again with the new
    choices at once, so it may take a seat now.
    """
    state = step.state
    if state.on_list(message.child_ref):
        step.child(message.child_ref)  # refused: the parents get the decision saying why
        log.info(
            "a change to an application on the admission list is refused",
            extra={"child_ref": message.child_ref},
        )
        notices.issue(
            step,
            "refusal",
            message.child_ref,
            subject=f"{message.child_ref}:{message.event_id}",
            variables={"reason": "on_list"},
        )
        return
    file = step.child(message.child_ref)
    file.application = file.application.model_copy(
        update={
            "institutions": message.institutions,
            "desired_start_date": message.desired_start_date,
            "language": message.language,
            "accepts_any_institution": message.accepts_any_institution,
        }
    )
    _enrich(step, file.application)
    engine = state.allocator
    if engine is not None and state.round_date is not None and message.child_ref in engine:
        step.moves(engine.withdraw(message.child_ref), actor=message.child_ref)
        step.moves(engine.add_child(state.engine_child(file, state.round_date)))


def application_withdrawn(step: Step, message: ApplicationWithdrawn) -> None:
    state = step.state
    file = step.child(message.child_ref)
    file.status = "withdrawn"
    engine = state.allocator
    if engine is not None and message.child_ref in engine:
        moves = engine.withdraw(message.child_ref)
        step.close(message.child_ref, "revoked", reason="application_withdrawn")
        step.moves(moves, actor=message.child_ref)


# --------------------------------------------------------------------------- institutions


def institution_registered(step: Step, message: InstitutionRegistered) -> None:
    state = step.state
    old = state.institutions.get(message.institution_id)
    moved = old is None or old.address_code != message.address_code
    if message.location is None and old is not None and not moved:
        message = message.model_copy(update={"location": old.location})  # as resolved
    state.set_institution(message)
    step.changed("institutions", message.institution_id)
    if message.location is None and moved:
        step.emit(
            ResolveAddress, subject_ref=message.institution_id, address_code=message.address_code
        )


def seats_changed(step: Step, message: SeatCapacityChanged | PlaceReleased) -> None:
    """Seats added or taken away: the engine passes them on at once."""
    state = step.state
    inst = state.institutions.get(message.institution_id)
    if inst is None:
        raise PermanentError(f"unknown institution {message.institution_id}")
    before = {p.group_code: p.capacity for p in inst.pools}
    if isinstance(message, SeatCapacityChanged):
        pools = message.pools
    else:
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
        # Refused before anything changes where it can be seen beforehand.
        for group, delta in deltas.items():
            if engine.capacity(inst.institution_id, group) + delta < 0:
                raise PermanentError(
                    f"{inst.institution_id}/{group}: {-delta} seats fewer is more than the"
                    f" {engine.capacity(inst.institution_id, group)} not yet accepted"
                )
    state.set_institution(inst.model_copy(update={"pools": pools}))
    step.changed("institutions", inst.institution_id)
    if engine is None:
        return
    for group, delta in deltas.items():
        step.moves(
            engine.change_capacity(inst.institution_id, group, delta),
            lost_reason="capacity_reduced",
        )


# --------------------------------------------------------------------------- facts


def residence_declared(step: Step, message: ResidenceDeclared) -> None:
    state, slot = step.state, f"{message.subject}:{message.guardian_index or 0}"
    file = state.children.get(message.child_ref)
    if file is None:
        # The register reports residence beside the application, on another topic: the
        # application may simply not be here yet. Kept until it comes (``/health``
        # counts them as early residences).
        state.early.setdefault(message.child_ref, {})[slot] = message
        step.changed("early_residences", message.child_ref)
        return
    file.residences[slot] = message
    step.changed("children", message.child_ref)


def _fact_answered(step: Step, message: FactAnswer, child_ref: str, system: str) -> None:
    """VIIS's or GIS's answer about a child's facts, if it answers the latest request (an
    answer to an earlier one is stale: a newer request is out, and it is ignored); a child
    whose facts are now in may join the open round. An answer to the checks before a list
    goes to :func:`_rechecked`."""
    file = step.state.children.get(child_ref)
    if file is None:
        raise PermanentError(f"{system} answered about {child_ref}, which has no application")
    if file.rechecking is not None and str(message.correlation_id) == file.rechecking:
        _rechecked(step, file, message)
        return
    if not file.answers(message):
        log.info(f"stale {system} answer ignored", extra={"child_ref": child_ref})
        return
    step.changed("children", child_ref)
    file.record(message)
    if isinstance(message, EnrollmentChecked):
        file.verified["viis"] = message.as_of.isoformat()
    _join_open_round(step, child_ref)


# --------------------------------------------------------------------------- checks before a list


def _registers_to_check(file: ChildFile, on: date) -> list[str]:
    """The registers whose facts about the child were last verified before ``on``: they are
    asked again before the list of ``on`` is built."""
    return [r for r in ("viis", "pers") if file.verified.get(r, "") < on.isoformat()]


def _start_checks(step: Step, command: RunRound) -> bool:
    """Ask VIIS and the population register again about every child the list will hold whose
    facts were verified before the round's date (Riga binding regulations Nr. 191: the
    statuses are checked for every list, docs/legal-basis.md "Priorities"). The round waits
    for the answers, at most ``recheck_wait`` on the service's clock (:func:`checks_due`).
    False when nothing needs asking: the round is built at once."""
    state, on = step.state, command.round_date
    asked = 0
    for file in _candidates(state):
        file.unverified = []
        registers = _registers_to_check(file, on)
        if not registers:
            continue
        app = file.application
        step.changed("children", app.child_ref)
        if "viis" in registers:
            request = step.emit(
                CheckEnrollment,
                child_ref=app.child_ref,
                child_personal_code=app.child_personal_code,
                sibling_personal_codes=app.claims.sibling_personal_codes,
                as_of=on,
            )
        if "pers" in registers:
            request = step.emit(
                CheckResidence,
                child_ref=app.child_ref,
                child_personal_code=app.child_personal_code,
                guardian_personal_codes=tuple(g.personal_code for g in app.guardians),
                as_of=on,
            )
        file.rechecking, file.awaiting = str(request.correlation_id), registers
        asked += 1
    if not asked:
        return False
    round_id = str(command.round_id)
    state.pending = {
        "round_id": round_id,
        "round_date": on.isoformat(),
        "pending": True,
        "open": False,
        "requested_by": command.requested_by,
        "wait_until": (step.at + state.recheck_wait).isoformat(),
        "rechecked": asked,
        "outstanding": asked,
        "facts_changed": 0,
    }
    state.rounds[round_id] = state.pending
    step.changed("rounds", round_id)
    log.info(
        "facts are checked again before the list is built",
        extra={"round": round_id, "children": asked},
    )
    return True


def _rechecked(step: Step, file: ChildFile, message: Message) -> None:
    """One register's answer to the checks before a list: the facts it verified replace the
    old ones (a failure keeps them, and the child is left out of the list as not verified);
    the last answer expected builds the list."""
    state, pending = step.state, step.state.pending
    child_ref = file.application.child_ref
    step.changed("children", child_ref)
    register = "pers" if isinstance(message, ResidenceChecked | ResidenceCheckFailed) else "viis"
    if register not in file.awaiting:
        return  # answered twice: the first answer counts
    before = _ranking_facts(state, file)
    if isinstance(message, EnrollmentChecked):
        file.record(message)
        file.verified["viis"] = message.as_of.isoformat()
    elif isinstance(message, ResidenceChecked):
        file.residences = {
            f"{r.subject}:{r.guardian_index or 0}": _declared(message, r)
            for r in message.residences
        }
        file.verified["pers"] = message.as_of.isoformat()
    else:  # the register could not answer
        file.unverified.append(register)
    file.awaiting = [r for r in file.awaiting if r != register]
    if pending is not None:
        pending["facts_changed"] += _differences(before, _ranking_facts(state, file))
        step.changed("rounds", pending["round_id"])
    if file.awaiting:
        return
    file.rechecking = None
    if pending is None:
        return
    pending["outstanding"] -= 1
    if pending["outstanding"] <= 0:
        _build_round(step)


def _declared(answer: ResidenceChecked, residence: Residence) -> ResidenceDeclared:
    """A residence the register confirmed, kept as the record the register's own report
    would be (its id derived from the answer's: the same answer gives the same record)."""
    return ResidenceDeclared.new(
        producer=answer.producer,
        caused_by=answer,
        municipality=answer.municipality,
        child_ref=answer.child_ref,
        **residence.model_dump(),
    ).model_copy(
        update={
            "event_id": stable_id(answer.event_id, residence.subject, residence.guardian_index),
            "occurred_at": answer.occurred_at,
        }
    )


def _ranking_facts(state: AllocationState, file: ChildFile) -> dict[str, object]:
    """The facts that rank the child as the register answers give them (for counting what a
    check changed)."""
    on = state.pending_date() or date.min
    facts = state.engine_child(file, on)
    return {
        "child_resident": facts.facts.child_resident,
        "parent_resident": facts.facts.parent_resident,
        "siblings_at": facts.facts.siblings_at,
        "held": facts.held,
    }


def _differences(before: dict[str, object], after: dict[str, object]) -> int:
    return sum(1 for k in before if before[k] != after[k])


def residence_checked(step: Step, message: ResidenceChecked | ResidenceCheckFailed) -> None:
    """The population register's answer to a check before a list; an answer nobody waits for
    any more (the list was built without it) is left for the next list's check."""
    file = step.state.children.get(message.child_ref)
    if file is None:
        raise PermanentError(
            f"the population register answered about {message.child_ref}, which has no application"
        )
    if file.rechecking is None or str(message.correlation_id) != file.rechecking:
        log.info(
            "a late population register answer ignored", extra={"child_ref": message.child_ref}
        )
        return
    _rechecked(step, file, message)


def checks_due(step: Step) -> None:
    """A clock tick: the wait for the checks before a list has ended; the children whose
    registers did not answer are left out of it as not verified, and the list is built."""
    state, pending = step.state, step.state.pending
    if pending is None or step.at < datetime.fromisoformat(pending["wait_until"]):
        return
    for file in state.children.values():
        if file.rechecking is not None:
            file.unverified += file.awaiting
            file.awaiting, file.rechecking = [], None
            step.changed("children", file.application.child_ref)
    _build_round(step)


# --------------------------------------------------------------------------- the commission


def priority_decided(step: Step, message: PriorityConfirmed | PriorityRejected) -> None:
    """The commission confirmed or rejected a ground the parents declared. Only a confirmed
    ground ranks the child; a child in the open round is ranked again at once."""
    state, claim = step.state, message.claim
    file = step.child(message.child_ref)
    declared = file.claims()
    if claim not in declared:
        raise PermanentError(
            f"child {message.child_ref} has no declared claim {claim!r}"
            f" (declared: {', '.join(sorted(declared)) or 'none'})"
        )
    decision = {
        "status": "confirmed" if isinstance(message, PriorityConfirmed) else "rejected",
        "decision_number": message.decision_number,
        "decided_by": message.decided_by,
        "decided_on": message.decided_on.isoformat(),
    }
    if isinstance(message, PriorityRejected):
        decision["reason"] = message.reason
    file.decisions[claim] = decision
    engine = state.allocator
    if engine is not None and state.round_date is not None and message.child_ref in engine:
        facts = state.engine_child(file, state.round_date).facts
        step.moves(engine.update_facts(message.child_ref, facts))


# --------------------------------------------------------------------------- authorisations


def authorisation_answered(
    step: Step,
    message: AuthorisationVerified | AuthorisationRefused | AuthorisationCheckFailed,
) -> None:
    """The register of authorisations answered: a confirmed authorisation lets the
    application count; a refused one refuses it, and the e-service tells the parents why; a
    failed check leaves it waiting. A refusal also reaches the parents as a sealed decision
    (a ``refusal`` notice) with how to contest it."""
    file = step.child(message.child_ref)
    if file.application.application_id != message.application_id or file.authorisation in (
        None,
        "verified",
    ):
        return  # about an earlier application, or answered already
    if isinstance(message, AuthorisationVerified):
        file.authorisation = "verified"
        _join_open_round(step, message.child_ref)
    elif isinstance(message, AuthorisationRefused):
        file.authorisation, file.status = f"refused: {message.reason}", "refused"
        step.emit(
            ApplicationRefused,
            application_id=message.application_id,
            child_ref=message.child_ref,
            reason="authorisation_refused",
            authorisation_reason=message.reason,
            detail=message.detail,
            refused_at=step.at,
        )
        notices.issue(
            step,
            "refusal",
            message.child_ref,
            subject=f"{message.child_ref}:{message.application_id}",
            variables={"reason": "authorisation_refused"},
        )
    else:
        file.authorisation = f"failed: {message.reason}"


def enrollment_checked(step: Step, message: EnrollmentChecked | EnrollmentCheckFailed) -> None:
    """VIIS's answer: where the child and its siblings attend (or why it could not say)."""
    _fact_answered(step, message, message.child_ref, "VIIS")


def enrollment_recorded(step: Step, message: EnrollmentRegistered | EnrollmentRefused) -> None:
    """VIIS recorded (or refused) the enrolment in an accepted place."""
    file = step.child(message.child_ref)
    if str(message.offer_id) != (file.accepted_offer or str(message.offer_id)):
        return  # about a place the child has since given up for a better one
    if isinstance(message, EnrollmentRegistered):
        file.status = "enrolled"
    else:
        file.enrollment_refused = message.reason
        log.warning(
            "VIIS refused an enrolment",
            extra={"child_ref": message.child_ref, "reason": message.reason},
        )


def address_answered(step: Step, message: AddressResolved | AddressResolutionFailed) -> None:
    """GIS's answer about an institution's or a child's address."""
    state = step.state
    inst = state.institutions.get(message.subject_ref)
    if inst is not None:
        if isinstance(message, AddressResolved) and inst.address_code == message.address_code:
            state.set_institution(inst.model_copy(update={"location": message.lks92}))
            step.changed("institutions", inst.institution_id)
        return
    _fact_answered(step, message, message.subject_ref, "GIS")


# --------------------------------------------------------------------------- the round


def _candidates(state: AllocationState) -> list[ChildFile]:
    """The children a list is built for: queued (or enrolled and waiting for a better place)
    with every fact in."""
    return [
        f for f in state.children.values() if f.status in ("queued", "enrolled") and not f.missing
    ]


def run_round(step: Step, command: RunRound) -> None:
    """Build the admission list as of ``command.round_date`` and offer every seat it gives;
    first the facts are verified again for that date (:func:`_start_checks`)."""
    state = step.state
    if state.live:
        raise PermanentError(f"a round is still open: {len(state.live)} offers await an answer")
    if state.pending is not None:
        raise PermanentError(
            f"round {state.pending['round_id']} waits for its checks: one round at a time"
        )
    if not _start_checks(step, command):
        state.pending = {
            "round_id": str(command.round_id),
            "round_date": command.round_date.isoformat(),
            "rechecked": 0,
            "facts_changed": 0,
        }
        _build_round(step)


def _build_round(step: Step) -> None:
    """Build the pending round's list with the engine, offer every seat it gives, and report
    it (the summary, the list registered in the DVS)."""
    state, pending = step.state, step.state.pending
    assert pending is not None
    state.pending = None
    round_id, on = pending["round_id"], date.fromisoformat(pending["round_date"])
    step.cause_id = stable_id("round", round_id)
    ready = [f for f in _candidates(state) if not f.unverified]
    unverified = sum(1 for f in _candidates(state) if f.unverified)
    institutions = tuple(state.engine_institution(i) for i in state.institutions.values())
    children = tuple(state.engine_child(f, on) for f in ready)
    state.allocator = Allocator(Instance(institutions, children), state.rules, on)
    step.effects.new_round = True
    state.round_id, state.round_date = round_id, on
    matching = state.allocator.matching()
    for child_ref, seat in sorted(matching.items()):
        step.offer(child_ref, seat, round_id)
    fills = [
        InstitutionFill(
            institution_id=i.institution_id,
            capacity=sum(p.capacity for p in i.pools),
            offered=sum(1 for s in matching.values() if s.institution_id == i.institution_id),
            accepted=0,
        )
        for i in institutions
    ]
    step.emit(
        RoundCompleted,
        round_id=uuid.UUID(round_id),
        round_date=on,
        applications_considered=len(children),
        offers_made=len(matching),
        children_unplaced=len(children) - len(matching),
        lottery_seed=state.rules.lottery_seed,
        institutions=fills,
        facts_rechecked=pending["rechecked"],
        facts_changed=pending["facts_changed"],
        facts_unverified=unverified,
    )
    listing = json.dumps(
        sorted([cid, s.institution_id, s.group] for cid, s in matching.items())
    ).encode()
    key = f"admission-list:{state.municipality}:{round_id}"
    step.emit(
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
        step.changed("rounds", rid)
    state.open_round(
        {
            "round_id": round_id,
            "round_date": on.isoformat(),
            "open": True,
            "offers": len(matching),
            "considered": len(children),
            "waiting_for_facts": state.waiting_for_facts(),
            "document_key": key,
            "registration_number": None,
            "rechecked": pending["rechecked"],
            "facts_changed": pending["facts_changed"],
            "facts_unverified": unverified,
        }
    )
    step.changed("rounds", round_id)


# --------------------------------------------------------------------------- answers


def _live_offer(step: Step, message: ParentAccepted | ParentDeclined) -> Offer:
    offer = step.state.offers.get(str(message.offer_id))
    if offer is None or offer.child_ref != message.child_ref:
        raise PermanentError(f"no offer {message.offer_id} for child {message.child_ref}")
    if offer.status != LIVE:
        raise PermanentError(f"offer {message.offer_id} is already {offer.status}")
    return offer


def declined(step: Step, message: ParentDeclined) -> None:
    """The parents declined: the institution is never offered to the child again, in this
    round or any later one (it is kept with the application)."""
    offer = _live_offer(step, message)
    step.child(message.child_ref).declined.add(offer.institution_id)
    engine = step.state.allocator
    assert engine is not None
    moves = engine.decline(message.child_ref)
    step.close(message.child_ref, "declined")
    step.moves(moves, actor=message.child_ref)


def accepted(step: Step, message: ParentAccepted) -> None:
    """The parents accepted: the place is the child's, VIIS and the DVS are told."""
    state, child_ref = step.state, message.child_ref
    offer = _live_offer(step, message)
    engine = state.allocator
    assert engine is not None
    moves = engine.accept(child_ref)
    state.live.pop(child_ref)
    step.offer_changed(offer, "accepted")
    file = step.child(child_ref)
    # A better place accepted: the one held so far goes back (the engine has
    # passed its seat on) and VIIS moves the enrolment.
    given_up = state.offers.get(file.accepted_offer or "")
    if given_up is not None and given_up.status == "accepted":
        step.offer_changed(given_up, "revoked")
        step.emit(
            OfferRevoked, offer_id=given_up.offer_id, child_ref=child_ref, reason="superseded"
        )
        notices.offer_closed(step, given_up, "superseded")
    attends = file.enrollment.attending_institution_id if file.enrollment else None
    transfer_from = given_up.institution_id if given_up is not None else attends
    file.enrolled_at = f"{offer.institution_id}/{offer.group_code}"
    file.accepted_offer, file.enrollment_refused = offer.offer_id, None
    if file.status == "enrolled":
        file.status = "queued"  # until VIIS has recorded the new place
    start = state.start_date(file.application)
    step.emit(
        PlaceAccepted,
        offer_id=message.offer_id,
        child_ref=child_ref,
        application_id=offer.application_id,
        institution_id=offer.institution_id,
        group_code=offer.group_code,
        start_date=start,
        accepted_at=message.responded_at,
    )
    step.emit(
        RegisterEnrollment,
        child_ref=child_ref,
        child_personal_code=file.application.child_personal_code,
        offer_id=message.offer_id,
        institution_id=offer.institution_id,
        group_code=offer.group_code,
        start_date=start,
        transfer_from=transfer_from,
    )
    notices.issue(step, "admission", child_ref, offer=offer)
    step.moves(moves, actor=child_ref)


# --------------------------------------------------------------------------- receipts, documents


def receipt(step: Step, message: Any) -> None:
    """A receipt that the offer's notice was sent (or a letter posted) starts its legal
    clock: deemed notified and the answer deadline by the municipality's notification
    rules (:mod:`hub.notice`, docs/legal-basis.md). Delivery reports and SMS start
    nothing: e-mail counts from sending, and an SMS only reminds."""
    state = step.state
    if message.offer_id is None:
        return
    offer = state.offers.get(str(message.offer_id))
    if offer is None or offer.status != LIVE or offer.respond_by is not None:
        return  # nothing to start: unknown, closed, or already running
    law, days = state.notice_law, state.rules.offer_deadline_days
    if isinstance(message, NotificationSent):
        sent = message.sent_at
    elif isinstance(message, NotificationPosted):
        sent = message.posted_at
    elif isinstance(message, NotificationDeemedNotified):  # a receipt from before the change
        sent = message.sent_at
    else:
        return
    # A receipt cannot start the clock before the offer existed: another system's clock
    # may run behind this one's.
    if offer.made_at:
        sent = max(sent, datetime.fromisoformat(offer.made_at))
    deadline = law.deadline(message.channel, sent, days)
    if deadline is None:
        return  # a channel that does not notify (an SMS)
    notified, respond_by = deadline.notified_on, deadline.respond_by
    offer.notified_on, offer.respond_by = notified.isoformat(), respond_by.isoformat()
    step.offer_changed(offer)
    step.emit(
        OfferDeadlineSet,
        offer_id=message.offer_id,
        child_ref=offer.child_ref,
        notified_on=notified,
        respond_by=respond_by,
    )


def document_answered(step: Step, message: DocumentRegistered | DocumentRegistrationFailed) -> None:
    """The DVS registered (or refused) a notice, an admission list or a decision."""
    state = step.state
    notices.registered(step, message)
    if message.document_key.startswith("decision:"):
        offer = state.offers.get(message.document_key.removeprefix("decision:"))
        if offer is not None and isinstance(message, DocumentRegistered):
            offer.decision_number = message.registration_number
            step.offer_changed(offer)
        return
    for data in state.rounds.values():
        if data.get("document_key") == message.document_key:
            if isinstance(message, DocumentRegistered):
                data["registration_number"] = message.registration_number
            else:
                data["registration_failed"] = message.reason
            step.changed("rounds", data["round_id"])


def document_content_answered(
    step: Step, message: DocumentContentStored | DocumentContentRejected
) -> None:
    """The DVS stored (or refused) a document's sealed content.

    Nothing to decide: the state keeps a document's number, not its content, and the step
    is journaled with this message as its cause, which is the record an operator reads.
    """


# --------------------------------------------------------------------------- the table


DECISIONS: dict[type[Message], Decision] = {
    ApplicationSubmitted: application_submitted,
    ApplicationChanged: application_changed,
    ApplicationWithdrawn: application_withdrawn,
    InstitutionRegistered: institution_registered,
    SeatCapacityChanged: seats_changed,
    PlaceReleased: seats_changed,
    ResidenceDeclared: residence_declared,
    EnrollmentChecked: enrollment_checked,
    EnrollmentCheckFailed: enrollment_checked,
    EnrollmentRegistered: enrollment_recorded,
    EnrollmentRefused: enrollment_recorded,
    AddressResolved: address_answered,
    AddressResolutionFailed: address_answered,
    RunRound: run_round,
    ParentAccepted: accepted,
    ParentDeclined: declined,
    NotificationSent: receipt,
    NotificationDelivered: receipt,
    NotificationDeemedNotified: receipt,
    NotificationPosted: receipt,
    NotificationFailed: receipt,
    ResidenceChecked: residence_checked,
    ResidenceCheckFailed: residence_checked,
    PriorityConfirmed: priority_decided,
    PriorityRejected: priority_decided,
    AuthorisationVerified: authorisation_answered,
    AuthorisationRefused: authorisation_answered,
    AuthorisationCheckFailed: authorisation_answered,
    DocumentRegistered: document_answered,
    DocumentRegistrationFailed: document_answered,
    DocumentContentStored: document_content_answered,
    DocumentContentRejected: document_content_answered,
}
"""Message type → the decision the service takes on it."""


def decide(step: Step, message: Message) -> None:
    """Take the decision on ``message`` (the step's cause) that :data:`DECISIONS` names."""
    decision = DECISIONS.get(type(message))
    if decision is None:
        raise PermanentError(
            f"the allocation service takes no decision on {type(message).__name__}"
        )
    decision(step, message)


def expire_due(step: Step) -> None:
    """Expire every live offer whose answer deadline has passed; each expiry cascades.

    A clock tick's decision: the step has no cause (its effects stay empty when nothing
    was due).
    """
    state = step.state
    today = local_date(step.at)
    due = sorted(
        (
            o
            for o in state.offers.values()
            if o.status == LIVE and o.respond_by and date.fromisoformat(o.respond_by) < today
        ),
        key=lambda o: o.offer_id,
    )
    engine = state.allocator
    for offer in due:
        if state.live.get(offer.child_ref) != offer.offer_id:
            continue  # an earlier expiry's cascade has already moved this child
        assert engine is not None
        step.cause_id = stable_id("expiry", offer.offer_id)
        moves = engine.expire(offer.child_ref)
        step.close(offer.child_ref, "expired")
        # A child holding an accepted place keeps it: only the wait for a better one ends.
        file = state.children[offer.child_ref]
        if state.rules.on_expiry == "annul" and not file.accepted_offer:
            file.status = "annulled"
            step.changed("children", offer.child_ref)
            notices.issue(
                step,
                "annulment",
                offer.child_ref,
                offer=offer,
                variables={"respond_by": offer.respond_by or ""},
            )
        else:
            file.declined.add(offer.institution_id)  # an unanswered offer counts as declined
            step.changed("children", offer.child_ref)
            notices.offer_closed(step, offer, "expired")
        step.moves(moves, actor=offer.child_ref)
    step.cause_id = stable_id("tick", step.at.isoformat())


def clock_tick(step: Step) -> None:
    """The service's timer: a round whose checks have waited long enough is built, and
    offers whose answer deadline has passed expire (each expiry cascades)."""
    checks_due(step)
    expire_due(step)


__all__ = ["DECISIONS", "Decision", "Effects", "Step", "clock_tick", "decide", "expire_due"]
