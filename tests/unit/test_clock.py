"""The simulated clock: allowed only in a simulation, moved by durations, never backwards."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from hub.cli import main
from hub.clock import (
    ClockError,
    SimulatedClock,
    format_duration,
    moves_of,
    parse_duration,
)
from hub.errors import ConfigurationError, HubError
from hub.reliability.metrics import Metrics
from hub.services import health_app
from hub.settings import load_settings
from schemas.clock import ClockAdvanced
from schemas.topics import BY_NAME, OPERATOR, topic_for


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env file
    for name in list(os.environ):
        if name.startswith("HUB_"):
            monkeypatch.delenv(name)


def move(offset: timedelta, municipality: str = "riga") -> ClockAdvanced:
    return ClockAdvanced.new(
        producer=OPERATOR,
        municipality=municipality,
        offset_seconds=offset.total_seconds(),
        moved_to=datetime.now(UTC) + offset,
        requested_by="tester",
    )


# --------------------------------------------------------------------------- settings


def test_the_system_clock_is_the_default() -> None:
    settings = load_settings()
    assert settings.clock == "system"
    assert settings.simulation is False


def test_a_simulated_clock_is_refused_outside_a_simulation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUB_CLOCK", "simulated")
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert "HUB_CLOCK=simulated" in str(refused.value)
    assert "HUB_SIMULATION=true" in str(refused.value)
    monkeypatch.setenv("HUB_SIMULATION", "true")
    settings = load_settings()
    assert settings.clock == "simulated" and settings.simulation


def test_an_unknown_clock_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="HUB_CLOCK"):
        load_settings(clock="lunar", simulation=True)


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20d", timedelta(days=20)),
        ("36h", timedelta(hours=36)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1d 12h 30m", timedelta(days=1, hours=12, minutes=30)),
        ("1.5h", timedelta(minutes=90)),
        (" 20D ", timedelta(days=20)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "20", "d", "20x", "-5d", "20 days", "1e3s", "5d-2h", "0s"])
def test_bad_durations_are_one_clear_error(text: str) -> None:
    with pytest.raises(ClockError, match="bad duration") as refused:
        parse_duration(text)
    assert isinstance(refused.value, HubError)  # the CLI prints it in one line, exit 2
    assert "\n" not in str(refused.value)


def test_an_absurd_duration_is_refused() -> None:
    with pytest.raises(ClockError, match="hundred years"):
        parse_duration("99999w")


@pytest.mark.parametrize(
    "span", [timedelta(), timedelta(seconds=45), timedelta(days=20, hours=3, seconds=2)]
)
def test_formatted_durations_read_back(span: timedelta) -> None:
    text = format_duration(span)
    assert text == "0s" if not span else parse_duration(text) == span


# --------------------------------------------------------------------------- the clock


def test_the_simulated_clock_runs_ahead_by_its_offset() -> None:
    clock = SimulatedClock()
    assert abs(clock() - datetime.now(UTC)) < timedelta(seconds=1)
    assert clock.apply(move(timedelta(days=20)))
    ahead = clock() - datetime.now(UTC)
    assert timedelta(days=20) - timedelta(seconds=1) < ahead <= timedelta(days=20)
    assert clock().tzinfo is not None


def test_the_simulated_clock_never_moves_back() -> None:
    clock = SimulatedClock()
    readings, largest = [clock()], timedelta()
    for days in (5, 20, 3, 20, 0, 21):
        clock.apply(move(timedelta(days=days)))
        readings.append(clock())
        largest = max(largest, timedelta(days=days))
        assert clock.offset == largest
    assert readings == sorted(readings)
    assert clock.offset == timedelta(days=21)
    assert clock.moves == 3  # 5, 20 and 21 moved it; the others were behind or equal
    assert clock.last_move is not None and clock.last_move.offset_seconds == 21 * 86_400
    with pytest.raises(ValueError, match="never behind"):
        SimulatedClock(timedelta(seconds=-1))


def test_move_to_a_moment_runs_ahead_to_it_and_never_back() -> None:
    clock = SimulatedClock()
    later = datetime.now(UTC) + timedelta(days=100)
    assert clock.move_to(later)
    assert abs(clock() - later) < timedelta(seconds=1)
    assert not clock.move_to(later - timedelta(days=50))
    assert not clock.move_to(datetime.now(UTC) - timedelta(days=1))
    assert clock() >= later


def test_moves_of_one_municipality_only_and_stray_records_skipped() -> None:
    def record(value: bytes | None, offset: int) -> SimpleNamespace:
        return SimpleNamespace(topic="hub.clock.v1", partition=0, offset=offset, value=value)

    ours, theirs = move(timedelta(days=1)), move(timedelta(days=9), municipality="liepaja")
    records = [
        record(b"not json", 0),
        record(None, 1),
        record(theirs.model_dump_json().encode(), 2),
        record(ours.model_dump_json().encode(), 3),
        record(b'{"event_type": "ClockAdvanced"}', 4),
    ]
    assert list(moves_of(records, "riga")) == [ours]  # type: ignore[arg-type]


def test_the_clock_topic_is_in_the_catalogue() -> None:
    topic = BY_NAME["hub.clock.v1"]
    assert topic is topic_for(ClockAdvanced)
    assert topic.key == "municipality" and topic.partitions == 1
    assert topic.producer == OPERATOR and "allocation" in topic.consumers


@pytest.mark.parametrize("offset", [-1.0, float("nan"), float("inf"), 1e12])
def test_a_move_carries_a_sane_offset(offset: float) -> None:
    with pytest.raises(ValueError):
        ClockAdvanced.new(
            producer=OPERATOR,
            municipality="riga",
            offset_seconds=offset,
            moved_to=datetime.now(UTC),
            requested_by="tester",
        )


async def test_health_reports_the_clock_and_its_mode() -> None:
    async def health(app: object) -> dict[str, object]:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            return (await client.get("/health")).json()  # type: ignore[no-any-return]

    clock = SimulatedClock(timedelta(days=20))
    simulated = await health(health_app([], Metrics.create(), clock=clock, clock_mode="simulated"))
    assert simulated["clock_mode"] == "simulated"
    ahead = datetime.fromisoformat(str(simulated["clock"])) - datetime.now(UTC)
    assert ahead > timedelta(days=19)
    system = await health(health_app([], Metrics.create()))
    assert system["clock_mode"] == "system"
    behind = datetime.fromisoformat(str(system["clock"])) - datetime.now(UTC)
    assert abs(behind) < timedelta(minutes=1)


# --------------------------------------------------------------------------- the command


@pytest.mark.parametrize(
    "argv", [["clock", "show"], ["clock", "advance", "20d"], ["clock", "set", "2030-01-01T00:00Z"]]
)
def test_hub_clock_refuses_outside_a_simulation(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HUB_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "HUB_SIMULATION=true" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("HUB_SIMULATION", "true")
    monkeypatch.delenv("HUB_BOOTSTRAP_SERVERS")
    assert main(argv) == 2
    assert "HUB_BOOTSTRAP_SERVERS" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["clock", "advance", "20 days"], "bad duration '20 days'"),
        (["clock", "advance", "0s"], "bad duration"),
        (["clock", "set", "tomorrow"], "bad time 'tomorrow'"),
        (["clock", "set", "2030-01-01T09:00"], "has no time zone"),
    ],
)
def test_hub_clock_bad_moves_are_one_line_before_connecting(
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HUB_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens: not reached
    monkeypatch.setenv("HUB_SIMULATION", "true")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
