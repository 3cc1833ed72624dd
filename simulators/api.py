"""What the HTTP simulators share: the error body, the app with its health route, no faults.

Every simulator answers a refusal with the same body, ``{"error": reason}`` plus an
optional ``detail`` (:class:`ErrorBody`, built by :func:`error`), and says it is up at
``GET /health`` with ``{"status": "ok", "system": …}`` (:func:`simulator`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from simulators.faults import Faults

NO_FAULTS = Faults()
"""A simulator that fails only where its protocol says it does."""


class ErrorBody(BaseModel):
    """Why a request was refused or failed."""

    error: str = Field(description="Machine-readable reason, e.g. unknown_address.")
    detail: str | None = Field(default=None, description="Human-readable explanation.")


def error(status: int, error: str, detail: str | None = None) -> JSONResponse:
    """An answer with ``status`` and an :class:`ErrorBody` (``detail`` left out when None)."""
    body = ErrorBody(error=error, detail=detail).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status)


class NotFound(Exception):
    """What a route raises for a thing it does not have; answered 404 ``not_found``."""


Found = TypeVar("Found")


def one_of(things: Mapping[str, Found], key: str, what: str, *, by: str = "id") -> Found:
    """``things[key]``, or the answer 404 ``not_found`` ("no <what> with that <by>")."""
    found = things.get(key)
    if found is None:
        raise NotFound(f"no {what} with that {by}")
    return found


def no_such(what: str) -> dict[int | str, dict[str, Any]]:
    """The documented answers of a GET of one ``what`` by :func:`one_of`: 404, "No such <what>."."""
    return {404: {"model": ErrorBody, "description": f"No such {what}."}}


def idempotency_key(same: str) -> Any:
    """The type of an optional ``Idempotency-Key`` header: the same key gets the same ``same``."""
    return Annotated[
        str | None, Header(alias="Idempotency-Key", description=f"Same key, same {same}.")
    ]


def idempotent_responses(
    model: type[BaseModel], *, before: str, other: str, refusals: Mapping[int, str]
) -> dict[int | str, dict[str, Any]]:
    """The documented answers of a POST made idempotent by ``Idempotency-Key``: 200 with
    ``model`` for a key seen before ("<before> before with this key."), 400 without a key,
    409 for a key used for another ``other``, then the protocol's ``refusals``."""
    return {
        200: {"model": model, "description": f"{before} before with this key."},
        400: {"model": ErrorBody, "description": "No Idempotency-Key, or a broken body."},
        409: {"model": ErrorBody, "description": f"The key was used for another {other}."},
        **{status: {"model": ErrorBody, "description": text} for status, text in refusals.items()},
    }


def missing_idempotency_key() -> JSONResponse:
    """The 400 answer to an idempotent POST without its ``Idempotency-Key``."""
    return error(400, "missing_idempotency_key", "the Idempotency-Key header is required")


Body = TypeVar("Body", bound=BaseModel)
Made = TypeVar("Made")


@dataclass
class IdempotentPost(Generic[Body, Made]):
    """A POST made idempotent by ``Idempotency-Key``: the body each key came with, what it made.

    ``other`` names what the POST makes (``"document"``): a key sent again with another body
    answers 409 "the key names another <other>". ``answer`` turns what a key made into the
    response, with the status given.
    """

    other: str
    answer: Callable[[Made, int], Response]
    by_key: dict[str, tuple[Body, Made]] = field(default_factory=dict)

    def route(
        self,
        app: FastAPI,
        path: str,
        model: type[BaseModel],
        *,
        status_code: int,
        before: str,
        refusals: Mapping[int, str],
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """The decorator registering the POST at ``path``, documented by
        :func:`idempotent_responses`: ``model`` answered with ``status_code``, then 200 for a
        key seen before ("<before> before with this key."), 400, 409 and the ``refusals``."""
        responses = idempotent_responses(model, before=before, other=self.other, refusals=refusals)
        return app.post(path, status_code=status_code, response_model=model, responses=responses)

    def repeated(self, key: str, body: Body) -> Response | None:
        """The answer to a key seen before: what it made, 200, when ``body`` is the one it came
        with, else 409 ``idempotency_conflict``; None for a new key."""
        earlier = self.by_key.get(key)
        if earlier is None:
            return None
        sent, made = earlier
        if sent != body:
            return error(409, "idempotency_conflict", f"the key names another {self.other}")
        return self.answer(made, 200)

    def remember(self, key: str, body: Body, made: Made, status: int) -> Response:
        """Record that ``key`` came with ``body`` and made ``made``; answer it with ``status``."""
        self.by_key[key] = (body, made)
        return self.answer(made, status)


def simulator(
    title: str,
    description: str,
    system: str,
    *,
    counts: Callable[[], Mapping[str, int]] | None = None,
    clock: Callable[[], datetime] | None = None,
    invalid_as_400: bool = False,
) -> FastAPI:
    """A simulator's FastAPI app, with ``GET /health`` answering ``{"status": "ok", "system"}``.

    A :class:`NotFound` raised by a route is answered 404 ``not_found``. ``counts``, when
    given, adds what the simulator holds (``{"documents": 3}``) to the health answer;
    ``clock``, the time the simulator keeps (``"clock"``, ISO 8601), so that whoever moves
    a simulated clock can wait until the simulator reads the moved time. With
    ``invalid_as_400`` a request body that breaks the schema is answered 400
    ``invalid_request`` naming the fields, so that 422 is left to the protocol's own refusals.
    """
    app = FastAPI(title=title, version="1.0.0", description=description)

    if invalid_as_400:

        @app.exception_handler(RequestValidationError)
        async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
            fields = sorted({".".join(str(p) for p in e["loc"][1:]) for e in exc.errors()})
            return error(400, "invalid_request", "invalid fields: " + ", ".join(fields))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return error(404, "not_found", str(exc))

    @app.get("/health", summary="Whether the simulator is up; never faulted.")
    async def health() -> dict[str, Any]:
        held = counts() if counts is not None else {}
        kept = {"clock": clock().isoformat()} if clock is not None else {}
        return {"status": "ok", "system": system, **held, **kept}

    return app


__all__ = [
    "NO_FAULTS",
    "ErrorBody",
    "IdempotentPost",
    "NotFound",
    "error",
    "idempotency_key",
    "idempotent_responses",
    "missing_idempotency_key",
    "no_such",
    "one_of",
    "simulator",
]
