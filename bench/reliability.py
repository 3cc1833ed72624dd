"""Benchmark of one reliable hop against a bare aiokafka hop, on the embedded broker.

    .venv/bin/python bench/reliability.py [--messages 50000] [--batch 500]

Both hops read the same events from a topic (``ResidenceDeclared`` by default,
``ApplicationSubmitted`` with ``--kind application``) and publish one derived
message per input to another topic:

- bare: aiokafka consumer → producer, a batch at a time, acknowledgements
  awaited together, offsets committed after (no state, no guarantees);
- hub: the reliability core — parse and validate, inbox check, state change,
  outbox, one SQLite transaction per batch, offsets committed after the
  commit, and the relay publishing the outbox with all acks awaited together.

Each figure is messages per second from the first record read to the last
derived message acknowledged; the ratio hub/bare is printed in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.calibration import python_speed
from hub.embedded import EmbeddedBroker
from hub.reliability.consumer import Handler, Unit
from hub.reliability.service import RuntimeOptions, ServiceRunner, ServiceSpec
from hub.settings import Settings
from schemas.addresses import ResolveAddress
from schemas.applications import ApplicationSubmitted
from schemas.residence import ResidenceDeclared
from schemas.topics import BY_NAME, retry_topic
from simulators.municipality import SyntheticMunicipality
from tests.vps_feed import application_message

SERVICE = "bench"
IN, OUT_BARE, OUT_HUB = "bench.in.v1", "bench.bare-out.v1", "bench.hub-out.v1"


class Derive(Handler[Any]):
    """Records the event in the state and publishes one derived message per event."""

    def __init__(self, kind: str) -> None:
        topic = "vps.population.residence.v1" if kind == "residence" else "vps.pii.applications.v1"
        super().__init__(dataclasses.replace(BY_NAME[topic], name=IN))

    def apply(self, unit: Unit, message: Any, fetched: Any) -> None:
        unit.execute("INSERT INTO applied (event_id) VALUES (?)", (str(message.event_id),))
        unit.emit(
            ResolveAddress.new(
                producer="allocation",
                caused_by=message,
                subject_ref=message.child_ref,
                address_code=getattr(message, "address_code", None)
                or message.residence_address_code,
            ),
            topic=OUT_HUB,
        )


def residences(count: int) -> list[ResidenceDeclared]:
    """Small registry events: a child's declared residence."""
    return [
        ResidenceDeclared.new(
            producer="vps-adapter",
            municipality="riga",
            child_ref=f"CH-{n:08d}",
            subject="child",
            address_code=f"1{n % 10**8:08d}",
            territory_code="0010000",
            declared_municipality="riga",
            declared_from=date(2024, 1, 1),
        )
        for n in range(count)
    ]


def applications(count: int) -> list[ApplicationSubmitted]:
    """Large events: queue applications with guardians and personal codes."""
    town = SyntheticMunicipality("riga", seed=1, children=count, institutions=40)
    return [application_message("riga", child) for child in town.children]


async def prepare(bootstrap: str, messages: list[Any]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    names = (IN, OUT_BARE, OUT_HUB, retry_topic(SERVICE), "hub.deadletter.v1")
    await admin.create_topics([NewTopic(n, num_partitions=6, replication_factor=1) for n in names])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    sends = [
        await producer.send(IN, m.model_dump_json().encode(), key=m.child_ref.encode())
        for m in messages
    ]
    await asyncio.gather(*sends)
    await producer.stop()


async def bare_hop(bootstrap: str, count: int, batch: int) -> float:
    consumer = AIOKafkaConsumer(
        IN,
        bootstrap_servers=bootstrap,
        group_id="bench-bare",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    done, started = 0, None
    try:
        while done < count:
            records = await consumer.getmany(timeout_ms=200, max_records=batch)
            if not records:
                continue
            started = started or time.perf_counter()
            sends = [
                await producer.send(OUT_BARE, r.value, key=r.key)
                for rs in records.values()
                for r in rs
            ]
            await asyncio.gather(*sends)
            await consumer.commit()
            done += len(sends)
        return count / (time.perf_counter() - started)  # type: ignore[operator]
    finally:
        await consumer.stop()
        await producer.stop()


async def hub_hop(bootstrap: str, count: int, batch: int, data_dir: Path, kind: str) -> float:
    settings = Settings(bootstrap_servers=bootstrap, data_dir=data_dir, _env_file=None)
    spec = ServiceSpec(
        SERVICE, (Derive(kind),), schema=("CREATE TABLE applied (event_id TEXT PRIMARY KEY)",)
    )
    runner = ServiceRunner(spec, settings, bootstrap, options=RuntimeOptions(batch_size=batch))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    handled = runner.metrics.handled.labels(SERVICE)
    started = None
    while True:
        await asyncio.sleep(0.005)
        done = handled._value.get()  # a cheap poll of the counter's value
        if started is None and done > 0:
            started = time.perf_counter()
        if done >= count and runner.store is not None and await runner.store.backlog() == 0:
            break
    elapsed = time.perf_counter() - started  # type: ignore[operator]
    stop.set()
    await task
    return count / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--kind",
        choices=("residence", "application"),
        default="residence",
        help="residence: small registry events (~0.4 KB); application: large ones (~1.2 KB)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(python_speed())
    async with EmbeddedBroker() as broker:
        make = residences if args.kind == "residence" else applications
        messages = make(args.messages)
        size = sum(len(m.model_dump_json()) for m in messages[:100]) / 100
        print(
            f"embedded broker at {broker.bootstrap}; {args.messages:,} {args.kind} events"
            f" of ~{size:,.0f} bytes"
        )
        await prepare(broker.bootstrap, messages)
        bare = await bare_hop(broker.bootstrap, args.messages, args.batch)
        print(f"bare aiokafka consume → produce: {bare:,.0f} messages/s")
        with tempfile.TemporaryDirectory() as folder:
            hub = await hub_hop(
                broker.bootstrap, args.messages, args.batch, Path(folder), args.kind
            )
        print(
            f"hub reliable hop (inbox + state + outbox + relay): {hub:,.0f} messages/s"
            f" = {hub / bare:.0%} of bare"
        )


if __name__ == "__main__":
    asyncio.run(main())
