"""The topic catalogue is consistent: producers, consumers, keys, payload types."""

import ast
import re
import sys
from pathlib import Path
from typing import Annotated, get_args

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

import schemas
from schemas.base import Command, Event, Message
from schemas.topics import MESSAGE_TYPES, SERVICES, TOPICS, Topic, topic_for
from schemas.values import PersonalCode

PERSONAL_CODES = ("161175-19997", "16117519997", "328673-00679")


def _all_message_classes() -> set[type[Message]]:
    """Every concrete message class defined in the schemas package."""
    found: set[type[Message]] = set()
    pending: list[type] = [Command, Event]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            pending.append(sub)
            if not sub.__name__.startswith("_") and sub.__module__.startswith("schemas."):
                found.add(sub)
    return found


def test_topic_names_are_unique_and_versioned() -> None:
    names = [t.name for t in TOPICS]
    assert len(names) == len(set(names))
    for name in names:
        assert re.fullmatch(r"[a-z]+(\.[a-z]+)+\.v\d+", name), name


@pytest.mark.parametrize("topic", TOPICS, ids=lambda t: t.name)
def test_every_topic_has_a_producer_and_a_consumer(topic: Topic) -> None:
    assert topic.producer in SERVICES
    assert topic.consumers, f"{topic.name} has no consumer"
    assert set(topic.consumers) <= set(SERVICES)
    assert topic.producer not in topic.consumers
    assert topic.partitions >= 1


def test_every_message_type_is_on_exactly_one_topic() -> None:
    carried = [m for t in TOPICS for m in t.messages]
    assert len(carried) == len(set(carried))
    assert set(carried) == _all_message_classes()
    for message_type in MESSAGE_TYPES:
        assert message_type in topic_for(message_type).messages
    assert {m.__name__ for m in MESSAGE_TYPES} == {
        m.model_fields["event_type"].default for m in MESSAGE_TYPES
    }


def test_an_unknown_message_type_has_no_topic() -> None:
    class Stray(Event):
        pass

    with pytest.raises(LookupError, match="Stray"):
        topic_for(Stray)


@pytest.mark.parametrize("topic", TOPICS, ids=lambda t: t.name)
def test_keys_exist_on_every_message_and_never_take_a_personal_code(topic: Topic) -> None:
    for message_type in topic.messages:
        field = message_type.model_fields.get(topic.key)
        assert field is not None, f"{message_type.__name__} lacks key {topic.key}"
        assert field.is_required(), f"{message_type.__name__}.{topic.key} must always be set"
        assert not _mentions_personal_code(field.annotation)
        key_type = TypeAdapter(_field_type(message_type, topic.key))
        for code in PERSONAL_CODES:
            with pytest.raises(ValidationError):
                key_type.validate_python(code)


def _field_type(model: type[BaseModel], name: str) -> object:
    info = model.model_fields[name]
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _mentions_personal_code(annotation: object) -> bool:
    return annotation is PersonalCode or any(
        _mentions_personal_code(a) for a in get_args(annotation)
    )


def test_schemas_package_imports_only_pydantic_and_the_standard_library() -> None:
    allowed = {"pydantic", "pydantic_core", "schemas", "__future__"} | set(sys.stdlib_module_names)
    for path in Path(schemas.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed}"


def test_readme_lists_every_topic_with_its_messages() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for topic in TOPICS:
        row = next((line for line in readme.splitlines() if f"`{topic.name}`" in line), "")
        assert row, f"README does not list {topic.name}"
        for message_type in topic.messages:
            assert message_type.__name__ in row, f"README row of {topic.name}"
