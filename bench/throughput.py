"""Hub throughput: registry events from the VPS feed to the allocation state, against a bare
aiokafka produce → consume of the same messages, on the same embedded broker in the same run.

    .venv/bin/python bench/throughput.py [--children 5000] [--institutions 10]
        [--fault-rate 0] [--seed 1]

Set-up (not timed): the embedded broker and every topic of the catalogue; the VPS simulator,
served by this process on loopback, holding a synthetic municipality of ``--children``
applications (its feed: one ``institution.registered`` per institution, then for every child
an ``application.submitted`` and a ``residence.declared``); the VPS adapter and the
allocation service, each in its own process (``python -m hub run vps-adapter`` and
``python -m hub run allocation``, as deployed). The allocation service is warmed up until it
has applied one message of the benchmark's own (its consumer group then has its partitions);
the adapter's first feed request is held at the simulator meanwhile.

Hub path: the clock starts when the feed opens to that waiting request and stops when the
allocation service's store has applied every registry event the adapter published: each
institution, application and residence is in its inbox (and every child in its ``children``
table), read from the service's SQLite file by a read-only connection of this process every
50 ms. Events/s is the number of those events over that time. The adapter alone is timed
too: from the same start to the moment its store has read the whole feed and published
every message (acknowledged by the broker) — the first half of the path. Both services run
with the settings' defaults (batches of 500, ``HUB_FETCH_MAX_WAIT`` as ``--fetch-max-wait``);
the adapter reads the feed 200 entries a page.

The allocation service also asks for each new child's enrolment (``CheckEnrollment``) and
address (``ResolveAddress``); no VIIS or GIS adapter runs here, so those requests stay on
their topics. The figure is registry events to allocation state, not enrichment.

Bare path: the messages the hub path put on ``vps.pii.institutions.v1``,
``vps.pii.applications.v1`` and ``vps.population.residence.v1`` are read back as raw records
(key, value, headers) and produced, in the order the adapter published them, with a plain
``AIOKafkaProducer`` (the hub's producer settings: acks=all, linger 5 ms) to three fresh
topics with the same partition counts; a plain ``AIOKafkaConsumer`` (a consumer group from
the earliest offset, joined before the clock starts, offsets committed per fetched batch, no
parsing) reads them. The clock runs from the first send to the last record read.

Printed: a calibration line, progress, then a table of events, seconds and events/s for each
path and the ratio hub / bare. Logs go to stderr; the services' own logs to
``<data dir>/<service>.log`` (the data directory is removed after a successful run unless
``--keep``). Counts only: no personal code is printed or logged.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from starlette.types import Receive, Scope, Send

from bench.calibration import python_speed
from bench.options import setting_option
from hub.embedded import EmbeddedBroker
from hub.kafka import ensure_topics, publish_messages
from hub.reliability.deadletters import header, read_topic
from hub.reliability.store import unpublished
from hub.settings import Settings
from schemas.institutions import InstitutionRegistered
from schemas.topics import ALLOCATION, DEAD_LETTERS, VPS, retry_topic
from simulators.messages import application_form
from simulators.municipality import SyntheticMunicipality
from simulators.plugin import simulator_apps
from simulators.process import ServiceProcess, ServiceProcessError
from simulators.serving import serving
from simulators.vps.app import ApplicationIn, Register

TOWN = "riga"
REGISTRY_TOPICS = (
    "vps.pii.institutions.v1",
    "vps.pii.applications.v1",
    "vps.population.residence.v1",
)
WARM_UP_ID = "BENCH-WARMUP"
POLL = 0.05
PROGRESS = 5.0


def say(text: str) -> None:
    print(text, flush=True)


class Failed(RuntimeError):
    """The run could not finish; the message says why and where the logs are."""


# --------------------------------------------------------------------------- the VPS side


class FeedWatch:
    """ASGI wrapper around the VPS simulator that holds the feed shut until :meth:`open`.

    The adapter's first feed request waits here while the allocation service warms up, so
    the clock starts with both services running; it notes when that request came and when
    the first one was let through.
    """

    def __init__(self, app: Any) -> None:
        self.app: Any = app
        self.gate = asyncio.Event()
        self.asked: float | None = None
        self.first: float | None = None
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/events":
            self.requests += 1
            if self.asked is None:
                self.asked = time.perf_counter()
            await self.gate.wait()
            if self.first is None:
                self.first = time.perf_counter()
        await self.app(scope, receive, send)

    def open(self) -> None:
        self.gate.set()

    def release(self) -> None:
        self.gate.set()
        self.app.release()  # let go of requests held by injected timeouts


def fill(register: Register, town: SyntheticMunicipality) -> None:
    """Submit every child's application to the simulator's register before the clock starts.

    The same code the simulator's ``POST /v1/applications`` runs, called directly: over HTTP
    it would only add untimed minutes to the set-up.
    """
    for n, child in enumerate(town.children, 1):
        register.submit(ApplicationIn.model_validate(application_form(child)))
        if n % 5000 == 0 and n < len(town.children):
            say(f"  … {n:,}/{len(town.children):,} applications submitted")


# --------------------------------------------------------------------------- watching stores


class StoreReader:
    """Counts in another process's SQLite store, read by a read-only connection of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def scalar(self, sql: str) -> Any:
        """The first column of the first row; None while the store or the table is not there."""
        try:
            if self._db is None:
                if not self.path.exists():
                    return None
                self._db = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, timeout=5, isolation_level=None
                )
            row = self._db.execute(sql).fetchone()
        except sqlite3.OperationalError:
            return None  # not created yet
        return row[0] if row else None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


