"""The REST application: ATIS-1000082 signing and verification as a plain ASGI 3 callable.

No web framework: the API is two POST endpoints with exact, standardized error behaviour
(ATIS-1000082), and a framework's own 404/405/422 answers, body parsing
and validation would each have to be overridden to get it. The request path reads the headers
once, the body once, and answers with bytes it built itself.

Per STIR request, in this order (the first failure answers; ``schemas.ERRORS`` has the texts):

0. more than ``[server] max_in_flight`` requests in progress: 503 POL5030 with ``Retry-After``;
1. method POST, else 405 POL4050 (with ``Allow``);
2. the API key (:mod:`.auth`): none or unknown, 401 POL4010; over its rate, 429 POL4290 with
   ``Retry-After``; a key that may not verify, 403 POL4030. Verification needs no key when
   ``[server] verification_open`` is true;
3. ``Accept`` allows ``application/json``, else 406 SVC4002;
4. ``Content-Length`` present, else 411 SVC4007; at most 64 KiB, else 413 POL4130;
5. ``Content-Type: application/json``, else 415 SVC4004;
6. a body (400 SVC4000), one JSON object (400 SVC4006), the schema's members (400 SVC4001 when
   missing, SVC4005 when invalid: ATIS E1 and E2);
7. the profile: the request's (3GPP ``profileId``), else the key's first, else the global one;
   the key must be allowed it and, to sign, the calling TN (403 POL4030);
8. the service: a verification failure is HTTP 200 with ``verstat`` and the reason fields
   (E3-E19); a signature is HTTP 200 with the Identity header value.

Every response carries ``X-RequestID``: the request's when it is a usable token, else a new
one in UUID form. Anything unexpected is logged and answered 500 POL5000; the log line names
the request id, never a key or a body.

Every decision (a verification result, a signature, a refusal to sign) goes to the call log
with ``interface="rest"``; API errors are not decisions about a call and are only counted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime
from pathlib import Path
from typing import Any

from shaken.adapters.http.auth import ApiKey, Keyring, presented_key
from shaken.adapters.http.credentials import SigningCertificates, signing_credentials
from shaken.adapters.http.dashboard import DashboardEndpoints
from shaken.adapters.http.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from shaken.adapters.http.metrics import RestMetrics
from shaken.adapters.http.schemas import (
    ATIS,
    MAX_BODY_BYTES,
    THREE_GPP,
    ApiError,
    SigningRequest,
    decode_body,
    openapi_document,
    parse_signing,
    parse_verification,
    rcd_member,
    signing_body,
    verification_body,
)
from shaken.adapters.lifecycle import readiness as lifecycle_readiness
from shaken.adapters.runtime import ProfileRuntime, Runtime
from shaken.adapters.shared_state import RedisRateLimit
from shaken.adapters.store.certstore import default_cache_dir
from shaken.config import GLOBAL_PROFILE
from shaken.core.errors import SigningError
from shaken.core.policy import decide
from shaken.services.calllog import CallLog, CallRecord, CallRecordBuilder
from shaken.services.cert_cache import RevocationReport
from shaken.services.ports import Clock
from shaken.services.request_faults import request_fault
from shaken.services.signing import SigningService, signing_time

__all__ = ["ASGIApp", "RestApplication", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("shaken.rest")

_JSON = b"application/json"
_STIR = {"/stir/v1/verification": "verification", "/stir/v1/signing": "signing"}
_OTHER = {"/healthz": "healthz", "/readyz": "readyz", "/metrics": "metrics"}
_OTHER["/openapi.json"] = "openapi"


class _Disconnected(Exception):
    """The client went away before sending its whole body; nothing is answered."""


def create_app(
    runtime: Runtime,
    *,
    call_log: CallLog | None = None,
    clock: Clock | None = None,
    metrics: RestMetrics | None = None,
) -> ASGIApp:
    """The ASGI application serving ``runtime`` (see the module docstring).

    :param call_log: where decisions are recorded; None records nothing.
    :param clock: request times (default ``runtime.clock``); read once per request.
    :param metrics: the worker's REST metrics, kept across reloads (its own when omitted).
    """
    return RestApplication(runtime, call_log=call_log, clock=clock, metrics=metrics)


class _RequestIds:
    """X-RequestIDs in UUID form: a random 72-bit prefix per process and a 48-bit counter.

    Unique across processes and restarts like a UUIDv4 (what matters for an id), at a tenth
    of the cost of ``uuid.uuid4()``, which reads the OS random source on every call. A forked
    worker draws a prefix of its own.
    """

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        prefix = secrets.token_hex(10)
        self._prefix = f"{prefix[:8]}-{prefix[8:12]}-4{prefix[13:16]}-a{prefix[17:20]}-"
        self._count = itertools.count(int.from_bytes(secrets.token_bytes(4), "big"))

    def new(self) -> bytes:
        return f"{self._prefix}{next(self._count) & 0xFFFFFFFFFFFF:012x}".encode("ascii")


_IDS = _RequestIds()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_IDS.reseed)


def _request_id(value: bytes | None) -> bytes:
    """The client's X-RequestID when it is 1 to 128 visible ASCII characters, else a new one."""
    if value is not None and 0 < len(value) <= 128 and value.isascii():
        text = value.decode("ascii")
        if text.isprintable() and " " not in text:
            return value
    return _IDS.new()


