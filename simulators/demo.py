"""The demo: a whole admission season, end to end, on a real Kafka broker.

Every part runs as it would in a municipality, on loopback:

- the embedded broker (unless ``HUB_BOOTSTRAP_SERVERS`` names a cluster);
- the simulators of VPS, VIIS, GIS, the DVS, the register of authorisations,
  e-adrese, an SMTP server, an SMS gateway and the post, in a process of their
  own (``hub simulate all``), answering a share of requests with faults
  (``--faults``);
- every hub service in this process, as ``hub run all`` runs them: the VPS,
  VIIS, GIS, DVS and authorisations adapters, the notification service and the
  allocation service, with ``/health`` and ``/metrics`` and the operations view.

The season, each step printed as it runs:

1. parents submit every application to the VPS e-service over HTTP; the VPS
   adapter reads them from its feed onto the topics;
2. the allocation service asks VIIS (already enrolled? siblings?) and GIS
   (address, territory, distance) through their adapters;
3. one click: a round as of 1 September; the offers are shown in the
   e-service and sent to the parents (e-adrese first, then e-mail, SMS, a
   registered letter), and each receipt starts the offer's legal clock;
4. the parents answer in the e-service — accept, decline or stay silent, in
   proportions the scenario sets; a decline cascades to the next child at
   once; when only silent offers are left, the service's clock (and only
   its clock: the demo's time machine) moves past their deadlines, they
   expire and cascade; again until no offer is open;
5. accepted places are registered in VIIS as enrolments and their admission
   decisions in the DVS, beside the admission list;
6. a report: applications, offers, answers, expiries, cascade steps, seats
   filled per institution, children left without a place and why,
   notifications per channel, dead letters — and every invariant checked,
   PASS or FAIL.

The parents are :class:`simulators.parents.Parents`, as in the benchmarks. The
demo reads the hub as anyone outside it would: the topics, the allocation
service's HTTP API (``hub.allocation.api``: its ``/checks`` says whether the
service's invariants hold and its store reloads to its memory) and the
services' ``/health`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import uuid4

import httpx
from prometheus_client.parser import text_string_to_metric_families

from hub.calendar import RIGA, local_date
from hub.clock import SimulatedClock, advance_clock
from hub.documents import format_date, pdf_text, read_fields
from hub.documents.edoc import generate_seal, open_edoc
from hub.embedded import free_port
from hub.errors import HubError
from hub.kafka import client_options, ensure_topics, kafka_cluster, publish_messages
from hub.ops import ops_task
from hub.reliability.deadletters import DeadLetter, dead_letters, read_topic
from hub.services import assemble
from hub.settings import Settings
from schemas.allocation import (
    OFFER_CLOSED,
    OfferDeclined,
    OfferExpired,
    OfferMade,
    RunRound,
)
from schemas.applications import MAX_RANKED_INSTITUTIONS
from schemas.notifications import SendNotification
from schemas.priority import PriorityConfirmed, PriorityRejected
from schemas.topics import BY_NAME, OPERATOR
from simulators.authorisations.register import seeded
from simulators.messages import application_form
from simulators.municipality import Child, SyntheticMunicipality
from simulators.parents import Choices, Parents, ParentsError
from simulators.plugin import SYSTEMS, institution_limit
from simulators.process import SimulatorsProcess

NO_FAULT = {"X-Simulate-Fault": "none"}
"""The demo's own reads from a simulator are not faulted."""

LIVE = "live"
"""The status of an open offer in the allocation API's answers."""


class DemoError(HubError):
    """A step of the demo did not happen in time (the report says which)."""


@dataclass(frozen=True)
class Scenario:
    """What ``hub demo`` plays: the municipality, the faults and the parents' answers."""

    children: int = 5000
    institutions: int = 40
    seed: int = 7
    faults: float = 0.02
    """Share of requests every simulator answers with a fault (503, 429, timeout, garbage)."""
    accept: float = 0.7
    decline: float = 0.15
    """Shares of offers the parents accept and decline; the rest stay silent and expire."""
    timeout: float = 600.0
    """Seconds any one step may take before the demo gives up on it."""

    def __post_init__(self) -> None:
        if not 0 <= self.faults < 1:
            raise DemoError("--faults is a share of requests: from 0 up to (not including) 1")
        if self.accept < 0 or self.decline < 0 or self.accept + self.decline > 1:
            raise DemoError("--accept and --decline are shares of offers that add up to at most 1")


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class SeasonReport:
    """What the season did, and whether every invariant held."""

    scenario: Scenario
    municipality: str = ""
    seconds: float = 0.0
    applications: int = 0
    offers: int = 0
    round_offers: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    """Answers the e-service took: accept, decline; too_late (the offer closed first)."""
    outcomes: Counter[str] = field(default_factory=Counter)
    """Offers by final status: accepted, declined, expired, revoked, live."""
    cascade_steps: Counter[int] = field(default_factory=Counter)
    """Offers by cascade step: 0 the round's, n the n-th offer of a freed place."""
    decided: Counter[str] = field(default_factory=Counter)
    """What the parents decided per offer: accept, decline, silent."""
    clock_moves: int = 0
    unplaced: Counter[str] = field(default_factory=Counter)
    institutions: list[tuple[str, int, int]] = field(default_factory=list)
    """(institution, seats, accepted) for every institution."""
    channels: Counter[str] = field(default_factory=Counter)
    """Notified offers by the channel their deadline counts from."""
    documents: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Documents in the DVS by type: (registered, with their sealed content)."""
    deadlines_read: int = 0
    """Invitations whose printed deadline was read back from the sealed PDF."""
    dead_letters: Counter[str] = field(default_factory=Counter)
    faults_injected: int = 0
    retries: int = 0
    enrolled: int = 0
    enrollment_refused: int = 0
    claims: Counter[str] = field(default_factory=Counter)
    """Declared grounds by the commission's decision: confirmed, rejected, pending."""
    rechecked: int = 0
    facts_changed: int = 0
    facts_unverified: int = 0
    """The checks before the list: children verified again, facts found changed, children
    left out because a register did not answer in time."""
    intake_refused: Counter[str] = field(default_factory=Counter)
    """Applications and changes the e-service refused before they entered the hub, by reason."""
    authorisations: Counter[str] = field(default_factory=Counter)
    """Applications filed by an authorised person, by the register's answer."""
    steps: list[tuple[str, float]] = field(default_factory=list)
    """Each step of the season and the seconds it took."""
    checks: list[Check] = field(default_factory=list)
    failure: str | None = None

    @property
    def passed(self) -> bool:
        return self.failure is None and bool(self.checks) and all(c.passed for c in self.checks)


