"""The operations view's projection: timelines, round figures, receipts, and no personal data."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiokafka import ConsumerRecord

from hub.ops.live import letter_summary
from hub.ops.projection import Projection
from hub.reliability.consumer import outbox_row
from hub.reliability.deadletters import DeadLetter, Failure
from schemas.addresses import AddressResolved
from schemas.allocation import (
    InstitutionFill,
    OfferDeadlineSet,
    OfferDeclined,
    OfferExpired,
    OfferMade,
    ParentAccepted,
    ParentDeclined,
    PlaceAccepted,
    RoundCompleted,
)
from schemas.applications import (
    ApplicationRefused,
    ApplicationSubmitted,
    Guardian,
    PriorityClaims,
)
from schemas.authorisations import AuthorisationRefused
from schemas.base import Message
from schemas.enrollment import EnrollmentChecked, EnrollmentRegistered
from schemas.geo import Lks92Point, Wgs84Point
from schemas.notifications import (
    NotificationDeemedNotified,
    NotificationFailed,
    NotificationSent,
)
from schemas.priority import PriorityRejected
from schemas.residence import Residence, ResidenceChecked
from schemas.topics import ALLOCATION, AUTHORISATIONS, GIS, NOTIFY, VIIS, VPS, topic_for
from schemas.values import personal_code_check_digit

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
GUARDIAN_CODE = "161175-19997"
GUARDIAN_EMAIL = "parent.one@example.lv"
GUARDIAN_PHONE = "+37120000001"
SECRET_REASON = "we moved; call me on my code 161175-19997"


def personal_code(born: date, serial: int) -> str:
    """A valid old-format personal code of someone born on ``born``."""
    century = {18: "0", 19: "1", 20: "2"}[born.year // 100]
    first_ten = f"{born:%d%m%y}{century}{serial:03d}"
    return f"{first_ten[:6]}-{first_ten[6:]}{personal_code_check_digit(first_ten)}"


class Flow:
    """Messages of a small admission story, one second apart."""

    def __init__(self, start: datetime = T0) -> None:
        self.at = start
        self.messages: list[Message] = []

    def add(
        self, cls: type[Message], producer: str, *, municipality: str = "riga", **fields: Any
    ) -> Any:
        self.at += timedelta(seconds=1)
        message = cls.new(
            producer=producer, municipality=municipality, occurred_at=self.at, **fields
        )
        self.messages.append(message)
        return message

    def pairs(self) -> list[tuple[str, Message]]:
        return [(topic_for(m).name, m) for m in self.messages]


def apply_child(
    flow: Flow, child_ref: str, *, serial: int, institutions: tuple[str, ...]
) -> ApplicationSubmitted:
    born = date(2023, 3, 15)
    return flow.add(
        ApplicationSubmitted,
        VPS,
        application_id=f"APP-{child_ref}",
        child_ref=child_ref,
        child_personal_code=personal_code(born, serial),
        child_birth_date=born,
        guardians=[
            Guardian(
                personal_code=GUARDIAN_CODE,
                email=GUARDIAN_EMAIL,
                phone=GUARDIAN_PHONE,
                postal_address_code="101234567",
            )
        ],
        residence_address_code="101234567",
        registered_at=flow.at - timedelta(days=200),
        institutions=institutions,
        desired_start_date=date(2026, 9, 1),
        language="lv",
        claims=PriorityClaims(
            large_family=True, sibling_personal_codes=[personal_code(date(2020, 1, 2), 7)]
        ),
    )


def offer(
    flow: Flow, child_ref: str, institution: str, round_id: uuid.UUID | None, rank: int = 1
) -> OfferMade:
    return flow.add(
        OfferMade,
        ALLOCATION,
        offer_id=uuid.uuid4(),
        child_ref=child_ref,
        round_id=round_id,
        application_id=f"APP-{child_ref}",
        institution_id=institution,
        group_code="2024-lv",
        language="lv",
        start_date=date(2026, 9, 1),
        preference_rank=rank,
        response_days=14,
    )


def completed(flow: Flow, round_id: uuid.UUID, **figures: Any) -> RoundCompleted:
    """A round in Riga that placed its one applicant, unless ``figures`` say otherwise."""
    fields: dict[str, Any] = {
        "round_date": date(2026, 9, 1),
        "applications_considered": 1,
        "offers_made": 1,
        "children_unplaced": 0,
        "lottery_seed": 1,
    }
    return flow.add(RoundCompleted, ALLOCATION, round_id=round_id, **(fields | figures))


def scenario(tag: str = "", *, start: datetime = T0) -> dict[str, Any]:
    """One round at two institutions: an acceptance (the full story), a decline, an expiry
    and a cascade offer still open. ``tag`` makes the references unique on a shared broker."""
    flow = Flow(start)
    a, b = f"PII-A{tag}", f"PII-B{tag}"
    one, two, three, four = (f"CH-{name}{tag}" for name in ("one", "two", "three", "four"))
    round_id = uuid.uuid4()
    apply_child(flow, one, serial=101, institutions=(a, b))
    apply_child(flow, two, serial=102, institutions=(a,))
    flow.add(
        EnrollmentChecked,
        VIIS,
        child_ref=one,
        as_of=date(2026, 9, 1),
        attending_institution_id=None,
        sibling_institution_ids=[b],
    )
    flow.add(
        AddressResolved,
        GIS,
        subject_ref=one,
        address_code="101234567",
        full_address="Brīvības iela 1, Rīga, LV-1050",
        postcode="LV-1050",
        territory_code="0010000",
        lks92=Lks92Point(northing=312_000, easting=507_000),
        wgs84=Wgs84Point(latitude=56.95, longitude=24.11),
    )
    first = offer(flow, one, a, round_id)
    second = offer(flow, two, a, round_id)
    third = offer(flow, three, b, round_id, rank=2)
    completed(
        flow,
        round_id,
        applications_considered=4,
        offers_made=3,
        children_unplaced=1,
        lottery_seed=42,
        institutions=[
            InstitutionFill(institution_id=a, capacity=2, offered=2, accepted=0),
            InstitutionFill(institution_id=b, capacity=2, offered=1, accepted=0),
        ],
    )
    receipt = {"notification_id": uuid.uuid4(), "child_ref": one, "offer_id": first.offer_id}
    flow.add(NotificationSent, NOTIFY, channel="e_adrese", sent_at=flow.at, **receipt)
    flow.add(
        NotificationDeemedNotified,
        NOTIFY,
        channel="e_adrese",
        sent_at=flow.at,
        deemed_notified_on=date(2026, 5, 6),
        **receipt,
    )
    flow.add(
        OfferDeadlineSet,
        ALLOCATION,
        offer_id=first.offer_id,
        child_ref=one,
        notified_on=date(2026, 5, 6),
        respond_by=date(2026, 5, 20),
    )
    flow.add(ParentAccepted, VPS, offer_id=first.offer_id, child_ref=one, responded_at=flow.at)
    flow.add(
        PlaceAccepted,
        ALLOCATION,
        offer_id=first.offer_id,
        child_ref=one,
        application_id=f"APP-{one}",
        institution_id=a,
        group_code="2024-lv",
        start_date=date(2026, 9, 1),
        accepted_at=flow.at,
    )
    flow.add(
        EnrollmentRegistered,
        VIIS,
        child_ref=one,
        offer_id=first.offer_id,
        institution_id=a,
        viis_enrollment_id="VIIS-1",
        registered_at=flow.at,
    )
    flow.add(
        ParentDeclined,
        VPS,
        offer_id=second.offer_id,
        child_ref=two,
        responded_at=flow.at,
        reason=SECRET_REASON,
    )
    flow.add(
        OfferDeclined, ALLOCATION, offer_id=second.offer_id, child_ref=two, declined_at=flow.at
    )
    flow.add(
        OfferExpired,
        ALLOCATION,
        offer_id=third.offer_id,
        child_ref=three,
        respond_by=date(2026, 5, 20),
    )
    cascade = offer(flow, four, b, None, rank=1)
    flow.add(
        NotificationFailed,
        NOTIFY,
        notification_id=uuid.uuid4(),
        child_ref=four,
        offer_id=cascade.offer_id,
        channel="sms",
        permanent=True,
        reason=f"number of {GUARDIAN_CODE} unreachable",
        failed_at=flow.at,
    )
    return {
        "flow": flow,
        "children": (one, two, three, four),
        "institutions": (a, b),
        "round_id": round_id,
    }


STORY = [
    "application",
    "facts",
    "facts",
    "offer",
    "notification",
    "notification",
    "offer",
    "answer",
    "outcome",
    "enrolment",
]


def interleaved(pairs: list[tuple[str, Message]], *, seed: int) -> list[tuple[str, Message]]:
    """``pairs`` with the topics merged at random, each topic's messages still in order."""
    queues: dict[str, list[tuple[str, Message]]] = {}
    for pair in pairs:
        queues.setdefault(pair[0], []).append(pair)
    pick = random.Random(seed)
    merged = []
    while queues:
        topic = pick.choice(sorted(queues))
        merged.append(queues[topic].pop(0))
        if not queues[topic]:
            del queues[topic]
    return merged


