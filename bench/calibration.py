"""How fast this machine runs plain Python right now, printed beside every benchmark.

Shared virtual machines change speed from one minute to the next; a figure
is only comparable with another taken at a similar calibration.
"""

from __future__ import annotations

import time


def python_speed() -> str:
    """Nanoseconds per iteration of a simple pure-Python loop (lower is faster)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return f"calibration: {best * 1000:.0f} ns per pure-Python loop iteration (best of 3)"