async def run_demo(
    settings: Settings,
    scenario: Scenario | None = None,
    *,
    out: Callable[[str], None] = print,
) -> SeasonReport:
    """Play the admission season of ``scenario`` and return its report (also printed)."""
    scenario = scenario or Scenario()
    report = SeasonReport(scenario)
    started = time.monotonic()
    async with kafka_cluster(settings) as bootstrap:
        external = settings.bootstrap_servers is not None
        # On a cluster that outlives the demo, a code of its own keeps earlier runs out.
        code = f"{settings.municipality}-{uuid4().hex[:6]}" if external else settings.municipality
        report.municipality = code
        kind = "external cluster" if external else "embedded broker (Tansu)"
        out(f"▶ Kafka ready at {bootstrap} — {kind}")
        season = Season(settings, bootstrap, code, scenario, report, out)
        # Retries of faulted calls are the point of the faults: the report counts them.
        retries = logging.getLogger("hub.reliability.retry")
        level = retries.level
        if settings.log_level != "DEBUG":
            retries.setLevel(logging.ERROR)
        try:
            await season.play()
        except (DemoError, TimeoutError, httpx.HTTPError) as exc:
            timeout = isinstance(exc, TimeoutError)
            report.failure = str(exc) or ("a step timed out" if timeout else type(exc).__name__)
            out(f"✗ {report.failure}")
        finally:
            retries.setLevel(level)
    report.seconds = time.monotonic() - started
    _print_report(report, out)
    return report


# ----------------------------------------------------------------------------- the season


