"""/metrics, /healthz, /readyz and /openapi.json; the SQLite call log; the adapter's imports."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import pytest

from shaken.adapters.http import create_app
from shaken.adapters.http.dashboard import PANELS
from shaken.adapters.http.schemas import ERRORS, openapi_document
from tests.adapters.http.conftest import (
    OUTSIDE,
    Api,
    ApiFactory,
    LabKit,
    signing_request,
)

pytestmark = pytest.mark.anyio

SRC = Path(__file__).resolve().parents[3] / "src" / "shaken"


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the Prometheus text format, or None if absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', metric))
        if metric.split("{")[0] == name and found == labels:
            return float(value)
    return None


async def test_metrics_content(kit: LabKit, make_api: ApiFactory) -> None:
    api: Api = await make_api()
    await api.verify(kit.token())
    await api.verify(kit.token())
    await api.verify(kit.token(header={"typ": "x"}))
    await api.verify(None)
    await api.sign(signing_request())
    await api.sign(signing_request(), headers={})
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    requests = "shaken_requests_total"
    assert _sample(text, requests, endpoint="verification", outcome="verified", reason="") == 2
    assert (
        _sample(text, requests, endpoint="verification", outcome="failed", reason="unsupported_typ")
        == 1
    )
    assert _sample(text, requests, endpoint="verification", outcome="error", reason="SVC4001") == 1
    assert _sample(text, requests, endpoint="signing", outcome="signed", reason="") == 1
    assert _sample(text, requests, endpoint="signing", outcome="error", reason="POL4010") == 1
    assert _sample(text, "shaken_verification_seconds_count") == 3
    assert _sample(text, "shaken_verification_seconds_bucket", le="+Inf") == 3
    assert _sample(text, "shaken_certificate_cache_entries") == 1
    hits = _sample(text, "shaken_certificate_cache_hits_total")
    assert hits is not None and hits >= 2
    assert _sample(text, "shaken_certificate_cache_misses_total") is not None
    assert _sample(text, "shaken_certificate_fetches_total") == 0
    assert _sample(text, "shaken_trust_anchors") == 1
    days = _sample(text, "shaken_signing_certificate_days_left", x5u=kit.x5u)
    assert days is not None and 300 < days < 366  # the lab issues for a year
    assert _sample(text, "shaken_signing_certificate_valid", x5u=kit.x5u) == 1


async def test_metrics_count_fetches_and_an_unusable_signing_certificate(
    kit: LabKit, make_api: ApiFactory
) -> None:
    api: Api = await make_api()
    api.runtime.cache.purge()  # our x5u now has to be fetched, and the repository is down
    text = (await api.client.get("/metrics")).text
    assert _sample(text, "shaken_signing_certificate_valid", x5u=kit.x5u) == 0
    assert _sample(text, "shaken_signing_certificate_days_left", x5u=kit.x5u) is None
    fetches = _sample(text, "shaken_certificate_fetches_total")
    assert fetches is not None and fetches >= 1
    failed = _sample(text, "shaken_certificate_fetch_results_total", result="cert_fetch_failed")
    assert failed is not None and failed >= 1
    assert _sample(text, "shaken_certificate_fetch_results_total", result="ok") is None
    assert (_sample(text, "shaken_certificate_cache_misses_total") or 0) >= 1


async def test_an_expired_signing_certificate_shows_negative_days(
    kit: LabKit, make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unvalidated chain still gives its notAfter, read from the raw x5u response."""
    from datetime import UTC, datetime, timedelta

    from shaken.services.ports import FetchedDocument
    from shaken.testing import make_sti_pki

    old = make_sti_pki(datetime.now(UTC) - timedelta(days=400))
    api: Api = await make_api()
    api.runtime.cache.purge()

    async def fetch(url: str, *, etag: str | None = None) -> FetchedDocument:
        return FetchedDocument(url=url, body=old.chain_pem, fetched_at=datetime.now(UTC))

    monkeypatch.setattr(api.runtime.fetcher, "fetch", fetch)
    text = (await api.client.get("/metrics")).text
    days = _sample(text, "shaken_signing_certificate_days_left", x5u=kit.x5u)
    assert days is not None and days < 0
    assert _sample(text, "shaken_signing_certificate_valid", x5u=kit.x5u) == 0


async def test_each_app_has_its_own_registry(kit: LabKit, make_api: ApiFactory) -> None:
    first: Api = await make_api()
    second: Api = await make_api()
    await first.verify(kit.token())
    text = (await second.client.get("/metrics")).text
    assert (
        _sample(
            text, "shaken_requests_total", endpoint="verification", outcome="verified", reason=""
        )
        is None
    )


