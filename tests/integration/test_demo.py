"""The demo runs end to end and reports what it saw, without leaking personal codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hub.demo import run_demo
from hub.settings import Settings

pytestmark = pytest.mark.real_broker
HUB = str(Path(sys.executable).with_name("hub"))
# A personal code standing alone (ids such as CH-<12 hex digits> may hold 11 digits in a row).
CODE_SHAPE = re.compile(r"(?<![\w-])\d{6}-?\d{5}(?![\w-])")


async def test_demo_on_a_configured_cluster_runs_a_round_and_a_cascade(
    kafka_settings: Settings,
) -> None:
    lines: list[str] = []
    result = await run_demo(kafka_settings, out=lines.append)
    assert result.published == 2 + 300
    assert result.consumed == result.published
    assert len(result.view.applications) == 300
    assert sum(result.view.first_choices.values()) == 300
    admission = result.admission
    assert admission.offers > 0 and admission.waiting > 0
    assert admission.deadline_set and admission.accepted and admission.problems == []
    assert admission.cascade_offers > 0 and admission.cascade_seconds is not None
    text = "\n".join(lines)
    assert "PASS" in text and "external cluster" in text
    assert "was waiting" in text  # the freed seat went to a child in the queue
    assert not CODE_SHAPE.search(text)
    applications = result.view.applications.values()
    codes = {a.child_personal_code.reveal() for a in applications}
    codes |= {g.personal_code.reveal() for a in applications for g in a.guardians}
    assert not [c for c in codes if c in text or c.replace("-", "") in text]


def test_hub_demo_command_starts_its_own_broker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    result = subprocess.run(
        [HUB, "demo", "--children", "200", "--institutions", "1"],
        env=env | {"HUB_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "embedded broker (Tansu)" in result.stdout
    assert "Consumed and validated 201 of 201 messages" in result.stdout
    assert "cascade: the next offer was read" in result.stdout
    assert "PASS" in result.stdout
    assert not CODE_SHAPE.search(result.stdout + result.stderr)