def fed(pairs: list[tuple[str, Message]], **limits: int) -> Projection:
    projection = Projection(**limits)
    for topic, message in pairs:
        projection.apply(topic, message)
    return projection


def test_a_timeline_tells_the_story_in_order_whatever_order_the_topics_are_read_in() -> None:
    story = scenario()
    pairs = story["flow"].pairs()
    one = story["children"][0]
    # Each topic is read in order, but topics interleave: one after another, or at random.
    by_topic = fed(sorted(pairs, key=lambda p: p[0]))
    for projection in (by_topic, fed(interleaved(pairs, seed=3)), fed(interleaved(pairs, seed=4))):
        found = projection.timeline(one)
        assert found is not None
        assert [e["kind"] for e in found["entries"]] == STORY
        assert found["application_id"] == f"APP-{one}"
        assert found["offer"] == {"seat": "PII-A / 2024-lv", "status": "accepted"}
    summaries = [e["summary"] for e in by_topic.timeline(one)["entries"]]  # type: ignore[index]
    assert summaries[0].startswith(f"application APP-{one} registered")
    assert "PII-A > PII-B" in summaries[0] and "large family" in summaries[0]
    assert summaries[1] == (
        "VIIS as of 2026-09-01: attends no municipal pre-school; siblings attend PII-B"
    )
    assert "territory 0010000, LV-1050" in summaries[2]
    assert "offer PII-A / 2024-lv (choice 1) in round" in summaries[3]
    assert summaries[6] == "PII-A / 2024-lv: notified 2026-05-06, answer by 2026-05-20"
    assert summaries[7] == "parents accepted PII-A / 2024-lv (e-service)"


