"""The simulators' OpenAPI documents in docs/simulators/ are current and describe the API."""

import json

import pytest

from hub.settings import Settings
from simulators.plugin import OPENAPI_DIR, SYSTEMS, openapi_documents

DOCUMENTS = openapi_documents(Settings(_env_file=None))


@pytest.mark.parametrize("system", SYSTEMS)
def test_committed_document_is_current(system: str) -> None:
    committed = (OPENAPI_DIR / f"{system}.openapi.json").read_text(encoding="utf-8")
    assert committed == DOCUMENTS[system], f"docs/simulators/{system} is stale: run `make docs`"


@pytest.mark.parametrize(
    ("system", "path", "method"),
    [
        ("vps", "/v1/applications", "post"),
        ("vps", "/v1/events", "get"),
        ("vps", "/v1/offers/{offer_id}/answer", "post"),
        ("viis", "/v1/attendance/search", "post"),
        ("viis", "/v1/enrolments", "post"),
        ("gis", "/v1/addresses/{code}", "get"),
        ("gis", "/v1/addresses/{code}/distances", "get"),
        ("dvs", "/v1/documents", "post"),
        ("authorisations", "/v1/authorisations/verify", "post"),
    ],
)
def test_the_protocol_the_adapters_use_is_documented(system: str, path: str, method: str) -> None:
    document = json.loads(DOCUMENTS[system])
    assert document["openapi"].startswith("3.")
    assert method in document["paths"][path]
