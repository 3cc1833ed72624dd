"""What the allocation file formats share: their error, skipped rows, JSON Schema dialect.

The models of the formats only convert: every rule about a valid round (known
institutions, unique ids, how many institutions a child may list) is the
engine's, which reports it as an :class:`~hub.allocation.engine.EngineError`
or as the child's ``invalid: …`` reason. Children are known by pseudonymous
ids only; no format carries a personal code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from hub.errors import HubError

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

UNSPECIFIED_GROUND = "unspecified"
"""Commission ground of a child whose out-of-turn ground is confirmed but not named.

Riga's open data only says *that* the commission granted out-of-turn
admission (``priority_commission``), not on which ground. The criterion
``commission`` holds for such a child; criteria naming single grounds do not.
"""


class AllocationInputError(HubError):
    """An input file of ``hub allocate`` cannot be used. Fix the place the message names."""


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row of an input CSV file that was skipped, or a child left out on purpose.

    ``kind`` is ``"error"`` for a row that could not be used, ``"excluded"``
    for a child whose parents chose not to receive an invitation.
    """

    file: str
    line: int
    """1-based line where the row starts; the header is line 1."""
    child_uid: str | None
    message: str
    kind: Literal["error", "excluded"] = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def json_schema(
    model: type[BaseModel], mode: Literal["validation", "serialization"] = "validation"
) -> dict[str, Any]:
    """The JSON Schema of ``model``, naming its dialect."""
    return {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema(mode=mode)}


def cannot_read(path: Path, exc: OSError) -> AllocationInputError:
    """The error for an input file the system refused to read."""
    return AllocationInputError(f"{path}: cannot read the file: {exc.strerror}")