class Season:
    """One season's moving parts and the steps that drive them.

    The demo sees the hub as anyone outside it does: through the topics, the
    allocation service's HTTP API (``/health``, ``/offers``, ``/rounds``,
    ``/institutions``, ``/unplaced``, ``/checks``) and the services' ``/health``
    and ``/metrics``. The parents are :class:`simulators.parents.Parents`.
    """

    def __init__(  # noqa: PLR0917 - one story, told once
        self,
        settings: Settings,
        bootstrap: str,
        code: str,
        scenario: Scenario,
        report: SeasonReport,
        out: Callable[[str], None],
    ) -> None:
        self.settings, self.bootstrap, self.code = settings, bootstrap, code
        self.scenario, self.report, self.out = scenario, report, out
        limit = institution_limit(settings, settings.municipality)  # as the e-service's
        self.town = SyntheticMunicipality(
            code,
            seed=scenario.seed,
            children=scenario.children,
            institutions=scenario.institutions,
            max_choices=min(3, limit or 3),
        )
        self.limit = limit or MAX_RANKED_INSTITUTIONS
        self.authorised: Counter[str] = Counter()
        """Applications filed under an authorisation, by what the register should answer."""
        """How many institutions the e-service lets one application list."""
        self.clock = SimulatedClock()  # the services' clock, moved forward by the demo
        self.local = settings
        self.running: asyncio.Task[bool] | None = None
        self.health: dict[str, Any] = {}
        """The allocation service's latest ``/health`` answer."""
        self._checked_alive = 0.0
        self._parents: Parents | None = None
        self._api: httpx.AsyncClient | None = None
        self._simulators: SimulatorsProcess | None = None

    @property
    def parents(self) -> Parents:
        assert self._parents is not None
        return self._parents

    async def play(self) -> None:
        scenario, data = self.scenario, self.settings.data_dir / "demo"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        self.out(
            f"▶ synthetic municipality {self.code!r}: {scenario.children} children,"
            f" {scenario.institutions} institutions, seed {scenario.seed};"
            f" simulators fault {scenario.faults:.0%} of requests"
        )
        local = self.local = self._settings(data)
        async with SimulatorsProcess(
            local,
            data,
            sim_seed=scenario.seed,
            sim_children=scenario.children,
            sim_institutions=scenario.institutions,
            sim_fault_rate=scenario.faults,
        ) as simulators:
            self._simulators = simulators
            self.out(
                "▶ simulators of VPS, VIIS, GIS, DVS, authorisations, e-adrese, SMTP, SMS, post:"
                f" {data}"
            )
            services = assemble(["all"], local, self.bootstrap, clock=self.clock)
            report = await ensure_topics(local, self.bootstrap, services=list(services.built))
            self.out(
                f"▶ topics: {len(report)} ready, {sum(s.created for s in report)} created now;"
                f" services: {', '.join(services.built)}"
            )
            self.out(
                f"  operations view http://127.0.0.1:{local.ops_port}/ · health"
                f" http://127.0.0.1:{local.health_port}/health · allocation API"
                f" http://{local.allocation_api}/health"
            )
            stop = asyncio.Event()
            view = ops_task(
                local, self.bootstrap, port=local.ops_port, services=list(services.built)
            )
            running = self.running = asyncio.create_task(
                services.run(stop, port=local.health_port, tasks=[view])
            )
            seen = Observed(error="the demo stopped before it read the hub")
            try:
                async with (
                    httpx.AsyncClient(base_url=f"http://{local.allocation_api}", timeout=60) as api,
                    Parents(
                        self.bootstrap,
                        self.code,
                        eservice=str(local.vps_url),
                        choices=Choices(scenario.accept, scenario.decline, scenario.seed),
                        answer_timeout=scenario.timeout,
                    ) as parents,
                ):
                    self._api, self._parents = api, parents
                    try:
                        await self._steps()
                    finally:
                        # Read while the services still run: the API goes with them.
                        seen = await self._observe()
            finally:
                stop.set()
                clean = await running
                self.report.faults_injected = await simulators.faults_injected()
                self._check(seen, clean)

    async def _steps(self) -> None:
        await self._register()
        await self._enriched()
        await self._commission()
        await self._round()
        await self._changes_refused()
        await self._answer()
        await self._registered()

    def _settings(self, data: Path) -> Settings:
        urls = {f"{s}_url": f"http://127.0.0.1:{free_port()}" for s in SYSTEMS}
        rates = {f"notify_rate_{c}": 100_000 for c in ("eadrese", "email", "sms", "letter")}
        # A throw-away e-seal for the notices (a real municipality's is a qualified one).
        key, certificate = generate_seal(
            "Demo e-seal", f"{self.code.capitalize()} municipality (demo)", data / "seal"
        )
        return self.settings.derive(
            **urls
            | rates
            | {
                "data_dir": data,
                "seal_key": key,
                "seal_certificate": certificate,
                "municipality": self.code,
                # The services read the demo's clock; the simulators follow it on the topic.
                "bootstrap_servers": self.bootstrap,
                "simulation": True,
                "clock": "simulated",
                "rules": self.settings.rules or self.settings.municipality,
                "smtp_port": free_port(),
                "notify_callback": f"127.0.0.1:{free_port()}",
                "allocation_api": f"127.0.0.1:{free_port()}",
                "health_port": free_port(),
                "ops_port": free_port(),
                # The embedded broker forms a consumer group only after about one
                # session timeout, and the demo starts eleven consumers.
                "session_timeout": min(self.settings.session_timeout, 3.0),
                "heartbeat_interval": min(self.settings.heartbeat_interval, 1.0),
                "http_timeout": 1.0,
                "http_attempts": 8,
                "http_max_seconds": 30.0,
                "retry_first_delay": 0.5,
                "retry_max_delay": 5.0,
                "max_attempts": 10,
                "expiry_interval": 0.5,
                "vps_poll_interval": 0.2,
            }
        )

    # --- 1. registration ------------------------------------------------------------

    async def _register(self) -> None:
        children, began = self.town.children, time.monotonic()
        await self._too_many_institutions()
        self.out(f"▶ parents submit {len(children)} applications to the VPS e-service")
        parents = self.parents
        # Some applications are filed by an authorised person: the register of authorisations
        # confirms some of the authorisations they name and refuses the others.
        filed = {case.child.personal_code: case for case in seeded(self.town).cases}
        self.authorised = Counter(case.expected for case in filed.values())

        def form(child: Child) -> dict[str, Any]:
            case = filed.get(child.personal_code)
            made = application_form(child)
            return made if case is None else made | {"authorisation": case.authorisation()}

        await self._with_progress(
            parents.apply(form(c) for c in children),
            lambda: f"submitted {parents.submitted}/{len(children)}",
        )
        self.report.applications = len(children)
        took = self._step("submit the applications", began)
        self.out(f"  submitted {len(children)} ({took:.1f}s)")

    async def _too_many_institutions(self) -> None:
        """One family in 50 first lists one institution more than the rules allow: the
        e-service refuses it with the reason (it never reaches the hub); they then apply
        as the rules allow."""
        ids = [i.institution_id for i in self.town.institutions]
        forms = []
        for child in self.town.children[::50]:
            extra = [i for i in ids if i not in child.choices][
                : self.limit + 1 - len(child.choices)
            ]
            if len(child.choices) + len(extra) > self.limit:
                forms.append(application_form(child) | {"institutions": [*child.choices, *extra]})
        async with httpx.AsyncClient(
            base_url=str(self.local.vps_url), headers=NO_FAULT, timeout=30
        ) as eservice:
            for form in forms:
                answer = await eservice.post("/v1/applications", json=form)
                self.report.intake_refused[_refusal(answer)] += 1
        self.out(
            f"  the e-service refused {len(forms)} applications listing more than"
            f" {self.limit} institutions: {dict(self.report.intake_refused)}"
        )

    # --- 2. enrichment --------------------------------------------------------------

    async def _enriched(self) -> None:
        count, began = len(self.town.children), time.monotonic()

        async def enriched() -> bool:
            health = await self._read_health()
            return bool(health["children"] == count and health["waiting_for_facts"] == 0)

        await self._until(
            enriched,
            "every application on the topics with its VIIS and GIS facts",
            lambda: (
                f"in the allocation service {self.health.get('children', 0)}/{count},"
                f" waiting for VIIS or GIS {self.health.get('waiting_for_facts', 0)}"
            ),
        )
        took = self._step("registration read and enriched", began)
        self.out(
            f"▶ {count} applications read from the VPS feed and enriched through VIIS and GIS"
            f" ({took:.1f}s)"
        )

    # --- 3. the commission ----------------------------------------------------------------

    async def _commission(self) -> None:
        """The commission decides every declared ground: four in five confirmed, the rest
        rejected (a draw seeded with the scenario's seed), as ``hub priority confirm`` /
        ``reject`` publish them; the service ranks the children again."""
        began = time.monotonic()
        pending = await self._get("/priority/pending")
        draws = random.Random(f"{self.scenario.seed}:commission")
        decided_on = local_date(self.clock())
        decisions = []
        for n, claim in enumerate(pending, 1):
            confirmed = draws.random() < 0.8
            kind = PriorityConfirmed if confirmed else PriorityRejected
            extra = {} if confirmed else {"reason": "the documents do not show the ground"}
            decisions.append(
                kind.new(
                    producer=OPERATOR,
                    municipality=self.code,
                    child_ref=claim["child_ref"],
                    ground=claim["ground"],
                    institution_id=claim["institution_id"],
                    decision_number=f"K-{decided_on.year}/{n}",
                    decided_by="commission (demo)",
                    decided_on=decided_on,
                    **extra,
                )
            )
        await publish_messages(self.bootstrap, decisions)

        async def decided() -> bool:
            return not await self._get("/priority/pending")

        await self._until(decided, "the commission's decisions taken by the service")
        took = self._step("the commission's decisions", began)
        verdicts = Counter(type(d).__name__ for d in decisions)
        self.out(
            f"▶ the commission decided {len(decisions)} declared grounds:"
            f" {verdicts['PriorityConfirmed']} confirmed, {verdicts['PriorityRejected']}"
            f" rejected ({took:.1f}s)"
        )

    # --- 4. the round -----------------------------------------------------------------

    async def _round(self) -> None:
        began = time.monotonic()
        command = RunRound.new(
            producer=OPERATOR,
            municipality=self.code,
            round_id=uuid4(),
            round_date=date(self.town.admission_year, 9, 1),
            requested_by="demo",
        )
        await publish_messages(self.bootstrap, [command])

        async def made() -> bool:
            return (await self._read_health())["round"] == str(command.round_id)

        await self._until(made, "the round (after the facts are verified again)")
        # The round's offers, before any answer: the parents have not seen them yet.
        live, children = self.health["live_offers"], self.health["children"]
        self.report.round_offers = live
        rounds = (await self._get("/rounds"))["rounds"]
        built = next(r for r in rounds if r["round_id"] == str(command.round_id))
        report = self.report
        report.rechecked, report.facts_changed = built["rechecked"], built["facts_changed"]
        report.facts_unverified = built["facts_unverified"]
        took = self._step("the round", began)
        self.out(
            f"▶ one click: round as of {command.round_date}: facts of {report.rechecked}"
            f" children verified again with VIIS and the population register"
            f" ({report.facts_changed} changed, {report.facts_unverified} left out unverified);"
            f" {live} offers, {children - live} children wait ({took:.2f}s)"
        )

    async def _changes_refused(self) -> None:
        """Some parents whose child is on the admission list try to change the application:
        the e-service refuses (a change is possible only until then)."""
        wanted = min(20, self.report.round_offers)

        async def seen() -> bool:
            return len(self.parents.live) >= wanted

        await self._until(seen, "the parents reading the round's offers")
        offers = sorted(self.parents.live.values(), key=lambda o: str(o.offer_id))[:wanted]
        async with httpx.AsyncClient(
            base_url=str(self.local.vps_url), headers=NO_FAULT, timeout=30
        ) as eservice:
            for offer in offers:

                async def shown(offer_id: str = str(offer.offer_id)) -> bool:
                    return (await eservice.get(f"/v1/offers/{offer_id}")).is_success

                await self._until(shown, "the e-service showing the offer")
                answer = await eservice.patch(
                    f"/v1/applications/{offer.application_id}",
                    json={"desired_start_date": offer.start_date.isoformat()},
                )
                self.report.intake_refused[f"change: {_refusal(answer)}"] += 1
        self.out(
            f"  {len(offers)} parents tried to change an application on the admission list:"
            f" {dict((k, v) for k, v in self.report.intake_refused.items() if 'change' in k)}"
        )

    # --- 5. answers, expiries, cascades ---------------------------------------------------

    async def _answer(self) -> None:
        """Parents answer each offer once they are notified of it; cascades follow at once.

        When only offers nobody will answer are open, the services' clock moves past
        their deadlines; they expire and their seats cascade. Until no offer is open.
        The parents see the offers on the offers topic; the service's ``/health`` says
        whether the topic, as read so far, shows every offer it has made and closed.
        """
        parents, began = self.parents, time.monotonic()
        moved: set[str] = set()
        """Silent offers the clock has already moved past."""
        stalled, last, shown = time.monotonic(), (-1, -1), time.monotonic()
        while True:
            await self._alive()
            try:
                parents.answer_notified()
            except ParentsError as exc:
                raise DemoError(str(exc)) from exc
            live = list(parents.live.values())
            waiting = parents.awaiting_effect()
            if not live and not parents.answering:
                if await self._offers_as_on_topic(0):
                    break
            elif (
                live
                and not waiting
                and not parents.answering
                and not moved.issuperset(str(o.offer_id) for o in live)
                and await self._offers_as_on_topic(len(live))
            ):
                # Only silent offers are open: time passes until their deadlines do.
                await self._time_passes(live)
                moved |= {str(o.offer_id) for o in live}
            progress = (parents.made, parents.made - len(live))
            if progress != last:
                stalled, last = time.monotonic(), progress
            elif time.monotonic() - stalled > self.scenario.timeout:
                raise DemoError(
                    f"no offer made or closed for {self.scenario.timeout:.0f}s;"
                    f" {len(live)} open, {len(waiting)} waiting for a receipt or an answer"
                )
            if time.monotonic() - shown >= 5:
                shown = time.monotonic()
                self._progress(live, waiting)
            await asyncio.sleep(0.1)
        d = self.report.decided = Counter(parents.decided.values())
        self.report.answers = Counter(parents.answered)
        took = self._step("answers and cascades until settled", began)
        self.out(
            f"▶ the queue settled: {parents.made} offers made in all; parents accepted"
            f" {d['accept']}, declined {d['decline']}, let {d['silent']} expire;"
            f" the clock moved {self.report.clock_moves} times"
            f" ({took:.1f}s)"
        )

    async def _offers_as_on_topic(self, live: int) -> bool:
        """Whether the service has ``live`` offers open and has made as many as the parents
        have read on the offers topic (so the topic, as read, is up to date)."""
        health = await self._read_health()
        return bool(
            health["live_offers"] == live and sum(health["offers"].values()) == self.parents.made
        )

    def _step(self, name: str, began: float) -> float:
        """Record how long step ``name`` took (for the report); the seconds."""
        took = time.monotonic() - began
        self.report.steps.append((name, took))
        return took

    async def _time_passes(self, live: list[OfferMade]) -> None:
        """Move the clock to 9:00 the day after the last day to answer any of ``live``.

        The move is published on ``hub.clock.v1`` first, for the simulators (a process of
        their own that follows it: the post takes a letter on its day by that clock); once
        they read the moved time, it is made in this process, whose services read
        :attr:`clock` — so no receipt of a simulator lags behind the services' time.
        """
        latest = max(self.parents.notified[str(o.offer_id)] for o in live)
        day = datetime.combine(latest + timedelta(days=1), datetime.min.time(), RIGA)
        moment = day + timedelta(hours=9)
        if moment <= self.clock():
            return  # the clock reads later already: their deadlines have passed
        moved = await advance_clock(
            self.bootstrap,
            self.code,
            to=moment,
            requested_by="demo",
            **client_options(self.local),
        )
        simulators = self._simulators
        assert simulators is not None
        await self._until(
            lambda: simulators.reads(moved), f"the simulators' clock at {moved:%Y-%m-%d %H:%M}"
        )
        self.clock.move_to(moved)
        self.report.clock_moves += 1
        self.out(
            f"▶ {len(live)} offers unanswered: the services' clock moves to"
            f" {self.clock():%Y-%m-%d}, past their deadlines"
        )

    def _progress(self, live: list[OfferMade], waiting: list[OfferMade]) -> None:
        parents = self.parents
        d = Counter(parents.decided.values())
        self.out(
            f"  … offers made {parents.made}, delivered {len(parents.notified)}; parents accept"
            f" {d['accept']}, decline {d['decline']}, silent {d['silent']}; open {len(live)}"
            f" ({len(waiting)} waiting for a receipt or an answer to take effect)"
        )

    # --- 6. VIIS enrolments, DVS decisions -------------------------------------------------

    async def _registered(self) -> None:
        began = time.monotonic()
        accepted: list[dict[str, Any]] = []
        lists: list[dict[str, Any]] = []

        def enrolled() -> int:
            return sum(1 for o in accepted if o["enrolment"] == "enrolled")

        def refused() -> int:
            return sum(1 for o in accepted if o["enrolment"] == "refused")

        def decided() -> int:
            return sum(1 for o in accepted if o["decision_number"])

        async def registered() -> bool:
            nonlocal accepted, lists
            accepted = (await self._get("/offers", status="accepted"))["offers"]
            rounds = (await self._get("/rounds"))["rounds"]
            lists = [r["admission_list"] for r in rounds if r["admission_list"]["document_key"]]
            return enrolled() + refused() == decided() == len(accepted) and all(
                r["registration_number"] for r in lists
            )

        await self._until(
            registered,
            "every enrolment in VIIS and every decision in the DVS",
            lambda: (
                f"VIIS enrolments {enrolled()}/{len(accepted)} (refused {refused()}),"
                f" DVS decisions {decided()}/{len(accepted)}"
            ),
        )
        numbers = ", ".join(str(r["registration_number"]) for r in lists)
        self.report.enrolled, self.report.enrollment_refused = enrolled(), refused()
        took = self._step("VIIS enrolments and DVS decisions", began)
        self.out(
            f"▶ {len(accepted)} places accepted: {enrolled()} enrolled in VIIS"
            f" ({refused()} refused: already enrolled elsewhere, a transfer their current"
            f" institution registers), {decided()} decisions registered in the DVS;"
            f" admission list {numbers} ({took:.1f}s)"
        )

    # --- 6. checks ------------------------------------------------------------------------

    async def _observe(self) -> Observed:
        """Everything the report and its checks need, read from the running hub: the
        allocation API, the services' metrics and the topics."""
        seen = Observed()
        try:
            seen.health = await self._read_health()
            seen.offers = (await self._get("/offers"))["offers"]
            seen.institutions = (await self._get("/institutions"))["institutions"]
            seen.unplaced = (await self._get("/unplaced"))["reasons"]
            seen.checks = await self._get("/checks")
            seen.retries = await self._retries()
            seen.topic = await self._offer_messages()
            seen.applications = await self._applications_on_topic()
            seen.receipts = await self._receipts(seen.offers)
            seen.notices = await self._notices()
            seen.documents = await self._dvs_summary()
            seen.eservice_refused = await self._eservice_refused()
            seen.printed = await self._printed(seen.offers, seen.notices)
            seen.letters = [
                d
                for d in await dead_letters(self.bootstrap)
                if f'"{self.code}"'.encode() in d.value
            ]
        except (httpx.HTTPError, DemoError, TimeoutError, KeyError, ValueError) as exc:
            seen.error = f"{type(exc).__name__}: {exc}"
        return seen

    async def _eservice_refused(self) -> dict[str, int]:
        """The e-service's count of applications the hub refused, by reason."""
        async with httpx.AsyncClient(headers=NO_FAULT, timeout=30) as client:
            answer = await client.get(f"{self.local.vps_url}/health")
            answer.raise_for_status()
            refused: dict[str, int] = answer.json()["refused"]
            return refused

    async def _dvs_summary(self) -> dict[str, Any]:
        """The DVS's count of documents by type: registered, and with their sealed content."""
        async with httpx.AsyncClient(headers=NO_FAULT, timeout=30) as client:
            answer = await client.get(f"{self.local.dvs_url}/v1/summary")
            answer.raise_for_status()
            summary: dict[str, Any] = answer.json()["by_type"]
            return summary

    def _check(self, seen: Observed, clean: bool) -> None:
        report = self.report
        if seen.error is not None:
            report.checks = [
                Check("the hub answered the demo's questions", False, seen.error),
                Check("every service stopped cleanly", clean),
            ]
            return
        offers = seen.offers
        report.retries = seen.retries
        report.offers = len(offers)
        report.outcomes = Counter(o["status"] for o in offers)
        report.cascade_steps = cascade_steps(seen.topic)
        report.unplaced = unplaced(seen.unplaced)
        report.institutions = [
            (i["institution_id"], i["seats"], i["accepted"]) for i in seen.institutions
        ]
        invitations = {
            key.removeprefix("invitation:"): channel
            for key, (_, channel) in delivered_documents(seen.receipts).items()
            if key.startswith("invitation:")
        }
        channels_of: dict[str, set[str]] = {}
        for m in seen.receipts:
            key = m.document_key or ""
            if key.startswith("invitation:") and NOTIFYING_RECEIPT.get(m.channel) == m.event_type:
                channels_of.setdefault(key.removeprefix("invitation:"), set()).add(m.channel)
        report.channels = Counter(
            invitations[o["offer_id"]]
            for o in offers
            if o["respond_by"] and o["offer_id"] in invitations
        )
        report.documents = {
            kind: (counts["registered"], counts["with_content"])
            for kind, counts in sorted(seen.documents.items())
        }
        printed = seen.printed
        report.deadlines_read = printed.checked
        closed = [o for o in offers if o["status"] in ("revoked", "expired")]
        unsaid = _undelivered(closed, delivered_documents(seen.receipts))
        report.dead_letters = Counter(f"{d.service}: {d.reason}" for d in seen.letters)

        made = {str(m.offer_id) for m in seen.topic if isinstance(m, OfferMade)}
        closing = {str(m.offer_id) for m in seen.topic if isinstance(m, OFFER_CLOSED)}
        problems, free, store = (seen.checks[k] for k in ("invariants", "free_seats", "store"))
        declined_again = seen.checks["declined_offered"]
        unconfirmed = seen.checks["unconfirmed_ranked"]
        report.claims = Counter(seen.health["claims"])
        report.authorisations = Counter(seen.health["authorisations"])
        delivered = [o for o in offers if o["respond_by"]]
        children, expected = seen.health["children"], len(self.town.children)
        report.checks = [
            Check(
                "every application submitted to VPS reached the allocation service once",
                children == expected and seen.applications == expected,
                f"{children} of {expected}",
            ),
            Check(
                "one live offer per child, no seat offered twice, offers within capacity",
                not problems,
                "; ".join(problems[:3]),
            ),
            Check(
                "the queue settled: no offer left open",
                report.outcomes[LIVE] == 0,
                f"{report.outcomes[LIVE]} open",
            ),
            Check(
                "the offers topic and the service agree: every offer made and closed on both",
                made == {o["offer_id"] for o in offers}
                and closing == {o["offer_id"] for o in offers if o["status"] != LIVE},
                f"{len(made)} made on the topic, {len(offers)} in the service",
            ),
            Check(
                "every notified offer's invitation was delivered on exactly one channel",
                all(len(channels_of.get(o["offer_id"], ())) == 1 for o in delivered),
                f"{sum(1 for o in delivered if len(channels_of.get(o['offer_id'], ())) != 1)}"
                " not exactly once",
            ),
            Check(
                "every notified offer that was revoked or expired has a delivered document"
                " saying so",
                not unsaid,
                f"{len(unsaid)} without, e.g. {unsaid[:2]}",
            ),
            Check(
                "every deadline printed on a delivered invitation (its sealed PDF, seal"
                " verified) equals the one enforced",
                printed.checked == len(delivered)
                and not (printed.differing or printed.unsealed or printed.missing),
                f"{printed.checked} of {len(delivered)} read; {len(printed.differing)} differ,"
                f" {len(printed.unsealed)} without a valid seal, {len(printed.missing)} missing",
            ),
            Check(
                "every accepted place is enrolled in VIIS (or refused by it with a reason)"
                " and its decision registered in the DVS",
                all(
                    o["enrolment"] in ("enrolled", "refused") and o["decision_number"]
                    for o in offers
                    if o["status"] == "accepted"
                ),
            ),
            Check(
                "no child was offered an institution it had declined",
                not declined_again,
                "; ".join(declined_again[:2]),
            ),
            Check(
                "no unconfirmed claim raised a child's priority",
                not unconfirmed,
                f"{len(unconfirmed)} ranked on an unconfirmed claim: {'; '.join(unconfirmed[:2])}",
            ),
            Check(
                "every authorised application was checked with the register, and each one"
                " refused is shown refused in the e-service with the register's reason",
                sum(report.authorisations.values()) == sum(self.authorised.values())
                and set(report.authorisations) <= {"verified", "refused"}
                and report.authorisations["refused"] == sum(seen.eservice_refused.values()),
                f"filed {sum(self.authorised.values())}, the hub {dict(report.authorisations)},"
                f" the e-service shows {dict(seen.eservice_refused)} refused",
            ),
            Check(
                "no seat left empty while a child waits for it",
                not free,
                "; ".join(free[:1]),
            ),
            Check(
                "no message dead-lettered for a fault of the hub",
                not any(d.reason == "handler_error" for d in seen.letters),
            ),
            Check("every service stopped cleanly", clean),
            Check(
                "the store reloaded equals the live state",
                store == [],
                "the service does not know its store" if store is None else "; ".join(store[:3]),
            ),
        ]

    async def _applications_on_topic(self) -> int:
        records = await read_topic(self.bootstrap, "vps.pii.applications.v1")
        ours = [json.loads(r.value) for r in records]
        return len(
            {
                m["application_id"]
                for m in ours
                if m.get("municipality") == self.code
                and m.get("event_type") == "ApplicationSubmitted"
            }
        )

    async def _offer_messages(self) -> list[Any]:
        topic = BY_NAME["allocation.offers.v1"]
        messages = [topic.parse(r.value) for r in await read_topic(self.bootstrap, topic.name)]
        return [m for m in messages if m.municipality == self.code]

    async def _receipts(self, offers: list[dict[str, Any]]) -> list[Any]:
        """The municipality's receipts of notices. A notice's receipt may come a little after
        the offer it is about changed (its DVS registration and sending follow the
        decision): read again for a while, until every notified offer's invitation and every
        notified offer that closed unaccepted has its document delivered."""
        receipts = BY_NAME["notify.receipts.v1"]
        deadline = time.monotonic() + min(self.scenario.timeout, 60.0)
        while True:
            found = [
                m
                for m in (
                    receipts.parse(r.value) for r in await read_topic(self.bootstrap, receipts.name)
                )
                if m.municipality == self.code
            ]
            if not _undelivered(offers, delivered_documents(found)) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(1)

    async def _notices(self) -> dict[str, SendNotification]:
        """The notices the allocation service sent for delivery, by document key."""
        requests = BY_NAME["notify.requests.v1"]
        found: dict[str, SendNotification] = {}
        for record in await read_topic(self.bootstrap, requests.name):
            m = requests.parse(record.value)
            if isinstance(m, SendNotification) and m.municipality == self.code and m.document:
                found.setdefault(m.document.document_key, m)
        return found

    async def _printed(
        self, offers: list[dict[str, Any]], notices: Mapping[str, SendNotification]
    ) -> Printed:
        """The deadline printed on each notified offer's invitation, read from the sealed
        document the DVS stored (the one delivered), its seal verified."""
        printed = Printed()
        dvs = str(self.local.dvs_url)
        wanted = [
            (o, notices.get(f"invitation:{o['offer_id']}")) for o in offers if o["respond_by"]
        ]
        limit = asyncio.Semaphore(16)

        async def read(client: httpx.AsyncClient, number: str) -> bytes:
            async with limit:
                answer = await client.get(f"/v1/documents/{quote(number, safe='')}/content")
                answer.raise_for_status()
                return answer.content

        async with httpx.AsyncClient(base_url=dvs, headers=NO_FAULT, timeout=30) as client:
            contents = await asyncio.gather(
                *(
                    read(client, n.document.registration_number)
                    for _, n in wanted
                    if n is not None and n.document is not None
                ),
                return_exceptions=True,
            )
        found = iter(contents)
        for offer, notice in wanted:
            if notice is None or notice.document is None:
                printed.missing.append(offer["offer_id"])
                continue
            content = next(found)
            if isinstance(content, BaseException):
                printed.missing.append(offer["offer_id"])
                continue
            try:
                opened = open_edoc(content)
                fields = read_fields(pdf_text(opened.content))
            except ValueError:
                printed.unsealed.append(offer["offer_id"])
                continue
            printed.checked += 1
            enforced = format_date(date.fromisoformat(offer["respond_by"]))
            if (
                fields.get("respond_by") != enforced
                or fields.get("registration_number") != notice.document.registration_number
            ):
                printed.differing.append(offer["offer_id"])
        return printed

    async def _retries(self) -> int:
        """Calls to external systems the services retried, from their ``/metrics``."""
        assert self._api is not None
        answer = await self._api.get(f"http://127.0.0.1:{self.local.health_port}/metrics")
        answer.raise_for_status()
        return int(
            sum(
                sample.value
                for family in text_string_to_metric_families(answer.text)
                for sample in family.samples
                if sample.name == "hub_calls_retried_total"
            )
        )

    # --- helpers --------------------------------------------------------------------------

    async def _get(self, path: str, **params: str) -> Any:
        """The allocation API's JSON answer to ``GET path``."""
        assert self._api is not None
        answer = await self._api.get(path, params=params)
        answer.raise_for_status()
        return answer.json()

    async def _read_health(self) -> dict[str, Any]:
        self.health = await self._get("/health")
        return self.health

    async def _alive(self) -> None:
        """Raise :class:`DemoError` if a service has stopped (it stops the others): from
        the services' ``/health``, read at most twice a second."""
        assert self.running is not None and self._api is not None
        if self.running.done():
            raise DemoError("the services stopped (see the log above)")
        if time.monotonic() - self._checked_alive < 0.5:
            return
        self._checked_alive = time.monotonic()
        url = f"http://127.0.0.1:{self.local.health_port}/health"
        try:
            services = (await self._api.get(url)).json()["services"]
        except (httpx.HTTPError, ValueError, KeyError):
            return  # not serving yet, or stopping: the task above tells
        failed = [s["service"] for s in services if s["status"] in ("failed", "stopped")]
        if failed:
            raise DemoError(f"service stopped: {', '.join(failed)} (see the log above)")

    async def _until(
        self,
        done: Callable[[], Awaitable[bool]],
        what: str,
        progress: Callable[[], str] | None = None,
    ) -> None:
        deadline = time.monotonic() + self.scenario.timeout
        shown = time.monotonic()
        while True:
            await self._alive()
            try:
                if await done():
                    return
            except httpx.TransportError:
                pass  # the API is not serving yet: its service is starting
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {self.scenario.timeout:.0f}s waiting for {what}")
            if progress is not None and time.monotonic() - shown >= 5:
                shown = time.monotonic()
                self.out(f"  … {progress()}")
            await asyncio.sleep(0.2)

    async def _with_progress(self, work: Awaitable[Any], progress: Callable[[], str]) -> Any:
        task = asyncio.ensure_future(work)
        while True:
            done, _ = await asyncio.wait({task}, timeout=5)
            if done:
                try:
                    return task.result()
                except ParentsError as exc:
                    raise DemoError(str(exc)) from exc
            self.out(f"  … {progress()}")


