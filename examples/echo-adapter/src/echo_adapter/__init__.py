"""An example plug-in: every ``EchoRequested`` on ``echo.requests.v1`` is answered with an
``Echoed`` of the same text on ``echo.replies.v1``.

The hub finds :func:`service` through the ``hub.services`` entry point ``echo-adapter``
(see ``pyproject.toml``). The topics and message types are the plug-in's own: the
hub's catalogue does not know them, so the service lists them in what it builds and
``hub run`` creates them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from hub.plugins import Built, Clock
from hub.reliability.consumer import Handler, Unit
from hub.reliability.service import ServiceSpec
from hub.settings import Settings
from schemas.base import Command, Event, type_name
from schemas.topics import OPERATOR, Topic

NAME = "echo-adapter"


class EchoRequested(Command):
    """Someone asks the echo service to say ``text`` back."""

    event_type: Literal["EchoRequested"] = type_name("EchoRequested")
    ref: str = Field(pattern=r"^[A-Za-z0-9-]{1,40}$", description="What the echo answers.")
    text: str = Field(max_length=200, description="What to say back.")


class Echoed(Event):
    """The echo service said ``text`` back."""

    event_type: Literal["Echoed"] = type_name("Echoed")
    ref: str = Field(description="The request's ref.")
    text: str = Field(description="The request's text.")


REQUESTS = Topic(
    name="echo.requests.v1",
    key="ref",
    partitions=1,
    producer=OPERATOR,
    consumers=(NAME,),
    messages=(EchoRequested,),
    description="Requests to the example echo service.",
)
REPLIES = Topic(
    name="echo.replies.v1",
    key="ref",
    partitions=1,
    producer=NAME,
    consumers=(),
    messages=(Echoed,),
    description="The example echo service's answers.",
)


class Echo(Handler[EchoRequested]):
    def __init__(self) -> None:
        super().__init__(REQUESTS)

    def apply(self, unit: Unit, message: EchoRequested, fetched: Any) -> None:
        answer = Echoed.new(producer=NAME, caused_by=message, ref=message.ref, text=message.text)
        unit.emit(answer, topic=REPLIES)


def service(settings: Settings, *, clock: Clock | None = None, api: bool = True) -> Built:
    """The echo service (it has no settings of its own, no clock and no API)."""
    return Built(ServiceSpec(NAME, [Echo()]), topics=(REQUESTS, REPLIES), where="echo")
