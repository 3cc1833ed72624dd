"""The simulators as the hub finds them: one ``hub.simulators`` entry point per system.

Each entry point names a :class:`SimulatorFactory`, which builds the system's ASGI app
from a :class:`World`: the settings, the synthetic municipality and the clock every
simulator of one process shares, and the faults the settings ask for. :func:`simulator_apps` builds
the apps of several systems over one such world (``hub simulate``, the demo's
simulators process, the tests); a package that brings a simulator of its own declares
an entry point in the same group and is served beside these.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, cast
from urllib.parse import urlsplit

from hub import plugins
from hub.allocation.rules import RulesError, load_rules
from hub.errors import ConfigurationError
from hub.settings import Settings
from simulators.authorisations.app import create_app as authorisations_app
from simulators.dvs.app import NumberFormat
from simulators.dvs.app import create_app as dvs_app
from simulators.eadrese.app import create_app as eadrese_app
from simulators.faults import FaultInjection, Faults
from simulators.gis.app import create_app as gis_app
from simulators.letter.app import create_app as letter_app
from simulators.municipality import SyntheticMunicipality
from simulators.sms.app import create_app as sms_app
from simulators.viis.app import create_app as viis_app
from simulators.vps.app import create_app as vps_app

REGISTERS = ("vps", "viis", "gis", "dvs", "authorisations")
CHANNELS = ("eadrese", "sms", "letter")
SYSTEMS = (*REGISTERS, *CHANNELS)
"""The systems this package simulates over HTTP (each at ``HUB_<SYSTEM>_URL``); the SMTP
server simulator is served beside them."""
_SEED_ORDER = ("vps", "viis", "gis", "dvs", "eadrese", "sms", "letter", "authorisations")
"""Each system's share of the fault seed, in the order the systems were added: a system
added later leaves the faults of the others as they were for a seed."""


def system_clock() -> datetime:
    """The system time, in UTC: the simulators' clock unless the process follows a simulated one."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class World:
    """What the simulators of one process share."""

    settings: Settings
    town: SyntheticMunicipality
    clock: Callable[[], datetime] = system_clock
    """The time every simulator stamps and decides by (accepted, delivered, posted, changed):
    the system clock, or the simulated clock the hub's services read (``HUB_CLOCK``)."""

    def faults(self, system: str) -> Faults:
        """The faults ``system`` injects: ``HUB_SIM_FAULT_RATE`` of its requests, with a seed
        of its own that is the same whether it is served alone or with the others."""
        settings = self.settings
        own = _SEED_ORDER.index(system) if system in _SEED_ORDER else zlib.crc32(system.encode())
        return Faults.spread(
            settings.sim_fault_rate,
            latency_seconds=settings.sim_latency,
            timeout_seconds=settings.http_timeout + 1,  # just past the adapters' patience
            seed=settings.sim_seed * 10 + own,
        )


class SimulatorFactory(Protocol):
    """``hub.simulators``: the ASGI app of the system the entry point names."""

    def __call__(self, world: World, /) -> FaultInjection: ...


def institution_limit(settings: Settings, municipality: str) -> int | None:
    """How many institutions one application may list: the municipality's rules file says
    (``HUB_RULES``, else the shipped file of its code); None for a code with no rules (the
    e-service then holds only the protocol's bound)."""
    try:
        return load_rules(settings.rules or municipality).max_institutions
    except RulesError:
        return None


def vps(world: World) -> FaultInjection:
    limit = institution_limit(world.settings, world.town.code)
    return vps_app(world.town, world.faults("vps"), clock=world.clock, max_institutions=limit)


def viis(world: World) -> FaultInjection:
    return viis_app(world.town, world.faults("viis"))


def gis(world: World) -> FaultInjection:
    return gis_app(world.town, world.faults("gis"))


def dvs(world: World) -> FaultInjection:
    numbers = NumberFormat(prefix=world.settings.dvs_number_prefix)
    return dvs_app(numbers, faults=world.faults("dvs"), clock=world.clock)


