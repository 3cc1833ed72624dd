"""The deployment files agree with themselves and with the code (no network, no Docker).

``deploy/compose.yaml`` must describe one consistent three-node KRaft cluster whose external
addresses are the ones ``deploy/hub.env.example`` gives the hub; and ``docs/deployment.md``,
the example settings and the compose file's comments may name only ``HUB_*`` settings, topics
and ``hub`` commands that exist.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.cli import _parser
from hub.kafka import infrastructure_topics
from hub.settings import Settings
from schemas.topics import TOPICS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"
ENV_EXAMPLE = ROOT / "deploy" / "hub.env.example"
GUIDE = ROOT / "docs" / "deployment.md"
NODES = 3


# --------------------------------------------------------------------------- the compose file


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def nodes(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose["services"]
    kafka = {
        name: s
        for name, s in services.items()
        if str(s.get("image", "")).startswith("apache/kafka")
    }
    assert len(kafka) == NODES, f"expected {NODES} apache/kafka services, found {sorted(kafka)}"
    assert kafka.keys() == services.keys(), "the compose file holds the Kafka cluster only"
    return kafka


def env(node: dict[str, Any], name: str) -> str:
    value = node["environment"][name]
    return str(value).lower() if isinstance(value, bool) else str(value)


def listeners(text: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` as {name: (host, port)}."""
    found = {}
    for entry in text.split(","):
        name, _, address = entry.strip().partition("://")
        host, _, port = address.rpartition(":")
        found[name] = (host, int(port))
    return found


def voters(text: str) -> dict[int, tuple[str, int]]:
    """``id@host:port,...`` as {id: (host, port)}."""
    found = {}
    for entry in text.split(","):
        node_id, _, address = entry.strip().partition("@")
        host, _, port = address.rpartition(":")
        assert int(node_id) not in found, f"voter {node_id} listed twice"
        found[int(node_id)] = (host, int(port))
    return found


def published(node: dict[str, Any]) -> tuple[str, int, int]:
    """The node's one published port as (host address, host port, container port)."""
    ports = node.get("ports", [])
    assert len(ports) == 1, f"one published port per node, not {ports}"
    host_ip, host_port, container_port = str(ports[0]).split(":")
    return host_ip, int(host_port), int(container_port)


def test_image_is_the_official_one_at_a_pinned_version(nodes: dict[str, dict[str, Any]]) -> None:
    for name, node in nodes.items():
        image = node["image"]
        assert re.fullmatch(r"apache/kafka:[34]\.\d+\.\d+", image), f"{name}: {image}"
    assert len({node["image"] for node in nodes.values()}) == 1


def test_every_node_is_broker_and_controller_of_one_cluster(
    nodes: dict[str, dict[str, Any]],
) -> None:
    for name, node in nodes.items():
        roles = {r.strip() for r in env(node, "KAFKA_PROCESS_ROLES").split(",")}
        assert roles == {"broker", "controller"}, name
    ids = [int(env(node, "KAFKA_NODE_ID")) for node in nodes.values()]
    assert len(set(ids)) == NODES, f"node ids must be unique: {ids}"
    cluster_ids = {env(node, "CLUSTER_ID") for node in nodes.values()}
    assert len(cluster_ids) == 1, f"one CLUSTER_ID for all nodes, not {sorted(cluster_ids)}"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env(next(iter(nodes.values())), "CLUSTER_ID"))


def test_quorum_voters_are_the_three_nodes(nodes: dict[str, dict[str, Any]]) -> None:
    texts = {env(node, "KAFKA_CONTROLLER_QUORUM_VOTERS") for node in nodes.values()}
    assert len(texts) == 1, f"every node must list the same voters: {texts}"
    quorum = voters(texts.pop())
    assert len(quorum) == NODES
    for name, node in nodes.items():
        node_id = int(env(node, "KAFKA_NODE_ID"))
        assert node_id in quorum, f"{name} (node {node_id}) is not a voter"
        controller = env(node, "KAFKA_CONTROLLER_LISTENER_NAMES")
        port = listeners(env(node, "KAFKA_LISTENERS"))[controller][1]
        hostname = node.get("hostname", name)
        assert quorum[node_id] == (hostname, port), f"{name}: voter {quorum[node_id]}"
        assert hostname == name, "the hostname is the service name, which the network resolves"


def test_listeners_inter_broker_and_external(nodes: dict[str, dict[str, Any]]) -> None:
    for name, node in nodes.items():
        bound = listeners(env(node, "KAFKA_LISTENERS"))
        advertised = listeners(env(node, "KAFKA_ADVERTISED_LISTENERS"))
        protocols = dict(
            entry.split(":")
            for entry in env(node, "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP").split(",")
        )
        assert set(bound) <= set(protocols), f"{name}: a listener without a protocol"
        inter = env(node, "KAFKA_INTER_BROKER_LISTENER_NAME")
        assert inter == "PLAINTEXT" and protocols[inter] == "PLAINTEXT"
        assert advertised[inter] == (node.get("hostname", name), bound[inter][1])
        controller = env(node, "KAFKA_CONTROLLER_LISTENER_NAMES")
        assert controller not in advertised, "controllers are not advertised to clients"
        external = [n for n in advertised if n != inter]
        assert len(external) == 1, f"{name}: one external listener, not {external}"
        host_ip, host_port, container_port = published(node)
        assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip}"
        assert container_port == bound[external[0]][1], f"{name}: port not the external listener"
        assert advertised[external[0]] == ("127.0.0.1", host_port), name


def test_external_ports_are_distinct(nodes: dict[str, dict[str, Any]]) -> None:
    ports = [published(node)[1] for node in nodes.values()]
    assert sorted(ports) == [19092, 29092, 39092]


