"""An ACME client (RFC 8555) for STI-CAs: TNAuthList identifiers (RFC 9448), tkauth-01 (RFC 9447).

The flow: the directory; an account for our P-256 account key (``newAccount``, or the account
URL a CA issued out of band); ``newOrder`` with one ``TNAuthList`` identifier; its
authorization's ``tkauth-01`` challenge (``tkauth-type`` ``atc``) answered with the SPC token the
STI-PA signed for our account key; ``finalize`` with a CSR carrying the same TNAuthList; the
certificate chain as ``application/pem-certificate-chain``. Every request is a JWS with a fresh
``Replay-Nonce``; a ``badNonce`` error is retried with the nonce it carries (RFC 8555 section
6.5); polling honours ``Retry-After`` and is bounded (``poll_timeout``); every failure is an
:class:`AcmeProblem` naming the request and the server's problem document type.

What deployed STI-CAs do differently is in :class:`AcmeSettings`, RFC behaviour by default:
the identifier encoding (``base64`` for iconectiv and Peeringhub), the fingerprint of the
account key in the SPC token request (SPKI DER digest for Peeringhub), the challenge answer's
member (``atc``, or ``tkauth``), the POST-as-GET signing input (``protected_only`` for
Peeringhub), a ``kid`` inside the new-account JWK, and an account URL issued by the CA.

Why a small client of our own over httpx and ``cryptography`` rather than certbot's ``acme``:
``ClientV2.new_order`` derives identifiers from the CSR's DNS names only, so a TNAuthList order
has to go through the private ``ClientV2._post``; ``messages.Order`` has no ``notBefore`` or
``notAfter``; the identifier type must be registered into a module-level table at import time;
its JWS wrapper always signs ``header.payload``, which Peeringhub's POST-as-GET rule does not;
and it pulls in josepy and pyOpenSSL. The protocol subset an STI-CA speaks is a few hundred
lines over the JWS and fingerprint helpers of :mod:`shaken.core.acme`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from shaken.core.acme import encode_tnauthlist, fingerprint, jwk_of, sign_jws
from shaken.core.certs import TNAuthList
from shaken.core.errors import AcquisitionError
from shaken.core.jws import PrivateKey, b64url_encode

__all__ = [
    "AcmeClient",
    "AcmeProblem",
    "AcmeSettings",
    "TokenSource",
]

log = logging.getLogger("shaken.acme")

JOSE = "application/jose+json"
PEM_CHAIN = "application/pem-certificate-chain"
PROBLEM = "urn:ietf:params:acme:error:"

#: Given (tkvalue, fingerprint), the SPC token to answer the challenge with.
TokenSource = Callable[[str, str], Awaitable[str]]
Sleep = Callable[[float], Awaitable[None]]


class AcmeProblem(AcquisitionError):
    """An ACME server answered with an error (RFC 8555 section 6.7 problem document)."""

    def __init__(self, what: str, status: int, problem: Mapping[str, Any] | None) -> None:
        self.status = status
        self.type = str((problem or {}).get("type") or "")
        self.detail = str((problem or {}).get("detail") or "")
        subproblems = (problem or {}).get("subproblems")
        extra = ""
        if isinstance(subproblems, list) and subproblems:
            parts = [
                f"{s.get('type', '?')}: {s.get('detail', '')}"
                for s in subproblems
                if isinstance(s, dict)
            ]
            extra = " (" + "; ".join(parts) + ")"
        kind = self.type or f"HTTP {status} without a problem document"
        detail = f": {self.detail}" if self.detail else ""
        super().__init__(f"{what}: {kind}{detail}{extra}")

    @property
    def short_type(self) -> str:
        return self.type.removeprefix(PROBLEM)


@dataclass(frozen=True, slots=True, kw_only=True)
class AcmeSettings:
    """The ``[acme]`` section as the client uses it (see ``shaken.config.schema``)."""

    directory: str
    tnauthlist_encoding: str = "base64url"
    fingerprint: str = "jwk_thumbprint"
    fingerprint_case: str = "upper"
    challenge_key: str = "atc"
    post_as_get: str = "rfc"
    jwk_kid: str | None = None
    account_url: str | None = None
    contact: tuple[str, ...] = ()
    timeout: float = 30.0
    poll_timeout: float = 300.0
    poll_interval: float = 2.0
    bad_nonce_retries: int = 3
    tls_ca_file: str | None = None


@dataclass(slots=True)
class _Response:
    status: int
    headers: httpx.Headers
    body: bytes
    url: str

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError:
            raise AcquisitionError(f"ACME {self.url} answered something that is not JSON") from None
        if not isinstance(value, dict):
            raise AcquisitionError(f"ACME {self.url} answered JSON that is not an object")
        return value

    @property
    def location(self) -> str | None:
        value = self.headers.get("location")
        return str(value) if value is not None else None


def _retry_after(headers: httpx.Headers, default: float, now: datetime | None = None) -> float:
    """Seconds ``Retry-After`` asks for (delta-seconds or an HTTP date), else ``default``."""
    value = headers.get("retry-after")
    if value is None:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None or now is None:
        return default
    return max(0.0, (when - now).total_seconds())


def _ssl_context(tls_ca_file: str | None) -> ssl.SSLContext:
    if tls_ca_file is not None:
        return ssl.create_default_context(cafile=tls_ca_file)
    import certifi  # noqa: PLC0415  (httpx's own CA bundle)

    return ssl.create_default_context(cafile=certifi.where())


@dataclass(slots=True)
class Order:
    url: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.data.get("status", ""))


class AcmeClient:
    """One ACME account at one STI-CA. Use as ``async with``; :meth:`obtain` does it all."""

    def __init__(
        self,
        settings: AcmeSettings,
        account_key: PrivateKey,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self._key = account_key
        self._sleep = sleep
        self._client = httpx.AsyncClient(
            verify=_ssl_context(settings.tls_ca_file),
            timeout=httpx.Timeout(settings.timeout),
            follow_redirects=False,
            transport=transport,
        )
        self._directory: dict[str, Any] | None = None
        self._nonce: str | None = None
        self.account_url: str | None = settings.account_url
        #: Seconds spent waiting on the server (Retry-After, polling), for the bound and tests.
        self.waited = 0.0

    async def __aenter__(self) -> AcmeClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    @property
    def account_fingerprint(self) -> str:
        """The account key's fingerprint as this CA's STI-PA expects it in the SPC token."""
        return fingerprint(
            self._key.public_key(),
            mode=self.settings.fingerprint,
            case=self.settings.fingerprint_case,
        )

    # ------------------------------------------------------------------------- transport

    async def _send(
        self, method: str, url: str, *, content: bytes | None = None, accept: str | None = None
    ) -> _Response:
        headers = {"content-type": JOSE} if content is not None else {}
        if accept is not None:
            headers["accept"] = accept
        try:
            answer = await self._client.request(method, url, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise AcquisitionError(
                f"ACME {method} {url} failed: {type(exc).__name__}: {exc}"
            ) from None
        nonce = answer.headers.get("replay-nonce")
        if nonce:
            self._nonce = nonce
        return _Response(answer.status_code, answer.headers, answer.content, url)

    async def directory(self) -> dict[str, Any]:
        if self._directory is None:
            response = await self._send("GET", self.settings.directory)
            if response.status != 200:
                raise AcmeProblem(
                    f"ACME directory {self.settings.directory}", response.status, _problem(response)
                )
            data = response.json()
            for name in ("newNonce", "newAccount", "newOrder"):
                if not isinstance(data.get(name), str):
                    raise AcquisitionError(
                        f"the ACME directory {self.settings.directory} has no {name} URL"
                    )
            self._directory = data
        return self._directory

    async def _new_nonce(self) -> str:
        directory = await self.directory()
        response = await self._send("HEAD", directory["newNonce"])
        if self._nonce is None:
            raise AcquisitionError(f"ACME newNonce {directory['newNonce']} gave no Replay-Nonce")
        if response.status not in (200, 204):
            raise AcmeProblem(f"ACME newNonce {directory['newNonce']}", response.status, None)
        return self._nonce

    async def post(
        self,
        url: str,
        payload: Mapping[str, Any] | None,
        *,
        what: str,
        use_jwk: bool = False,
        accept: str | None = None,
        expect: tuple[int, ...] = (200, 201),
    ) -> _Response:
        """POST a JWS to ``url``; ``payload`` None is a POST-as-GET (RFC 8555 section 6.3).

        Retries ``badNonce`` with the fresh nonce of the error answer, and a 503 with a
        ``Retry-After`` within the polling bound.
        """
        attempts = 0
        busy = 0
        while True:
            nonce = self._nonce or await self._new_nonce()
            self._nonce = None  # every nonce is good for one request
            protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
            if use_jwk or self.account_url is None:
                jwk: dict[str, Any] = jwk_of(self._key.public_key())
                if self.settings.jwk_kid:
                    jwk["kid"] = self.settings.jwk_kid
                protected["jwk"] = jwk
            else:
                protected["kid"] = self.account_url
            body = sign_jws(
                self._key, protected, payload, empty_payload_signing=self.settings.post_as_get
            )
            response = await self._send(
                "POST", url, content=json.dumps(body).encode(), accept=accept
            )
            if response.status in expect:
                return response
            problem = _problem(response)
            kind = str((problem or {}).get("type", ""))
            if kind == PROBLEM + "badNonce" and attempts < self.settings.bad_nonce_retries:
                attempts += 1
                log.info("ACME %s: badNonce, retrying with a fresh nonce (%d)", what, attempts)
                continue
            if response.status == 503 and busy < 3:
                delay = _retry_after(response.headers, self.settings.poll_interval)
                if self.waited + delay <= self.settings.poll_timeout:
                    busy += 1
                    await self._wait(delay)
                    continue
            raise AcmeProblem(f"ACME {what} ({url})", response.status, problem)

    async def _wait(self, seconds: float) -> None:
        seconds = max(0.0, min(seconds, self.settings.poll_timeout))
        self.waited += seconds
        await self._sleep(seconds)

    # --------------------------------------------------------------------------- account

    async def account(self) -> str:
        """The account URL: the configured one, or from ``newAccount`` (created once)."""
        if self.account_url is not None:
            return self.account_url
        directory = await self.directory()
        payload: dict[str, Any] = {"termsOfServiceAgreed": True}
        if self.settings.contact:
            payload["contact"] = list(self.settings.contact)
        response = await self.post(
            directory["newAccount"], payload, what="newAccount", use_jwk=True
        )
        if response.location is None:
            raise AcquisitionError("ACME newAccount answered no Location (the account URL)")
        status = response.json().get("status")
        if status not in (None, "valid"):
            raise AcquisitionError(f"the ACME account {response.location} is {status!r}")
        self.account_url = response.location
        return response.location

    # ----------------------------------------------------------------------------- order

    async def new_order(
        self, tnauthlist: TNAuthList, *, not_after: datetime | None = None
    ) -> Order:
        directory = await self.directory()
        payload: dict[str, Any] = {
            "identifiers": [
                {
                    "type": "TNAuthList",
                    "value": encode_tnauthlist(tnauthlist, self.settings.tnauthlist_encoding),
                }
            ]
        }
        if not_after is not None:
            payload["notAfter"] = not_after.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        response = await self.post(directory["newOrder"], payload, what="newOrder", expect=(201,))
        if response.location is None:
            raise AcquisitionError("ACME newOrder answered no Location (the order URL)")
        order = Order(response.location, response.json())
        if order.status == "invalid":
            raise AcquisitionError(f"ACME order {order.url} is invalid: {_error_of(order.data)}")
        return order

    async def _get(self, url: str, what: str) -> dict[str, Any]:
        return (await self.post(url, None, what=what)).json()

    async def _poll(
        self, url: str, what: str, *, waiting: tuple[str, ...], first: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """POST-as-GET ``url`` while its status is one of ``waiting``, within the bound."""
        data = first if first is not None else await self._get(url, what)
        while data.get("status") in waiting:
            if self.waited >= self.settings.poll_timeout:
                raise AcquisitionError(
                    f"ACME {what} {url} is still {data.get('status')!r} after "
                    f"{self.waited:.0f} s (poll_timeout {self.settings.poll_timeout:.0f} s)"
                )
            response = await self.post(url, None, what=what)
            data = response.json()
            if data.get("status") in waiting:
                await self._wait(_retry_after(response.headers, self.settings.poll_interval))
        return data

    async def authorize(self, order: Order, tokens: TokenSource) -> None:
        """Answer each pending authorization's tkauth-01 challenge with an SPC token."""
        for authz_url in order.data.get("authorizations", []):
            authz = await self._get(authz_url, "authorization")
            if authz.get("status") == "valid":
                continue
            challenge = _tkauth_challenge(authz, authz_url)
            value = str(authz.get("identifier", {}).get("value", ""))
            token = await tokens(value, self.account_fingerprint)
            response = await self.post(
                str(challenge["url"]), {self.settings.challenge_key: token}, what="challenge"
            )
            del token
            log.info("ACME tkauth-01 challenge answered (%s)", challenge["url"])
            first = response.json()
            if first.get("status") == "invalid":
                raise AcquisitionError(
                    f"ACME tkauth-01 challenge {challenge['url']} failed: {_error_of(first)}"
                )
            final = await self._poll(authz_url, "authorization", waiting=("pending", "processing"))
            if final.get("status") != "valid":
                detail = _error_of(final)
                for item in final.get("challenges", []):
                    if isinstance(item, dict) and item.get("error"):
                        detail = _error_of(item)
                raise AcquisitionError(
                    f"ACME authorization {authz_url} is {final.get('status')!r}: {detail}"
                )

    async def finalize(self, order: Order, csr_der: bytes) -> Order:
        data = await self._poll(order.url, "order", waiting=("pending",), first=order.data)
        if data.get("status") != "ready":
            raise AcquisitionError(
                f"ACME order {order.url} is {data.get('status')!r}, not ready: {_error_of(data)}"
            )
        try:
            response = await self.post(
                str(data["finalize"]), {"csr": b64url_encode(csr_der)}, what="finalize"
            )
        except AcmeProblem as problem:
            if problem.short_type == "badCSR":
                raise AcquisitionError(f"the CA refused the CSR: {problem}") from None
            raise
        done = await self._poll(order.url, "order", waiting=("processing",), first=response.json())
        if done.get("status") != "valid" or not isinstance(done.get("certificate"), str):
            raise AcquisitionError(
                f"ACME order {order.url} is {done.get('status')!r} after finalize: "
                f"{_error_of(done)}"
            )
        return Order(order.url, done)

    async def certificate(self, order: Order) -> bytes:
        url = str(order.data["certificate"])
        response = await self.post(url, None, what="certificate download", accept=PEM_CHAIN)
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind and kind != PEM_CHAIN:
            raise AcquisitionError(
                f"ACME certificate {url} came as {kind!r}, not {PEM_CHAIN} (RFC 8555 7.4.2)"
            )
        return response.body

    async def obtain(
        self,
        tnauthlist: TNAuthList,
        csr_der: bytes,
        tokens: TokenSource,
        *,
        not_after: datetime | None = None,
    ) -> bytes:
        """The whole flow; returns the PEM chain the CA issued (not yet validated)."""
        await self.account()
        order = await self.new_order(tnauthlist, not_after=not_after)
        await self.authorize(order, tokens)
        order = await self.finalize(order, csr_der)
        return await self.certificate(order)


