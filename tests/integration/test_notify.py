"""The notification service on the real embedded broker, killed twice while it works.

1,000 offer notifications go out through the channel simulators (e-adrese, an SMTP
server, an SMS gateway with delivery reports, a print-and-post service), each of which
faults 20 % of requests. The service runs in its own process and is SIGKILLed twice.
In the end every notification is confirmed on exactly one channel, no channel carried
the same message twice, and the receipts topic tells each notification's story.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hub.calendar import deemed_notified
from hub.embedded import free_port
from hub.kafka import ensure_topics, publish_messages
from hub.reliability.deadletters import read_topic
from hub.settings import Settings
from schemas.notifications import Recipient, SendNotification
from schemas.topics import ALLOCATION, NOTIFY
from simulators.eadrese.app import create_app as eadrese_app
from simulators.faults import Faults
from simulators.letter.app import create_app as letter_app
from simulators.municipality import SyntheticMunicipality
from simulators.serving import serving
from simulators.sms.app import PERMANENT_FAILURE
from simulators.sms.app import create_app as sms_app
from simulators.smtp import create_server

pytestmark = [pytest.mark.real_broker, pytest.mark.slow]
N = 1000
CONFIRMING = {"NotificationDelivered", "NotificationDeemedNotified"}


def requests(code: str, town: SyntheticMunicipality) -> list[SendNotification]:
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
            SendNotification.new(
                producer=ALLOCATION,
                municipality=code,
                notification_id=uuid.uuid4(),
                child_ref=child.ref,
                purpose="offer",
                offer_id=uuid.uuid4(),
                recipient=Recipient(
                    personal_code=guardian.personal_code,
                    email=email,
                    phone=phone,
                    postal_address_code=child.address_code,
                ),
                language="lv" if n % 5 else "en",
                template="offer",
                variables={
                    "institution": town.institutions[n % len(town.institutions)].name,
                    "group": "2023-lv",
                    "start_date": "2026-09-01",
                },
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
            if any(r["event_type"] in CONFIRMING for r in receipts.values())
        )


class NotifyProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hub",
                "run",
                "notify-adapter",
                env=self.env,
                stdout=out,
                stderr=out,
            )

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.terminate()
        return await asyncio.wait_for(self.process.wait(), 60)


@contextlib.asynccontextmanager
async def channel_simulators(town: SyntheticMunicipality) -> AsyncIterator[dict[str, Any]]:
    faults = Faults.spread(0.2, seed=17, timeout_seconds=1.5)
    active = [c.guardians[0].personal_code for n, c in enumerate(town.children) if n % 3 == 0]
    eadrese = eadrese_app(active=active, faults=faults.with_seed(18))
    sms = sms_app(faults.with_seed(19), rate_per_second=2000, callback_delay=0.05)
    letters = letter_app(faults.with_seed(20), post_after=0.3)
    async with (
        serving(eadrese, name="e-adrese") as e,
        serving(sms, name="sms") as s,
        serving(letters, name="post") as p,
        create_server(fault_rate=0.2, seed=21) as smtp,
    ):
        yield {
            "eadrese": eadrese,
            "sms": sms,
            "letter": letters,
            "smtp": smtp,
            "urls": {"HUB_EADRESE_URL": e.url, "HUB_SMS_URL": s.url, "HUB_LETTER_URL": p.url},
        }


async def test_a_thousand_offers_notified_through_faults_and_two_kills(  # noqa: PLR0915
    kafka_settings: Settings, tmp_path: Path
) -> None:
    bootstrap = kafka_settings.bootstrap_servers or ""
    code = f"n{uuid.uuid4().hex[:8]}"
    town = SyntheticMunicipality(code, seed=31, children=N, institutions=5, admission_year=2026)
    sent = requests(code, town)
    await ensure_topics(kafka_settings, bootstrap, services=[NOTIFY])
    async with channel_simulators(town) as sims:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        env |= sims["urls"] | {
            "HUB_BOOTSTRAP_SERVERS": bootstrap,
            "HUB_DATA_DIR": str(tmp_path),
            "HUB_MUNICIPALITY": code,
            "HUB_SMTP_PORT": str(sims["smtp"].port),
            "HUB_NOTIFY_CALLBACK": f"127.0.0.1:{free_port()}",
            "HUB_NOTIFY_ESCALATE_AFTER": "60",
            "HUB_HTTP_TIMEOUT": "0.5",
            "HUB_HTTP_ATTEMPTS": "6",
            "HUB_HTTP_MAX_SECONDS": "8",
            "HUB_RETRY_FIRST_DELAY": "0.2",
            "HUB_RETRY_MAX_DELAY": "1",
            "HUB_MAX_ATTEMPTS": "30",
            "HUB_BATCH_SIZE": "200",
            "HUB_FETCH_CONCURRENCY": "64",
            "HUB_SESSION_TIMEOUT": "3",
            "HUB_HEARTBEAT_INTERVAL": "1",
            "HUB_LOG_LEVEL": "WARNING",
            **{f"HUB_NOTIFY_RATE_{c}": "100000" for c in ("EADRESE", "EMAIL", "SMS", "LETTER")},
        }
        service = NotifyProcess(env, tmp_path / "notify.log")
        receipts = Receipts(bootstrap, code)
        await service.start()
        await publish_messages(bootstrap, sent)

        async def until(count: int, timeout: float) -> None:
            deadline = asyncio.get_running_loop().time() + timeout
            while receipts.confirmed() < count:
                log = (tmp_path / "notify.log").read_text()[-3000:]
                assert service.process is not None and service.process.returncode is None, log
                if asyncio.get_running_loop().time() > deadline:
                    waiting = [
                        sorted((r["event_type"], r["channel"]) for r in story.values())
                        for story in receipts.by_notification.values()
                        if not any(r["event_type"] in CONFIRMING for r in story.values())
                    ]
                    raise AssertionError(
                        f"{receipts.confirmed()} of {count} confirmed; {len(sent)} sent;"
                        f" unconfirmed stories (first 5): {waiting[:5]}\n{log}"
                    )
                await asyncio.sleep(0.5)
                await receipts.refresh()

        await until(250, 120)
        await service.kill()
        await service.start()
        await until(600, 120)
        await service.kill()
        await service.start()
        await until(N, 240)
        assert await service.stop() == 0

        # No channel carried the same message twice.
        mailbox = Counter(m["key"] for m in sims["eadrese"].app.state.mailbox)
        sms = Counter(m.key for m in sims["sms"].app.state.sent)
        letters = Counter(letter.key for letter in sims["letter"].app.state.letters.values())
        mail = sims["smtp"].by_message_id
        for channel, counts in (("e-adrese", mailbox), ("sms", sms), ("letter", letters)):
            assert [k for k, n in counts.items() if n > 1] == [], channel
        assert [k for k, n in mail.items() if n > 1] == [], "e-mail"

    # Every notification confirmed on exactly one channel, and its story is complete.
    await receipts.refresh()
    by_id = {str(r.notification_id): r for r in sent}
    channels_used: Counter[str] = Counter()
    for nid, request in by_id.items():
        story = sorted(receipts.by_notification[nid].values(), key=lambda r: r["occurred_at"])
        confirmed = {r["channel"] for r in story if r["event_type"] in CONFIRMING}
        assert len(confirmed) == 1, (nid, [(r["event_type"], r["channel"]) for r in story])
        (channel,) = confirmed
        channels_used[channel] += 1
        assert any(
            r["event_type"] == "NotificationSent" and r["channel"] == channel for r in story
        ), story
        if channel == "e_adrese":
            deemed = next(r for r in story if r["event_type"] == "NotificationDeemedNotified")
            sent_at = deemed["sent_at"].replace("Z", "+00:00")
            assert (
                deemed["deemed_notified_on"]
                == deemed_notified(datetime.fromisoformat(sent_at)).isoformat()
            )
        refused_mail = (request.recipient.email or "").startswith("refuse")
        active = request.recipient.personal_code is not None and channel == "e_adrese"
        if refused_mail and not active:
            assert any(
                r["event_type"] == "NotificationFailed" and r["channel"] == "email" for r in story
            ), story
    # Each way of reaching a guardian was exercised.
    assert set(channels_used) == {"e_adrese", "email", "sms", "letter"}, channels_used