def test_replication_and_durability(nodes: dict[str, dict[str, Any]]) -> None:
    for name, node in nodes.items():
        for setting in (
            "KAFKA_DEFAULT_REPLICATION_FACTOR",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        ):
            assert NODES >= int(env(node, setting)) >= 3, f"{name}: {setting}"
        assert int(env(node, "KAFKA_MIN_INSYNC_REPLICAS")) == 2, name
        assert int(env(node, "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR")) == 2, name
        assert env(node, "KAFKA_AUTO_CREATE_TOPICS_ENABLE") == "false", name
        assert env(node, "KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE") == "false", name


def test_data_on_named_volumes_and_health_checked(
    compose: dict[str, Any], nodes: dict[str, dict[str, Any]]
) -> None:
    used = []
    for name, node in nodes.items():
        log_dir = env(node, "KAFKA_LOG_DIRS")
        mounts = [str(v).split(":") for v in node.get("volumes", [])]
        named = [source for source, target, *_ in mounts if target == log_dir]
        assert len(named) == 1, f"{name}: {log_dir} is not on a volume"
        assert named[0] in (compose.get("volumes") or {}), f"{name}: {named[0]} is not declared"
        used.append(named[0])
        assert node.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert len(set(used)) == NODES, "each node has a volume of its own"


def test_hub_settings_point_at_the_cluster(nodes: dict[str, dict[str, Any]]) -> None:
    external = ",".join(
        f"127.0.0.1:{published(node)[1]}" for node in sorted(nodes.values(), key=published)
    )
    example = dict(_assignments(ENV_EXAMPLE.read_text(encoding="utf-8")))
    assert example["HUB_BOOTSTRAP_SERVERS"] == external
    assert int(example["HUB_REPLICATION_FACTOR"]) == NODES
    header = COMPOSE.read_text(encoding="utf-8")
    assert f"HUB_BOOTSTRAP_SERVERS={external} HUB_REPLICATION_FACTOR={NODES}" in header
    assert "hub topics create" in header


def test_the_example_settings_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HUB_"):
            monkeypatch.delenv(name)
    settings = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    assert settings.replication_factor == NODES
    assert settings.bootstrap_servers


def _assignments(text: str) -> Iterator[tuple[str, str]]:
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            yield name.strip(), value.strip()


# --------------------------------------------------------------------------- names in the texts

TEXTS = (GUIDE, ENV_EXAMPLE, COMPOSE)
SETTING = re.compile(r"\bHUB_[A-Z0-9_]*[A-Z0-9]\b")
TOPIC = re.compile(r"(?<![\w.>/-])[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)+\.v\d+\b")
_ARGUMENTS = r"\s+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z|-]*))?"
COMMAND = re.compile(r"(?:^|(?<=[\s/`(]))hub" + _ARGUMENTS)
"""``hub COMMAND [WORD]`` in code; WORD may list alternatives (``run gis-adapter|dvs-adapter``)."""
INVOKED = re.compile(r"(?<=[/`])hub" + _ARGUMENTS)
"""The same where prose surrounds it (comments): only ``…/bin/hub …`` and `` `hub …` ``."""


def test_settings_named_exist() -> None:
    assert Settings.model_config.get("env_prefix") == "HUB_"
    known = {f"HUB_{field.upper()}" for field in Settings.model_fields}
    for path in TEXTS:
        named = set(SETTING.findall(path.read_text(encoding="utf-8")))
        assert named, f"{path.name} names no setting at all: is the pattern broken?"
        unknown = sorted(named - known)
        assert not unknown, f"{path.name} names settings that do not exist: {unknown}"


def test_topics_named_exist() -> None:
    known = {t.name for t in TOPICS} | set(infrastructure_topics())
    named = set(TOPIC.findall(GUIDE.read_text(encoding="utf-8")))
    assert "allocation.journal.v1" in named, "is the pattern broken?"
    unknown = sorted(named - known)
    assert not unknown, f"docs/deployment.md names topics that do not exist: {unknown}"


def _code(markdown: str) -> Iterator[str]:
    """The code in a Markdown text: inline spans and the lines of fenced blocks, without
    shell and unit-file comments."""
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            yield re.sub(r"(^|\s)[#;].*$", "", line)
        else:
            yield from re.findall(r"`([^`]+)`", line)


def _commands(parser: argparse.ArgumentParser) -> dict[str, set[str] | None]:
    """Each ``hub`` command and the words its first argument may be (None: anything)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    table: dict[str, set[str] | None] = {}
    for name, command in sub.choices.items():
        positional = [a for a in command._actions if not a.option_strings and a.dest != "help"]
        first = positional[0] if positional else None
        table[name] = set(first.choices) if first is not None and first.choices else None
    return table


def _mentioned(pattern: re.Pattern[str], texts: list[str]) -> Iterator[tuple[str, str | None]]:
    for text in texts:
        for match in pattern.finditer(text):
            command, argument = match.groups()
            for word in (argument or "").split("|"):
                yield command, word or None


def test_commands_named_exist() -> None:
    table = _commands(_parser())
    mentioned = set(_mentioned(COMMAND, list(_code(GUIDE.read_text(encoding="utf-8")))))
    for path in (COMPOSE, ENV_EXAMPLE):
        mentioned |= set(_mentioned(INVOKED, path.read_text(encoding="utf-8").splitlines()))
    assert ("topics", "create") in mentioned, "is the pattern broken?"
    wrong = []
    for command, argument in sorted(mentioned, key=str):
        if command not in table:
            wrong.append(f"hub {command}")
        elif argument is not None and table[command] is not None and argument not in table[command]:
            wrong.append(f"hub {command} {argument}")
    assert not wrong, f"commands that do not exist: {wrong}"
