"""The authorisations adapter: the hub's checks of powers of attorney, answered by the register.

It consumes ``CheckAuthorisation`` from ``authorisations.checks.v1``, asks the register of
authorisations whether the authorisation the application names holds for its child, for
pre-school matters, on the day the application was filed, and answers on
``authorisations.results.v1`` with ``AuthorisationVerified`` or ``AuthorisationRefused``
(the register's reason). The handler is thin: ``fetch`` asks the register (with the
client's retries) and ``apply`` turns its answer into the event. Errors are not caught
here: transient ones park the message for a later retry, permanent ones dead-letter it; a
check that is dead-lettered is answered ``AuthorisationCheckFailed`` (``unavailable`` or
``invalid_response``, and whether asking again may help), so the allocation service is
not left waiting for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from adapters.authorisations.client import AuthorisationsClient, Verification
from hub.reliability.consumer import Handler, Unit
from hub.reliability.retry import CallFailure
from hub.reliability.service import ServiceSpec
from schemas.authorisations import (
    AuthorisationCheckFailed,
    AuthorisationRefused,
    AuthorisationVerified,
    CheckAuthorisation,
)
from schemas.base import Message
from schemas.topics import AUTHORISATIONS
from schemas.values import failure_detail

CHECKS = "authorisations.checks.v1"


def refusal_detail(verification: Verification) -> str:
    """What an operator reads about a refusal: the register's reason and dates, never a
    personal code (nor the authorisation's number)."""
    v = verification
    match v.status:
        case "unknown":
            return "the register has no authorisation with this number from this issuer"
        case "revoked":
            return f"the register: revoked on {v.revoked_on or 'a day it does not tell'}"
        case "expired":
            return f"the register: valid until {v.valid_until or 'a day it does not tell'}"
        case "not_yet_valid":
            return f"the register: valid from {v.valid_from or 'a day it does not tell'}"
        case "other_person":
            return "the register: given to another person than the one who applied"
        case "other_child":
            return "the register: given for another child"
        case "other_scope":
            return "the register: not for pre-school matters"
        case _:
            return f"the register: {v.status}"


class AuthorisationChecks(Handler[CheckAuthorisation]):
    """``CheckAuthorisation`` → ``AuthorisationVerified`` or ``AuthorisationRefused``."""

    def __init__(self, client: AuthorisationsClient) -> None:
        super().__init__(CHECKS)
        self.client = client

    async def fetch(self, message: CheckAuthorisation) -> Verification:
        authorisation = message.authorisation
        return await self.client.verify(
            issuer=authorisation.issuer,
            number=authorisation.number,
            child_personal_code=message.child_personal_code,
            agent_personal_code=authorisation.agent_personal_code,
            on=message.on,
        )

    def apply(self, unit: Unit, message: CheckAuthorisation, fetched: Verification) -> None:
        if fetched.status == "valid":
            unit.emit(
                AuthorisationVerified.new(
                    producer=AUTHORISATIONS,
                    caused_by=message,
                    child_ref=message.child_ref,
                    application_id=message.application_id,
                    valid_until=fetched.valid_until,
                )
            )
            return
        unit.emit(
            AuthorisationRefused.new(
                producer=AUTHORISATIONS,
                caused_by=message,
                child_ref=message.child_ref,
                application_id=message.application_id,
                reason=fetched.status,
                detail=failure_detail(refusal_detail(fetched)),
            )
        )

    def given_up(self, message: CheckAuthorisation, error: BaseException) -> Sequence[Message]:
        """``AuthorisationCheckFailed`` for a check that was dead-lettered."""
        failure = CallFailure.of(error)
        # The answer has no reason "refused": the register promises an answer to every
        # well-formed check, so a 4xx means the two sides do not speak the same protocol.
        reason: Literal["unavailable", "invalid_response"] = (
            "unavailable" if failure.kind == "unavailable" else "invalid_response"
        )
        return (
            AuthorisationCheckFailed.new(
                producer=AUTHORISATIONS,
                caused_by=message,
                child_ref=message.child_ref,
                application_id=message.application_id,
                reason=reason,
                detail=failure.detail,
                permanent=failure.permanent,
            ),
        )

    async def close(self) -> None:
        await self.client.close()


def service(client: AuthorisationsClient, name: str = AUTHORISATIONS) -> ServiceSpec:
    """The authorisations adapter as a service; it owns ``client`` and closes it when it
    stops."""
    return ServiceSpec(name, (AuthorisationChecks(client),), clients=(client,))


__all__ = ["CHECKS", "AuthorisationChecks", "refusal_detail", "service"]
