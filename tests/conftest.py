"""Shared fixtures: the real embedded Kafka broker and settings pointing at it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from hub.embedded import EmbeddedBroker
from hub.kafka import ensure_topics
from hub.settings import Settings

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
