"""``hub simulate`` and ``hub demo``: subcommands the simulators bring (``hub.commands``).

The hub's command line finds them through their entry points; they are no part of the
hub's core, which runs in production without simulators.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from hub.clock import clock_of, describe, join_clock
from hub.errors import ConfigurationError
from hub.reliability.service import stop_on_signals
from hub.settings import Settings
from simulators.demo import Scenario, run_demo
from simulators.plugin import (
    installed,
    openapi_documents,
    port_of,
    simulator_apps,
    system_clock,
    url_setting,
)
from simulators.serving import serving
from simulators.smtp.server import create_server


class Simulate:
    """``hub simulate SYSTEM|all``: serve simulators of the external systems on loopback.

    With ``HUB_CLOCK=simulated`` the simulators keep the time the hub's services keep: they
    follow the municipality's simulated clock on ``hub.clock.v1`` at
    ``HUB_BOOTSTRAP_SERVERS``, as ``hub run`` does, caught up before they serve.
    """

    help = "serve simulators of the external systems on loopback until Ctrl-C"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "system", choices=(*installed(), "smtp", "all"), help="which system, or all"
        )
        parser.add_argument("--seed", type=int, help="synthetic municipality seed (HUB_SIM_SEED)")
        parser.add_argument("--children", type=int, help="children, 50–30000 (HUB_SIM_CHILDREN)")
        parser.add_argument(
            "--fault-rate", type=float, help="share of requests faulted, 0–1 (HUB_SIM_FAULT_RATE)"
        )
        parser.add_argument(
            "--latency", type=float, help="seconds added per answer (HUB_SIM_LATENCY)"
        )
        parser.add_argument(
            "--openapi",
            type=Path,
            metavar="DIR",
            help="write each simulator's OpenAPI document to DIR/<system>.openapi.json and exit",
        )

    async def run(self, settings: Settings, args: argparse.Namespace) -> int:
        overrides = {
            "sim_seed": args.seed,
            "sim_children": args.children,
            "sim_fault_rate": args.fault_rate,
            "sim_latency": args.latency,
        }
        settings = settings.derive(**{k: v for k, v in overrides.items() if v is not None})
        systems = installed() if args.system == "all" else (args.system,)
        with_smtp = args.system in ("all", "smtp")
        systems = tuple(s for s in systems if s != "smtp")
        if args.openapi is not None:
            args.openapi.mkdir(parents=True, exist_ok=True)
            for system, text in openapi_documents(settings).items():
                if system in systems:
                    (args.openapi / f"{system}.openapi.json").write_text(text, encoding="utf-8")
                    print(f"wrote {args.openapi / f'{system}.openapi.json'}")
            return 0
        clock, bootstrap = clock_of(settings), settings.bootstrap_servers or ""
        if clock is not None and not bootstrap:
            raise ConfigurationError(
                "HUB_CLOCK=simulated: the simulators follow the simulated clock on"
                " hub.clock.v1; set HUB_BOOTSTRAP_SERVERS to the cluster it is published on"
            )
        apps = simulator_apps(settings, systems, clock=clock or system_clock)
        stop = asyncio.Event()
        stop_on_signals(stop)
        async with contextlib.AsyncExitStack() as stack:
            if clock is not None:
                follow = await join_clock(clock, settings, bootstrap)
                following = asyncio.create_task(follow(stop), name="simulated-clock")
                stack.push_async_callback(_stopped, stop, following)
            for system in systems:
                url = url_setting(system, settings)
                served = await stack.enter_async_context(
                    serving(apps[system], port_of(url), name=system)
                )
                print(f"{system.upper():<7} {served.url}  (API: {served.url}/docs)", flush=True)
            if with_smtp:
                smtp = await stack.enter_async_context(
                    create_server(
                        port=settings.smtp_port,
                        fault_rate=settings.sim_fault_rate,
                        seed=settings.sim_seed,
                    )
                )
                print(f"{'SMTP':<7} smtp://{smtp.host}:{smtp.port}", flush=True)
            if clock is not None:
                print(describe(clock, settings.municipality), flush=True)
            print(
                f"synthetic {settings.municipality}: seed {settings.sim_seed},"
                f" {settings.sim_children} children, {settings.sim_institutions} institutions;"
                f" faults {settings.sim_fault_rate:.0%} of requests. Ctrl-C stops.",
                flush=True,
            )
            await stop.wait()
        return 0


async def _stopped(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    """Stop ``task`` (it returns soon after ``stop``) and wait for it."""
    stop.set()
    await task


class Demo:
    """``hub demo``: a whole admission season, every service and simulator."""

    help = "play a whole admission season end to end, every service and simulator"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        scenario_arguments(parser)

    async def run(self, settings: Settings, args: argparse.Namespace) -> int:
        with contextlib.suppress(AttributeError):
            sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        result = await run_demo(settings, scenario_of(args))
        return 0 if result.passed else 1


def scenario_arguments(parser: argparse.ArgumentParser, defaults: Scenario | None = None) -> None:
    """Add an option for each field of a :class:`Scenario`, defaulting to ``defaults``' value
    (those of ``hub demo`` when None)."""
    defaults = defaults if defaults is not None else Scenario()
    for name, kind, text in _SCENARIO_OPTIONS:
        parser.add_argument(f"--{name}", type=kind, default=getattr(defaults, name), help=text)


def scenario_of(args: argparse.Namespace) -> Scenario:
    """The :class:`Scenario` the options added by :func:`scenario_arguments` describe."""
    return Scenario(**{field.name: getattr(args, field.name) for field in fields(Scenario)})


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number from 0 to 1") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("expected a number from 0 to 1")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


_SCENARIO_OPTIONS: tuple[tuple[str, Callable[[str], float], str], ...] = (
    ("children", _positive, "children (%(default)g)"),
    ("institutions", _positive, "institutions (%(default)g)"),
    ("seed", int, "seed of the synthetic municipality (%(default)g)"),
    ("faults", _share, "share of requests every simulator answers with a fault, 0–1 (%(default)g)"),
    ("accept", _share, "share of offers accepted (%(default)g)"),
    ("decline", _share, "share declined (%(default)g); the rest stay silent"),
    ("timeout", _positive, "seconds any one step may take (%(default)g)"),
)
"""Each :class:`Scenario` field's option: its parser and its help."""

simulate = Simulate()
demo = Demo()

__all__ = ["Demo", "Simulate", "demo", "scenario_arguments", "scenario_of", "simulate"]