def authorisations(world: World) -> FaultInjection:
    return authorisations_app(world.town, world.faults("authorisations"))


def eadrese(world: World) -> FaultInjection:
    # About half the guardians have activated an e-adrese.
    guardians = {g.personal_code for c in world.town.children for g in c.guardians}
    return eadrese_app(
        active=sorted(guardians)[::2], faults=world.faults("eadrese"), clock=world.clock
    )


def sms(world: World) -> FaultInjection:
    return sms_app(
        world.faults("sms"), rate_per_second=200, clock=world.clock, seed=world.settings.sim_seed
    )


def letter(world: World) -> FaultInjection:
    return letter_app(world.faults("letter"), post_after=2.0, clock=world.clock)


def installed() -> tuple[str, ...]:
    """Every simulator installed as a ``hub.simulators`` plug-in, this package's first."""
    found = plugins.names(plugins.SIMULATORS)
    return (
        *(name for name in SYSTEMS if name in found),
        *(name for name in found if name not in SYSTEMS),
    )


def factory(system: str) -> SimulatorFactory:
    """The factory the ``hub.simulators`` entry point ``system`` names."""
    found = plugins.load(plugins.SIMULATORS, system)
    if not callable(found):
        raise plugins.PluginError(f"the simulator {system!r} is not a factory: {found!r}")
    return cast(SimulatorFactory, found)


def town_of(settings: Settings) -> SyntheticMunicipality:
    """The synthetic municipality the ``HUB_SIM_*`` settings describe; its parents list no
    more institutions than the municipality's rules allow."""
    limit = institution_limit(settings, settings.municipality)
    return SyntheticMunicipality(
        settings.municipality,
        seed=settings.sim_seed,
        children=settings.sim_children,
        institutions=settings.sim_institutions,
        max_choices=min(3, limit or 3),
    )


def simulator_apps(
    settings: Settings,
    systems: tuple[str, ...] = SYSTEMS,
    *,
    town: SyntheticMunicipality | None = None,
    clock: Callable[[], datetime] = system_clock,
) -> dict[str, FaultInjection]:
    """The simulators' ASGI apps for ``systems``, sharing one synthetic municipality and one
    clock (``hub simulate`` gives the simulated clock it follows)."""
    world = World(settings, town if town is not None else town_of(settings), clock)
    return {system: factory(system)(world) for system in systems}


def url_setting(system: str, settings: Settings) -> str:
    """Where ``system`` is served: ``HUB_<SYSTEM>_URL``."""
    url = getattr(settings, f"{system}_url", None)
    if url is None:
        raise ConfigurationError(f"no setting says where the {system} simulator listens")
    return str(url)


def port_of(url: str) -> int:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
        raise ConfigurationError(
            f"a simulator listens on loopback at an explicit port; {url!r} is not such a URL"
        )
    return parts.port


OPENAPI_DIR = Path(__file__).resolve().parent.parent / "docs" / "simulators"


def openapi_documents(settings: Settings) -> dict[str, str]:
    """Each simulator's OpenAPI document as JSON text (``docs/simulators/<system>.openapi.json``).

    Built from a small fixed municipality so the text does not depend on settings that
    only change data (the API is the same at any scale).
    """
    town = SyntheticMunicipality("riga", seed=1, children=5, institutions=2, admission_year=2026)
    apps = simulator_apps(settings, SYSTEMS, town=town)
    return {
        system: json.dumps(app.app.openapi(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        for system, app in apps.items()
    }


__all__ = [
    "CHANNELS",
    "OPENAPI_DIR",
    "REGISTERS",
    "SYSTEMS",
    "SimulatorFactory",
    "World",
    "factory",
    "installed",
    "openapi_documents",
    "port_of",
    "simulator_apps",
    "system_clock",
    "town_of",
    "url_setting",
]
