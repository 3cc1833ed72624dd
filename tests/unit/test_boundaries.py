"""The layers of the code base, checked on the source with ``ast``.

The README's Layout section draws them: ``schemas/`` (the contracts) import only the
standard library and pydantic; the allocation engine only the standard library and its
own model; the hub's core (everything under ``hub/``) no adapter and no simulator, which
plug into it through entry points; an adapter no simulator and no other adapter; a
simulator neither the hub nor an adapter (they meet only at the protocol), except the
few listed modules that drive the hub rather than imitate a system. Every ``import x``
and ``from x import y`` counts, wherever it is written (module level, inside functions,
under ``TYPE_CHECKING``), and relative imports are resolved to absolute module names
first.
"""

from __future__ import annotations

import ast
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SIMULATED_SYSTEMS = (
    "vps",
    "viis",
    "gis",
    "dvs",
    "authorisations",
    "eadrese",
    "sms",
    "letter",
    "smtp",
)
ADAPTER_SYSTEMS = ("vps", "viis", "gis", "dvs", "authorisations", "notify")
# Shared simulator modules that imitate the outside world and so fall under the rule.
SHARED_SIMULATOR_MODULES = (
    "api.py",
    "faults.py",
    "serving.py",
    "municipality.py",
    "messages.py",
    "channels.py",
)
# Hub test kits: they drive the hub (publish commands, play parents, run the processes,
# play the season, register the simulators and their commands with the hub) rather than
# imitate an external system, so they may import ``hub`` (never an adapter).
SIMULATOR_EXCEPTIONS = (
    "instant.py",
    "parents.py",
    "process.py",
    "demo.py",
    "plugin.py",
    "commands.py",
)

# The engine, and the pure model and criteria it computes with: plain data in and out.
ENGINE_MODULES = tuple(
    ROOT / "hub" / "allocation" / name for name in ("engine.py", "model.py", "criteria.py")
)
ENGINE_OWN = frozenset({"hub.allocation.model", "hub.allocation.criteria"})
# The hub's exceptions: the engine's errors are the hub's, and the module imports nothing.
ERRORS = ROOT / "hub" / "errors.py"
# pydantic_core is pydantic's own core (installed and version-pinned by pydantic); its
# documented API (PydanticCustomError, core_schema) is how custom pydantic types are built.
SCHEMAS_ALLOWED = frozenset({"pydantic", "pydantic_core", "schemas"})


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str  # absolute, dotted

    @property
    def top(self) -> str:
        return self.module.split(".")[0]

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} imports {self.module}"