@dataclass
class Printed:
    """The invitations of the notified offers, read back from the sealed documents."""

    checked: int = 0
    differing: list[str] = field(default_factory=list)
    """Offers whose printed deadline (or registration number) is not the enforced one."""
    unsealed: list[str] = field(default_factory=list)
    """Offers whose document does not open with a valid seal."""
    missing: list[str] = field(default_factory=list)
    """Offers with no sealed invitation in the DVS."""


NOTIFYING_RECEIPT = {
    "e_adrese": "NotificationSent",
    "email": "NotificationSent",
    "letter": "NotificationPosted",
}
"""The receipt that says a notice was delivered on a channel (sent; a letter: posted)."""


def delivered_documents(receipts: list[Any]) -> dict[str, tuple[str, str]]:
    """Document key → (notification id, channel) of every notice delivered."""
    found: dict[str, tuple[str, str]] = {}
    for m in receipts:
        if m.document_key and NOTIFYING_RECEIPT.get(m.channel) == m.event_type:
            found.setdefault(m.document_key, (str(m.notification_id), m.channel))
    return found


def _undelivered(
    offers: list[dict[str, Any]], delivered: Mapping[str, tuple[str, str]]
) -> list[str]:
    """Notified offers without their invitation delivered, or closed unaccepted without the
    document that says so (``delivered``: :func:`delivered_documents`)."""
    missing = []
    for o in offers:
        if not o["respond_by"]:
            continue
        oid = o["offer_id"]
        if f"invitation:{oid}" not in delivered or (
            o["status"] in ("revoked", "expired")
            and not (f"revocation:{oid}" in delivered or f"annulment:{oid}" in delivered)
        ):
            missing.append(oid)
    return missing


