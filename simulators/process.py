"""A hub service in a process of its own (the allocation service watched through its API).

Benchmarks and crash tests run ``hub run SERVICE`` as a child process so that
it has its own interpreter (as in production) and can be killed with SIGKILL
mid-batch. :class:`ServiceProcess` starts it with the settings it needs, polls
the allocation service's ``/health`` until a condition holds, and stops or
kills it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from hub.embedded import free_port
from simulators.faults import FAULTS_PATH
from simulators.plugin import SYSTEMS


class ServiceProcessError(RuntimeError):
    """The service exited or did not reach the awaited state in time."""


def _environment(data: Path, settings: Mapping[str, object]) -> dict[str, str]:
    """This process's environment without its ``HUB_*`` variables, plus ``settings`` (by field
    name) for a child ``hub`` process that keeps its data and log in ``data``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env |= {"HUB_DATA_DIR": str(data), "HUB_LOG_LEVEL": "WARNING"}
    return env | _variables(settings)


def _variables(settings: Mapping[str, object]) -> dict[str, str]:
    """``HUB_*`` variables for settings given by field name (``fetch_max_wait=0.01``)."""
    return {f"HUB_{name.upper()}": str(value) for name, value in settings.items()}


async def _spawn(log: Path, env: Mapping[str, str], *command: str) -> asyncio.subprocess.Process:
    """``python -m hub COMMAND…`` with its output appended to ``log``."""
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub", *command, env=dict(env), stdout=out, stderr=out
        )


async def _terminate(process: asyncio.subprocess.Process, timeout: float) -> int:
    """SIGTERM; SIGKILL if it has not exited within ``timeout``. Its exit status."""
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.send_signal(signal.SIGKILL)
    return await process.wait()


