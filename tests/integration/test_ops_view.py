"""The operations view on the real broker, driven in Debian's Chromium through Playwright.

A small admission story is published (applications, VIIS and GIS facts, a round, offers,
receipts, answers), one message is dead-lettered and a consumer group is left one offer
behind. The view is started on a free loopback port and the page is checked the way an
operator reads it: topic counts, lag, the dead letter and its replay, the round's figures
per institution and a child's timeline. The screenshot goes to test-artifacts/ops-view.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from playwright.async_api import Page, async_playwright, expect

from hub.cli import main
from hub.embedded import free_port
from hub.errors import HubError
from hub.kafka import publish_messages
from hub.ops import serve_ops
from hub.reliability.consumer import outbox_row
from hub.reliability.deadletters import REPLAY_OF, Failure, header, read_topic
from hub.settings import Settings
from schemas.topics import ALLOCATION
from tests.conftest import ARTIFACTS
from tests.unit.test_ops_projection import (
    GUARDIAN_CODE,
    STORY,
    Flow,
    apply_child,
    personal_code,
    scenario,
)

pytestmark = pytest.mark.real_broker

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT = 20_000  # ms the page gets to show something (it polls every 2 s)
OFFERS, APPLICATIONS = "allocation.offers.v1", "vps.pii.applications.v1"


async def dead_letter(bootstrap: str, tag: str) -> tuple[str, bytes]:
    """An application the allocation service refused, with a personal code in the error."""
    message = apply_child(Flow(), f"CH-dead{tag}", serial=103, institutions=(f"PII-A{tag}",))
    row = outbox_row(message)
    now = datetime.now(UTC)
    failure = Failure(
        APPLICATIONS, 0, 7, 1, now, now, "PermanentError", f"refused: {GUARDIAN_CODE} unknown"
    )
    buried = failure.bury(ALLOCATION, "refused", row.key, row.value, row.headers)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            buried.topic, buried.value, key=buried.key, headers=list(buried.headers)
        )
    finally:
        await producer.stop()
    return header(buried.headers, "dlq-id") or "", row.value


async def leave_one_offer_unread(bootstrap: str, group: str, child_ref: str) -> int:
    """Commit ``group`` at the end of the offers topic but one record on ``child_ref``'s
    partition; returns the topic's message count."""
    records = await read_topic(bootstrap, OFFERS)
    ends: dict[int, int] = {}
    for r in records:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    behind = next(r.partition for r in records if r.key == child_ref.encode())
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        offsets = {TopicPartition(OFFERS, p): end - (p == behind) for p, end in ends.items()}
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()
    return sum(ends.values())


