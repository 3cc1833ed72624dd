"""File formats of the allocation engine and the ``hub allocate`` command."""

from __future__ import annotations

import ast
import json
from datetime import UTC, date, datetime
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import ValidationError

from hub.allocation import formats
from hub.allocation.engine import Allocator, Priority
from hub.allocation.formats import (
    SCHEMA_FILES,
    UNSPECIFIED_GROUND,
    AllocationInputError,
    ChildEntry,
    GroupRef,
    InstanceFile,
    ResultFile,
    build_result,
    instance_schema,
    read_instance,
    read_riga_csv,
    schema_text,
)
from hub.allocation.model import Instance
from hub.allocation.rules import load_rules
from hub.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLES = DOCS / "examples"
INSTANCE = EXAMPLES / "instance.json"
QUEUE = EXAMPLES / "riga-queue.csv"
SEATS = EXAMPLES / "riga-seats.csv"
ROUND_DATE = date(2026, 9, 1)

QUEUE_HEADER = (
    "id,institution_id,institution_name,group_language,program_starting_age,"
    "application_registered_date,desirable_start_date,child_uid,priority_5years_old,"
    "priority_commission,priority_sibling,priority_parent_reg_localgov,"
    "priority_child_reg_localgov,private_kg_fin_by_localgov,nanny_fin_by_localgov,"
    "chose_not_to_receive_inv"
)


def example_instance() -> Instance:
    instance, problems = read_instance(INSTANCE)
    assert problems == []
    return instance


