"""Property tests from the served OpenAPI document (schemathesis): no 5xx, answers as documented.

Schemathesis loads ``/openapi.json`` from the application itself and generates requests from
it, valid and invalid, for every operation. Each answer must not be a server error, and its
status code, Content-Type, headers and body must be the ones the document declares. The API key
is sent so the generated bodies get past authentication; unauthenticated requests are covered by
test_auth.py. The example count is bounded to keep this under a few seconds per operation.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shaken.adapters.http import create_app
from shaken.adapters.http.dashboard import PANELS
from shaken.adapters.wiring import build_runtime
from shaken.config import load_config
from shaken.toolkit.lab import LabSettings, init_lab
from tests.adapters.http.conftest import free_port

# The schema is loaded at import (collection) time, before fixtures exist, so the lab for this
# module is made here, in a directory removed when the interpreter exits.
_DIRECTORY = Path(tempfile.mkdtemp(prefix="shaken-schemathesis-"))
_LAB = init_lab(
    _DIRECTORY / "lab", now=datetime.now(UTC), settings=LabSettings(repository_port=free_port())
)
_KEY = (_LAB.directory / "secrets" / "rest-api-key").read_text(encoding="utf-8").strip()
_RUNTIME = build_runtime(load_config(_LAB.config))
_RUNTIME.cache.import_chain(_LAB.x5u, _LAB.sp_chain.read_bytes())
APP = create_app(_RUNTIME)
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def teardown_module() -> None:
    shutil.rmtree(_DIRECTORY, ignore_errors=True)


@SCHEMA.parametrize()
@settings(
    max_examples=int(os.environ.get("SHAKEN_SCHEMATHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_answers_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {_KEY}"}, checks=CHECKS)


def test_the_document_loaded() -> None:
    operations = {(r.ok().method.upper(), r.ok().path) for r in SCHEMA.get_all_operations()}
    assert operations == {
        ("POST", "/stir/v1/signing"),
        ("POST", "/stir/v1/verification"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/dashboard"),
        *(("GET", f"/dashboard/api/{name}") for name in PANELS),
    }