def _accepts_json(value: bytes) -> bool:
    """Whether an Accept header allows ``application/json`` (RFC 9110 section 12.5.1)."""
    if value in (b"application/json", b"*/*"):
        return True
    text = value.decode("latin-1")
    if not text.strip():
        return True
    for item in text.split(","):
        media, _, params = item.partition(";")
        if media.strip().lower() not in ("application/json", "application/*", "*/*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, number = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(number)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return True
    return False


def _is_json(value: bytes) -> bool:
    """``application/json``, with a UTF-8 charset if one is named (RFC 8259 section 8.1)."""
    if value == _JSON:
        return True
    media, _, params = value.decode("latin-1").partition(";")
    if media.strip().lower() != "application/json":
        return False
    for param in params.split(";"):
        name, _, charset = param.partition("=")
        if name.strip().lower() == "charset" and charset.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    if message["type"] != "http.request":
        raise _Disconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > MAX_BODY_BYTES:
            raise ApiError("POL4130", str(MAX_BODY_BYTES))
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError("POL4130", str(MAX_BODY_BYTES))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    content_type: bytes = _JSON,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode("ascii")),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _source(key: ApiKey | None, scope: Scope) -> str | None:
    """Who asks, for the certificate cache's bound per source: the API key, else the client."""
    if key is not None:
        return f"api_key:{key.name}"
    client = scope.get("client")
    return f"rest:{client[0]}" if client else None


def _records(
    rid: bytes,
    now: datetime,
    profile: ProfileRuntime,
    client: Any,
    *,
    instance: str,
    presented_from: str | None,
    presented_to: str | None,
    request_uri: str | None = None,
) -> CallRecordBuilder:
    """The call log's records of one REST request: its request id stands for a Call-ID, the
    client for the source, and the parties the request named for the presented identities."""
    ip, port = (client[0], int(client[1])) if client else (None, None)
    return CallRecordBuilder(
        time=now.timestamp(),
        interface="rest",
        call_id=rid.decode("ascii"),
        profile=profile.name or GLOBAL_PROFILE,
        instance=instance,
        source_ip=ip,
        source_port=port,
        presented_from=presented_from,
        presented_to=presented_to,
        request_uri=request_uri,
    )


def _writable_directory(directory: Path) -> tuple[bool, str]:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".ready-") as probe:
            probe.write(b"ok")
            probe.flush()
    except OSError as exc:
        return False, f"not writable: {exc.strerror or type(exc).__name__}"
    return True, "writable"


