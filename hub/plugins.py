"""Plug-ins: what the hub finds through Python entry points, and the shapes it expects.

The hub's core imports no adapter and no simulator. A package that brings a system
declares entry points in its own ``pyproject.toml``, and once it is installed the
hub finds them by name:

``hub.services``
    ``NAME = "package.module:factory"``, a :class:`ServiceFactory`: ``hub run NAME``
    runs the service it builds, and ``hub run all`` runs every one installed.
``hub.simulators``
    ``NAME = "package.module:factory"``, the factory of a simulated system's ASGI app;
    ``hub simulate`` and the demo serve them. The simulators package defines what such
    a factory is given (``simulators.plugin.SimulatorFactory``).
``hub.commands``
    ``NAME = "package.module:command"``, a :class:`Command`: the subcommand ``hub NAME``.

A name that is not installed is a :class:`PluginError` listing the installed ones; an
entry point whose module does not import is one naming the entry point and the reason.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol, TypedDict, runtime_checkable

from hub.errors import ConfigurationError
from hub.reliability.retry import RetryPolicy
from hub.reliability.service import ServiceSpec
from hub.settings import Settings
from schemas.topics import Topic

SERVICES = "hub.services"
SIMULATORS = "hub.simulators"
COMMANDS = "hub.commands"
GROUPS = (SERVICES, SIMULATORS, COMMANDS)

_KIND = {SERVICES: "service", SIMULATORS: "simulator", COMMANDS: "command"}

Clock = Callable[[], datetime]


class PluginError(ConfigurationError):
    """A plug-in is not installed, does not load or does not build what the hub expects.

    Install the package that brings it (``pip install …``), or fix the entry point the
    message names; ``hub run all`` runs only what is installed.
    """


@dataclass
class Built:
    """One service put together: its spec, and the state its API and the demo look at."""

    spec: ServiceSpec
    state: Any = None
    topics: Sequence[Topic] = ()
    """Topics of the service's own beyond the catalogue (a plug-in's): ``hub run`` creates
    them. The topics its handlers consume are found without being listed here."""
    where: str = ""
    """Where it meets the world, for the line ``hub run`` prints as it starts (its API,
    the system it calls)."""


class ServiceFactory(Protocol):
    """``hub.services``: the service ``hub run NAME`` starts, built from settings.

    ``clock``, when given, is the simulated time the service is to read (the runners
    read it too); ``api`` False asks for the service without its HTTP endpoints. The
    spec's name is the entry point's name: it names the consumer group, the store and
    the retry topic.
    """

    def __call__(
        self, settings: Settings, *, clock: Clock | None = None, api: bool = True
    ) -> Built: ...


@runtime_checkable
class Command(Protocol):
    """``hub.commands``: the subcommand ``hub NAME`` (NAME: the entry point's name)."""

    help: str
    """One line for ``hub --help``."""

    def configure(self, parser: argparse.ArgumentParser) -> None:
        """Add the subcommand's arguments to ``parser``."""

    def run(self, settings: Settings, args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
        """Do it; the exit status (a coroutine is run on the hub's event loop)."""


class HttpClientOptions(TypedDict):
    """What an adapter's ``client_from_url`` takes from the settings."""

    timeout: float
    policy: RetryPolicy


def http_client_options(settings: Settings) -> HttpClientOptions:
    """Timeout and retries of a call to an external system, as the settings say."""
    return {
        "timeout": settings.http_timeout,
        "policy": RetryPolicy(
            attempts=settings.http_attempts, max_seconds=settings.http_max_seconds
        ),
    }


def _installed(group: str) -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for point in entry_points(group=group):
        found.setdefault(point.name, []).append(point)
    return found


def names(group: str) -> tuple[str, ...]:
    """The names installed in ``group``, sorted (reads package metadata; imports nothing)."""
    return tuple(sorted(_installed(group)))


def load(group: str, name: str) -> object:
    """The object the entry point ``name`` of ``group`` names, imported."""
    installed = _installed(group)
    points = installed.get(name)
    kind = _KIND.get(group, "plug-in")
    if not points:
        known = ", ".join(sorted(installed)) or "none"
        raise PluginError(f"no {kind} {name!r} is installed (entry points {group}: {known})")
    values = sorted({p.value for p in points})
    if len(values) > 1:
        raise PluginError(
            f"the {kind} {name!r} is declared twice in {group}: {' and '.join(values)};"
            " uninstall one of the packages"
        )
    try:
        return points[0].load()
    except Exception as exc:
        raise PluginError(
            f"the {kind} {name!r} (entry point {group}: {name} = {values[0]}) does not load:"
            f" {type(exc).__name__}: {exc}"
        ) from exc


def service_factory(name: str) -> ServiceFactory:
    """The factory of the service ``name`` (a :class:`PluginError` if there is none)."""
    factory = load(SERVICES, name)
    if not callable(factory):
        raise PluginError(f"the service {name!r} ({SERVICES}) is not a factory: {factory!r}")
    return factory  # type: ignore[return-value]


def build_service(
    name: str, settings: Settings, *, clock: Clock | None = None, api: bool = True
) -> Built:
    """The service ``name`` built by its plug-in, checked to be what the hub runs."""
    built = service_factory(name)(settings, clock=clock, api=api)
    if not isinstance(built, Built):
        raise PluginError(
            f"the service {name!r} ({SERVICES}) built a {type(built).__name__}, not a"
            " hub.plugins.Built"
        )
    if built.spec.name != name:
        raise PluginError(
            f"the service {name!r} ({SERVICES}) built a service named {built.spec.name!r}:"
            " the entry point's name and the service's must be the same"
        )
    return built


def command(name: str) -> Command:
    """The subcommand ``name`` of ``hub.commands``."""
    found = load(COMMANDS, name)
    if not isinstance(found, Command):
        raise PluginError(
            f"the command {name!r} ({COMMANDS}) has no help, configure and run: {found!r}"
        )
    return found


__all__ = [
    "COMMANDS",
    "GROUPS",
    "SERVICES",
    "SIMULATORS",
    "Built",
    "Clock",
    "Command",
    "HttpClientOptions",
    "PluginError",
    "ServiceFactory",
    "build_service",
    "command",
    "http_client_options",
    "load",
    "names",
]
