"""The notification service on the real embedded broker, killed twice while it works.

1,000 offer notifications go out through the channel simulators (e-adrese, an SMTP
server, an SMS gateway with delivery reports, a print-and-post service), each of which
faults 20 % of requests. The service runs in its own process and is SIGKILLed twice.
In the end every notification is confirmed on exactly one channel, no channel carried
the same message twice, and the receipts topic tells each notification's story.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from hub.embedded import free_port
from hub.kafka import ensure_topics, publish_messages
from hub.reliability.deadletters import read_topic
from hub.settings import Settings
from schemas.notifications import SendNotification
from schemas.topics import NOTIFY
from simulators.channels import channel_simulators, offer_notification
from simulators.municipality import SyntheticMunicipality
from simulators.process import ServiceProcess
from simulators.sms.app import PERMANENT_FAILURE

pytestmark = [pytest.mark.real_broker, pytest.mark.slow]
N = 1000
CONFIRMING = {"NotificationDelivered", "NotificationPosted"}
"""Receipts that confirm a notification: delivered, or a letter posted (and an e-adrese
message sent: :func:`confirms`)."""


def confirms(receipt: dict[str, Any]) -> bool:
    return receipt["event_type"] in CONFIRMING or (
        receipt["event_type"] == "NotificationSent" and receipt["channel"] == "e_adrese"
    )


def requests(town: SyntheticMunicipality) -> list[SendNotification]:
    """Offers to guardians reachable in different ways: e-adrese, e-mail, SMS, only by post."""
    made = []
    for n, child in enumerate(town.children):
        guardian = child.guardians[0]
        email, phone = guardian.email, guardian.phone
        if n % 10 == 3:
            email = f"refuse{n}@example.lv"  # the mail server refuses: SMS next
        if n % 25 == 7:
            email, phone = None, PERMANENT_FAILURE  # the SMS fails for good: a letter
        if n % 40 == 11:
            email = phone = None  # nothing electronic but e-adrese (if active), else post
        made.append(
            offer_notification(
                town, n, child, email=email, phone=phone, language="lv" if n % 5 else "en"
            )
        )
    return made


class Receipts:
    """Reads notify.receipts.v1 from the start, keeping this town's receipts by notification."""

    def __init__(self, bootstrap: str, code: str) -> None:
        self.bootstrap, self.code = bootstrap, code
        self.by_notification: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)

    async def refresh(self) -> None:
        for record in await read_topic(self.bootstrap, "notify.receipts.v1"):
            receipt = json.loads(record.value)
            if receipt["municipality"] == self.code:
                self.by_notification[receipt["notification_id"]][receipt["event_id"]] = receipt

    def confirmed(self) -> int:
        return sum(
            1
            for receipts in self.by_notification.values()
            if any(confirms(r) for r in receipts.values())
        )


async def test_a_thousand_offers_notified_through_faults_and_two_kills(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    bootstrap = kafka_settings.bootstrap_servers or ""
    code = f"n{uuid.uuid4().hex[:8]}"
    town = SyntheticMunicipality(code, seed=31, children=N, institutions=5, admission_year=2026)
    sent = requests(town)
    await ensure_topics(kafka_settings, bootstrap, services=[NOTIFY])
    active = [c.guardians[0].personal_code for n, c in enumerate(town.children) if n % 3 == 0]
    async with channel_simulators(active, 0.2, sms_rate=2000, post_after=0.3) as sims:
        service = ServiceProcess(
            bootstrap,
            tmp_path,
            code,
            service="notify-adapter",
            env=sims.env,
            notify_callback=f"127.0.0.1:{free_port()}",
            notify_escalate_after=60,
            http_timeout=0.5,
            http_attempts=6,
            http_max_seconds=8,
            retry_first_delay=0.2,
            retry_max_delay=1,
            max_attempts=30,
            batch_size=200,
            fetch_concurrency=64,
            session_timeout=3,
            heartbeat_interval=1,
            **{f"notify_rate_{c}": 100_000 for c in ("eadrese", "email", "sms", "letter")},
        )
        receipts = Receipts(bootstrap, code)
        await service.start()
        await publish_messages(bootstrap, sent)

        async def until(count: int, timeout: float) -> None:
            deadline = asyncio.get_running_loop().time() + timeout
            while receipts.confirmed() < count:
                assert service.exited() is None, service.exited()
                if asyncio.get_running_loop().time() > deadline:
                    waiting = [
                        sorted((r["event_type"], r["channel"]) for r in story.values())
                        for story in receipts.by_notification.values()
                        if not any(confirms(r) for r in story.values())
                    ]
                    raise AssertionError(
                        f"{receipts.confirmed()} of {count} confirmed; {len(sent)} sent;"
                        f" unconfirmed stories (first 5): {waiting[:5]}\n"
                        + service.log.read_text()[-3000:]
                    )
                await asyncio.sleep(0.5)
                await receipts.refresh()

        try:
            await until(250, 120)
            await service.kill()
            await service.start()
            await until(600, 120)
            await service.kill()
            await service.start()
            await until(N, 240)
            assert await service.stop() == 0
        finally:
            await service.close()

        # No channel carried the same message twice.
        for channel, counts in sims.taken().items():
            assert [k for k, n in counts.items() if n > 1] == [], channel

    # Every notification confirmed on exactly one channel, and its story is complete.
    await receipts.refresh()
    by_id = {str(r.notification_id): r for r in sent}
    channels_used: Counter[str] = Counter()
    for nid, request in by_id.items():
        story = sorted(receipts.by_notification[nid].values(), key=lambda r: r["occurred_at"])
        confirmed = {r["channel"] for r in story if confirms(r)}
        assert len(confirmed) == 1, (nid, [(r["event_type"], r["channel"]) for r in story])
        (channel,) = confirmed
        channels_used[channel] += 1
        assert any(
            r["event_type"] == "NotificationSent" and r["channel"] == channel for r in story
        ), story
        # When the parents count as notified is not the notification service's to say.
        assert not any(r["event_type"] == "NotificationDeemedNotified" for r in story), story
        refused_mail = (request.recipient.email or "").startswith("refuse")
        active = request.recipient.personal_code is not None and channel == "e_adrese"
        if refused_mail and not active:
            assert any(
                r["event_type"] == "NotificationFailed" and r["channel"] == "email" for r in story
            ), story
    # Each way of reaching a guardian was exercised.
    assert set(channels_used) == {"e_adrese", "email", "sms", "letter"}, channels_used