def _package_of(path: Path) -> list[str]:
    """Dotted package parts of the module at ``path`` (the package itself for __init__)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1]


def imports_in(source: str, path: Path) -> Iterator[Import]:
    """Every module ``source`` (the file at ``path``) imports, as absolute dotted names.

    ``from a import b`` yields ``a.b`` (b may be a submodule, such as another adapter);
    ``from a import *`` yields ``a``.
    """
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(path)
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                name = base if alias.name == "*" else f"{base}.{alias.name}".strip(".")
                yield Import(path, node.lineno, name)


def python_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)
    assert files, f"no Python files found under {folder}: is ROOT ({ROOT}) right?"
    return files


def violations(files: list[Path], forbidden: Callable[[Import], bool]) -> list[str]:
    return [
        str(found)
        for path in files
        for found in imports_in(path.read_text(encoding="utf-8"), path)
        if forbidden(found)
    ]


def report(rule: str, found: list[str]) -> str:
    return f"{rule}: {len(found)} violation(s)\n  " + "\n  ".join(found)


def simulator_files() -> list[Path]:
    files = [
        path for system in SIMULATED_SYSTEMS for path in python_files(ROOT / "simulators" / system)
    ]
    files += [ROOT / "simulators" / name for name in SHARED_SIMULATOR_MODULES]
    files.append(ROOT / "simulators" / "__init__.py")
    return files


def adapter_systems() -> list[str]:
    return sorted(p.name for p in (ROOT / "adapters").iterdir() if (p / "__init__.py").is_file())


# --- the collector itself ---------------------------------------------------------------


def test_the_collector_sees_every_kind_of_import() -> None:
    path = ROOT / "adapters" / "gis" / "service.py"
    source = textwrap.dedent(
        """
        import os, json as j
        from typing import TYPE_CHECKING
        from . import client
        from .client import Client
        from .. import vps
        from ..viis.client import ViisClient
        from pydantic import *

        if TYPE_CHECKING:
            from hub.settings import Settings

        def later():
            import simulators.gis.app
            from faststream import Context
        """
    )
    found = [(i.line, i.module) for i in imports_in(source, path)]
    assert sorted(found) == sorted(
        [
            (2, "os"),
            (2, "json"),
            (3, "typing.TYPE_CHECKING"),
            (4, "adapters.gis.client"),
            (5, "adapters.gis.client.Client"),
            (6, "adapters.vps"),
            (7, "adapters.viis.client.ViisClient"),
            (8, "pydantic"),
            (11, "hub.settings.Settings"),
            (14, "simulators.gis.app"),
            (15, "faststream.Context"),
        ]
    )


def test_relative_imports_in_a_package_init_resolve_against_the_package() -> None:
    path = ROOT / "adapters" / "vps" / "__init__.py"
    found = [i.module for i in imports_in("from .client import X\nfrom .. import gis\n", path)]
    assert found == ["adapters.vps.client.X", "adapters.gis"]


# --- the layout the rules rely on ----------------------------------------------------------


def test_every_simulator_module_is_either_checked_or_a_listed_exception() -> None:
    checked = {p.resolve() for p in simulator_files()}
    exceptions = {(ROOT / "simulators" / name).resolve() for name in SIMULATOR_EXCEPTIONS}
    for path in checked | exceptions:
        assert path.is_file(), f"{path.relative_to(ROOT)} is listed but does not exist"
    unclassified = [
        str(p.relative_to(ROOT))
        for p in python_files(ROOT / "simulators")
        if p.resolve() not in checked | exceptions
    ]
    assert not unclassified, (
        "simulator modules neither under the no-hub/no-adapters rule nor listed as hub test"
        f" kits: {unclassified}"
    )


def test_the_adapter_folders_are_found() -> None:
    assert set(adapter_systems()) >= set(ADAPTER_SYSTEMS)


# --- the rules ------------------------------------------------------------------------------


def test_schemas_import_only_the_standard_library_and_pydantic() -> None:
    allowed = SCHEMAS_ALLOWED | sys.stdlib_module_names
    found = violations(python_files(ROOT / "schemas"), lambda i: i.top not in allowed)
    assert not found, report("schemas/ may import only the standard library and pydantic", found)


def test_simulators_import_neither_hub_nor_adapters() -> None:
    found = violations(simulator_files(), lambda i: i.top in ("hub", "adapters"))
    assert not found, report("simulators never import hub or adapters", found)


def test_the_hub_test_kits_import_no_adapter() -> None:
    kits = [ROOT / "simulators" / name for name in SIMULATOR_EXCEPTIONS]
    found = violations(kits, lambda i: i.top == "adapters")
    assert not found, report("the simulators' hub test kits never import adapters", found)


def test_the_hub_core_imports_no_adapter_and_no_simulator() -> None:
    """Adapters and simulators plug into the hub (entry points); it never imports them."""
    found = violations(python_files(ROOT / "hub"), lambda i: i.top in ("adapters", "simulators"))
    assert not found, report("hub/ imports no adapter and no simulator", found)


@pytest.mark.parametrize("system", adapter_systems())
def test_an_adapter_imports_neither_simulators_nor_another_adapter(system: str) -> None:
    others = [s for s in adapter_systems() if s != system]

    def forbidden(found: Import) -> bool:
        parts = found.module.split(".")
        return found.top == "simulators" or (
            parts[0] == "adapters" and len(parts) > 1 and parts[1] in others
        )

    found = violations(python_files(ROOT / "adapters" / system), forbidden)
    assert not found, report(f"adapters/{system} imports simulators or another adapter", found)


def _engine_may_import(found: Import) -> bool:
    if found.top in sys.stdlib_module_names or found.module == "__future__.annotations":
        return True
    module = found.module
    return any(module == own or module.startswith(f"{own}.") for own in ENGINE_OWN) or (
        module == "hub.errors" or module.startswith("hub.errors.")
    )


def test_the_allocation_engine_imports_only_the_standard_library_and_its_model() -> None:
    found = violations(list(ENGINE_MODULES), lambda i: not _engine_may_import(i))
    assert not found, report(
        "the engine, its model and criteria import only the standard library, each other"
        " and hub.errors",
        found,
    )


def test_the_hub_errors_import_nothing_of_the_project() -> None:
    found = violations([ERRORS], lambda i: i.top not in sys.stdlib_module_names)
    assert not found, report("hub/errors.py imports only the standard library", found)
