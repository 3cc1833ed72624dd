"""Checks of an admission season played on the bus, read from the topics and the simulators.

The crash test (``tests/integration/test_season_crashes.py``) plays a season with
every service in a process of its own and kills them at random; these functions
say what is wrong with what the season left behind, one line per problem. They
read only what any subscriber could: the topics (through :func:`read_messages`)
and the simulators' HTTP answers. None of them looks at a service's memory or
store.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from typing import Any

from hub.allocation.rebuild import journal_steps
from hub.reliability.deadletters import read_topic
from tests.conftest import run_hub

SHOWN = 5
"""Problems of one kind shown in full; the rest are counted."""

Pool = tuple[str, str]
"""(institution id, group code)."""

CLOSING = ("OfferDeclined", "OfferExpired", "OfferRevoked", "PlaceAccepted")
"""The offers topic's events that close an offer (``schemas.allocation.OFFER_CLOSED``)."""
CONFIRMING = ("NotificationDelivered", "NotificationPosted")
"""Receipts that confirm a notification reached the parents (or counts as having); an
e-adrese message does so once sent (:func:`confirms`)."""


def confirms(receipt: Mapping[str, Any]) -> bool:
    """Whether ``receipt`` confirms its notification on its channel."""
    return receipt["event_type"] in CONFIRMING or (
        receipt["event_type"] == "NotificationSent" and receipt["channel"] == "e_adrese"
    )


async def hub_command(env: Mapping[str, str], *args: str, timeout: float = 180) -> tuple[int, str]:
    """``hub ARGS…``: its exit status and what it printed (stdout, then stderr)."""
    code, out, err = await run_hub(env, *args, timeout=timeout)
    return code, out + err


async def read_messages(bootstrap: str, topic: str, municipality: str) -> list[dict[str, Any]]:
    """``municipality``'s messages now on ``topic``, as JSON objects, each ``event_id`` once
    (the first copy read: a republished message repeats its id), partition by partition in
    offset order. The broker is shared, so other municipalities' messages are left out."""
    needle = f'"municipality":"{municipality}"'.encode()
    seen: set[str] = set()
    found = []
    for record in sorted(await read_topic(bootstrap, topic), key=lambda r: (r.partition, r.offset)):
        if record.value is None or needle not in record.value:
            continue
        message = json.loads(record.value)
        if message.get("municipality") != municipality or message["event_id"] in seen:
            continue
        seen.add(message["event_id"])
        found.append(message)
    return found


def _shown(problems: list[str]) -> list[str]:
    if len(problems) <= SHOWN:
        return problems
    return [*problems[:SHOWN], f"… and {len(problems) - SHOWN} more"]


# --------------------------------------------------------------------------- 1. applications


def application_problems(
    submitted: Mapping[str, str],
    applications: Iterable[Mapping[str, Any]],
    journal: Iterable[bytes],
    municipality: str,
) -> list[str]:
    """Every application the e-service took (``submitted``: application id → child_ref)
    reached the allocation service exactly once, and each child has one application.

    ``applications`` are the municipality's messages on ``vps.pii.applications.v1``;
    ``journal`` the raw records of ``allocation.journal.v1``: the service applied each
    application's ``event_id`` once, and no message of any topic twice.
    """
    problems: list[str] = []
    submitted_events = [a for a in applications if a["event_type"] == "ApplicationSubmitted"]
    on_topic: dict[str, list[str]] = defaultdict(list)
    per_child: dict[str, set[str]] = defaultdict(set)
    for message in submitted_events:
        on_topic[message["application_id"]].append(message["event_id"])
        per_child[message["child_ref"]].add(message["application_id"])
    missing = sorted(set(submitted) - set(on_topic))
    if missing:
        problems.append(
            f"{len(missing)} applications the e-service took never reached the topic:"
            f" {missing[:SHOWN]}"
        )
    strange = sorted(set(on_topic) - set(submitted))
    if strange:
        problems.append(f"{len(strange)} applications on the topic nobody submitted: {strange[:5]}")
    twice = {a: ids for a, ids in on_topic.items() if len(ids) > 1}
    if twice:
        problems.append(
            f"{len(twice)} applications published under several event ids (the VPS feed read"
            f" twice?): {sorted(twice.items())[:SHOWN]}"
        )
    several = {c: sorted(a) for c, a in per_child.items() if len(a) > 1}
    if several:
        problems.append(f"{len(several)} children with several applications: {several}")
    steps = journal_steps(journal, municipality)
    applied = Counter(str(s.causation_id) for s in steps if s.step == "message")
    topics = {str(s.causation_id): s.source_topic for s in steps if s.step == "message"}
    repeated = Counter(topics[e] for e, n in applied.items() if n > 1)
    if repeated:
        examples = [f"{e} ×{n}" for e, n in applied.items() if n > 1][:SHOWN]
        problems.append(
            f"the journal applies messages more than once, by topic {dict(repeated)}: {examples}"
        )
    not_applied = [
        a
        for a, ids in sorted(on_topic.items())
        if a in submitted and not any(applied[e] for e in ids)
    ]
    if not_applied:
        problems.append(
            f"{len(not_applied)} applications on the topic never applied by the allocation"
            f" service (journal): {not_applied[:SHOWN]}"
        )
    return problems