def _problem(response: _Response) -> dict[str, Any] | None:
    try:
        value = json.loads(response.body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _error_of(data: Mapping[str, Any]) -> str:
    error = data.get("error")
    if isinstance(error, dict):
        kind = str(error.get("type", "")) or "error"
        detail = error.get("detail")
        return f"{kind}: {detail}" if detail else kind
    return "no error document"


def _tkauth_challenge(authz: Mapping[str, Any], url: str) -> dict[str, Any]:
    """The ``tkauth-01`` challenge with ``tkauth-type`` ``atc`` (RFC 9448 section 5)."""
    identifier = authz.get("identifier", {})
    if not isinstance(identifier, dict) or identifier.get("type") != "TNAuthList":
        raise AcquisitionError(f"ACME authorization {url} is not for a TNAuthList identifier")
    offered = []
    for challenge in authz.get("challenges", []):
        if not isinstance(challenge, dict):
            continue
        offered.append(str(challenge.get("type")))
        if (
            challenge.get("type") == "tkauth-01"
            and challenge.get("tkauth-type", "atc") == "atc"
            and isinstance(challenge.get("url"), str)
        ):
            if challenge.get("status") == "invalid":
                raise AcquisitionError(
                    f"ACME tkauth-01 challenge {challenge['url']} is invalid: "
                    f"{_error_of(challenge)}"
                )
            return challenge
    raise AcquisitionError(
        f"ACME authorization {url} offers no tkauth-01 (atc) challenge, only {offered}"
    )
