"""What every notification channel's client answers: the provider took the message, or
refused it. Failures that may pass (timeouts, 5xx, 429, a dropped connection, greylisting)
are raised as :class:`~hub.errors.TransientError` subclasses; answers that break the
protocol as :class:`~hub.reliability.retry.UnexpectedAnswer`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Accepted:
    """The provider accepted the message (it is *sent*; delivery may be confirmed later)."""

    provider_message_id: str
    at: datetime
    """When the provider accepted it (its own time when it says, else ours)."""
    delivered: bool = False
    """True when accepting is the confirmation this channel gives (an SMTP server's 250)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The provider refused this recipient or message; sending again cannot help."""

    reason: str
    """Short, without personal data (``no_active_e_adrese``, ``recipient_refused``, …)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message on one channel, as the service hands it to a client."""

    key: str
    """Idempotency key: the same key never yields a second message on the channel."""
    subject: str
    text: str
    reference: str
    """Shown to the recipient and used in provider logs: never a personal code."""


__all__ = ["Accepted", "Outgoing", "Rejected"]
