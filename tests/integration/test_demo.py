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
CODE_SHAPE = re.compile(r"\d{6}-?\d{5}")


async def test_demo_on_a_configured_cluster_consumes_everything(kafka_settings: Settings) -> None:
    lines: list[str] = []
    result = await run_demo(kafka_settings, children=15, institutions=4, seed=3, out=lines.append)
    assert result.published == 4 + 15
    assert result.consumed == result.published
    assert len(result.view.applications) == 15
    assert sum(result.view.first_choices.values()) == 15
    text = "\n".join(lines)
    assert "PASS" in text and "external cluster" in text
    assert not CODE_SHAPE.search(text)


def test_hub_demo_command_starts_its_own_broker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    result = subprocess.run(
        [HUB, "demo", "--children", "6", "--institutions", "3"],
        env=env | {"HUB_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "embedded broker (Tansu)" in result.stdout
    assert "Consumed and validated 9 of 9 messages" in result.stdout
    assert "PASS" in result.stdout
    assert not CODE_SHAPE.search(result.stdout + result.stderr)
