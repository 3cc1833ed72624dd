"""The notification service as the hub runs it (entry point ``hub.services``:
``notify-adapter``): its channels pointed by settings."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from adapters.notify import eadrese, letter, sms
from adapters.notify.email import EmailClient
from adapters.notify.service import Channels
from adapters.notify.service import Settings as NotifySettings
from adapters.notify.service import service as notify_service_spec
from hub.plugins import Built, Clock, http_client_options
from hub.reliability.service import ServiceSpec
from hub.settings import Settings


def service(settings: Settings, *, clock: Clock | None = None, api: bool = True) -> Built:
    """The notification service and its state; ``clock`` is the time its deadlines read."""
    spec, state = notify_service(settings, **({"clock": clock} if clock is not None else {}))
    return Built(spec, state, where="e-adrese, SMTP, SMS and post as configured")


def notify_service(settings: Settings, **overrides: Any) -> tuple[ServiceSpec, Any]:
    """The notification service, its channels pointed by settings; and its state."""
    options: dict[str, Any] = dict(http_client_options(settings))
    host, _, port = settings.notify_callback.rpartition(":")
    channels = Channels(
        eadrese=eadrese.client_from_url(settings.eadrese_url, **options),
        email=EmailClient(
            settings.smtp_host,
            settings.smtp_port,
            sender=settings.smtp_sender,
            timeout=settings.http_timeout,
            policy=options["policy"],
        ),
        sms=sms.client_from_url(settings.sms_url, **options),
        letter=letter.client_from_url(settings.letter_url, **options),
        callback_url=f"http://{settings.notify_callback}/sms/reports",
        rates={
            "e_adrese": settings.notify_rate_eadrese,
            "email": settings.notify_rate_email,
            "sms": settings.notify_rate_sms,
            "letter": settings.notify_rate_letter,
        },
    )
    config = NotifySettings(
        portal_url=settings.notify_portal_url,
        sender=f"{settings.municipality.capitalize()} pašvaldība",
        escalate_after=timedelta(seconds=settings.notify_escalate_after),
    )
    return notify_service_spec(
        channels,
        config=config,
        callback=(host or "127.0.0.1", int(port)),
        parse_report=sms.parse_report,
        escalation_interval=min(30.0, settings.notify_escalate_after / 4),
        **overrides,
    )
