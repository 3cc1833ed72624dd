"""The allocation service as the hub runs it (entry point ``hub.services``: ``allocation``).

It is registered the way every other service is, so ``hub run`` treats it as one
plug-in among others.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from hub.allocation.api import serving
from hub.allocation.rules import load_rules
from hub.allocation.service import service as allocation_service
from hub.plugins import Built, Clock
from hub.settings import Settings


def service(settings: Settings, *, clock: Clock | None = None, api: bool = True) -> Built:
    """The service with the rules ``HUB_RULES`` names (unset: the municipality's) and, with
    ``api``, its HTTP API on ``HUB_ALLOCATION_API``; ``clock``: the time it reads."""
    spec, state = allocation_service(
        load_rules(settings.rules or settings.municipality),
        settings.municipality,
        expiry_interval=settings.expiry_interval,
        recheck_wait=timedelta(seconds=settings.recheck_wait),
        **({"clock": clock} if clock is not None else {}),
    )
    if api:
        host, _, port = settings.allocation_api.rpartition(":")
        store = settings.data_dir / f"{spec.name}.sqlite3"  # the runner's, for /checks
        served = serving(state, int(port), host or "127.0.0.1", store=store)
        spec = dataclasses.replace(spec, tasks=(*spec.tasks, served))
    return Built(spec, state, where=f"API http://{settings.allocation_api}" if api else "")
