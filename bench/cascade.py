"""Cascade latency: from a parent's decline to the next offer, on the embedded broker.

    .venv/bin/python bench/cascade.py [--children 6000] [--institutions 10] [--cascades 1000]

Starts the embedded broker, the allocation service in its own process
(``python -m hub run allocation``, as deployed) and the instant VIIS and GIS
stand-ins; registers a synthetic municipality with more children than
seats, and runs a round. Then parents decline live offers:

- sequential: one decline at a time, each published only after the previous
  one's effects arrived; the latency of a cascade is the time from handing
  the ``ParentDeclined`` to the producer to reading, on
  ``allocation.offers.v1``, the first ``OfferMade`` it caused. Declines of a
  seat nobody waits for make no offer and are counted apart.
- burst: ``--burst`` declines published at once, the same latency for each,
  while the service works through them in batches.

Figures are milliseconds: p50, p90, p99 and the worst case.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench.calibration import python_speed
from bench.options import setting_option
from hub.kafka import kafka_cluster, publish_messages
from hub.settings import Settings
from schemas.allocation import RunRound
from schemas.topics import OPERATOR
from simulators.instant import running
from simulators.municipality import SyntheticMunicipality
from simulators.parents import Parents, Reaction
from simulators.process import ServiceProcess, ServiceProcessError
from tests.vps_feed import application_message, institution_message

TOWN = "riga"
ROUND_DATE = date(2026, 9, 1)


def say(text: str) -> None:
    print(text, flush=True)


def percentiles(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    cut = statistics.quantiles(ms, n=100, method="inclusive")
    return (
        f"p50 {cut[49]:.1f} ms, p90 {cut[89]:.1f} ms, p99 {cut[98]:.1f} ms,"
        f" max {ms[-1]:.1f} ms (mean {statistics.fmean(ms):.1f} ms)"
    )


async def register_and_round(
    bootstrap: str, service: ServiceProcess, parents: Parents, town: SyntheticMunicipality
) -> None:
    started = time.perf_counter()
    await publish_messages(bootstrap, [institution_message(TOWN, i) for i in town.institutions])
    await publish_messages(bootstrap, [application_message(TOWN, c) for c in town.children])
    children = len(town.children)
    await service.wait_for(
        lambda s: s["children"] == children and s["waiting_for_facts"] == 0,
        "enriching",
        600,
        progress=lambda s: say(
            f"  … enriching: {s['children']:,} children,"
            f" {s['waiting_for_facts']:,} waiting for facts"
        ),
    )
    say(
        f"registered and enriched (VIIS and GIS on the bus)"
        f" in {time.perf_counter() - started:.1f} s"
    )
    command = RunRound.new(
        producer=OPERATOR,
        municipality=TOWN,
        round_id=uuid.uuid4(),
        round_date=ROUND_DATE,
        requested_by="bench",
    )
    started = time.perf_counter()
    await publish_messages(bootstrap, [command])
    state = await service.wait_for(lambda s: s["round"] == str(command.round_id), "the round", 120)
    await parents.wait_until(lambda: len(parents.live) >= state["live_offers"])
    say(
        f"round: {state['live_offers']:,} offers published and read in"
        f" {time.perf_counter() - started:.2f} s"
    )


async def sequential(parents: Parents, count: int, rnd: random.Random) -> tuple[list[float], int]:
    latencies: list[float] = []
    no_offer = refused = 0
    while len(latencies) < count:
        if not parents.live:
            say("  no live offers left")
            break
        child = rnd.choice(sorted(parents.live))
        try:
            reaction = await parents.answer(child, "decline", timeout=5)
        except TimeoutError:
            refused += 1  # the offer closed meanwhile (superseded); the service refused it
            continue
        if reaction.first_offer_after is None:
            no_offer += 1
        else:
            latencies.append(reaction.first_offer_after)
            if len(latencies) % 200 == 0:
                say(f"  {len(latencies):,}/{count:,} cascades")
    if refused:
        say(f"  {refused} declines of offers closed meanwhile were refused (not counted)")
    return latencies, no_offer


async def burst(parents: Parents, count: int, rnd: random.Random) -> tuple[list[float], float]:
    children = rnd.sample(sorted(parents.live), min(count, len(parents.live)))
    started = time.perf_counter()
    reactions: list[Reaction] = [parents.send(child, "decline") for child in children]
    settled: list[float] = []

    async def settle(reaction: Reaction) -> None:
        await parents.settle(reaction, timeout=10)
        settled.append(time.perf_counter() - started)

    outcomes = await asyncio.gather(*map(settle, reactions), return_exceptions=True)
    if failed := sum(1 for o in outcomes if isinstance(o, BaseException)):
        say(
            f"  {failed} declines were refused: a cascade of the same burst had closed"
            " their offer first (the child moved up)"
        )
    return [r.first_offer_after for r in reactions if r.first_offer_after is not None], max(
        settled, default=0.0
    )


def round_town(args: argparse.Namespace) -> tuple[SyntheticMunicipality, int]:
    """The town of ``--seed``, ``--children`` and ``--institutions``, admitting in
    :data:`ROUND_DATE`'s year, and the seats of its groups."""
    town = SyntheticMunicipality(
        TOWN,
        seed=args.seed,
        children=args.children,
        institutions=args.institutions,
        admission_year=ROUND_DATE.year,
    )
    return town, sum(g.capacity for i in town.institutions for g in i.groups)


async def run(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="hub-cascade-"))
    settings = Settings(_env_file=None, data_dir=data, municipality=TOWN)
    town, seats = round_town(args)
    say(python_speed())
    say(f"{args.children:,} children, {args.institutions} institutions, {seats:,} seats")
    async with kafka_cluster(settings) as bootstrap, running(settings, bootstrap, TOWN):
        service = ServiceProcess(bootstrap, data, TOWN, fetch_max_wait=args.fetch_max_wait)
        try:
            await service.start()
            say(
                "allocation service running in its own process"
                f" (HUB_FETCH_MAX_WAIT={args.fetch_max_wait})"
            )
            await measure(bootstrap, service, town, args)
        except ServiceProcessError as exc:
            raise SystemExit(str(exc)) from None
        finally:
            if await service.stop():
                say(f"the allocation service did not stop cleanly; see {service.log}")
            await service.close()


async def measure(
    bootstrap: str, service: ServiceProcess, town: SyntheticMunicipality, args: argparse.Namespace
) -> None:
    async with Parents(bootstrap, TOWN) as parents:
        await register_and_round(bootstrap, service, parents, town)
        rnd = random.Random(args.seed)
        say(f"sequential declines until {args.cascades:,} cascades …")
        started = time.perf_counter()
        latencies, no_offer = await sequential(parents, args.cascades, rnd)
        say(
            f"sequential: {len(latencies):,} cascades in"
            f" {time.perf_counter() - started:.1f} s ({no_offer} declines made no offer:"
            " nobody waited for the seat)"
        )
        say(f"  decline → next offer: {percentiles(latencies)}")
        if args.burst:
            say(f"burst: {args.burst} declines published at once …")
            burst_latencies, elapsed = await burst(parents, args.burst, rnd)
            say(
                f"burst: {len(burst_latencies)} cascades; the last answer settled"
                f" {elapsed:.2f} s after the first decline was sent"
            )
            if len(burst_latencies) > 1:
                say(f"  decline → next offer: {percentiles(burst_latencies)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--children", type=int, default=6000)
    parser.add_argument("--institutions", type=int, default=10)
    parser.add_argument("--cascades", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    setting_option(parser, "fetch_max_wait", "the service's HUB_FETCH_MAX_WAIT, seconds")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
