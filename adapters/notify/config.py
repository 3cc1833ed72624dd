"""The notification service as the hub's settings describe it: the one place that reads them.

:class:`NotifyConfig` is what the service needs to know besides its channels, derived from
:class:`hub.settings.Settings` (which validates every value); :func:`from_settings` builds
the service, its channels' clients pointed where the settings say.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from adapters.notify import eadrese, letter, sms
from adapters.notify.base import Clock, system_clock
from adapters.notify.email import EmailClient
from adapters.notify.service import Channels, NotifyState, service
from hub.documents.edoc import SealKey
from hub.plugins import http_client_options
from hub.reliability.service import ServiceSpec
from hub.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """The service's settings in the form it uses them; made by :meth:`of`."""

    portal_url: str
    """The parents' e-service, without a trailing slash (offers link to it)."""
    sender: str
    """Who signs the messages: the municipality."""
    escalate_after: timedelta
    """How long an electronic message may stay unconfirmed before a registered letter."""
    callback: str
    """``host:port`` where the SMS delivery reports are taken."""
    seal: SealKey | None = None
    """The municipality's e-seal the documents are sealed with (None: documents cannot be
    sent, and a notice fails with the reason)."""
    sending_guard: timedelta = timedelta(minutes=5)
    """A notice waits this close to midnight in Latvia, so it is sent on the day its deadline
    was computed for."""

    @classmethod
    def of(cls, settings: Settings) -> NotifyConfig:
        return cls(
            portal_url=settings.notify_portal_url.rstrip("/"),
            sender=f"{settings.municipality.capitalize()} pašvaldība",
            escalate_after=timedelta(seconds=settings.notify_escalate_after),
            callback=settings.notify_callback,
            seal=seal_of(settings),
        )

    @property
    def callback_address(self) -> tuple[str, int]:
        """Where the webhook listens: (host, port); no host means loopback."""
        host, _, port = self.callback.rpartition(":")
        return host or "127.0.0.1", int(port)

    @property
    def callback_url(self) -> str:
        """Given to the SMS gateway with every SMS."""
        return f"http://{self.callback}/sms/reports"

    @property
    def escalation_interval(self) -> float:
        """Seconds between looks for requests due for a letter: often enough for the delay."""
        return min(30.0, self.escalate_after.total_seconds() / 4)


def seal_of(settings: Settings) -> SealKey | None:
    """The e-seal the settings name (``HUB_SEAL_KEY``, ``HUB_SEAL_CERTIFICATE``), or None."""
    if settings.seal_key is None or settings.seal_certificate is None:
        return None
    password = (
        settings.seal_password.get_secret_value().encode() if settings.seal_password else None
    )
    return SealKey.from_files(settings.seal_key, settings.seal_certificate, password)


def from_settings(
    settings: Settings, *, clock: Clock | None = None, **overrides: Any
) -> tuple[ServiceSpec, NotifyState]:
    """The notification service as ``settings`` describe it: its four channels' clients
    pointed and rate-limited as they say, reading ``clock`` (None: the system's);
    ``overrides`` go to :func:`~adapters.notify.service.service`."""
    clock = clock or system_clock
    config = NotifyConfig.of(settings)
    if config.seal is None:
        log.warning(
            "no e-seal configured (HUB_SEAL_KEY, HUB_SEAL_CERTIFICATE): notices, which carry a"
            " sealed document, will fail; messages without a document are sent"
        )
    options: dict[str, Any] = dict(http_client_options(settings))
    post = letter.client_from_url(settings.letter_url, **options)
    channels = Channels(
        {
            "e_adrese": eadrese.client_from_url(settings.eadrese_url, **options),
            "email": EmailClient(
                settings.smtp_host,
                settings.smtp_port,
                sender=settings.smtp_sender,
                clock=clock,
                **options,
            ),
            "sms": sms.client_from_url(settings.sms_url, **options),
            "letter": post,
        },
        rates={
            "e_adrese": settings.notify_rate_eadrese,
            "email": settings.notify_rate_email,
            "sms": settings.notify_rate_sms,
            "letter": settings.notify_rate_letter,
        },
    )
    return service(channels, config, letters=post, clock=clock, **overrides)


__all__ = ["NotifyConfig", "from_settings", "seal_of"]