def test_receipts_and_answers_name_the_offer_even_when_read_before_it() -> None:
    story = scenario()
    later = ("allocation.offers.v1",)
    projection = fed(sorted(story["flow"].pairs(), key=lambda pair: pair[0] in later))
    one, _, _, four = story["children"]
    receipts = [
        e["summary"]
        for e in projection.timeline(one)["entries"]  # type: ignore[index]
        if e["kind"] == "notification"
    ]
    assert receipts[0].startswith("e-adrese: sent ") and receipts[0].endswith("(PII-A / 2024-lv)")
    assert receipts[1] == "e-adrese: deemed notified on 2026-05-06 (PII-A / 2024-lv)"
    entries = projection.timeline(one)["entries"]  # type: ignore[index]
    answer = [e for e in entries if e["kind"] == "answer"]
    assert answer[0]["summary"] == "parents accepted PII-A / 2024-lv (e-service)"
    failed = projection.timeline(four)["entries"][-1]  # type: ignore[index]
    assert failed["kind"] == "notification"
    assert failed["summary"].startswith("SMS: failed (permanent): number of ******-*****")


def test_the_latest_round_per_institution() -> None:
    story = scenario()
    projection = fed(story["flow"].pairs())
    result = projection.latest_round()
    assert result["round"]["round_id"] == str(story["round_id"])
    assert result["round"]["completed"] is True
    assert result["round"]["offers_made"] == 3 and result["round"]["lottery_seed"] == 42
    figures = {i["institution_id"]: i for i in result["institutions"]}
    assert figures["PII-A"] == {
        "institution_id": "PII-A",
        "capacity": 2,
        "made": 2,
        "live": 0,
        "accepted": 1,
        "declined": 1,
        "expired": 0,
        "revoked": 0,
    }
    # PII-B: the round's offer expired; the cascade offer made after the round is live.
    assert (figures["PII-B"]["made"], figures["PII-B"]["expired"], figures["PII-B"]["live"]) == (
        2,
        1,
        1,
    )


