"""The ``hub`` command.

    hub broker                 run the embedded Kafka broker until Ctrl-C / SIGTERM
    hub topics create          create the catalogue's topics (safe to repeat)
    hub topics list            print the catalogue
    hub asyncapi [-o FILE]     write the AsyncAPI document of all topics and messages
    hub allocate INSTANCE …    compute a round's admission lists from a file
    hub dlq list|show|replay   inspect and replay dead letters
    hub run allocation         run the allocation service until Ctrl-C / SIGTERM
    hub allocation rebuild     rebuild the allocation service's state from the topics
    hub round start …          publish a one-click admission round command
    hub queue CHILD_REF        where a child stands, from the allocation service
    hub clock show|advance|set the simulated clock of a simulation (HUB_SIMULATION=true)
    hub ops                    serve the operations view

Packages add subcommands through the ``hub.commands`` entry points (hub.plugins):
the simulators bring ``hub simulate`` and ``hub demo``.

Settings come from HUB_* environment variables (see README). Errors the hub
expects are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from hub import __version__, plugins
from hub.allocation.engine import Allocator
from hub.allocation.formats import (
    AllocationInputError,
    build_result,
    read_instance,
    schema_text,
    write_result,
)
from hub.allocation.rebuild import counts, differences, rebuild
from hub.allocation.rules import load_rules
from hub.calendar import local_date
from hub.clock import (
    ClockError,
    advance_clock,
    clock_of,
    describe,
    format_duration,
    join_clock,
    parse_duration,
    read_clock,
)
from hub.contracts import asyncapi_yaml
from hub.embedded import EmbeddedBroker
from hub.errors import BrokerUnavailable, ConfigurationError, HubError
from hub.kafka import client_options, ensure_topics, kafka_cluster, publish_messages
from hub.observability import setup_logging
from hub.ops import ops_task, serve_ops
from hub.reliability import deadletters as dl
from hub.reliability.deadletters import masked
from hub.reliability.service import stop_on_signals
from hub.reliability.store import unpublished
from hub.services import Task, assemble, health_port, installed
from hub.settings import Settings, load_settings
from schemas.allocation import RunRound
from schemas.priority import CLAIM_GROUNDS, PriorityConfirmed, PriorityRejected
from schemas.topics import OPERATOR, TOPICS


def _run_command(commands: Any) -> None:
    """``hub run``: any service installed as a plug-in (``hub.services``)."""
    run = commands.add_parser("run", help="run a service until Ctrl-C / SIGTERM")
    run.add_argument(
        "service",
        choices=(*installed(), "all"),
        help="which service, or all of them in one process (adapters find their system at"
        " HUB_<SYSTEM>_URL); each serves /health and /metrics on HUB_HEALTH_PORT",
    )


def _plugin_commands(commands: Any, wanted: str | None = None) -> None:
    """The subcommands installed packages bring (``hub.commands``). One that does not load
    is left out with a warning, so that it cannot take the rest of ``hub`` down with it.

    Only ``wanted`` is loaded when the command line names it (or none, when it names one
    of hub's own): a plug-in's imports then cost nothing to the other commands."""
    own = set(commands.choices)
    installed = plugins.names(plugins.COMMANDS)
    if wanted in own:
        installed = ()
    elif wanted in installed:
        installed = (wanted,)
    for name in installed:
        if name in own:
            print(
                f"hub: warning: {name!r} of {plugins.COMMANDS} ignored: hub has its own",
                file=sys.stderr,
            )
            continue
        try:
            command = plugins.command(name)
        except plugins.PluginError as exc:
            print(f"hub: warning: {exc}", file=sys.stderr)
            continue
        parser = commands.add_parser(name, help=command.help)
        command.configure(parser)
        parser.set_defaults(plugin=command)


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line's parser; ``argv`` (the arguments to parse, if known) says which
    plug-in subcommand to load (see :func:`_plugin_commands`)."""
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
    _run_command(commands)

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

    _queue_commands(commands)

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
    wanted = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    _plugin_commands(commands, wanted)
    return parser


def _queue_commands(commands: Any) -> None:
    queue = commands.add_parser("queue", help="where a child stands (status, queues, why not)")
    queue.add_argument("child_ref", metavar="CHILD_REF")
    queue.add_argument("--json", action="store_true", help="print the service's JSON answer")
    priority = commands.add_parser(
        "priority", help="the commission's decisions on declared priority grounds"
    )
    actions = priority.add_subparsers(dest="priority_command", required=True, metavar="ACTION")
    pending = actions.add_parser("pending", help="list declared grounds not yet decided")
    pending.add_argument("--json", action="store_true", help="print the service's JSON answer")
    for name, verb in (("confirm", "confirmed"), ("reject", "rejected")):
        action = actions.add_parser(name, help=f"publish that the commission {verb} a ground")
        action.add_argument("child_ref", metavar="CHILD_REF")
        action.add_argument("ground", metavar="GROUND", choices=CLAIM_GROUNDS)
        action.add_argument("--institution", help="the institution, for staff_child")
        action.add_argument("--decision-no", required=True, help="the commission's decision")
        action.add_argument(
            "--decided-on", type=_iso_date, help="decision date, YYYY-MM-DD (default: today)"
        )
        action.add_argument("--by", required=True, help="who records it (user name)")
        action.add_argument("--municipality", help="municipality (default: HUB_MUNICIPALITY)")
        if name == "reject":
            action.add_argument("--reason", required=True, help="why, as told to the parents")


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


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a date as YYYY-MM-DD") from None


def run_async(work: Any) -> Any:
    """Run ``work`` on uvloop's event loop where it is installed (the services' HTTP, Kafka
    and SQLite traffic share one loop per process, and uvloop's is the faster one)."""
    try:
        from uvloop import new_event_loop  # noqa: PLC0415 - optional: not on Windows
    except ImportError:
        new_event_loop = None  # type: ignore[assignment]
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(work)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv).parse_args(argv)
    try:
        settings = load_settings()
        setup_logging(settings.log_level)
        command: plugins.Command | None = vars(args).get("plugin")
        if command is not None:
            return _run_plugin(command, settings, args)
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
    if args.command == "allocate":
        return _allocate(args)
    if args.command == "dlq":
        return run_async(_dlq(settings, args))
    if args.command == "run":
        return run_async(_run(settings, args.service))
    if args.command == "allocation":
        return run_async(_rebuild(settings, args))
    if args.command == "round":
        return run_async(_round_start(settings, args))
    if args.command == "queue":
        return _queue(settings, args)
    if args.command == "priority":
        return _priority(settings, args)
    if args.command == "ops":
        return run_async(_ops(settings, args.port or settings.ops_port))
    if args.command == "clock":
        return run_async(_clock(settings, args))
    raise AssertionError(f"unhandled command {args.command}")


