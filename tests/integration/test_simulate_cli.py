"""`hub simulate all` as an operator runs it: a real process serving the four simulators.

No Kafka is involved: the simulators are plain HTTP servers on loopback.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from hub.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ("VPS", "VIIS", "GIS", "DVS", "AUTHORISATIONS", "EADRESE", "SMS", "LETTER")
# The FastAPI titles given in simulators/<system>/app.py.
TITLES = {
    "VPS": "VPS simulator",
    "VIIS": "VIIS simulator",
    "GIS": "GIS / address register simulator",
    "DVS": "DVS simulator",
    "AUTHORISATIONS": "Register of authorisations simulator",
    "EADRESE": "e-adrese simulator",
    "SMS": "SMS gateway simulator",
    "LETTER": "Letter simulator",
}
# hub/cli.py `_simulate`: f"{system.upper():<7} {served.url}  (API: {served.url}/docs)"
SYSTEM_LINE = re.compile(
    r"^(VPS|VIIS|GIS|DVS|AUTHORISATIONS|EADRESE|SMS|LETTER)\s+(http://127\.0\.0\.1:\d+)"
    r"  \(API: \2/docs\)$"
)
SMTP_LINE = re.compile(r"^SMTP\s+smtp://127\.0\.0\.1:(\d+)$")
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def _environment(data_dir: Path, **urls: str) -> dict[str, str]:
    """os.environ without any HUB_* variable, plus the given HUB_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    # The subprocess runs in data_dir (so no stray .env is read), from the installed package.
    env["HUB_DATA_DIR"] = str(data_dir)
    env.update(urls)
    return env


def _loopback_urls() -> dict[str, str]:
    *ports, smtp = _free_ports(len(SYSTEMS) + 1)
    urls = {
        f"HUB_{system}_URL": f"http://127.0.0.1:{port}"
        for system, port in zip(SYSTEMS, ports, strict=True)
    }
    return urls | {"HUB_SMTP_PORT": str(smtp)}


async def _hub(
    env: dict[str, str], cwd: Path, *args: str, **streams: object
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub",
        *args,
        env=env,
        cwd=cwd,
        **streams,  # type: ignore[arg-type]
    )


async def _run_to_end(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    process = await _hub(
        env, cwd, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), STARTUP_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"`hub {' '.join(args)}` did not exit within {STARTUP_TIMEOUT} s")
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Simulating:
    """A running `hub simulate` process and what it printed."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: Path) -> None:
        self.process = process
        self.stderr = stderr
        self.urls: dict[str, str] = {}
        self.summary = ""
        self.smtp_port = 0
        self.lines: list[str] = []

    async def read_banner(self) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not (self.summary and set(self.urls) == set(SYSTEMS)):
            remaining = deadline - time.monotonic()
            try:
                raw = await asyncio.wait_for(self.process.stdout.readline(), max(remaining, 0.01))
            except TimeoutError:
                pytest.fail(
                    f"no full banner within {STARTUP_TIMEOUT} s; printed {self.lines}"
                    f"\nstderr: {self.stderr.read_text()}"
                )
            if not raw:
                await self.process.wait()
                pytest.fail(
                    f"hub simulate ended (status {self.process.returncode}) after {self.lines}"
                    f"\nstderr: {self.stderr.read_text()}"
                )
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            if match := SYSTEM_LINE.match(line):
                self.urls[match[1]] = match[2]
            elif match := SMTP_LINE.match(line):
                self.smtp_port = int(match[1])
            elif line.startswith("synthetic"):
                self.summary = line


@pytest.fixture
async def simulate_all(tmp_path: Path) -> AsyncIterator[tuple[Simulating, dict[str, str]]]:
    urls = _loopback_urls()
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        process = await _hub(
            _environment(tmp_path, **urls),
            tmp_path,
            "simulate",
            "all",
            "--children",
            "50",
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        try:
            yield Simulating(process, stderr_path), urls
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_simulate_all_serves_every_system_and_stops_on_sigterm(
    simulate_all: tuple[Simulating, dict[str, str]],
) -> None:
    running, urls = simulate_all
    await running.read_banner()

    assert running.urls == {system: urls[f"HUB_{system}_URL"] for system in SYSTEMS}
    assert " 50 children" in running.summary, running.summary
    assert running.smtp_port == int(urls["HUB_SMTP_PORT"])
    _, writer = await asyncio.open_connection("127.0.0.1", running.smtp_port)
    writer.close()  # the SMTP server accepts connections
    async with httpx.AsyncClient(timeout=10) as client:
        for system, url in running.urls.items():
            health = await client.get(f"{url}/health")
            assert health.status_code == 200, (system, health.text)
            spec = await client.get(f"{url}/openapi.json")
            assert spec.status_code == 200, (system, spec.text)
            assert spec.json()["info"]["title"] == TITLES[system]
        reference = await client.get(f"{running.urls['GIS']}/v1/addresses/108000001")
    assert reference.status_code == 200, reference.text
    assert reference.json()["postcode"] == "LV-1050"

    running.process.send_signal(signal.SIGTERM)
    try:
        status = await asyncio.wait_for(running.process.wait(), STOP_TIMEOUT)
    except TimeoutError:
        pytest.fail(f"hub simulate did not stop within {STOP_TIMEOUT} s of SIGTERM")
    assert status == 0, running.stderr.read_text()
    with pytest.raises(httpx.ConnectError):  # the ports are closed again
        async with httpx.AsyncClient(timeout=5) as client:
            await client.get(f"{running.urls['VPS']}/health")


async def test_too_few_children_is_a_configuration_error(tmp_path: Path) -> None:
    env = _environment(tmp_path, **_loopback_urls())
    status, out, err = await _run_to_end(env, tmp_path, "simulate", "all", "--children", "10")

    assert status == 2, (out, err)
    assert err.startswith("hub: error: invalid settings (HUB_SIM_CHILDREN:"), err
    assert "50" in err  # the lower bound the operator has to respect
    assert "Traceback" not in err
    assert not SYSTEM_LINE.search(out), out  # nothing was served


async def test_a_url_off_loopback_is_refused(tmp_path: Path) -> None:
    urls = _loopback_urls() | {"HUB_GIS_URL": "http://example.org:8103"}
    env = _environment(tmp_path, **urls)
    status, out, err = await _run_to_end(env, tmp_path, "simulate", "all", "--children", "50")

    assert status != 0, (out, err)
    assert err.startswith("hub: error:"), err
    assert "http://example.org:8103" in err
    assert "loopback" in err
    assert "Traceback" not in err
    assert "synthetic" not in out  # it never reported itself ready
