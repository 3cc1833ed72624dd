"""File formats of the allocation engine: JSON instances and results, Riga's open data.

``hub allocate`` reads an instance — a JSON file in the format of
:class:`InstanceFile`, or Riga's published queue CSV with a seats CSV
(:func:`read_riga_csv`) — runs a round and writes a :class:`ResultFile`.
The JSON Schemas of both JSON formats are committed in ``docs/``
(:func:`write_schemas`); a test fails when they are stale.

One module a format: :mod:`.instance`, :mod:`.result`, :mod:`.riga_csv`;
:mod:`.common` holds what they share. This package reads an instance file of
either kind (:func:`read_instance`) and writes the schemas; every public name
of the modules can be imported from here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from hub.allocation.engine import without_gc_pauses
from hub.allocation.formats.common import (
    JSON_SCHEMA_DIALECT,
    UNSPECIFIED_GROUND,
    AllocationInputError,
    RowProblem,
    cannot_read,
    json_schema,
)
from hub.allocation.formats.instance import (
    INSTANCE_FORMAT,
    KNOWN_GROUNDS,
    ChildEntry,
    CommissionGround,
    FactsEntry,
    GroupEntry,
    GroupRef,
    InstanceFile,
    InstitutionEntry,
    instance_schema,
    read_instance_json,
)
from hub.allocation.formats.result import (
    RESULT_FORMAT,
    ChildOutcome,
    GroupOutcome,
    PriorityEntry,
    QueueEntry,
    ResultFile,
    Summary,
    WhyNotEntry,
    build_result,
    result_schema,
    write_result,
)
from hub.allocation.formats.riga_csv import (
    QUEUE_COLUMNS,
    RIGA_TIME_ZONE,
    SEATS_COLUMNS,
    read_riga_csv,
)
from hub.allocation.model import Instance

__all__ = [
    "INSTANCE_FORMAT",
    "JSON_SCHEMA_DIALECT",
    "KNOWN_GROUNDS",
    "QUEUE_COLUMNS",
    "RESULT_FORMAT",
    "RIGA_TIME_ZONE",
    "SCHEMA_FILES",
    "SEATS_COLUMNS",
    "UNSPECIFIED_GROUND",
    "AllocationInputError",
    "ChildEntry",
    "ChildOutcome",
    "CommissionGround",
    "FactsEntry",
    "GroupEntry",
    "GroupOutcome",
    "GroupRef",
    "InstanceFile",
    "InstitutionEntry",
    "PriorityEntry",
    "QueueEntry",
    "ResultFile",
    "RowProblem",
    "SchemaKind",
    "Summary",
    "WhyNotEntry",
    "build_result",
    "cannot_read",
    "instance_schema",
    "json_schema",
    "read_instance",
    "read_instance_json",
    "read_riga_csv",
    "result_schema",
    "schema_text",
    "write_result",
    "write_schemas",
]

SchemaKind = Literal["instance", "result"]
SCHEMA_FILES: dict[SchemaKind, str] = {
    "instance": "allocation-instance.schema.json",
    "result": "allocation-result.schema.json",
}
"""File name of each format's JSON Schema, in ``docs/``."""


@without_gc_pauses()  # like a round, an instance is many small acyclic objects
def read_instance(path: Path, seats: Path | None = None) -> tuple[Instance, list[RowProblem]]:
    """The instance in ``path``, with the problems of skipped rows.

    A ``.json`` file is an :class:`InstanceFile`; a ``.csv`` file is Riga's
    queue, read with the seats CSV ``seats`` by :func:`read_riga_csv`.
    Raises :class:`AllocationInputError`.
    """
    suffix = path.suffix.lower()
    if suffix == ".json":
        if seats is not None:
            raise AllocationInputError(f"{seats}: a seats CSV goes only with a Riga queue CSV")
        return read_instance_json(path), []
    if suffix == ".csv":
        if seats is None:
            raise AllocationInputError(f"{path}: a Riga queue CSV needs its seats CSV")
        return read_riga_csv(path, seats)
    raise AllocationInputError(f"{path}: expected a .json instance or a Riga queue .csv")


def schema_text(kind: SchemaKind) -> str:
    """The JSON Schema of one format as committed in ``docs/``: sorted keys, indent 2."""
    schema = instance_schema() if kind == "instance" else result_schema()
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    """Write both JSON Schemas into ``folder`` (named as in :data:`SCHEMA_FILES`)."""
    written = []
    for kind, name in SCHEMA_FILES.items():
        path = folder / name
        path.write_text(schema_text(kind), encoding="utf-8")
        written.append(path)
    return written
