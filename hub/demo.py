"""The demo: a synthetic municipality's admission, end to end on a real Kafka broker.

Steps, each printed as it runs:

1. connect to Kafka (start the embedded broker unless one is configured) and
   create the catalogue's topics;
2. publish the synthetic institutions and applications, and consume and
   validate every one of them as a queue-register view would;
3. start the allocation service, with stand-ins for VIIS and GIS that
   answer enrichment requests at once, and the notification service with
   simulators of e-adrese, an SMTP server, an SMS gateway and the post;
4. once every application has its facts, run a one-click round and read the
   offers as the parents' e-service would;
5. deliver every offer through the channels (e-adrese first, then e-mail or
   SMS, a registered letter last); the receipts start each offer's legal
   clock; have one parent decline (the seat cascades to the next child) and
   one accept;
6. check the offers' invariants and report.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from faststream.kafka import KafkaMessage

from hub.allocation.rules import load_rules
from hub.allocation.service import LIVE, AllocationState, invariant_problems, service
from hub.bus import Bus
from hub.calendar import local_date
from hub.embedded import free_port
from hub.errors import HubError
from hub.kafka import build_broker, ensure_topics, kafka_cluster, publish_messages
from hub.reliability.service import ServiceRunner, ServiceSpec
from hub.settings import Settings
from hub.wiring import notify_service
from schemas.allocation import PlaceAccepted, RunRound
from schemas.applications import ApplicationSubmitted, Guardian
from schemas.base import Message
from schemas.institutions import InstitutionRegistered, SeatPool
from schemas.topics import BY_NAME, OPERATOR, VPS
from simulators.instant import stand_ins
from simulators.municipality import Child, Institution, SyntheticMunicipality
from simulators.parents import Parents


class DemoError(HubError):
    """A step of the demo did not happen in time."""


APPLICATIONS = BY_NAME["vps.pii.applications.v1"]
INSTITUTIONS = BY_NAME["vps.pii.institutions.v1"]


def institution_message(municipality: str, inst: Institution) -> InstitutionRegistered:
    return InstitutionRegistered.new(
        producer=VPS,
        municipality=municipality,
        institution_id=inst.institution_id,
        name=inst.name,
        address_code=inst.address_code,
        pools=tuple(
            SeatPool(
                group_code=g.code,
                language=g.language,
                min_age_months=g.min_age_months,
                birth_year_from=g.birth_year,
                birth_year_to=g.birth_year,
                capacity=g.capacity,
            )
            for g in inst.groups
        ),
    )


def application_message(municipality: str, child: Child) -> ApplicationSubmitted:
    return ApplicationSubmitted.new(
        producer=VPS,
        municipality=municipality,
        application_id=child.application_id,
        child_ref=child.ref,
        child_personal_code=child.personal_code,
        child_birth_date=child.birth_date,
        guardians=tuple(
            Guardian(personal_code=g.personal_code, email=g.email, phone=g.phone)
            for g in child.guardians
        ),
        residence_address_code=child.address_code,
        institutions=child.choices,
        desired_start_date=child.desired_start_date,
        language=child.language,
        accepts_any_institution=child.accepts_any_institution,
        registered_at=child.registered_at,
        claims={"large_family": child.large_family},
    )


@dataclass
class QueueRegisterView:
    """What the demo's consumer has seen: institutions, applications, first choices."""

    institutions: dict[str, InstitutionRegistered] = field(default_factory=dict)
    applications: dict[str, ApplicationSubmitted] = field(default_factory=dict)
    first_choices: Counter[str] = field(default_factory=Counter)
    partitions: Counter[int] = field(default_factory=Counter)

    def apply(self, message: Message, partition: int) -> None:
        self.partitions[partition] += 1
        if isinstance(message, InstitutionRegistered):
            self.institutions[message.institution_id] = message
        elif isinstance(message, ApplicationSubmitted):
            self.applications[message.application_id] = message
            self.first_choices[message.institutions[0]] += 1

    @property
    def consumed(self) -> int:
        return len(self.institutions) + len(self.applications)


@dataclass
class Admission:
    """What the admission part of the demo saw."""

    offers: int = 0
    waiting: int = 0
    deadline_set: bool = False
    cascade_offers: int = 0
    cascade_seconds: float | None = None
    accepted: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.offers > 0 and self.cascade_offers > 0 and self.accepted and not self.problems


@dataclass(frozen=True)
class DemoResult:
    published: int
    consumed: int
    seconds: float
    view: QueueRegisterView
    admission: Admission

    @property
    def passed(self) -> bool:
        return self.consumed == self.published and self.admission.ok


