"""`hub dlq list | show | replay` against dead letters on the real broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from hub.cli import main
from hub.reliability.deadletters import DELIVERY_ID, REPLAY_OF, Failure, header, read_topic
from hub.settings import Settings

pytestmark = pytest.mark.real_broker


async def _bury(bootstrap: str, service: str, source: str, values: list[bytes]) -> None:
    now = datetime.now(UTC)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for n, value in enumerate(values):
            failure = Failure(
                source, 1, 40 + n, 1, now, now, "Refused", "register refused 161175-19997"
            )
            row = failure.bury(service, "refused", b"CH-%d" % n, value, (("event-type", b"X"),))
            await producer.send_and_wait(
                row.topic, row.value, key=row.key, headers=list(row.headers)
            )
    finally:
        await producer.stop()


def test_list_show_and_replay(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap = kafka_settings.bootstrap_servers or ""
    service, source = f"cli-{uuid.uuid4().hex[:6]}", f"test.cli-{uuid.uuid4().hex[:6]}.v1"
    values = [
        json.dumps({"child_personal_code": "161175-19997", "n": n}).encode() for n in range(2)
    ]
    asyncio.run(_bury(bootstrap, service, source, values))
    monkeypatch.setenv("HUB_BOOTSTRAP_SERVERS", bootstrap)

    assert main(["dlq", "list", "--service", service]) == 0
    listed = capsys.readouterr()
    lines = listed.out.splitlines()
    assert len(lines) == 2 and "2 dead letter(s)" in listed.err
    assert all("refused" in line and f"{source}:1:" in line for line in lines)
    assert "19997" not in listed.out  # personal codes are masked in errors

    first = lines[0].split()[0]
    assert main(["dlq", "show", first]) == 0
    shown = capsys.readouterr().out
    assert f"service       {service}" in shown and "******-*****" in shown and "19997" not in shown
    assert main(["dlq", "show", first, "--reveal"]) == 0
    assert "161175-19997" in capsys.readouterr().out

    assert main(["dlq", "replay", "--service", service, "--dry-run"]) == 0
    assert capsys.readouterr().out.count(f"to {source}") == 2
    assert asyncio.run(read_topic(bootstrap, source)) == []

    assert main(["dlq", "replay", "--service", service, "--topic", source]) == 0
    replayed = asyncio.run(read_topic(bootstrap, source))
    assert sorted(r.value for r in replayed) == sorted(values)
    for r in replayed:
        headers = tuple(r.headers)
        assert header(headers, "event-type") == "X"  # original headers kept
        assert header(headers, DELIVERY_ID) and header(headers, REPLAY_OF)
        assert header(headers, "dlq-reason") is None
    assert {r.key for r in replayed} == {b"CH-0", b"CH-1"}


def test_show_of_an_unknown_id_is_one_line(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HUB_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers or "")
    assert main(["dlq", "show", "no-such-id"]) == 2
    assert capsys.readouterr().err.strip() == "hub: error: no dead letters match 'no-such-id'"
