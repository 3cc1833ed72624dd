"""The simulated parents decide offers by seeded shares and answer them in the e-service.

No broker: the offers the parents would read off the topic are handed to them,
and the e-service is an HTTP stand-in that shows an offer only after a while.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, date, datetime

import httpx
import pytest

from schemas.allocation import OfferDeadlineSet, OfferMade, PlaceAccepted
from simulators.parents import Choices, Parents, ParentsError
from tests.allocation_messages import deadline_set, offer_made


def offer(n: int) -> OfferMade:
    return offer_made(child_ref=f"CH-{n:04d}", application_id=f"APP-{n:04d}")


def notified(made: OfferMade) -> OfferDeadlineSet:
    return deadline_set(made, notified_on=date(2026, 8, 3), respond_by=date(2026, 8, 18))


def test_choices_split_offers_by_their_shares_and_refuse_impossible_ones() -> None:
    choices = Choices(accept=0.6, decline=0.25)
    draws = random.Random(1)
    verdicts = Counter(choices.verdict(draws.random()) for _ in range(20_000))
    assert verdicts["accept"] / 20_000 == pytest.approx(0.6, abs=0.02)
    assert verdicts["decline"] / 20_000 == pytest.approx(0.25, abs=0.02)
    assert verdicts["silent"] / 20_000 == pytest.approx(0.15, abs=0.02)
    with pytest.raises(ValueError, match="at most 1"):
        Choices(accept=0.8, decline=0.3)


async def test_parents_answer_each_notified_offer_once_when_the_e_service_shows_it() -> None:
    tries: Counter[str] = Counter()
    answers: dict[str, str] = {}

    def eservice(request: httpx.Request) -> httpx.Response:
        offer_id = request.url.path.split("/")[3]
        tries[offer_id] += 1
        if tries[offer_id] < 3:  # the VPS adapter has not shown it yet
            return httpx.Response(404, json={"error": "unknown_offer"})
        answers[offer_id] = request.read().decode()
        return httpx.Response(204)

    parents = Parents("127.0.0.1:9", "riga", choices=Choices(accept=0.5, decline=0.5, seed=4))
    parents._http = httpx.AsyncClient(
        transport=httpx.MockTransport(eservice), base_url="http://vps"
    )
    made = [offer(n) for n in range(40)]
    for m in made:
        parents._see(m, 0.0)
    for m in made[:30]:
        parents._see(notified(m), 0.0)
    parents._see(offer(99).model_copy(update={"municipality": "cesis"}), 0.0)  # not theirs

    decisions = parents.answer_notified()
    assert len(decisions) == 30 and parents.answer_notified() == []  # each offer once
    assert {str(m.offer_id) for m, _ in decisions} == {str(m.offer_id) for m in made[:30]}
    assert parents.made == 40 and len(parents.awaiting_effect()) == 40
    assert parents.answering == len([v for _, v in decisions if v != "silent"])
    async with parents._http, asyncio.timeout(10):
        await asyncio.gather(*parents._answering)
    verdicts = Counter(v for _, v in decisions)
    assert verdicts["accept"] and verdicts["decline"] and not verdicts["silent"]
    assert parents.answered == verdicts
    assert set(tries.values()) == {3} and len(answers) == 30
    assert all(f'"{v}"' in answers[str(m.offer_id)] for m, v in decisions)

    # The offer closes: it is no longer live, and nothing more is answered.
    first = made[0]
    parents._see(
        PlaceAccepted.new(
            producer="allocation",
            municipality="riga",
            offer_id=first.offer_id,
            child_ref=first.child_ref,
            application_id=first.application_id,
            institution_id=first.institution_id,
            group_code=first.group_code,
            start_date=first.start_date,
            accepted_at=datetime.now(UTC),
        ),
        0.0,
    )
    assert first.child_ref not in parents.live and parents.answer_notified() == []


async def test_an_e_service_that_refuses_an_application_stops_the_parents() -> None:
    parents = Parents("127.0.0.1:9", "riga")
    parents._http = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda _: httpx.Response(422)), base_url="http://vps"
    )
    async with parents._http:
        with pytest.raises(ParentsError, match="refused an application: 422"):
            await parents.apply([{"child_personal_code": "x"}])