async def run_demo(
    settings: Settings,
    *,
    children: int = 300,
    institutions: int = 2,
    seed: int = 7,
    timeout: float = 60.0,
    out: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo end to end and return what was published, consumed and allocated."""
    started = time.monotonic()
    async with kafka_cluster(settings) as bootstrap:
        external = settings.bootstrap_servers is not None
        # On a cluster that outlives the demo, a code of its own keeps earlier runs out.
        code = f"{settings.municipality}-{uuid4().hex[:6]}" if external else settings.municipality
        town = SyntheticMunicipality(code, seed=seed, children=children, institutions=institutions)
        out(
            f"▶ synthetic municipality {town.code!r}: {institutions} institutions, "
            f"{children} applications, seed {seed}"
        )
        kind = "external cluster" if external else "embedded broker (Tansu)"
        out(f"▶ Kafka ready at {bootstrap} — {kind}")
        run_id = uuid4().hex[:6]
        helpers = stand_ins(town.code, prefix=f"demo-{run_id}")
        allocation = f"demo-{run_id}-allocation"
        report = await ensure_topics(
            settings, bootstrap, services=[*(h.name for h in helpers), allocation]
        )
        created = sum(s.created for s in report)
        out(
            f"▶ topics: {len(report)} ready (catalogue, retry and dead-letter topics),"
            f" {created} created now"
        )
        view, published = await _publish_and_consume(settings, bootstrap, town, timeout, out)
        _report(view, published, time.monotonic() - started, out)
        with tempfile.TemporaryDirectory(prefix="hub-demo-") as data:
            # Short sessions: the embedded broker forms a new consumer group only after
            # about one session timeout, and the demo starts three services.
            local = settings.model_copy(
                update={
                    "data_dir": Path(data),
                    "session_timeout": min(settings.session_timeout, 3.0),
                    "heartbeat_interval": min(settings.heartbeat_interval, 1.0),
                }
            )
            admission = await _admission(local, bootstrap, town, helpers, allocation, timeout, out)
    seconds = time.monotonic() - started
    result = DemoResult(published, view.consumed, seconds, view, admission)
    out("")
    if result.passed:
        out(
            f"PASS: every published message was consumed and matched its schema; the round made"
            f" {admission.offers} offers, a decline cascaded, the invariants hold ({seconds:.1f}s)"
        )
    else:
        out(f"FAIL: see above ({seconds:.1f}s)")
    return result


async def _publish_and_consume(
    settings: Settings,
    bootstrap: str,
    town: SyntheticMunicipality,
    timeout: float,
    out: Callable[[str], None],
) -> tuple[QueueRegisterView, int]:
    broker = build_broker(settings, bootstrap, client_id="demo")
    bus = Bus.on(broker)
    view = QueueRegisterView()
    messages: list[Message] = [institution_message(town.code, i) for i in town.institutions]
    messages += [application_message(town.code, c) for c in town.children]
    ours = {m.event_id for m in messages}
    shown: Counter[str] = Counter()
    all_consumed = asyncio.Event()

    @broker.subscriber(
        INSTITUTIONS.name,
        APPLICATIONS.name,
        group_id=f"demo-queue-register-{uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    async def queue_register(msg: KafkaMessage) -> None:
        topic = BY_NAME[msg.raw_message.topic]
        message = topic.parse(msg.body)
        if message.event_id not in ours:
            return  # the topic may hold earlier runs' messages
        view.apply(message, msg.raw_message.partition)
        if view.consumed >= len(messages):
            all_consumed.set()
        shown[message.event_type] += 1
        if shown[message.event_type] <= _SHOWN:
            out(
                f"  ✓ {_describe(message)}  [{topic.name} p{msg.raw_message.partition}"
                f" @{msg.raw_message.offset}]"
            )

    async with broker:
        await broker.start()
        out(f"▶ publishing {len(messages)} messages …")
        published = await bus.publish_many(messages)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_consumed.wait(), timeout)
    for event_type, count in sorted(shown.items()):
        if count > _SHOWN:
            out(f"  ✓ … and {count - _SHOWN} more {event_type}")
    return view, published


_SHOWN = 3
"""Messages of each type printed in full; the rest are counted."""


async def _admission(  # noqa: PLR0917 - the demo's one long story
    settings: Settings,
    bootstrap: str,
    town: SyntheticMunicipality,
    helpers: list[ServiceSpec],
    allocation: str,
    timeout: float,
    out: Callable[[str], None],
) -> Admission:
    """Steps 3–6: the allocation service, a round, a receipt, a decline, an accept."""
    result = Admission()
    spec, state = service(load_rules(settings.rules or settings.municipality), town.code)
    spec = dataclasses.replace(spec, name=allocation)
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        channels = await stack.enter_async_context(channel_simulators(settings, town))
        notify_spec, notify = notify_service(channels, name=f"{allocation}-notify")
        await ensure_topics(settings, bootstrap, services=[notify_spec.name])
        runners = [
            asyncio.create_task(ServiceRunner(s, channels, bootstrap).run(stop))
            for s in (spec, notify_spec, *helpers)
        ]
        try:
            await _admit(bootstrap, town, state, notify, result, timeout, out)
        finally:
            stop.set()
            await asyncio.gather(*runners)
    return result


async def _admit(  # noqa: PLR0917
    bootstrap: str,
    town: SyntheticMunicipality,
    state: AllocationState,
    notify: Any,
    result: Admission,
    timeout: float,
    out: Callable[[str], None],
) -> None:
    async with Parents(bootstrap, town.code) as parents:
        out("")
        out(
            "▶ allocation service started; VIIS and GIS stand-ins answer its requests;"
            " the notification service sends through e-adrese, e-mail, SMS and post"
            " simulators"
        )
        began = time.monotonic()
        count = len(town.children)
        await _until(
            lambda: len(state.children) == count and state.waiting_for_facts() == 0,
            timeout,
            "enrichment",
        )
        out(
            f"▶ enriched on the bus: {count} applications have their VIIS and GIS facts"
            f" ({time.monotonic() - began:.1f}s)"
        )
        await _round(bootstrap, town, state, parents, result, timeout, out)
        await _notified(state, notify, result, timeout, out)
        await _cascade(parents, state, result, out)
        await _accept(parents, state, result, out)
        result.problems = invariant_problems(state)
        out(
            "▶ invariants hold: one live offer per child, no seat offered twice,"
            " offers within capacity"
            if not result.problems
            else f"✗ invariants broken: {result.problems}"
        )


async def _until(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _round(  # noqa: PLR0917
    bootstrap: str,
    town: SyntheticMunicipality,
    state: AllocationState,
    parents: Parents,
    result: Admission,
    timeout: float,
    out: Callable[[str], None],
) -> None:
    command = RunRound.new(
        producer=OPERATOR,
        municipality=town.code,
        round_id=uuid4(),
        round_date=date(town.admission_year, 9, 1),
        requested_by="demo",
    )
    began = time.monotonic()
    await publish_messages(bootstrap, [command])
    await _until(lambda: state.round_id == str(command.round_id), timeout, "the round")
    await parents.wait_until(lambda: len(parents.live) >= len(state.live), timeout)
    assert state.allocator is not None
    result.offers = len(state.live)
    result.waiting = len(state.allocator.children()) - result.offers
    out(
        f"▶ round as of {command.round_date}: {result.offers} offers, {result.waiting} children"
        f" wait; admission list sent to the DVS for registration"
        f" ({time.monotonic() - began:.2f}s, offers read back by the parents' e-service)"
    )
    for child_ref in sorted(parents.live)[:_SHOWN]:
        offer = parents.live[child_ref]
        out(
            f"  offer {child_ref} → {offer.institution_id} group {offer.group_code}"
            f" (choice {offer.preference_rank})"
        )


async def _notified(
    state: AllocationState,
    notify: Any,
    result: Admission,
    timeout: float,
    out: Callable[[str], None],
) -> None:
    """Wait until every live offer's deadline runs from a receipt; show how they went out."""
    began = time.monotonic()
    await _until(
        lambda: all(state.offers[o].respond_by for o in state.live.values()),
        timeout,
        "every offer's delivery receipt",
    )
    channels = Counter(r.channel for r in notify.records.values() if r.status == "confirmed")
    result.deadline_set = bool(channels)
    shown = ", ".join(f"{_CHANNEL_NAMES[c]} {n}" for c, n in channels.most_common())
    out(
        f"▶ offers delivered: {shown}; every deadline runs from its receipt"
        f" ({time.monotonic() - began:.1f}s)"
    )
    example = next(
        (o for o in state.offers.values() if o.status == LIVE and o.notified_on),
        None,
    )
    record = next(
        (
            r
            for r in notify.records.values()
            if example is not None and str(r.request.offer_id) == example.offer_id
        ),
        None,
    )
    if example is not None and record is not None and record.sent_at:
        sent = local_date(datetime.fromisoformat(record.sent_at))
        out(
            f"  {example.child_ref}: {_CHANNEL_NAMES[record.channel or 'e_adrese']} sent"
            f" {sent:%a %Y-%m-%d} → notified {date.fromisoformat(example.notified_on):%a %Y-%m-%d}"
            f" → answers by {date.fromisoformat(example.respond_by or ''):%a %Y-%m-%d}"
        )


_CHANNEL_NAMES = {"e_adrese": "e-adrese", "email": "e-mail", "sms": "SMS", "letter": "letter"}


@contextlib.asynccontextmanager
async def channel_simulators(
    settings: Settings, town: SyntheticMunicipality
) -> AsyncIterator[Settings]:
    """e-adrese, SMTP, SMS and post simulators on loopback; settings that point at them."""
    from simulators.eadrese.app import create_app as eadrese_app
    from simulators.letter.app import create_app as letter_app
    from simulators.serving import serving
    from simulators.sms.app import create_app as sms_app
    from simulators.smtp import create_server

    guardians = [c.guardians[0].personal_code for c in town.children]
    async with (
        serving(eadrese_app(active=guardians[::2]), name="e-adrese") as eadrese,
        serving(sms_app(rate_per_second=1000, callback_delay=0.05), name="sms") as sms,
        serving(letter_app(post_after=0.3), name="post") as post,
        create_server() as smtp,
    ):
        yield settings.model_copy(
            update={
                "eadrese_url": eadrese.url,
                "sms_url": sms.url,
                "letter_url": post.url,
                "smtp_port": smtp.port,
                "notify_callback": f"127.0.0.1:{free_port()}",
                "http_timeout": 2.0,
                "notify_rate_eadrese": 100_000,
                "notify_rate_email": 100_000,
                "notify_rate_sms": 100_000,
                "notify_rate_letter": 100_000,
            }
        )


def _decline_candidates(parents: Parents, state: AllocationState) -> list[str]:
    """Children offered a seat in a group that other children wait for, longest queue first."""
    engine = state.allocator
    assert engine is not None
    seated = engine.matching()
    waiting: Counter[tuple[str, str]] = Counter()
    for child_ref in engine.children():
        if child_ref not in seated:
            waiting.update((q.institution_id, q.group) for q in engine.queue(child_ref))

    def queue(child_ref: str) -> int:
        offer = parents.live[child_ref]
        return waiting[offer.institution_id, offer.group_code]

    return sorted((c for c in parents.live if queue(c)), key=lambda c: (-queue(c), c))


async def _cascade(
    parents: Parents, state: AllocationState, result: Admission, out: Callable[[str], None]
) -> None:
    for child_ref in _decline_candidates(parents, state)[:5]:
        offer = parents.live[child_ref]
        out(f"▶ the parents of {child_ref} decline {offer.institution_id}/{offer.group_code}")
        reaction = await parents.answer(child_ref, "decline")
        for made in reaction.offers:
            whose = "the same child, next choice" if made.child_ref == child_ref else "was waiting"
            out(
                f"  ↳ offer {made.child_ref} → {made.institution_id} group {made.group_code}"
                f" (choice {made.preference_rank}; {whose})"
            )
        if any(made.child_ref != child_ref for made in reaction.offers):
            result.cascade_offers = len(reaction.offers)
            result.cascade_seconds = reaction.first_offer_after
            out(
                f"  cascade: the next offer was read {reaction.first_offer_after * 1000:.0f} ms"
                " after the decline was sent, with no one touching it"
            )
            return
        out("  the seat went to nobody new")


async def _accept(
    parents: Parents, state: AllocationState, result: Admission, out: Callable[[str], None]
) -> None:
    child_ref = sorted(parents.live)[0]
    offer = parents.live[child_ref]
    reaction = await parents.answer(child_ref, "accept")
    if any(isinstance(m, PlaceAccepted) for m in reaction.messages):
        result.accepted = True
        out(
            f"▶ the parents of {child_ref} accept {offer.institution_id}/{offer.group_code}:"
            " the place is theirs; the enrolment is sent to VIIS"
        )


def _describe(message: Message) -> str:
    if isinstance(message, InstitutionRegistered):
        seats = sum(p.capacity for p in message.pools)
        groups = len(message.pools)
        return f"{message.event_type} {message.institution_id}: {groups} groups, {seats} seats"
    if isinstance(message, ApplicationSubmitted):
        return (
            f"{message.event_type} {message.application_id} child {message.child_ref} "
            f"(code {message.child_personal_code}, born {message.child_birth_date:%Y}) "
            f"→ {' > '.join(message.institutions)}"
        )
    return message.event_type


def _report(
    view: QueueRegisterView, published: int, seconds: float, out: Callable[[str], None]
) -> None:
    out(
        f"Consumed and validated {view.consumed} of {published} messages in {seconds:.1f}s; "
        f"partitions used: {dict(sorted(view.partitions.items()))}"
    )
    out(f"{'institution':<12} {'groups':>6} {'seats':>6} {'1st choice':>10}")
    for inst_id, inst in sorted(view.institutions.items()):
        seats = sum(p.capacity for p in inst.pools)
        out(f"{inst_id:<12} {len(inst.pools):>6} {seats:>6} {view.first_choices[inst_id]:>10}")
    if view.consumed != published:
        out(f"✗ {published - view.consumed} messages not consumed in time")
