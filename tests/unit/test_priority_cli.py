"""``hub priority``: the commission's decisions published as messages, and the claims that
wait for one listed from the allocation service's API."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
import pytest

from hub import cli
from hub.errors import HubError
from schemas.priority import PriorityConfirmed, PriorityRejected

ENV = {"HUB_BOOTSTRAP_SERVERS": "127.0.0.1:9", "HUB_MUNICIPALITY": "riga"}


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    sent: list[Any] = []

    async def publish(bootstrap: str, messages: list[Any], **_: Any) -> None:
        sent.extend(messages)

    monkeypatch.setattr(cli, "publish_messages", publish)
    return sent


def test_confirm_publishes_the_commission_decision(
    published: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["priority", "confirm", "CH-0123456789ab", "staff_child", "--institution", "PII-007"]
    argv += ["--decision-no", "K-12", "--by", "anna", "--decided-on", "2026-08-02"]
    assert cli.main(argv) == 0
    [decision] = published
    assert isinstance(decision, PriorityConfirmed)
    assert (decision.claim, decision.decision_number, decision.decided_by) == (
        "staff_child:PII-007",
        "K-12",
        "anna",
    )
    assert decision.decided_on == date(2026, 8, 2) and decision.municipality == "riga"
    assert "PriorityConfirmed staff_child:PII-007 of CH-0123456789ab" in capsys.readouterr().out


def test_reject_needs_a_reason_and_a_staff_claim_its_institution(
    published: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["priority", "reject", "CH-0123456789ab", "adopted", "--decision-no", "K-1", "--by", "a"]
    with pytest.raises(SystemExit):
        cli.main(base)  # no --reason
    assert cli.main([*base, "--reason", "no ruling of the court"]) == 0
    assert isinstance(published[-1], PriorityRejected)
    assert published[-1].reason == "no ruling of the court"
    staff = ["priority", "confirm", "CH-0123456789ab", "staff_child", "--decision-no", "1"]
    assert cli.main([*staff, "--by", "a"]) == 2  # no --institution: refused, nothing sent
    assert (
        "institution_id is given exactly when the ground is staff_child" in capsys.readouterr().err
    )
    assert len(published) == 1


def test_pending_lists_the_claims_from_the_service(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    claims = [
        {
            "child_ref": "CH-0123456789ab",
            "application_id": "APP-2026-000001",
            "ground": "large_family",
            "institution_id": None,
            "registered_at": "2026-02-01T08:00:00+00:00",
            "status": "queued",
        }
    ]
    asked: list[str] = []

    def get(url: str, **_: Any) -> httpx.Response:
        asked.append(url)
        return httpx.Response(200, json=claims, request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", get)
    assert cli.main(["priority", "pending"]) == 0
    out = capsys.readouterr().out
    assert asked[0].endswith("/priority/pending")
    assert "CH-0123456789ab  large_family  declared 2026-02-01" in out
    assert "1 declared grounds wait for the commission" in out


def test_pending_says_when_the_service_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    def get(url: str, **_: Any) -> httpx.Response:
        raise httpx.ConnectError("refused")

    monkeypatch.setattr(httpx, "get", get)
    with pytest.raises(HubError, match="does not answer"):
        cli._priority(
            cli.load_settings(), cli._parser(["priority"]).parse_args(["priority", "pending"])
        )


def test_queue_prints_each_fact_with_its_source_and_the_declines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    report = {
        "child_ref": "CH-0123456789ab",
        "application_id": "APP-2026-000001",
        "status": "queued",
        "missing_facts": [],
        "unverified": ["viis"],
        "facts": [
            {"fact": "adopted", "value": False, "source": "declared", "verified_on": None},
            {
                "fact": "child_resident",
                "value": True,
                "source": "pers",
                "verified_on": "2026-09-01",
            },
            {"fact": "siblings_at", "value": ["PII-002"], "source": "viis", "verified_on": None},
        ],
        "declined": ["PII-004"],
        "offer": None,
        "placement": None,
        "queue": [],
        "why_not": [],
    }

    def get(url: str, **_: Any) -> httpx.Response:
        return httpx.Response(200, json=report, request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", get)
    assert cli.main(["queue", "CH-0123456789ab"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "left out of the latest list, not verified by: viis" in out
    assert "fact adopted: false (declared, not verified)" in out
    assert "fact child_resident: true (pers, verified 2026-09-01)" in out
    assert "fact siblings_at: PII-002 (viis, not verified)" in out
    assert "declined (never offered again): PII-004" in out
