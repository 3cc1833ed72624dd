"""The demo: a synthetic municipality's queue flowing through a real Kafka broker.

Steps, each printed as it runs:

1. connect to Kafka (start the embedded broker unless one is configured);
2. create the catalogue's topics;
3. start a queue-register consumer on the institutions and applications topics;
4. publish the synthetic institutions and applications;
5. wait until every message has been consumed and validated, then report.

The demo is the one place that wires the simulators' synthetic municipality
to the hub; later stages add services and simulators as further steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import uuid4

from faststream.kafka import KafkaMessage

from hub.bus import Bus
from hub.kafka import build_broker, ensure_topics, kafka_cluster
from hub.settings import Settings
from schemas.applications import ApplicationSubmitted, Guardian
from schemas.base import Message
from schemas.institutions import InstitutionRegistered, SeatPool
from schemas.topics import BY_NAME, VPS
from simulators.municipality import Child, Institution, SyntheticMunicipality

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


@dataclass(frozen=True)
class DemoResult:
    published: int
    consumed: int
    seconds: float
    view: QueueRegisterView


async def run_demo(
    settings: Settings,
    *,
    children: int = 24,
    institutions: int = 6,
    seed: int = 7,
    timeout: float = 60.0,
    out: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo end to end and return what was published and consumed."""
    started = time.monotonic()
    town = SyntheticMunicipality(
        settings.municipality, seed=seed, children=children, institutions=institutions
    )
    out(
        f"▶ synthetic municipality {town.code!r}: {institutions} institutions, "
        f"{children} applications, seed {seed}"
    )
    async with kafka_cluster(settings) as bootstrap:
        kind = "external cluster" if settings.bootstrap_servers else "embedded broker (Tansu)"
        out(f"▶ Kafka ready at {bootstrap} — {kind}")
        report = await ensure_topics(settings, bootstrap)
        created = sum(s.created for s in report)
        out(
            f"▶ topics: {len(report)} ready (catalogue, retry and dead-letter topics),"
            f" {created} created now"
        )

        broker = build_broker(settings, bootstrap, client_id="demo")
        bus = Bus.on(broker)
        view = QueueRegisterView()
        messages: list[Message] = [institution_message(town.code, i) for i in town.institutions]
        messages += [application_message(town.code, c) for c in town.children]
        ours = {m.event_id for m in messages}
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
    seconds = time.monotonic() - started
    _report(view, published, seconds, out)
    return DemoResult(published, view.consumed, seconds, view)


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
    out("")
    out(
        f"Consumed and validated {view.consumed} of {published} messages in {seconds:.1f}s; "
        f"partitions used: {dict(sorted(view.partitions.items()))}"
    )
    out(f"{'institution':<12} {'groups':>6} {'seats':>6} {'1st choice':>10}")
    for inst_id, inst in sorted(view.institutions.items()):
        seats = sum(p.capacity for p in inst.pools)
        out(f"{inst_id:<12} {len(inst.pools):>6} {seats:>6} {view.first_choices[inst_id]:>10}")
    verdict = "PASS" if view.consumed == published else "FAIL"
    out(
        f"{verdict}: every published message was consumed and matched its schema"
        if verdict == "PASS"
        else f"{verdict}: {published - view.consumed} messages not consumed in time"
    )