@dataclass
class HubRun:
    """What the hub path did; times are ``time.perf_counter()`` readings."""

    first_poll: float | None = None
    adapter_done: float | None = None
    children_done: float | None = None
    all_done: float | None = None
    feed_requests: int = 0
    faults: int = 0
    parked: Counter[str] = field(default_factory=Counter)
    dead: int = 0
    notes: list[str] = field(default_factory=list)


def feed_read(position: str | None) -> int:
    """The number of the last feed entry the adapter has stored (``<feed id>:<seq>``)."""
    if not position:
        return 0
    return int(position.rpartition(":")[2])


# --------------------------------------------------------------------------- hub path


async def warm_up(bootstrap: str, allocation: ServiceProcess, address_code: str) -> float:
    """Publish one institution of the benchmark's own and wait until the service has it: its
    consumer group then has every partition. Returns the seconds it took."""
    started = time.perf_counter()
    marker = InstitutionRegistered.new(
        producer=VPS,
        municipality=TOWN,
        institution_id=WARM_UP_ID,
        name="Benchmark warm-up",
        address_code=address_code,
        pools=(),
    )
    await publish_messages(bootstrap, [marker])
    await allocation.wait_for(
        lambda s: s["institutions"] >= 1,
        "warming up",
        180,
        progress=lambda _: say("  … waiting for the allocation service's consumer group"),
    )
    return time.perf_counter() - started


@dataclass(frozen=True)
class Feed:
    """The served VPS simulator: its URL, its watch, and how much its feed holds."""

    url: str
    watch: FeedWatch
    entries: int
    children: int


async def hub_path(
    adapter: ServiceProcess, data: Path, feed: Feed, args: argparse.Namespace
) -> HubRun:
    """Open the feed to the waiting adapter; poll both stores until every event is applied."""
    run = HubRun()
    watch, entries, children = feed.watch, feed.entries, feed.children
    adapter_store = StoreReader(data / f"{VPS}.sqlite3")
    allocation_store = StoreReader(data / f"{ALLOCATION}.sqlite3")
    # Every registry event and the warm-up institution, once each, in the service's inbox.
    target = entries + 1
    try:
        watch.open()
        opened = shown = time.perf_counter()
        while run.all_done is None:
            await asyncio.sleep(POLL)
            now = time.perf_counter()
            if (why := adapter.exited()) is not None:
                raise Failed(f"{why.splitlines()[0]}; see {adapter.log}")
            read = feed_read(adapter_store.scalar("SELECT position FROM poll_positions"))
            waiting = unpublished(adapter_store.path) if read else 0
            if run.adapter_done is None and read >= entries and waiting == 0:
                run.adapter_done = now
            applied = allocation_store.scalar("SELECT count(*) FROM inbox") or 0
            stored = allocation_store.scalar("SELECT count(*) FROM children") or 0
            if run.children_done is None and stored >= children:
                run.children_done = now
            if applied >= target and stored >= children:
                run.all_done = now
            elif now - opened > args.timeout:
                raise Failed(
                    f"timed out after {args.timeout:.0f} s: the adapter read {read:,}/{entries:,}"
                    f" feed entries, the allocation service applied {applied:,}/{target:,}"
                    f" messages; see {adapter.log} and {data / 'allocation.log'}"
                )
            elif now - shown >= PROGRESS:
                shown = now
                say(
                    f"  … {now - opened:.0f} s: the adapter has read {read:,}/{entries:,}"
                    f" feed entries ({max(read - waiting, 0):,} published); the allocation"
                    f" service applied {max(applied - 1, 0):,} ({stored:,} children stored)"
                )
        run.first_poll = watch.first or opened
        if run.adapter_done is None:
            run.adapter_done = run.all_done
    finally:
        adapter_store.close()
        allocation_store.close()
    return run


