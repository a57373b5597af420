"""The dashboard's JSON endpoints over a real SQLite call log, its admin credential, its headers.

The browser tests (tests/adapters/test_dashboard_browser.py) drive the page itself; these
ask the endpoints directly, as a script or a monitoring system would.
"""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import pytest

from shaken.adapters.http.dashboard import CSP, PANELS
from shaken.core.reasons import REASONS, Reason
from tests.adapters.http.conftest import Api, ApiFactory, key_entry
from tests.adapters.test_dashboard_day import as_version_4
from tests.adapters.test_dashboard_sql import T0, write_sqlite

pytestmark = pytest.mark.anyio

ADMIN = "an-admin-key-for-the-dashboard-0123456789"
WINDOW = {"since": str(T0), "until": str(T0 + 3600)}


def basic(password: str, user: str = "ops") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def dashboard(make_api: ApiFactory, tmp_path: Path, *, admin: bool = True) -> Api:
    path = tmp_path / "calls.sqlite"
    write_sqlite(path)
    keys = key_entry("ops", ADMIN, admin=True) if admin else ""
    api: Api = await make_api(server=f'call_log = "{path}"', keys=keys)
    return api


async def test_nothing_is_open_without_an_admin_key(make_api: ApiFactory, tmp_path: Path) -> None:
    api = await dashboard(make_api, tmp_path)
    for path in ["/dashboard", "/dashboard/static/dashboard.js", "/dashboard/api/traffic"]:
        for headers in [{}, api.auth, basic(api.key), basic("wrong"), {"X-API-Key": "wrong"}]:
            answer = await api.client.get(path, headers=headers)
            assert answer.status_code == 401, (path, headers)
            assert answer.headers["www-authenticate"].startswith('Basic realm="shaken dashboard"')
            assert answer.json() == {"error": "an admin API key is required"}
    assert (await api.client.get("/dashboard", headers=basic(ADMIN))).status_code == 200


async def test_a_server_without_an_admin_key_refuses_everyone(
    make_api: ApiFactory, tmp_path: Path
) -> None:
    api = await dashboard(make_api, tmp_path, admin=False)
    for headers in [{}, api.auth, basic(api.key)]:
        answer = await api.client.get("/dashboard/api/attestation", headers=headers)
        assert answer.status_code == 401


async def test_the_page_and_its_files_carry_a_strict_content_security_policy(
    make_api: ApiFactory, tmp_path: Path
) -> None:
    api = await dashboard(make_api, tmp_path)
    page = await api.client.get("/dashboard/", headers=basic(ADMIN))
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CSP
    assert "script-src 'self';" in CSP
    assert "unsafe" not in CSP
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    script = await api.client.get("/dashboard/static/uPlot.iife.min.js", headers=basic(ADMIN))
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    license_ = await api.client.get("/dashboard/static/uPlot.LICENSE", headers=basic(ADMIN))
    assert "MIT" in license_.text
    for name in ["../app.py", "index.html", "nothing.js"]:
        missing = await api.client.get(f"/dashboard/static/{name}", headers=basic(ADMIN))
        assert missing.status_code == 404
    refused = await api.client.post("/dashboard/api/traffic", headers=basic(ADMIN))
    assert refused.status_code == 405