class RestApplication:
    """The ASGI callable; :func:`create_app` is the way to make one."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        call_log: CallLog | None = None,
        clock: Clock | None = None,
        metrics: RestMetrics | None = None,
    ) -> None:
        self.runtime = runtime
        self.call_log = call_log
        self.clock = clock or runtime.clock
        server = runtime.settings.server_settings
        self.schema_mode = server.api_schema
        self.error_schema = THREE_GPP if self.schema_mode == THREE_GPP else ATIS
        self.verification_open = server.verification_open
        self.instance = runtime.instance
        self.max_in_flight: int | None = server.max_in_flight
        self.keyring = Keyring.from_settings(runtime.settings.api_keys)
        if runtime.shared is not None:
            self.keyring.shared = RedisRateLimit(runtime.shared)
        self.certificates = SigningCertificates(runtime)
        self.metrics = metrics or RestMetrics()
        self.metrics.attach(runtime, self.certificates, self.clock)
        document = openapi_document(
            schema=self.schema_mode, verification_open=self.verification_open
        )
        self._openapi = json.dumps(document, separators=(",", ":")).encode("utf-8")
        self._in_flight = 0
        self._log_failed = False
        self.dashboard = DashboardEndpoints(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            endpoint = _STIR.get(scope["path"])
            if endpoint is not None:
                await self._stir(endpoint, scope, receive, send)
            elif self.dashboard.handles(scope["path"]):
                await self.dashboard(scope, receive, send)
            else:
                await self._other(scope, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ----------------------------------------------------------------------- STIR endpoints

    async def _stir(self, endpoint: str, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        accept = content_type = length = authorization = api_key = request_id = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
            elif name == b"accept":
                accept = value
            elif name == b"authorization":
                authorization = value
            elif name == b"x-api-key":
                api_key = value
            elif name == b"x-requestid":
                request_id = value
        rid = _request_id(request_id)
        headers = [(b"x-requestid", rid)]
        busy = self.max_in_flight is not None and self._in_flight >= self.max_in_flight
        self._in_flight += 1
        try:
            if busy:
                raise ApiError("POL5030", "1", retry_after=1)
            if scope["method"] != "POST":
                raise ApiError("POL4050", allow="POST")
            now = self.clock.now()
            key = self._authenticate(endpoint, authorization, api_key)
            wait = 0
            if key is not None:
                wait = await self.keyring.admit_shared(key, now.timestamp())
            if wait:
                raise ApiError("POL4290", str(wait), retry_after=wait)
            if endpoint == "verification" and key is not None:
                self._may_verify(key)
            if accept is not None and not _accepts_json(accept):
                shown = accept.decode("latin-1")[:100]
                raise ApiError("SVC4002", shown if shown.isprintable() else "?")
            if length is None:
                raise ApiError("SVC4007")
            if not length.isdigit():
                raise ApiError("SVC4007")
            if int(length) > MAX_BODY_BYTES:
                raise ApiError("POL4130", str(MAX_BODY_BYTES))
            if content_type is None or not _is_json(content_type):
                raise ApiError("SVC4004", "application/json")
            document = decode_body(await _read_body(receive))
            client = scope.get("client")
            if endpoint == "verification":
                source = _source(key, scope)
                body = await self._verification(document, key, rid, now, started, source, client)
            else:
                body = await self._signing(document, key, rid, now, started, client)
            status = 200
        except ApiError as error:
            status = error.status
            body = error.body(error.schema or self.error_schema)
            if error.retry_after is not None:
                headers.append((b"retry-after", str(error.retry_after).encode("ascii")))
            if error.allow is not None:
                headers.append((b"allow", error.allow.encode("ascii")))
            if error.status == 401:
                headers.append((b"www-authenticate", b'Bearer realm="shaken"'))
            self.metrics.count(endpoint, "error", error.message_id)
        except _Disconnected:
            return
        except Exception:
            # The traceback is for the operator; the client gets the ATIS internal error.
            log.exception("internal error answering %s (X-RequestID %s)", endpoint, rid.decode())
            status = 500
            body = ApiError("POL5000").body(self.error_schema)
            self.metrics.count(endpoint, "error", "POL5000")
        finally:
            self._in_flight -= 1
        await _respond(send, status, body, headers)

    def _authenticate(
        self, endpoint: str, authorization: bytes | None, api_key: bytes | None
    ) -> ApiKey | None:
        """The key the request presents (None: verification open to all); its rate and its
        right to verify are checked next, in that order."""
        presented = presented_key(authorization, api_key)
        if presented is None:
            if endpoint == "verification" and self.verification_open:
                return None
            raise ApiError("POL4010")
        key = self.keyring.authenticate(presented)
        if key is None:
            raise ApiError("POL4010")
        return key

    def _may_verify(self, key: ApiKey) -> None:
        if not key.may_verify and not self.verification_open:
            raise ApiError("POL4030", "this API key may not verify")

    def _profile(
        self, key: ApiKey | None, requested: str | None, schema: str, *, signing: bool
    ) -> ProfileRuntime:
        """The profile a request runs under: the one it names, else the first of the key's
        ``profiles`` that does the job (signs, or verifies), else the global one."""
        profiles = self.runtime.profiles
        job = "sign" if signing else "verify"

        def does(profile: ProfileRuntime) -> bool:
            return profile.signs if signing else profile.verifies

        if requested is not None:
            if key is not None and not key.may_use(requested):
                raise ApiError(
                    "POL4030", f"this API key may not use the profile {requested}", schema=schema
                )
            found = profiles.get(requested)
            if found is None:
                raise ApiError("SVC4005", "profileId", "no such profile", schema=schema)
            if not does(found):
                raise ApiError("POL4030", f"the profile {requested} does not {job}", schema=schema)
            return found
        names: tuple[str | None, ...] = (
            key.profiles if key is not None and key.profiles else (None,)
        )
        for name in names:
            candidate = profiles.get(name)
            if candidate is not None and does(candidate):
                return candidate
        listed = ", ".join(name or GLOBAL_PROFILE for name in names)
        raise ApiError(
            "POL4030",
            f"none of this API key's profiles ({listed}) may {job}",
            schema=schema,
        )

    def _record(self, record: CallRecord) -> None:
        if self.call_log is None:
            return
        try:
            self.call_log.record(record)
        except Exception:
            # The CallLog contract says record() never raises; if one does, the API still
            # answers, and the operator hears about it once.
            if not self._log_failed:
                self._log_failed = True
                log.exception("the call log failed to record a REST decision")

    async def _verification(
        self,
        document: dict[str, Any],
        key: ApiKey | None,
        rid: bytes,
        now: datetime,
        started: float,
        source: str | None = None,
        client: Any = None,
    ) -> bytes:
        request = parse_verification(document, self.schema_mode)
        profile = self._profile(key, request.profile_id, request.schema, signing=False)
        verifier = profile.verifier
        assert verifier is not None  # profile.verifies
        context = request.context()
        begun = time.perf_counter()
        result = await verifier.verify(context, now=now, source=source)
        self.metrics.observe_verification(time.perf_counter() - begun)
        if request.schema == ATIS:
            fault = request_fault(result)
            if fault is not None:  # an invalid request parameter, not a verification result
                raise ApiError("SVC4005", fault.parameter, fault.detail, schema=ATIS)
        reason = result.reason
        self.metrics.count("verification", result.outcome.value, reason.value if reason else "")
        if request.schema == ATIS and self.call_log is None and rcd_member(result) is None:
            return verification_body(request, result, display_name=None)
        # The action matters to the call log, the 3GPP display name and the brand presented.
        decision = decide(result, profile.actions, display_name=request.display_name)
        body = verification_body(
            request, result, display_name=decision.display_name, call_info=decision.call_info
        )
        if self.call_log is not None:
            records = _records(
                rid,
                now,
                profile,
                client,
                instance=self.instance,
                presented_from=request.orig,
                presented_to=request.to_tn or request.to_uri,
                request_uri=request.request_uri,
            )
            record = records.verified(
                result,
                decision,
                orig=request.orig,
                dest=request.to_tn or request.to_uri,
                sip_code=result.sip_code,
                latency_ms=(time.perf_counter() - started) * 1000.0,
            )
            self._record(record)
        return body

    async def _signing(
        self,
        document: dict[str, Any],
        key: ApiKey | None,
        rid: bytes,
        now: datetime,
        started: float,
        client: Any = None,
    ) -> bytes:
        request = parse_signing(document, self.schema_mode)
        assert key is not None  # signing always authenticates
        profile = self._profile(key, request.profile_id, request.schema, signing=True)
        signer = profile.signer
        assert signer is not None  # profile.signs
        try:
            await self._authorize(key, signer, request, now)
            freshness = profile.effective.verification_profile
            when = signing_time(request.iat, now=now, freshness=freshness)
            try:
                signed = signer.sign(
                    orig=request.orig,
                    dest=request.dest,
                    now=when,
                    attest=request.attest,
                    origid=request.origid,
                    rcd=request.rcd,
                    crn=request.crn,
                )
            except SigningError as exc:
                raise ApiError("POL4030", str(exc), schema=request.schema) from None
        except ApiError as refused:
            self._refused(request, profile, refused, rid, now, started, client)
            raise
        self.metrics.count("signing", "signed", "")
        latency_ms = (time.perf_counter() - started) * 1000.0
        records = self._signing_records(request, rid, now, profile, client)
        self._record(records.signed(signed, latency_ms=latency_ms))
        return signing_body(
            request,
            signed.identity,
            attest=signed.attest,
            why=signed.why,
            rcd_identity=signed.rcd_identity,
        )

    async def _authorize(
        self, key: ApiKey, signer: SigningService, request: SigningRequest, now: datetime
    ) -> None:
        """A key signs for its ``tns``, and for TNs signed with a certificate of its ``spcs``."""
        tn = request.orig
        if tn in key.tns:
            return
        denied = ApiError("POL4030", f"this API key may not sign for {tn}", schema=request.schema)
        if not key.spcs:
            raise denied
        try:
            credential, _ = signer.policy.choose(tn)
        except SigningError as exc:
            raise ApiError("POL4030", str(exc), schema=request.schema) from None
        status = await self.certificates.status(credential.x5u, now)
        if status.spc is None or status.spc not in key.spcs:
            raise denied

    def _signing_records(
        self,
        request: SigningRequest,
        rid: bytes,
        now: datetime,
        profile: ProfileRuntime,
        client: Any,
    ) -> CallRecordBuilder:
        return _records(
            rid,
            now,
            profile,
            client,
            instance=self.instance,
            presented_from=request.orig,
            presented_to=",".join(request.dest),
        )

    def _refused(
        self,
        request: SigningRequest,
        profile: ProfileRuntime,
        refused: ApiError,
        rid: bytes,
        now: datetime,
        started: float,
        client: Any = None,
    ) -> None:
        if refused.message_id != "POL4030":
            return
        record = self._signing_records(request, rid, now, profile, client).unsigned(
            "not_signed",
            reason=refused.variables[0] if refused.variables else refused.message_id,
            orig=request.orig,
            dest=request.dest,
            allowed=False,
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )
        self._record(record)

    # ------------------------------------------------------------------- health and friends

    async def _other(self, scope: Scope, send: Send) -> None:
        endpoint = _OTHER.get(scope["path"])
        headers = [(b"x-requestid", _request_id(None))]
        if endpoint is None:
            self.metrics.count("other", "error", "SVC4003")
            error = ApiError("SVC4003")
            await _respond(send, 404, error.body(self.error_schema), headers)
            return
        if scope["method"] != "GET":
            self.metrics.count(endpoint, "error", "POL4050")
            error = ApiError("POL4050")
            headers.append((b"allow", b"GET"))
            await _respond(send, 405, error.body(self.error_schema), headers)
            return
        content_type = _JSON
        status = 200
        try:
            if endpoint == "healthz":
                body = b'{"status":"ok"}'
            elif endpoint == "readyz":
                ready, checks = await self.readiness()
                status = 200 if ready else 503
                state = "ready" if ready else "not ready"
                if ready and any(c.get("degraded") for c in checks.values()):
                    # Serving, with a shared layer's local form standing in: still a 200.
                    state = "degraded"
                body = json.dumps({"status": state, "checks": checks}).encode("utf-8")
            elif endpoint == "metrics":
                await self.certificates.refresh(self.clock.now())
                body = self.metrics.render()
                content_type = METRICS_CONTENT_TYPE
            else:
                body = self._openapi
        except Exception:
            log.exception("internal error answering %s", endpoint)
            status, body, content_type = 500, ApiError("POL5000").body(self.error_schema), _JSON
        self.metrics.count(endpoint, "ok" if status == 200 else "error", "")
        await _respond(send, status, body, headers, content_type)

    async def readiness(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """Whether this server can do its work: trust anchors for verifying, keys for signing,
        a writable certificate cache directory, a writable call log, revocation data that is
        current enough for the revocation mode, and none of our signing certificates revoked
        or expired (issue 9 item 3)."""
        profiles = self.runtime.profiles.values()
        verifies = any(p.verifies for p in profiles)
        signs = any(p.signs for p in profiles)
        checks: dict[str, dict[str, Any]] = {}

        def check(name: str, ok: bool, detail: str) -> None:
            checks[name] = {"ok": ok, "detail": detail}

        check(
            "service",
            verifies or signs,
            "signing and verification are both off" if not (verifies or signs) else "configured",
        )
        anchors = self.runtime.trust.current.anchors
        count = 0 if anchors is None else len(anchors.certificates)
        if verifies:
            check("trust_anchors", count > 0, f"{count} STI-CA root(s) loaded")
        else:
            check("trust_anchors", True, "verification is off")
        keys = len(signing_credentials(self.runtime))
        if signs:
            check("signing_keys", keys > 0, f"{keys} signing key(s) loaded")
        else:
            check("signing_keys", True, "signing is off")
        now = self.clock.now()
        if verifies:
            check("revocation", *self._revocation_ready(now))
        else:
            check("revocation", True, "verification is off")
        if signs:
            check("signing_certificates", *await self._signing_certificates_ready(now))
        else:
            check("signing_certificates", True, "signing is off")
        configured = self.runtime.profiles[None].effective.verification_settings.cache_dir
        cache_dir = Path(configured) if configured else default_cache_dir()
        check("certificate_cache", *await asyncio.to_thread(_writable_directory, cache_dir))
        check("call_log", *await self._call_log_ready())
        shared = self.runtime.shared
        if shared is not None:
            await shared.probe()
            check("shared_state", True, shared.status())
        for item in checks.values():
            if item["ok"] and str(item["detail"]).startswith("degraded"):
                item["degraded"] = True
        certificate = await asyncio.to_thread(
            lifecycle_readiness, self.runtime.settings, self.clock.now()
        )
        if certificate is not None:
            check("certificate_lifecycle", *certificate)
        return all(c["ok"] for c in checks.values()), checks

    def _revocation_ready(self, now: datetime) -> tuple[bool, str]:
        """Stale revocation data is reported; with ``hard`` every chain then fails: not ready."""
        report = RevocationReport.of(self.runtime.caches or (self.runtime.cache,), now)
        mode = report.mode.value
        if mode == "off":
            return True, "off: no CRL is checked"
        detail = f"{mode}: {report.crls} CRL(s) held"
        if report.last_refresh is not None:
            detail += f", last refreshed {report.last_refresh.isoformat()}"
        if report.unchecked_held:
            detail += f"; {report.unchecked_held} signer chain(s) accepted without a status"
        if report.stale:
            detail += "; stale: " + "; ".join(report.stale)
        return not (report.stale and mode == "hard"), detail

    async def _signing_certificates_ready(self, now: datetime) -> tuple[bool, str]:
        """Our own signing certificates: not ready while one is revoked or expired."""
        statuses = await self.certificates.refresh(now)
        bad = [
            f"{s.x5u}: {'revoked' if s.revoked else 'expired'} ({s.detail})"
            for s in statuses
            if s.revoked or s.expired(now)
        ]
        if bad:
            return False, "; ".join(bad)
        return True, f"{len(statuses)} signing certificate(s) neither revoked nor expired"

    async def _call_log_ready(self) -> tuple[bool, str]:
        if self.call_log is None:
            return True, "not recording"
        return self.call_log.healthy()
