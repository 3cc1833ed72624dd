"""A whole admission season at city scale: wall time and peak memory.

Plays ``hub demo``'s season (every simulator in a process of its own, every
hub service in this one, the embedded broker) for ``--children`` children,
30,000 by default with 150 institutions — the size of Riga's queue — and
prints the season's report, then the figures: wall time from start to the
settled queue's report, each step's share, and the peak resident memory of
this process (the services) and of the child processes (simulators, broker).

    .venv/bin/python bench/season.py [--children 30000] [--institutions 150]
        [--faults 0.02] [--seed 7] [--accept 0.7] [--decline 0.15] [--timeout 1800]

There is no peer to compare with; the figures are the hub's own.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.calibration import python_speed
from hub.cli import run_async
from hub.observability import setup_logging
from hub.settings import Settings
from simulators.commands import scenario_arguments, scenario_of
from simulators.demo import Scenario, run_demo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    scenario_arguments(parser, Scenario(children=30_000, institutions=150, timeout=1800))
    args = parser.parse_args()
    setup_logging("WARNING")
    print(python_speed())
    scenario = scenario_of(args)

    def out(line: str) -> None:
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix="hub-season-") as data:
        settings = Settings(data_dir=Path(data), _env_file=None)
        began = time.perf_counter()
        report = run_async(run_demo(settings, scenario, out=out))
        wall = time.perf_counter() - began
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print()
    print(
        f"season of {args.children:,} children, {args.institutions} institutions,"
        f" faults {args.faults:.0%}: {'PASS' if report.passed else 'FAIL'}"
    )
    print(f"  wall time                        {wall:8.1f} s")
    for step, seconds in report.steps:
        print(f"    {step:<44} {seconds:8.1f} s")
    print(
        f"  offers {report.offers:,}, accepted {report.outcomes['accepted']:,},"
        f" notifications {sum(report.channels.values()):,}"
    )
    print(f"  peak memory, hub services (this process)  {own:8.0f} MiB")
    print(f"  peak memory, largest child (simulators or broker)  {children:8.0f} MiB")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
