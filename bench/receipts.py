"""Decline to receipt: from a parent's decline to the next offer's delivery receipt.

    .venv/bin/python bench/receipts.py [--children 6000] [--institutions 10]
        [--count 300] [--rate 5] [--mix 0.5] [--fetch-max-wait S]

Starts the embedded broker; the allocation service (``hub run allocation``) and the
notification service (``hub run notify-adapter``) each in a process of its own, as
deployed; the instant VIIS and GIS stand-ins and the channel simulators (e-adrese, an
SMTP server, an SMS gateway reporting delivery by callback, a print-and-post service) in
this process, with every channel's rate limit far above what it can reach. A synthetic
municipality with more children than seats is registered and enriched, a round runs, and
the round's offers are delivered (every confirming receipt read) before the clock starts.

Then parents decline live offers at a steady ``--rate`` a second, ``--count`` in all,
each decline published without waiting for the ones before it. A decline is of an offer
in a group that children still wait for (the lines are read from the allocation service's
API after the round and kept up to date from the cascades). For each decline:

- t0: the ``ParentDeclined`` is handed to the producer;
- t1: the first ``OfferMade`` it caused (by causation id) is read on
  ``allocation.offers.v1``;
- t2: the first confirming receipt (``NotificationDelivered``, ``NotificationPosted`` or an
  e-adrese ``NotificationSent``, matched by offer id; the notice is registered in the DVS
  stand-in, rendered and sealed first) of the offer of the declined seat to
  the next child in line is read on ``notify.receipts.v1`` (if the seat went to nobody,
  of the first offer read: the declining child's next choice).

Printed: p50, p90, p99 and the worst of t2 − t0 (decline → receipt), t1 − t0 (decline →
offer) and t2 − t1 (offer → receipt); the channels that confirmed; the achieved rate; the
declines that made no offer (nobody waited after all) and those the service refused (a
cascade had moved the child meanwhile), which are not counted.

``--mix`` is the share of guardians with an active e-adrese (confirmed when sent); the
others are reached as their application allows: e-mail (9 in 10 have one, confirmed when
the mail server accepts it), else SMS (confirmed by the gateway's delivery report), else a
registered letter (confirmed when the post reports it posted; the service reads that
feed once a second).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from aiokafka import AIOKafkaConsumer

from bench.calibration import python_speed
from bench.cascade import TOWN, percentiles, register_and_round, round_town, say
from bench.notify import confirms, read_receipts
from bench.options import setting_option
from hub.documents.edoc import generate_seal
from hub.embedded import free_port
from hub.kafka import ensure_topics, kafka_cluster
from hub.settings import Settings
from schemas.topics import NOTIFY
from simulators.channels import channel_simulators
from simulators.instant import running
from simulators.municipality import SyntheticMunicipality
from simulators.parents import Parents, Reaction
from simulators.process import ServiceProcess, ServiceProcessError

DELIVERY_TIMEOUT = 600.0
"""Seconds the round's offers have to be delivered."""
RECEIPT_TIMEOUT = 60.0
"""Seconds a measured offer has to be confirmed after it was read."""
ANSWER_TIMEOUT = 10.0
"""Seconds the allocation service has to confirm a decline (else it refused it)."""
CHANNEL_NAMES = {"e_adrese": "e-adrese", "email": "e-mail", "sms": "SMS", "letter": "letter"}

Group = tuple[str, str]
"""(institution id, group code)."""


# --------------------------------------------------------------------------- receipts


