"""The allocation service on the real embedded broker, with stand-ins for VIIS and GIS.

A small municipality registers, is enriched, gets a round, and answers:
accepts, declines and silences (expired by the clock). The service is
restarted half-way. After every step the invariants hold, and at the end
the offers equal the engine run on the same inputs.

A second story runs the service in its own process and kills it (SIGKILL)
while a burst of answers is being applied: after a restart, every answer
was applied once or refused once, and the state rebuilt from the topics
equals the store the killed process left behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from hub.allocation.api import serving
from hub.allocation.engine import Allocator
from hub.allocation.rebuild import JOURNAL, journal_steps
from hub.allocation.repository import Repository
from hub.allocation.rules import load_rules
from hub.allocation.service import LIVE, SCHEMA, AllocationState, invariant_problems, service
from hub.embedded import free_port
from hub.kafka import publish_messages
from hub.reliability.deadletters import dead_letters, read_topic
from hub.reliability.metrics import Metrics
from hub.reliability.service import RuntimeOptions, ServiceRunner
from hub.reliability.store import Store
from hub.settings import Settings
from schemas.allocation import ParentAccepted, ParentDeclined
from schemas.notifications import NotificationSent
from simulators.instant import running
from simulators.municipality import SyntheticMunicipality
from simulators.parents import Parents
from simulators.process import ServiceProcess
from tests.allocation_messages import round_command
from tests.conftest import eventually, run_hub
from tests.vps_feed import application_message, institution_message

pytestmark = pytest.mark.real_broker
RULES = load_rules("riga")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 8, 3, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def hub(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run the ``hub`` command; its exit status and what it printed (stdout, then stderr)."""
    code, out, err = await run_hub(env, *args, timeout=120)
    return code, out + err


