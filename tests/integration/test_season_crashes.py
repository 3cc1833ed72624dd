"""A whole admission season with every hub service in a process of its own, killed at random.

The simulators of VPS, VIIS, GIS, the DVS, the register of authorisations, e-adrese,
SMTP, SMS and the post run in one process (``hub simulate all``, 2 % of requests
faulted); the allocation service and the six adapters each run as ``hub run SERVICE``
with a store of their own and the simulated clock. Parents submit every application to
the VPS e-service, the round runs, parents answer in the e-service once notified (accept,
decline or stay silent) and, when only silent offers are left, the simulated clock moves
past their deadlines, until no offer is live. Meanwhile a seeded schedule SIGKILLs the services
(each at least once, the allocation service three times while answers flow) and
starts them again.

The outcome is read from the topics and the simulators' APIs only (``tests/
season_checks.py``): every application applied once, one live offer per child and
none at the end, no group over its seats, one VIIS enrolment per place held and one
DVS decision per place accepted, every notification confirmed on one channel; and,
after a clean stop, ``hub allocation rebuild`` finds the store equal to the state
rebuilt from the topics.

Reproduce a kill schedule with ``SEASON_CRASH_SEED=<seed>`` (printed on failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as daytime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.calendar import RIGA
from hub.clock import ClockMovesBackward, advance_clock
from hub.embedded import EmbeddedBroker
from hub.kafka import ensure_topics, publish_messages
from hub.reliability.deadletters import read_topic
from hub.services import SERVICES
from hub.settings import Settings
from schemas.allocation import RunRound
from schemas.topics import OPERATOR
from simulators.faults import HEADER
from simulators.messages import application_form
from simulators.municipality import SyntheticMunicipality
from simulators.plugin import SYSTEMS
from simulators.process import ServiceProcess, SimulatorsProcess
from tests.seal_kit import SealKit
from tests.season_checks import (
    CLOSING,
    application_problems,
    attended_pools,
    decision_problems,
    declared_capacity,
    enrolment_problems,
    fold_offers,
    hub_command,
    notification_problems,
    read_messages,
    unconfirmed,
)

pytestmark = [pytest.mark.real_broker, pytest.mark.slow]

CHILDREN = 600
INSTITUTIONS = 15
TOWN_SEED = 23
FAULT_RATE = 0.02
ACCEPT, DECLINE = 0.6, 0.2
"""Shares of notified offers the parents accept and decline; the rest stay silent."""
SEED = int(os.environ.get("SEASON_CRASH_SEED") or 7)
"""Seed of the kill schedule and of the parents' answers."""
THINK = 5.0
"""Longest a parent takes to answer once notified (seconds)."""
STEP = 120.0
"""Seconds any one step may go without progress before the test gives up on it."""


# --------------------------------------------------------------------------- ports