class Confirmations:
    """Reads notify.receipts.v1 on every partition (no group, no commits) and keeps, per
    offer, when its first confirming receipt was read and on which channel."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=10,  # the embedded broker answers a fetch at the end of the wait
        )
        self.confirmed: dict[str, tuple[float, str]] = {}
        """Offer id → (perf_counter when read, channel)."""
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Confirmations:
        await read_receipts(self.consumer)  # a fresh topic
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.consumer.stop()

    async def _read(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    receipt = json.loads(record.value)
                    offer_id = receipt.get("offer_id")
                    if not confirms(receipt) or offer_id is None or offer_id in self.confirmed:
                        continue
                    self.confirmed[offer_id] = (now, receipt["channel"])
                    waiter = self._waiting.pop(offer_id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)

    async def wait(self, offer_id: str, timeout: float) -> tuple[float, str]:
        """When the offer's confirming receipt was read, and its channel (TimeoutError)."""
        if offer_id not in self.confirmed:
            waiter = self._waiting.setdefault(offer_id, asyncio.get_running_loop().create_future())
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        return self.confirmed[offer_id]

    async def wait_all(
        self, offer_ids: Iterable[str], timeout: float, alive: Callable[[], None]
    ) -> None:
        """Until every offer in ``offer_ids`` is confirmed; progress every 5 s."""
        wanted = set(offer_ids)
        deadline = time.perf_counter() + timeout
        report = time.perf_counter() + 5
        while missing := wanted - self.confirmed.keys():
            now = time.perf_counter()
            if now > deadline:
                raise SystemExit(
                    f"only {len(wanted) - len(missing):,} of {len(wanted):,} offers were"
                    f" confirmed within {timeout:.0f} s"
                )
            if now > report:
                report += 5
                say(f"  … {len(wanted) - len(missing):,}/{len(wanted):,} offers delivered")
            alive()
            await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- lines


async def waiting_lines(url: str, town: SyntheticMunicipality, parents: Parents) -> Counter[Group]:
    """How many children wait for each group that has a live offer, from the allocation
    service's API: any waiting child's queue positions carry the length of its lines, so
    children without an offer are asked until every offered group has been seen."""
    offered = {(o.institution_id, o.group_code) for o in parents.live.values()}
    lines: Counter[Group] = Counter()
    seen: set[Group] = set()
    unplaced = [c.ref for c in town.children if c.ref not in parents.live]
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:

        async def ask(child_ref: str) -> None:
            response = await http.get(f"/children/{child_ref}")
            if response.status_code != 200:
                return
            for position in response.json()["queue"]:
                group = (position["institution_id"], position["group"])
                seen.add(group)
                lines[group] = max(lines[group], position["waiting"])

        for start in range(0, len(unplaced), 16):
            if offered <= seen:
                break
            await asyncio.gather(*map(ask, unplaced[start : start + 16]))
    return lines


# --------------------------------------------------------------------------- declines


@dataclass
class Sample:
    t0: float
    t1: float
    t2: float
    channel: str


@dataclass
class Outcomes:
    samples: list[Sample] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    no_offer: int = 0
    refused: int = 0
    unconfirmed: int = 0
    own_offer: int = 0
    """Declines whose seat went to nobody; the offer followed is the declining child's
    next choice."""
    blind: int = 0
    """Declines sent when no offered group was known to have anyone waiting."""


class Declines:
    """Declines at a steady rate, each followed to its next offer's receipt."""

    def __init__(
        self,
        parents: Parents,
        confirmations: Confirmations,
        lines: Counter[Group],
        rnd: random.Random,
    ) -> None:
        self.parents, self.confirmations, self.lines, self.rnd = parents, confirmations, lines, rnd
        self.pending: set[str] = set()
        """Children whose decline is in flight (not declined twice)."""
        self.out = Outcomes()

    def pick(self) -> str | None:
        """A child with a live offer in a group someone waits for (any live offer if none)."""
        free = sorted(c for c in self.parents.live if c not in self.pending)
        waited = [c for c in free if self.lines[self.group(c)] > 0]
        if free and not waited:
            self.out.blind += 1
        return self.rnd.choice(waited or free) if free else None

    def group(self, child_ref: str) -> Group:
        offer = self.parents.live[child_ref]
        return offer.institution_id, offer.group_code

    async def run(self, count: int, rate: float, alive: Callable[[], None]) -> None:
        interval = 1 / rate
        followers: list[asyncio.Task[None]] = []
        every = max(1, round(rate * 5))  # progress about every 5 s
        due = time.perf_counter()
        for n in range(count):
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            elif delay < -interval:  # fell behind: no burst to catch up, the rate shows it
                due = time.perf_counter()
            due += interval
            alive()
            child = self.pick()
            if child is None:
                say("  no live offers left to decline")
                break
            group = self.group(child)
            self.pending.add(child)
            reaction = self.parents.send(child, "decline")
            self.out.sent.append(reaction.sent)
            followers.append(asyncio.create_task(self.follow(child, group, reaction)))
            if (n + 1) % every == 0:
                self.progress(n + 1, count)
        await asyncio.gather(*followers)

    def progress(self, sent: int, count: int) -> None:
        out = self.out
        say(
            f"  … {sent:,}/{count:,} declines sent, {len(out.samples):,} receipts of their"
            f" offers read ({out.no_offer} made no offer, {out.refused} refused)"
        )

    async def follow(self, child: str, group: Group, reaction: Reaction) -> None:
        out = self.out
        try:
            await self.parents.settle(reaction, timeout=ANSWER_TIMEOUT)
        except TimeoutError:
            out.refused += 1  # the offer closed meanwhile (a cascade moved the child up)
            return
        finally:
            self.pending.discard(child)
        offer = reaction.first_offer
        if offer is None or reaction.first_offer_after is None:
            out.no_offer += 1
            self.lines[group] = 0
            return
        # The offers of one decline come from one transaction, read together but in the
        # order of their partitions: the one followed is the declined seat's, passed to the
        # next child in line; failing that (nobody waited) the first read, the declining
        # child's next choice.
        seat = next((o for o in reaction.offers if (o.institution_id, o.group_code) == group), None)
        if seat is not None:
            self.lines[group] = max(0, self.lines[group] - 1)
        else:
            self.lines[group] = 0
            out.own_offer += 1
        followed = seat or offer
        t1 = reaction.sent + reaction.first_offer_after
        try:
            t2, channel = await self.confirmations.wait(str(followed.offer_id), RECEIPT_TIMEOUT)
        except TimeoutError:
            out.unconfirmed += 1
            return
        out.samples.append(Sample(reaction.sent, t1, t2, channel))


