"""Notification throughput: requests in, confirming receipts out, on the embedded broker.

    .venv/bin/python bench/notify.py [--count 5000] [--mix eadrese|email|mixed]
        [--fault-rate 0] [--batch-size B] [--fetch-concurrency C]

Starts the embedded broker, the channel simulators in this process (e-adrese, an SMTP
server, an SMS gateway reporting delivery by callback, a print-and-post service) and the
notification service in its own process (``python -m hub run notify-adapter``, as
deployed), with every channel's rate limit set far above what it can reach, so that the
figure is the hub's and not the throttle's.

After a warm-up (100 notifications, all confirmed), ``--count`` ``SendNotification``
commands are published at once on ``notify.requests.v1``. The clock runs from the first
publish to reading, on ``notify.receipts.v1``, the last *confirming* receipt
(``NotificationDelivered``, ``NotificationPosted``, or an e-adrese ``NotificationSent``): one
per notification. The
receipts are read by a consumer of this process assigned to every partition of the topic,
polling as they arrive.

Printed: notifications/s (confirmed notifications over that wall time), receipts/s (every
receipt of the run: sent, failed, delivered, deemed notified), the latency of each
notification from handing its command to the producer to reading its confirmation (p50,
p99, max), the channels that confirmed, and how many messages each simulator took during
the run (for a mix without faults they add up to ``--count``: nothing was sent twice).

Mixes: ``eadrese`` — every guardian has an active e-adrese (confirmed when sent);
``email`` — no e-adrese, a valid e-mail (confirmed when the mail server accepts it);
``mixed`` — 40 % e-adrese, 40 % e-mail, 15 % SMS only (confirmed by the gateway's
delivery report), 5 % letter only (confirmed when the post office reports it posted; the
service reads that feed once a second).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.calibration import python_speed
from bench.options import setting_option
from hub.embedded import free_port
from hub.kafka import ensure_topics, kafka_cluster
from hub.reliability.consumer import outbox_row
from hub.settings import Settings
from schemas.notifications import SendNotification
from schemas.topics import NOTIFY
from simulators.channels import Channels, channel_simulators, offer_notification
from simulators.municipality import SyntheticMunicipality
from simulators.process import ServiceProcess

TOWN = "riga"
RECEIPTS = "notify.receipts.v1"
CONFIRMING = {"NotificationDelivered", "NotificationPosted"}
"""Receipts that confirm a notification; an e-adrese message does once sent (:func:`confirms`)."""


def confirms(receipt: dict[str, Any]) -> bool:
    return receipt["event_type"] in CONFIRMING or (
        receipt["event_type"] == "NotificationSent" and receipt["channel"] == "e_adrese"
    )


WARM_UP = 100
TIMEOUT = 600.0
MIXED = ("eadrese",) * 8 + ("email",) * 8 + ("sms",) * 3 + ("letter",)
"""Ways of reaching a guardian in the mixed run, by notification number modulo 20."""


def say(text: str) -> None:
    print(text, flush=True)


def percentiles(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    cut = statistics.quantiles(ms, n=100, method="inclusive")
    return f"p50 {cut[49]:.0f} ms, p99 {cut[98]:.0f} ms, max {ms[-1]:.0f} ms"


# --------------------------------------------------------------------------- requests


@dataclass
class Audience:
    """The notifications to send and the guardians with an active e-adrese."""

    warm_up: list[SendNotification]
    measured: list[SendNotification]
    active: list[str]


def audience(count: int, mix: str) -> Audience:
    """Offers to ``WARM_UP + count`` distinct guardians, each reachable as ``mix`` says.

    Siblings share guardians, so children are taken one per guardian: a guardian with an
    active e-adrese would otherwise draw a sibling's e-mail notification there too.
    """
    total = WARM_UP + count
    town = SyntheticMunicipality(
        TOWN, seed=7, children=min(30_000, total * 3 // 2 + 100), institutions=5
    )
    seen: set[str] = set()
    children = []
    for child in town.children:
        if child.guardians[0].personal_code not in seen:
            seen.add(child.guardians[0].personal_code)
            children.append(child)
    if len(children) < total:
        raise SystemExit(f"the synthetic town has only {len(children)} distinct guardians")
    made, active = [], []
    for n, child in enumerate(children[:total]):
        way = MIXED[n % len(MIXED)] if mix == "mixed" else mix
        code = child.guardians[0].personal_code
        if way == "eadrese":
            active.append(code)
        electronic = way in ("eadrese", "email")
        made.append(
            offer_notification(
                town,
                n,
                child,
                email=f"guardian{n}@example.lv" if electronic else None,
                phone=f"+3712{1_000_000 + n:07d}" if way != "letter" else None,
            )
        )
    return Audience(made[:WARM_UP], made[WARM_UP:], active)


# --------------------------------------------------------------------------- the service


def service_settings(sims: Channels, args: argparse.Namespace) -> dict[str, Any]:
    """The notification service's settings: the simulators, and no throttle in the way."""
    settings: dict[str, Any] = {
        "env": sims.env,
        "notify_callback": f"127.0.0.1:{free_port()}",
        "notify_escalate_after": TIMEOUT * 2,  # no letter for a slow confirmation
        "batch_size": args.batch_size,
        "fetch_concurrency": args.fetch_concurrency,
        "fetch_max_wait": 0.01,
        **{f"notify_rate_{c}": 1_000_000 for c in ("eadrese", "email", "sms", "letter")},
    }
    if args.fault_rate:  # give up on a faulted call soon and try it again soon
        settings |= {
            "http_timeout": 0.5,
            "http_attempts": 6,
            "http_max_seconds": 8,
            "retry_first_delay": 0.2,
            "retry_max_delay": 1,
            "max_attempts": 30,
        }
    return settings


