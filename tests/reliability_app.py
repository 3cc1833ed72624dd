"""A small service built on the reliability core, for the tests and the benchmark.

It consumes ``ApplicationSubmitted`` from an input topic, counts each
application in its SQLite state (a count above 1 would be a double
application) and publishes one ``CheckEnrollment`` per application to an
output topic. With ``--http`` it first asks an HTTP endpoint about the
child, through the hub's retrying HTTP port.

Run as a process (the crash test kills it):

    python -m tests.reliability_app --bootstrap HOST:PORT --data-dir DIR \\
        --name crash-test --input T_IN --output T_OUT [--http URL]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from hub.observability import setup_logging
from hub.reliability.consumer import Handler, Unit
from hub.reliability.retry import HttpPort, RetryPolicy
from hub.reliability.service import ServiceRunner, ServiceSpec, stop_on_signals
from hub.settings import Settings
from schemas.applications import ApplicationSubmitted
from schemas.enrollment import CheckEnrollment
from schemas.topics import BY_NAME

APPLICATIONS = BY_NAME["vps.pii.applications.v1"]
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS applied ("
    " event_id TEXT PRIMARY KEY, child_ref TEXT NOT NULL, times INTEGER NOT NULL)",
)


class ChildCheck(HttpPort):
    system = "child check service"


class Applications(Handler[ApplicationSubmitted]):
    def __init__(self, input_topic: str, output_topic: str, client: ChildCheck | None) -> None:
        super().__init__(dataclasses.replace(APPLICATIONS, name=input_topic))
        self.output_topic = output_topic
        self.client = client

    async def fetch(self, message: ApplicationSubmitted) -> Any:
        if self.client is None:
            return None
        return await self.client.json("POST", "/check", json={"child_ref": message.child_ref})

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    def apply(self, unit: Unit, message: ApplicationSubmitted, fetched: Any) -> None:
        unit.execute(
            "INSERT INTO applied (event_id, child_ref, times) VALUES (?, ?, 1)"
            " ON CONFLICT (event_id) DO UPDATE SET times = times + 1",
            (str(message.event_id), message.child_ref),
        )
        unit.emit(
            CheckEnrollment.new(
                producer="allocation",
                caused_by=message,
                child_ref=message.child_ref,
                child_personal_code=message.child_personal_code,
                as_of=date(2026, 9, 1),
            ),
            topic=self.output_topic,
        )


def spec(
    name: str, input_topic: str, output_topic: str, client: ChildCheck | None = None
) -> ServiceSpec:
    return ServiceSpec(
        name,
        (Applications(input_topic, output_topic, client),),
        schema=SCHEMA,
        clients=(client,) if client is not None else (),
    )


def client_for(
    url: str,
    *,
    timeout: float = 0.5,
    attempts: int = 3,
    on_retry: Callable[[BaseException], None] | None = None,
) -> ChildCheck:
    policy = RetryPolicy(attempts=attempts, initial_wait=0.01, max_wait=0.05)
    return ChildCheck(url, timeout=timeout, policy=policy, on_retry=on_retry)


async def _main(args: argparse.Namespace) -> int:
    settings = Settings(bootstrap_servers=args.bootstrap, data_dir=args.data_dir, _env_file=None)
    setup_logging(settings.log_level)
    client = client_for(args.http) if args.http else None
    service = spec(args.name, args.input, args.output, client)
    stop = asyncio.Event()
    stop_on_signals(stop)
    runner = ServiceRunner(service, settings, args.bootstrap)
    clean = await runner.run(stop)  # closes the handler, and with it the client
    return 0 if clean else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--http")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