def queue_csv(tmp_path: Path, *rows: str) -> Path:
    """A Riga queue CSV in ``tmp_path`` with the published header and ``rows``."""
    path = tmp_path / "queue.csv"
    path.write_text("\n".join((QUEUE_HEADER, *rows)) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- JSON instance


def test_json_instance_round_trip() -> None:
    instance = example_instance()
    text = InstanceFile.from_instance(instance).model_dump_json()
    assert InstanceFile.model_validate_json(text).to_instance() == instance
    # Nothing of the example is lost on the way through the engine's model.
    example = InstanceFile.model_validate_json(INSTANCE.read_bytes())
    assert InstanceFile.from_instance(instance) == example


def test_the_example_instance_has_what_the_readme_promises() -> None:
    children = {c.child_id: c for c in example_instance().children}
    assert children["CH-0002"].facts.siblings_at == {"PII-A"}
    assert children["CH-0003"].held is not None
    assert children["CH-0004"].accepts_any
    assert children["CH-0004"].location == (314100.0, 509000.0)
    # Offsets are kept as instants, normalised to UTC.
    assert children["CH-0001"].registered_at == datetime(2023, 1, 10, 7, 30, tzinfo=UTC)


def test_naive_registration_time_is_rejected(tmp_path: Path) -> None:
    data = json.loads(INSTANCE.read_text(encoding="utf-8"))
    data["children"][1]["registered_at"] = "2023-06-02T14:05:00"
    path = tmp_path / "naive.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(AllocationInputError) as error:
        read_instance(path)
    message = str(error.value)
    assert message.startswith(f"{path}: not a valid instance: children[1].registered_at: ")
    assert "time zone" in message
    assert "14:05" not in message  # input values are never echoed
    with pytest.raises(ValidationError):
        ChildEntry.model_validate({**data["children"][1], "registered_at": "2023-06-02T14:05"})


def test_invalid_json_names_the_place_of_the_first_problems(tmp_path: Path) -> None:
    data = json.loads(INSTANCE.read_text(encoding="utf-8"))
    data["format"] = "hub-allocation-instance/2"
    data["institutions"][0]["groups"][1]["capacity"] = -1
    data["children"][4]["facts"]["commission_grounds"] = ["xyzzy"]
    data["children"][5]["shoe_size"] = 31
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(AllocationInputError) as error:
        read_instance(path)
    message = str(error.value)
    assert "format: " in message
    assert "institutions[0].groups[1].capacity: " in message
    assert "children[4].facts.commission_grounds[0]: " in message
    assert message.endswith("… and 1 more")
    assert "xyzzy" not in message

    path.write_text('{"format": "hub-allocation-instance/1",\n "children": [', encoding="utf-8")
    with pytest.raises(AllocationInputError, match=r"bad\.json: not a valid instance: .*line 2"):
        read_instance(path)


def test_read_instance_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(AllocationInputError, match="goes only with a Riga queue CSV"):
        read_instance(INSTANCE, SEATS)
    with pytest.raises(AllocationInputError, match="needs its seats CSV"):
        read_instance(QUEUE)
    with pytest.raises(AllocationInputError, match=r"expected a \.json instance"):
        read_instance(tmp_path / "queue.xlsx")
    with pytest.raises(AllocationInputError, match="cannot read the file"):
        read_instance(tmp_path / "missing.json")


# --------------------------------------------------------------------------- result


def test_result_of_the_example_agrees_with_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    allocator = Allocator(example_instance(), load_rules("riga"), ROUND_DATE)
    report = allocator.report()
    decode = allocator.decode
    decoded: list[int] = []

    def counting_decode(key: int) -> Priority:
        decoded.append(key)
        return decode(key)

    monkeypatch.setattr(allocator, "decode", counting_decode)
    result = build_result(allocator, report)

    assert ResultFile.model_validate_json(result.model_dump_json()) == result
    offered = {
        c.child_id: (c.placement.institution_id, c.placement.group)
        for c in result.children
        if c.placement and c.kind != "held"
    }
    assert offered == {cid: tuple(ref) for cid, ref in allocator.matching().items()}
    keys = {k for r in report.values() for w in r.why_not for k in (w.last_admitted, w.own)}
    keys |= {g.last_admitted for g in allocator.groups()}
    assert sorted(decoded) == sorted(keys - {None})  # each distinct key decoded once

    children = {c.child_id: c for c in result.children}
    held = children["CH-0003"]
    assert held.kind == "held"
    assert held.placement == GroupRef(institution_id="PII-C", group="2022-lv")
    assert (children["CH-0004"].kind, children["CH-0004"].preference_rank) == ("any", None)
    assert children["CH-0006"].reason == "not_yet_due"
    # CH-0001 lost PII-A to a later registration with a sibling there.
    [why] = children["CH-0001"].why_not
    assert (why.institution_id, why.reason) == ("PII-A", "outranked")
    assert why.own.criteria["sibling"] is False
    assert why.last_admitted.criteria["sibling"] is True
    assert list(why.own.criteria) == list(load_rules("riga").criteria)
    assert why.last_admitted.registered_at > why.own.registered_at

    summary = result.summary
    assert (summary.children, summary.placed, summary.held, summary.unplaced) == (6, 4, 1, 1)
    assert summary.unplaced_by_reason == {"not_yet_due": 1}
    assert summary.seats == sum(g.capacity for g in result.groups)
    assert sum(g.placed for g in result.groups) == summary.placed
    groups = {(g.institution_id, g.group): g for g in result.groups}
    assert groups[("PII-A", "2022-lv")].last_admitted == why.last_admitted
    assert groups[("PII-A", "2022-ru")].last_admitted.criteria["commission"] is True
    assert all((g.last_admitted is None) == (g.placed == 0) for g in result.groups)


# --------------------------------------------------------------------------- Riga CSV


def test_riga_example_reads_with_the_expected_problems() -> None:
    instance, problems = read_riga_csv(QUEUE, SEATS)
    assert [(p.file, p.line, p.child_uid, p.kind) for p in problems] == [
        (str(QUEUE), 10, "U1005", "excluded"),
        (str(QUEUE), 13, "U1007", "error"),
    ]
    assert str(problems[1]).startswith(f"{QUEUE}:13: application_registered_date: ")

    institutions = {i.institution_id: i for i in instance.institutions}
    assert list(institutions) == ["PII-101", "PII-102", "PII-103"]
    assert institutions["PII-101"].name == "Piemēra PII Nr. 101"
    assert [
        (p.group, p.language, p.age_group, p.capacity) for p in institutions["PII-101"].pools
    ] == [
        ("1.5-lv", "lv", "1.5", 1),
        ("3-lv", "lv", "3", 1),
    ]

    children = {c.child_id: c for c in instance.children}
    assert list(children) == ["U1001", "U1002", "U1003", "U1004", "U1006"]
    assert children["U1001"].institutions == ("PII-101", "PII-102", "PII-103")
    assert children["U1002"].facts.siblings_at == {"PII-103"}  # only where the flag is set
    assert {cid: c.facts.mandatory_age for cid, c in children.items()} == {
        "U1001": False,
        "U1002": False,
        "U1003": True,
        "U1004": False,
        "U1006": False,
    }
    # 14:05 in Riga in winter (UTC+2); "LV" and "krievu" normalised; "1,5" → "1.5".
    assert children["U1002"].registered_at == datetime(2023, 3, 2, 12, 5, tzinfo=UTC)
    assert children["U1002"].desired_start_date == date(2026, 9, 1)
    assert (children["U1003"].language, children["U1004"].language) == ("lv", "ru")
    assert children["U1006"].age_group == "1.5"
    assert children["U1001"].facts.parent_resident and children["U1001"].facts.child_resident
    assert not children["U1002"].facts.child_resident
    assert all(c.birth_date is None and not c.facts.commission_grounds for c in children.values())
    # A CSV instance converts to the JSON format and back.
    text = InstanceFile.from_instance(instance).model_dump_json()
    assert InstanceFile.model_validate_json(text).to_instance() == instance


def test_riga_rows_that_cannot_be_used_are_reported_by_line(tmp_path: Path) -> None:
    path = queue_csv(
        tmp_path,
        "1,PII-101,,latviešu,3,2024-03-01,2026-09-01,A1,0,1,0,1,1,0,0,0",
        # a quoted value over two lines (3 and 4): the next row starts on line 5
        '2,PII-102,"Nr. 102\nfiliāle",latviešu,3,2024-03-01,2026-09-01,A1,0,1,0,1,1,0,0,0',
        "3,PII-103,,latviešu,3,2024-03-02,2026-09-01,A1,0,1,0,1,1,0,0,0",
        "4,PII-101,,latviešu,3,2024-03-01,2026-09-01,A1,0,1,0,1,1,0,0,0",
        "5,PII-999,,latviešu,3,2024-03-01,2026-09-01,B2,0,0,0,0,0,0,0,0",
        "6,PII-101,,latviešu,3,2024-03-01,2026-09-01,B2,varbūt,0,0,0,0,0,0,0",
        "7,PII-101,,latviešu,3,2024-03-01,2026-09-01,,0,0,0,0,0,0,0,0",
        "8,PII-101,,latviešu,3,2024-03-01",
        "",
        "9,PII-101,,klingoņu,3,2024-03-01,2026-09-01,C3,0,0,0,0,0,0,0,0",
        "10,PII-101,,lv,trīs,2024-03-01,2026-09-01,D4,jā,nē,,TRUE,false,1,1,",
    )
    instance, problems = read_riga_csv(path, SEATS)
    assert [(p.line, p.child_uid, p.message) for p in problems] == [
        (
            5,
            "A1",
            "disagrees with line 2, the child's first row, on application_registered_date",
        ),
        (6, "A1", "institution PII-101 is already listed on line 2"),
        (7, "B2", f"institution PII-999 has no seats in {SEATS}"),
        (8, "B2", "priority_5years_old: expected 1 or 0 (true/false, jā/nē), got 'varbūt'"),
        (9, None, "child_uid is empty"),
        (10, None, "6 fields where the header has 16"),
        (
            12,
            "C3",
            "group_language: expected a two-letter code or a name such as latviešu, got 'klingoņu'",
        ),
        (13, "D4", "program_starting_age: expected an age in years such as 1,5 or 3, got 'trīs'"),
    ]
    [child] = instance.children
    assert child.child_id == "A1"
    assert child.institutions == ("PII-101", "PII-102")
    assert child.facts.commission_grounds == {UNSPECIFIED_GROUND}


def test_riga_flags_and_times(tmp_path: Path) -> None:
    path = queue_csv(
        tmp_path,
        "1,PII-101,,latviešu,3,2024-03-01,2026-09-01,A,jā,nē,,TRUE,false,1,1,",
        "2,PII-101,,latviešu,3,2024-07-01T08:30:00+00:00,01.09.2026,B,0,0,0,0,0,0,0,0",
        "3,PII-101,,latviešu,3,01.07.2024 10:30,2026-09-01T00:00:00,C,0,0,0,0,0,0,0,0",
        "4,PII-101,,latviešu,3,1.7.2024 10:30:15,2026-09-01,D,0,0,0,0,0,0,0,0",
    )
    instance, problems = read_riga_csv(path, SEATS)
    assert problems == []
    a, b, c, d = instance.children
    assert (a.facts.mandatory_age, a.facts.commission_grounds) == (True, frozenset())
    assert (a.facts.parent_resident, a.facts.child_resident) == (True, False)
    assert a.registered_at == datetime(2024, 2, 29, 22, 0, tzinfo=UTC)  # midnight in Riga
    assert b.registered_at == datetime(2024, 7, 1, 8, 30, tzinfo=UTC)  # an offset is kept
    assert c.registered_at == datetime(2024, 7, 1, 7, 30, tzinfo=UTC)  # summer time, UTC+3
    assert d.registered_at == datetime(2024, 7, 1, 7, 30, 15, tzinfo=UTC)
    assert {x.desired_start_date for x in instance.children} == {date(2026, 9, 1)}


def test_riga_files_that_cannot_be_read(tmp_path: Path) -> None:
    seats = tmp_path / "seats.csv"
    seats.write_text(
        "\ufeffinstitution_id,group_language,program_starting_age,capacity\n"
        "PII-1,latviešu,3,2\n"
        "PII-1,LV,3,1\n"
        "PII-2,krievu,3,-1\n",
        encoding="utf-8",
    )
    instance, problems = read_riga_csv(queue_csv(tmp_path), seats)
    assert [(p.file, p.line, p.message) for p in problems] == [
        (str(seats), 3, "group 3-lv of PII-1 is already on line 2"),
        (str(seats), 4, "capacity: expected a whole number of seats, got '-1'"),
    ]
    assert [i.institution_id for i in instance.institutions] == ["PII-1"]

    seats.write_text("institution_id,language,capacity\n", encoding="utf-8")
    with pytest.raises(
        AllocationInputError, match=r"seats\.csv:1: missing columns: group_language"
    ):
        read_riga_csv(queue_csv(tmp_path), seats)
    seats.write_bytes(b"institution_id\xff\n")
    with pytest.raises(AllocationInputError, match="not UTF-8 text"):
        read_riga_csv(queue_csv(tmp_path), seats)
    missing = tmp_path / "missing.csv"
    with pytest.raises(AllocationInputError, match=r"missing\.csv: cannot read the file"):
        read_riga_csv(missing, SEATS)


# --------------------------------------------------------------------------- hub allocate


def test_hub_allocate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "result.json"
    args = [str(INSTANCE), "--rules", "riga", "--date", "2026-09-01", "--out", str(out)]
    assert main(["allocate", *args]) == 0
    result = ResultFile.model_validate_json(out.read_text(encoding="utf-8"))
    assert (result.municipality, result.round_date) == ("riga", ROUND_DATE)
    captured = capsys.readouterr()
    assert f"read 6 children, 3 institutions from {INSTANCE}" in captured.err
    assert f"wrote {out}" in captured.err
    assert "  placed    4\n  held      1\n  unplaced  1 (not_yet_due 1)\n" in captured.out


def test_hub_allocate_riga_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "result.json"
    args = ["--seats", str(SEATS), "--rules", "riga", "--date", "2026-09-01", "--out", str(out)]
    assert main(["allocate", str(QUEUE), *args]) == 0
    result = ResultFile.model_validate_json(out.read_bytes())
    assert [c.child_id for c in result.children] == ["U1001", "U1002", "U1003", "U1004", "U1006"]
    err = capsys.readouterr().err
    assert f"{QUEUE}:10: child left out" in err
    assert f"{QUEUE}:13: application_registered_date" in err


def test_hub_allocate_shows_at_most_20_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [f"{n},PII-9,,lv,3,2024-03-01,2026-09-01,K{n},0,0,0,0,0,0,0,0" for n in range(23)]
    path = queue_csv(tmp_path, *rows)
    args = ["--seats", str(SEATS), "--rules", "riga", "--date", "2026-09-01"]
    assert main(["allocate", str(path), *args, "--out", str(tmp_path / "r.json")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert sum(line.startswith(f"{path}:") for line in err) == 20
    assert "… and 3 more" in err


def test_hub_allocate_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["allocate", "--schema", "instance"]) == 0
    assert json.loads(capsys.readouterr().out) == instance_schema()


def test_hub_allocate_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "result.json")
    args = [str(INSTANCE), "--date", "2026-09-01", "--out", out]
    assert main(["allocate", *args, "--rules", "ogre"]) == 2
    assert "no shipped rules for 'ogre'" in capsys.readouterr().err
    assert main(["allocate", str(INSTANCE), "--rules", "riga"]) == 2
    assert "hub: error: hub allocate needs --date, --out" in capsys.readouterr().err
    assert not Path(out).exists()


# --------------------------------------------------------------------------- package


@pytest.mark.parametrize(
    "module", [formats.common, formats.instance, formats.result, formats.riga_csv]
)
def test_the_package_exports_every_public_name_of_its_modules(module: ModuleType) -> None:
    tree = ast.parse(Path(module.__file__ or "").read_text(encoding="utf-8"))
    defined = [
        target.id
        for node in tree.body
        for target in (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if isinstance(target, ast.Name)
    ] + [node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)]
    public = {name for name in defined if not name.startswith("_")}
    assert public
    missing = sorted(
        name
        for name in public
        if name not in formats.__all__ or getattr(formats, name) is not getattr(module, name)
    )
    assert not missing, f"hub.allocation.formats does not export {missing}"


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("kind", sorted(SCHEMA_FILES))
def test_committed_schemas_are_current(kind: str) -> None:
    path = DOCS / SCHEMA_FILES[kind]
    assert path.read_text(encoding="utf-8") == schema_text(kind), (  # type: ignore[arg-type]
        f"{path} is stale: run `make docs`"
    )
