"""What the contract tests share: quick retry policies, the fault matrix every simulator
answers and a check that each fault fails a call transiently, a clock the test sets, a
simulator served with it, and clients answered by a mock transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Self, TypeVar

import httpx
import pytest

from hub.reliability.retry import HttpPort, InvalidResponse, RetryPolicy, UnavailableError
from simulators.faults import FaultInjection, Faults
from simulators.serving import serving

FAST = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05, max_seconds=5)
PATIENT = RetryPolicy(attempts=10, initial_wait=0.01, max_wait=0.05, max_seconds=10)
NO_FAULT = {"X-Simulate-Fault": "none"}
"""Request header that asks a simulator for no fault (to read its state in a test)."""

_Port = TypeVar("_Port", bound=HttpPort)
Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


def every_fault(client_timeout: float = 5.0) -> pytest.MarkDecorator:
    """Parametrize a test by ``(faults, timeout, error)`` over each fault a simulator injects,
    with the error the client raises once its retries are spent (all transient). ``timeout``
    is the client's: ``client_timeout``, shorter than the delay of the timeout fault."""
    return pytest.mark.parametrize(
        ("faults", "timeout", "error"),
        [
            (Faults(error_rate=1), client_timeout, UnavailableError),
            (Faults(rate_limit_rate=1, retry_after_seconds=0), client_timeout, UnavailableError),
            (Faults(timeout_rate=1, timeout_seconds=2), 0.3, UnavailableError),
            (Faults(malformed_rate=1), client_timeout, InvalidResponse),
        ],
        ids=["error", "rate_limit", "timeout", "malformed"],
    )


def faulted(app: FaultInjection) -> int:
    """How many requests ``app`` answered with a fault."""
    return sum(n for fault, n in app.injected.items() if fault != "none")


async def each_call_fails(
    app: FaultInjection,
    port: type[_Port],
    faults: Faults,
    timeout: float,
    error: type[Exception],
    *calls: Callable[[_Port], Awaitable[object]],
    name: str,
) -> list[BaseException]:
    """Serve ``app`` (a simulator injecting ``faults``) under ``name`` and make each call
    through a ``port`` client with ``timeout``: each fails with ``error`` once its ``FAST``
    retries are spent, every attempt was faulted, and a rate limit's ``Retry-After: 0``
    reaches the caller. Returns the errors, for the test to check what they show."""
    raised: list[BaseException] = []
    async with (
        serving(app, name=name) as served,
        port.at(served.url, timeout=timeout, policy=FAST) as client,
    ):
        for call in calls:
            with pytest.raises(error) as caught:
                await call(client)
            raised.append(caught.value)
    assert faulted(app) == len(calls) * FAST.attempts
    if faults.rate_limit_rate:
        assert all(isinstance(e, UnavailableError) and e.retry_after == 0 for e in raised)
    return raised


class Clock:
    """A clock that stands still until the test moves it (``clock.now = ...``)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Simulated:
    """A simulator served on loopback for a test: its app, its URL and the clock it reads."""

    app: FaultInjection
    url: str
    clock: Clock

    @classmethod
    @asynccontextmanager
    async def on_loopback(
        cls, app: FaultInjection, clock: Clock, *, name: str
    ) -> AsyncIterator[Self]:
        """``app``, which reads ``clock``, served under ``name`` while the context lasts."""
        async with serving(app, name=name) as served:
            yield cls(app, served.url, clock)


def mocked(
    port: type[_Port], *answers: Answer, url: str = "http://system.test"
) -> tuple[_Port, list[httpx.Request]]:
    """A client of type ``port`` whose requests get ``answers`` in turn (the last one from
    then on; a callable answers the request it is given), and the requests it sent."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        return answer(request) if callable(answer) else answer

    return port(url, policy=FAST, transport=httpx.MockTransport(handle)), seen
