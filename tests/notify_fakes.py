"""Notification channel clients for tests: they implement the channel port and remember
what they were given, answering as told."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from adapters.notify.base import Accepted, ChannelClient, Outcome, Outgoing, Rejected
from adapters.notify.letter import LetterEvent, LetterPage
from hub.errors import TransientError

ANSWERS = ("accept", "deliver", "reject", "greylist", "crash")
"""What a fake's send can do: accept, accept as delivered (an SMTP 250), refuse the
recipient, fail for now (a 4xx), or die before answering (:class:`Crash`)."""


class Crash(Exception):
    """The process dies here (nothing after this point is stored)."""


class FakeChannel(ChannelClient):
    """A channel client that records every call; ``answers`` are used in turn (the last
    repeats); provider ids are ``ids`` formatted with the send's number from 1."""

    def __init__(
        self,
        clock: Callable[[], datetime],
        ids: str,
        *answers: str,
        reaches: bool = True,
    ) -> None:
        unknown = set(answers) - set(ANSWERS)
        if unknown:
            raise ValueError(f"a fake channel cannot answer {sorted(unknown)}")
        self.clock, self.ids, self.answers = clock, ids, list(answers or ["accept"])
        self.reachable = reaches
        self.checked: list[str] = []
        self.sent: list[tuple[str, Outgoing]] = []
        self.closed = False

    async def reaches(self, to: str) -> bool:
        self.checked.append(to)
        return self.reachable

    async def send(self, to: str, message: Outgoing) -> Outcome:
        self.sent.append((to, message))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer == "crash":
            raise Crash("killed while the provider answered")
        if answer == "greylist":
            raise TransientError("451 try again later")
        if answer == "reject":
            return Rejected("recipient_refused")
        provider_id = self.ids.format(n=len(self.sent))
        return Accepted(provider_id, self.clock(), delivered=answer == "deliver")

    async def close(self) -> None:
        self.closed = True

    @property
    def messages(self) -> list[Outgoing]:
        return [message for _, message in self.sent]


class FakePost(FakeChannel):
    """The print-and-post service: a channel, and the feed of its letters' status changes."""

    def __init__(self, clock: Callable[[], datetime], *answers: str) -> None:
        super().__init__(clock, "letter-{n}", *answers)
        self.feed: list[LetterEvent] = []

    async def events(self, after: int) -> LetterPage:
        return LetterPage(events=tuple(e for e in self.feed if e.seq > after), last=len(self.feed))
