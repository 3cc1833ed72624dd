"""Every message type survives a JSON round trip and is parsed back from its topic."""

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import get_args
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from schemas.allocation import RunRound
from schemas.applications import ApplicationSubmitted
from schemas.base import Command, Event, Message
from schemas.notifications import Recipient
from schemas.topics import MESSAGE_TYPES, topic_for
from tests.allocation_messages import offer_made
from tests.strategies import for_model

ALL = st.sampled_from(MESSAGE_TYPES).flatmap(for_model)


@settings(max_examples=150)
@given(ALL)
def test_json_round_trip_of_every_message_type(message: Message) -> None:
    wire = message.model_dump_json()
    assert type(message).model_validate_json(wire) == message
    assert topic_for(message).parse(wire.encode()) == message
    assert json.loads(wire)["event_type"] == type(message).__name__


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda m: m.__name__)
@settings(max_examples=25)
@given(data=st.data())
def test_each_type_round_trips(message_type: type[Message], data: st.DataObject) -> None:
    message = data.draw(for_model(message_type))
    assert message_type.model_validate_json(message.model_dump_json()) == message


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda m: m.__name__)
def test_types_are_frozen_commands_or_events_named_by_their_event_type(
    message_type: type[Message],
) -> None:
    assert issubclass(message_type, Command) != issubclass(message_type, Event)
    assert message_type.model_fields["event_type"].default == message_type.__name__
    assert message_type.model_config["frozen"] is True


def _models_within(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
    yield model
    for info in model.model_fields.values():
        for arg in (info.annotation, *get_args(info.annotation)):
            for inner in (arg, *get_args(arg)):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    yield from _models_within(inner)


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda m: m.__name__)
def test_every_field_is_documented(message_type: type[Message]) -> None:
    undocumented = [
        f"{model.__name__}.{name}"
        for model in _models_within(message_type)
        for name, info in model.model_fields.items()
        if not info.description
    ]
    assert undocumented == []


def _run_round(**overrides: object) -> RunRound:
    return RunRound.new(
        producer="operator",
        municipality="riga",
        round_id=uuid4(),
        round_date=date(2026, 5, 4),
        requested_by="admin",
        **overrides,
    )


@settings(max_examples=150)
@given(ALL)
def test_payload_is_what_new_needs_to_build_the_same_message_again(message: Message) -> None:
    payload = message.payload()
    assert not payload.keys() & Message.model_fields.keys()
    again = type(message).new(producer=message.producer, caused_by=message, **payload)
    envelope = set(Message.model_fields)
    assert again.model_dump(exclude=envelope) == message.model_dump(exclude=envelope)
    assert again.causation_id == message.event_id


def test_new_starts_a_flow_and_caused_by_continues_it() -> None:
    command = _run_round()
    assert command.causation_id is None
    # no municipality of its own: the offer takes the command's
    offer = offer_made(caused_by=command, municipality=None, round_id=command.round_id)
    assert offer.correlation_id == command.correlation_id
    assert offer.causation_id == command.event_id
    assert offer.municipality == "riga"
    assert offer.event_id != command.event_id


def test_timestamps_must_be_aware_and_are_normalised_to_utc() -> None:
    riga = timezone(timedelta(hours=3))
    command = _run_round(occurred_at=datetime(2026, 5, 4, 12, 0, tzinfo=riga))
    assert command.occurred_at == datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    assert command.occurred_at.utcoffset() == timedelta(0)
    with pytest.raises(ValidationError, match="time zone"):
        _run_round(occurred_at=datetime(2026, 5, 4, 12, 0))


def test_messages_are_immutable_and_reject_unknown_fields() -> None:
    command = _run_round()
    with pytest.raises(ValidationError):
        command.requested_by = "someone else"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Extra inputs"):
        _run_round(colour="blue")


def _application(**overrides: object) -> ApplicationSubmitted:
    fields: dict[str, object] = {
        "application_id": "APP-0001",
        "child_ref": "CH-0001",
        "child_personal_code": "111111-11111",
        "child_birth_date": date(1911, 11, 11),
        "guardians": [{"personal_code": "161175-19997", "email": "a@example.lv"}],
        "residence_address_code": "101234567",
        "institutions": ["PII-001", "PII-002"],
        "desired_start_date": date(2026, 9, 1),
        "language": "lv",
        "registered_at": datetime(2025, 1, 2, tzinfo=UTC),
    }
    return ApplicationSubmitted.new(
        producer="vps-adapter", municipality="riga", **(fields | overrides)
    )


def test_application_rules() -> None:
    assert _application().child_personal_code.birth_date == date(1911, 11, 11)
    with pytest.raises(ValidationError, match="differs from the date"):
        _application(child_birth_date=date(2020, 1, 1))
    with pytest.raises(ValidationError, match="more than once"):
        _application(institutions=["PII-001", "PII-001"])
    with pytest.raises(ValidationError, match="power_of_attorney_ref"):
        _application(submitted_via="client_service_centre")
    with pytest.raises(ValidationError):
        _application(institutions=[])
    with pytest.raises(ValidationError):
        _application(child_ref="16117519997")  # a personal code is never a reference


def test_invalid_application_error_names_the_field_not_the_value() -> None:
    with pytest.raises(ValidationError) as caught:
        _application(child_personal_code="161175-19996")
    text = str(caught.value)
    assert "child_personal_code" in text and "check digit" in text
    assert "19996" not in text


def test_a_recipient_must_be_reachable() -> None:
    with pytest.raises(ValidationError, match="at least one way"):
        Recipient()
    assert Recipient(email="x@example.lv").email == "x@example.lv"
