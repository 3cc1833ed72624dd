"""The JSON result format: the admission lists of one round, explained (:class:`ResultFile`).

Its JSON Schema is committed as ``docs/allocation-result.schema.json``.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field

from hub.allocation.engine import Allocator, ChildReport, Priority, without_gc_pauses
from hub.allocation.formats.common import json_schema
from hub.allocation.formats.instance import GroupRef
from schemas.base import FrozenModel
from schemas.values import MunicipalityCode, UtcDatetime

RESULT_FORMAT = "hub-allocation-result/1"


class PriorityEntry(FrozenModel):
    """What a group compares children by: the criteria, then registration time, then lottery."""

    criteria: dict[str, bool] = Field(
        description="Each criterion of the rules, most important first: whether it holds here."
    )
    registered_at: UtcDatetime = Field(description="Registration time of the application (UTC).")
    lottery: int = Field(ge=0, description="The child's number in the published tie-break lottery.")
    listed: bool = Field(
        description="The child listed the institution; false: a seat taken as any-institution"
        " fallback, behind every child who listed it."
    )

    @classmethod
    def from_priority(cls, priority: Priority) -> Self:
        return cls(
            criteria=dict(priority.criteria),
            registered_at=priority.registered_at,
            lottery=priority.lottery,
            listed=priority.listed,
        )


class WhyNotEntry(FrozenModel):
    """Why the child has no seat at an institution it ranked above the place it got."""

    institution_id: str = Field(description="The institution ranked higher.")
    group: str | None = Field(description="The group there; null when none fits the child.")
    reason: Literal["outranked", "no_fitting_group"] = Field(
        description="outranked: the seats went to children of higher priority;"
        " no_fitting_group: no group of the child's language and age."
    )
    last_admitted: PriorityEntry | None = Field(
        description="Priority of the last child admitted to the group; null when nobody was."
    )
    own: PriorityEntry | None = Field(description="The child's own priority at the group.")


class QueueEntry(FrozenModel):
    """Where a waiting child stands at a group it ranked above its place."""

    institution_id: str = Field(description="Id of the institution.")
    group: str = Field(description="Code of the group.")
    position: int = Field(ge=1, description="Place in line: 1 is next.")
    waiting: int = Field(ge=1, description="Children in line for the group.")
    seats: int = Field(ge=0, description="Capacity of the group.")


class ChildOutcome(FrozenModel):
    """Where one child stands after the round, and why."""

    child_id: str = Field(description="Pseudonymous id of the child.")
    placement: GroupRef | None = Field(
        description="The seat offered or kept; null when the child has none."
    )
    kind: Literal["listed", "held", "any"] | None = Field(
        description="listed: a listed institution; held: the place the child already holds;"
        " any: an any-institution fallback seat; null without a seat."
    )
    preference_rank: int | None = Field(
        ge=1,
        description="Rank of the institution in the child's list (1 = first choice); null for"
        " an any-institution seat or without a seat.",
    )
    reason: str | None = Field(
        description="Why the child has no seat: outranked (a group the child may be offered fits"
        " it, but its seats went to others), no_fitting_group (none does), not_yet_due"
        " or 'invalid: …'; null with a seat."
    )
    why_not: tuple[WhyNotEntry, ...] = Field(
        description="Each institution ranked above the placement, and why it was not offered;"
        " institutions the parents declined are not ranked any more and are left out."
    )
    queue: tuple[QueueEntry, ...] = Field(
        description="The child's place in line at each group it still waits for."
    )


class GroupOutcome(FrozenModel):
    """One group after the round."""

    institution_id: str = Field(description="Id of the institution.")
    group: str = Field(description="Code of the group.")
    capacity: int = Field(ge=0, description="Seats open to newcomers.")
    placed: int = Field(ge=0, description="Seats offered in this round.")
    last_admitted: PriorityEntry | None = Field(
        description="The cut-off: priority of the last child admitted; null when nobody was."
    )


class Summary(FrozenModel):
    """Counts over the whole round."""

    children: int = Field(ge=0, description="Children in the queue.")
    placed: int = Field(ge=0, description="Children offered a seat (listed or any institution).")
    held: int = Field(ge=0, description="Children keeping the place they hold.")
    unplaced: int = Field(ge=0, description="Children without a seat.")
    seats: int = Field(ge=0, description="Seats open to newcomers, over all groups.")
    unplaced_by_reason: dict[str, int] = Field(
        description="Children without a seat by reason (outranked, no_fitting_group,"
        " not_yet_due, invalid)."
    )


class ResultFile(FrozenModel):
    """The admission lists of one round, with an explanation for every child."""

    format: Literal["hub-allocation-result/1"] = Field(
        description="Name and version of this format."
    )
    municipality: MunicipalityCode = Field(description="Municipality whose rules were applied.")
    round_date: date = Field(description="Date the round was computed for.")
    lottery_seed: int = Field(ge=0, description="Published seed of the tie-break lottery.")
    criteria: tuple[str, ...] = Field(description="Priority criteria, most important first.")
    summary: Summary = Field(description="Counts over the round.")
    groups: tuple[GroupOutcome, ...] = Field(description="Every group, by institution id.")
    children: tuple[ChildOutcome, ...] = Field(description="Every child, in instance order.")


@without_gc_pauses()  # like a round, a result is many small acyclic objects
def build_result(allocator: Allocator, report: dict[str, ChildReport]) -> ResultFile:
    """The result file of a round: ``report`` is ``allocator.report()``."""
    decoded: dict[int, PriorityEntry] = {}

    def priority(key: int | None) -> PriorityEntry | None:
        """The entry of a priority key; each distinct key is decoded once."""
        if key is None:
            return None
        if key not in decoded:
            decoded[key] = PriorityEntry.from_priority(allocator.decode(key))
        return decoded[key]

    children = []
    for child_id, (placement, why_not, queue) in report.items():
        seat = placement.pool
        children.append(
            ChildOutcome(
                child_id=child_id,
                placement=GroupRef.of(seat) if seat else None,
                kind=placement.kind,
                preference_rank=placement.preference_rank,
                reason=placement.reason,
                why_not=tuple(
                    WhyNotEntry(
                        institution_id=w.institution_id,
                        group=w.group,
                        reason=w.reason,
                        last_admitted=priority(w.last_admitted),
                        own=priority(w.own),
                    )
                    for w in why_not
                ),
                queue=tuple(
                    QueueEntry(
                        institution_id=q.institution_id,
                        group=q.group,
                        position=q.position,
                        waiting=q.waiting,
                        seats=q.seats,
                    )
                    for q in queue
                ),
            )
        )
    groups = tuple(
        GroupOutcome(
            institution_id=g.pool.institution_id,
            group=g.pool.group,
            capacity=g.capacity,
            placed=g.placed,
            last_admitted=priority(g.last_admitted),
        )
        for g in allocator.groups()
    )
    kinds = Counter(c.kind for c in children)
    # A reason is a category, or "invalid: <detail>": count by category.
    reasons = Counter(c.reason.partition(":")[0] for c in children if c.reason)
    rules = allocator.rules
    return ResultFile(
        format=RESULT_FORMAT,
        municipality=rules.municipality,
        round_date=allocator.round_date,
        lottery_seed=rules.lottery_seed,
        criteria=rules.criteria,
        summary=Summary(
            children=len(children),
            placed=kinds["listed"] + kinds["any"],
            held=kinds["held"],
            unplaced=kinds[None],
            seats=sum(g.capacity for g in groups),
            unplaced_by_reason=dict(sorted(reasons.items())),
        ),
        groups=groups,
        children=tuple(children),
    )


def write_result(result: ResultFile, path: Path) -> None:
    """Write ``result`` as UTF-8 JSON (non-ASCII letters as they are, indent 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.model_dump_json(indent=1) + "\n", encoding="utf-8")


def result_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`ResultFile`, as written."""
    return json_schema(ResultFile, mode="serialization")