def check(service: ServiceProcess) -> Callable[[], None]:
    """Raises SystemExit once the service process has exited."""

    def alive() -> None:
        if (exited := service.exited()) is not None:
            raise SystemExit(f"the notification service stopped: {exited}")

    return alive


# --------------------------------------------------------------------------- receipts


async def read_receipts(consumer: AIOKafkaConsumer) -> None:
    """Start ``consumer`` on every partition of notify.receipts.v1, from the beginning."""
    await consumer.start()
    await consumer.topics()  # fetches the cluster's metadata
    partitions = consumer.partitions_for_topic(RECEIPTS) or set()
    if not partitions:
        raise SystemExit(f"{RECEIPTS} has no partitions")
    tps = [TopicPartition(RECEIPTS, p) for p in sorted(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)


class Receipts:
    """Reads notify.receipts.v1 on every partition as receipts arrive (no group, no commits)."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
        )
        self.confirmed_at: dict[str, float] = {}
        """Notification id → when its first confirming receipt was read (perf_counter)."""
        self.channels: dict[str, str] = {}
        self.count = 0
        """Receipts read since :meth:`reset`."""

    async def start(self) -> None:
        await read_receipts(self.consumer)  # a fresh topic: nothing before warm-up

    async def stop(self) -> None:
        await self.consumer.stop()

    def reset(self) -> None:
        """Count from here. The reader stays where it is, at the end of the topic: a
        ``seek_to_end`` would step back, as the embedded broker answers list-offsets with
        the base offset of the last batch."""
        self.count = 0

    async def until_confirmed(
        self, wanted: set[str], timeout: float, alive: Callable[[], None]
    ) -> float:
        """Read until every notification in ``wanted`` is confirmed; when the last one was."""
        deadline = time.perf_counter() + timeout
        report = time.perf_counter() + 5
        waiting = wanted - self.confirmed_at.keys()
        while waiting:
            if time.perf_counter() > report:
                report += 5
                say(f"  … {len(wanted) - len(waiting):,}/{len(wanted):,} confirmed")
            if time.perf_counter() > deadline:
                raise SystemExit(
                    f"only {len(wanted) - len(waiting):,} of {len(wanted):,} notifications"
                    f" were confirmed within {timeout:.0f} s"
                )
            alive()
            batch = await self.consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    self.count += 1
                    receipt = json.loads(record.value)
                    nid = receipt["notification_id"]
                    if confirms(receipt) and nid not in self.confirmed_at:
                        self.confirmed_at[nid] = now
                        self.channels[nid] = receipt["channel"]
                        waiting.discard(nid)
        return max(self.confirmed_at[nid] for nid in wanted)


async def publish(bootstrap: str, messages: list[SendNotification]) -> dict[str, float]:
    """Hand every command to the producer, then wait for all acknowledgements; returns when
    each was handed over (perf_counter), by notification id."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        handed: dict[str, float] = {}
        acks = []
        for message in messages:
            row = outbox_row(message)
            handed[str(message.notification_id)] = time.perf_counter()
            acks.append(
                await producer.send(row.topic, row.value, key=row.key, headers=list(row.headers))
            )
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return handed


# --------------------------------------------------------------------------- the run


async def run(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="hub-notify-"))
    settings = Settings(_env_file=None, data_dir=data)
    say(python_speed())
    people = audience(args.count, args.mix)
    say(
        f"{args.count:,} notifications, mix {args.mix}, fault rate {args.fault_rate:g},"
        f" batch size {args.batch_size}, fetch concurrency {args.fetch_concurrency}"
    )
    async with (
        kafka_cluster(settings) as bootstrap,
        channel_simulators(
            people.active, args.fault_rate, sms_rate=100_000, post_after=0.05
        ) as sims,
    ):
        await ensure_topics(settings, bootstrap, services=[NOTIFY])
        service = ServiceProcess(
            bootstrap, data, TOWN, service="notify-adapter", **service_settings(sims, args)
        )
        receipts = Receipts(bootstrap)
        await receipts.start()
        try:
            await service.start()
            await measure(bootstrap, service, receipts, sims, people)
        finally:
            await receipts.stop()
            status = await service.stop(30)
            await service.close()
            say(f"notification service stopped (exit status {status}); its log: {service.log}")


