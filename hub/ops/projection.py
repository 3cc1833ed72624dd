"""What the operations view remembers of the topics it reads: short summaries, no payloads.

The :class:`Projection` is fed catalogue messages in the order they are read
(per partition; topics interleave) and keeps

- per child reference, a timeline of ``(time, kind, summary)`` entries: the
  application, the VIIS and GIS facts, offers, notification receipts, the
  parents' answer and the outcome;
- per topic it reads, how many messages of each type it saw;
- per offer, its child, institution, group, round and status, from which the
  latest round's figures per institution are counted;
- the latest rounds' summaries (``RoundCompleted``).

Summaries are built from non-personal fields only (references, institution
ids, dates, channels, enumerated reasons): a personal code, an e-mail
address, a phone number, a postal address or a parent's free-text reason is
never copied. The projection does no I/O and is bounded: at most
``max_children`` timelines of ``max_entries`` entries, ``max_offers``
offers and ``max_rounds`` rounds; the oldest go first.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from schemas.addresses import AddressResolutionFailed, AddressResolved
from schemas.allocation import (
    OfferDeadlineSet,
    OfferDeclined,
    OfferExpired,
    OfferMade,
    OfferRevoked,
    ParentAccepted,
    ParentDeclined,
    PlaceAccepted,
    RoundCompleted,
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
)
from schemas.base import Message
from schemas.enrollment import (
    EnrollmentChecked,
    EnrollmentCheckFailed,
    EnrollmentRefused,
    EnrollmentRegistered,
)
from schemas.notifications import (
    NotificationDeemedNotified,
    NotificationDelivered,
    NotificationFailed,
    NotificationPosted,
    NotificationSent,
)
from schemas.priority import PriorityConfirmed, PriorityRejected
from schemas.residence import ResidenceChecked, ResidenceCheckFailed
from schemas.topics import BY_NAME, Topic, topic_for
from schemas.values import mask_personal_codes

KINDS = ("application", "facts", "offer", "notification", "answer", "outcome", "enrolment")
"""Kinds of timeline entries, in the order a child's story usually runs."""
_KIND_ORDER = {kind: n for n, kind in enumerate(KINDS)}

PROJECTED: tuple[Topic, ...] = tuple(
    topic_for(m)
    for m in (
        ApplicationSubmitted,
        EnrollmentChecked,
        AddressResolved,
        OfferMade,
        RoundCompleted,
        ParentAccepted,
        NotificationSent,
    )
)
"""The topics the projection reads in full (requests carrying personal codes are not among them)."""

LIVE, ACCEPTED, DECLINED, EXPIRED, REVOKED = "live", "accepted", "declined", "expired", "revoked"
OUTCOMES = (ACCEPTED, DECLINED, EXPIRED, REVOKED)
_CHANNELS = {"e_adrese": "e-adrese", "email": "e-mail", "sms": "SMS", "letter": "letter"}
_VIA = {"e_service": "e-service", "client_service_centre": "client service centre"}
SEAT = "\x00seat\x00"


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a child's timeline."""

    at: datetime
    kind: str
    event_type: str
    summary: str
    """The text; :data:`SEAT` in it stands for the offer's seat, filled in when shown (the
    offer may be read after a receipt or an answer about it: topics interleave)."""
    event_id: UUID
    offer_id: UUID | None = None


@dataclass(slots=True)
class _Child:
    application_id: str | None = None
    latest_offer: UUID | None = None
    entries: list[Entry] = field(default_factory=list)
    dropped: int = 0


@dataclass(slots=True)
class _Offer:
    municipality: str
    child_ref: str
    institution_id: str
    group_code: str
    round_id: UUID | None
    made_at: datetime
    status: str = LIVE

    @property
    def seat(self) -> str:
        return f"{self.institution_id} / {self.group_code}"


@dataclass(slots=True)
class _Round:
    round_id: UUID
    municipality: str
    at: datetime
    """When the round happened: its first offer or its summary, whichever came first."""
    seen: int
    """When the view learnt of it (a count of messages applied), or of its summary."""
    summary: RoundCompleted | None = None


def _short(uuid: UUID | None) -> str:
    return str(uuid)[:8] if uuid is not None else "-"