async def adapter_waiting(watch: FeedWatch, adapter: ServiceProcess, timeout: float) -> None:
    """Until the adapter's first feed request is held at the gate."""
    began = shown = time.perf_counter()
    while watch.asked is None:
        await asyncio.sleep(POLL)
        if (why := adapter.exited()) is not None:
            raise Failed(f"{why.splitlines()[0]}; see {adapter.log}")
        if time.perf_counter() - began > timeout:
            raise Failed(f"the VPS adapter did not ask for the feed in {timeout:.0f} s")
        if time.perf_counter() - shown >= PROGRESS:
            shown = time.perf_counter()
            say("  … waiting for the VPS adapter's first feed request")


# --------------------------------------------------------------------------- bare path


async def read_back(bootstrap: str) -> list[tuple[str, ConsumerRecord[Any, Any]]]:
    """What the adapter published on the registry topics, oldest first (the warm-up left out)."""
    records = []
    for topic in REGISTRY_TOPICS:
        for record in await read_topic(bootstrap, topic):
            if not (topic == REGISTRY_TOPICS[0] and record.key == WARM_UP_ID.encode()):
                records.append((topic, record))
    records.sort(key=lambda tr: (tr[1].timestamp, tr[0], tr[1].partition, tr[1].offset))
    return records


async def bare_path(
    bootstrap: str,
    records: list[tuple[str, ConsumerRecord[Any, Any]]],
    partitions: dict[str, int],
    fetch_max_wait: float,
) -> tuple[float, float]:
    """Produce the records to fresh topics and consume them; (seconds to the last ack,
    seconds to the last record read), both from the first send."""
    run = uuid.uuid4().hex[:8]
    mirror = {topic: f"bench.throughput.{run}.{topic}" for topic in REGISTRY_TOPICS}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(mirror[t], num_partitions=partitions[t], replication_factor=1)
                for t in mirror
            ]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    consumer = AIOKafkaConsumer(
        *mirror.values(),
        bootstrap_servers=bootstrap,
        group_id=f"bench-throughput-bare-{run}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=int(fetch_max_wait * 1000),
    )
    await producer.start()
    await consumer.start()
    try:
        for topic in mirror.values():
            await producer.partitions_for(topic)  # metadata before the clock starts
        wanted = sum(partitions[t] for t in mirror)
        began = shown = time.perf_counter()
        while len(consumer.assignment()) < wanted:
            await consumer.getmany(timeout_ms=100)
            if time.perf_counter() - began > 180:
                raise Failed("the bare consumer's group got no partitions in 180 s")
            if time.perf_counter() - shown >= PROGRESS:
                shown = time.perf_counter()
                say("  … waiting for the bare consumer's group")
        total = len(records)
        acked: list[float] = []

        async def produce() -> None:
            sends = [
                await producer.send(
                    mirror[topic], r.value, key=r.key, headers=list(r.headers or ())
                )
                for topic, r in records
            ]
            await asyncio.gather(*sends)
            acked.append(time.perf_counter())

        started = time.perf_counter()
        sending = asyncio.create_task(produce())
        got = 0
        while got < total:
            batch = await consumer.getmany(timeout_ms=1000)
            got += sum(len(rs) for rs in batch.values())
            if batch:
                await consumer.commit()
            if sending.done() and sending.exception() is not None:
                raise Failed(f"the bare producer failed: {sending.exception()!r}")
            if time.perf_counter() - started > 600:
                raise Failed(f"the bare consumer read only {got:,}/{total:,} records in 600 s")
        consumed = time.perf_counter()
        await sending
        return acked[0] - started, consumed - started
    finally:
        await consumer.stop()
        await producer.stop()


