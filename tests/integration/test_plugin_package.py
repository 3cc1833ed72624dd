"""A third party's system, added without changing the hub: the example plug-in package.

``examples/echo-adapter`` is installed as a package of its own into a folder of the
test (not into the environment the tests run in) and ``hub run echo-adapter`` runs it
in a process whose ``PYTHONPATH`` holds that folder: the hub finds it through its entry
point alone, creates its topics, and it answers a request through the real broker.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from hub.reliability.deadletters import read_topic
from hub.settings import Settings
from simulators.process import ServiceProcess
from tests.conftest import answering, eventually

pytestmark = [pytest.mark.real_broker, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "echo-adapter"


def install_example(tmp_path: Path) -> Path:
    """``pip install --target``: the package and its metadata (entry points), nothing else.
    It is built from a copy so that no build output is left in the source tree."""
    source, site = tmp_path / "echo-adapter", tmp_path / "site"
    shutil.copytree(EXAMPLE, source)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert list(site.glob("hub_echo_adapter-*.dist-info/entry_points.txt")), sorted(site.iterdir())
    return site


async def test_an_installed_plug_in_package_runs_under_hub_run(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    site = await asyncio.to_thread(install_example, tmp_path)
    bootstrap = kafka_settings.bootstrap_servers or ""
    municipality = f"e{uuid.uuid4().hex[:8]}"
    process = ServiceProcess(
        bootstrap,
        tmp_path,
        municipality,
        service="echo-adapter",
        env={"PYTHONPATH": str(site)},
        session_timeout=3,
        heartbeat_interval=1,
    )
    await process.start()
    try:
        async with httpx.AsyncClient(base_url=process.health_url, timeout=5) as http:
            await answering(process, http, "/health/echo-adapter", what="the echo service running")

        ref = uuid.uuid4().hex[:12]
        request = {
            "event_type": "EchoRequested",
            "correlation_id": str(uuid.uuid4()),
            "producer": "operator",
            "municipality": municipality,
            "ref": ref,
            "text": "labdien",
        }
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(
                "echo.requests.v1", json.dumps(request).encode(), key=ref.encode()
            )
        finally:
            await producer.stop()

        replies: list[dict[str, object]] = []

        async def answered() -> bool:
            if process.exited():
                pytest.fail(process.exited())
            records = await read_topic(bootstrap, "echo.replies.v1")
            replies[:] = [json.loads(r.value) for r in records]
            return any(r["ref"] == ref for r in replies)

        await eventually(answered, timeout=60, what="the echo on echo.replies.v1")
        reply = next(r for r in replies if r["ref"] == ref)
        assert reply["event_type"] == "Echoed"
        assert reply["text"] == "labdien"
        assert reply["producer"] == "echo-adapter"
        assert reply["correlation_id"] == request["correlation_id"]
    finally:
        status = await process.stop(timeout=60)
        await process.close()
    assert status == 0, process.exited()
