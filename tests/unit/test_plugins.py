"""Plug-ins: the installed entry points, the catalogue's names, and clear errors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from hub import plugins
from hub.cli import _parser
from hub.plugins import Built, PluginError
from hub.services import HEALTH_PORTS, SERVICES, installed
from hub.settings import Settings
from schemas.topics import (
    AUTHORISATIONS,
    DVS,
    GIS,
    NOTIFY,
    OPERATOR,
    TOPICS,
    VIIS,
    VPS,
)
from schemas.topics import SERVICES as CATALOGUE_SERVICES
from simulators.faults import FaultInjection
from simulators.municipality import SyntheticMunicipality
from simulators.plugin import SYSTEMS, World, factory, url_setting


def _distribution(root: Path, name: str, entry_points: str) -> None:
    """An installed distribution ``name`` under ``root`` with these entry points (the
    metadata pip writes), so that importlib.metadata finds it once ``root`` is on sys.path."""
    info = root / f"{name}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_the_services_installed_are_the_catalogues() -> None:
    """The names in pyproject.toml's entry points are the names the topics use."""
    assert set(plugins.names(plugins.SERVICES)) == set(CATALOGUE_SERVICES) - {OPERATOR}
    assert set(SERVICES) == set(CATALOGUE_SERVICES) - {OPERATOR}
    assert installed() == SERVICES
    named = {t.producer for t in TOPICS} | {c for t in TOPICS for c in t.consumers}
    assert named - {OPERATOR} == set(SERVICES)


def test_the_authorisations_pair_is_served_like_the_others(tmp_path: Path) -> None:
    """The adapter and the simulator are found by their entry points; the simulator listens
    at HUB_AUTHORISATIONS_URL, where the adapter calls; the adapter's health port comes after
    the others', whose ports and fault seeds stay as they were."""
    settings = Settings(data_dir=tmp_path, _env_file=None)
    built = plugins.build_service(AUTHORISATIONS, settings)
    assert [h.topic.name for h in built.spec.handlers] == ["authorisations.checks.v1"]
    assert url_setting("authorisations", settings) == "http://127.0.0.1:8108"
    assert "http://127.0.0.1:8108" in built.where
    assert [HEALTH_PORTS[n] for n in (VPS, VIIS, GIS, DVS, NOTIFY, AUTHORISATIONS)] == list(
        range(8721, 8727)
    )
    town = SyntheticMunicipality("riga", seed=1, children=50, admission_year=2026)
    world = World(settings.derive(sim_seed=3), town)
    app = factory("authorisations")(world)
    assert isinstance(app, FaultInjection)
    assert app.app.title == "Register of authorisations simulator"  # type: ignore[attr-defined]
    seeds = [world.faults(s).seed for s in ("vps", "dvs", "eadrese", "letter", "authorisations")]
    assert seeds == [30, 33, 34, 36, 37]


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_plug_in_builds_its_service(name: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None)
    built = plugins.build_service(name, settings)  # nothing listens until it runs
    assert isinstance(built, Built)
    assert built.spec.name == name
    assert built.where


def test_the_simulators_and_commands_installed() -> None:
    assert plugins.names(plugins.SIMULATORS) == tuple(sorted(SYSTEMS))
    assert plugins.names(plugins.COMMANDS) == ("demo", "simulate")
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"demo", "simulate", "run"} <= set(commands.choices)


@pytest.mark.parametrize(
    ("argv", "loaded"),
    [
        (["run", "allocation"], set()),  # one of hub's own: no plug-in is imported
        (["demo", "--children", "10"], {"demo"}),  # only the one named
        (["--help"], {"demo", "simulate"}),  # help lists them all
        (["no-such-command"], {"demo", "simulate"}),  # so does the error
    ],
)
def test_only_the_command_named_is_loaded(argv: list[str], loaded: set[str]) -> None:
    parser = _parser(argv)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) & {"demo", "simulate"} == loaded
    assert "run" in commands.choices


def test_an_unknown_name_lists_the_installed_ones() -> None:
    with pytest.raises(PluginError) as caught:
        plugins.load(plugins.SERVICES, "no-such-adapter")
    message = str(caught.value)
    assert "no service 'no-such-adapter'" in message
    assert all(name in message for name in SERVICES), message


def test_a_plug_in_that_does_not_import_names_its_entry_point_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _distribution(
        tmp_path,
        "broken_plugin",
        "[hub.services]\nbroken-adapter = no_such_module.plugin:service\n\n"
        "[hub.commands]\nbroken = no_such_module.cli:command\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "broken-adapter" in plugins.names(plugins.SERVICES)
    with pytest.raises(PluginError) as caught:
        plugins.build_service("broken-adapter", Settings(_env_file=None))
    message = str(caught.value)
    assert "hub.services: broken-adapter = no_such_module.plugin:service" in message
    assert "ModuleNotFoundError" in message and "no_such_module" in message
    # A command that does not load is left out; the others still work.
    parser = _parser()
    assert "hub.commands: broken = no_such_module.cli:command" in capsys.readouterr().err
    assert parser.parse_args(["run", "allocation"]).service == "allocation"


def test_a_name_two_packages_declare_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _distribution(tmp_path, "another_vps", "[hub.services]\nvps-adapter = elsewhere:service\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="declared twice"):
        plugins.load(plugins.SERVICES, "vps-adapter")


def test_a_service_named_otherwise_than_its_entry_point_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "misnamed.py").write_text(
        "from hub.plugins import Built\n"
        "from hub.reliability.service import ServiceSpec\n\n"
        "def service(settings, *, clock=None, api=True):\n"
        "    return Built(ServiceSpec('something-else', []))\n"
    )
    _distribution(tmp_path, "misnamed", "[hub.services]\nmisnamed-adapter = misnamed:service\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(PluginError, match="'something-else'"):
            plugins.build_service("misnamed-adapter", Settings(_env_file=None))
        assert installed()[-1] == "misnamed-adapter"  # after the catalogue's own
    finally:
        sys.modules.pop("misnamed", None)