@pytest_asyncio.fixture
async def town(kafka_settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh municipality code, with VIIS and GIS stand-ins answering for it."""
    code = f"t{uuid.uuid4().hex[:8]}"
    bootstrap = kafka_settings.bootstrap_servers or ""
    async with running(kafka_settings.derive(data_dir=tmp_path), bootstrap, code, code):
        yield code


def check(state: AllocationState) -> None:
    assert invariant_problems(state) == []


async def test_round_cascades_restart_and_expiry_on_the_bus(  # noqa: PLR0915 - one long story
    kafka_settings: Settings, tmp_path: Path, town: str
) -> None:
    bootstrap = kafka_settings.bootstrap_servers or ""
    town_code = town
    settings = kafka_settings.derive(data_dir=tmp_path, session_timeout=6, heartbeat_interval=1)
    clock = Clock()

    port = free_port()

    def start() -> tuple[asyncio.Event, asyncio.Task[bool], AllocationState, ServiceRunner]:
        spec, state = service(RULES, town_code, clock=clock, expiry_interval=0.2)
        spec = dataclasses.replace(spec, tasks=(serving(state, port),))
        runner = ServiceRunner(
            spec,
            settings,
            bootstrap,
            options=RuntimeOptions(batch_size=200),
            metrics=Metrics.create(),
        )
        stop = asyncio.Event()
        return stop, asyncio.create_task(runner.run(stop)), state, runner

    stop, task, state, _ = start()
    town = SyntheticMunicipality(
        town_code, seed=6, children=200, institutions=5, admission_year=2026
    )
    await publish_messages(
        bootstrap, [institution_message(town_code, i) for i in town.institutions]
    )
    await publish_messages(bootstrap, [application_message(town_code, c) for c in town.children])
    await eventually(
        lambda: len(state.children) == 200 and all(not f.missing for f in state.children.values()),
        timeout=90,
        what="every application enriched",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env |= {
        "HUB_BOOTSTRAP_SERVERS": bootstrap,
        "HUB_DATA_DIR": str(tmp_path),
        "HUB_MUNICIPALITY": town_code,
        "HUB_RULES": "riga",
        "HUB_ALLOCATION_API": f"127.0.0.1:{port}",
    }
    code, said = await hub(env, "round", "start", "--date", "2026-09-01", "--by", "test")
    assert code == 0, said
    round_id = said.split()[1]
    assert said.startswith(f"round {round_id} of {town_code} as of 2026-09-01")
    await eventually(lambda: state.round_id == round_id, timeout=30, what="the round")
    check(state)
    first_offers = len(state.live)
    assert first_offers > 0

    some_child = sorted(state.live)[0]
    code, said = await hub(env, "queue", some_child, "--json")
    assert code == 0, said
    report, _ = json.JSONDecoder().raw_decode(said)  # the JSON document comes first (stdout)
    assert report["offer"]["institution_id"] == state.offers[state.live[some_child]].institution_id
    assert "161175" not in said and report["status"] == "queued"
    waiting = next(c for c in sorted(state.allocator.children()) if c not in state.live)  # type: ignore[union-attr]
    code, said = await hub(env, "queue", waiting)
    assert code == 0 and f"child {waiting}" in said, said
    code, said = await hub(env, "queue", "CH-unknown")
    assert code == 2 and "does not know child CH-unknown" in said

    rnd = random.Random(3)

    async def respond(count: int, current: AllocationState) -> None:
        for _ in range(count):
            live = sorted(current.live.items())
            child_ref, offer_id = rnd.choice(live)
            kind = ParentDeclined if rnd.random() < 0.6 else ParentAccepted
            closed = sum(1 for o in current.offers.values() if o.status != LIVE)
            await publish_messages(
                bootstrap,
                [
                    kind.new(
                        producer="vps-adapter",
                        municipality=town_code,
                        offer_id=uuid.UUID(offer_id),
                        child_ref=child_ref,
                        responded_at=clock.now,
                    )
                ],
            )
            await eventually(
                lambda c=current, n=closed: (
                    sum(1 for o in c.offers.values() if o.status != LIVE) > n
                ),
                timeout=30,
                what="the response applied",
            )
            check(current)

    await respond(15, state)
    # Restart in the middle: a graceful stop, a fresh service on the same store.
    stop.set()
    assert await asyncio.wait_for(task, 60)
    before_restart = {k: v.dump() for k, v in state.offers.items()}
    stop, task, state, _ = start()
    await eventually(lambda: state.round_id == str(round_id), timeout=30, what="state reloaded")
    assert {k: v.dump() for k, v in state.offers.items()} == before_restart
    check(state)
    await respond(15, state)

    # Silence: receipts start the clocks, the clock runs past the deadlines.
    receipts = [
        NotificationSent.new(
            producer="notify-adapter",
            municipality=town_code,
            notification_id=uuid.uuid4(),
            child_ref=child_ref,
            channel="e_adrese",
            offer_id=uuid.UUID(offer_id),
            sent_at=clock.now,
        )
        for child_ref, offer_id in sorted(state.live.items())
    ]
    await publish_messages(bootstrap, receipts)
    await eventually(
        lambda: all(state.offers[o].respond_by for o in state.live.values()),
        timeout=30,
        what="deadlines set",
    )
    expired_before = sum(1 for o in state.offers.values() if o.status == "expired")
    clock.now += timedelta(days=30)
    await eventually(
        lambda: sum(1 for o in state.offers.values() if o.status == "expired") > expired_before,
        timeout=30,
        what="expiries",
    )
    await eventually(
        lambda: invariant_problems(state) == [], timeout=10, what="invariants after expiry cascades"
    )

    # The offers equal the engine run on the same inputs.
    assert state.allocator is not None
    fresh = Allocator(state.allocator.instance, RULES, date(2026, 9, 1))
    assert fresh.matching() == state.allocator.matching()
    statuses = Counter(o.status for o in state.offers.values())
    stop.set()
    assert await asyncio.wait_for(task, 60)

    published = [json.loads(r.value) for r in await read_topic(bootstrap, "allocation.offers.v1")]
    mine = [m for m in published if m["municipality"] == town_code]
    made = {m["offer_id"] for m in mine if m["event_type"] == "OfferMade"}
    assert made == set(state.offers)  # every offer published (after de-duplication), none more
    closing = Counter(
        m["offer_id"]
        for m in mine
        if m["event_type"] in ("OfferRevoked", "OfferDeclined", "OfferExpired", "PlaceAccepted")
    )
    for offer in state.offers.values():
        assert (offer.offer_id in closing) == (offer.status != LIVE)
    assert statuses["accepted"] > 0 and statuses["declined"] > 0 and statuses["expired"] > 0

    # The state rebuilt from the topics equals the live one, restart and expiries included.
    code, report = await hub(env, "allocation", "rebuild")
    assert code == 0, report
    assert "the rebuilt state equals the live one" in report
    assert "clock ticks" in report and " 0 clock ticks" not in report
    assert (tmp_path / "allocation.rebuilt.sqlite3").exists()


async def test_a_killed_service_loses_and_duplicates_nothing(  # noqa: PLR0915 - one long story
    kafka_settings: Settings, tmp_path: Path, town: str
) -> None:
    """SIGKILL the service while parents answer; after a restart every answer took effect once."""
    bootstrap = kafka_settings.bootstrap_servers or ""
    town_code = town
    # Small batches, so that the kill falls between committed batches and inside one.
    process = ServiceProcess(
        bootstrap,
        tmp_path,
        town_code,
        rules="riga",
        batch_size=4,
        session_timeout=3,
        heartbeat_interval=1,
        log_level="INFO",
    )
    town = SyntheticMunicipality(
        town_code, seed=11, children=150, institutions=4, admission_year=2026
    )
    try:
        await process.start()
        await publish_messages(
            bootstrap, [institution_message(town_code, i) for i in town.institutions]
        )
        await publish_messages(
            bootstrap, [application_message(town_code, c) for c in town.children]
        )
        await process.wait_for(
            lambda s: s["children"] == 150 and s["waiting_for_facts"] == 0, "enriching", 120
        )
        command = round_command(municipality=town_code)
        await publish_messages(bootstrap, [command])
        health = await process.wait_for(
            lambda s: s["round"] == str(command.round_id), "the round", 60
        )
        async with Parents(bootstrap, town_code) as parents:
            await parents.wait_until(lambda: len(parents.live) >= health["live_offers"])
            chosen = random.Random(5).sample(sorted(parents.live), 60)
            answers: dict[str, str] = {}  # event_id → offer_id it answers

            async def trickle() -> None:
                for n, child_ref in enumerate(chosen):
                    if child_ref not in parents.live:
                        continue  # the child moved meanwhile
                    reaction = parents.send(child_ref, "accept" if n % 3 == 0 else "decline")
                    answers[str(reaction.answer.event_id)] = str(reaction.answer.offer_id)  # type: ignore[attr-defined]
                    assert reaction.sending is not None
                    await reaction.sending

            sending = asyncio.create_task(trickle())

            def answered(s: dict[str, Any]) -> int:
                return int(s["offers"].get("declined", 0) + s["offers"].get("accepted", 0))

            await process.wait_for(lambda s: answered(s) >= 10, "the first answers", 60)
            await process.kill()  # most answers are still on their way or in a batch
            await process.start()
            await sending
            assert len(answers) > 30

            async def accounted() -> tuple[Counter[str], dict[str, str]]:
                journal = await read_topic(bootstrap, JOURNAL.name)
                steps = journal_steps((r.value for r in journal), town_code)
                applied = Counter(str(s.causation_id) for s in steps if s.step == "message")
                refused = {}
                for letter in await dead_letters(bootstrap):
                    if f'"municipality":"{town_code}"'.encode() in letter.value:
                        refused[json.loads(letter.value)["event_id"]] = letter.error
                return applied, refused

            async with asyncio.timeout(60):
                while True:
                    applied, refused = await accounted()
                    if all(a in applied or a in refused for a in answers):
                        break
                    await asyncio.sleep(0.5)
        assert await process.stop() == 0
    finally:
        await process.close()

    # Nothing applied twice (an answer, an application, a fact, the command) ...
    assert [event for event, times in applied.items() if times > 1] == []
    # ... and every answer either took effect or was refused (its offer had moved on).
    assert set(answers) <= set(applied) | set(refused)
    assert not set(answers) & set(refused) & set(applied)
    assert all("is already" in refused[a] for a in answers if a in refused)
    assert sum(1 for a in answers if a in applied) > 30

    # The store after the kill: invariants, offers as the engine has them, all published.
    store = await Store.open(tmp_path / "allocation.sqlite3", schema=SCHEMA)
    state = AllocationState(town_code, RULES, Clock())
    try:
        await Repository(state).load(store)
    finally:
        await store.close()
    check(state)
    for event_id, offer_id in answers.items():
        if event_id in applied:
            assert state.offers[offer_id].status in ("declined", "accepted")
    assert state.allocator is not None
    fresh = Allocator(state.allocator.instance, RULES, date(2026, 9, 1))
    assert fresh.matching() == state.allocator.matching()
    published = [json.loads(r.value) for r in await read_topic(bootstrap, "allocation.offers.v1")]
    mine = [m for m in published if m["municipality"] == town_code]
    assert {m["offer_id"] for m in mine if m["event_type"] == "OfferMade"} == set(state.offers)

    code, report = await hub(process.env, "allocation", "rebuild")
    assert code == 0, report
    assert "the rebuilt state equals the live one" in report