# --------------------------------------------------------------------------- 2., 3. offers


@dataclass
class Offers:
    """The offers topic folded in the order the allocation service took its steps."""

    capacity: Mapping[Pool, int]
    """Seats per group, as the institutions declared them."""
    attended: Mapping[str, Pool]
    """child_ref → the group VIIS says the child attended before the season."""
    made: dict[str, dict[str, Any]] = field(default_factory=dict)
    """offer id → its OfferMade."""
    status: dict[str, str] = field(default_factory=dict)
    """offer id → live, accepted, declined, expired or revoked."""
    held: dict[str, str] = field(default_factory=dict)
    """child_ref → the accepted offer whose place the child still holds."""
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    """offer id → its PlaceAccepted (every place ever accepted, given up later or not)."""
    live_problems: list[str] = field(default_factory=list)
    capacity_problems: list[str] = field(default_factory=list)
    steps: int = 0
    _live_of: dict[str, str] = field(default_factory=dict)
    _taken: Counter[Pool] = field(default_factory=Counter)
    """Per group: live offers and places held."""
    _left: Counter[Pool] = field(default_factory=Counter)
    """Per group: children who attended it and have accepted a place (elsewhere)."""

    @property
    def live(self) -> list[str]:
        return [o for o, s in self.status.items() if s == "live"]

    def outcomes(self) -> Counter[str]:
        return Counter(self.status.values())

    def never_accepted(self, done: str, offer_ids: Iterable[str]) -> list[str]:
        """The problem of ``done`` (e.g. "decisions asked") for offers never accepted, if any."""
        never = sorted(set(offer_ids) - set(self.accepted))
        return [f"{done} for offers never accepted: {never[:SHOWN]}"] if never else []

    def step(self, step: str, messages: Iterable[Mapping[str, Any]]) -> None:
        """Take one step of the service (its messages in order), then check the groups."""
        self.steps += 1
        touched: set[Pool] = set()
        for m in messages:
            if m["event_type"] == "OfferMade":
                touched |= self._made(step, m)
            elif m["offer_id"] not in self.made:
                self.live_problems.append(
                    f"{m['event_type']} of offer {m['offer_id']}, never made (step {step})"
                )
            elif m["event_type"] in CLOSING:
                touched |= self._closed(step, m)
        for pool in touched:
            seats = self.capacity.get(pool)
            if seats is None:
                self.capacity_problems.append(f"offers for {pool[0]}/{pool[1]}, never declared")
            elif self._taken[pool] > seats + self._left[pool]:
                self.capacity_problems.append(
                    f"group {pool[0]}/{pool[1]} after step {step}: {self._taken[pool]} live"
                    f" offers and places held, {seats} seats declared and {self._left[pool]}"
                    " left by children who attended it"
                )

    def _made(self, step: str, m: Mapping[str, Any]) -> set[Pool]:
        offer_id, child = m["offer_id"], m["child_ref"]
        if offer_id in self.made:
            self.live_problems.append(f"offer {offer_id} made twice (step {step})")
            return set()
        if child in self._live_of:
            self.live_problems.append(
                f"child {child} offered {offer_id} at {m['occurred_at']} while"
                f" {self._live_of[child]} was still live (step {step})"
            )
        self.made[offer_id], self.status[offer_id] = dict(m), "live"
        self._live_of[child] = offer_id
        pool = (m["institution_id"], m["group_code"])
        self._taken[pool] += 1
        return {pool}

    def _closed(self, step: str, m: Mapping[str, Any]) -> set[Pool]:
        kind, offer_id, child = m["event_type"], m["offer_id"], m["child_ref"]
        made, status = self.made[offer_id], self.status[offer_id]
        pool = (made["institution_id"], made["group_code"])
        if status == "live":
            if self._live_of.get(child) == offer_id:
                del self._live_of[child]
            if kind != "PlaceAccepted":
                self.status[offer_id] = kind.removeprefix("Offer").lower()
                self._taken[pool] -= 1
                return set()
            self.status[offer_id], self.held[child] = "accepted", offer_id
            first = not any(a["child_ref"] == child for a in self.accepted.values())
            self.accepted[offer_id] = dict(m)
            attended = self.attended.get(child)
            if first and attended in self.capacity:  # the seat it attended goes back
                self._left[attended] += 1
                return {attended}
            return set()
        if status == "accepted" and kind == "OfferRevoked" and m["reason"] == "superseded":
            self.status[offer_id] = "revoked"  # a better place accepted: this one given up
            if self.held.get(child) == offer_id:
                del self.held[child]
            self._taken[pool] -= 1
            return set()
        self.live_problems.append(
            f"{kind} of offer {offer_id} of child {child}, which was {status} already (step {step})"
        )
        return set()