# --------------------------------------------------------------------------- the run


def row(path: str, events: int, seconds: float, bare: float | None) -> str:
    rate = events / seconds
    share = "—" if bare is None else f"{rate / bare:.1%}"
    return f"| {path} | {events:,} | {seconds:.2f} | {rate:,.0f} | {share} |"


async def hub_side(
    bootstrap: str, data: Path, settings: Settings, town: SyntheticMunicipality, args: Any
) -> tuple[HubRun, int]:
    """Fill and serve the VPS feed, start both services, run the hub path. Returns the run
    and the number of feed entries."""
    vps = simulator_apps(settings, ("vps",), town=town)["vps"]
    register: Register = vps.app.state.register
    fill(register, town)
    entries = len(register.events)
    say(
        f"VPS feed of synthetic '{TOWN}': {len(town.institutions)} institutions,"
        f" {len(town.children):,} applications → {entries:,} feed entries"
        f" (fault rate {args.fault_rate:g})"
    )
    watch = FeedWatch(vps)
    async with serving(watch, name="vps") as served:
        tuning: dict[str, float] = {"fetch_max_wait": args.fetch_max_wait}
        adapter = ServiceProcess(
            bootstrap,
            data,
            TOWN,
            service="vps-adapter",
            env={"HUB_VPS_URL": served.url},
            http_timeout=args.http_timeout,
            **tuning,
        )
        allocation = ServiceProcess(bootstrap, data, TOWN, **tuning)
        try:
            spawned = time.perf_counter()
            await adapter.start()
            await allocation.start()
            api = time.perf_counter() - spawned
            took = await warm_up(bootstrap, allocation, town.institutions[0].address_code)
            await adapter_waiting(watch, adapter, 300)
            assert watch.asked is not None
            say(
                "both services run in their own processes (python -m hub run vps-adapter,"
                f" python -m hub run allocation): the allocation API answered {api:.1f} s"
                f" after the start and applied a warm-up message {took:.1f} s later; the"
                f" adapter asked for the feed {watch.asked - spawned:.1f} s after the start"
                " (held until now); the clock starts as the feed opens"
            )
            feed = Feed(served.url, watch, entries, len(town.children))
            hub = await hub_path(adapter, data, feed, args)
        except ServiceProcessError as exc:
            raise Failed(str(exc)) from None
        finally:
            codes = await asyncio.gather(adapter.stop(), allocation.stop())
            await asyncio.gather(adapter.close(), allocation.close())
    for service, code in zip((adapter, allocation), codes, strict=True):
        if code not in (0, None):
            hub.notes.append(f"{service.service} did not stop cleanly ({code}); see {service.log}")
    hub.feed_requests = watch.requests
    hub.faults = sum(n for f, n in vps.injected.items() if f != "none")
    hub.parked = Counter(
        header(r.headers, "retry-source-topic") or "?"
        for r in await read_topic(bootstrap, retry_topic(ALLOCATION))
    )
    hub.dead = len(await read_topic(bootstrap, DEAD_LETTERS))
    return hub, entries


def report(hub: HubRun, entries: int, produced: float, consumed: float, town: Any) -> None:
    assert hub.first_poll is not None and hub.adapter_done is not None
    assert hub.all_done is not None and hub.children_done is not None
    hub_seconds = hub.all_done - hub.first_poll
    parked = ", ".join(f"{n:,} from {topic}" for topic, n in hub.parked.most_common()) or "none"
    say("")
    say(f"{hub.feed_requests} feed requests, {hub.faults} of them answered with an injected fault")
    say(
        f"allocation service: every child stored after {hub.children_done - hub.first_poll:.2f}"
        f" s, every event applied after {hub_seconds:.2f} s; {hub.dead} dead letters; parked"
        f" to be tried again: {parked}"
    )
    for note in hub.notes:
        say(f"note: {note}")
    bare = entries / consumed
    say("")
    say("| path | events | seconds | events/s | of bare |")
    say("|---|---|---|---|---|")
    say(row("hub: VPS feed → adapter → topics → allocation state", entries, hub_seconds, bare))
    say(
        row(
            "  the VPS adapter alone: feed → topics",
            entries,
            hub.adapter_done - hub.first_poll,
            bare,
        )
    )
    say(row("bare aiokafka: produce → consume, same messages", entries, consumed, bare))
    say(row("  bare sends acknowledged (while consuming)", entries, produced, None))
    say("")
    say(
        f"hub / bare = {consumed / hub_seconds:.1%} ({entries / hub_seconds:,.0f} vs"
        f" {bare:,.0f} events/s; events: {len(town.institutions)} institutions,"
        f" {len(town.children):,} applications, {len(town.children):,} residences; the hub's"
        " services in their own processes, the bare clients in this one)"
    )


