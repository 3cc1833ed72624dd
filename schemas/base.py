"""The envelope every message carries, and the base classes of commands and events.

A message is one flat JSON object: the envelope fields followed by the
payload fields of its type. ``event_type`` names the type and is what a
consumer dispatches on; ``schema_version`` lets a type evolve.

Commands ask one service to do something (``RunRound``, ``ResolveAddress``);
events state what has happened (``OfferMade``). Both are immutable.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field

from schemas.values import MunicipalityCode, ServiceName, UtcDatetime, utcnow


class FrozenModel(BaseModel):
    """Immutable model that rejects unknown fields.

    Validation errors never repeat the rejected input, because the input may
    hold personal data (a personal code, an e-mail address).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class Message(FrozenModel):
    """Envelope fields shared by every command and event on the bus."""

    KIND: ClassVar[str] = "message"

    event_id: UUID = Field(
        default_factory=uuid4,
        description="Unique id of this message; consumers use it to skip duplicates.",
    )
    event_type: str = Field(description="Name of the message type; equals the class name.")
    schema_version: int = Field(
        default=1, ge=1, description="Version of this message type's schema."
    )
    occurred_at: UtcDatetime = Field(
        default_factory=utcnow,
        description="When the fact happened or the command was issued (UTC).",
    )
    correlation_id: UUID = Field(
        description="Id shared by all messages of one business flow (one application's enrichment)."
    )
    causation_id: UUID | None = Field(
        default=None, description="event_id of the message that caused this one, if any."
    )
    producer: ServiceName
    municipality: MunicipalityCode

    @classmethod
    def new(
        cls,
        *,
        producer: str,
        caused_by: Message | None = None,
        municipality: str | None = None,
        correlation_id: UUID | None = None,
        **payload: Any,
    ) -> Self:
        """Build a message, filling the envelope.

        With ``caused_by`` the new message continues that message's flow: it
        takes its correlation id and municipality and records it as the cause.
        Without it a new flow starts (a fresh correlation id unless given).
        """
        if caused_by is not None:
            correlation_id = correlation_id or caused_by.correlation_id
            municipality = municipality or caused_by.municipality
        if municipality is None:
            raise ValueError("a message needs a municipality")
        return cls(
            producer=producer,
            municipality=municipality,
            correlation_id=correlation_id or uuid4(),
            causation_id=caused_by.event_id if caused_by is not None else None,
            **payload,
        )

    def payload(self) -> dict[str, Any]:
        """The fields of this message's type, without the envelope (as :meth:`new` takes them)."""
        return {
            name: getattr(self, name)
            for name in type(self).model_fields
            if name not in Message.model_fields
        }


def type_name(name: str) -> Any:
    """The ``event_type`` field: ``event_type: Literal["X"] = type_name("X")``."""
    return Field(default=name, description="Name of the message type.")


class Command(Message):
    """A request addressed to one service. Imperative name, e.g. ``ResolveAddress``."""

    KIND: ClassVar[str] = "command"


class Event(Message):
    """A fact that has happened. Past-tense name, e.g. ``OfferMade``."""

    KIND: ClassVar[str] = "event"
