"""A client of the STI-PA API: log in, obtain an SPC token, read the CA list and the CRL URL.

The API is the iconectiv STI-PA's (the one US providers call; the Canadian and French PAs
follow it): ``POST /api/v1/auth/login`` with ``{"userId", "password"}`` answers an
``accessToken``; ``POST /api/v1/account/{account id}/token`` with
``{"atc": {"tktype": "TNAuthList", "tkvalue", "ca", "fingerprint"}}`` answers the SPC token (a
JWT the STI-PA signs, RFC 9448 section 4) and the PA's CRL URL; ``GET /api/v1/ca-list`` answers
the signed list of approved STI-CA roots. The access token travels as the raw
``Authorization`` value, without ``Bearer`` (what the production clients send); a PA that
wants ``Bearer`` is a setting.

Secrets: the password and the SPC token are held in memory only as long as a call needs them;
they are never logged, never put in an exception message, and the credential file must be
mode 0600 (like a private key). What an operator sees on failure names the URL, the HTTP
status and the PA's own ``message``, and nothing sent.

The SPC token is checked before it is handed to an STI-CA, so a misconfigured account fails
here and not as an opaque ACME error: ES256; the ``atc`` the PA signed is the one asked for
(TNAuthList, fingerprint, ``ca``); at least ``min_token_lifetime`` seconds before ``exp``; and,
when the STI-PA's root certificate is configured, the signature verifies with the certificate
at the token's ``x5u``, which must chain to it.

Why hand-written over httpx: five JSON calls do not justify a dependency, and no maintained
Python client of this API exists.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

from shaken.core.acme import AtcToken, decode_tnauthlist_value, read_atc_token
from shaken.core.certs import TNAuthList, load_certificates
from shaken.core.chain import TrustAnchors, validate_chain
from shaken.core.errors import AcquisitionError, CertificateError, ChainError, ConfigurationError
from shaken.core.jws import PublicKey
from shaken.core.trustlist import read_trust_list

__all__ = [
    "ENV_PASSWORD",
    "ENV_USER",
    "SpcToken",
    "StiPaClient",
    "StiPaCredentials",
    "StiPaSettings",
    "check_spc_token",
    "token_from_command",
    "token_signer",
]

log = logging.getLogger("shaken.sti_pa")

ENV_USER = "SHAKEN_STI_PA_USER_ID"
ENV_PASSWORD = "SHAKEN_STI_PA_PASSWORD"


@dataclass(frozen=True, slots=True)
class StiPaCredentials:
    """The STI-PA user id and password. ``repr`` and ``str`` never show the password."""

    user_id: str
    password: str = field(repr=False)

    def __str__(self) -> str:
        return f"STI-PA user {self.user_id}"

    @classmethod
    def load(cls, file: str | None, environ: Mapping[str, str] | None = None) -> StiPaCredentials:
        """From ``file`` (TOML ``user_id`` and ``password``, mode 0600), else the environment.

        :raises ConfigurationError: no file and no variables, an unreadable or group/other
            readable file, or missing keys. The message never holds the password.
        """
        env = os.environ if environ is None else environ
        if file is None:
            user, password = env.get(ENV_USER), env.get(ENV_PASSWORD)
            if not user or not password:
                raise ConfigurationError(
                    f"no STI-PA credentials: set sti_pa.credentials_file, or {ENV_USER} and "
                    f"{ENV_PASSWORD} in the environment"
                )
            return cls(user, password)
        path = Path(file)
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(
                f"cannot read the STI-PA credentials file {path}: {getattr(exc, 'strerror', exc)}"
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(
                f"the STI-PA credentials file {path} is readable by group or others; chmod 600 it"
            )
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            # Not the decoder's message: it may quote the line, which may be the password.
            raise ConfigurationError(
                f'{path} is not TOML with user_id = "..." and password = "..."'
            ) from None
        user, password = data.get("user_id"), data.get("password")
        if not isinstance(user, str) or not user or not isinstance(password, str) or not password:
            raise ConfigurationError(f"{path} needs user_id and password (non-empty strings)")
        unknown = sorted(set(data) - {"user_id", "password"})
        if unknown:
            raise ConfigurationError(f"{path}: unknown keys {', '.join(unknown)}")
        return cls(user, password)


@dataclass(frozen=True, slots=True, kw_only=True)
class StiPaSettings:
    """The ``[sti_pa]`` section as the client uses it (see ``shaken.config.schema``)."""

    url: str
    account_id: str
    auth_header: str = "raw"
    token_accept: str = "application/json"
    token_path: str = "/api/v1/account/{account_id}/token"
    min_token_lifetime: int = 180
    timeout: float = 30.0
    tls_ca_file: str | None = None
    #: The STI-PA root(s) the token's x5u certificate must chain to; empty: not checked here.
    roots: tuple[x509.Certificate, ...] = ()

    @property
    def base(self) -> str:
        return self.url.rstrip("/")


@dataclass(frozen=True, slots=True)
class SpcToken:
    """An SPC token and the CRL URL the STI-PA named with it. ``repr`` hides the token."""

    token: str = field(repr=False)
    crl: str | None
    atc: AtcToken = field(repr=False)

    def __str__(self) -> str:
        return f"SPC token (jti {self.atc.jti}, exp {self.atc.exp})"


def _ssl_context(tls_ca_file: str | None) -> ssl.SSLContext:
    if tls_ca_file is not None:
        return ssl.create_default_context(cafile=tls_ca_file)
    import certifi  # noqa: PLC0415  (httpx's own CA bundle)

    return ssl.create_default_context(cafile=certifi.where())


def _pa_message(response: httpx.Response) -> str:
    """The PA's own ``message`` (or ``error``) from a JSON answer, shortened; else the status."""
    try:
        data = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(data, dict):
        for key in ("message", "error", "detail"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return f"HTTP {response.status_code}: {value[:200]!r}"
    return f"HTTP {response.status_code}"


def check_spc_token(
    token: AtcToken,
    *,
    tnauthlist: TNAuthList,
    fingerprint: str,
    ca: bool,
    now: datetime,
    min_lifetime: int,
    signer: x509.Certificate | None = None,
    roots: Sequence[x509.Certificate] = (),
    chain: Sequence[x509.Certificate] = (),
) -> None:
    """What makes an SPC token usable for the ACME order we are about to place.

    ``signer`` and ``chain`` are the certificates at the token's ``x5u`` (when fetched);
    ``roots`` the STI-PA roots they must chain to.

    :raises AcquisitionError: the first problem, in the operator's words.
    """
    if token.alg != "ES256":
        raise AcquisitionError(f"the SPC token's alg is {token.alg!r}, not ES256")
    if token.tktype != "TNAuthList":
        raise AcquisitionError(f"the SPC token's atc.tktype is {token.tktype!r}, not TNAuthList")
    try:
        granted = decode_tnauthlist_value(token.tkvalue)
    except CertificateError as exc:
        raise AcquisitionError(f"the SPC token's atc.tkvalue is unreadable: {exc}") from None
    if granted.to_der() != tnauthlist.to_der():
        raise AcquisitionError(
            f"the SPC token is for SPC {granted.spc or '?'}, not {tnauthlist.spc}: the STI-PA "
            "account is not authorized for this SPC (check sti_pa.account_id and acme.spc)"
        )
    if (token.fingerprint or "").strip().upper() != fingerprint.strip().upper():
        raise AcquisitionError(
            "the SPC token is bound to another account key (atc.fingerprint differs from our "
            "ACME account key's)"
        )
    if token.ca != ca:
        raise AcquisitionError(f"the SPC token has atc.ca {token.ca}, we asked for {ca}")
    if token.jti is None:
        raise AcquisitionError("the SPC token has no jti (RFC 9447 requires one)")
    if token.exp is None:
        raise AcquisitionError("the SPC token has no exp (RFC 9447 requires one)")
    left = token.exp - int(now.timestamp())
    if left < min_lifetime:
        raise AcquisitionError(
            f"the SPC token expires in {left} s (at {token.exp}); at least {min_lifetime} s are "
            "needed to complete the ACME order (is this host's clock right?)"
        )
    if signer is not None:
        public = signer.public_key()
        if not isinstance(public, PublicKey) or not token.verify(public):
            raise AcquisitionError(
                f"the SPC token's signature does not verify with the certificate at {token.x5u}"
            )
        if roots:
            try:
                validate_chain([signer, *chain], TrustAnchors(certificates=tuple(roots)), at=now)
            except ChainError as exc:
                raise AcquisitionError(
                    f"the SPC token's signer at {token.x5u} is not an STI-PA certificate we "
                    f"trust: {exc.detail}"
                ) from None


class StiPaClient:
    """One STI-PA account: :meth:`login` once, then :meth:`spc_token`, :meth:`ca_list`."""

    def __init__(
        self,
        settings: StiPaSettings,
        credentials: StiPaCredentials,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._credentials = credentials
        self._access: str | None = None
        self._client = httpx.AsyncClient(
            verify=_ssl_context(settings.tls_ca_file),
            timeout=httpx.Timeout(settings.timeout),
            follow_redirects=False,
            transport=transport,
        )

    async def __aenter__(self) -> StiPaClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._access = None
        await self._client.aclose()

    async def _request(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        url = self.settings.base + path
        try:
            return await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise AcquisitionError(
                f"STI-PA {what} at {url} failed: {type(exc).__name__}: {exc}"
            ) from None

    def _auth(self) -> dict[str, str]:
        if self._access is None:
            raise AcquisitionError("not logged in to the STI-PA")
        value = self._access
        if self.settings.auth_header == "bearer":
            value = f"Bearer {value}"
        return {"Authorization": value}

    async def login(self) -> None:
        """``POST /api/v1/auth/login``.

        :raises AcquisitionError: refused ("wrong STI-PA user id or password"), or no token.
        """
        body = {"userId": self._credentials.user_id, "password": self._credentials.password}
        response = await self._request(
            "POST", "/api/v1/auth/login", "login", json=body, headers={"accept": "application/json"}
        )
        del body
        url = self.settings.base + "/api/v1/auth/login"
        if response.status_code in (401, 403):
            raise AcquisitionError(
                f"the STI-PA refused the login of user {self._credentials.user_id!r} at {url} "
                f"({_pa_message(response)}): wrong user id or password?"
            )
        data = self._json(response, f"login at {url}")
        token = data.get("accessToken")
        if not isinstance(token, str) or not token:
            raise AcquisitionError(f"the STI-PA login at {url} answered no accessToken")
        self._access = token
        log.info("logged in to the STI-PA %s as %s", self.settings.base, self._credentials.user_id)

    def _json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code >= 300:
            raise AcquisitionError(f"STI-PA {what}: {_pa_message(response)}")
        try:
            data = response.json()
        except ValueError:
            raise AcquisitionError(f"STI-PA {what}: the answer is not JSON") from None
        if not isinstance(data, dict):
            raise AcquisitionError(f"STI-PA {what}: the answer is not a JSON object")
        status = data.get("status")
        if status is not None and status != "success":
            raise AcquisitionError(f"STI-PA {what}: status {status!r}: {_pa_message(response)}")
        return data

    async def spc_token(
        self,
        *,
        tnauthlist: TNAuthList,
        tkvalue: str,
        fingerprint: str,
        now: datetime,
        ca: bool = False,
    ) -> SpcToken:
        """Request an SPC token for ``tkvalue`` bound to ``fingerprint``, and check it.

        :raises AcquisitionError: the PA refused, or the token is not the one asked for.
        """
        path = self.settings.token_path.format(account_id=self.settings.account_id)
        body = {
            "atc": {
                "tktype": "TNAuthList",
                "tkvalue": tkvalue,
                "ca": ca,
                "fingerprint": fingerprint,
            }
        }
        response = await self._request(
            "POST",
            path,
            "SPC token request",
            json=body,
            headers={**self._auth(), "accept": self.settings.token_accept},
        )
        data = self._json(response, f"SPC token request for SPC {tnauthlist.spc} at {path}")
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise AcquisitionError(f"the STI-PA answered no SPC token at {path}")
        crl = data.get("crl") if isinstance(data.get("crl"), str) else None
        try:
            atc = read_atc_token(token)
        except CertificateError as exc:
            raise AcquisitionError(f"the STI-PA's SPC token is unreadable: {exc}") from None
        signer, chain = await token_signer(self._client, atc, self.settings)
        check_spc_token(
            atc,
            tnauthlist=tnauthlist,
            fingerprint=fingerprint,
            ca=ca,
            now=now,
            min_lifetime=self.settings.min_token_lifetime,
            signer=signer,
            roots=self.settings.roots,
            chain=chain,
        )
        log.info("SPC token for SPC %s obtained (jti %s)", tnauthlist.spc, atc.jti)
        return SpcToken(token, crl, atc)

    async def ca_list(self, *, now: datetime) -> tuple[x509.Certificate, ...]:
        """``GET /api/v1/ca-list``: the approved STI-CA roots (signature checked when the STI-PA
        roots are configured)."""
        response = await self._request(
            "GET",
            "/api/v1/ca-list",
            "CA list",
            headers={**self._auth(), "accept": "application/jose+json"},
        )
        data = self._json(response, "CA list")
        token = data.get("caList")
        if not isinstance(token, str):
            raise AcquisitionError("the STI-PA CA list answer has no caList JWT")
        try:
            listed = read_trust_list(token, signer=None, now=now)
        except CertificateError as exc:
            raise AcquisitionError(f"the STI-PA CA list: {exc}") from None
        return listed.certificates


async def token_signer(
    client: httpx.AsyncClient, atc: AtcToken, settings: StiPaSettings
) -> tuple[x509.Certificate | None, tuple[x509.Certificate, ...]]:
    """The certificate at the token's x5u, when we have STI-PA roots to judge it by."""
    if not settings.roots:
        return None, ()
    if atc.x5u is None or not atc.x5u.startswith("https://"):
        raise AcquisitionError(f"the SPC token's x5u {atc.x5u!r} is not an https URL")
    try:
        response = await client.get(atc.x5u, headers={"accept": "application/pkix-cert"})
    except httpx.HTTPError as exc:
        raise AcquisitionError(f"cannot fetch the SPC token's x5u {atc.x5u}: {exc}") from None
    if response.status_code != 200:
        raise AcquisitionError(
            f"the SPC token's x5u {atc.x5u} answered HTTP {response.status_code}"
        )
    try:
        certificates = load_certificates(response.content)
    except CertificateError as exc:
        raise AcquisitionError(f"the SPC token's x5u {atc.x5u}: {exc}") from None
    return certificates[0], certificates[1:]


async def token_from_command(
    argv: Sequence[str],
    *,
    settings: StiPaSettings,
    tnauthlist: TNAuthList,
    tkvalue: str,
    fingerprint: str,
    now: datetime,
    ca: bool = False,
) -> str:
    """The SPC token a command prints (``[sti_pa] token_command``), checked like our own.

    For a deployment where only one host may call the STI-PA (it whitelists addresses): that
    host runs ``shaken cert spc-token``, this one runs it over ssh. The token is the command's
    last line of output; its standard error is not shown (it may hold anything).
    """
    replaced = [
        a.replace("{tkvalue}", tkvalue)
        .replace("{fingerprint}", fingerprint)
        .replace("{ca}", "true" if ca else "false")
        for a in argv
    ]
    try:
        process = await asyncio.create_subprocess_exec(
            *replaced, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=settings.timeout * 4)
    except (OSError, TimeoutError) as exc:
        raise AcquisitionError(f"sti_pa.token_command {argv[0]} failed: {exc}") from None
    if process.returncode != 0:
        raise AcquisitionError(
            f"sti_pa.token_command {argv[0]} exited {process.returncode} (no SPC token)"
        )
    lines = [line.strip() for line in out.decode(errors="replace").splitlines() if line.strip()]
    if not lines:
        raise AcquisitionError(f"sti_pa.token_command {argv[0]} printed no SPC token")
    try:
        atc = read_atc_token(lines[-1])
    except CertificateError as exc:
        raise AcquisitionError(f"sti_pa.token_command {argv[0]}: {exc}") from None
    async with httpx.AsyncClient(
        verify=_ssl_context(settings.tls_ca_file), timeout=httpx.Timeout(settings.timeout)
    ) as client:
        signer, chain = await token_signer(client, atc, settings)
    check_spc_token(
        atc,
        tnauthlist=tnauthlist,
        fingerprint=fingerprint,
        ca=ca,
        now=now,
        min_lifetime=settings.min_token_lifetime,
        signer=signer,
        roots=settings.roots,
        chain=chain,
    )
    return atc.token