def quiet_ports(count: int) -> list[int]:
    """``count`` distinct ports free on loopback now, below the range the kernel hands out to
    outgoing connections: a killed service must find its port free when it starts again,
    not taken by one of the many connections made meanwhile."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    low = max(low, 20_000)
    ports: list[int] = []
    held: list[socket.socket] = []
    draw = random.SystemRandom()
    try:
        while len(ports) < count:
            candidate = socket.socket()
            try:
                candidate.bind(("127.0.0.1", draw.randrange(10_000, low)))
            except OSError:
                candidate.close()
                continue
            held.append(candidate)  # held until all are drawn: no port twice
            ports.append(candidate.getsockname()[1])
    finally:
        for sock in held:
            sock.close()
    return ports


# --------------------------------------------------------------------------- the kills


@dataclass
class Kill:
    """One SIGKILL of the schedule, and what happened when it was carried out."""

    phase: str
    """enrichment, answers or expiry: the part of the season it falls in."""
    service: str
    share: float
    """When in its phase: enrichment — this share of the applications was submitted (the
    VPS adapter, which reads them) or enriched (the VIIS and GIS adapters, which enrich
    them); answers — this share of the answers the round's offers should get was taken;
    expiry — right after the first move of the clock."""
    threshold: float = 0.0
    at: float | None = None
    """Seconds into the test when it was killed."""
    seen: str = ""
    restarted_in: float | None = None
    late: bool = False
    """Carried out after its phase was over (its moment never came in time)."""
    flowing: bool = False
    """Answers were on their way to the allocation service when it was carried out."""

    def __str__(self) -> str:
        when = f"{self.at:6.1f}s" if self.at is not None else "   --  "
        trigger = {
            "enrichment": f"at {self.share:.0%} of the applications"
            f" {'submitted' if self.service == 'vps-adapter' else 'enriched'}",
            "answers": f"at {self.share:.0%} of the answers ({self.threshold:.0f})",
            "expiry": "after the first clock move",
        }[self.phase]
        restart = f"; up again in {self.restarted_in:.1f}s" if self.restarted_in else ""
        late = " LATE" if self.late else ""
        return f"{when}  {self.service:<15} {trigger}{late}: {self.seen}{restart}"


def kill_plan(rng: random.Random) -> list[Kill]:
    """Twelve kills: the enrichment adapters while applications are enriched; the allocation
    service three times and five adapters while parents answer; one service after the
    clock moves (it must come back at the moved time)."""
    enrichment = ["vps-adapter", "viis-adapter", "gis-adapter"]
    answers = ["allocation"] * 3 + [
        "notify-adapter",
        "dvs-adapter",
        "vps-adapter",
        "viis-adapter",
        "authorisations-adapter",
    ]
    rng.shuffle(enrichment)
    rng.shuffle(answers)
    shares = sorted(rng.uniform(0.1, 0.8) for _ in enrichment)
    plan = [
        Kill("enrichment", s, share, threshold=share * CHILDREN)
        for s, share in zip(enrichment, shares, strict=True)
    ]
    plan += [
        Kill("answers", s, share)
        for s, share in zip(answers, sorted(rng.uniform(0.05, 0.8) for _ in answers), strict=True)
    ]
    plan.append(Kill("expiry", rng.choice(SERVICES), 1.0))
    return plan


class Chaos:
    """Carries out the kill schedule as the season reaches each moment. Every killed service
    is started again and must come back; kills of different services may overlap, kills of
    one service wait for its restart."""

    PHASES = ("registration", "enrichment", "answers", "settled")

    def __init__(self, processes: dict[str, ServiceProcess], plan: list[Kill]) -> None:
        self.processes, self.plan = processes, plan
        self.began = time.monotonic()
        self.restarting: set[str] = set()
        self._one_at_a_time = {name: asyncio.Lock() for name in processes}
        self.phase = "registration"
        self.submitted = 0
        """Applications the e-service took."""
        self.children = 0
        self.enriched = 0
        """Applications the allocation service holds, and those with every fact (its
        /health), as last seen."""
        self.answers = 0
        """Answers the e-service took so far."""
        self.answered_at = 0.0
        """When it took the last one (``time.monotonic()``)."""
        self.in_flight = 0
        """Answers decided and not yet taken (the parents think, or are sending)."""
        self.unapplied = 0
        """Answers taken whose offer is still live: not applied by the allocation service yet."""
        self.live = 0
        self.clock_moves = 0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="chaos")

    def check(self) -> None:
        """Fail if a kill or restart failed, or a service exited that nobody killed."""
        if self.task is not None and self.task.done() and self.task.exception() is not None:
            raise AssertionError("the kill schedule failed") from self.task.exception()
        for name, process in self.processes.items():
            if name not in self.restarting and (exited := process.exited()) is not None:
                raise AssertionError(f"a service exited nobody killed (crash?): {exited}")

    def reached(self, phase: str) -> bool:
        return self.PHASES.index(self.phase) >= self.PHASES.index(phase)

    def ready(self, kill: Kill) -> bool:
        if kill.phase == "enrichment":
            return self.reached("answers") or (
                self.phase == "enrichment"
                and (self.submitted if kill.service == "vps-adapter" else self.enriched)
                >= kill.threshold
            )
        if kill.phase == "answers":
            return self.reached("settled") or (
                self.phase == "answers" and self.answers >= kill.threshold
            )
        return self.reached("settled") or self.clock_moves >= 1

    def answers_flowing(self) -> bool:
        """Answers are on their way to the allocation service: parents about to answer, or
        answers the e-service took and the service has not applied yet."""
        return self.in_flight > 0 or self.unapplied > 0

    def describe(self, kill: Kill) -> str:
        if kill.phase == "enrichment":
            return (
                f"{self.submitted} applications submitted, {self.children} in the allocation"
                f" service, {self.enriched} enriched"
            )
        return (
            f"{self.answers} answers taken, {self.in_flight} to come, {self.unapplied} taken"
            f" and not applied yet, {self.live} offers live, clock moved {self.clock_moves}"
            " times"
        )

    async def _run(self) -> None:
        await asyncio.gather(*(self._when_ready(kill) for kill in self.plan))

    async def _when_ready(self, kill: Kill) -> None:
        while True:
            if self.ready(kill):
                break
            await asyncio.sleep(0.05)
        kill.late = self.reached("answers" if kill.phase == "enrichment" else "settled")
        await self.kill(kill)

    async def kill(self, kill: Kill) -> None:
        async with self._one_at_a_time[kill.service]:
            process = self.processes[kill.service]
            kill.at, kill.seen = time.monotonic() - self.began, self.describe(kill)
            kill.flowing = self.phase == "answers" and self.answers_flowing()
            self.restarting.add(kill.service)
            began = time.monotonic()
            await process.kill()
            await process.start(timeout=STEP)  # the allocation service: until its API answers
            await until_up(process)
            kill.restarted_in = time.monotonic() - began
            self.restarting.discard(kill.service)

    async def finish(self) -> None:
        """Carry out what is left of the schedule (late), and wait for the last restart."""
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), STEP)

    def schedule(self) -> str:
        return "\n".join(f"    {k}" for k in self.plan)

    def kills(self) -> Counter[str]:
        return Counter(k.service for k in self.plan if k.at is not None)


async def until_up(process: ServiceProcess) -> None:
    """Wait until the process serves /health again; fail if it exits instead."""
    deadline = time.monotonic() + STEP
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            if (exited := process.exited()) is not None:
                raise AssertionError(f"{process.service} did not restart: {exited}")
            with contextlib.suppress(httpx.HTTPError):
                await http.get(f"{process.health_url}/health")
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{process.service} did not serve /health; see {process.log}")
            await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- the offers, live


class OfferBoard:
    """The municipality's offers as ``allocation.offers.v1`` tells them, read as they come:
    what the e-service shows the parents (made, deadline set once notified, closed)."""

    def __init__(self, bootstrap: str, municipality: str) -> None:
        self.needle = f'"municipality":"{municipality}"'.encode()
        self.made: dict[str, dict[str, Any]] = {}
        self.live: dict[str, str] = {}
        """offer id → child_ref, for every live offer."""
        self.respond_by: dict[str, date] = {}
        self.closed: Counter[str] = Counter()
        self.accepted: set[str] = set()
        self.given_up: set[str] = set()
        """Accepted places given up for a better one."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=50,
        )
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OfferBoard:
        await self._consumer.start()
        await self._consumer.topics()
        topic = "allocation.offers.v1"
        partitions = [
            TopicPartition(topic, p) for p in sorted(self._consumer.partitions_for_topic(topic))
        ]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._reader = asyncio.create_task(self._read(), name="offer-board")
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._consumer.stop()

    def check(self) -> None:
        if self._reader is not None and self._reader.done():
            raise AssertionError("the reader of the offers topic stopped") from (
                self._reader.exception()
            )

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    if record.value is not None and self.needle in record.value:
                        self._see(json.loads(record.value))

    def _see(self, m: dict[str, Any]) -> None:
        kind, offer_id = m["event_type"], m["offer_id"]
        if kind == "OfferMade" and offer_id not in self.made:
            self.made[offer_id], self.live[offer_id] = m, m["child_ref"]
        elif kind == "OfferDeadlineSet":
            self.respond_by[offer_id] = date.fromisoformat(m["respond_by"])
        elif kind in CLOSING and self.live.pop(offer_id, None) is not None:
            self.closed[kind] += 1
            if kind == "PlaceAccepted":
                self.accepted.add(offer_id)
        elif kind == "OfferRevoked" and offer_id in self.accepted:
            self.given_up.add(offer_id)