@dataclass
class Observed:
    """What the demo read from the running hub at the end of the season."""

    health: dict[str, Any] = field(default_factory=dict)
    offers: list[dict[str, Any]] = field(default_factory=list)
    institutions: list[dict[str, Any]] = field(default_factory=list)
    unplaced: dict[str, int] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    topic: list[Any] = field(default_factory=list)
    """The municipality's messages on the offers topic."""
    applications: int = 0
    """Applications of the municipality on the applications topic."""
    receipts: list[Any] = field(default_factory=list)
    """The municipality's receipts on ``notify.receipts.v1``."""
    notices: dict[str, Any] = field(default_factory=dict)
    """The notices sent for delivery, by document key."""
    documents: dict[str, Any] = field(default_factory=dict)
    """The DVS's documents by type: registered, with content."""
    printed: Printed = field(default_factory=Printed)
    letters: list[DeadLetter] = field(default_factory=list)
    eservice_refused: dict[str, int] = field(default_factory=dict)
    """Applications the e-service shows refused by the hub, by reason."""
    error: str | None = None
    """Why the demo could not read all of it."""


def _refusal(answer: httpx.Response) -> str:
    """The e-service's machine reason for refusing a request (``accepted`` if it did not)."""
    if answer.is_success:
        return "accepted"
    body = answer.json()
    found = body.get("error") or body.get("detail", {}).get("error")
    return str(found or answer.status_code)


