"""A test ACME STI-CA: RFC 8555 with TNAuthList (RFC 9448) and tkauth-01 (RFC 9447), strictly.

TEST MATERIAL: it issues from a :class:`~shaken.toolkit.ca.TestCa`, whose root no real
verifier trusts.

Lenient in what deployed clients send, strict in what they prove:

* accepted: the identifier value and ``tkvalue`` in base64url or padded base64; the
  fingerprint over the JWK thumbprint or the SPKI DER, either case; the challenge answer as
  ``{"atc": ...}`` or ``{"tkauth": ...}``; POST-as-GET signed over ``protected.`` or
  ``protected`` alone; a ``kid`` member inside the new-account JWK;
* checked on every request (RFC 8555 section 6): ``application/jose+json``, ES256, a nonce this
  server issued and nobody used (else ``badNonce`` with a fresh one), ``url`` equal to the
  request URL, ``jwk`` only for newAccount and ``kid`` naming an account otherwise, the
  signature;
* checked on the SPC token (RFC 9447 section 3, RFC 9448 section 4): an ES256 JWT whose
  ``x5u`` serves a certificate chaining to a configured STI-PA root and verifying the
  signature; ``exp`` in the future; a ``jti`` never seen before (replays refused); ``atc``
  with ``tktype`` TNAuthList and a ``tkvalue`` equal to the order's identifier; a fingerprint
  of *this* account's key;
* checked on finalize: a CSR that verifies, with a P-256 key and a TNAuthList equal to the
  order's identifier (else ``badCSR``); with ``unique_subject`` (Peeringhub's rule) a subject
  no earlier certificate had.

Fault switches for tests of the client's error paths: ``bad_nonce_every`` refuses every Nth
nonce as ``badNonce``; ``processing_polls`` keeps a finalized order ``processing`` with a
``Retry-After`` for that many polls; ``issue_for_other_key`` issues the certificate for a key
the client does not hold; ``refuse_csr`` refuses every CSR with ``badCSR``.

Routes, under ``/acme``: ``directory``, ``new-nonce``, ``new-account``, ``new-order``,
``acct/N``, ``order/N``, ``authz/N``, ``chall/N``, ``finalize/N``, ``cert/N``.
"""

from __future__ import annotations

import itertools
import secrets
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from shaken.core.acme import (
    Jws,
    decode_tnauthlist_value,
    fingerprint_matches,
    jwk_public_key,
    parse_jws,
    read_atc_token,
)
from shaken.core.certs import TNAUTHLIST_OID, TNAuthList, load_certificates
from shaken.core.chain import TrustAnchors, validate_chain
from shaken.core.errors import CertificateError, ChainError, ConfigurationError
from shaken.core.jws import PublicKey, b64url_decode, b64url_encode, generate_private_key
from shaken.toolkit.ca import TestCa
from shaken.toolkit.httpjson import JsonServer, Reply, Request, Route
from shaken.toolkit.x509build import build_csr

__all__ = ["AcmeStiCa"]

ERR = "urn:ietf:params:acme:error:"
PEM_CHAIN = "application/pem-certificate-chain"
AUTHZ_LIFETIME = timedelta(days=7)


@dataclass(slots=True)
class _Account:
    url: str
    key: PublicKey
    jwk: dict[str, Any]
    status: str = "valid"


@dataclass(slots=True)
class _Order:
    id: str
    account: str
    tnauthlist: TNAuthList
    identifier: dict[str, str]
    expires: datetime
    not_after: datetime | None
    status: str = "pending"
    authz: str = ""
    certificate: str | None = None
    error: dict[str, Any] | None = None
    polls_left: int = 0


@dataclass(slots=True)
class _Authz:
    id: str
    order: str
    status: str = "pending"
    challenge: dict[str, Any] = field(default_factory=dict)