# --------------------------------------------------------------------------- the run


def active_eadrese(town: SyntheticMunicipality, share: float, seed: int) -> list[str]:
    """The guardians (first of each child: the one notified) with an active e-adrese."""
    rnd = random.Random(seed)
    guardians = sorted({c.guardians[0].personal_code for c in town.children})
    return [code for code in guardians if rnd.random() < share]


def alive_check(*services: ServiceProcess) -> Callable[[], None]:
    def alive() -> None:
        for service in services:
            if (exited := service.exited()) is not None:
                raise SystemExit(f"a service stopped: {exited}")

    return alive


async def run(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="hub-receipts-"))
    settings = Settings(_env_file=None, data_dir=data, municipality=TOWN)
    town, seats = round_town(args)
    say(python_speed())
    say(
        f"{args.children:,} children, {args.institutions} institutions, {seats:,} seats;"
        f" {args.count:,} declines at {args.rate:g}/s; e-adrese share {args.mix:g};"
        f" HUB_FETCH_MAX_WAIT={args.fetch_max_wait:g}"
    )
    active = active_eadrese(town, args.mix, args.seed)
    async with (
        kafka_cluster(settings) as bootstrap,
        running(settings, bootstrap, TOWN),
        channel_simulators(active, 0.0, sms_rate=100_000, post_after=0.05) as sims,
    ):
        await ensure_topics(settings, bootstrap, services=[NOTIFY])
        allocation = ServiceProcess(bootstrap, data, TOWN, fetch_max_wait=args.fetch_max_wait)
        key, certificate = generate_seal("Bench e-seal", "Bench municipality", data / "seal")
        notify = ServiceProcess(
            bootstrap,
            data,
            TOWN,
            service="notify-adapter",
            env=sims.env,
            seal_key=key,
            seal_certificate=certificate,
            notify_callback=f"127.0.0.1:{free_port()}",
            notify_escalate_after=DELIVERY_TIMEOUT * 2,  # no letter for a slow confirmation
            fetch_max_wait=args.fetch_max_wait,
            **{f"notify_rate_{c}": 1_000_000 for c in ("eadrese", "email", "sms", "letter")},
        )
        try:
            await notify.start()
            await allocation.start()
            say("allocation and notification services running, each in its own process")
            await measure(bootstrap, allocation, notify, town, args)
        except ServiceProcessError as exc:
            raise SystemExit(str(exc)) from None
        finally:
            for service in (allocation, notify):
                if await service.stop(30):
                    say(f"{service.service} did not stop cleanly; see {service.log}")
                await service.close()