def chromium_binary() -> str:
    """Debian's Chromium; the test fails (it is not skipped) without it."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"the browser test drives Debian's Chromium at {CHROMIUM}, which is missing:"
            " `make test` installs it (apt-get install chromium)"
        )
    return str(CHROMIUM)


@contextlib.asynccontextmanager
async def ops_view(settings: Settings) -> AsyncIterator[str]:
    """The view served on a free loopback port; yields its URL."""
    stop, ready = asyncio.Event(), asyncio.Event()
    port = free_port()
    serving = asyncio.create_task(
        serve_ops(settings, settings.bootstrap_servers or "", stop, port=port, ready=ready)
    )
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(serving, 15)


async def search(page: Page, child_ref: str) -> None:
    await page.fill("#child-ref", child_ref)
    await page.press("#child-ref", "Enter")


async def check_round(page: Page, story: dict[str, Any]) -> None:
    await expect(page.locator("#round-summary")).to_contain_text(
        f"Round {str(story['round_id'])[:8]} as of 2026-09-01", timeout=WAIT
    )
    a, b = story["institutions"]
    figures = {
        a: {"capacity": "2", "made": "2", "live": "0", "accepted": "1", "declined": "1"},
        b: {"capacity": "2", "made": "2", "live": "1", "expired": "1", "accepted": "0"},
    }
    for institution, expected in figures.items():
        row = page.locator(f'#round tr[data-institution="{institution}"]')
        for column, value in expected.items():
            await expect(row.locator(f"td.{column}")).to_have_text(value, timeout=WAIT)


async def check_timeline(page: Page, story: dict[str, Any], tag: str) -> None:
    """application → facts → offer → notification → answer, and an unknown child."""
    await search(page, f"CH-nobody{tag}")
    await expect(page.locator("#child-message")).to_contain_text(
        f"No message about child CH-nobody{tag} has been read"
    )
    one, (a, _) = story["children"][0], story["institutions"]
    await search(page, one)
    entries = page.locator("#timeline tbody tr")
    await expect(entries).to_have_count(len(STORY), timeout=WAIT)
    kinds = await entries.evaluate_all("rows => rows.map(row => row.dataset.kind)")
    assert kinds == STORY
    firsts = [kinds.index(k) for k in ("application", "facts", "offer", "notification", "answer")]
    assert firsts == sorted(firsts)
    await expect(page.locator("#child-message")).to_contain_text(
        f"{one} · application APP-{one} · offer {a} / 2024-lv (accepted)"
    )
    await expect(entries.nth(4)).to_contain_text("e-adrese: sent")
    await expect(entries.nth(7)).to_contain_text(f"parents accepted {a} / 2024-lv (e-service)")


async def check_replay(page: Page, bootstrap: str, dlq_id: str, dead: tuple[bytes, bytes]) -> None:
    """The button republishes the dead letter: it is back on its topic and in the view."""
    letter = page.locator(f'#deadletters tr[data-id="{dlq_id}"]')
    await letter.get_by_role("button", name="Replay").click()
    await expect(page.locator("#replay-result")).to_contain_text(
        f"Replayed {dlq_id[:8]} to {APPLICATIONS}", timeout=WAIT
    )
    await expect(letter.locator("td.action")).to_have_text(
        f"replayed to {APPLICATIONS}", timeout=WAIT
    )
    back = [
        (r.key, r.value)
        for r in await read_topic(bootstrap, APPLICATIONS)
        if header(tuple(r.headers), REPLAY_OF) == dlq_id
    ]
    assert back == [dead]
    await search(page, dead[0].decode())
    await expect(page.locator("#timeline tbody tr")).to_have_count(1, timeout=WAIT)
    await expect(page.locator("#timeline tbody tr")).to_contain_text("application APP-CH-dead")


async def test_the_operations_view_in_a_browser(kafka_settings: Settings) -> None:
    browser_binary = chromium_binary()
    bootstrap = kafka_settings.bootstrap_servers or ""
    tag = uuid.uuid4().hex[:6]
    story = scenario(tag, start=datetime.now(UTC))  # the newest round on the shared broker
    await publish_messages(bootstrap, story["flow"].messages)
    dlq_id, dead_value = await dead_letter(bootstrap, tag)
    group = f"ops-test-{tag}"
    offers = await leave_one_offer_unread(bootstrap, group, story["children"][0])

    async with ops_view(kafka_settings) as url, async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=browser_binary, headless=True, args=CHROMIUM_ARGS
        )
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        elsewhere: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(url) else elsewhere.append(r.url))
        await page.goto(url)
        await expect(page.locator("h1")).to_have_text("Hub operations")

        # Topics: the offers topic's count is the sum of its end offsets.
        topic = page.locator(f'#topics tr[data-topic="{OFFERS}"]')
        await expect(topic.locator("td.messages")).to_have_text(f"{offers:,}", timeout=WAIT)
        await expect(topic.locator("td.types")).to_contain_text("OfferMade")
        # Lag: the group left one offer unread.
        lag = page.locator(f'#lag tr[data-group="{group}"][data-topic="{OFFERS}"]')
        await expect(lag.locator("td.lag")).to_have_text("1", timeout=WAIT)
        # The dead letter, its personal code masked.
        letter = page.locator(f'#deadletters tr[data-id="{dlq_id}"]')
        await expect(letter).to_contain_text("refused", timeout=WAIT)
        await expect(letter).to_contain_text("ApplicationSubmitted")
        await expect(letter).to_contain_text("refused: ******-***** unknown")

        await check_round(page, story)
        await check_timeline(page, story, tag)
        await check_replay(page, bootstrap, dlq_id, (f"CH-dead{tag}".encode(), dead_value))

        await search(page, story["children"][0])
        await expect(page.locator("#timeline tbody tr")).to_have_count(len(STORY), timeout=WAIT)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "ops-view.png"), full_page=True)

        content = await page.content()
        codes = [GUARDIAN_CODE, personal_code(date(2023, 3, 15), 101)]
        codes += [personal_code(date(2023, 3, 15), 103)]
        for code in codes:
            assert code not in content and code.replace("-", "") not in content
        assert elsewhere == []  # no CDN, no fonts: nothing outside the hub
        await browser.close()


async def test_the_api_refuses_a_replay_without_its_header_and_foreign_hosts(
    kafka_settings: Settings,
) -> None:
    async with ops_view(kafka_settings) as url, httpx.AsyncClient(base_url=url) as client:
        refused = await client.post("/api/deadletters/anything/replay")
        assert refused.status_code == 403
        unknown = await client.post(
            "/api/deadletters/no-such-letter/replay", headers={"X-Hub-Ops": "replay"}
        )
        assert unknown.status_code == 404
        assert "no dead letters match" in unknown.json()["error"]
        rebound = await client.get("/api/topics", headers={"Host": "evil.example"})
        assert rebound.status_code == 400
        page = await client.get("/")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert (await client.get("/static/ops.js")).status_code == 200
        missing = await client.get("/api/children/CH-nobody-at-all/timeline")
        assert missing.status_code == 404
        port = int(url.rpartition(":")[2])
        with pytest.raises(HubError, match=f"cannot listen on 127.0.0.1:{port}"):
            await serve_ops(
                kafka_settings, kafka_settings.bootstrap_servers or "", asyncio.Event(), port=port
            )


def test_hub_ops_needs_a_cluster(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HUB_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    assert main(["ops", "--port", "0"]) == 2
    assert capsys.readouterr().err.startswith("hub: error: HUB_BOOTSTRAP_SERVERS is not set")