async def measure(
    bootstrap: str,
    service: ServiceProcess,
    receipts: Receipts,
    sims: Channels,
    people: Audience,
) -> None:
    started = time.perf_counter()
    await publish(bootstrap, people.warm_up)
    ids = {str(m.notification_id) for m in people.warm_up}
    await receipts.until_confirmed(ids, TIMEOUT, check(service))
    say(f"warm-up: {len(ids)} notifications confirmed in {time.perf_counter() - started:.1f} s")

    before = sims.taken()
    receipts.reset()
    handed = await publish(bootstrap, people.measured)
    first = min(handed.values())
    last = await receipts.until_confirmed(set(handed), TIMEOUT, check(service))
    wall = last - first
    count = len(handed)
    say(f"all {count:,} confirmed in {wall:.2f} s (first publish → last confirming receipt)")
    say(f"  {count / wall:,.0f} notifications/s")
    say(f"  {receipts.count / wall:,.0f} receipts/s ({receipts.count:,} receipts read)")
    latencies = [receipts.confirmed_at[nid] - at for nid, at in handed.items()]
    say(f"  publish → confirmation: {percentiles(latencies)}")
    channels = Counter(receipts.channels[nid] for nid in handed)
    say(f"  confirmed on: {dict(channels.most_common())}")

    await asyncio.sleep(0.5)  # SMS delivery reports and posting are done; let them settle
    after = sims.taken()
    counts = {name: after[name].total() - before[name].total() for name in after}
    twice = sum(1 for counter in after.values() for n in counter.values() if n > 1)
    say(
        "  simulators took: "
        + ", ".join(f"{name} {n:,}" for name, n in counts.items())
        + f" — {sum(counts.values()):,} in all; {twice} keys sent twice"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--mix", choices=("eadrese", "email", "mixed"), default="mixed")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    setting_option(parser, "batch_size", "the service's HUB_BATCH_SIZE")
    setting_option(parser, "fetch_concurrency", "the service's HUB_FETCH_CONCURRENCY")
    args = parser.parse_args()
    if args.count < 1 or not 0 <= args.fault_rate <= 1:
        parser.error("--count must be positive and --fault-rate between 0 and 1")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