def _masked(text: str, limit: int = 120) -> str:
    """A free-text field that is declared free of personal data, masked all the same."""
    text = mask_personal_codes(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _choices(institutions: tuple[str, ...]) -> str:
    return " > ".join(institutions)


class Projection:
    """The operations view's memory of the topics; feed it with :meth:`apply` or :meth:`ingest`."""

    def __init__(
        self,
        *,
        max_children: int = 100_000,
        max_entries: int = 60,
        max_offers: int = 200_000,
        max_rounds: int = 20,
    ) -> None:
        self.max_children = max_children
        self.max_entries = max_entries
        self.max_offers = max_offers
        self.max_rounds = max_rounds
        self._children: dict[str, _Child] = {}
        self._offers: dict[UUID, _Offer] = {}
        self._rounds: dict[UUID, _Round] = {}
        self._types: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._invalid: Counter[str] = Counter()
        self._applied = 0
        self._handlers: dict[type[Message], Callable[[Any], None]] = {
            ApplicationSubmitted: self._submitted,
            ApplicationChanged: self._changed,
            ApplicationWithdrawn: self._withdrawn,
            EnrollmentChecked: self._checked,
            EnrollmentCheckFailed: self._check_failed,
            EnrollmentRegistered: self._registered,
            EnrollmentRefused: self._refused,
            AddressResolved: self._resolved,
            AddressResolutionFailed: self._unresolved,
            OfferMade: self._offer_made,
            OfferDeadlineSet: self._deadline,
            OfferDeclined: self._declined,
            OfferExpired: self._expired,
            OfferRevoked: self._revoked,
            PlaceAccepted: self._place_accepted,
            RoundCompleted: self._round_completed,
            ParentAccepted: self._parent_accepted,
            ParentDeclined: self._parent_declined,
            NotificationSent: self._sent,
            NotificationDelivered: self._delivered,
            NotificationDeemedNotified: self._deemed,
            NotificationPosted: self._posted,
            NotificationFailed: self._failed,
            ResidenceChecked: self._residence_checked,
            ResidenceCheckFailed: self._residence_failed,
            PriorityConfirmed: self._priority,
            PriorityRejected: self._priority,
            AuthorisationVerified: self._authorisation,
            AuthorisationRefused: self._authorisation,
            AuthorisationCheckFailed: self._authorisation,
            ApplicationRefused: self._application_refused,
        }

    # ------------------------------------------------------------------ feeding

    def ingest(self, topic: str, raw: bytes) -> Message | None:
        """Parse a record's value as a message of ``topic`` and apply it.

        A value that is not a valid message of its topic is only counted
        (its consumer dead-letters it); returns the message, or None.
        """
        catalogue = BY_NAME.get(topic)
        if catalogue is None:
            return None
        try:
            message = catalogue.parse(raw)
        except ValidationError:
            self._invalid[topic] += 1
            return None
        self.apply(topic, message)
        return message

    def apply(self, topic: str, message: Message) -> None:
        """Take one message read from ``topic`` into account."""
        self._types[topic][message.event_type] += 1
        self._applied += 1
        handler = self._handlers.get(type(message))
        if handler is not None:
            handler(message)

    # ------------------------------------------------------------------ reading

    def message_types(self) -> dict[str, dict[str, int]]:
        """Per topic read, how many messages of each type (and ``invalid`` ones) were seen."""
        topics = set(self._types) | set(self._invalid)
        return {
            topic: dict(sorted(self._types[topic].items()))
            | ({"invalid": self._invalid[topic]} if self._invalid[topic] else {})
            for topic in sorted(topics)
        }

    def children(self) -> int:
        return len(self._children)

    def timeline(self, child_ref: str) -> dict[str, Any] | None:
        """The child's timeline, oldest first; None if no message about the child was read."""
        child = self._children.get(child_ref)
        if child is None:
            return None
        offer = self._offers.get(child.latest_offer) if child.latest_offer else None
        return {
            "child_ref": child_ref,
            "application_id": child.application_id,
            "offer": None if offer is None else {"seat": offer.seat, "status": offer.status},
            "entries": [
                {
                    "at": e.at.isoformat(timespec="milliseconds"),
                    "kind": e.kind,
                    "event_type": e.event_type,
                    "summary": e.summary.replace(SEAT, self._seat(e.offer_id)),
                }
                for e in child.entries
            ],
            "dropped": child.dropped,
        }

    def latest_round(self, municipality: str | None = None) -> dict[str, Any]:
        """The newest round (of ``municipality``, if given) and, per institution, what became
        of its offers.

        The newest is the round whose summary was read last (the rounds topic has one
        partition, so that is the order they were published in), unless offers of a
        round without a summary were read after it: that round is under way. A round's
        offers are those made with its ``round_id`` and the cascade offers (no round)
        made since it.
        """
        rounds = [r for r in self._rounds.values() if municipality in (None, r.municipality)]
        if not rounds:
            return {"round": None, "institutions": []}
        latest = max(rounds, key=lambda r: r.seen)
        counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for offer in self._offers.values():
            if offer.round_id is None:
                if offer.made_at < latest.at or offer.municipality != latest.municipality:
                    continue
            elif offer.round_id != latest.round_id:
                continue
            counts[offer.institution_id]["made"] += 1
            counts[offer.institution_id][offer.status] += 1
        summary = latest.summary
        fills = {f.institution_id: f for f in (summary.institutions if summary else ())}
        institutions = []
        for institution_id in sorted(set(counts) | set(fills)):
            figures = counts[institution_id]
            fill = fills.get(institution_id)
            institutions.append(
                {
                    "institution_id": institution_id,
                    "capacity": fill.capacity if fill else None,
                    "made": figures["made"],
                    LIVE: figures[LIVE],
                    **{outcome: figures[outcome] for outcome in OUTCOMES},
                }
            )
        return {
            "round": {
                "round_id": str(latest.round_id),
                "municipality": latest.municipality,
                "at": latest.at.isoformat(timespec="seconds"),
                "completed": summary is not None,
                "round_date": summary.round_date.isoformat() if summary else None,
                **{
                    name: getattr(summary, name) if summary else None
                    for name in (
                        "applications_considered",
                        "offers_made",
                        "children_unplaced",
                        "lottery_seed",
                    )
                },
            },
            "institutions": institutions,
        }

    # ------------------------------------------------------------------ bookkeeping

    def _note(
        self,
        child_ref: str,
        message: Message,
        kind: str,
        summary: str,
        offer_id: UUID | None = None,
    ) -> None:
        child = self._children.get(child_ref)
        if child is None:
            if len(self._children) >= self.max_children:
                del self._children[next(iter(self._children))]
            child = self._children[child_ref] = _Child()
        if any(e.event_id == message.event_id for e in child.entries):
            return  # a redelivered or replayed copy
        entry = Entry(
            message.occurred_at, kind, message.event_type, summary, message.event_id, offer_id
        )
        child.entries.append(entry)
        child.entries.sort(key=lambda e: (e.at, _KIND_ORDER[e.kind]))
        if len(child.entries) > self.max_entries:
            del child.entries[0]
            child.dropped += 1

    def _seat(self, offer_id: UUID | None) -> str:
        offer = self._offers.get(offer_id) if offer_id is not None else None
        return offer.seat if offer is not None else f"offer {_short(offer_id)}"

    def _settle(self, offer_id: UUID, status: str) -> None:
        offer = self._offers.get(offer_id)
        if offer is not None:
            offer.status = status

    def _round_of(self, round_id: UUID, message: Message) -> _Round:
        found = self._rounds.get(round_id)
        if found is None:
            if len(self._rounds) >= self.max_rounds:
                oldest = min(self._rounds.values(), key=lambda r: r.seen)
                del self._rounds[oldest.round_id]
            found = _Round(round_id, message.municipality, message.occurred_at, self._applied)
            self._rounds[round_id] = found
        found.at = min(found.at, message.occurred_at)
        return found

    # ------------------------------------------------------------------ applications

    def _submitted(self, m: ApplicationSubmitted) -> None:
        claims = [g.value.replace("_", " ") for g in m.claims.commission_grounds]
        if m.claims.large_family:
            claims.append("large family")
        text = (
            f"application {m.application_id} registered {m.registered_at:%Y-%m-%d}:"
            f" {_choices(m.institutions)}, from {m.desired_start_date}, language {m.language},"
            f" via {_VIA[m.submitted_via]}"
        )
        if claims:
            text += f"; claims {', '.join(claims)}"
        self._note(m.child_ref, m, "application", text)
        self._children[m.child_ref].application_id = m.application_id

    def _changed(self, m: ApplicationChanged) -> None:
        text = (
            f"application changed: {_choices(m.institutions)}, from {m.desired_start_date},"
            f" language {m.language}"
        )
        self._note(m.child_ref, m, "application", text)
        self._children[m.child_ref].application_id = m.application_id

    def _withdrawn(self, m: ApplicationWithdrawn) -> None:
        text = f"application withdrawn: {m.reason.replace('_', ' ')}"
        self._note(m.child_ref, m, "application", text)

    # ------------------------------------------------------------------ facts

    def _checked(self, m: EnrollmentChecked) -> None:
        if m.attending_institution_id:
            group = f" (group {m.attending_group_code})" if m.attending_group_code else ""
            attends = f"attends {m.attending_institution_id}{group}"
        else:
            attends = "attends no municipal pre-school"
        siblings = (
            f"siblings attend {', '.join(m.sibling_institution_ids)}"
            if m.sibling_institution_ids
            else "no sibling attends one"
        )
        self._note(m.child_ref, m, "facts", f"VIIS as of {m.as_of}: {attends}; {siblings}")

    def _check_failed(self, m: EnrollmentCheckFailed) -> None:
        kind = "permanent" if m.permanent else "may pass"
        self._note(m.child_ref, m, "facts", f"VIIS check failed: {m.reason} ({kind})")

    def _residence_checked(self, m: ResidenceChecked) -> None:
        found = [
            f"{r.subject}{'' if r.guardian_index is None else f' {r.guardian_index + 1}'}"
            f" in {r.declared_municipality}"
            for r in m.residences
        ]
        text = f"population register as of {m.as_of}: {', '.join(found) or 'no residence'}"
        self._note(m.child_ref, m, "facts", text)

    def _residence_failed(self, m: ResidenceCheckFailed) -> None:
        kind = "permanent" if m.permanent else "may pass"
        text = f"population register check failed: {m.reason.replace('_', ' ')} ({kind})"
        self._note(m.child_ref, m, "facts", text)

    def _priority(self, m: PriorityConfirmed | PriorityRejected) -> None:
        verb = "confirmed" if isinstance(m, PriorityConfirmed) else "rejected"
        text = f"commission {verb} {m.claim.replace('_', ' ')} (decision {m.decision_number})"
        self._note(m.child_ref, m, "facts", text)

    def _authorisation(
        self, m: AuthorisationVerified | AuthorisationRefused | AuthorisationCheckFailed
    ) -> None:
        if isinstance(m, AuthorisationVerified):
            text = "register of authorisations: the authorisation holds"
        elif isinstance(m, AuthorisationRefused):
            text = f"register of authorisations: refused ({m.reason.replace('_', ' ')})"
        else:
            text = f"register of authorisations not asked: {m.reason.replace('_', ' ')}"
        self._note(m.child_ref, m, "application", text)

    def _application_refused(self, m: ApplicationRefused) -> None:
        self._note(m.child_ref, m, "application", f"application refused: {m.detail}")

    def _resolved(self, m: AddressResolved) -> None:
        text = f"GIS: residence resolved, territory {m.territory_code}, {m.postcode}"
        self._note(m.subject_ref, m, "facts", text)

    def _unresolved(self, m: AddressResolutionFailed) -> None:
        kind = "permanent" if m.permanent else "may pass"
        text = f"GIS: address not resolved: {m.reason.replace('_', ' ')} ({kind})"
        self._note(m.subject_ref, m, "facts", text)

    def _registered(self, m: EnrollmentRegistered) -> None:
        self._note(
            m.child_ref, m, "enrolment", f"VIIS recorded the enrolment at {m.institution_id}"
        )

    def _refused(self, m: EnrollmentRefused) -> None:
        text = f"VIIS refused the enrolment: {m.reason.replace('_', ' ')}"
        self._note(m.child_ref, m, "enrolment", text)

    # ------------------------------------------------------------------ offers and rounds

    def _offer_made(self, m: OfferMade) -> None:
        if m.offer_id not in self._offers and len(self._offers) >= self.max_offers:
            del self._offers[next(iter(self._offers))]
        offer = self._offers[m.offer_id] = _Offer(
            m.municipality, m.child_ref, m.institution_id, m.group_code, m.round_id, m.occurred_at
        )
        if m.round_id is not None:
            found = self._round_of(m.round_id, m)
            if found.summary is None:
                found.seen = self._applied  # under way: newer than the summaries read so far
            origin = f"in round {_short(m.round_id)}"
        else:
            origin = "as a seat came free"
        rank = f"choice {m.preference_rank}" if m.preference_rank else "not listed"
        text = (
            f"offer {offer.seat} ({rank}) {origin}, from {m.start_date};"
            f" answer within {m.response_days} days of notification"
        )
        self._note(m.child_ref, m, "offer", text)
        self._children[m.child_ref].latest_offer = m.offer_id

    def _deadline(self, m: OfferDeadlineSet) -> None:
        text = f"{SEAT}: notified {m.notified_on}, answer by {m.respond_by}"
        self._note(m.child_ref, m, "offer", text, m.offer_id)

    def _closed(
        self, m: OfferDeclined | OfferExpired | OfferRevoked, status: str, what: str
    ) -> None:
        """An offer that ended without the place being taken: its status, and a note."""
        self._settle(m.offer_id, status)
        self._note(m.child_ref, m, "outcome", f"{SEAT} {what}", m.offer_id)

    def _declined(self, m: OfferDeclined) -> None:
        self._closed(m, DECLINED, "declined: the seat goes to the next child")

    def _expired(self, m: OfferExpired) -> None:
        self._closed(m, EXPIRED, f"expired: no answer by {m.respond_by}")

    def _revoked(self, m: OfferRevoked) -> None:
        self._closed(m, REVOKED, f"revoked: {m.reason.replace('_', ' ')}")

    def _place_accepted(self, m: PlaceAccepted) -> None:
        self._settle(m.offer_id, ACCEPTED)
        text = f"place {m.institution_id} / {m.group_code} is the child's from {m.start_date}"
        self._note(m.child_ref, m, "outcome", text)

    def _round_completed(self, m: RoundCompleted) -> None:
        found = self._round_of(m.round_id, m)
        found.summary, found.seen = m, self._applied

    # ------------------------------------------------------------------ answers and receipts

    def _parent_accepted(self, m: ParentAccepted) -> None:
        text = f"parents accepted {SEAT} ({_VIA[m.channel]})"
        self._note(m.child_ref, m, "answer", text, m.offer_id)

    def _parent_declined(self, m: ParentDeclined) -> None:
        # The parents' own reason is free text: it is not copied.
        text = f"parents declined {SEAT} ({_VIA[m.channel]})"
        self._note(m.child_ref, m, "answer", text, m.offer_id)

    def _receipt(self, m: Any, what: str) -> None:
        about = f" ({SEAT})" if m.offer_id is not None else ""
        text = f"{_CHANNELS[m.channel]}: {what}{about}"
        self._note(m.child_ref, m, "notification", text, m.offer_id)

    def _sent(self, m: NotificationSent) -> None:
        self._receipt(m, f"sent {m.sent_at:%Y-%m-%d %H:%M}")

    def _delivered(self, m: NotificationDelivered) -> None:
        self._receipt(m, f"delivered {m.delivered_at:%Y-%m-%d %H:%M}")

    def _deemed(self, m: NotificationDeemedNotified) -> None:
        self._receipt(m, f"deemed notified on {m.deemed_notified_on}")

    def _posted(self, m: NotificationPosted) -> None:
        self._receipt(m, f"posted {m.posted_at:%Y-%m-%d %H:%M}")

    def _failed(self, m: NotificationFailed) -> None:
        kind = "permanent" if m.permanent else "may pass"
        self._receipt(m, f"failed ({kind}): {_masked(m.reason)}")