def test_a_newer_round_replaces_the_older_one_and_takes_the_cascades_after_it() -> None:
    older = scenario()
    projection = fed(older["flow"].pairs())
    flow = Flow(start=older["flow"].at + timedelta(days=30))
    newer = uuid.uuid4()
    offer(flow, "CH-five", "PII-C", newer)
    offer(flow, "CH-six", "PII-C", None)
    for topic, message in flow.pairs():
        projection.apply(topic, message)
    result = projection.latest_round()
    assert result["round"]["round_id"] == str(newer) and result["round"]["completed"] is False
    assert [(i["institution_id"], i["made"], i["live"]) for i in result["institutions"]] == [
        ("PII-C", 2, 2)
    ]
    assert fed([]).latest_round() == {"round": None, "institutions": []}


def test_the_latest_round_is_the_one_published_last_per_municipality() -> None:
    flow = Flow()
    first, second, elsewhere = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    later = completed(flow, first)
    earlier = completed(Flow(start=T0 - timedelta(days=9)), second)  # a clock running behind
    other = completed(flow, elsewhere, municipality="liepaja")
    projection = fed([(topic_for(m).name, m) for m in (later, earlier, other)])
    assert projection.latest_round()["round"]["round_id"] == str(elsewhere)
    assert projection.latest_round("riga")["round"]["round_id"] == str(second)
    assert projection.latest_round("daugavpils") == {"round": None, "institutions": []}


def test_no_personal_data_in_any_summary_or_answer() -> None:
    story = scenario()
    projection = fed(story["flow"].pairs())
    answers = [projection.timeline(child) for child in story["children"]]
    text = json.dumps([answers, projection.latest_round(), projection.message_types()])
    codes = [GUARDIAN_CODE, personal_code(date(2023, 3, 15), 101)]
    codes += [personal_code(date(2023, 3, 15), 102), personal_code(date(2020, 1, 2), 7)]
    for code in codes:
        assert code not in text and code.replace("-", "") not in text
    for private in (GUARDIAN_EMAIL, GUARDIAN_PHONE, "Brīvības", SECRET_REASON, "moved"):
        assert private not in text
    # The story is still all there.
    assert all(a is not None and a["entries"] for a in answers)


def test_copies_are_counted_but_told_once() -> None:
    story = scenario()
    pairs = story["flow"].pairs()
    projection = fed(pairs + pairs[:1])  # the application again: a replay or a redelivery
    one = story["children"][0]
    assert [e["kind"] for e in projection.timeline(one)["entries"]] == STORY  # type: ignore[index]
    assert projection.message_types()["vps.pii.applications.v1"] == {"ApplicationSubmitted": 3}