# --------------------------------------------------------------------------- the season


class Season:
    """The moving parts of one season and the steps that drive it."""

    def __init__(
        self, settings: Settings, bootstrap: str, tmp_path: Path, code: str, seal: SealKit
    ) -> None:
        self.bootstrap, self.code = bootstrap, code
        self.town = SyntheticMunicipality(
            code, seed=TOWN_SEED, children=CHILDREN, institutions=INSTITUTIONS
        )
        ports = iter(quiet_ports(len(SYSTEMS) + 3 + len(SERVICES)))
        urls = {f"{s}_url": f"http://127.0.0.1:{next(ports)}" for s in SYSTEMS}
        self.settings = settings.derive(
            **urls,
            municipality=code,
            data_dir=tmp_path,
            smtp_port=next(ports),
            http_timeout=1.0,
            # The simulators follow the services' simulated clock (a letter is posted on the
            # day the notification service asks for, by that clock).
            clock="simulated",
            simulation=True,
        )
        shared: dict[str, Any] = (
            urls
            | {
                "rules": "riga",
                "clock": "simulated",
                "simulation": "true",
                "smtp_port": self.settings.smtp_port,
                "notify_callback": f"127.0.0.1:{next(ports)}",
                "allocation_api": f"127.0.0.1:{next(ports)}",
                "session_timeout": 3,
                "heartbeat_interval": 1,
                "http_timeout": 1.0,
                "http_attempts": 8,
                "http_max_seconds": 30,
                "retry_first_delay": 0.5,
                "retry_max_delay": 5,
                "max_attempts": 10,
                "vps_poll_interval": 0.2,
                "expiry_interval": 1,
                "seal_key": seal.key_path,
                "seal_certificate": seal.cert_path,
            }
            | {f"notify_rate_{c}": 100_000 for c in ("eadrese", "email", "sms", "letter")}
        )
        self.processes: dict[str, ServiceProcess] = {}
        for name in SERVICES:
            (tmp_path / name).mkdir()
            self.processes[name] = ServiceProcess(
                bootstrap, tmp_path / name, code, service=name, health_port=next(ports), **shared
            )
        self.allocation = self.processes["allocation"]
        self.rng = random.Random(SEED)
        self.chaos = Chaos(self.processes, kill_plan(random.Random(f"kills:{SEED}")))
        self.submitted: dict[str, str] = {}
        """application id → child_ref, as the e-service answered."""
        self.codes: dict[str, str] = {}
        """child_ref → the child's personal code."""
        self.decided: dict[str, str] = {}
        """offer id → accept, decline or silent."""
        self.answers: Counter[str] = Counter()
        self.taken: set[str] = set()
        """Offers whose answer the e-service took."""
        self.round_offers = 0
        self.http = httpx.AsyncClient(timeout=30, headers={HEADER: "none"})
        """The parents' and the test's client: faults are for the hub's adapters."""

    def say(self, line: str) -> None:
        print(f"[{time.monotonic() - self.chaos.began:6.1f}s] {line}", flush=True)

    def check(self) -> None:
        self.chaos.check()

    async def start(self) -> None:
        self.say(
            f"season {self.code}: {CHILDREN} children, {INSTITUTIONS} institutions, town seed"
            f" {TOWN_SEED}, faults {FAULT_RATE:.0%}, seed {SEED}; kill schedule:\n"
            + self.chaos.schedule()
        )
        await asyncio.gather(*(p.start(timeout=STEP) for p in self.processes.values()))
        await asyncio.gather(*(until_up(p) for p in self.processes.values()))
        self.chaos.start()

    async def until(
        self, done: Callable[[], Any], what: str, progress: Callable[[], str] | None = None
    ) -> None:
        """Poll ``done`` (a function or coroutine function) until it holds; fail after
        :data:`STEP` seconds; ``progress`` is printed every ten seconds."""
        deadline, shown = time.monotonic() + STEP, time.monotonic()
        while True:
            self.check()
            result = done()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {STEP:.0f}s waiting for {what}"
                    + (f" ({progress()})" if progress else "")
                )
            if progress is not None and time.monotonic() - shown > 10:
                shown = time.monotonic()
                self.say(f"  … {progress()}")
            await asyncio.sleep(0.2)

    # --- registration and enrichment --------------------------------------------------

    async def register(self) -> None:
        self.chaos.phase = "enrichment"
        gate = asyncio.Semaphore(16)
        vps = self.settings.vps_url

        async def submit(child: Any) -> None:
            async with gate:
                answer = await self.http.post(
                    f"{vps}/v1/applications", json=application_form(child)
                )
            assert answer.status_code == 201, f"the e-service refused an application: {answer.text}"
            body = answer.json()
            ref = f"CH-{body['child_id']}"
            self.submitted[body["application_id"]], self.codes[ref] = ref, child.personal_code
            self.chaos.submitted += 1

        health: dict[str, Any] = {}

        async def enriched() -> bool:
            health.update(await self.allocation.health() or {})
            self.chaos.children = health.get("children", 0)
            self.chaos.enriched = self.chaos.children - health.get("waiting_for_facts", 0)
            return (
                health.get("children") == CHILDREN
                and health.get("waiting_for_facts") == 0
                and health.get("institutions") == INSTITUTIONS
            )

        async def watch() -> None:  # the kills' moments come during the submissions too
            while True:
                await enriched()
                await asyncio.sleep(0.2)

        watching = asyncio.create_task(watch())
        try:
            await asyncio.gather(*(submit(c) for c in self.town.children))
        finally:
            watching.cancel()
        self.say(f"parents submitted {len(self.submitted)} applications to the VPS e-service")
        await self.until(
            enriched,
            "every application in the allocation service with its VIIS and GIS facts",
            lambda: f"allocation service: {health}",
        )
        for kill in self.chaos.plan:
            if kill.phase == "enrichment":
                await self.until(lambda k=kill: k.restarted_in is not None, f"the kill {kill}")
        self.say(f"{CHILDREN} applications read from the VPS feed and enriched")

    # --- the round, the answers, the clock -----------------------------------------------

    async def round(self, board: OfferBoard) -> None:
        command = RunRound.new(
            producer=OPERATOR,
            municipality=self.code,
            round_id=uuid.uuid4(),
            round_date=date(self.town.admission_year, 9, 1),
            requested_by="season-crash-test",
        )
        await publish_messages(self.bootstrap, [command])
        health: dict[str, Any] = {}

        async def done() -> bool:
            health.update(await self.allocation.health() or {})
            return health.get("round") == str(command.round_id)

        await self.until(done, "the round")
        self.round_offers = health["live_offers"]
        await self.until(
            lambda: len(board.made) >= self.round_offers,
            "the round's offers on the offers topic",
            lambda: f"{len(board.made)} of {self.round_offers}",
        )
        expected = (ACCEPT + DECLINE) * self.round_offers
        for kill in self.chaos.plan:
            if kill.phase == "answers":
                kill.threshold = max(1, round(kill.share * expected))
        self.chaos.phase = "answers"
        self.say(f"round as of {command.round_date}: {self.round_offers} offers")

    def verdict(self) -> str:
        draw = self.rng.random()
        if draw < ACCEPT:
            return "accept"
        return "decline" if draw < ACCEPT + DECLINE else "silent"

    async def answer(self, offer_id: str, verdict: str) -> None:
        """The parents answer in the e-service; the offer may not show there yet."""
        deadline = time.monotonic() + STEP
        while True:
            reply = await self.http.post(
                f"{self.settings.vps_url}/v1/offers/{offer_id}/answer", json={"verdict": verdict}
            )
            if reply.status_code == 204:
                self.taken.add(offer_id)
                self.answers[verdict] += 1
                self.chaos.answers += 1
                self.chaos.answered_at = time.monotonic()
                return
            if reply.status_code == 409:  # closed before the parents answered
                self.answers["too_late"] += 1
                return
            if reply.status_code != 404 or time.monotonic() > deadline:
                raise AssertionError(
                    f"the e-service answered {reply.status_code} {reply.text} to an answer to"
                    f" offer {offer_id}"
                )
            await asyncio.sleep(0.2)

    async def answers_until_settled(self, board: OfferBoard) -> None:
        """Parents answer each offer once notified; when only silent offers are live, the
        clock moves past their deadlines; until no offer is live."""
        gate = asyncio.Semaphore(16)
        sending: set[asyncio.Task[None]] = set()
        moved: set[str] = set()
        last, stalled, shown = (-1, -1), time.monotonic(), time.monotonic()

        async def send(offer_id: str, verdict: str) -> None:
            # Parents take a moment to answer once notified: not all in the same second.
            await asyncio.sleep(self.rng.uniform(0, THINK))
            async with gate:
                await self.answer(offer_id, verdict)

        while True:
            self.check()
            board.check()
            for task in [t for t in sending if t.done()]:
                sending.discard(task)
                task.result()  # an answer that failed fails the test
            live = dict(board.live)
            for offer_id in live:
                if offer_id in self.decided or offer_id not in board.respond_by:
                    continue  # answered already, or the parents do not know of it yet
                verdict = self.decided[offer_id] = self.verdict()
                if verdict != "silent":
                    sending.add(asyncio.create_task(send(offer_id, verdict)))
            self.chaos.live, self.chaos.in_flight = len(live), len(sending)
            self.chaos.unapplied = sum(1 for o in live if o in self.taken)
            if not live and not sending:
                break
            waiting = [o for o in live if self.decided.get(o, "unknown") != "silent"]
            if live and not waiting and not sending and not moved.issuperset(live):
                await self.move_clock(board, list(live))
                moved |= set(live)
            progress = (len(board.made), sum(board.closed.values()))
            if progress != last:
                last, stalled = progress, time.monotonic()
            elif time.monotonic() - stalled > STEP:
                raise AssertionError(
                    f"no offer made or closed for {STEP:.0f}s: {len(live)} live, of which"
                    f" {len([o for o in live if o not in board.respond_by])} not notified and"
                    f" {len([o for o in waiting if o in board.respond_by])} answered; e.g."
                    f" {[(o, self.decided.get(o)) for o in waiting[:5]]}"
                )
            if time.monotonic() - shown > 10:
                shown = time.monotonic()
                unnotified = sum(1 for o in live if o not in board.respond_by)
                self.say(
                    f"  … offers made {len(board.made)}, closed {dict(board.closed)}; live"
                    f" {len(live)} ({unnotified} not notified yet,"
                    f" {len(waiting) - unnotified} answered); answers {dict(self.answers)}"
                )
            await asyncio.sleep(0.1)
        self.chaos.phase = "settled"
        self.say(
            f"the queue settled: {len(board.made)} offers, closed {dict(board.closed)};"
            f" parents {dict(self.answers)}; clock moved {self.chaos.clock_moves} times"
        )

    async def move_clock(self, board: OfferBoard, live: list[str]) -> None:
        """Move the simulated clock to the morning after the latest deadline of ``live``,
        and wait until every process reads that time."""
        latest = max(board.respond_by[o] for o in live)
        target = datetime.combine(latest + timedelta(days=1), daytime(9), RIGA)
        try:
            await advance_clock(self.bootstrap, self.code, to=target, requested_by="crash-test")
        except ClockMovesBackward:
            return  # the deadlines have passed already: the expiries are on their way
        self.chaos.clock_moves += 1
        self.say(f"{len(live)} offers unanswered: the clock moves to {target:%Y-%m-%d %H:%M}")
        behind: dict[str, str] = {}

        async def everyone() -> bool:
            behind.clear()
            for name, process in self.processes.items():
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    reply = await self.http.get(f"{process.health_url}/health", timeout=2)
                    clock = datetime.fromisoformat(reply.json()["clock"])
                    if clock >= target:
                        continue
                    behind[name] = clock.isoformat()
                    continue
                behind[name] = "not answering"
            return not behind

        await self.until(everyone, "every process reading the moved clock", lambda: str(behind))

    # --- after the season ------------------------------------------------------------------

    async def registered_everywhere(self, board: OfferBoard) -> None:
        """Wait until VIIS and the DVS have answered for every accepted place and every
        notification is confirmed."""
        state: dict[str, int] = {}

        async def done() -> bool:
            facts = await read_messages(self.bootstrap, "viis.enrollment.facts.v1", self.code)
            documents = await read_messages(
                self.bootstrap, "dvs.documents.registered.v1", self.code
            )
            requests = await read_messages(self.bootstrap, "notify.requests.v1", self.code)
            receipts = await read_messages(self.bootstrap, "notify.receipts.v1", self.code)
            enrolled = {
                m["offer_id"]
                for m in facts
                if m["event_type"] in ("EnrollmentRegistered", "EnrollmentRefused")
            }
            decided = {m["document_key"] for m in documents}
            state["accepted"] = len(board.accepted)
            state["without an answer of VIIS"] = len(board.accepted - enrolled)
            state["without an answer of the DVS"] = len(
                {f"decision:{o}" for o in board.accepted} - decided
            )
            state["notifications unconfirmed"] = unconfirmed(requests, receipts)
            # A notice is sent once the DVS has registered it: none may still wait for that.
            health = await self.allocation.health()
            notices = (health or {}).get("notices", {"unknown": 1})
            state["notices waiting for the DVS"] = notices.get("registering", 0)
            sent = {
                m["notification_id"]
                for m in requests
                if m["event_type"] == "SendNotification" and m.get("document")
            }
            state["notices sent but not on the requests topic yet"] = max(
                0, notices.get("sent", 0) - len(sent)
            )
            state["allocation not answering"] = int(health is None)
            return not any(v for k, v in state.items() if k != "accepted")

        await self.until(
            done,
            "VIIS enrolments, DVS decisions and notification receipts",
            lambda: str(state),
        )
        self.say(f"registered in VIIS and the DVS, every notification confirmed: {state}")

    async def attendance(self) -> dict[str, tuple[str, str] | None]:
        """child_ref → the group VIIS has the child in (on any date), for every applicant."""
        refs = sorted(self.codes)
        found: dict[str, tuple[str, str] | None] = {}
        for start in range(0, len(refs), 100):
            chunk = refs[start : start + 100]
            reply = await self.http.post(
                f"{self.settings.viis_url}/v1/attendance/search",
                json={"personal_codes": [self.codes[r] for r in chunk], "as_of": "2100-01-01"},
            )
            assert reply.status_code == 200, reply.text
            for ref, result in zip(chunk, reply.json()["results"], strict=True):
                institution, group = result["institution_id"], result["group_code"]
                found[ref] = (institution, group) if institution else None
        return found

    def seeded(self) -> dict[str, tuple[str, str] | None]:
        """child_ref → where the child attended before the season (VIIS's seed)."""
        by_code = {
            code.replace("-", ""): (e.institution_id, e.group_code)
            for code, e in self.town.enrolments.items()
        }
        return {ref: by_code.get(code.replace("-", "")) for ref, code in self.codes.items()}

    async def close(self) -> None:
        for process in self.processes.values():
            await process.close()
        await self.http.aclose()
        if self.chaos.task is not None and not self.chaos.task.done():
            self.chaos.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.chaos.task


