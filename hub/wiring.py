"""Where the adapters and simulators are put together from settings (one place for wiring).

``hub run ADAPTER`` asks :func:`adapter` for a service; ``hub simulate``,
the demo and the tests ask :func:`simulator_apps` for the simulators' ASGI
apps. Nothing here connects anywhere: it only builds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hub.errors import ConfigurationError
from hub.reliability.retry import RetryPolicy
from hub.reliability.service import ServiceSpec
from hub.settings import Settings

REGISTER_ADAPTERS = ("vps-adapter", "viis-adapter", "gis-adapter", "dvs-adapter")
ADAPTERS = (*REGISTER_ADAPTERS, "notify-adapter")
REGISTERS = ("vps", "viis", "gis", "dvs")
CHANNELS = ("eadrese", "sms", "letter")
SYSTEMS = (*REGISTERS, *CHANNELS)
"""Systems with an HTTP simulator; the SMTP server simulator is served beside them."""


def policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(attempts=settings.http_attempts, max_seconds=settings.http_max_seconds)


def adapter(name: str, settings: Settings) -> ServiceSpec:
    """The adapter service ``name`` (one of :data:`ADAPTERS`), its client pointed by settings."""
    options: dict[str, Any] = {"timeout": settings.http_timeout, "policy": policy(settings)}
    if name == "vps-adapter":
        from adapters import vps

        return vps.service(
            vps.client_from_url(settings.vps_url, **options),
            settings.municipality,
            interval=settings.vps_poll_interval,
        )
    if name == "viis-adapter":
        from adapters import viis

        return viis.service(viis.client_from_url(settings.viis_url, **options))
    if name == "gis-adapter":
        from adapters import gis

        return gis.service(gis.client_from_url(settings.gis_url, **options))
    if name == "dvs-adapter":
        from adapters import dvs

        return dvs.service(dvs.client_from_url(settings.dvs_url, **options))
    if name == "notify-adapter":
        return notify_service(settings)[0]
    raise ConfigurationError(f"no adapter {name!r}; there are {', '.join(ADAPTERS)}")


def notify_service(settings: Settings, **overrides: Any) -> tuple[ServiceSpec, Any]:
    """The notification service, its channels pointed by settings; and its state."""
    from adapters.notify.config import from_settings

    return from_settings(settings, **overrides)


def url_setting(system: str, settings: Settings) -> str:
    return str(getattr(settings, f"{system}_url"))


def port_of(url: str) -> int:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
        raise ConfigurationError(
            f"a simulator listens on loopback at an explicit port; {url!r} is not such a URL"
        )
    return parts.port


def simulator_apps(
    settings: Settings, systems: tuple[str, ...] = SYSTEMS, *, town: Any = None
) -> dict[str, Any]:
    """The simulators' ASGI apps for ``systems``, sharing one synthetic municipality."""
    from simulators.faults import Faults
    from simulators.municipality import SyntheticMunicipality

    if town is None:
        town = SyntheticMunicipality(
            settings.municipality,
            seed=settings.sim_seed,
            children=settings.sim_children,
            institutions=settings.sim_institutions,
        )
    apps: dict[str, Any] = {}
    for system in systems:
        if system not in SYSTEMS:
            raise ConfigurationError(f"no simulator {system!r}; there are {', '.join(SYSTEMS)}")
        faults = Faults.spread(
            settings.sim_fault_rate,
            latency_seconds=settings.sim_latency,
            timeout_seconds=settings.http_timeout + 1,  # just past the adapters' patience
            seed=settings.sim_seed * 10 + SYSTEMS.index(system),  # the same for one or all
        )
        if system == "vps":
            from simulators.vps.app import create_app as vps_app

            apps[system] = vps_app(town, faults)
        elif system == "viis":
            from simulators.viis.app import create_app as viis_app

            apps[system] = viis_app(town, faults)
        elif system == "gis":
            from simulators.gis.app import create_app as gis_app

            apps[system] = gis_app(town, faults)
        elif system == "dvs":
            from simulators.dvs.app import NumberFormat
            from simulators.dvs.app import create_app as dvs_app

            apps[system] = dvs_app(NumberFormat(prefix=settings.dvs_number_prefix), faults=faults)
        elif system == "eadrese":
            from simulators.eadrese.app import create_app as eadrese_app

            # About half the guardians have activated an e-adrese.
            guardians = {g.personal_code for c in town.children for g in c.guardians}
            apps[system] = eadrese_app(active=sorted(guardians)[::2], faults=faults)
        elif system == "sms":
            from simulators.sms.app import create_app as sms_app

            apps[system] = sms_app(faults, rate_per_second=200, seed=settings.sim_seed)
        elif system == "letter":
            from simulators.letter.app import create_app as letter_app

            apps[system] = letter_app(faults, post_after=2.0)
    return apps


OPENAPI_DIR = Path(__file__).resolve().parent.parent / "docs" / "simulators"


def openapi_documents(settings: Settings) -> dict[str, str]:
    """Each simulator's OpenAPI document as JSON text (``docs/simulators/<system>.openapi.json``).

    Built from a small fixed municipality so the text does not depend on settings that
    only change data (the API is the same at any scale).
    """
    from simulators.municipality import SyntheticMunicipality

    town = SyntheticMunicipality("riga", seed=1, children=5, institutions=2, admission_year=2026)
    apps = simulator_apps(settings, SYSTEMS, town=town)
    return {
        system: json.dumps(app.app.openapi(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        for system, app in apps.items()
    }


__all__ = [
    "ADAPTERS",
    "CHANNELS",
    "OPENAPI_DIR",
    "REGISTERS",
    "REGISTER_ADAPTERS",
    "SYSTEMS",
    "adapter",
    "openapi_documents",
    "policy",
    "port_of",
    "simulator_apps",
    "url_setting",
]
