"""Shared fixtures: the real embedded Kafka broker and settings pointing at it."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import pytest_asyncio

from hub.embedded import EmbeddedBroker
from hub.kafka import ensure_topics
from hub.settings import Settings
from tests.seal_kit import SealKit, make_seal_kit

if TYPE_CHECKING:
    from simulators.process import ServiceProcess

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest_asyncio.fixture(scope="session")
async def kafka() -> AsyncIterator[str]:
    """Bootstrap address of a Tansu broker on a free loopback port, for the whole session."""
    async with EmbeddedBroker(log_dir=ARTIFACTS) as broker:
        yield broker.bootstrap


@pytest_asyncio.fixture(scope="session")
async def kafka_settings(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the session broker, with the catalogue's topics created."""
    settings = Settings(
        bootstrap_servers=kafka, data_dir=tmp_path_factory.mktemp("hub-data"), _env_file=None
    )
    await ensure_topics(settings, kafka)
    return settings


@pytest.fixture(scope="session")
def test_seal(tmp_path_factory: pytest.TempPathFactory) -> SealKit:
    """A test CA and an e-seal it issued (key and certificate also as PEM files), generated
    once per session."""
    return make_seal_kit(tmp_path_factory.mktemp("seal"))


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, timeout: float = 20.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def answering(
    process: ServiceProcess, http: httpx.AsyncClient, path: str, *, what: str
) -> None:
    """Wait until ``http`` (at the process's health URL) gets 200 from ``path``; fail at once
    if the process exits, with the end of its log."""

    async def running() -> bool:
        if process.exited():
            pytest.fail(process.exited())
        try:
            answer = await http.get(path)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    await eventually(running, timeout=60, what=what)


async def run_hub(env: Mapping[str, str], *args: str, timeout: float = 180) -> tuple[int, str, str]:
    """``hub ARGS…`` in a process of its own; its exit status, standard output and error.

    Logs go to standard error, so a ``--json`` answer is the standard output alone.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub",
        *args,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
