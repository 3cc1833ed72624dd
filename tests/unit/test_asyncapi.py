"""The AsyncAPI document in docs/ matches the catalogue and the message schemas."""

import yaml

from hub.contracts import DOCUMENT, asyncapi_yaml
from schemas.topics import MESSAGE_TYPES, TOPICS


def test_committed_document_is_current() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == asyncapi_yaml(), (
        "docs/asyncapi.yaml is stale: run `make docs`"
    )


def test_document_lists_every_topic_and_message() -> None:
    document = yaml.safe_load(asyncapi_yaml())
    assert document["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {t.name for t in TOPICS}
    schemas = document["components"]["schemas"]
    for message_type in MESSAGE_TYPES:
        schema = schemas[message_type.__name__]
        assert schema["properties"]["event_type"]["const"] == message_type.__name__
        assert "correlation_id" in schema["properties"]


def test_personal_code_fields_carry_the_code_pattern() -> None:
    schema = yaml.safe_load(asyncapi_yaml())["components"]["schemas"]["ApplicationSubmitted"]
    code = schema["properties"]["child_personal_code"]
    assert code["pattern"] == r"^\d{6}-?\d{5}$"
    assert "description" in code
