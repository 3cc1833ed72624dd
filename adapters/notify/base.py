"""The port every notification channel implements: :class:`ChannelClient`.

One call sends one message to one address: ``send(to, message)``. The answer is an outcome,
:class:`Accepted` (the provider took the message) or :class:`Rejected` (it refused it for
good). Failures that may pass (timeouts, 5xx, 429, a dropped connection, greylisting) are
raised as :class:`~hub.errors.TransientError` subclasses; answers that break the protocol as
:class:`~hub.reliability.retry.UnexpectedAnswer`.

The HTTP channels (e-adrese, SMS gateway, print-and-post) share :class:`HttpChannel`: each
message is POSTed under its idempotency key, and a 409 or 422 with a reason the provider
documents is a :class:`Rejected`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from hub.reliability.retry import HttpPort, Refused, UnexpectedAnswer

Clock = Callable[[], datetime]
"""What the service and its clients read the time from (a simulated clock in simulations)."""


def system_clock() -> datetime:
    """The system's time, in UTC: the clock when none is given."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Accepted:
    """The provider accepted the message (it is *sent*; delivery may be confirmed later)."""

    provider_message_id: str
    """The provider's id of the message: the receipt's reference."""
    at: datetime
    """When the provider accepted it (its own time when it says, else ours)."""
    delivered: bool = False
    """True when accepting is the confirmation this channel gives (an SMTP server's 250)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The provider refused this recipient or message; sending again cannot help."""

    reason: str
    """Short, without personal data (``no_active_e_adrese``, ``recipient_refused``, …)."""


Outcome = Accepted | Rejected
"""What a send answers."""


@dataclass(frozen=True, slots=True)
class Attachment:
    """A document sent with a message (the sealed decision, ``decision.edoc``)."""

    name: str
    """The file name the recipient sees; its extension names its type (``decision.edoc``)."""
    media_type: str
    """``type/subtype``, e.g. ``application/vnd.etsi.asic-e+zip`` for an ``.edoc``."""
    content: bytes = field(repr=False)  # megabytes of a personal decision: not in a repr


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message on one channel, as the service hands it to a client."""

    key: str
    """Idempotency key: the same key never yields a second message on the channel."""
    subject: str
    text: str
    reference: str
    """Shown to the recipient and used in provider logs: never a personal code."""
    language: str = "lv"
    """The text's language (an e-mail says it in ``Content-Language``)."""
    callback_url: str = ""
    """Where the provider reports delivery later (the SMS gateway POSTs its reports there)."""
    addressee: str = ""
    """Whom a registered letter is addressed to (the envelope's name line)."""
    attachments: tuple[Attachment, ...] = ()
    """Documents sent with the message by the channels that carry them (e-adrese, e-mail);
    part of the message, so a repeat under the same key must carry the same ones."""
    post_on: date | None = None
    """For a registered letter: the day it must be handed to the post (the hub plans the
    day the letter is deemed notified from it); None posts it as soon as the post can."""
    printed: bytes | None = field(default=None, repr=False)
    """For a registered letter: the PDF the post prints and sends (a sealed ``.edoc`` cannot
    be printed); None prints ``text``."""


@runtime_checkable
class ChannelClient(Protocol):
    """A notification channel's client. Subclass it (or match it): ``send`` is required,
    ``reaches`` and ``close`` have defaults here."""

    async def reaches(self, to: str) -> bool:
        """Whether ``to`` can get messages on this channel at all; False passes the channel
        over without a send (a personal code without an activated e-adrese). By default
        every address is tried."""
        return True

    async def send(self, to: str, message: Outgoing) -> Outcome:
        """Send ``message`` to ``to`` (the address as this channel knows it), at most once per
        ``message.key``; :class:`Accepted` or :class:`Rejected`, or an error (see the module)."""
        ...

    async def close(self) -> None:
        """Release connections (nothing to release by default)."""
        return None


class AcceptedAnswer(BaseModel):
    """A provider's answer to a message it accepted; each client's subclass names the fields."""

    model_config = ConfigDict(extra="ignore")

    def accepted(self) -> Accepted:
        raise NotImplementedError


class HttpChannel(HttpPort, ChannelClient):
    """A channel whose provider takes each message by ``POST`` under an ``Idempotency-Key``."""

    refusals: frozenset[str] = frozenset()
    """Reasons the provider refuses a message with (409 or 422): outcomes, not errors."""

    async def post_message(
        self,
        path: str,
        body: dict[str, Any],
        message: Outgoing,
        *,
        expect: Collection[int],
        answer: type[AcceptedAnswer],
    ) -> Outcome:
        """``POST`` ``body`` to ``path`` under ``message.key``: :class:`Accepted` as the
        ``answer`` read from the reply, or :class:`Rejected` for a 409 or 422 with one of
        :attr:`refusals` (another reason, or a reply of the wrong shape, is an
        :class:`UnexpectedAnswer`; other statuses raise as :meth:`HttpPort.json` does)."""
        try:
            reply = await self.json(
                "POST", path, json=body, headers={"Idempotency-Key": message.key}, expect=expect
            )
        except Refused as refused:
            if refused.status not in (409, 422):
                raise
            if refused.error not in self.refusals:
                raise UnexpectedAnswer(
                    f"{self.system} refused POST {path} with {refused.status} and an unknown reason"
                ) from None
            return Rejected(refused.error)
        return self.parse(answer, reply, f"POST {path}").accepted()


__all__ = [
    "Accepted",
    "AcceptedAnswer",
    "Attachment",
    "ChannelClient",
    "Clock",
    "HttpChannel",
    "Outcome",
    "Outgoing",
    "Rejected",
    "system_clock",
]