class _Problem(Exception):
    def __init__(self, kind: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.status = kind, detail, status


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AcmeStiCa(JsonServer):
    """An ACME server issuing from ``ca`` (see the module docstring).

    ``sti_pa_roots`` are the STI-PA certificates SPC tokens must chain to; ``tls_ca_file`` the
    CA of the STI-PA's TLS certificate when it is a lab's (else the system's); ``now`` where
    the server reads the time; ``token_authority`` the STI-PA URL the challenges name.
    """

    name = "acme"

    def __init__(
        self,
        ca: TestCa,
        *,
        now: Callable[[], datetime],
        sti_pa_roots: Sequence[x509.Certificate],
        token_authority: str,
        tls_ca_file: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        unique_subject: bool = False,
        bad_nonce_every: int = 0,
        processing_polls: int = 0,
        issue_for_other_key: bool = False,
        refuse_csr: str | None = None,
        log: TextIO | None = None,
    ) -> None:
        if not sti_pa_roots:
            raise ConfigurationError("the ACME STI-CA needs the STI-PA root to check tokens by")
        self.ca = ca
        self.now = now
        self.anchors = TrustAnchors(certificates=tuple(sti_pa_roots))
        self.token_authority = token_authority
        self.unique_subject = unique_subject
        self.bad_nonce_every = bad_nonce_every
        self.processing_polls = processing_polls
        self.issue_for_other_key = issue_for_other_key
        self.refuse_csr = refuse_csr
        self._tls = ssl.create_default_context(cafile=str(tls_ca_file) if tls_ca_file else None)
        self._ids = itertools.count(1)
        self._nonces: set[str] = set()
        self._nonce_count = 0
        self.accounts: dict[str, _Account] = {}
        self.orders: dict[str, _Order] = {}
        self.authzs: dict[str, _Authz] = {}
        self.certificates: dict[str, bytes] = {}
        #: jti -> exp of every SPC token accepted (replay protection, RFC 9447 section 3).
        self.seen_jti: dict[str, int] = {}
        self.subjects: set[str] = set()
        #: What each challenge answer was keyed by and each POST-as-GET signed, for tests.
        self.variants: set[str] = set()
        self._pending_key: PublicKey | None = None  # newAccount's key (handlers run locked)
        routes: list[Route] = [
            ("GET", r"/acme/directory", self._directory),
            ("HEAD", r"/acme/new-nonce", self._new_nonce),
            ("GET", r"/acme/new-nonce", self._new_nonce),
            ("POST", r"/acme/new-account", self._post(self._new_account, new_account=True)),
            ("POST", r"/acme/acct/(\d+)", self._post(self._account)),
            ("POST", r"/acme/new-order", self._post(self._new_order)),
            ("POST", r"/acme/order/(\d+)", self._post(self._order)),
            ("POST", r"/acme/authz/(\d+)", self._post(self._authz)),
            ("POST", r"/acme/chall/(\d+)", self._post(self._challenge)),
            ("POST", r"/acme/finalize/(\d+)", self._post(self._finalize)),
            ("POST", r"/acme/cert/(\d+)", self._post(self._certificate)),
        ]
        super().__init__(routes, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key, log=log)

    @property
    def directory_url(self) -> str:
        return f"{self.base_url}/acme/directory"

    def _url(self, path: str) -> str:
        return f"{self.base_url}/acme/{path}"

    # -------------------------------------------------------------------------- plumbing

    def _fresh_nonce(self) -> str:
        nonce = b64url_encode(secrets.token_bytes(16))
        self._nonces.add(nonce)
        return nonce

    def _reply(self, status: int, data: Any, **headers: str) -> Reply:
        reply = Reply.of(status, data, **headers)
        reply.headers["Replay-Nonce"] = self._fresh_nonce()
        reply.headers.setdefault("Link", f'<{self.directory_url}>;rel="index"')
        return reply

    def _problem(self, problem: _Problem) -> Reply:
        reply = self._reply(
            problem.status,
            {"type": ERR + problem.kind, "detail": problem.detail, "status": problem.status},
        )
        reply.content_type = "application/problem+json"
        return reply

    def _directory(self, _request: Request) -> Reply:
        return Reply.of(
            200,
            {
                "newNonce": self._url("new-nonce"),
                "newAccount": self._url("new-account"),
                "newOrder": self._url("new-order"),
                "meta": {"website": "https://example.invalid/test-sti-ca"},
            },
        )

    def _new_nonce(self, request: Request) -> Reply:
        reply = Reply(200 if request.method == "HEAD" else 204, b"")
        reply.headers["Replay-Nonce"] = self._fresh_nonce()
        return reply

    def _post(
        self,
        handler: Callable[[Request, Jws, _Account | None], Reply],
        *,
        new_account: bool = False,
    ) -> Callable[[Request], Reply]:
        def run(request: Request) -> Reply:
            try:
                jws, account = self._authenticate(request, new_account=new_account)
                return handler(request, jws, account)
            except _Problem as problem:
                return self._problem(problem)

        return run

    def _authenticate(self, request: Request, *, new_account: bool) -> tuple[Jws, _Account | None]:
        """RFC 8555 section 6.2 to 6.5: content type, JWS, nonce, URL, key, signature."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/jose+json":
            raise _Problem(
                "malformed", f"Content-Type must be application/jose+json, not {kind!r}", 415
            )
        try:
            jws = parse_jws(request.body)
        except CertificateError as exc:
            raise _Problem("malformed", str(exc)) from None
        protected = jws.protected
        if protected.get("alg") != "ES256":
            raise _Problem("badSignatureAlgorithm", f"alg {protected.get('alg')!r}: only ES256")
        nonce = protected.get("nonce")
        self._nonce_count += 1
        if not isinstance(nonce, str) or nonce not in self._nonces:
            raise _Problem("badNonce", "the nonce is unknown or was already used")
        self._nonces.discard(nonce)
        if self.bad_nonce_every and self._nonce_count % self.bad_nonce_every == 0:
            raise _Problem("badNonce", "the nonce expired (test switch bad_nonce_every)")
        if protected.get("url") != request.url:
            raise _Problem(
                "unauthorized", f"the JWS url {protected.get('url')!r} is not {request.url!r}"
            )
        has_jwk, has_kid = "jwk" in protected, "kid" in protected
        if has_jwk == has_kid:
            raise _Problem("malformed", "the JWS needs exactly one of jwk and kid")
        account: _Account | None = None
        if has_jwk:
            if not new_account:
                raise _Problem("malformed", "jwk is only for newAccount; use kid (RFC 8555 6.2)")
            jwk = protected["jwk"]
            if not isinstance(jwk, dict):
                raise _Problem("malformed", "jwk is not an object")
            try:
                key = jwk_public_key(jwk)
            except CertificateError as exc:
                raise _Problem("badPublicKey", str(exc)) from None
        else:
            if new_account:
                raise _Problem("malformed", "newAccount is signed with jwk, not kid")
            account = self.accounts.get(str(protected["kid"]))
            if account is None:
                raise _Problem("accountDoesNotExist", f"no account {protected['kid']!r}")
            key = account.key
        signed = jws.verify(key)
        if signed is None:
            raise _Problem("unauthorized", "the JWS signature does not verify")
        if jws.post_as_get:
            self.variants.add(f"post_as_get={signed}")
        if has_jwk:
            self._pending_key = key
        return jws, account

    # --------------------------------------------------------------------------- account

    def _new_account(self, _request: Request, jws: Jws, _account: _Account | None) -> Reply:
        key = self._pending_key
        assert key is not None
        spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        for existing in self.accounts.values():
            if existing.key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == spki:
                return self._reply(200, {"status": existing.status}, Location=existing.url)
        try:
            payload = jws.payload_json()
        except CertificateError as exc:
            raise _Problem("malformed", str(exc)) from None
        if payload.get("onlyReturnExisting"):
            raise _Problem("accountDoesNotExist", "no account for this key")
        jwk = dict(jws.protected["jwk"])
        if "kid" in jwk:
            self.variants.add("jwk_kid")
        url = self._url(f"acct/{next(self._ids)}")
        self.accounts[url] = _Account(url=url, key=key, jwk=jwk)
        return self._reply(
            201, {"status": "valid", "contact": payload.get("contact", [])}, Location=url
        )

    def _account(self, request: Request, _jws: Jws, account: _Account | None) -> Reply:
        assert account is not None
        if account.url != request.url:
            raise _Problem("unauthorized", "that is not your account")
        return self._reply(200, {"status": account.status})

    # ----------------------------------------------------------------------------- order

    def _new_order(self, _request: Request, jws: Jws, account: _Account | None) -> Reply:
        assert account is not None
        try:
            payload = jws.payload_json()
        except CertificateError as exc:
            raise _Problem("malformed", str(exc)) from None
        identifiers = payload.get("identifiers")
        if not isinstance(identifiers, list) or len(identifiers) != 1:
            raise _Problem("rejectedIdentifier", "an STI order has exactly one identifier")
        identifier = identifiers[0]
        if not isinstance(identifier, dict) or identifier.get("type") != "TNAuthList":
            raise _Problem(
                "unsupportedIdentifier", f"identifier type {identifier!r}: only TNAuthList"
            )
        try:
            tnauthlist = decode_tnauthlist_value(identifier.get("value"))
        except CertificateError as exc:
            raise _Problem("malformed", f"the TNAuthList identifier value: {exc}") from None
        self.variants.add(
            "tnauthlist=base64"
            if any(c in str(identifier["value"]) for c in "+/=")
            else "tnauthlist=base64url"
        )
        not_after = None
        if "notAfter" in payload:
            try:
                not_after = datetime.fromisoformat(str(payload["notAfter"]).replace("Z", "+00:00"))
            except ValueError:
                raise _Problem("malformed", "notAfter is not an RFC 3339 time") from None
        now = self.now()
        order = _Order(
            id=str(next(self._ids)),
            account=account.url,
            tnauthlist=tnauthlist,
            identifier={"type": "TNAuthList", "value": str(identifier["value"])},
            expires=now + AUTHZ_LIFETIME,
            not_after=not_after,
        )
        authz = _Authz(id=str(next(self._ids)), order=order.id)
        authz.challenge = {
            "type": "tkauth-01",
            "tkauth-type": "atc",
            "token-authority": self.token_authority,
            "url": self._url(f"chall/{authz.id}"),
            "token": b64url_encode(secrets.token_bytes(16)),
            "status": "pending",
        }
        order.authz = authz.id
        self.orders[order.id] = order
        self.authzs[authz.id] = authz
        return self._reply(201, self._order_json(order), Location=self._url(f"order/{order.id}"))

    def _order_json(self, order: _Order) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": order.status,
            "expires": _time(order.expires),
            "identifiers": [order.identifier],
            "authorizations": [self._url(f"authz/{order.authz}")],
            "finalize": self._url(f"finalize/{order.id}"),
        }
        if order.certificate is not None:
            data["certificate"] = self._url(f"cert/{order.certificate}")
        if order.error is not None:
            data["error"] = order.error
        return data

    def _owned_order(self, order_id: str, account: _Account | None) -> _Order:
        order = self.orders.get(order_id)
        if order is None or account is None or order.account != account.url:
            raise _Problem("unauthorized", "no such order for this account", 404)
        return order

    def _order(self, request: Request, jws: Jws, account: _Account | None) -> Reply:
        order = self._owned_order(request.match.group(1), account)
        if not jws.post_as_get:
            raise _Problem("malformed", "an order is read with POST-as-GET")
        headers = {}
        if order.status == "processing":
            if order.polls_left > 0:
                order.polls_left -= 1
                headers["Retry-After"] = "1"
            else:
                order.status = "valid"
        return self._reply(200, self._order_json(order), **headers)

    def _authz(self, request: Request, _jws: Jws, account: _Account | None) -> Reply:
        authz = self.authzs.get(request.match.group(1))
        if authz is None:
            raise _Problem("malformed", "no such authorization", 404)
        order = self._owned_order(authz.order, account)
        return self._reply(
            200,
            {
                "status": authz.status,
                "expires": _time(order.expires),
                "identifier": order.identifier,
                "challenges": [authz.challenge],
            },
        )

    # ------------------------------------------------------------------------- challenge

    def _challenge(self, request: Request, jws: Jws, account: _Account | None) -> Reply:
        authz = next((a for a in self.authzs.values() if a.challenge["url"] == request.url), None)
        if authz is None:
            raise _Problem("malformed", "no such challenge", 404)
        order = self._owned_order(authz.order, account)
        assert account is not None
        up = {"Link": f'<{self._url(f"authz/{authz.id}")}>;rel="up"'}
        if jws.post_as_get or authz.challenge["status"] != "pending":
            return self._reply(200, authz.challenge, **up)
        try:
            payload = jws.payload_json()
        except CertificateError as exc:
            raise _Problem("malformed", str(exc)) from None
        keys = [k for k in ("atc", "tkauth") if k in payload]
        if len(keys) != 1 or not isinstance(payload[keys[0]], str):
            raise _Problem("malformed", 'answer a tkauth-01 challenge with {"atc": <SPC token>}')
        self.variants.add(f"challenge={keys[0]}")
        problem = self._check_token(str(payload[keys[0]]), order, account)
        if problem is None:
            authz.status = authz.challenge["status"] = "valid"
            authz.challenge["validated"] = _time(self.now())
            order.status = "ready"
        else:
            error = {"type": ERR + "unauthorized", "detail": problem, "status": 403}
            authz.status = authz.challenge["status"] = "invalid"
            authz.challenge["error"] = error
            order.status, order.error = "invalid", error
        return self._reply(200, authz.challenge, **up)

    def _check_token(self, token: str, order: _Order, account: _Account) -> str | None:
        """Why the SPC token does not authorize ``order`` for ``account``, or None."""
        try:
            atc = read_atc_token(token)
        except CertificateError as exc:
            return str(exc)
        if atc.alg != "ES256":
            return f"the SPC token's alg is {atc.alg!r}, not ES256"
        if atc.x5u is None or not atc.x5u.startswith("https://"):
            return f"the SPC token's x5u {atc.x5u!r} is not an https URL"
        now = self.now()
        try:
            with urllib.request.urlopen(atc.x5u, timeout=10, context=self._tls) as answer:
                body = answer.read(65536)
            chain = load_certificates(body)
        except (urllib.error.URLError, OSError, CertificateError) as exc:
            return f"cannot fetch the SPC token's x5u {atc.x5u}: {exc}"
        signer = chain[0].public_key()
        if not isinstance(signer, PublicKey) or not atc.verify(signer):
            return "the SPC token's signature does not verify with the certificate at its x5u"
        try:
            validate_chain(list(chain), self.anchors, at=now)
        except ChainError as exc:
            return f"the SPC token's signer is not a trusted STI-PA: {exc.detail}"
        if atc.exp is None or atc.jti is None:
            return "the SPC token lacks exp or jti (RFC 9447 section 3)"
        if atc.exp <= int(now.timestamp()):
            return f"the SPC token expired at {_time(datetime.fromtimestamp(atc.exp, UTC))}"
        if atc.jti in self.seen_jti:
            return f"the SPC token (jti {atc.jti}) was already used: replay refused"
        if atc.tktype != "TNAuthList":
            return f"the SPC token's atc.tktype is {atc.tktype!r}, not TNAuthList"
        try:
            granted = atc.tnauthlist()
        except CertificateError as exc:
            return f"the SPC token's atc.tkvalue: {exc}"
        if granted.to_der() != order.tnauthlist.to_der():
            return (
                f"the SPC token is for SPC {granted.spc or '?'}, the order for "
                f"{order.tnauthlist.spc or '?'}"
            )
        mode = fingerprint_matches(atc.fingerprint, account.key)
        if mode is None:
            return "the SPC token's fingerprint is not that of this ACME account's key"
        self.variants.add(f"fingerprint={mode}")
        self.seen_jti[atc.jti] = atc.exp
        return None

    # -------------------------------------------------------------------------- finalize

    def _finalize(self, request: Request, jws: Jws, account: _Account | None) -> Reply:
        order = self._owned_order(request.match.group(1), account)
        if order.status != "ready":
            raise _Problem("orderNotReady", f"the order is {order.status}, not ready", 403)
        try:
            der = b64url_decode(str(jws.payload_json().get("csr", "")))
            csr = x509.load_der_x509_csr(der)
        except (ValueError, CertificateError) as exc:
            raise _Problem("badCSR", f"the CSR does not parse: {exc}") from None
        if self.refuse_csr is not None:
            raise _Problem("badCSR", self.refuse_csr)
        if not csr.is_signature_valid:
            raise _Problem("badCSR", "the CSR's signature does not verify")
        try:
            extension = csr.extensions.get_extension_for_oid(TNAUTHLIST_OID).value
        except (x509.ExtensionNotFound, ValueError):
            raise _Problem("badCSR", "the CSR requests no TNAuthList extension") from None
        raw = (
            extension.value
            if isinstance(extension, x509.UnrecognizedExtension)
            else extension.public_bytes()
        )
        if raw != order.tnauthlist.to_der():
            try:
                asked = TNAuthList.from_der(raw).spc
            except CertificateError:
                asked = "unreadable"
            raise _Problem(
                "badCSR",
                f"the CSR's TNAuthList (SPC {asked}) is not the order's (SPC "
                f"{order.tnauthlist.spc})",
            )
        subject = csr.subject.rfc4514_string()
        if self.unique_subject and subject in self.subjects:
            raise _Problem("badCSR", f"a certificate with subject {subject} was already issued")
        now = self.now()
        days = None
        if order.not_after is not None:
            days = max(1, round((order.not_after - now).total_seconds() / 86400))
        if self.issue_for_other_key:
            other = generate_private_key()
            org = csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
            csr = build_csr(
                other,
                spc=order.tnauthlist.spc or "0000",
                org=str(org[0].value) if org else "Unknown",
            )
        try:
            issued = self.ca.issue(csr, now=now, days=days, subject_cn=_cn(csr))
        except ConfigurationError as exc:
            raise _Problem("badCSR", str(exc)) from None
        self.subjects.add(subject)
        cert_id = str(next(self._ids))
        self.certificates[cert_id] = issued.chain_pem
        order.certificate = cert_id
        order.status = "processing" if self.processing_polls else "valid"
        order.polls_left = self.processing_polls
        headers = {"Retry-After": "1"} if order.status == "processing" else {}
        return self._reply(200, self._order_json(order), **headers)

    def _certificate(self, request: Request, jws: Jws, account: _Account | None) -> Reply:
        cert_id = request.match.group(1)
        owner = next((o for o in self.orders.values() if o.certificate == cert_id), None)
        if owner is None or account is None or owner.account != account.url:
            raise _Problem("unauthorized", "no such certificate for this account", 404)
        if not jws.post_as_get:
            raise _Problem("malformed", "a certificate is downloaded with POST-as-GET")
        reply = self._reply(200, None)
        reply.body = self.certificates[cert_id]
        reply.content_type = PEM_CHAIN
        return reply


def _cn(csr: x509.CertificateSigningRequest) -> str | None:
    values = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None
