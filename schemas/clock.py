"""The simulated clock of a simulation: how far it runs ahead of the system clock.

Only a deployment that is a simulation (``HUB_SIMULATION=true``, synthetic
data and simulators) follows these messages, and only with
``HUB_CLOCK=simulated``; a production hub never reads them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import Event, type_name
from schemas.values import UtcDatetime

MAX_OFFSET_SECONDS = 100 * 366 * 86_400
"""A hundred years: far beyond any test scenario, and far from ``datetime``'s year 9999."""


class ClockAdvanced(Event):
    """An operator moved a municipality's simulated clock forward (``hub clock advance|set``).

    The clock is the system clock plus ``offset_seconds``. Offsets only grow:
    a service applies the largest offset it has read, so a message with a
    smaller one (an earlier move, or a move that lost a race) changes nothing.
    """

    event_type: Literal["ClockAdvanced"] = type_name("ClockAdvanced")
    offset_seconds: float = Field(
        ge=0,
        le=MAX_OFFSET_SECONDS,
        allow_inf_nan=False,
        description="How many seconds the simulated clock runs ahead of the system clock.",
    )
    moved_to: UtcDatetime = Field(
        description=(
            "The simulated time when the move was published (informational: services compute"
            " the time from the offset and their own system clock)."
        )
    )
    requested_by: str = Field(
        min_length=1, max_length=64, description="Operator (or test) that moved the clock."
    )
