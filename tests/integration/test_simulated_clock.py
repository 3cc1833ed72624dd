"""The simulated clock across processes: `hub clock advance` moves the time of a `hub run`
process and of the simulators (`hub simulate`) on that clock, and a process killed and
started again resumes at the moved time."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.cli import main
from hub.clock import SimulatedClock, advance_clock, follow_clock
from hub.embedded import EmbeddedBroker, free_port
from hub.kafka import ensure_topics
from hub.settings import Settings
from simulators.plugin import SYSTEMS
from simulators.process import ServiceProcess, SimulatorsProcess
from tests.conftest import eventually, run_hub

pytestmark = pytest.mark.real_broker

SLACK = timedelta(minutes=1)
"""How far a reading may be from the expected time: process start-up and polling, not days."""


def _environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    return (
        env | {"HUB_DATA_DIR": str(tmp_path)} | {f"HUB_{k.upper()}": v for k, v in settings.items()}
    )


async def _health(http: httpx.AsyncClient, process: ServiceProcess) -> dict[str, Any] | None:
    """The process's ``/health`` (200 or 503: both carry the clock), None while it does not
    answer; fails the test if the process has exited."""
    if message := process.exited():
        pytest.fail(message)
    try:
        answer = await http.get(process.health_url + "/health")
    except httpx.HTTPError:
        return None
    return answer.json()  # type: ignore[no-any-return]


def _ahead(health: dict[str, Any]) -> timedelta:
    return datetime.fromisoformat(health["clock"]) - datetime.now(UTC)


async def _post_ahead(http: httpx.AsyncClient, simulators: SimulatorsProcess) -> timedelta:
    """How far ahead of the system clock the post simulator accepts a new letter."""
    letter = {
        "recipient_name": "Anna Bērziņa",
        "address_code": "105163882",
        "subject": "Piedāvājums",
        "text": "Vēstule",
        "reference": "OF-1",
    }
    answer = await http.post(
        simulators.urls["letter"] + "/v1/letters",
        json=letter,
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert answer.status_code == 201, answer.text
    return datetime.fromisoformat(answer.json()["accepted_at"]) - datetime.now(UTC)


async def test_hub_clock_advance_moves_a_process_which_resumes_there_after_a_kill(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    bootstrap = kafka_settings.bootstrap_servers or ""
    municipality = f"t{uuid.uuid4().hex[:8]}"  # the session broker's clock topic is shared
    process = ServiceProcess(
        bootstrap,
        tmp_path,
        municipality,
        service="gis-adapter",  # nothing answers at HUB_GIS_URL: it starts and waits anyway
        clock="simulated",
        simulation="true",
        session_timeout=3,
        heartbeat_interval=1,
    )
    operator = _environment(
        tmp_path, bootstrap_servers=bootstrap, municipality=municipality, simulation="true"
    )
    on_the_clock = kafka_settings.derive(
        municipality=municipality,
        simulation=True,
        clock="simulated",
        smtp_port=free_port(),
        **{f"{s}_url": f"http://127.0.0.1:{free_port()}" for s in SYSTEMS},
    )
    seen: dict[str, Any] = {}

    async def answered() -> bool:
        seen["health"] = await _health(http, process)
        return seen["health"] is not None

    async def moved() -> bool:
        return await answered() and _ahead(seen["health"]) > timedelta(days=20) - SLACK

    async def posted_later() -> bool:
        return await _post_ahead(http, simulators) > timedelta(days=20) - SLACK

    async with (
        httpx.AsyncClient(timeout=2) as http,
        SimulatorsProcess(on_the_clock, tmp_path, sim_children=50) as simulators,
    ):
        try:
            await process.start()
            await eventually(answered, timeout=20, what="the process's /health")
            assert seen["health"]["clock_mode"] == "simulated"
            assert abs(_ahead(seen["health"])) < SLACK  # nobody moved this municipality's clock
            assert abs(await _post_ahead(http, simulators)) < SLACK

            code, out, err = await run_hub(operator, "clock", "advance", "20d", "--by", "tester")
            assert code == 0, err
            assert f"simulated clock of {municipality} moved to" in out
            await eventually(moved, timeout=10, what="the process's clock 20 days ahead")
            assert _ahead(seen["health"]) < timedelta(days=20) + SLACK
            # The simulators follow the same clock: the post takes letters 20 days later too.
            await eventually(posted_later, timeout=10, what="the post's clock 20 days ahead")
            assert await _post_ahead(http, simulators) < timedelta(days=20) + SLACK

            await process.kill()
            seen.clear()
            await process.start()
            await eventually(answered, timeout=20, what="the restarted process's /health")
            # The first answer already reads the moved time: it caught up before serving.
            ahead = _ahead(seen["health"])
            assert timedelta(days=20) - SLACK < ahead < timedelta(days=20) + SLACK

            code, out, _ = await run_hub(operator, "clock", "show")
            assert code == 0 and "20d" in out and "last by tester" in out

            # The follower stops with the services: SIGTERM is a clean stop.
            assert await process.stop(timeout=30) == 0, process.exited()
        finally:
            await process.close()


def test_hub_clock_refuses_to_move_back(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    municipality = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("HUB_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers or "")
    monkeypatch.setenv("HUB_MUNICIPALITY", municipality)
    monkeypatch.setenv("HUB_SIMULATION", "true")
    assert main(["clock", "set", "2100-01-01T00:00+00:00", "--by", "tester"]) == 0
    assert "moved to 2100-01-01T00:00:00+00:00" in capsys.readouterr().out
    assert main(["clock", "set", "2099-12-31T00:00+00:00"]) == 2
    err = capsys.readouterr().err
    assert "only moves forward" in err and len(err.strip().splitlines()) == 1
    assert main(["clock", "advance", "1d"]) == 0  # forward from 2100, not from now
    assert "moved to 2100-01-02" in capsys.readouterr().out


async def test_hub_run_refuses_a_simulated_clock_outside_a_simulation(tmp_path: Path) -> None:
    env = _environment(tmp_path, clock="simulated", bootstrap_servers="127.0.0.1:1")
    code, _, err = await run_hub(env, "run", "gis-adapter")
    assert code == 2
    assert "HUB_CLOCK=simulated needs HUB_SIMULATION=true" in err
    assert len(err.strip().splitlines()) == 1


async def test_a_process_started_before_the_clock_topic_exists_follows_it_once_it_does(
    tmp_path: Path,
) -> None:
    """As the demo's simulators do: they start before the demo creates the topics."""
    async with EmbeddedBroker(log_dir=tmp_path) as broker:  # a broker without the topic
        clock, stop = SimulatedClock(), asyncio.Event()
        following = asyncio.create_task(
            follow_clock(clock, broker.bootstrap, "riga", stop, retry_after=0.2)
        )
        try:
            await asyncio.sleep(1.5)  # it has looked for the topic, and looks again
            assert not following.done()
            settings = Settings(bootstrap_servers=broker.bootstrap, data_dir=tmp_path)
            await ensure_topics(settings, broker.bootstrap)
            await advance_clock(
                broker.bootstrap, "riga", by=timedelta(days=20), requested_by="tester"
            )
            await eventually(
                lambda: clock.offset >= timedelta(days=20), timeout=15, what="the move followed"
            )
        finally:
            stop.set()
            await asyncio.wait_for(following, 10)
