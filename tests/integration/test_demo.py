"""The demo plays a whole season end to end and reports it, without leaking personal codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hub.settings import Settings
from simulators.demo import DemoError, Scenario, run_demo
from simulators.municipality import SyntheticMunicipality

pytestmark = [pytest.mark.real_broker, pytest.mark.slow]
HUB = str(Path(sys.executable).with_name("hub"))
# A personal code standing alone (ids such as CH-<12 hex digits> may hold 11 digits in a row).
CODE_SHAPE = re.compile(r"(?<![\w-])\d{6}-?\d{5}(?![\w-])")


def codes_of(town: SyntheticMunicipality) -> set[str]:
    codes = {c.personal_code for c in town.children}
    codes |= {g.personal_code for c in town.children for g in c.guardians}
    return codes | {c.replace("-", "") for c in codes}


async def test_a_season_with_a_tenth_of_requests_faulted_settles_and_every_invariant_holds(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    scenario = Scenario(children=300, institutions=4, seed=3, faults=0.1, accept=0.6, decline=0.2)
    lines: list[str] = []
    report = await run_demo(kafka_settings.derive(data_dir=tmp_path), scenario, out=lines.append)
    text = "\n".join(lines)
    assert report.passed, text
    assert [c.passed for c in report.checks] == [True] * len(report.checks) and report.checks
    assert report.applications == 300
    # Parents answered as the scenario says; declines and expiries cascaded.
    decided = report.decided
    assert decided["accept"] and decided["decline"] and decided["silent"]
    assert report.outcomes["accepted"] == report.enrolled + report.enrollment_refused > 0
    assert report.outcomes["expired"] > 0 and report.clock_moves >= 1
    assert report.offers > report.round_offers
    assert max(report.cascade_steps) >= 1 and sum(report.cascade_steps.values()) == report.offers
    assert report.outcomes["live"] == 0
    # Every channel was used; the faults happened and were survived.
    assert set(report.channels) >= {"e_adrese", "email"}
    assert report.faults_injected > 50 and report.retries > 0
    assert all(k.endswith("refused") for k in report.dead_letters), report.dead_letters
    # The report says it all, and nothing personal.
    for heading in ("Season report", "seats filled per institution", "children without a place"):
        assert heading in text
    assert "external cluster" in text and text.rstrip().splitlines()[-1].startswith("PASS")
    town = SyntheticMunicipality(report.municipality, seed=3, children=300, institutions=4)
    assert not [c for c in codes_of(town) if c in text]
    assert not CODE_SHAPE.search(text)


def test_hub_demo_starts_its_own_broker_and_exits_0_on_pass(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    result = subprocess.run(
        [HUB, "demo", "--children", "120", "--institutions", "2", "--seed", "5"],
        env=env | {"HUB_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "embedded broker (Tansu)" in result.stdout
    assert "▶ parents submit 120 applications" in result.stdout
    assert "FAIL" not in result.stdout and result.stdout.rstrip().splitlines()[-1].startswith(
        "PASS"
    )
    town = SyntheticMunicipality("riga", seed=5, children=120, institutions=2)
    output = result.stdout + result.stderr
    assert not [c for c in codes_of(town) if c in output]
    assert not CODE_SHAPE.search(output)


def test_a_scenario_with_impossible_shares_is_refused() -> None:
    with pytest.raises(DemoError, match="add up to at most 1"):
        Scenario(accept=0.8, decline=0.3)
    with pytest.raises(DemoError, match="faults"):
        Scenario(faults=1.0)
