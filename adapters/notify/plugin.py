"""The notification service as the hub runs it (entry point ``hub.services``:
``notify-adapter``): its channels pointed by settings
(:func:`adapters.notify.config.from_settings`)."""

from __future__ import annotations

from adapters.notify.config import from_settings
from hub.plugins import Built, Clock
from hub.settings import Settings


def service(settings: Settings, *, clock: Clock | None = None, api: bool = True) -> Built:
    """The notification service and its state; ``clock`` is the time its deadlines read."""
    spec, state = from_settings(settings, clock=clock)
    return Built(spec, state, where="e-adrese, SMTP, SMS and post as configured")
