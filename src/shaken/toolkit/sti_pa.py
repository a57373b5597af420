"""A test STI-PA: the iconectiv STI-PA API subset that certificate acquisition calls.

TEST MATERIAL, like :mod:`shaken.toolkit.ca`: its root and signing keys sit unencrypted in its
directory and no real STI-CA trusts them.

What it serves (the production paths, under any base URL)::

    POST /api/v1/auth/login               {"userId", "password"} -> accessToken, refreshToken
    POST /api/v1/auth/refreshToken        {"refreshToken"} -> a new accessToken
    POST /api/v1/account/{id}/token[/]    {"atc": {tktype, tkvalue, ca, fingerprint}} -> token
    GET  /api/v1/ca-list                  {"caList": <JWT of the approved STI-CA roots>}
    GET  /download/v1/certificate/<name>  the token signer's certificate (the tokens' x5u)
    GET  /download/v1/crl                 the SHAKEN CRL (the file it was given)

Strict where the real one is: the access token goes in ``Authorization`` raw (no ``Bearer``),
it expires (an hour), an account may only ask for tokens for its own SPCs, the ``tkvalue``
must be a DER TNAuthList in base64 or base64url and the fingerprint ``SHA256`` plus 32
colon-separated hex bytes. Tokens are ES256 JWTs with ``x5u`` (this server's signer
certificate, issued by its root), ``exp``, a fresh ``jti`` and the ``atc`` as asked, exactly as
the reference documents them (no ``iat``, no ``iss``).

Layout of its directory::

    root.pem  root.key      "TEST STI-PA Root": what an STI-CA trusts SPC tokens by
    signer.pem signer.key   the token signer, issued by the root (the tokens' x5u)
    accounts.json           users: SHA-256 of the password, the account id, its SPCs
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509

from shaken.core.acme import decode_tnauthlist_value, make_atc_token
from shaken.core.certs import load_certificates
from shaken.core.errors import CertificateError, ConfigurationError
from shaken.core.jws import generate_private_key, load_private_key, private_key_pem
from shaken.core.trustlist import make_trust_list
from shaken.files import create_private, write_atomic
from shaken.toolkit.ca import TEST_NOTICE
from shaken.toolkit.httpjson import JsonServer, Reply, Request, Route
from shaken.toolkit.x509build import (
    build_certificate,
    certificates_pem,
    check_spc,
    key_usage,
    shaken_name,
)

__all__ = ["StiPaServer", "TestStiPa"]

FORMAT = "shaken-test-sti-pa/1"
_FINGERPRINT = re.compile(r"SHA256 [0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31}")
ACCESS_LIFETIME = timedelta(hours=1)


def _digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Account:
    user_id: str
    password_sha256: str
    account_id: str
    spcs: tuple[str, ...]


class TestStiPa:
    """The STI-PA's directory: its keys and accounts (see the module docstring)."""

    __test__ = False

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            self.root = load_certificates((directory / "root.pem").read_bytes())[0]
            self.signer = load_certificates((directory / "signer.pem").read_bytes())[0]
            data = json.loads((directory / "accounts.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, CertificateError) as exc:
            raise ConfigurationError(f"{directory} is not a test STI-PA directory: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigurationError(f"{directory / 'accounts.json'} is not a {FORMAT} file")
        self.accounts = {
            user: _Account(user, a["password_sha256"], a["account_id"], tuple(a["spcs"]))
            for user, a in data["accounts"].items()
        }

    @classmethod
    def init(cls, directory: Path, *, now: datetime, days: int = 3650) -> TestStiPa:
        if directory.exists() and any(directory.iterdir()):
            raise ConfigurationError(f"{directory} is not empty")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        root_key, signer_key = generate_private_key(), generate_private_key()
        start = now.replace(microsecond=0) - timedelta(hours=1)
        root = build_certificate(
            subject=shaken_name("TEST STI-PA Root", "Example STI-PA (TEST ONLY)"),
            public_key=root_key.public_key(),
            issuer=None,
            issuer_key=root_key,
            not_before=start,
            not_after=now + timedelta(days=days),
            ca=True,
        )
        signer = build_certificate(
            subject=shaken_name("TEST STI-PA SPC Token Signer", "Example STI-PA (TEST ONLY)"),
            public_key=signer_key.public_key(),
            issuer=root,
            issuer_key=root_key,
            not_before=start,
            not_after=now + timedelta(days=days),
            ca=False,
            usage=key_usage(digital_signature=True),
            policy=None,
        )
        create_private(directory / "root.key", private_key_pem(root_key))
        create_private(directory / "signer.key", private_key_pem(signer_key))
        write_atomic(directory / "root.pem", certificates_pem(root))
        write_atomic(directory / "signer.pem", certificates_pem(signer))
        cls._write_accounts(directory, {})
        write_atomic(directory / "README.txt", f"{TEST_NOTICE}\n\nA test STI-PA.\n".encode())
        return cls(directory)

    @staticmethod
    def _write_accounts(directory: Path, accounts: dict[str, _Account]) -> None:
        data = {
            "format": FORMAT,
            "notice": TEST_NOTICE,
            "accounts": {
                a.user_id: {
                    "password_sha256": a.password_sha256,
                    "account_id": a.account_id,
                    "spcs": list(a.spcs),
                }
                for a in accounts.values()
            },
        }
        write_atomic(directory / "accounts.json", (json.dumps(data, indent=2) + "\n").encode())

    def add_account(
        self, user_id: str, *, account_id: str, spcs: Sequence[str], password: str | None = None
    ) -> str:
        """Add a user (replacing one of that name); returns its password."""
        for spc in spcs:
            check_spc(spc)
        password = password or secrets.token_urlsafe(18)
        self.accounts[user_id] = _Account(user_id, _digest(password), account_id, tuple(spcs))
        self._write_accounts(self.directory, self.accounts)
        return password

    @property
    def signer_key_path(self) -> Path:
        return self.directory / "signer.key"


class StiPaServer(JsonServer):
    """The API of a :class:`TestStiPa` on a real socket (HTTPS when given a TLS pair).

    ``now`` is where it reads the time. ``token_lifetime`` is how long tokens last (a short
    one lets a test produce an about-to-expire token); ``ca_roots`` the STI-CA roots its CA
    list names; ``crl_file`` what ``/download/v1/crl`` serves.
    """

    name = "sti-pa"

    def __init__(
        self,
        pa: TestStiPa,
        *,
        now: Callable[[], datetime],
        host: str = "127.0.0.1",
        port: int = 0,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        token_lifetime: timedelta = timedelta(hours=24),
        ca_roots: Sequence[x509.Certificate] = (),
        crl_file: Path | None = None,
        log: TextIO | None = None,
    ) -> None:
        self.pa = pa
        self.now = now
        self.token_lifetime = token_lifetime
        self.ca_roots = tuple(ca_roots)
        self.crl_file = crl_file
        self._key = load_private_key(pa.signer_key_path.read_bytes())
        self._access: dict[str, tuple[str, datetime]] = {}
        self._refresh: dict[str, str] = {}
        #: Every token issued: (user, jti, tkvalue) for tests to look at.
        self.issued: list[tuple[str, str, str]] = []
        routes: list[Route] = [
            ("POST", r"/api/v1/auth/login", self._login),
            ("POST", r"/api/v1/auth/refreshToken", self._refresh_token),
            ("POST", r"/api/v1/account/([^/]+)/token/?", self._token),
            ("GET", r"/api/v1/ca-list", self._ca_list),
            ("GET", r"/download/v1/certificate/[A-Za-z0-9_.-]+\.crt", self._certificate),
            ("GET", r"/download/v1/crl", self._crl),
        ]
        super().__init__(routes, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key, log=log)

    @property
    def x5u(self) -> str:
        return f"{self.base_url}/download/v1/certificate/certificateId_1.crt"

    @property
    def crl_url(self) -> str:
        return f"{self.base_url}/download/v1/crl"

    @staticmethod
    def _failed(status: int, message: str) -> Reply:
        return Reply.of(status, {"status": "failed", "message": message})

    @staticmethod
    def _body(request: Request) -> dict[str, Any] | None:
        try:
            data = request.json()
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _login(self, request: Request) -> Reply:
        body = self._body(request)
        if body is None:
            return self._failed(400, "the body is not a JSON object")
        account = self.pa.accounts.get(str(body.get("userId")))
        password = body.get("password")
        if (
            account is None
            or not isinstance(password, str)
            or not hmac.compare_digest(_digest(password), account.password_sha256)
        ):
            return self._failed(401, "Invalid userId or password")
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._access[access] = (account.user_id, self.now() + ACCESS_LIFETIME)
        self._refresh[refresh] = account.user_id
        return Reply.of(200, {"status": "success", "accessToken": access, "refreshToken": refresh})

    def _refresh_token(self, request: Request) -> Reply:
        body = self._body(request) or {}
        user = self._refresh.get(str(body.get("refreshToken")))
        if user is None:
            return self._failed(401, "Invalid refreshToken")
        access = secrets.token_urlsafe(32)
        self._access[access] = (user, self.now() + ACCESS_LIFETIME)
        return Reply.of(200, {"status": "success", "accessToken": access})

    def _user(self, request: Request) -> _Account | None:
        value = request.headers.get("authorization", "")
        found = self._access.get(value)
        if found is None or found[1] <= self.now():
            return None
        return self.pa.accounts.get(found[0])

    def _token(self, request: Request) -> Reply:
        account = self._user(request)
        if account is None:
            return self._failed(401, "Invalid or expired access token")
        account_id = request.match.group(1)
        if account_id != account.account_id:
            return self._failed(403, f"account {account_id} does not belong to this user")
        body = self._body(request)
        atc = body.get("atc") if body is not None else None
        if not isinstance(atc, dict):
            return self._failed(400, "the body has no atc object")
        if atc.get("tktype") != "TNAuthList":
            return self._failed(400, "atc.tktype must be TNAuthList")
        tkvalue, fingerprint, ca = atc.get("tkvalue"), atc.get("fingerprint"), atc.get("ca")
        try:
            tnauthlist = decode_tnauthlist_value(tkvalue)
        except CertificateError as exc:
            return self._failed(400, f"atc.tkvalue: {exc}")
        if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
            return self._failed(400, "atc.fingerprint must be 'SHA256 ' and 32 hex bytes")
        if not isinstance(ca, bool):
            return self._failed(400, "atc.ca must be true or false")
        spcs = tnauthlist.spcs
        if not spcs or any(spc not in account.spcs for spc in spcs):
            asked = ", ".join(spcs) or "none"
            return self._failed(403, f"SPC {asked} is not assigned to account {account_id}")
        now = self.now()
        jti = str(uuid.uuid4())
        token = make_atc_token(
            self._key,
            x5u=self.x5u,
            tkvalue=str(tkvalue),
            fingerprint=fingerprint,
            exp=int((now + self.token_lifetime).timestamp()),
            jti=jti,
            ca=ca,
        )
        self.issued.append((account.user_id, jti, str(tkvalue)))
        return Reply.of(
            200,
            {
                "status": "success",
                "message": f"SPC token for spc: {spcs[0]} is created successfully",
                "token": token,
                "crl": self.crl_url,
            },
        )

    def _ca_list(self, request: Request) -> Reply:
        if self._user(request) is None:
            return self._failed(401, "Invalid or expired access token")
        if not self.ca_roots:
            return self._failed(404, "no approved STI-CAs")
        now = self.now()
        token = make_trust_list(
            self.ca_roots,
            self._key,
            iat=int(now.timestamp()),
            exp=int((now + timedelta(days=30)).timestamp()),
            x5u=self.x5u,
        )
        return Reply.of(
            200,
            {
                "status": "success",
                "message": "STI-CA trustList request is successful",
                "caList": token,
            },
        )

    def _certificate(self, _request: Request) -> Reply:
        return Reply(200, certificates_pem(self.pa.signer), "application/pkix-cert")

    def _crl(self, _request: Request) -> Reply:
        if self.crl_file is None or not self.crl_file.is_file():
            return self._failed(404, "no CRL")
        return Reply(200, self.crl_file.read_bytes(), "application/pkix-crl")
