"""Retrying calls to external systems, and the HTTP port every adapter's client builds on.

What is retried: network errors, timeouts, HTTP 5xx, 408 and 429 (waiting at
least what ``Retry-After`` asks), and answers that are broken on the way (a
body that is not JSON, a status the call does not expect). What is not: other
4xx answers, which repeating cannot fix, and well-formed JSON that breaks the
protocol (:class:`UnexpectedAnswer`). Retries
back off exponentially with jitter and stop at a number of attempts or a total
time, whichever comes first; each is logged with its cause.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from hub.errors import PermanentError, TransientError
from schemas.values import failure_detail, mask_personal_codes

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_Model = TypeVar("_Model", bound=BaseModel)


class UnavailableError(TransientError):
    """The external system did not answer in time, or answered 5xx or 429; retried."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidResponse(TransientError):
    """The external system answered something its protocol does not allow; retried,
    since a broken answer is often a passing fault of a proxy or a deployment."""


class UnexpectedAnswer(PermanentError):
    """The external system answered well-formed JSON that breaks its protocol (a missing or
    wrong field); not retried: the message is dead-lettered with what was wrong."""


class Refused(PermanentError):
    """The external system refused the request (HTTP 4xx other than 429); not retried.

    ``body`` is the answer's JSON (None if it had none): a protocol that refuses
    with a reason (``{"error": "already_enrolled"}``) can turn it into an outcome;
    ``error`` is that reason, read from ``error`` or FastAPI's ``detail.error``.
    """

    def __init__(self, message: str, *, status: int, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body

    @property
    def error(self) -> str | None:
        body = self.body
        if isinstance(body, dict) and isinstance(body.get("detail"), dict):
            body = body["detail"]
        reason = body.get("error") if isinstance(body, dict) else None
        return reason if isinstance(reason, str) else None


FailureKind = Literal["refused", "invalid_response", "unavailable"]


@dataclass(frozen=True, slots=True)
class CallFailure:
    """Why calls to an external system were given up, as the failure event answering the
    request tells it (every register adapter classifies its errors with :meth:`of`)."""

    kind: FailureKind
    """``refused``: the system said no (4xx); ``invalid_response``: it answered outside
    its protocol; ``unavailable``: it did not answer usefully (network, timeouts, 5xx, 429)
    — or the error came from elsewhere."""
    permanent: bool
    """False when trying again later may succeed (the error was transient)."""
    detail: str
    """The error's type and text, personal codes masked, at most 500 characters."""

    @classmethod
    def of(cls, error: BaseException) -> CallFailure:
        kind: FailureKind
        if isinstance(error, Refused):
            kind = "refused"
        elif isinstance(error, (UnexpectedAnswer, InvalidResponse)):
            kind = "invalid_response"
        else:
            kind = "unavailable"
        detail = failure_detail(f"{type(error).__name__}: {error}")
        return cls(kind, not isinstance(error, TransientError), detail)


class RetryObservable(Protocol):
    """A client that reports each retried call: the service runner counts them in its metrics."""

    def add_retry_listener(self, listener: Callable[[BaseException], None]) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry a call that failed transiently."""

    attempts: int = 4
    max_seconds: float = 30.0
    initial_wait: float = 0.2
    """Scale of the backoff: the n-th wait is random in [0, initial_wait · 2ⁿ] ("full jitter")."""
    max_wait: float = 5.0

    async def call(
        self,
        fn: Callable[[], Awaitable[_T]],
        *,
        what: str,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> _T:
        """Call ``fn`` until it succeeds, fails permanently, or the policy gives up.

        Raises the last error: a :class:`TransientError` when attempts or time
        ran out (the caller parks the message), a :class:`PermanentError` at once.
        """
        backoff = wait_random_exponential(multiplier=self.initial_wait, max=self.max_wait)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            asked = getattr(error, "retry_after", None)  # the server's Retry-After
            return backoff(state) if asked is None else min(asked, self.max_seconds)

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "retrying external call",
                extra={
                    "call": what,
                    "attempt": state.attempt_number,
                    "cause": type(error).__name__,
                    "detail": mask_personal_codes(str(error))[:200],
                    "wait_s": round(state.upcoming_sleep, 3),
                },
            )
            if on_retry is not None and error is not None:
                on_retry(error)

        retrying = AsyncRetrying(
            # stop_before_delay: never start a wait that would end past the time limit
            stop=stop_after_attempt(self.attempts) | stop_before_delay(self.max_seconds),
            wait=wait,
            retry=retry_if_exception_type(TransientError),
            before_sleep=before_sleep,
            reraise=True,
        )

        async def attempt() -> _T:
            return await fn()

        return await retrying(attempt)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delay seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class HttpPort:
    """The HTTP client of one external system: timeouts, error classes, retries.

    Subclass it per system and translate its protocol there; this class only
    sends requests and turns failures into :class:`UnavailableError`,
    :class:`Refused` or :class:`InvalidResponse`. Every request has a timeout.
    """

    system = "external system"

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        policy: RetryPolicy | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=httpx.Timeout(timeout), transport=transport
        )
        self.policy = policy or RetryPolicy()
        self._listeners: list[Callable[[BaseException], None]] = [on_retry] if on_retry else []

    @classmethod
    def at(cls, url: str, *, timeout: float = 5.0, policy: RetryPolicy | None = None) -> Self:
        """A client of the system at ``url`` (each adapter exports this as ``client_from_url``)."""
        return cls(url, timeout=timeout, policy=policy)

    def _on_retry(self, error: BaseException) -> None:
        for listener in self._listeners:
            listener(error)

    def add_retry_listener(self, listener: Callable[[BaseException], None]) -> None:
        """Call ``listener`` with the error of every retried call (metrics count them)."""
        self._listeners.append(listener)

    def parse(self, model: type[_Model], body: Any, what: str) -> _Model:
        """``body`` as ``model``; :class:`UnexpectedAnswer` naming the wrong fields if not."""
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in e["loc"]) or "(body)" for e in exc.errors()})
            raise UnexpectedAnswer(
                f"{self.system} answered {mask_personal_codes(what)} with wrong fields: {fields}"
            ) from None

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self, method: str, path: str, *, expect: Collection[int] = (), **kwargs: Any
    ) -> httpx.Response:
        """Send a request, retrying transient failures; the response is 2xx.

        With ``expect``, another 2xx status is a broken answer (retried): a proxy
        answering 200 for a call that creates nothing, say.
        """
        return await self.policy.call(
            lambda: self._once(method, path, expect=expect, **kwargs),
            what=f"{self.system} {method} {mask_personal_codes(path)}",
            on_retry=self._on_retry,
        )

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Like :meth:`request`, returning the JSON body; a body that is not JSON is retried."""

        async def once() -> Any:
            response = await self._once(method, path, **kwargs)
            try:
                return response.json()
            except ValueError:
                raise InvalidResponse(
                    f"{self.system} answered {method} {mask_personal_codes(path)} with no JSON"
                ) from None

        return await self.policy.call(
            once,
            what=f"{self.system} {method} {mask_personal_codes(path)}",
            on_retry=self._on_retry,
        )

    async def _once(
        self, method: str, path: str, *, expect: Collection[int] = (), **kwargs: Any
    ) -> httpx.Response:
        shown = mask_personal_codes(path)  # error texts end up in logs and dead letters
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise UnavailableError(
                f"{self.system} did not answer {method} {shown} in time"
            ) from None
        except httpx.DecodingError:
            raise InvalidResponse(
                f"{self.system} answered {method} {shown} with a body that does not decode"
            ) from None
        except (httpx.RequestError, httpx.TooManyRedirects) as exc:
            raise UnavailableError(
                f"{self.system} unreachable for {method} {shown}: {type(exc).__name__}"
            ) from None
        status = response.status_code
        if status in (408, 429) or status >= 500:
            raise UnavailableError(
                f"{self.system} answered {status} to {method} {shown}",
                retry_after=_retry_after(response),
            )
        if status >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise Refused(
                f"{self.system} refused {method} {shown} with {status}", status=status, body=body
            )
        if status >= 300 or (expect and status not in expect):
            raise InvalidResponse(f"{self.system} answered {method} {shown} with {status}")
        return response