def without_progress(said: str) -> str:
    """What a command said, less its progress lines (``  1,200/10,958 steps``)."""
    return "\n".join(
        line
        for line in said.strip().splitlines()
        if not re.fullmatch(r"\s+[\d,]+/[\d,]+ steps", line)
    )


@pytest_asyncio.fixture
async def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Settings]:
    """A broker of the season's own, its topics created: the checks read whole topics from
    the start, which on the suite's shared broker means reading every other test's records."""
    async with EmbeddedBroker(log_dir=tmp_path_factory.mktemp("season-broker")) as broker:
        settings = Settings(
            bootstrap_servers=broker.bootstrap,
            data_dir=tmp_path_factory.mktemp("season-data"),
            _env_file=None,
        )
        await ensure_topics(settings, broker.bootstrap)
        yield settings


async def test_a_season_survives_every_service_killed_at_random(
    own_kafka: Settings, tmp_path: Path, test_seal: SealKit
) -> None:
    kafka_settings = own_kafka
    began = time.monotonic()
    bootstrap = kafka_settings.bootstrap_servers or ""
    season = Season(kafka_settings, bootstrap, tmp_path, f"t{uuid.uuid4().hex[:8]}", test_seal)
    code = season.code
    try:
        async with SimulatorsProcess(
            season.settings,
            tmp_path,
            sim_seed=TOWN_SEED,
            sim_children=CHILDREN,
            sim_institutions=INSTITUTIONS,
            sim_fault_rate=FAULT_RATE,
        ) as simulators:
            try:
                await season.start()
                async with OfferBoard(bootstrap, code) as board:
                    await season.register()
                    await season.round(board)
                    await season.answers_until_settled(board)
                    await season.chaos.finish()
                    season.check()
                    await season.registered_everywhere(board)
                faults = await simulators.faults_injected()
                # A clean stop of every service; the allocation service's store stays.
                stopped = dict(
                    zip(
                        SERVICES,
                        await asyncio.gather(*(p.stop() for p in season.processes.values())),
                        strict=True,
                    )
                )
                rebuilt_code, rebuilt = await hub_command(
                    season.allocation.env, "allocation", "rebuild"
                )
                attendance = await season.attendance()
                dvs = (await season.http.get(f"{season.settings.dvs_url}/v1/documents")).json()
            finally:
                await season.close()
    except BaseException:
        print(f"kill schedule (seed {SEED}, season {code}):\n{season.chaos.schedule()}")
        print(f"the services' logs and stores: {tmp_path}/<service>/")
        raise

    # What the season left on the topics.
    async def topic(name: str) -> list[dict[str, Any]]:
        return await read_messages(bootstrap, name, code)

    journal = [r.value for r in await read_topic(bootstrap, "allocation.journal.v1")]
    facts = await topic("viis.enrollment.facts.v1")
    offers = fold_offers(
        await topic("allocation.offers.v1"),
        declared_capacity(await topic("vps.pii.institutions.v1")),
        attended_pools(facts),
    )
    notifications, channels = notification_problems(
        offers, await topic("notify.requests.v1"), await topic("notify.receipts.v1")
    )
    checks = {
        "1. every application reached the allocation service exactly once": application_problems(
            season.submitted, await topic("vps.pii.applications.v1"), journal, code
        ),
        "2. at most one live offer per child at any time, none at the end": offers.live_problems,
        "3. no group over the seats it declared (live offers + places held)": (
            offers.capacity_problems
        ),
        "4a. one VIIS enrolment per place held": enrolment_problems(
            offers, facts, attendance, season.seeded()
        ),
        "4b. one DVS decision per place accepted": decision_problems(
            offers,
            await topic("dvs.documents.requests.v1"),
            await topic("dvs.documents.registered.v1"),
            dvs["documents"],
        ),
        "5. every notification confirmed on exactly one channel": notifications,
        "6a. every service stops cleanly on SIGTERM (exit 0)": [
            f"{name} exited {status}" for name, status in stopped.items() if status != 0
        ],
        "6b. hub allocation rebuild: the rebuilt state equals the live one, and its store"
        " reloads to the replayed state": (
            []
            if rebuilt_code == 0
            and "the rebuilt state equals the live one" in rebuilt
            and "the rebuilt store reloads to the replayed state" in rebuilt
            else [f"exit {rebuilt_code}:\n{without_progress(rebuilt)}"]
        ),
    }

    outcomes, kills = offers.outcomes(), season.chaos.kills()
    seconds = time.monotonic() - began
    print(
        f"\nSeason {code} (seed {SEED}) in {seconds:.0f}s: children {len(season.submitted)},"
        f" institutions {INSTITUTIONS}; offers {len(offers.made)} (round"
        f" {season.round_offers}); accepted {len(offers.accepted)} (held"
        f" {len(offers.held)}), declined {outcomes['declined']}, expired"
        f" {outcomes['expired']}, revoked {outcomes['revoked']}, live {outcomes['live']}; clock"
        f" moved {season.chaos.clock_moves} times\n"
        f"  parents: {dict(season.answers)}, silent"
        f" {sum(1 for v in season.decided.values() if v == 'silent')}; notifications"
        f" confirmed per channel {dict(channels)}; faults injected {faults}\n"
        f"  kills {sum(kills.values())}: {dict(kills)}\n{season.chaos.schedule()}\n"
        + "\n".join(f"  {line}" for line in rebuilt.splitlines() if line.startswith("rebuilt"))
    )
    for name, problems in checks.items():
        print(f"  {'PASS' if not problems else 'FAIL'}  {name}")
        for problem in problems:
            print(f"          {problem}")

    # The schedule was carried out: every service killed, the allocation service while
    # parents answered.
    assert set(kills) == set(SERVICES) and sum(kills.values()) >= 10, season.chaos.schedule()
    while_answering = [
        k for k in season.chaos.plan if k.service == "allocation" and k.phase == "answers"
    ]
    assert len(while_answering) >= 3, season.chaos.schedule()
    assert all(k.flowing and not k.late for k in while_answering), season.chaos.schedule()
    failed = {name: problems for name, problems in checks.items() if problems}
    assert not failed, "\n".join(
        f"FAIL {name}:\n  " + "\n  ".join(problems) for name, problems in failed.items()
    )