async def run(args: argparse.Namespace) -> None:
    """Measure in a data directory of its own: removed afterwards unless ``--keep``, or kept
    when the run failed (the error names the logs there)."""
    data = Path(tempfile.mkdtemp(prefix="hub-throughput-"))
    try:
        await measure(args, data)
    except Failed:
        raise
    except BaseException:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
        raise
    if args.keep:
        say(f"data and logs kept in {data}")
    else:
        shutil.rmtree(data, ignore_errors=True)


async def measure(args: argparse.Namespace, data: Path) -> None:
    say(python_speed())
    town = SyntheticMunicipality(
        TOWN, seed=args.seed, children=args.children, institutions=args.institutions
    )
    async with EmbeddedBroker(log_dir=data) as broker:
        bootstrap = broker.bootstrap
        settings = Settings(
            _env_file=None,
            bootstrap_servers=bootstrap,
            data_dir=data,
            municipality=TOWN,
            sim_seed=args.seed,
            sim_fault_rate=args.fault_rate,
            http_timeout=args.http_timeout,
        )
        statuses = await ensure_topics(settings, bootstrap)
        say(f"embedded broker at {bootstrap}; {len(statuses)} topics ready")
        hub, entries = await hub_side(bootstrap, data, settings, town, args)
        records = await read_back(bootstrap)
        if len(records) != entries:
            raise Failed(
                f"the registry topics hold {len(records):,} messages, the feed {entries:,}"
                " entries (a message repeated or missing)"
            )
        size = sum(len(r.value) for _, r in records)
        say(
            f"hub path done: {entries:,} messages on the registry topics"
            f" (~{size / entries:,.0f} bytes each), read back for the bare path"
        )
        say("bare aiokafka: producing and consuming the same messages …")
        partitions = {s.name: s.partitions for s in statuses}
        produced, consumed = await bare_path(bootstrap, records, partitions, args.fetch_max_wait)
    report(hub, entries, produced, consumed, town)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--children", type=int, default=5000, help="applications in the feed (default 5000)"
    )
    parser.add_argument(
        "--institutions", type=int, default=10, help="institutions in the feed (default 10)"
    )
    parser.add_argument("--seed", type=int, default=1, help="synthetic municipality's seed")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="share of the simulator's answers to the adapter that are faults (503, 429,"
        " timeout, malformed; default 0)",
    )
    setting_option(
        parser,
        "http_timeout",
        "the adapter's HUB_HTTP_TIMEOUT, seconds (an injected timeout fault holds an answer"
        " just past it)",
    )
    setting_option(
        parser,
        "fetch_max_wait",
        "HUB_FETCH_MAX_WAIT of both services, and the bare consumer's fetch wait, seconds",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="give up on the hub path after this long"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the data directory (stores, logs) afterwards"
    )
    args = parser.parse_args(argv)
    if args.children < 1 or args.institutions < 1 or not 0 <= args.fault_rate < 1:
        parser.error("need --children >= 1, --institutions >= 1 and 0 <= --fault-rate < 1")
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    try:
        asyncio.run(stoppable(run(args)))
    except Failed as exc:
        raise SystemExit(f"throughput: {exc}") from None
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise SystemExit("throughput: stopped") from None


async def stoppable(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work``; SIGTERM cancels it as Ctrl-C does, so the services and the broker (each
    in a process of its own) are stopped on the way out rather than left running."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    await work


if __name__ == "__main__":
    main()