async def test_every_panel_answers_with_the_call_logs_numbers(
    make_api: ApiFactory, tmp_path: Path
) -> None:
    api = await dashboard(make_api, tmp_path)
    auth = {"Authorization": f"Bearer {ADMIN}"}

    async def get(panel: str, **params: str) -> dict[str, object]:
        answer = await api.client.get(
            f"/dashboard/api/{panel}", params={**WINDOW, **params}, headers=auth
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-security-policy"] == CSP
        document: dict[str, object] = answer.json()
        return document

    traffic = await get("traffic")
    assert traffic["series"] == {
        "verified_A": [3, 0, 1],
        "verified_B": [1, 0, 0],
        "verified_C": [0, 1, 0],
        "failed": [0, 2, 0],
        "missing": [2, 0, 0],
    }
    assert (await get("traffic", profile="east"))["series"] == {"verified_A": [1]}
    mix = await get("attestation")
    assert (mix["calls"], mix["signed"], mix["rejected"]) == (10, 8, 2)
    failures = await get("failures")
    first = failures["reasons"][0]  # type: ignore[index]
    assert first["reason"] == "missing_identity"
    assert first["explanation"] == REASONS[Reason.MISSING_IDENTITY].description
    by_signer = await get("upstreams", by="signer", limit="1")
    assert by_signer["upstreams"] == [
        {
            "spc": "1234",
            "x5u_host": "certs.alpha.example",
            "calls": 4,
            "signed_share": 1.0,
            "failure_rate": 0.0,
            "verified": 4,
            "failed": 0,
            "missing": 0,
            "rejected": 0,
            "attestation": {"A": 4, "B": 0, "C": 0},
        }
    ]
    assert (await get("signing"))["signed"] == 3
    certificates = await get("certificates")
    cache = certificates["cache"]
    assert cache["fetch_failures"] == [{"host": "gone.example", "calls": 1}]  # type: ignore[index]
    assert certificates["crl"]["mode"] in ("off", "soft", "hard")  # type: ignore[index]
    found = await api.client.get(
        "/dashboard/api/calls", params={"call_id": f"call-{T0 + 62}"}, headers=auth
    )
    (call,) = found.json()["calls"]
    assert (call["allowed"], call["sip_code"], call["reason"]) == (False, 438, "bad_signature")


async def test_bad_parameters_are_400_with_a_reason(make_api: ApiFactory, tmp_path: Path) -> None:
    api = await dashboard(make_api, tmp_path)
    auth = basic(ADMIN)
    for params, text in [
        ({"range": "year"}, "range must be one of"),
        ({"since": "yesterday"}, "since must be a number"),
        ({"since": "10", "until": "5"}, "empty"),
        ({"since": "nan"}, "finite"),
    ]:
        answer = await api.client.get("/dashboard/api/traffic", params=params, headers=auth)
        assert answer.status_code == 400
        assert text in answer.json()["error"]
    answer = await api.client.get("/dashboard/api/upstreams", params={"by": "x"}, headers=auth)
    assert answer.status_code == 400
    answer = await api.client.get("/dashboard/api/calls", params={"limit": "-1"}, headers=auth)
    assert answer.status_code == 400
    answer = await api.client.get("/dashboard/api/calls", params={"outcome": "x"}, headers=auth)
    assert answer.status_code == 400
    assert (await api.client.get("/dashboard/api/nothing", headers=auth)).status_code == 404


async def test_no_call_log_is_503(make_api: ApiFactory, tmp_path: Path) -> None:
    api = await make_api(
        server=f'call_log = "{tmp_path / "none.sqlite"}"', keys=key_entry("ops", ADMIN, admin=True)
    )
    answer = await api.client.get("/dashboard/api/traffic", headers=basic(ADMIN))
    assert answer.status_code == 503


async def test_every_endpoint_is_in_the_openapi_document(make_api: ApiFactory) -> None:
    api = await make_api()
    document = (await api.client.get("/openapi.json")).json()
    paths = document["paths"]
    assert "/dashboard" in paths
    for name in PANELS:
        operation = paths[f"/dashboard/api/{name}"]["get"]
        assert {"basicAuth": []} in operation["security"]
        assert {"200", "400", "401"} <= set(operation["responses"])
    assert document["components"]["securitySchemes"]["basicAuth"]["scheme"] == "basic"


async def test_a_call_log_of_an_older_schema_is_503_naming_the_migration(
    make_api: ApiFactory, tmp_path: Path
) -> None:
    path = tmp_path / "calls.sqlite"
    write_sqlite(path)
    connection = sqlite3.connect(path)
    as_version_4(connection)
    connection.close()
    api = await make_api(server=f'call_log = "{path}"', keys=key_entry("ops", ADMIN, admin=True))
    for panel in ("traffic", "upstreams", "certificates"):
        answer = await api.client.get(f"/dashboard/api/{panel}", headers=basic(ADMIN))
        assert answer.status_code == 503, answer.text
        assert "schema version 4" in answer.json()["error"]
        assert "shaken calls migrate" in answer.json()["error"]
