"""``GET /dashboard``: the operator's dashboard on the REST listener, and the JSON behind it.

Never open: every path under ``/dashboard`` needs an API key with ``admin = true``
(``[api_key.NAME]``), presented as ``Authorization: Bearer``, ``X-API-Key``, or, so that a
browser can log in, as the password of HTTP Basic authentication (any user name); a server
without such a key answers 401 to everyone. A 401 carries ``WWW-Authenticate: Basic`` so a
browser asks for it.

* ``/dashboard`` (and ``/dashboard/``): the page, static HTML;
* ``/dashboard/static/NAME``: its script, style sheet and the vendored uPlot chart library
  (package data, no CDN: it works offline);
* ``/dashboard/api/PANEL``: one panel's JSON (:mod:`shaken.services.dashboard`), usable without
  the page and described in ``/openapi.json``. Every panel takes ``range`` (``hour``, ``day``,
  ``week``) or ``since``/``until`` (Unix seconds) and ``profile``.

Everything shown may come from an attacker (display names, TNs, x5u URLs, Call-IDs). The JSON
is JSON (a string is a string, whatever it holds); the page sets text, never markup; and every
answer under ``/dashboard`` carries a strict Content-Security-Policy: scripts and styles only
from this server's own files, no inline script, no ``eval``, no framing.

The aggregation runs in the call log's database (:mod:`shaken.adapters.store.dashboard_sql`),
in a thread, so a slow query never holds the event loop that answers calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from shaken.adapters.http.auth import basic_password, presented_key
from shaken.adapters.store.dashboard_sql import OutdatedCallLog, open_store
from shaken.services.calllog import CallQuery
from shaken.services.cert_cache import RevocationReport
from shaken.services.dashboard import RANGES, TOP, Dashboard, Window, window_of

if TYPE_CHECKING:
    from shaken.adapters.http.app import Receive, RestApplication, Scope, Send

__all__ = ["CSP", "PANELS", "DashboardEndpoints", "openapi_paths"]

log = logging.getLogger("shaken.dashboard")

PREFIX = "/dashboard"
#: What the page may load and do: its own files and its own JSON, nothing else.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode("ascii")),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
_CHALLENGE = (b"www-authenticate", b'Basic realm="shaken dashboard", charset="UTF-8"')
_STATIC = {
    "dashboard.js": b"text/javascript; charset=utf-8",
    "dashboard.css": b"text/css; charset=utf-8",
    "uPlot.iife.min.js": b"text/javascript; charset=utf-8",
    "uPlot.min.css": b"text/css; charset=utf-8",
    "uPlot.LICENSE": b"text/plain; charset=utf-8",
}
_HTML = b"text/html; charset=utf-8"
_JSON = b"application/json"
#: The search filters (CallQuery fields) a request may give.
_SEARCH = ("tn", "call_id", "origid", "outcome", "spc", "source", "reason", "interface")
SEARCH_LIMIT = 200
#: How the call log names the global profile (as the SIP and REST adapters record it).
GLOBAL = "global"


@dataclass(frozen=True, slots=True)
class Panel:
    summary: str
    extra: tuple[tuple[str, str, dict[str, Any]], ...] = ()


#: The JSON endpoints, ``/dashboard/api/NAME``.
PANELS: dict[str, Panel] = {
    "traffic": Panel("Inbound calls per time bucket by outcome (verified A/B/C, failed, missing)"),
    "attestation": Panel("The attestation mix and the signed share of inbound calls"),
    "failures": Panel("Failure reasons ranked, with their SIP code and explanation"),
    "upstreams": Panel(
        "Upstreams ranked by source address or by signer (SPC and x5u host)",
        (
            ("by", "source (default) or signer", {"type": "string", "enum": ["source", "signer"]}),
            ("limit", "rows at most (default 50)", {"type": "integer", "minimum": 1}),
        ),
    ),
    "signing": Panel("Outbound: calls signed per time bucket by attestation, not-signed reasons"),
    "certificates": Panel(
        "Our signing certificates (days left, revocation), the certificate cache, the CRLs"
    ),
    "profiles": Panel("The profiles calls are recorded under (the global one is global)"),
    "calls": Panel(
        "Call search: the matching calls' full records, most recent first",
        (
            *(
                (name, f"the call's {name}", {"type": "string"})
                for name in ("tn", "call_id", "origid", "outcome", "spc", "source", "reason")
            ),
            ("limit", "rows at most (default 200)", {"type": "integer", "minimum": 1}),
        ),
    ),
}


class _BadRequest(Exception):
    pass


def _parameters(scope: Scope) -> dict[str, str]:
    query = scope.get("query_string", b"").decode("utf-8", "surrogateescape")
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=False).items()}


def _number(params: dict[str, str], name: str) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise _BadRequest(f"{name} must be a number (Unix seconds)") from None
    if not math.isfinite(number):
        raise _BadRequest(f"{name} must be a finite number")
    return number


def _count(params: dict[str, str], name: str, default: int, most: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise _BadRequest(f"{name} must be a positive integer")
    return min(int(value), most)


def _dumps(document: Any) -> bytes:
    # ensure_ascii: lone surrogates (bytes that were not UTF-8 on the wire) stay valid JSON.
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode("ascii")


class DashboardEndpoints:
    """Everything under ``/dashboard`` for one :class:`~.app.RestApplication`."""

    def __init__(self, app: RestApplication) -> None:
        self.app = app

    @staticmethod
    def handles(path: str) -> bool:
        return path == PREFIX or path.startswith(PREFIX + "/")

    def _admitted(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers", ()))
        authorization = headers.get(b"authorization")
        presented = basic_password(authorization) or presented_key(
            authorization, headers.get(b"x-api-key")
        )
        if presented is None:
            return False
        key = self.app.keyring.authenticate(presented)
        return key is not None and key.admin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            await self._answer(send, 405, {"error": "only GET"}, [(b"allow", b"GET")])
            return
        if not self._admitted(scope):
            self.app.metrics.count("dashboard", "error", "401")
            await self._answer(send, 401, {"error": "an admin API key is required"}, [_CHALLENGE])
            return
        try:
            if path in (PREFIX, PREFIX + "/"):
                await self._raw(send, 200, _static("index.html"), _HTML)
            elif path.startswith(PREFIX + "/static/"):
                name = path.removeprefix(PREFIX + "/static/")
                if name not in _STATIC:
                    await self._answer(send, 404, {"error": "no such file"})
                else:
                    await self._raw(send, 200, _static(name), _STATIC[name])
            elif path.startswith(PREFIX + "/api/"):
                await self._panel(path.removeprefix(PREFIX + "/api/"), scope, send)
            else:
                await self._answer(send, 404, {"error": "no such page"})
        except Exception:
            log.exception("internal error answering the dashboard")
            await self._answer(send, 500, {"error": "internal error"})

    async def _panel(self, name: str, scope: Scope, send: Send) -> None:
        if name not in PANELS:
            await self._answer(send, 404, {"error": "no such panel"})
            return
        target = self.app.runtime.settings.server_settings.call_log
        try:
            params = _parameters(scope)
            window = self._window(params)
            if name == "profiles":
                names = {p or GLOBAL for p in self.app.runtime.profiles}
                document = {"profiles": sorted(names)}
            elif name == "certificates":
                document = await self._certificates(window, target)
            elif not target:
                await self._answer(send, 503, {"error": "no call log is configured"})
                return
            else:
                document = await asyncio.to_thread(self._query, name, str(target), window, params)
        except (_BadRequest, ValueError) as exc:
            await self._answer(send, 400, {"error": str(exc)})
            return
        except FileNotFoundError:
            await self._answer(send, 503, {"error": "the call log holds no calls yet"})
            return
        except OutdatedCallLog as exc:
            await self._answer(send, 503, {"error": str(exc)})
            return
        self.app.metrics.count("dashboard", "ok", "")
        await self._answer(send, 200, document)

    def _window(self, params: dict[str, str]) -> Window:
        range_name = params.get("range")
        if range_name is not None and range_name not in RANGES:
            raise _BadRequest(f"range must be one of {', '.join(RANGES)}")
        return window_of(
            self.app.clock.now().timestamp(),
            range_name=range_name,
            since=_number(params, "since"),
            until=_number(params, "until"),
            profile=params.get("profile"),
        )

    @staticmethod
    def _query(name: str, target: str, window: Window, params: dict[str, str]) -> Any:
        dashboard = Dashboard(open_store(target))
        if name == "traffic":
            return dashboard.traffic(window)
        if name == "attestation":
            return dashboard.attestation(window)
        if name == "failures":
            return dashboard.failures(window)
        if name == "upstreams":
            by = params.get("by", "source")
            if by not in ("source", "signer"):
                raise _BadRequest("by must be source or signer")
            return dashboard.upstreams(window, by, _count(params, "limit", TOP, 1000))
        if name == "signing":
            return dashboard.signing(window)
        filters = {k: params[k] for k in _SEARCH if params.get(k)}
        query = CallQuery(
            since=window.since if "since" in params or "range" in params else None,
            until=window.until if "until" in params else None,
            profile=window.profile,
            limit=_count(params, "limit", SEARCH_LIMIT, 5000),
            **filters,
        )
        return dashboard.search(query)

    async def _certificates(self, window: Window, target: object) -> dict[str, Any]:
        """Our signing certificates, the certificate cache and the CRLs, from the runtime;
        fetch failures by x5u host from the call log."""
        now = self.app.clock.now()
        statuses = await self.app.certificates.refresh(now)
        ours = [
            {
                "x5u": s.x5u,
                "spc": s.spc,
                "not_after": None if s.not_after is None else s.not_after.isoformat(),
                "days_left": s.days_left(now),
                "valid": s.valid,
                "revoked": s.revoked,
                "expired": s.expired(now),
                "detail": s.detail,
            }
            for s in statuses
        ]
        runtime = self.app.runtime
        caches = runtime.caches or (runtime.cache,)
        hits = sum(c.hits for c in caches)
        misses = sum(c.misses for c in caches)
        report = RevocationReport.of(caches, now)
        failures: list[dict[str, Any]] = []
        if target:
            try:
                store = Dashboard(open_store(str(target)))
                failures = await asyncio.to_thread(store.fetch_failures, window)
            except FileNotFoundError:
                failures = []
        last = report.last_refresh
        return {
            "window": window.as_dict(),
            "signing": ours,
            "cache": {
                "entries": sum(len(c) for c in caches),
                "hits": hits,
                "misses": misses,
                "hit_rate": None if hits + misses == 0 else hits / (hits + misses),
                "fetches": sum(c.fetches for c in caches),
                "fetch_failures": failures,
            },
            "crl": {
                "mode": report.mode.value,
                "crls": report.crls,
                "last_refresh": None if last is None else last.isoformat(),
                "age_seconds": None if last is None else (now - last).total_seconds(),
                "stale": list(report.stale),
                "refresh_failures": report.refresh_failures,
            },
        }

    async def _answer(
        self,
        send: Send,
        status: int,
        document: Any,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        await self._raw(send, status, _dumps(document), _JSON, extra)

    @staticmethod
    async def _raw(
        send: Send,
        status: int,
        body: bytes,
        content_type: bytes,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode("ascii")),
            *_SECURITY_HEADERS,
            *(extra or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _static(name: str) -> bytes:
    return resources.files("shaken.adapters.http").joinpath("static", name).read_bytes()


def openapi_paths() -> dict[str, Any]:
    """The dashboard's paths in the OpenAPI document (``/openapi.json``)."""
    security: list[dict[str, list[str]]] = [
        {"bearerAuth": []},
        {"apiKeyHeader": []},
        {"basicAuth": []},
    ]
    window = [
        ("range", "hour, day (default) or week, ending now", {"type": "string", "enum": [*RANGES]}),
        ("since", "start, Unix seconds (instead of range)", {"type": "number"}),
        ("until", "end, Unix seconds (default now)", {"type": "number"}),
        ("profile", "one profile's calls (default all)", {"type": "string"}),
    ]
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/DashboardError"}}}
    refused = {
        "400": {"description": "a parameter is not valid", "content": error},
        "401": {
            "description": "no admin API key (WWW-Authenticate: Basic)",
            "content": error,
        },
        "503": {"description": "no call log, or nothing in it yet", "content": error},
    }
    paths: dict[str, Any] = {
        "/dashboard": {
            "get": {
                "summary": "The operator's dashboard (HTML)",
                "operationId": "dashboard",
                "security": security,
                "responses": {
                    "200": {
                        "description": "the page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "401": refused["401"],
                },
            }
        }
    }
    for name, panel in PANELS.items():
        paths[f"{PREFIX}/api/{name}"] = {
            "get": {
                "summary": panel.summary,
                "operationId": f"dashboard_{name}",
                "security": security,
                "parameters": [
                    {"name": p, "in": "query", "required": False, "description": d, "schema": s}
                    for p, d, s in (*window, *panel.extra)
                ],
                "responses": {
                    "200": {
                        "description": "the panel's data",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **refused,
                },
            }
        }
    return paths


#: The components the dashboard's paths refer to.
OPENAPI_COMPONENTS: dict[str, Any] = {
    "DashboardError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    }
}