async def test_healthz(make_api: ApiFactory) -> None:
    api: Api = await make_api()
    response = await api.client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert (await api.client.post("/healthz")).status_code == 405


async def test_readyz_ready(make_api: ApiFactory) -> None:
    api: Api = await make_api()
    response = await api.client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {
        "service",
        "trust_anchors",
        "signing_keys",
        "certificate_cache",
        "call_log",
        "certificate_lifecycle",  # the lab's [lifecycle]; its static key signs meanwhile
        "revocation",  # issue 9 item 3: revocation data and our own certificates
        "signing_certificates",
    }
    assert all(check["ok"] for check in body["checks"].values())


async def test_readyz_not_ready_without_trust_anchors(make_api: ApiFactory) -> None:
    api: Api = await make_api(replace={'trust_anchors = ["ca/root.pem"]': ""})
    response = await api.client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert not checks["trust_anchors"]["ok"] and checks["signing_keys"]["ok"]


async def test_readyz_not_ready_with_an_unwritable_cache(
    kit: LabKit, make_api: ApiFactory, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    api: Api = await make_api(replace={'cache_dir = "cache"': f'cache_dir = "{blocker}"'})
    response = await api.client.get("/readyz")
    assert response.status_code == 503
    assert not response.json()["checks"]["certificate_cache"]["ok"]


async def test_readyz_asks_the_call_log(make_api: ApiFactory) -> None:
    api: Api = await make_api()
    api.calls.ok = False
    response = await api.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["call_log"] == {"ok": False, "detail": "not writable"}


async def test_readyz_not_ready_when_signing_has_no_key(make_api: ApiFactory) -> None:
    """A profile that signs (a [tn_range] entry) but has no private key anywhere."""
    api: Api = await make_api(replace={'private_key = "sp/sp.key"': "", "x5u = ": "# x5u = "})
    response = await api.client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["signing_keys"] == {"ok": False, "detail": "0 signing key(s) loaded"}
    assert checks["trust_anchors"]["ok"]


async def test_openapi_document_is_served(make_api: ApiFactory) -> None:
    api: Api = await make_api(server="verification_open = true")
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/stir/v1/signing",
        "/stir/v1/verification",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/dashboard",
        *(f"/dashboard/api/{name}" for name in PANELS),
    }
    verification = document["paths"]["/stir/v1/verification"]["post"]
    assert {} in verification["security"]
    assert {} not in document["paths"]["/stir/v1/signing"]["post"]["security"]
    statuses = {int(s) for s in verification["responses"]}
    assert statuses >= {200, 400, 401, 403, 406, 411, 413, 415, 429, 500, 503}
    assert document == openapi_document(verification_open=True)


def test_openapi_documents_by_schema() -> None:
    atis = openapi_document(schema="atis")["paths"]["/stir/v1/verification"]["post"]
    body = atis["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/AtisVerificationRequest"}
    gpp = openapi_document(schema="3gpp")["paths"]["/stir/v1/signing"]["post"]
    assert gpp["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/GppError"
    }
    ids = openapi_document()["components"]["schemas"]["Exception"]["properties"]["messageId"]
    assert ids["enum"] == list(ERRORS)


async def test_decisions_reach_the_sqlite_call_log(
    kit: LabKit, make_api: ApiFactory, tmp_path: Path
) -> None:
    """One integration test through the real store (it reads the same records back)."""
    from shaken.adapters.store.calllog import SqliteCallLog, read_calls

    api: Api = await make_api()
    store = SqliteCallLog(tmp_path / "calls.db", flush_interval=0.01)
    try:
        app = create_app(api.runtime, call_log=store)
        import httpx

        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api"
        ) as client:
            api.client = client
            await api.verify(kit.token())
            await api.sign(signing_request(OUTSIDE))
            ready = (await client.get("/readyz")).json()["checks"]["call_log"]
        await asyncio.to_thread(store.flush)
    finally:
        await asyncio.to_thread(store.close)
    assert ready["ok"]
    rows = read_calls(tmp_path / "calls.db")
    assert [(r["direction"], r["interface"], r["outcome"]) for r in rows] == [
        ("verify", "rest", "verified"),
        ("sign", "rest", "signed"),
    ]


def test_the_http_adapter_never_imports_the_sip_adapter() -> None:
    for path in sorted((SRC / "adapters" / "http").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.startswith("shaken.adapters.sip") for n in names), path.name