def cascade_steps(messages: list[Any]) -> Counter[int]:
    """Offers by cascade step: 0 for the round's, 1 + the step of the offer whose freed seat
    (declined, expired) caused it. Read from the offers topic: an offer and the closing of
    the offer that freed its seat share a causation id."""

    def cause(m: Any) -> str:
        # An expiry has no causing message: its messages share a correlation id of their own.
        return str(m.causation_id if m.causation_id is not None else m.correlation_id)

    freed: dict[str, list[str]] = {}
    for m in messages:
        if isinstance(m, (OfferDeclined, OfferExpired)):
            freed.setdefault(cause(m), []).append(str(m.offer_id))
    made = {str(m.offer_id): cause(m) for m in messages if isinstance(m, OfferMade)}
    step: dict[str, int] = {}

    def step_of(offer_id: str, seen: frozenset[str] = frozenset()) -> int:
        if offer_id not in step:
            before = [o for o in freed.get(made.get(offer_id, ""), []) if o not in seen]
            seen |= {offer_id}
            step[offer_id] = 1 + max((step_of(o, seen) for o in before), default=-1)
        return step[offer_id]

    for offer_id in made:
        step_of(offer_id)
    return Counter(step[o] for o in made)


def unplaced(reasons: Mapping[str, int]) -> Counter[str]:
    """Children without an accepted place, by why, as the report tells it (from the
    allocation API's ``/unplaced``, which counts them by a reason code)."""
    told: Counter[str] = Counter()
    for code, n in reasons.items():
        told[_WHY.get(code, code)] += n
    return told


