"""``hub run all``: every service in one process, with health, metrics and the operations view."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import httpx
import pytest

from hub.embedded import free_port
from hub.services import HEALTH_PORTS, SERVICES, health_port
from hub.settings import Settings
from simulators.process import ServiceProcess
from tests.conftest import answering, eventually

pytestmark = pytest.mark.real_broker


async def test_hub_run_all_serves_health_metrics_and_the_operations_view(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """With ``HUB_METRICS_PORT`` too: six services, one ``/metrics`` server for the process
    (a server per service would bind the port six times and stop the process)."""
    bootstrap = kafka_settings.bootstrap_servers or ""
    ops, metrics_port = free_port(), free_port()
    process = ServiceProcess(
        bootstrap,
        tmp_path,
        f"r{uuid.uuid4().hex[:8]}",
        service="all",
        rules="riga",
        ops_port=ops,
        metrics_port=metrics_port,
        session_timeout=3,
        heartbeat_interval=1,
        # Nothing answers at the systems' URLs: the adapters start anyway and wait for them.
        vps_poll_interval=5,
    )
    await process.start()
    try:
        async with httpx.AsyncClient(base_url=process.health_url, timeout=5) as http:
            await answering(process, http, "/health", what="every service running")
            health = (await http.get("/health")).json()
            assert health["status"] == "ok"
            assert [s["service"] for s in health["services"]] == list(SERVICES)
            assert all(s["status"] == "running" for s in health["services"])
            assert all(
                s["partitions"] >= 0 and s["outbox_backlog"] >= 0 for s in health["services"]
            )

            one = await http.get("/health/allocation")
            assert one.status_code == 200 and one.json()["service"] == "allocation"
            unknown = await http.get("/health/no-such-service")
            assert unknown.status_code == 404 and "allocation" in unknown.json()["services"]

            metrics = (await http.get("/metrics")).text
            assert "hub_messages_handled" in metrics and "hub_outbox_backlog" in metrics
            alone = await http.get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert alone.status_code == 200
            assert 'hub_outbox_backlog{service="allocation"}' in alone.text, alone.text
            assert 'hub_outbox_backlog{service="notify-adapter"}' in alone.text, alone.text

            page = await http.get(f"http://127.0.0.1:{ops}/")
            assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        status = await process.stop(timeout=60)
        await process.close()
    assert status == 0, process.exited()


def test_each_service_has_its_own_default_health_port() -> None:
    settings = Settings(_env_file=None)
    ports = [health_port(settings, name) for name in SERVICES]
    assert len(set(ports)) == len(SERVICES)
    assert health_port(settings, "all") == HEALTH_PORTS["allocation"]
    assert health_port(settings.derive(health_port=0), "allocation") is None
    assert health_port(settings.derive(health_port=9999), "dvs-adapter") == 9999


async def test_a_service_whose_health_port_is_taken_stops_and_says_why(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """Running on without /health would hide the service from its supervisor."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    process = ServiceProcess(
        kafka_settings.bootstrap_servers or "",
        tmp_path,
        f"r{uuid.uuid4().hex[:8]}",
        service="gis-adapter",  # nothing answers at HUB_GIS_URL: it would start anyway
        health_port=port,
        session_timeout=3,
        heartbeat_interval=1,
    )
    try:
        await process.start()
        await eventually(lambda: process.exited() is not None, timeout=60, what="the exit")
        assert process.process is not None and process.process.returncode == 2
        log = process.log.read_text()
        assert f"cannot listen on 127.0.0.1:{port}" in log, log
    finally:
        await process.close()
        taken.close()
