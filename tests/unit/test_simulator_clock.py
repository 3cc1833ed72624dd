"""The simulators of one process keep the time they are given: moving the simulated clock
that ``hub simulate`` follows moves what every simulator stamps on its answers; and the
simulators process is started on the clock of the settings it is given."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from hub.clock import SimulatedClock
from hub.settings import Settings
from simulators.faults import FaultInjection
from simulators.messages import application_form
from simulators.municipality import SyntheticMunicipality
from simulators.plugin import SYSTEMS, simulator_apps
from simulators.process import clock_settings

SLACK = timedelta(minutes=1)
MOVE = timedelta(days=20)


def _town() -> SyntheticMunicipality:
    return SyntheticMunicipality("riga", seed=1, children=5, institutions=2, admission_year=2026)


async def _post(app: FaultInjection, path: str, body: object, key: str, field: str) -> datetime:
    """POST ``body`` to ``app`` in process (``key``: its idempotency key, if it takes one)
    and read the answer's time ``field``."""
    transport = httpx.ASGITransport(app=app)
    headers = {"Idempotency-Key": key} if key else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        answer = await http.post(path, json=body, headers=headers)
    assert answer.status_code == 201, (path, answer.text)
    return datetime.fromisoformat(answer.json()[field])


async def _health_clocks(apps: Mapping[str, FaultInjection]) -> dict[str, datetime]:
    """The time each simulator that keeps one tells on ``/health``."""
    told: dict[str, datetime] = {}
    for system, app in apps.items():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
            health = (await http.get("/health")).json()
        if "clock" in health:
            told[system] = datetime.fromisoformat(health["clock"])
    return told


async def _stamps(
    apps: Mapping[str, FaultInjection], town: SyntheticMunicipality, n: int
) -> dict[str, datetime]:
    """The time each simulator puts on a new letter, message, document and application."""
    guardians = sorted(g.personal_code for c in town.children for g in c.guardians)
    letter = {
        "recipient_name": "Anna Bērziņa",
        "address_code": "105163882",
        "subject": "Piedāvājums",
        "text": f"Vēstule {n}",
        "reference": f"OF-{n}",
    }
    message = {"recipient": guardians[0], "subject": "Piedāvājums", "body": f"Ziņa {n}"}
    document = {
        "type": "decision",
        "title": f"Lēmums {n}",
        "author_unit": "Izglītības pārvalde",
        "media_type": "application/pdf",
        "sha256": f"{n:064x}",
        "size": 100,
    }
    return {
        "letter": await _post(apps["letter"], "/v1/letters", letter, f"l{n}", "accepted_at"),
        "eadrese": await _post(
            apps["eadrese"], "/v1/messages", message, f"e{n}", "server_received_at"
        ),
        "dvs": await _post(apps["dvs"], "/v1/documents", document, f"d{n}", "registered_at"),
        "vps": await _post(
            apps["vps"], "/v1/applications", application_form(town.children[n]), "", "registered_at"
        ),
    }


async def test_moving_the_clock_moves_the_time_of_every_simulator(tmp_path: Path) -> None:
    clock, town = SimulatedClock(), _town()
    settings = Settings(data_dir=tmp_path, _env_file=None)
    apps = simulator_apps(settings, SYSTEMS, town=town, clock=clock)

    before = await _stamps(apps, town, 1)
    assert all(abs(at - datetime.now(UTC)) < SLACK for at in before.values()), before
    clock.apply(MOVE)
    after = await _stamps(apps, town, 2)

    for system, at in after.items():
        assert MOVE - SLACK < at - before[system] < MOVE + SLACK, (system, before, after)
    # The SMS gateway reports deliveries by callback: its clock is the one given, too.
    assert apps["sms"].app.state.gateway.clock is clock
    # Each tells the time it keeps, for whoever moved the clock to wait on.
    told = await _health_clocks(apps)
    assert set(told) == {"vps", "dvs", "eadrese", "sms", "letter"}
    assert all(abs(at - clock()) < SLACK for at in told.values()), told


async def test_without_a_clock_the_simulators_read_the_system_time(tmp_path: Path) -> None:
    town = _town()
    settings = Settings(data_dir=tmp_path, _env_file=None)
    stamps = await _stamps(simulator_apps(settings, SYSTEMS, town=town), town, 1)
    assert all(abs(at - datetime.now(UTC)) < SLACK for at in stamps.values()), stamps


def test_a_child_process_is_given_the_simulated_clock_and_the_cluster_it_is_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = Settings(data_dir=tmp_path, _env_file=None)
    assert clock_settings(system) == {}

    simulated = system.derive(
        bootstrap_servers="kafka:9092",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="hub",
        sasl_password="s3cret",
        simulation=True,
        clock="simulated",
    )
    for name in list(os.environ):
        if name.startswith("HUB_"):
            monkeypatch.delenv(name)
    for name, value in clock_settings(simulated).items():
        monkeypatch.setenv(f"HUB_{name.upper()}", str(value))
    child = Settings(data_dir=tmp_path, _env_file=None)
    assert (child.clock, child.simulation, child.bootstrap_servers) == (
        "simulated",
        True,
        "kafka:9092",
    )
    assert child.sasl_password is not None and child.sasl_password.get_secret_value() == "s3cret"