_WHY = {
    "expired": "did not answer: offer expired",
    "declined": "declined the offer made",
    "outranked": "every group listed is full of children with a higher priority",
    "no_fitting_group": "no group for the child's age or language at the institutions listed",
    "not_yet_due": "wants to start after this round",
    "held": "keeps the place it attends now (waits for one ranked higher)",
    "refused": "application refused: the register did not confirm its authorisation",
    "unverified": "left out of the list: a register did not answer the checks in time",
}


def _print_report(report: SeasonReport, out: Callable[[str], None]) -> None:
    out("")
    out(f"Season report — {report.municipality}")
    s = report.scenario
    out(
        f"  applications {report.applications}; offers {report.offers}"
        f" (round {report.round_offers}, cascades {report.offers - report.round_offers});"
        f" the clock moved {report.clock_moves} times for silent offers to expire"
    )
    o, a = report.outcomes, report.answers
    out(
        f"  accepted {o['accepted']}, declined {o['declined']}, expired {o['expired']},"
        f" revoked {o['revoked']}, still open {o[LIVE]};"
        f" parents: accept {a['accept']}, decline {a['decline']}, too late {a['too_late']}"
        f" (scenario: {s.accept:.0%} accept, {s.decline:.0%} decline, the rest silent)"
    )
    steps = ", ".join(f"{k}: {v}" for k, v in sorted(report.cascade_steps.items()))
    out(f"  offers by cascade step (0 = the round): {steps or '-'}")
    if report.institutions:
        out("  seats filled per institution (accepted / seats):")
        cells = [f"{i} {t}/{n}" for i, n, t in report.institutions]
        for row in range(0, len(cells), 5):
            out("    " + "  ".join(f"{c:<18}" for c in cells[row : row + 5]).rstrip())
    total = sum(report.unplaced.values())
    out(f"  children without a place: {total}")
    for why, n in report.unplaced.most_common():
        out(f"    {n:>6}  {why}")
    shown = ", ".join(
        f"{_CHANNELS.get(c, c)} ({_RULES.get(c, '?')}) {n}"
        for c, n in report.channels.most_common()
    )
    out(f"  deadlines by channel rule: {shown or '-'}")
    documents = ", ".join(
        f"{_KINDS.get(k, k)} {registered}/{stored}"
        for k, (registered, stored) in report.documents.items()
    )
    out(f"  documents registered in the DVS / sealed and stored there, by kind: {documents or '-'}")
    out(f"  deadlines read back from the sealed invitations: {report.deadlines_read}")
    out(
        f"  faults the simulators injected: {report.faults_injected};"
        f" calls the hub retried: {report.retries}"
    )
    out(
        f"  VIIS enrolments {report.enrolled}, refused {report.enrollment_refused}"
        " (already enrolled elsewhere)"
    )
    c = report.claims
    out(
        f"  declared priority grounds: confirmed {c['confirmed']}, rejected {c['rejected']},"
        f" pending {c['pending']} (only confirmed ones rank)"
    )
    out(
        f"  facts verified again before the list: {report.rechecked} children,"
        f" {report.facts_changed} facts changed, {report.facts_unverified} children left out"
        " unverified"
    )
    refused = ", ".join(f"{k} {v}" for k, v in sorted(report.intake_refused.items()))
    out(f"  refused by the e-service before reaching the hub, by reason: {refused or '-'}")
    checked = ", ".join(f"{k} {v}" for k, v in sorted(report.authorisations.items()))
    out(f"  applications filed under an authorisation, by the register's answer: {checked or '-'}")
    letters = ", ".join(f"{k} {v}" for k, v in report.dead_letters.most_common())
    out(f"  dead letters: {sum(report.dead_letters.values())}{f' ({letters})' if letters else ''}")
    out("  invariants:")
    for check in report.checks:
        mark = "PASS" if check.passed else "FAIL"
        detail = f" — {check.detail}" if check.detail and not check.passed else ""
        out(f"    {mark}  {check.name}{detail}")
    out("")
    verdict = "PASS" if report.passed else "FAIL"
    reason = f": {report.failure}" if report.failure else ""
    out(f"{verdict}{reason} ({report.seconds:.1f}s)")
    sys.stdout.flush()


_CHANNELS = {"e_adrese": "e-adrese", "email": "e-mail", "sms": "SMS", "letter": "letter"}
_RULES = {
    "e_adrese": "2nd working day after sending",
    "email": "2nd working day after sending",
    "letter": "7th day after posting",
}
_KINDS = {
    "invitation": "invitations",
    "offer_revocation": "revocations",
    "annulment": "annulments",
    "decision": "admission decisions",
    "refusal": "refusals",
    "admission_list": "admission lists",
}

__all__ = ["DemoError", "Scenario", "SeasonReport", "run_demo"]