def _run_plugin(command: plugins.Command, settings: Settings, args: argparse.Namespace) -> int:
    result = command.run(settings, args)
    return run_async(result) if inspect.iscoroutine(result) else result  # type: ignore[return-value]


async def _broker(settings: Settings, port: int | None) -> int:
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
    for t in TOPICS:
        print(f"{t.name}  key={t.key}  partitions={t.partitions}")
        print(f"    {t.producer} → {', '.join(t.consumers)}")
        print(f"    {', '.join(m.__name__ for m in t.messages)}")


def _asyncapi(output: Path | None) -> int:
    document = asyncapi_yaml()
    if output is None:
        sys.stdout.write(document)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(document, encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)
    return 0


_PROBLEMS_SHOWN = 20


def _allocate(args: argparse.Namespace) -> int:
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
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with kafka_cluster(settings) as bootstrap:
        clock = clock_of(settings)
        services = assemble([name], settings, bootstrap, clock=clock)
        await ensure_topics(
            settings, bootstrap, (*TOPICS, *services.topics()), services=list(services.built)
        )
        tasks: list[Task] = []
        if clock is not None:
            tasks.append(await join_clock(clock, settings, bootstrap))
            print(describe(clock, settings.municipality), file=sys.stderr)
        port = health_port(settings, name)
        for service, built in services.built.items():
            where = f"; {built.where}" if built.where else ""
            print(f"{service} for {settings.municipality} on {bootstrap}{where}", file=sys.stderr)
        if port:
            print(f"health: http://127.0.0.1:{port}/health, metrics: /metrics", file=sys.stderr)
        if settings.metrics_port:
            print(f"metrics: http://127.0.0.1:{settings.metrics_port}/metrics", file=sys.stderr)
        if name == "all":
            tasks.append(ops_task(settings, bootstrap, port=settings.ops_port))
            print(f"operations view: http://127.0.0.1:{settings.ops_port}/", file=sys.stderr)
        clean = await services.run(stop, port=port, tasks=tasks)
    return 0 if clean else 1