def test_raw_records_are_parsed_and_invalid_ones_only_counted() -> None:
    story = scenario()
    projection = Projection()
    for message in story["flow"].messages:
        row = outbox_row(message)
        assert projection.ingest(row.topic, row.value) == message
    assert projection.ingest("allocation.offers.v1", b"{not json") is None
    assert projection.ingest("some.other.topic", b"{}") is None
    assert projection.message_types()["allocation.offers.v1"]["invalid"] == 1
    one = story["children"][0]
    assert [e["kind"] for e in projection.timeline(one)["entries"]] == STORY  # type: ignore[index]
    assert projection.timeline("CH-nobody") is None


def test_memory_is_bounded() -> None:
    story = scenario()
    projection = fed(story["flow"].pairs(), max_children=2, max_entries=4)
    assert projection.children() == 2
    one = story["children"][0]
    assert projection.timeline(one) is None  # the oldest child went first
    four = projection.timeline(story["children"][3])
    assert four is not None and len(four["entries"]) == 2 and four["dropped"] == 0
    full = fed(story["flow"].pairs(), max_entries=4).timeline(one)
    assert full is not None
    assert [e["kind"] for e in full["entries"]] == STORY[-4:] and full["dropped"] == 6


def test_a_dead_letter_is_shown_with_its_personal_codes_masked() -> None:
    now = datetime.now(UTC)
    failure = Failure(
        "vps.pii.applications.v1", 2, 17, 5, now, now, "Refused", f"VIIS refused {GUARDIAN_CODE}"
    )
    row = failure.bury(
        "allocation",
        "refused",
        b"CH-one",
        json.dumps({"child_personal_code": GUARDIAN_CODE}).encode(),
        (("event-type", b"ApplicationSubmitted"),),
    )
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        row.topic,
        1,
        9,
        int(now.timestamp() * 1000),
        0,
        row.key,
        row.value,
        None,
        6,
        40,
        row.headers,
    )
    shown = letter_summary(DeadLetter.of(record))
    assert shown["error"] == "VIIS refused ******-*****"
    assert shown["source"] == "vps.pii.applications.v1:2:17" and shown["position"] == "1:9"
    assert shown["event_type"] == "ApplicationSubmitted" and shown["replayable"] is True
    assert (shown["service"], shown["reason"], shown["attempts"]) == ("allocation", "refused", 5)
    assert "19997" not in json.dumps(shown)


def test_checks_decisions_and_refusals_before_a_list_are_on_the_timeline() -> None:
    child, app_id = "CH-00000000c0de", "APP-2026-000777"
    common: dict[str, Any] = {"municipality": "riga", "child_ref": child}
    messages: list[Message] = [
        ResidenceChecked.new(
            producer=VPS,
            as_of=date(2026, 9, 1),
            residences=(
                Residence(
                    subject="child",
                    address_code="100000001",
                    territory_code="0100000",
                    declared_municipality="riga",
                    declared_from=date(2024, 1, 1),
                ),
                Residence(
                    subject="guardian",
                    guardian_index=0,
                    address_code="100000002",
                    territory_code="0800000",
                    declared_municipality="marupe",
                    declared_from=date(2025, 3, 1),
                ),
            ),
            **common,
        ),
        PriorityRejected.new(
            producer="operator",
            ground="large_family",
            decision_number="K-9",
            decided_by="anna",
            decided_on=date(2026, 8, 2),
            reason="not shown",
            **common,
        ),
        AuthorisationRefused.new(
            producer=AUTHORISATIONS,
            application_id=app_id,
            reason="revoked",
            detail="revoked on 2026-03-01",
            **common,
        ),
        ApplicationRefused.new(
            producer=ALLOCATION,
            application_id=app_id,
            reason="authorisation_refused",
            authorisation_reason="revoked",
            detail="the register refused the authorisation: revoked",
            refused_at=T0,
            **common,
        ),
    ]
    projection = fed([(topic_for(m).name, m) for m in messages])
    found = projection.timeline(child)
    assert found is not None
    assert [e["summary"] for e in found["entries"]] == [
        "population register as of 2026-09-01: child in riga, guardian 1 in marupe",
        "commission rejected large family (decision K-9)",
        "register of authorisations: refused (revoked)",
        "application refused: the register refused the authorisation: revoked",
    ]
