"""The ``hub`` command.

    hub broker                 run the embedded Kafka broker until Ctrl-C / SIGTERM
    hub topics create          create the catalogue's topics (safe to repeat)
    hub topics list            print the catalogue
    hub asyncapi [-o FILE]     write the AsyncAPI document of all topics and messages
    hub demo                   run the demo on the embedded (or configured) broker
    hub allocate INSTANCE …    compute a round's admission lists from a file
    hub dlq list|show|replay   inspect and replay dead letters
    hub run allocation         run the allocation service until Ctrl-C / SIGTERM
    hub allocation rebuild     rebuild the allocation service's state from the topics
    hub round start …          publish a one-click admission round command
    hub queue CHILD_REF        where a child stands, from the allocation service
    hub clock show|advance|set the simulated clock of a simulation (HUB_SIMULATION=true)

Settings come from HUB_* environment variables (see README). Errors the hub
expects are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from hub import __version__
from hub.errors import BrokerUnavailable, ConfigurationError, HubError
from hub.observability import setup_logging
from hub.services import SERVICES
from hub.settings import Settings, load_settings


def _service_commands(commands: Any) -> None:
    """``hub run`` and ``hub simulate``."""
    run = commands.add_parser("run", help="run a service until Ctrl-C / SIGTERM")
    run.add_argument(
        "service",
        choices=(*SERVICES, "all"),
        help="which service, or all of them in one process (adapters find their system at"
        " HUB_<SYSTEM>_URL); each serves /health and /metrics on HUB_HEALTH_PORT",
    )
    simulate = commands.add_parser(
        "simulate", help="serve simulators of the external systems on loopback until Ctrl-C"
    )
    simulate.add_argument(
        "system",
        choices=("vps", "viis", "gis", "dvs", "eadrese", "sms", "letter", "smtp", "all"),
        help="which system, or all",
    )
    simulate.add_argument("--seed", type=int, help="synthetic municipality seed (HUB_SIM_SEED)")
    simulate.add_argument("--children", type=int, help="children, 50–30000 (HUB_SIM_CHILDREN)")
    simulate.add_argument(
        "--fault-rate", type=float, help="share of requests faulted, 0–1 (HUB_SIM_FAULT_RATE)"
    )
    simulate.add_argument(
        "--latency", type=float, help="seconds added per answer (HUB_SIM_LATENCY)"
    )
    simulate.add_argument(
        "--openapi",
        type=Path,
        metavar="DIR",
        help="write each simulator's OpenAPI document to DIR/<system>.openapi.json and exit",
    )


def _demo_command(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="play a whole admission season end to end, every service and simulator"
    )
    demo.add_argument("--children", type=_positive, default=5000, help="children (5000)")
    demo.add_argument("--institutions", type=_positive, default=40, help="institutions (40)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the synthetic municipality (7)")
    demo.add_argument(
        "--faults",
        type=_share,
        default=0.02,
        help="share of requests every simulator answers with a fault, 0–1 (0.02)",
    )
    demo.add_argument("--accept", type=_share, default=0.7, help="share of offers accepted (0.7)")
    demo.add_argument(
        "--decline", type=_share, default=0.15, help="share declined (0.15); the rest stay silent"
    )
    demo.add_argument(
        "--timeout", type=_positive, default=600, help="seconds any one step may take (600)"
    )


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number from 0 to 1") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("expected a number from 0 to 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hub", description="Integration hub for Latvian municipalities (Kafka)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    broker = commands.add_parser("broker", help="run the embedded Kafka broker on 127.0.0.1")
    broker.add_argument(
        "--port", type=int, help="port to listen on (default: HUB_BROKER_PORT or a free one)"
    )

    topics = commands.add_parser("topics", help="manage the catalogue's topics")
    topic_commands = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    topic_commands.add_parser("create", help="create missing topics on the configured cluster")
    topic_commands.add_parser("list", help="print the topic catalogue")

    spec = commands.add_parser("asyncapi", help="write the AsyncAPI document")
    spec.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")

    _demo_command(commands)

    allocate = commands.add_parser(
        "allocate", help="compute a round's admission lists from an instance file"
    )
    allocate.add_argument(
        "instance",
        nargs="?",
        type=Path,
        metavar="INSTANCE",
        help="instance: a .json file, or Riga's open-data queue as .csv (with --seats)",
    )
    allocate.add_argument(
        "--rules", help="rules: a shipped municipality (riga, liepaja, daugavpils) or a .toml path"
    )
    allocate.add_argument("--date", type=_iso_date, help="round date, YYYY-MM-DD")
    allocate.add_argument("--out", type=Path, help="result file to write (.json)")
    allocate.add_argument("--seats", type=Path, help="seats per group (.csv), for a Riga queue CSV")
    allocate.add_argument(
        "--schema",
        choices=("instance", "result"),
        help="print the JSON Schema of the instance or result format and exit",
    )
    _service_commands(commands)

    allocation = commands.add_parser("allocation", help="the allocation service's state")
    allocation_commands = allocation.add_subparsers(
        dest="allocation_command", required=True, metavar="ACTION"
    )
    rebuild = allocation_commands.add_parser(
        "rebuild",
        help="rebuild the state from the journal and input topics; compare with the live store",
    )
    rebuild.add_argument("--municipality", help="municipality (default: HUB_MUNICIPALITY)")
    rebuild.add_argument(
        "--output",
        type=Path,
        help="database to write (default: HUB_DATA_DIR/allocation.rebuilt.sqlite3)",
    )

    round_ = commands.add_parser("round", help="admission rounds")
    round_commands = round_.add_subparsers(dest="round_command", required=True, metavar="ACTION")
    start = round_commands.add_parser("start", help="publish a RunRound command")
    start.add_argument("--municipality", help="municipality (default: HUB_MUNICIPALITY)")
    start.add_argument("--date", type=_iso_date, required=True, help="round date, YYYY-MM-DD")
    start.add_argument("--by", default=os.environ.get("USER", "operator"), help="operator name")

    queue = commands.add_parser("queue", help="where a child stands (status, queues, why not)")
    queue.add_argument("child_ref", metavar="CHILD_REF")
    queue.add_argument("--json", action="store_true", help="print the service's JSON answer")

    dlq = commands.add_parser("dlq", help="inspect and replay dead letters")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    listing = dlq_commands.add_parser("list", help="list dead letters, oldest first")
    show = dlq_commands.add_parser("show", help="show one dead letter")
    show.add_argument("id", metavar="ID", help="dead-letter id (a unique prefix will do)")
    show.add_argument("--reveal", action="store_true", help="do not mask personal codes")
    again = dlq_commands.add_parser("replay", help="republish dead letters to their topics")
    again.add_argument("--dry-run", action="store_true", help="only say what would be replayed")
    for sub in (listing, again):
        sub.add_argument("--topic", help="only those from this original topic")
        sub.add_argument("--service", help="only those of this service")
        sub.add_argument("--since", type=_moment, help="only those dead-lettered since (ISO 8601)")
        sub.add_argument(
            "--reason",
            action="append",
            choices=("invalid_message", "refused", "retries_exhausted", "handler_error"),
            help="only those dead-lettered for this reason (repeatable); replay leaves"
            " invalid_message out unless asked for",
        )
    _ops_command(commands)
    _clock_command(commands)
    return parser


def _ops_command(commands: Any) -> None:
    """``hub ops``."""
    ops = commands.add_parser("ops", help="serve the operations view (a web page) on 127.0.0.1")
    ops.add_argument("--port", type=int, help="port to listen on (HUB_OPS_PORT, 8700)")


def _clock_command(commands: Any) -> None:
    """``hub clock show|advance|set``: the simulated clock of a simulation."""
    clock = commands.add_parser(
        "clock", help="the simulated clock of a simulation (needs HUB_SIMULATION=true)"
    )
    actions = clock.add_subparsers(dest="clock_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print the simulated time and its offset")
    advance = actions.add_parser("advance", help="move the simulated clock forward by a duration")
    advance.add_argument("duration", metavar="DURATION", help="such as 20d, 36h, 90m, 45s, 1d12h")
    set_ = actions.add_parser("set", help="move the simulated clock forward to a time")
    set_.add_argument(
        "moment", metavar="ISO_DATETIME", help="with its time zone, such as 2026-12-01T09:00+02:00"
    )
    for sub in (show, advance, set_):
        sub.add_argument("--municipality", help="municipality (default: HUB_MUNICIPALITY)")
    for sub in (advance, set_):
        sub.add_argument("--by", default=os.environ.get("USER", "operator"), help="operator name")


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a time such as 2026-05-04T09:00+03:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a date as YYYY-MM-DD") from None


def run_async(work: Any) -> Any:
    """Run ``work`` on uvloop's event loop where it is installed (the services' HTTP, Kafka
    and SQLite traffic share one loop per process, and uvloop's is the faster one)."""
    try:
        from uvloop import new_event_loop
    except ImportError:
        new_event_loop = None  # type: ignore[assignment]
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(work)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        setup_logging(settings.log_level)
        return _dispatch(args, settings)
    except HubError as exc:
        print(f"hub: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "broker":
        return run_async(_broker(settings, args.port))
    if args.command == "topics" and args.topics_command == "create":
        return run_async(_topics_create(settings))
    if args.command == "topics":
        _topics_list()
        return 0
    if args.command == "asyncapi":
        return _asyncapi(args.output)
    if args.command == "demo":
        return run_async(_demo(settings, args))
    if args.command == "allocate":
        return _allocate(args)
    if args.command == "dlq":
        return run_async(_dlq(settings, args))
    if args.command == "run":
        return run_async(_run(settings, args.service))
    if args.command == "simulate":
        return run_async(_simulate(settings, args))
    if args.command == "allocation":
        return run_async(_rebuild(settings, args))
    if args.command == "round":
        return run_async(_round_start(settings, args))
    if args.command == "queue":
        return _queue(settings, args)
    if args.command == "ops":
        return run_async(_ops(settings, args.port or settings.ops_port))
    if args.command == "clock":
        return run_async(_clock(settings, args))
    raise AssertionError(f"unhandled command {args.command}")


async def _broker(settings: Settings, port: int | None) -> int:
    from hub.embedded import EmbeddedBroker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with EmbeddedBroker(
        port=port or settings.broker_port, log_dir=settings.data_dir
    ) as broker:
        print(f"Kafka broker ready: bootstrap {broker.bootstrap}", flush=True)
        print(f"  use it with: HUB_BOOTSTRAP_SERVERS={broker.bootstrap}", flush=True)
        print("  memory storage only; Ctrl-C stops it", flush=True)
        await stop.wait()
        print("stopping the broker …", flush=True)
    print("broker stopped", flush=True)
    return 0


async def _topics_create(settings: Settings) -> int:
    from hub.kafka import ensure_topics, kafka_cluster

    if not settings.bootstrap_servers:
        raise ConfigurationError(
            "HUB_BOOTSTRAP_SERVERS is not set; start `hub broker` (or a Kafka cluster) and set it"
        )
    async with kafka_cluster(settings) as bootstrap:
        report = await ensure_topics(settings, bootstrap)
    for status in report:
        state = "created" if status.created else "exists"
        note = f" (catalogue wants {status.wanted_partitions})" if status.under_partitioned else ""
        print(f"{status.name:<36} {state:<8} partitions={status.partitions}{note}")
    return 0


def _topics_list() -> None:
    from schemas.topics import TOPICS

    for t in TOPICS:
        print(f"{t.name}  key={t.key}  partitions={t.partitions}")
        print(f"    {t.producer} → {', '.join(t.consumers)}")
        print(f"    {', '.join(m.__name__ for m in t.messages)}")


def _asyncapi(output: Path | None) -> int:
    from hub.contracts import asyncapi_yaml

    document = asyncapi_yaml()
    if output is None:
        sys.stdout.write(document)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(document, encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)
    return 0


async def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from simulators.demo import Scenario, run_demo

    with contextlib.suppress(AttributeError):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    scenario = Scenario(
        children=args.children,
        institutions=args.institutions,
        seed=args.seed,
        faults=args.faults,
        accept=args.accept,
        decline=args.decline,
        timeout=args.timeout,
    )
    result = await run_demo(settings, scenario)
    return 0 if result.passed else 1


_PROBLEMS_SHOWN = 20


def _allocate(args: argparse.Namespace) -> int:
    from hub.allocation.engine import Allocator
    from hub.allocation.formats import (
        AllocationInputError,
        build_result,
        read_instance,
        schema_text,
        write_result,
    )
    from hub.allocation.rules import load_rules

    if args.schema:
        sys.stdout.write(schema_text(args.schema))
        return 0
    given = (
        ("INSTANCE", args.instance),
        ("--rules", args.rules),
        ("--date", args.date),
        ("--out", args.out),
    )
    missing = [name for name, value in given if value is None]
    if missing:
        raise AllocationInputError(f"hub allocate needs {', '.join(missing)} (or --schema)")
    rules = load_rules(args.rules)
    instance, problems = read_instance(args.instance, args.seats)
    sources = args.instance if args.seats is None else f"{args.instance} and {args.seats}"
    print(
        f"read {len(instance.children):,} children, {len(instance.institutions):,} institutions"
        f" from {sources}",
        file=sys.stderr,
    )
    for problem in problems[:_PROBLEMS_SHOWN]:
        print(problem, file=sys.stderr)
    if len(problems) > _PROBLEMS_SHOWN:
        print(f"… and {len(problems) - _PROBLEMS_SHOWN:,} more", file=sys.stderr)
    started = time.perf_counter()
    allocator = Allocator(instance, rules, args.date)
    report = allocator.report()
    print(f"round computed in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    result = build_result(allocator, report)
    write_result(result, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    summary = result.summary
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in summary.unplaced_by_reason.items())
    round_name = f"{rules.municipality}, round of {args.date}"
    print(f"{round_name}: {summary.children:,} children, {summary.seats:,} seats")
    print(f"  placed    {summary.placed:,}")
    print(f"  held      {summary.held:,}")
    print(f"  unplaced  {summary.unplaced:,}" + (f" ({reasons})" if reasons else ""))
    return 0


async def _dlq(settings: Settings, args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from hub.kafka import client_options
    from hub.reliability import deadletters as dl

    if not settings.bootstrap_servers:
        raise ConfigurationError("HUB_BOOTSTRAP_SERVERS is not set: which cluster's dead letters?")
    options = client_options(settings)
    try:
        letters = await dl.dead_letters(settings.bootstrap_servers, **options)
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"cannot read dead letters from {settings.bootstrap_servers}: {exc!r}"
        ) from None
    if args.dlq_command == "show":
        try:
            letter = dl.find(letters, args.id)
        except LookupError as exc:
            raise HubError(str(exc)) from None
        _print_dead_letter(letter, reveal=args.reveal)
        return 0
    reasons = args.reason
    if reasons is None and args.dlq_command == "replay":
        reasons = ["refused", "retries_exhausted", "handler_error"]  # invalid bytes stay invalid
    chosen = dl.select(
        letters, topic=args.topic, service=args.service, reasons=reasons, since=args.since
    )
    if args.dlq_command == "list":
        for d in chosen:
            error = dl.masked(d.error.encode()).decode()[:80]
            print(
                f"{d.id[:8]}  {d.dead_at:%Y-%m-%d %H:%M:%S}  {d.service:<16} {d.reason:<17}"
                f" {d.source_topic}:{d.source_partition}:{d.source_offset}  {d.error_type}: {error}"
            )
        print(f"{len(chosen)} dead letter(s)", file=sys.stderr)
        return 0
    if args.dry_run:
        for d in chosen:
            print(f"would replay {d.id[:8]} to {d.source_topic}")
        print(f"{len(chosen)} dead letter(s) would be replayed", file=sys.stderr)
        return 0
    try:
        sent = await dl.replay(chosen, settings.bootstrap_servers, **options)
    except KafkaError as exc:
        raise BrokerUnavailable(f"replay to {settings.bootstrap_servers} failed: {exc!r}") from None
    print(f"replayed {sent} dead letter(s); consumers skip any already applied", file=sys.stderr)
    if skipped := len(chosen) - sent:
        print(
            f"{skipped} dead letter(s) came from a system's feed, not a topic: correct the entry"
            " at the source system (it is read again only if the feed gives it again)",
            file=sys.stderr,
        )
    return 0


async def _ops(settings: Settings, port: int) -> int:
    from hub.kafka import kafka_cluster
    from hub.ops import serve_ops
    from hub.reliability.service import stop_on_signals

    if not settings.bootstrap_servers:
        raise ConfigurationError(
            "HUB_BOOTSTRAP_SERVERS is not set: which cluster should the operations view show?"
        )
    stop = asyncio.Event()
    stop_on_signals(stop)
    ready = asyncio.Event()
    async with kafka_cluster(settings) as bootstrap:
        serving = asyncio.create_task(serve_ops(settings, bootstrap, stop, port=port, ready=ready))
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait([serving, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if ready.is_set():
            print(f"operations view of {bootstrap}: http://127.0.0.1:{port}/  (Ctrl-C stops)")
        await serving  # a taken port raises here, as one line
    return 0


def _print_dead_letter(letter: Any, *, reveal: bool) -> None:
    from hub.reliability.deadletters import masked

    def shown(value: bytes) -> str:
        return (value if reveal else masked(value)).decode("utf-8", "replace")

    print(f"id            {letter.id}")
    print(f"dead at       {letter.dead_at.isoformat()}  (position {letter.position})")
    print(f"service       {letter.service}")
    print(f"reason        {letter.reason}")
    print(f"error         {letter.error_type}: {shown(letter.error.encode())}")
    print(
        f"attempts      {letter.attempts}  first {letter.first_failure}  last {letter.last_failure}"
    )
    source = f"{letter.source_topic} partition {letter.source_partition}"
    print(f"source        {source} offset {letter.source_offset}")
    print(f"key           {shown(letter.key or b'')}")
    for name, value in letter.headers:
        print(f"header        {name}: {shown(value)}")
    try:
        body = json.dumps(json.loads(letter.value), indent=2, ensure_ascii=False).encode()
    except ValueError:
        body = letter.value
    print("value")
    print(shown(body))


async def _run(settings: Settings, name: str) -> int:
    from hub.kafka import ensure_topics, kafka_cluster
    from hub.reliability.service import stop_on_signals
    from hub.services import Task, assemble, health_port
    from hub.wiring import url_setting

    stop = asyncio.Event()
    stop_on_signals(stop)
    async with kafka_cluster(settings) as bootstrap:
        clock = _simulated_clock(settings)
        services = assemble([name], settings, bootstrap, clock=clock)
        await ensure_topics(settings, bootstrap, services=list(services.built))
        tasks: list[Task] = []
        if clock is not None:
            tasks.append(await _follow_clock(settings, bootstrap, clock))
        port = health_port(settings, name)
        for service in services.built:
            system = service.removesuffix("-adapter")
            where = (
                f"API http://{settings.allocation_api}"
                if service == "allocation"
                else "e-adrese, SMTP, SMS and post as configured"
                if system == "notify"
                else f"{system.upper()} at {url_setting(system, settings)}"
            )
            print(f"{service} for {settings.municipality} on {bootstrap}; {where}", file=sys.stderr)
        if port:
            print(f"health: http://127.0.0.1:{port}/health, metrics: /metrics", file=sys.stderr)
        if name == "all":
            from hub.ops import ops_task

            tasks.append(ops_task(settings, bootstrap, port=settings.ops_port))
            print(f"operations view: http://127.0.0.1:{settings.ops_port}/", file=sys.stderr)
        clean = await services.run(stop, port=port, tasks=tasks)
    return 0 if clean else 1


def _simulated_clock(settings: Settings) -> Any:
    """A simulated clock at no offset for ``HUB_CLOCK=simulated`` (None: the system clock)."""
    if settings.clock != "simulated":
        return None
    from hub.clock import SimulatedClock

    return SimulatedClock()


async def _follow_clock(settings: Settings, bootstrap: str, clock: Any) -> Any:
    """Catch ``clock`` up with the moves on the topic before the services start, so that a
    restarted process resumes at the simulated time; the task that follows later moves."""
    from aiokafka.errors import KafkaError

    from hub.clock import catch_up, clock_follower, format_duration
    from hub.kafka import client_options

    options = client_options(settings)
    try:
        await catch_up(clock, bootstrap, settings.municipality, **options)
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"cannot read the simulated clock from {bootstrap}: {exc!r}"
        ) from None
    print(
        f"simulated clock of {settings.municipality}: {clock():%Y-%m-%d %H:%M:%S %Z}"
        f" ({format_duration(clock.offset)} ahead of the system clock)",
        file=sys.stderr,
    )
    return clock_follower(clock, bootstrap, settings.municipality, **options)


async def _clock(settings: Settings, args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from hub.clock import ClockError, advance_clock, format_duration, parse_duration, read_clock
    from hub.kafka import client_options

    if not settings.simulation:
        raise ConfigurationError(
            "hub clock moves a simulation's clock: set HUB_SIMULATION=true (synthetic data and"
            " simulators only)"
        )
    if not settings.bootstrap_servers:
        raise ConfigurationError("HUB_BOOTSTRAP_SERVERS is not set: whose clock?")
    bootstrap = settings.bootstrap_servers
    municipality = args.municipality or settings.municipality
    options = client_options(settings)
    try:
        if args.clock_command == "show":
            clock = await read_clock(bootstrap, municipality, **options)
            offset, last = clock.offset, clock.last_move
            print(f"simulated time  {clock().isoformat(timespec='seconds')}  ({municipality})")
            print(f"offset          {format_duration(offset)} ahead of the system clock")
            if last is None:
                print("moved           never: it reads the system time")
            else:
                print(f"moved           {clock.moves} times, last by {last.requested_by}")
            return 0
        if args.clock_command == "advance":
            moved = await advance_clock(
                bootstrap,
                municipality,
                by=parse_duration(args.duration),
                requested_by=args.by,
                **options,
            )
        else:
            try:
                moment = datetime.fromisoformat(args.moment)
            except ValueError:
                raise ClockError(
                    f"bad time {args.moment!r}: expected ISO 8601 with a time zone, such as"
                    " 2026-12-01T09:00+02:00"
                ) from None
            moved = await advance_clock(
                bootstrap, municipality, to=moment, requested_by=args.by, **options
            )
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"cannot reach the simulated clock on {bootstrap}: {exc!r}"
        ) from None
    print(f"simulated clock of {municipality} moved to {moved.isoformat(timespec='seconds')}")
    return 0


async def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from hub.reliability.service import stop_on_signals
    from hub.wiring import SYSTEMS, openapi_documents, port_of, simulator_apps, url_setting
    from simulators.serving import serving

    overrides = {
        "sim_seed": args.seed,
        "sim_children": args.children,
        "sim_fault_rate": args.fault_rate,
        "sim_latency": args.latency,
    }
    settings = settings.derive(**{k: v for k, v in overrides.items() if v is not None})
    systems = SYSTEMS if args.system == "all" else (args.system,)
    with_smtp = args.system in ("all", "smtp")
    systems = tuple(s for s in systems if s != "smtp")
    if args.openapi is not None:
        args.openapi.mkdir(parents=True, exist_ok=True)
        for system, text in openapi_documents(settings).items():
            if system in systems:
                (args.openapi / f"{system}.openapi.json").write_text(text, encoding="utf-8")
                print(f"wrote {args.openapi / f'{system}.openapi.json'}")
        return 0
    apps = simulator_apps(settings, systems)
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with contextlib.AsyncExitStack() as stack:
        for system in systems:
            url = url_setting(system, settings)
            served = await stack.enter_async_context(
                serving(apps[system], port_of(url), name=system)
            )
            print(f"{system.upper():<7} {served.url}  (API: {served.url}/docs)", flush=True)
        if with_smtp:
            from simulators.smtp import create_server

            smtp = await stack.enter_async_context(
                create_server(
                    port=settings.smtp_port,
                    fault_rate=settings.sim_fault_rate,
                    seed=settings.sim_seed,
                )
            )
            print(f"{'SMTP':<7} smtp://{smtp.host}:{smtp.port}", flush=True)
        print(
            f"synthetic {settings.municipality}: seed {settings.sim_seed},"
            f" {settings.sim_children} children, {settings.sim_institutions} institutions;"
            f" faults {settings.sim_fault_rate:.0%} of requests. Ctrl-C stops.",
            flush=True,
        )
        await stop.wait()
    return 0


async def _rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from hub.allocation.rebuild import counts, differences, rebuild
    from hub.allocation.rules import load_rules
    from hub.kafka import client_options
    from hub.reliability.store import unpublished

    if not settings.bootstrap_servers:
        raise ConfigurationError("HUB_BOOTSTRAP_SERVERS is not set: where are the topics?")
    municipality = args.municipality or settings.municipality
    live = settings.data_dir / "allocation.sqlite3"
    output = args.output or settings.data_dir / "allocation.rebuilt.sqlite3"
    if live.exists() and output.resolve() == live.resolve():
        raise HubError(f"{live} is the live store: write the rebuilt one elsewhere")
    say = functools.partial(print, file=sys.stderr, flush=True)
    done = await rebuild(
        settings.bootstrap_servers,
        rules=load_rules(settings.rules or municipality),
        municipality=municipality,
        output=output,
        say=say,
        **client_options(settings),
    )
    print(
        f"rebuilt {output}: {done.steps:,} steps ({done.messages:,} messages,"
        f" {done.ticks:,} clock ticks)"
    )
    print("  " + ", ".join(f"{table} {n:,}" for table, n in counts(output).items()))
    if done.unsaved:
        print("the rebuilt store does not reload to the replayed state (a change not saved):")
        for line in done.unsaved:
            print(f"  {line}")
    else:
        print("the rebuilt store reloads to the replayed state")
    if not live.exists():
        print(f"no live store at {live} to compare with")
        return 1 if done.unsaved else 0
    if backlog := unpublished(live):
        print(
            f"note: the live store has {backlog:,} unpublished outbox rows, so steps the"
            " journal does not show yet; stop the service for an exact comparison"
        )
    found = differences(live, output)
    if not found:
        print(f"the rebuilt state equals the live one ({live})")
        return 1 if done.unsaved else 0
    print(f"the rebuilt state differs from the live one ({live}):")
    for line in found:
        print(f"  {line}")
    return 1


async def _round_start(settings: Settings, args: argparse.Namespace) -> int:
    import uuid

    from hub.kafka import client_options, publish_messages
    from schemas.allocation import RunRound
    from schemas.topics import OPERATOR

    if not settings.bootstrap_servers:
        raise ConfigurationError(
            "HUB_BOOTSTRAP_SERVERS is not set: where is the allocation service?"
        )
    command = RunRound.new(
        producer=OPERATOR,
        municipality=args.municipality or settings.municipality,
        round_id=uuid.uuid4(),
        round_date=args.date,
        requested_by=args.by,
    )
    await publish_messages(settings.bootstrap_servers, [command], **client_options(settings))
    print(f"round {command.round_id} of {command.municipality} as of {args.date} requested")
    return 0


def _queue(settings: Settings, args: argparse.Namespace) -> int:
    import httpx

    url = f"http://{settings.allocation_api}/children/{args.child_ref}"
    try:
        response = httpx.get(url, timeout=10)
    except httpx.HTTPError as exc:
        raise HubError(f"the allocation service does not answer at {url}: {exc}") from None
    if response.status_code == 404:
        raise HubError(f"the allocation service does not know child {args.child_ref}")
    response.raise_for_status()
    report = response.json()
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    print(f"child {report['child_ref']}  application {report['application_id']}")
    print(f"status {report['status']}")
    if report["missing_facts"]:
        print(f"waiting for facts: {', '.join(report['missing_facts'])}")
    offer = report["offer"]
    if offer:
        deadline = offer["respond_by"] or "not yet notified"
        print(f"offer {offer['institution_id']} / {offer['group']}  answer by {deadline}")
    placement = report["placement"]
    if placement and not offer:
        where = placement["institution_id"] or "-"
        print(f"place: {where} ({placement['kind'] or placement['reason']})")
    for q in report["queue"]:
        print(
            f"queue {q['institution_id']} / {q['group']}: {q['position']} of {q['waiting']}"
            f" waiting, {q['seats']} seats"
        )
    for w in report["why_not"]:
        if w["reason"] == "no_fitting_group":
            print(f"why not {w['institution_id']}: no group for the child's age and language")
            continue
        last, own = w["last_admitted"], w["own"]
        print(
            f"why not {w['institution_id']} / {w['group']}: last admitted "
            f"{_criteria(last)} vs yours {_criteria(own)}"
        )
    return 0


def _criteria(priority: dict[str, Any] | None) -> str:
    if priority is None:
        return "(nobody)"
    held = [name for name, holds in priority["criteria"].items() if holds]
    return f"[{', '.join(held) or 'no priority'}; registered {priority['registered_at'][:10]}]"


if __name__ == "__main__":
    sys.exit(main())