async def measure(
    bootstrap: str,
    allocation: ServiceProcess,
    notify: ServiceProcess,
    town: SyntheticMunicipality,
    args: argparse.Namespace,
) -> None:
    alive = alive_check(allocation, notify)
    async with Parents(bootstrap, TOWN) as parents, Confirmations(bootstrap) as confirmations:
        await register_and_round(bootstrap, allocation, parents, town)
        started = time.perf_counter()
        round_offers = [str(o.offer_id) for o in parents.live.values()]
        await confirmations.wait_all(round_offers, DELIVERY_TIMEOUT, alive)
        channels = Counter(confirmations.confirmed[o][1] for o in round_offers)
        say(f"round's offers delivered in {time.perf_counter() - started:.1f} s: {shown(channels)}")
        started = time.perf_counter()
        lines = await waiting_lines(allocation.url, town, parents)
        waited = {(o.institution_id, o.group_code) for o in parents.live.values()}
        waited = {g for g in waited if lines[g]}
        say(
            f"lines read from the allocation service's API in"
            f" {time.perf_counter() - started:.1f} s: {len(waited)} offered groups have"
            f" children waiting"
        )
        say(f"{args.count:,} declines at {args.rate:g}/s …")
        declines = Declines(parents, confirmations, lines, random.Random(args.seed))
        await declines.run(args.count, args.rate, alive)
        report(declines.out)
        state = await allocation.health()
        if state is not None:
            say(f"offers now: {state['offers']}")


def shown(channels: Counter[str]) -> str:
    return ", ".join(f"{CHANNEL_NAMES.get(c, c)} {n:,}" for c, n in channels.most_common())


def report(out: Outcomes) -> None:
    sent = len(out.sent)
    span = out.sent[-1] - out.sent[0] if sent > 1 else 0.0
    rate = f"{(sent - 1) / span:.2f}/s" if span else "n/a"
    say(
        f"{sent:,} declines sent over {span:.1f} s (achieved rate {rate});"
        f" {len(out.samples):,} measured"
    )
    apart = [
        f"{out.no_offer} made no offer (nobody waited after all)",
        f"{out.refused} were refused (a cascade had closed the offer first)",
        f"{out.unconfirmed} offers were not confirmed within {RECEIPT_TIMEOUT:.0f} s",
    ]
    say(f"  not counted: {'; '.join(apart)}")
    if out.blind:
        say(f"  {out.blind} declines were of offers nobody was known to wait for (none left)")
    if out.own_offer:
        say(
            f"  {out.own_offer} declined seats went to nobody after all; the offer followed"
            " was the declining child's next choice"
        )
    if len(out.samples) < 2:
        say("  too few measured declines for percentiles")
        return
    say(f"  decline → receipt (t2 − t0): {percentiles([s.t2 - s.t0 for s in out.samples])}")
    say(f"  decline → offer   (t1 − t0): {percentiles([s.t1 - s.t0 for s in out.samples])}")
    say(f"  offer → receipt   (t2 − t1): {percentiles([s.t2 - s.t1 for s in out.samples])}")
    channels = Counter(s.channel for s in out.samples)
    say(f"  confirmed on: {shown(channels)}")
    if len(channels) > 1:
        for channel, n in channels.most_common():
            ms = sorted((s.t2 - s.t0) * 1000 for s in out.samples if s.channel == channel)
            say(
                f"    {CHANNEL_NAMES.get(channel, channel)}: {n:,} receipts,"
                f" median {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--children", type=int, default=6000, help="default 6000")
    parser.add_argument("--institutions", type=int, default=10, help="default 10")
    parser.add_argument("--count", type=int, default=300, help="declines to send (default 300)")
    parser.add_argument("--rate", type=float, default=5.0, help="declines a second (default 5)")
    parser.add_argument(
        "--mix",
        type=float,
        default=0.5,
        metavar="SHARE",
        help="share of guardians with an active e-adrese, 0 to 1 (default 0.5)",
    )
    parser.add_argument("--seed", type=int, default=1, help="default 1")
    setting_option(
        parser, "fetch_max_wait", "both services' HUB_FETCH_MAX_WAIT, seconds (default %(default)s)"
    )
    args = parser.parse_args()
    if args.count < 1 or args.rate <= 0 or not 0 <= args.mix <= 1:
        parser.error("--count and --rate must be positive and --mix between 0 and 1")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
