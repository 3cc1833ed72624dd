"""Fault injection for the simulators: set at start, or per request by a header.

Every simulator wraps its app in :class:`FaultInjection`. A fault is chosen
for each request (paths under ``/docs``, ``/openapi.json`` and ``/health``
are never faulted):

- from the request header ``X-Simulate-Fault`` when present — one of
  ``error`` (HTTP 503), ``rate_limit`` (HTTP 429 with ``Retry-After``),
  ``timeout`` (no answer for ``timeout_seconds``), ``malformed`` (HTTP 200
  with a body that is not the promised JSON), ``latency`` (answers after
  ``latency_seconds``) or ``none``;
- otherwise at random with the configured rates, from a seeded generator so
  that a run can be repeated.

:class:`Faults` also says how a simulator behaves when nothing is injected:
``latency_seconds`` is added to every answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from starlette.types import ASGIApp, Receive, Scope, Send

Fault = Literal["none", "error", "rate_limit", "timeout", "malformed", "latency"]
FAULTS: tuple[Fault, ...] = ("none", "error", "rate_limit", "timeout", "malformed", "latency")
HEADER = "x-simulate-fault"
_UNFAULTED = ("/docs", "/openapi.json", "/health", "/redoc")
FAULTS_PATH = "/_faults"
"""Answered by the middleware itself (never faulted): what it has injected so far, by fault."""


@dataclass(frozen=True)
class Faults:
    """Rates of each injected fault (0–1, summing to at most 1) and their parameters."""

    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    timeout_rate: float = 0.0
    malformed_rate: float = 0.0
    latency_seconds: float = 0.0
    """Added to every answer (the ``latency`` fault waits this long too, at least 0.2 s)."""
    timeout_seconds: float = 30.0
    """How long a ``timeout`` fault holds the request before answering 504 (the client
    should have given up by then); a stopping server releases it at once."""
    retry_after_seconds: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        rates = (self.error_rate, self.rate_limit_rate, self.timeout_rate, self.malformed_rate)
        if any(r < 0 or r > 1 for r in rates) or sum(rates) > 1:
            raise ValueError("fault rates must be between 0 and 1 and sum to at most 1")
        if self.latency_seconds < 0 or self.timeout_seconds < 0 or self.retry_after_seconds < 0:
            raise ValueError("latency, timeout and Retry-After must not be negative")

    @classmethod
    def spread(cls, rate: float, **options: Any) -> Faults:
        """``rate`` of all requests faulted, split evenly over 503, 429, timeout and malformed."""
        share = rate / 4
        return cls(
            error_rate=share,
            rate_limit_rate=share,
            timeout_rate=share,
            malformed_rate=share,
            **options,
        )

    def with_seed(self, seed: int) -> Faults:
        return replace(self, seed=seed)


@dataclass
class FaultInjection:
    """ASGI middleware that injects :class:`Faults`; ``injected`` counts what it did."""

    app: ASGIApp
    faults: Faults = field(default_factory=Faults)
    injected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._random = random.Random(self.faults.seed)
        self._released: asyncio.Event | None = None

    def release(self) -> None:
        """Let go of requests held by ``timeout`` faults (the server is stopping)."""
        if self._released is None:
            self._released = asyncio.Event()
        self._released.set()

    def choose(self, asked: str | None) -> Fault:
        if asked is not None:
            if asked not in FAULTS:
                return "error"  # an unknown fault name is a broken request: fail loudly
            return asked  # type: ignore[return-value]
        f, roll = self.faults, self._random.random()
        for fault, rate in (
            ("error", f.error_rate),
            ("rate_limit", f.rate_limit_rate),
            ("timeout", f.timeout_rate),
            ("malformed", f.malformed_rate),
        ):
            if roll < rate:
                return fault  # type: ignore[return-value]
            roll -= rate
        return "none"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == FAULTS_PATH:
            await _answer(send, 200, json.dumps(dict(self.injected), sort_keys=True).encode())
            return
        if scope["type"] != "http" or scope["path"].startswith(_UNFAULTED):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        fault = self.choose(headers.get(HEADER))
        self.injected[fault] += 1
        if self.faults.latency_seconds or fault == "latency":
            await asyncio.sleep(max(self.faults.latency_seconds, 0.2 if fault == "latency" else 0))
        if fault == "error":
            await _answer(send, 503, b'{"error": "injected fault: service unavailable"}')
        elif fault == "rate_limit":
            await _answer(
                send,
                429,
                b'{"error": "injected fault: too many requests"}',
                [(b"retry-after", str(self.faults.retry_after_seconds).encode())],
            )
        elif fault == "timeout":
            if self._released is None:
                self._released = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), self.faults.timeout_seconds)
            await _answer(send, 504, b'{"error": "injected fault: answered too late"}')
        elif fault == "malformed":
            await _answer(send, 200, b'{"truncated": [1, 2')
        else:
            await self.app(scope, receive, send)


async def _answer(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += extra or []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["FAULTS", "FAULTS_PATH", "HEADER", "Fault", "FaultInjection", "Faults"]