def _moment(message: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(message["occurred_at"])


def _step_of(message: Mapping[str, Any]) -> str:
    """The service's step that published ``message``: the message it applied, or (an expiry,
    which has no cause) the flow the expiry started."""
    return str(message.get("causation_id") or message["correlation_id"])


def fold_offers(
    offers: Iterable[Mapping[str, Any]],
    capacity: Mapping[Pool, int],
    attended: Mapping[str, Pool],
) -> Offers:
    """Fold ``allocation.offers.v1`` (the municipality's messages, each once) step by step.

    The allocation service is one process at a time and applies one message at a time, so
    its messages ordered by ``occurred_at`` and grouped by the step that caused them are
    its steps in order. After every step:

    - a child has at most one live offer, and an offer is closed at most once, after it was
      made (2.);
    - per group, live offers plus accepted places still held are within the seats the
      institution declared (``capacity``), plus one for every child who attended that group
      (``attended``: child_ref → pool, from VIIS) and has accepted a place: its seat went back
      to the queue (3.).
    """
    fold = Offers(capacity, attended)
    for step, messages in groupby(sorted(offers, key=_moment), key=_step_of):
        fold.step(step, messages)
    if fold.live:
        fold.live_problems.append(
            f"{len(fold.live)} offers still live at the end: {fold.live[:SHOWN]}"
        )
    fold.live_problems = _shown(fold.live_problems)
    fold.capacity_problems = _shown(fold.capacity_problems)
    return fold


def declared_capacity(institutions: Iterable[Mapping[str, Any]]) -> dict[Pool, int]:
    """Seats per group as the institutions declared them on ``vps.pii.institutions.v1``
    (the last declaration of each institution counts)."""
    seats: dict[Pool, int] = {}
    for message in institutions:
        if message["event_type"] in ("InstitutionRegistered", "SeatCapacityChanged"):
            for pool in message["pools"]:
                seats[(message["institution_id"], pool["group_code"])] = pool["capacity"]
    return seats


def attended_pools(facts: Iterable[Mapping[str, Any]]) -> dict[str, Pool]:
    """child_ref → the group VIIS says the child attends now (the last answer counts)."""
    attended: dict[str, Pool] = {}
    for message in facts:
        if message["event_type"] != "EnrollmentChecked":
            continue
        institution, group = message["attending_institution_id"], message["attending_group_code"]
        if institution and group:
            attended[message["child_ref"]] = (institution, group)
        else:
            attended.pop(message["child_ref"], None)
    return attended


# --------------------------------------------------------------------------- 4. VIIS and DVS


def enrolment_problems(
    offers: Offers,
    facts: Iterable[Mapping[str, Any]],
    attendance: Mapping[str, Pool | None],
    seeded: Mapping[str, Pool | None],
) -> list[str]:
    """Exactly one enrolment in VIIS per accepted place still held.

    From the topic: every held place was registered (``EnrollmentRegistered`` with one VIIS
    record id) and not refused, and nothing was registered for an offer never accepted.
    From VIIS (``attendance``: child_ref → the group VIIS has the child in now): a child
    holding a place attends that group; any other child attends where it did before the
    season (``seeded``), since VIIS keeps one enrolment per child and moves it on a transfer.
    """
    problems: list[str] = []
    records: dict[str, set[str]] = defaultdict(set)
    refused: dict[str, str] = {}
    for message in facts:
        if message["event_type"] == "EnrollmentRegistered":
            records[message["offer_id"]].add(message["viis_enrollment_id"])
        elif message["event_type"] == "EnrollmentRefused":
            refused[message["offer_id"]] = f"{message['reason']}: {message['detail']}"
    for child, offer_id in sorted(offers.held.items()):
        if offer_id in refused:
            problems.append(
                f"VIIS refused the held place {offer_id} of {child}: {refused[offer_id]}"
            )
        if len(records[offer_id]) != 1:
            problems.append(
                f"held place {offer_id} of {child}: {len(records[offer_id])} VIIS enrolments"
                f" registered ({sorted(records[offer_id])})"
            )
    problems += offers.never_accepted("enrolments registered", records)
    for child, now in sorted(attendance.items()):
        held = offers.held.get(child)
        if held is not None:
            made = offers.made[held]
            expected: Pool | None = (made["institution_id"], made["group_code"])
        else:
            expected = seeded.get(child)
        if now != expected:
            problems.append(
                f"VIIS has {child} in {now}, expected {expected}"
                f" ({'the place it holds' if held else 'where it attended before'})"
            )
    return _shown(problems)


def decision_problems(
    offers: Offers,
    requests: Iterable[Mapping[str, Any]],
    registered: Iterable[Mapping[str, Any]],
    dvs_documents: Iterable[Mapping[str, Any]],
) -> list[str]:
    """Exactly one admission decision in the DVS per accepted offer.

    ``RegisterDocument`` asks for ``decision:<offer id>`` of every accepted offer (and of no
    other), ``DocumentRegistered`` gives each one registration number, and the DVS holds
    one decision document per accepted offer: that number, about that child.
    """
    problems: list[str] = []
    asked: Counter[str] = Counter()
    for message in requests:
        key = message["document_key"]
        if key.startswith("decision:"):
            asked[key.removeprefix("decision:")] += 1
    numbers: dict[str, set[str]] = defaultdict(set)
    failed: dict[str, str] = {}
    for message in registered:
        key = message["document_key"]
        if not key.startswith("decision:"):
            continue
        if message["event_type"] == "DocumentRegistered":
            numbers[key.removeprefix("decision:")].add(message["registration_number"])
        elif message["event_type"] == "DocumentRegistrationFailed":
            failed[key.removeprefix("decision:")] = f"{message['reason']}: {message['detail']}"
    in_dvs = {d["registration_number"]: d for d in dvs_documents if d.get("type") == "decision"}
    for offer_id, accepted in sorted(offers.accepted.items()):
        if asked[offer_id] != 1:
            problems.append(f"decision of offer {offer_id} asked for {asked[offer_id]} times")
        if offer_id in failed:
            problems.append(f"decision of offer {offer_id} not registered: {failed[offer_id]}")
        if len(numbers[offer_id]) != 1:
            problems.append(
                f"decision of offer {offer_id}: {len(numbers[offer_id])} registration numbers"
                f" {sorted(numbers[offer_id])}"
            )
        for number in numbers[offer_id]:
            document = in_dvs.get(number)
            if document is None or document.get("reference") != accepted["child_ref"]:
                problems.append(
                    f"decision {number} of offer {offer_id} is not in the DVS as a decision"
                    f" about {accepted['child_ref']}"
                )
    problems += offers.never_accepted("decisions asked", asked)
    if len(in_dvs) != len(offers.accepted):
        problems.append(
            f"the DVS holds {len(in_dvs)} decision documents for {len(offers.accepted)}"
            " accepted offers"
        )
    return _shown(problems)


# --------------------------------------------------------------------------- 5. notifications


def notification_problems(
    offers: Offers,
    requests: Iterable[Mapping[str, Any]],
    receipts: Iterable[Mapping[str, Any]],
) -> tuple[list[str], Counter[str]]:
    """Every offer's notification was confirmed on exactly one channel; the channels used.

    A notification (``SendNotification`` of ``notify.requests.v1``, one per offer made) is
    confirmed by a receipt on ``notify.receipts.v1`` (:func:`confirms`); receipts of one
    notification on two channels mean the parents were told twice (or the hub believes so).
    An offer revoked before its invitation was registered is never notified.
    """
    problems: list[str] = []
    asked: dict[str, str | None] = {}
    for message in requests:
        if message["event_type"] == "SendNotification" and message["producer"] == "allocation":
            asked.setdefault(message["notification_id"], message.get("offer_id"))
    channels: dict[str, set[str]] = defaultdict(set)
    for message in receipts:
        if confirms(message):
            channels[message["notification_id"]].add(message["channel"])
    unasked = sorted(
        o
        for o in set(offers.made) - {o for o in asked.values() if o}
        if offers.status.get(o) != "revoked"
    )
    if unasked:
        problems.append(f"{len(unasked)} offers without a notification: {unasked[:SHOWN]}")
    used: Counter[str] = Counter()
    for notification_id, offer_id in sorted(asked.items()):
        confirmed = channels.get(notification_id, set())
        if len(confirmed) != 1:
            problems.append(
                f"notification {notification_id} (offer {offer_id}) confirmed on"
                f" {sorted(confirmed) or 'no channel'}"
            )
        used.update(confirmed)
    return _shown(problems), used


def unconfirmed(
    requests: Iterable[Mapping[str, Any]], receipts: Iterable[Mapping[str, Any]]
) -> int:
    """Notifications asked for and not confirmed on any channel yet."""
    asked = {m["notification_id"] for m in requests if m["event_type"] == "SendNotification"}
    done = {m["notification_id"] for m in receipts if confirms(m)}
    return len(asked - done)


__all__ = [
    "Offers",
    "application_problems",
    "attended_pools",
    "decision_problems",
    "declared_capacity",
    "enrolment_problems",
    "fold_offers",
    "hub_command",
    "notification_problems",
    "read_messages",
    "unconfirmed",
]
