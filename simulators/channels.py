"""The notification channels' simulators served together on loopback: e-adrese, e-mail (SMTP),
SMS and post, each with its own fault seed, and what each of them has taken so far; and the
offer notifications that keep them busy, as the allocation service asks for them."""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from schemas.notifications import Recipient, SendNotification
from schemas.topics import ALLOCATION
from simulators.api import NO_FAULTS
from simulators.eadrese.app import create_app as eadrese_app
from simulators.faults import FaultInjection, Faults
from simulators.letter.app import create_app as letter_app
from simulators.municipality import Child, SyntheticMunicipality
from simulators.serving import serving
from simulators.sms.app import SmsSimulator
from simulators.sms.app import create_app as sms_app
from simulators.smtp.server import SmtpSimulator, create_server


@dataclass(frozen=True)
class Channels:
    """The four channel simulators being served; ``env`` points the notification service at
    them (``HUB_EADRESE_URL``, ``HUB_SMS_URL``, ``HUB_LETTER_URL``, ``HUB_SMTP_PORT``)."""

    eadrese: FaultInjection
    sms: SmsSimulator
    letter: FaultInjection
    smtp: SmtpSimulator
    env: dict[str, str]

    def taken(self) -> dict[str, Counter[str]]:
        """Each simulator's messages so far, counted by idempotency key (or Message-ID): a
        count above 1 is a message the channel carried twice."""
        return {
            "e-adrese mailbox": Counter(m["key"] for m in self.eadrese.app.state.mailbox),
            "SMTP messages": Counter(self.smtp.by_message_id),
            "SMS sent": Counter(m.key for m in self.sms.app.state.sent),
            "letters": Counter(x.key for x in self.letter.app.state.letters.values()),
        }


@contextlib.asynccontextmanager
async def channel_simulators(
    active: list[str], fault_rate: float, *, sms_rate: float, post_after: float
) -> AsyncIterator[Channels]:
    """The four channels on loopback, ``fault_rate`` of their requests faulted (spread over
    503, 429, timeout and malformed); ``active`` are the personal codes with an e-adrese,
    ``sms_rate`` the SMS a second the gateway takes and ``post_after`` the seconds a letter
    waits to be posted."""
    faults = Faults.spread(fault_rate, seed=17, timeout_seconds=1.5) if fault_rate else NO_FAULTS
    eadrese = eadrese_app(active=active, faults=faults.with_seed(18))
    sms = sms_app(faults.with_seed(19), rate_per_second=sms_rate, callback_delay=0.05)
    letters = letter_app(faults.with_seed(20), post_after=post_after)
    async with (
        serving(eadrese, name="e-adrese") as e,
        serving(sms, name="sms") as s,
        serving(letters, name="post") as p,
        create_server(fault_rate=fault_rate, seed=21) as smtp,
    ):
        yield Channels(
            eadrese,
            sms,
            letters,
            smtp,
            {
                "HUB_EADRESE_URL": e.url,
                "HUB_SMS_URL": s.url,
                "HUB_LETTER_URL": p.url,
                "HUB_SMTP_PORT": str(smtp.port),
            },
        )


def offer_notification(
    town: SyntheticMunicipality,
    n: int,
    child: Child,
    *,
    email: str | None,
    phone: str | None,
    language: Literal["lv", "en"] = "lv",
) -> SendNotification:
    """The ``n``-th offer to notify: a place for ``child`` in the town's institutions taken
    in turn, told to its first guardian at ``email``, ``phone``, its e-adrese (if active)
    and, failing those, by post to the child's address."""
    return SendNotification.new(
        producer=ALLOCATION,
        municipality=town.code,
        notification_id=uuid.uuid4(),
        child_ref=child.ref,
        purpose="offer",
        offer_id=uuid.uuid4(),
        recipient=Recipient(
            personal_code=child.guardians[0].personal_code,
            email=email,
            phone=phone,
            postal_address_code=child.address_code,
        ),
        language=language,
        template="offer",
        variables={
            "institution": town.institutions[n % len(town.institutions)].name,
            "group": "2023-lv",
            "start_date": "2026-09-01",
        },
    )


__all__ = ["Channels", "channel_simulators", "offer_notification"]