class ServiceProcess:
    """``hub run SERVICE`` as a child process; its output goes to ``<data>/<service>.log``."""

    def __init__(
        self,
        bootstrap: str,
        data: Path,
        municipality: str,
        *,
        service: str = "allocation",
        env: Mapping[str, str] | None = None,
        **settings: str | float,
    ) -> None:
        """``settings`` are extra ``HUB_*`` settings by field name (``fetch_max_wait=0.01``),
        ``env`` further variables as they are (``{"HUB_SMS_URL": …}``). The allocation API
        and ``/health`` listen on free ports unless ``allocation_api`` (``host:port``) and
        ``health_port`` say where."""
        self.data, self.service = data, service
        api = str(settings.pop("allocation_api", "") or f"127.0.0.1:{free_port()}")
        health = settings.pop("health_port", None)
        self.port = int(api.rpartition(":")[2])
        self.url = f"http://{api}"
        self.health_url = f"http://127.0.0.1:{free_port() if health is None else int(health)}"
        """The service's ``/health`` and ``/metrics`` (every service has them)."""
        self.log = data / f"{service}.log"
        self.env = _environment(
            data,
            {
                "bootstrap_servers": bootstrap,
                "municipality": municipality,
                "allocation_api": api,
                "health_port": self.health_url.rpartition(":")[2],
            },
        )
        self.env |= dict(env or {})
        self.env |= _variables(settings)
        self.process: asyncio.subprocess.Process | None = None
        self._http = httpx.AsyncClient()

    async def start(self, timeout: float = 60) -> None:
        """Start the service (for the allocation service: and wait until its API answers)."""
        self.process = await _spawn(self.log, self.env, "run", self.service)
        if self.service == "allocation":
            await self.wait_for(lambda _: True, "starting", timeout)

    def exited(self) -> str | None:
        """None while it runs; once it has exited, its status and the end of its log."""
        if self.process is None or self.process.returncode is None:
            return None
        tail = self.log.read_text(errors="replace")[-3000:]
        return f"{self.service} exited ({self.process.returncode}):\n{tail}"

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine loses power."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM, SIGKILL if it has not stopped in ``timeout``; the exit status (0 for a
        clean stop), None if it never ran."""
        if self.process is None:
            return None
        return await _terminate(self.process, timeout)

    async def close(self) -> None:
        await self.kill()
        await self._http.aclose()

    async def health(self) -> dict[str, Any] | None:
        """The service's ``/health`` summary, or None while it does not answer."""
        try:
            response = await self._http.get(f"{self.url}/health", timeout=2)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]

    async def wait_for(
        self,
        ready: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll ``/health`` until ``ready`` holds; ``progress`` sees the summary every 5 s."""
        deadline = time.monotonic() + timeout
        shown = time.monotonic()
        while time.monotonic() < deadline:
            if self.process is None or self.process.returncode is not None:
                code = None if self.process is None else self.process.returncode
                raise ServiceProcessError(
                    f"the allocation service exited ({code}) while {what}; see {self.log}"
                )
            state = await self.health()
            if state is not None and ready(state):
                return state
            if state is not None and progress is not None and time.monotonic() - shown > 5:
                shown = time.monotonic()
                progress(state)
            await asyncio.sleep(0.1)
        raise ServiceProcessError(f"timed out after {timeout:.0f} s while {what}; see {self.log}")


_CLUSTER = (
    "bootstrap_servers",
    "security_protocol",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
)
"""The settings that say where the Kafka cluster is and how to connect to it."""


def clock_settings(settings: Any) -> dict[str, object]:
    """The settings (by field name) a child process needs to keep the time ``settings`` keep:
    none on the system clock; on a simulated clock, the clock and the cluster it is
    published on, with the credentials to read it."""
    if settings.clock != "simulated":
        return {}
    cluster = {name: getattr(settings, name) for name in _CLUSTER}
    return {"simulation": True, "clock": "simulated"} | {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in cluster.items()
        if value is not None
    }


class SimulatorsProcess:
    """``hub simulate all`` as a child process, on the URLs ``settings`` name.

    ``async with SimulatorsProcess(settings, data, sim_seed=…, sim_children=…)``
    starts it for the municipality, URLs, SMTP port, HTTP timeout and clock of
    ``settings`` and the simulator settings given (by field name), and waits
    until every simulator answers; leaving stops it. Its output goes to
    ``<data>/simulators.log``.

    On a simulated clock (``HUB_CLOCK=simulated``: the demo's) the simulators
    follow that clock on ``settings.bootstrap_servers``, so their receipts,
    feed events and postings carry the time the services keep.
    """

    def __init__(self, settings: Any, data: Path, **simulation: object) -> None:
        self.urls = {s: str(getattr(settings, f"{s}_url")) for s in SYSTEMS}
        self.smtp = (settings.smtp_host, settings.smtp_port)
        self.log = data / "simulators.log"
        shared = ("municipality", "smtp_port", "http_timeout")
        # The e-service refuses what the municipality's rules refuse: the same rules file.
        rules = {"rules": settings.rules} if settings.rules else {}
        self.env = _environment(
            data,
            {f"{s}_url": url for s, url in self.urls.items()}
            | {name: getattr(settings, name) for name in shared}
            | rules
            | clock_settings(settings)
            | simulation,
        )
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> SimulatorsProcess:
        self.process = await _spawn(self.log, self.env, "simulate", "all")
        try:
            await self._wait_until_up(timeout=60)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.process is not None:
            await _terminate(self.process, 10)

    async def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            for system, url in self.urls.items():
                while True:
                    if self.process is not None and self.process.returncode is not None:
                        tail = self.log.read_text(errors="replace")[-2000:]
                        raise ServiceProcessError(f"the simulators exited:\n{tail}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"{url}/health")).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise ServiceProcessError(
                            f"the {system} simulator did not start; see {self.log}"
                        )
                    await asyncio.sleep(0.1)
        while True:
            try:
                _, writer = await asyncio.open_connection(*self.smtp)
            except OSError:
                if time.monotonic() > deadline:
                    raise ServiceProcessError(
                        f"the SMTP simulator did not start; see {self.log}"
                    ) from None
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return

    async def reads(self, moment: datetime) -> bool:
        """Whether every simulator that tells its clock on ``/health`` reads ``moment`` or
        later: after a move of the simulated clock, whether they all follow it."""
        async with httpx.AsyncClient(timeout=2) as http:
            for url in self.urls.values():
                try:
                    clock = (await http.get(f"{url}/health")).json().get("clock")
                except (httpx.HTTPError, ValueError):
                    return False
                if clock is not None and datetime.fromisoformat(clock) < moment:
                    return False
        return True

    async def faults_injected(self) -> int:
        """Requests the HTTP simulators have answered with a fault so far."""
        total = 0
        async with httpx.AsyncClient(timeout=5) as http:
            for url in self.urls.values():
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    counts = (await http.get(f"{url}{FAULTS_PATH}")).json()
                    total += sum(n for fault, n in counts.items() if fault != "none")
        return total
