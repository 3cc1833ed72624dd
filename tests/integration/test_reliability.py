"""The reliability core on the real embedded broker: bad input, a flaky external system,
replay of dead letters, metrics, a graceful stop, and a consumer killed again and again."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hub.embedded import free_port
from hub.http import serve
from hub.reliability.consumer import RetrySchedule
from hub.reliability.deadletters import DeadLetter, dead_letters, read_topic, replay
from hub.reliability.metrics import Metrics, metrics_app
from hub.reliability.service import RuntimeOptions, ServiceRunner
from hub.reliability.store import unpublished
from hub.settings import Settings
from schemas.applications import ApplicationSubmitted
from schemas.topics import retry_topic
from simulators.municipality import SyntheticMunicipality
from tests.conftest import eventually
from tests.reliability_app import client_for, spec
from tests.vps_feed import application_message

pytestmark = pytest.mark.real_broker
ROOT = Path(__file__).resolve().parents[2]
FAST_GROUPS = {"HUB_SESSION_TIMEOUT": "6", "HUB_HEARTBEAT_INTERVAL": "1"}
"""A killed consumer's partitions move on after 6 s instead of 10."""


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Lane:
    """Topics of one test: its own input, output and retry topic, so tests never mix."""

    service: str
    input: str
    output: str


