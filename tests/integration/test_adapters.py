"""Every adapter against its simulator, on the real embedded broker, with faults injected.

Applications are submitted on the VPS simulator over HTTP. The VPS adapter
polls them onto the topics; the allocation service asks VIIS and GIS through
their adapters; a round's admission list is registered in the DVS through
its adapter. Every simulator answers 20 % of requests with a fault (503, 429,
a timeout or a malformed body). Nothing is lost: every application arrives
once with its facts, and the registration number comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.allocation.rules import load_rules
from hub.allocation.service import service
from hub.kafka import ensure_topics, publish_messages
from hub.reliability.deadletters import dead_letters, read_topic
from hub.reliability.service import ServiceRunner
from hub.services import build
from hub.settings import Settings
from schemas.topics import DVS, GIS, VIIS, VPS
from simulators.faults import HEADER
from simulators.messages import application_form
from simulators.municipality import Child, SyntheticMunicipality
from simulators.plugin import REGISTERS, simulator_apps
from simulators.serving import serving
from tests.allocation_messages import round_command
from tests.conftest import eventually

pytestmark = pytest.mark.real_broker
CHILDREN = 40


async def test_the_chain_through_every_adapter_with_a_fifth_of_requests_faulted(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    bootstrap = kafka_settings.bootstrap_servers or ""
    code = f"a{uuid.uuid4().hex[:8]}"
    town = SyntheticMunicipality(
        code, seed=21, children=CHILDREN, institutions=3, admission_year=2026
    )
    settings = kafka_settings.derive(
        data_dir=tmp_path,
        municipality=code,
        sim_fault_rate=0.2,
        sim_seed=5,
        http_timeout=0.5,
        http_attempts=8,
        http_max_seconds=20,
        vps_poll_interval=0.2,
        retry_first_delay=0.2,
        retry_max_delay=1.0,
        max_attempts=10,
    )
    apps = simulator_apps(settings, REGISTERS, town=town)
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for system in REGISTERS:
            served = await stack.enter_async_context(serving(apps[system], name=system))
            urls[f"{system}_url"] = served.url
        settings = settings.derive(**urls)
        adapters = [build(name, settings).spec for name in (VPS, VIIS, GIS, DVS)]
        spec, state = service(load_rules("riga"), code)
        spec = dataclasses.replace(spec, name=f"{code}-allocation")
        await ensure_topics(settings, bootstrap, services=[s.name for s in (*adapters, spec)])
        runners = [
            asyncio.create_task(ServiceRunner(s, settings, bootstrap).run(stop))
            for s in (*adapters, spec)
        ]
        try:
            async with httpx.AsyncClient(
                base_url=settings.vps_url, headers={HEADER: "none"}
            ) as parents:
                for child in town.children:
                    answer = await parents.post("/v1/applications", json=application_form(child))
                    assert answer.status_code == 201, answer.text
            await eventually(
                lambda: (
                    len(state.children) == CHILDREN
                    and all(not f.missing for f in state.children.values())
                ),
                timeout=120,
                what="every application enriched through the VIIS and GIS adapters",
            )
            # The facts are the registers' facts.
            for child in town.children:
                file = state.children[f"CH-{_child_id(state, child)}"]
                enrolled = town.enrolments.get(child.personal_code)
                attends = file.enrollment.attending_institution_id  # type: ignore[union-attr]
                assert attends == (enrolled.institution_id if enrolled else None)
                if child.sibling_codes:
                    sibling = town.enrolments[child.sibling_codes[0]]
                    assert sibling.institution_id in file.enrollment.sibling_institution_ids  # type: ignore[union-attr]
                address = town.addresses[child.address_code]
                assert file.address is not None
                assert file.address.postcode == address.postcode
                assert abs(file.address.lks92.northing - address.northing) < 0.01

            command = round_command(municipality=code)
            await publish_messages(bootstrap, [command])
            await eventually(
                lambda: state.rounds.get(str(command.round_id), {}).get("registration_number"),
                timeout=120,
                what="the admission list's DVS registration number",
            )
            number = state.rounds[str(command.round_id)]["registration_number"]
            assert re.fullmatch(r"PII/\d{4}/\d{6}", number), number
        finally:
            stop.set()
            results = await asyncio.gather(*runners, return_exceptions=True)
    assert all(r is True for r in results), results

    # Nothing lost, nothing doubled, nothing dead-lettered despite the faults.
    submitted = [
        json.loads(r.value) for r in await read_topic(bootstrap, "vps.pii.applications.v1")
    ]
    mine = {m["application_id"] for m in submitted if m["municipality"] == code}
    assert len(mine) == CHILDREN
    letters = [d for d in await dead_letters(bootstrap) if f'"{code}"'.encode() in d.value]
    assert letters == []
    injected = sum(sum(a.injected[f] for f in a.injected if f != "none") for a in apps.values())
    assert injected > 20  # the faults did happen


def _child_id(state: Any, child: Child) -> str:
    for ref, file in state.children.items():
        if file.application.child_personal_code.reveal() == child.personal_code:
            return str(ref).removeprefix("CH-")
    raise AssertionError("a submitted child did not arrive")
