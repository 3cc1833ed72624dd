"""Retry policy and HTTP port: what is retried, how long, and what is not."""

from __future__ import annotations

import time

import httpx
import pytest

from hub.errors import PermanentError, TransientError
from hub.reliability.retry import (
    CallFailure,
    HttpPort,
    InvalidResponse,
    Refused,
    RetryPolicy,
    UnavailableError,
    UnexpectedAnswer,
)

FAST = RetryPolicy(attempts=4, max_seconds=5, initial_wait=0.001, max_wait=0.002)


def port(
    answers: list[httpx.Response | Exception], policy: RetryPolicy = FAST, **kw
) -> tuple[HttpPort, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    retries: list[BaseException] = []
    client = HttpPort(
        "http://system.test",
        policy=policy,
        transport=httpx.MockTransport(handle),
        on_retry=retries.append,
        **kw,
    )
    client.retries = retries  # type: ignore[attr-defined]
    return client, seen


async def test_5xx_429_timeouts_and_network_errors_are_retried_until_success() -> None:
    client, seen = port(
        [
            httpx.Response(503),
            httpx.Response(429, headers={"Retry-After": "0"}),
            httpx.ConnectTimeout("slow"),
            httpx.Response(200, json={"ok": True}),
        ]
    )
    assert await client.json("GET", "/x") == {"ok": True}
    assert len(seen) == 4
    assert [type(e) for e in client.retries] == [UnavailableError] * 3  # type: ignore[attr-defined]


async def test_4xx_is_refused_at_once() -> None:
    client, seen = port([httpx.Response(404), httpx.Response(200)])
    with pytest.raises(Refused) as caught:
        await client.request("GET", "/missing")
    assert caught.value.status == 404 and isinstance(caught.value, PermanentError)
    assert len(seen) == 1


async def test_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    client, seen = port([httpx.Response(500)])
    with pytest.raises(UnavailableError, match="answered 500"):
        await client.request("GET", "/down")
    assert len(seen) == FAST.attempts


@pytest.mark.parametrize(
    ("wait", "max_seconds", "status", "within"),
    [(0.05, 0.3, 502, 1.0), (0.3, 0.5, 503, 0.5)],
    ids=["short-waits", "the-waits-count"],
)
async def test_total_time_is_bounded(
    wait: float, max_seconds: float, status: int, within: float
) -> None:
    policy = RetryPolicy(attempts=100, max_seconds=max_seconds, initial_wait=wait, max_wait=wait)
    client, seen = port([httpx.Response(status)], policy=policy)
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        await client.request("GET", "/down")
    assert time.monotonic() - started < within
    assert 2 <= len(seen) < 100


async def test_retry_after_is_honoured() -> None:
    client, seen = port([httpx.Response(429, headers={"Retry-After": "0.2"}), httpx.Response(200)])
    started = time.monotonic()
    await client.request("GET", "/busy")
    assert time.monotonic() - started >= 0.2
    assert len(seen) == 2


async def test_a_body_that_is_not_json_is_retried_as_invalid() -> None:
    client, seen = port([httpx.Response(200, content=b"<html>oops"), httpx.Response(200, json=[1])])
    assert await client.json("GET", "/x") == [1]
    assert [type(e) for e in client.retries] == [InvalidResponse]  # type: ignore[attr-defined]
    assert len(seen) == 2


async def test_every_request_has_a_timeout() -> None:
    client, seen = port([httpx.Response(200)], timeout=1.5)
    await client.request("GET", "/x")
    assert seen[0].extensions["timeout"] == {"connect": 1.5, "read": 1.5, "write": 1.5, "pool": 1.5}


async def test_error_texts_never_carry_a_personal_code() -> None:
    client, _ = port([httpx.Response(404)])
    with pytest.raises(Refused) as caught:
        await client.request("GET", "/persons/161175-19997")
    assert "19997" not in str(caught.value) and "******-*****" in str(caught.value)


@pytest.mark.parametrize(
    ("error", "kind", "permanent"),
    [
        (Refused("refused with 404", status=404), "refused", True),
        (UnexpectedAnswer("wrong fields"), "invalid_response", True),
        (InvalidResponse("no JSON"), "invalid_response", False),
        (UnavailableError("answered 503"), "unavailable", False),
        (TransientError("busy"), "unavailable", False),
        (PermanentError("a bad request"), "unavailable", True),
        (KeyError("a bug"), "unavailable", True),
    ],
)
def test_a_given_up_call_is_classified_once_for_every_adapter(
    error: BaseException, kind: str, permanent: bool
) -> None:
    failure = CallFailure.of(error)
    assert (failure.kind, failure.permanent) == (kind, permanent)
    assert failure.detail.startswith(f"{type(error).__name__}: ")


def test_a_failure_detail_is_masked_and_bounded() -> None:
    failure = CallFailure.of(UnavailableError("child 161175-19997 " + "x" * 600))
    assert "161175-19997" not in failure.detail and "******-*****" in failure.detail
    assert len(failure.detail) == 500