async def _clock(settings: Settings, args: argparse.Namespace) -> int:
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


async def _rebuild(settings: Settings, args: argparse.Namespace) -> int:
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


def _ask_allocation(settings: Settings, path: str, unknown: str) -> Any:
    """The allocation service's JSON answer at ``path`` of its API; ``unknown``: the error
    for a 404."""
    url = f"http://{settings.allocation_api}{path}"
    try:
        response = httpx.get(url, timeout=10)
    except httpx.HTTPError as exc:
        raise HubError(f"the allocation service does not answer at {url}: {exc}") from None
    if response.status_code == 404:
        raise HubError(unknown)
    response.raise_for_status()
    return response.json()


def _priority(settings: Settings, args: argparse.Namespace) -> int:
    if args.priority_command == "pending":
        claims = _ask_allocation(settings, "/priority/pending", "no /priority/pending")
        if args.json:
            print(json.dumps(claims, indent=2, ensure_ascii=False))
            return 0
        for claim in claims:
            where = f" at {claim['institution_id']}" if claim["institution_id"] else ""
            print(
                f"{claim['child_ref']}  {claim['ground']}{where}  declared"
                f" {claim['registered_at'][:10]}  ({claim['status']})"
            )
        print(f"{len(claims)} declared grounds wait for the commission")
        return 0
    return run_async(_priority_decision(settings, args))


async def _priority_decision(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.bootstrap_servers:
        raise ConfigurationError(
            "HUB_BOOTSTRAP_SERVERS is not set: where is the allocation service?"
        )
    kind = PriorityConfirmed if args.priority_command == "confirm" else PriorityRejected
    extra = {"reason": args.reason} if kind is PriorityRejected else {}
    try:
        decision = kind.new(
            producer=OPERATOR,
            municipality=args.municipality or settings.municipality,
            child_ref=args.child_ref,
            ground=args.ground,
            institution_id=args.institution,
            decision_number=args.decision_no,
            decided_by=args.by,
            decided_on=args.decided_on or local_date(datetime.now(UTC)),
            **extra,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'the decision'}: {e['msg']}" for e in exc.errors()
        )
        raise HubError(f"not a valid decision: {problems}") from None
    await publish_messages(settings.bootstrap_servers, [decision], **client_options(settings))
    print(
        f"{decision.event_type} {decision.claim} of {decision.child_ref} (decision"
        f" {decision.decision_number}) published"
    )
    return 0


def _queue(settings: Settings, args: argparse.Namespace) -> int:
    report = _ask_allocation(
        settings,
        f"/children/{args.child_ref}",
        f"the allocation service does not know child {args.child_ref}",
    )
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    print(f"child {report['child_ref']}  application {report['application_id']}")
    print(f"status {report['status']}")
    if report["missing_facts"]:
        print(f"waiting for facts: {', '.join(report['missing_facts'])}")
    if report["unverified"]:
        print(f"left out of the latest list, not verified by: {', '.join(report['unverified'])}")
    for fact in report["facts"]:
        value = fact["value"]
        shown = ", ".join(value) or "none" if isinstance(value, list) else str(value).lower()
        verified = f"verified {fact['verified_on']}" if fact["verified_on"] else "not verified"
        print(f"fact {fact['fact']}: {shown} ({fact['source']}, {verified})")
    if report["declined"]:
        print(f"declined (never offered again): {', '.join(report['declined'])}")
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