@pytest.fixture
async def lane(kafka_settings: Settings, request: pytest.FixtureRequest) -> Lane:
    tag = f"{request.node.name[:20].replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}".lower()
    found = Lane(service=f"t-{tag}", input=f"test.{tag}.in.v1", output=f"test.{tag}.out.v1")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap_servers)
    await admin.start()
    try:
        names = (found.input, found.output, retry_topic(found.service))
        await admin.create_topics(
            [NewTopic(n, num_partitions=3, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()
    return found


def applications(count: int, seed: int = 1) -> list[ApplicationSubmitted]:
    town = SyntheticMunicipality("riga", seed=seed, children=count, institutions=5)
    return [application_message("riga", child) for child in town.children]


async def produce(bootstrap: str, topic: str, values: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=key) for key, value in values]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def encoded(messages: list[ApplicationSubmitted]) -> list[tuple[bytes | None, bytes]]:
    return [(m.child_ref.encode(), m.model_dump_json().encode()) for m in messages]


def unsent(data_dir: Path, service: str) -> int:
    return unpublished(data_dir / f"{service}.sqlite3")


def applied(data_dir: Path, service: str) -> dict[str, int]:
    """event_id → times applied, read from the service's database by another connection."""
    path = data_dir / f"{service}.sqlite3"
    if not path.exists():
        return {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        try:
            return dict(db.execute("SELECT event_id, times FROM applied"))
        except sqlite3.OperationalError:  # table not created yet
            return {}


async def outputs(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in await read_topic(bootstrap, topic)]


async def letters_of(bootstrap: str, service: str) -> list[DeadLetter]:
    return [d for d in await dead_letters(bootstrap) if d.service == service]


@asynccontextmanager
async def running(runner: ServiceRunner) -> AsyncIterator[asyncio.Task[bool]]:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(runner.ready.wait(), 30)
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def runner_for(
    settings: Settings,
    lane: Lane,
    tmp: Path,
    *,
    http: str | None = None,
    timeout: float = 0.3,
    attempts: int = 3,
    **options: Any,
) -> ServiceRunner:
    """A runner of the test service; with ``http`` its handler calls that endpoint."""
    metrics = Metrics.create()  # the runner counts the client's retries in it
    client = client_for(http, timeout=timeout, attempts=attempts) if http else None
    return ServiceRunner(
        spec(lane.service, lane.input, lane.output, client),
        settings.derive(data_dir=tmp, session_timeout=6, heartbeat_interval=1),
        settings.bootstrap_servers or "",
        options=RuntimeOptions(**options),
        metrics=metrics,
    )


# --------------------------------------------------------------------------- bad input


def fuzzed(valid: list[ApplicationSubmitted], count: int, rnd: random.Random) -> Iterator[bytes]:
    """Bad records of every kind: bytes, truncated JSON, wrong types, bad codes, unknown types."""
    for n in range(count):
        good = json.loads(valid[n % len(valid)].model_dump_json())
        kind = n % 6
        if kind == 0:
            yield rnd.randbytes(rnd.randint(0, 200))
        elif kind == 1:
            text = json.dumps(good)
            yield text[: rnd.randint(1, len(text) - 1)].encode()
        elif kind == 2:
            good["institutions"] = 42
            yield json.dumps(good).encode()
        elif kind == 3:
            good["child_personal_code"] = "161175-19996"  # wrong check digit
            yield json.dumps(good).encode()
        elif kind == 4:
            good["event_type"] = "ApplicationTeleported"
            yield json.dumps(good).encode()
        else:
            good["guardians"][0]["personal_code"] = "320000-00000" if rnd.random() < 0.5 else "99"
            good["child_birth_date"] = "not a date"
            yield json.dumps(good).encode()


@pytest.mark.filterwarnings("ignore::schemas.values.PersonalCodeChecksumWarning")
async def test_bad_input_is_dead_lettered_and_every_valid_message_applied(
    kafka_settings: Settings, lane: Lane, tmp_path: Path
) -> None:
    rnd = random.Random(5)
    valid = applications(400, seed=5)
    bad = list(fuzzed(valid, 1200, rnd))
    mixed: list[tuple[bytes | None, bytes]] = [*encoded(valid), *((None, b) for b in bad)]
    rnd.shuffle(mixed)
    runner = runner_for(kafka_settings, lane, tmp_path, batch_size=100)
    async with running(runner) as task:
        await produce(kafka_settings.bootstrap_servers or "", lane.input, mixed)
        await eventually(
            lambda: len(applied(tmp_path, lane.service)) == len(valid),
            timeout=60,
            what="valid applied",
        )
        await eventually(
            lambda: (
                runner.metrics.value(
                    runner.metrics.dead_lettered, service=lane.service, reason="invalid_message"
                )
                == len(bad)
            ),
            timeout=30,
            what="bad dead-lettered",
        )
        assert not task.done(), "the service must keep running"
    letters = await letters_of(kafka_settings.bootstrap_servers or "", lane.service)
    assert len(letters) == len(bad)
    assert {d.reason for d in letters} == {"invalid_message"}
    assert Counter(d.value for d in letters) == Counter(bad)
    assert all(d.source_topic == lane.input and d.error for d in letters)
    assert all("161175-19996" not in d.error for d in letters)  # no personal code in reasons
    assert set(applied(tmp_path, lane.service).values()) == {1}


# --------------------------------------------------------------------------- flaky system


class FlakyServer:
    """An HTTP endpoint that fails often: 30% 5xx, 10% 429, 10% too slow; refs ending in
    ``-x`` get 404 until fixed. Counts requests per child."""

    def __init__(self, seed: int = 3) -> None:
        self.rnd = random.Random(seed)
        self.requests: Counter[str] = Counter()
        self.fixed = False
        self.port = free_port()

        async def check(request: Request) -> JSONResponse:
            ref = (await request.json())["child_ref"]
            self.requests[ref] += 1
            if ref.endswith("-x") and not self.fixed:
                return JSONResponse({"error": "unknown child"}, status_code=404)
            roll = self.rnd.random()
            if roll < 0.3:
                return JSONResponse({"error": "busy"}, status_code=503)
            if roll < 0.4:
                return JSONResponse(
                    {"error": "slow down"}, status_code=429, headers={"Retry-After": "0"}
                )
            if roll < 0.5:
                await asyncio.sleep(1.0)  # beyond the client's timeout
            return JSONResponse({"ok": True})

        self.app = Starlette(routes=[Route("/check", check, methods=["POST"])])

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        task = asyncio.create_task(server.serve())
        await eventually(lambda: server.started, what="flaky server up")
        try:
            yield f"http://127.0.0.1:{self.port}"
        finally:
            server.should_exit = True
            await task


def with_refs(messages: list[ApplicationSubmitted], refused: int) -> list[ApplicationSubmitted]:
    """The first ``refused`` children get refs the server refuses (ending in -x)."""
    return [
        m.model_copy(update={"child_ref": f"{m.child_ref}-x"}) if n < refused else m
        for n, m in enumerate(messages)
    ]


async def test_a_flaky_external_system_loses_nothing_and_4xx_is_not_retried(
    kafka_settings: Settings, lane: Lane, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flaky = FlakyServer()
    messages = with_refs(applications(150, seed=7), refused=10)
    async with flaky.serving() as url:
        runner = runner_for(
            kafka_settings,
            lane,
            tmp_path,
            http=url,
            batch_size=50,
            schedule=RetrySchedule(max_attempts=3, first_delay=0.05, max_delay=0.2),
        )
        bootstrap = kafka_settings.bootstrap_servers or ""
        async with running(runner):
            await produce(bootstrap, lane.input, encoded(messages))

            def settled() -> bool:
                done = len(applied(tmp_path, lane.service))
                dead = sum(
                    runner.metrics.value(
                        runner.metrics.dead_lettered, service=lane.service, reason=r
                    )
                    for r in ("refused", "retries_exhausted")
                )
                return done + dead == len(messages)

            await eventually(settled, timeout=90, what="every request applied or dead-lettered")
    letters = await letters_of(bootstrap, lane.service)
    done = applied(tmp_path, lane.service)
    by_id = {str(m.event_id): m for m in messages}
    lost = set(by_id) - set(done) - {json.loads(d.value)["event_id"] for d in letters}
    assert not lost
    assert set(done.values()) == {1}
    refused = [d for d in letters if d.reason == "refused"]
    assert len(refused) == 10 and all(
        json.loads(d.value)["child_ref"].endswith("-x") for d in refused
    )
    for m in messages[:10]:
        assert flaky.requests[m.child_ref] == 1, "a 4xx answer must not be retried"
    retried = runner.metrics.value(runner.metrics.retried, service=lane.service)
    assert retried > 0 and sum(flaky.requests.values()) > len(messages)  # failures were retried
    assert runner.metrics.value(runner.metrics.parked, service=lane.service) > 0
    outs = await outputs(bootstrap, lane.output)
    assert {o["causation_id"] for o in outs} == set(done)
    with capsys.disabled():
        reasons = Counter(d.reason for d in letters)
        print(
            f"\nflaky system: {len(messages)} requests, {sum(flaky.requests.values())} HTTP calls,"
            f" {len(done)} applied, dead letters {dict(reasons)}"
        )


async def test_fixed_dead_letters_replayed_are_applied_once(
    kafka_settings: Settings, lane: Lane, tmp_path: Path
) -> None:
    flaky = FlakyServer()
    flaky.rnd = random.Random(0)
    messages = with_refs(applications(12, seed=9), refused=4)
    bootstrap = kafka_settings.bootstrap_servers or ""
    async with flaky.serving() as url:
        runner = runner_for(
            kafka_settings, lane, tmp_path, http=url, timeout=2.0, attempts=10, batch_size=20
        )
        async with running(runner):
            await produce(bootstrap, lane.input, encoded(messages))
            await eventually(
                lambda: len(applied(tmp_path, lane.service)) == 8, timeout=60, what="8 applied"
            )
            await eventually(
                lambda: (
                    runner.metrics.value(
                        runner.metrics.dead_lettered, service=lane.service, reason="refused"
                    )
                    == 4
                ),
                what="4 refused",
            )
            letters = await letters_of(bootstrap, lane.service)
            assert len(letters) == 4
            flaky.fixed = True  # the source is fixed
            assert await replay(letters, bootstrap) == 4
            await eventually(
                lambda: len(applied(tmp_path, lane.service)) == 12,
                timeout=60,
                what="replayed applied",
            )
            assert await replay(letters, bootstrap) == 4  # a second replay changes nothing
            await eventually(
                lambda: runner.metrics.value(runner.metrics.duplicates, service=lane.service) == 4,
                what="second replay skipped",
            )
    assert set(applied(tmp_path, lane.service).values()) == {1}


async def test_metrics_endpoint_serves_the_counters(
    kafka_settings: Settings, lane: Lane, tmp_path: Path
) -> None:
    port = free_port()
    runner = runner_for(kafka_settings, lane, tmp_path)
    stop = asyncio.Event()
    metrics = asyncio.create_task(serve(metrics_app(runner.metrics), stop, port=port))
    try:
        async with running(runner):
            await produce(
                kafka_settings.bootstrap_servers or "", lane.input, encoded(applications(5))
            )
            await eventually(lambda: len(applied(tmp_path, lane.service)) == 5, what="applied")
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        stop.set()
        await metrics
    assert f'hub_messages_handled_total{{service="{lane.service}"}} 5.0' in text
    assert "hub_outbox_backlog" in text


# --------------------------------------------------------------------------- processes


def start_service(kafka: str, lane: Lane, data_dir: Path, **env: str) -> asyncio.subprocess.Process:
    return asyncio.create_subprocess_exec(  # type: ignore[return-value]
        sys.executable,
        "-m",
        "tests.reliability_app",
        "--bootstrap",
        kafka,
        "--data-dir",
        str(data_dir),
        "--name",
        lane.service,
        "--input",
        lane.input,
        "--output",
        lane.output,
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("HUB_")}, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_sigterm_stops_cleanly_and_loses_nothing(
    kafka_settings: Settings, lane: Lane, tmp_path: Path
) -> None:
    bootstrap = kafka_settings.bootstrap_servers or ""
    messages = applications(2000, seed=11)
    await produce(bootstrap, lane.input, encoded(messages))
    env = {
        **FAST_GROUPS,
        "HUB_BATCH_SIZE": "50",
        "HUB_SQLITE_SYNCHRONOUS": "FULL",
        "HUB_SHUTDOWN_TIMEOUT": "15",
    }
    process = await start_service(bootstrap, lane, tmp_path, **env)
    await eventually(
        lambda: len(applied(tmp_path, lane.service)) > 100, timeout=60, what="progress"
    )
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == 0
    assert time.monotonic() - started < 15
    partial = len(applied(tmp_path, lane.service))
    assert unsent(tmp_path, lane.service) == 0, "a clean stop publishes the whole outbox"
    process = await start_service(bootstrap, lane, tmp_path, **env)
    await eventually(
        lambda: len(applied(tmp_path, lane.service)) == len(messages),
        timeout=120,
        what="all applied",
    )
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == 0
    assert set(applied(tmp_path, lane.service).values()) == {1}
    assert unsent(tmp_path, lane.service) == 0
    assert partial < len(messages)


@pytest.mark.slow
async def test_killed_consumer_applies_every_event_exactly_once(
    kafka_settings: Settings, lane: Lane, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """10,000 events; the consumer is SIGKILLed mid-stream at least five times."""
    bootstrap = kafka_settings.bootstrap_servers or ""
    messages = applications(10_000, seed=13)
    await produce(bootstrap, lane.input, encoded(messages))
    env = {**FAST_GROUPS, "HUB_BATCH_SIZE": "100", "HUB_SQLITE_SYNCHRONOUS": "FULL"}
    rnd = random.Random(17)
    started = time.monotonic()
    at_kill: list[int] = []  # events applied when each kill landed
    for share in (0.1, 0.28, 0.46, 0.64, 0.82):
        process = await start_service(bootstrap, lane, tmp_path, **env)
        target = int(len(messages) * (share + rnd.uniform(-0.03, 0.03)))
        await eventually(
            lambda t=target: len(applied(tmp_path, lane.service)) >= t, timeout=120, what="progress"
        )
        process.send_signal(signal.SIGKILL)
        await process.wait()
        at_kill.append(len(applied(tmp_path, lane.service)))
    process = await start_service(bootstrap, lane, tmp_path, **env)
    await eventually(
        lambda: len(applied(tmp_path, lane.service)) == len(messages),
        timeout=180,
        what="all applied",
    )

    inputs = {str(m.event_id) for m in messages}

    async def all_derived() -> bool:
        return {o["causation_id"] for o in await outputs(bootstrap, lane.output)} >= inputs

    await eventually(all_derived, timeout=120, what="every derived event published")
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == 0
    elapsed = time.monotonic() - started

    state = applied(tmp_path, lane.service)
    assert set(state) == inputs and set(state.values()) == {1}, "each effect applied exactly once"
    derived = await outputs(bootstrap, lane.output)
    by_cause: dict[str, set[str]] = {}
    for o in derived:
        by_cause.setdefault(o["causation_id"], set()).add(o["event_id"])
    assert set(by_cause) == inputs
    assert all(len(ids) == 1 for ids in by_cause.values()), "one derived event per input"
    raw_duplicates = len(derived) - len(by_cause)
    with capsys.disabled():
        print(
            f"\ncrash test: {len(messages):,} events, {len(at_kill)} SIGKILLs, {elapsed:.1f} s,"
            f" {len(derived):,} derived records on the topic, {raw_duplicates:,} raw duplicates"
        )
    assert len(at_kill) == 5
    assert all(0 < done < len(messages) for done in at_kill), f"each kill mid-stream: {at_kill}"
