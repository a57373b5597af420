"""A one-command STIR/SHAKEN lab: a test CA, an SP certificate, a served repository, a config.

TEST MATERIAL. ``shaken lab init DIR`` writes::

    DIR/README.txt            says what this is (test material) and how to use it
    DIR/lab.json              how the lab was made (SPC, TN range, addresses)
    DIR/shaken.toml           the configuration in the schema of shaken.config: signing,
                              verification and its PASS / STOP / ALERT actions, listeners,
                              and the [repository] ``lab up`` runs
    DIR/ca/...                a test STI-PA/STI-CA (see shaken.toolkit.ca), publishing to repo/
    DIR/sp/sp.key             the SP's P-256 signing key (0600)
    DIR/sp/sp.csr             its CSR (CN "SHAKEN <SPC>", TNAuthList SPC)
    DIR/sp/sp.pem             its certificate chain: the SP certificate, then the intermediate
    DIR/repo/                 what the repository serves: sp.pem (the x5u), crl.der (the CRL
                              distribution point), <serial>.pem, sti-pa.pem, trust-list.jwt,
                              acme-logo.png (the logo of the lab's branded TN, RFC 9795)
    DIR/tls/ca.pem, ca.key    a lab TLS CA (the verifier trusts it for x5u fetches only)
    DIR/tls/server.pem, .key  the repository's TLS certificate (SAN: the host, 127.0.0.1,
                              ::1, localhost)
    DIR/secrets/rest-api-key  the REST API key of the lab (0600)
    DIR/sti-pa/, DIR/acme/    a test STI-PA and where the ACME account key goes; with them
                              `shaken cert acquire` obtains the SP certificate through the
                              test STI-PA and ACME STI-CA that `lab up` runs
                              (shaken.toolkit.lab_acquisition)

``shaken lab up DIR`` serves the ``[repository]`` of ``shaken.toml`` (``DIR/repo`` over HTTPS
on 127.0.0.1:8443 by default) and runs the SIP redirect servers (signing on 5060, verification
on 5062, UDP and TCP) and the REST API (8080) from the same configuration, until interrupted.
Their decisions go to the call log ``server.call_log`` names, else ``DIR/calls.sqlite`` (read it
with ``shaken calls --db DIR/calls.sqlite``). ``shaken lab call DIR`` places a test call into
the running lab.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
import tomllib
import zlib
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.serialization import Encoding

from shaken.core.certs import TnRange
from shaken.core.errors import ConfigurationError
from shaken.core.jws import generate_private_key, private_key_pem
from shaken.files import create_private, write_atomic
from shaken.toolkit.ca import TEST_NOTICE, CaSettings, TestCa
from shaken.toolkit.lab_acquisition import init_acquisition, render_acquisition_config
from shaken.toolkit.repository import RepositoryServer, serve_repository
from shaken.toolkit.x509build import (
    build_csr,
    build_tls_ca,
    build_tls_server_certificate,
    certificates_pem,
    check_spc,
)

__all__ = ["Lab", "LabSettings", "init_lab", "open_lab"]

FORMAT = "shaken-lab/1"


def _port(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigurationError(f"{what} must be a port number from 1 to 65535")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class LabSettings:
    """The addresses and identities of a lab (stored in ``lab.json``).

    ``host`` is the loopback address every listener binds and the repository's URLs name.
    The TNs ``tn_start`` .. ``tn_start + tn_count - 1`` are signed at attestation A, any other
    caller at C.
    """

    spc: str = "1234"
    org: str = "Example Lab SP (TEST ONLY)"
    host: str = "127.0.0.1"
    repository_port: int = 8443
    sip_signing_port: int = 5060
    sip_verification_port: int = 5062
    rest_port: int = 8080
    tn_start: str = "12025550100"
    tn_count: int = 100
    #: The test STI-PA and ACME STI-CA (shaken.toolkit.lab_acquisition).
    sti_pa_port: int = 8444
    acme_port: int = 8445
    #: A TN of the range signed with the lab brand "Acme Bank" (rcd, rcdi, crn; RFC 9795).
    brand_tn: str = "12025550142"

    def __post_init__(self) -> None:
        check_spc(self.spc)
        ports = ("repository_port", "sip_signing_port", "sip_verification_port", "rest_port")
        for name in (*ports, "sti_pa_port", "acme_port"):
            _port(getattr(self, name), name.replace("_", " "))
        TnRange(start=self.tn_start, count=self.tn_count)  # validates the range (RFC 8226)
        first = int(self.tn_start)
        inside = self.brand_tn.isdigit() and len(self.brand_tn) == len(self.tn_start)
        if not inside or not first <= int(self.brand_tn) < first + self.tn_count:
            raise ConfigurationError(f"brand_tn {self.brand_tn} is not in the lab's TN range")
        if not self.host or any(c in self.host for c in "/[]@ "):
            raise ConfigurationError(f"host {self.host!r} is not an address or host name")

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def repository_url(self) -> str:
        return f"https://{self.url_host}:{self.repository_port}/"


@dataclass(frozen=True, slots=True)
class Lab:
    """A lab directory and its settings; the paths of everything in it."""

    directory: Path
    settings: LabSettings

    @property
    def ca_dir(self) -> Path:
        return self.directory / "ca"

    @property
    def repo_dir(self) -> Path:
        return self.directory / "repo"

    @property
    def sp_key(self) -> Path:
        return self.directory / "sp" / "sp.key"

    @property
    def sp_chain(self) -> Path:
        return self.directory / "sp" / "sp.pem"

    @property
    def root(self) -> Path:
        return self.ca_dir / "root.pem"

    @property
    def tls_ca(self) -> Path:
        return self.directory / "tls" / "ca.pem"

    @property
    def tls_cert(self) -> Path:
        return self.directory / "tls" / "server.pem"

    @property
    def tls_key(self) -> Path:
        return self.directory / "tls" / "server.key"

    @property
    def config(self) -> Path:
        return self.directory / "shaken.toml"

    @property
    def x5u(self) -> str:
        """The SP chain's URL, the ``x5u`` the lab signs with."""
        return self.settings.repository_url + "sp.pem"

    @property
    def crl_url(self) -> str:
        return self.settings.repository_url + "crl.der"

    def read_config(self) -> dict[str, Any]:
        """``shaken.toml`` as TOML data (the strict validation is ``shaken config check``)."""
        try:
            return tomllib.loads(self.config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read {self.config}: {exc}") from None

    def repository(self) -> RepositorySettings:
        """The ``[repository]`` of ``shaken.toml``: what ``shaken lab up`` serves, and where."""
        table = self.read_config().get("repository")
        if not isinstance(table, dict):
            raise ConfigurationError(f"{self.config} has no [repository] table")
        base = self.config.parent
        try:
            transport, host, port = _listen(str(table["listen"]))
            return RepositorySettings(
                directory=base / str(table["directory"]),
                host=host,
                port=port,
                tls_certificate=base / str(table["tls_certificate"])
                if transport == "https"
                else None,
                tls_key=base / str(table["tls_key"]) if transport == "https" else None,
                max_age=int(table.get("max_age", 86400)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"{self.config}: [repository] needs directory, listen ('https:HOST:PORT'), "
                f"tls_certificate and tls_key ({type(exc).__name__}: {exc})"
            ) from None

    def listeners(self) -> dict[str, list[str]]:
        """The ``[server]`` listeners by kind (sip_sign, sip_verify, rest)."""
        table = self.read_config().get("server", {})
        return {
            kind: [str(item) for item in table.get(kind, [])]
            for kind in ("sip_sign", "sip_verify", "rest")
            if isinstance(table, dict)
        }

    def sip_address(self, kind: str) -> tuple[str, int]:
        """The (host, port) of the first ``udp:`` listener of ``[server] kind`` (``sip_sign``
        or ``sip_verify``): where a test call into the lab goes."""
        for spec in self.listeners().get(kind, []):
            transport, _, rest = spec.partition(":")
            host, _, port = rest.rpartition(":")
            if transport == "udp" and host and port.isdigit():
                return host.removeprefix("[").removesuffix("]"), int(port)
        raise ConfigurationError(f"{self.config}: [server] {kind} has no udp: listener")

    def serve(
        self, *, host: str | None = None, port: int | None = None, log: TextIO | None = None
    ) -> RepositoryServer:
        """Bind the repository of ``[repository]`` (call ``start`` or ``serve_forever`` on the
        result); ``host`` and ``port`` override its listen address, port 0 picks a free one."""
        repo = self.repository()
        return serve_repository(
            repo.directory,
            host=host if host is not None else repo.host,
            port=port if port is not None else repo.port,
            tls_cert=repo.tls_certificate,
            tls_key=repo.tls_key,
            max_age=repo.max_age,
            log=log,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RepositorySettings:
    directory: Path
    host: str
    port: int
    tls_certificate: Path | None
    tls_key: Path | None
    max_age: int


def _listen(text: str) -> tuple[str, str, int]:
    """``transport:host:port`` (an IPv6 host in brackets) as its three parts."""
    transport, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    if transport not in ("http", "https") or not host or not port.isdigit():
        raise ValueError(f"listen {text!r} is not 'https:HOST:PORT'")
    return transport, host.removeprefix("[").removesuffix("]"), int(port)


def open_lab(directory: Path) -> Lab:
    """Read ``DIR/lab.json`` (written by :func:`init_lab`)."""
    path = directory / "lab.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(
            f"{directory} is not a lab (no lab.json; make one with 'shaken lab init')"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigurationError(f"{path} is not a {FORMAT} file")
    settings = data.get("settings")
    if not isinstance(settings, dict) or set(settings) - set(LabSettings.__dataclass_fields__):
        raise ConfigurationError(f"{path}: bad or unknown settings")
    return Lab(directory, LabSettings(**settings))


def init_lab(directory: Path, *, now: datetime, settings: LabSettings = LabSettings()) -> Lab:
    """Make a complete lab in ``directory`` (which must be new or empty)."""
    if directory.exists() and any(directory.iterdir()):
        raise ConfigurationError(f"{directory} is not empty; a lab needs a directory of its own")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    lab = Lab(directory, settings)
    ca = TestCa.init(
        lab.ca_dir,
        now=now,
        settings=CaSettings(
            org="Example Lab STI-CA (TEST ONLY)",
            repository_url=settings.repository_url,
            crl_url=lab.crl_url,
            publish_dir="../repo",
        ),
    )
    sp_key = generate_private_key()
    create_private(lab.sp_key, private_key_pem(sp_key))
    csr = build_csr(sp_key, spc=settings.spc, org=settings.org)
    write_atomic(lab.directory / "sp" / "sp.csr", csr.public_bytes(Encoding.PEM))
    issued = ca.issue(csr, now=now)
    write_atomic(lab.sp_chain, issued.chain_pem)
    write_atomic(lab.repo_dir / "sp.pem", issued.chain_pem)
    write_atomic(lab.repo_dir / BRAND_LOGO, brand_logo())
    _write_tls(lab, now)
    init_acquisition(lab, now=now)
    api_key = secrets.token_urlsafe(32)
    create_private(lab.directory / "secrets" / "rest-api-key", (api_key + "\n").encode())
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    write_atomic(lab.config, render_config(lab, api_key_sha256=digest).encode())
    record: dict[str, Any] = {"format": FORMAT, "notice": TEST_NOTICE, "settings": asdict(settings)}
    write_atomic(lab.directory / "lab.json", (json.dumps(record, indent=2) + "\n").encode())
    write_atomic(lab.directory / "README.txt", _readme(lab).encode())
    return lab


#: The lab brand's logo, served by the repository and digested into rcdi when signing.
BRAND_LOGO = "acme-logo.png"
BRAND_NAME = "Acme Bank"


def brand_logo() -> bytes:
    """A small real PNG (32x32, one colour): the lab brand's logo (RFC 9796 section 8.2)."""
    width = height = 32
    raw = b"".join(b"\x00" + b"\x1f\x4e\x9a" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _write_tls(lab: Lab, now: datetime) -> None:
    """A TLS CA and the repository's server certificate, trusted only by the lab verifier."""
    ca_key, server_key = generate_private_key(), generate_private_key()
    start = now - timedelta(hours=1)
    org = "Example Lab TLS (TEST ONLY)"
    ca = build_tls_ca(
        ca_key,
        cn="TEST shaken lab TLS CA",
        org=org,
        not_before=start,
        not_after=now + timedelta(days=3650),
    )
    hosts = [lab.settings.host, "127.0.0.1", "::1", "localhost"]
    server = build_tls_server_certificate(
        server_key.public_key(),
        hosts=hosts,
        org=org,
        ca=ca,
        ca_key=ca_key,
        not_before=start,
        not_after=now + timedelta(days=365),
    )
    tls = lab.directory / "tls"
    create_private(tls / "ca.key", private_key_pem(ca_key))
    create_private(tls / "server.key", private_key_pem(server_key))
    write_atomic(tls / "ca.pem", certificates_pem(ca))
    write_atomic(tls / "server.pem", certificates_pem(server))


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_config(lab: Lab, *, api_key_sha256: str) -> str:
    """The lab's ``shaken.toml`` in the schema of :mod:`shaken.config`, every key explained."""
    s = lab.settings
    ports = sorted({443, 8443, s.repository_port})
    last = int(s.tn_start) + s.tn_count - 1
    host = s.url_host
    q = _toml_string

    def listeners(port: int) -> str:
        return f"[{q(f'udp:{host}:{port}')}, {q(f'tcp:{host}:{port}')}]"

    loopback = '["127.0.0.0/8", "::1/128"]'
    base = f"""\
# shaken configuration of a TEST LAB, written by `shaken lab init`.
#
# TEST MATERIAL ONLY. Every key and certificate named here comes from the throwaway test
# STI-CA in ca/, which no real verifier trusts. Never use this file for real calls.
#
# Relative paths are relative to the directory of this file. `shaken config check` validates
# the file and the files it names; unknown keys and bad values are errors with their line.

[attestation]
# Signing (STI-AS) defaults. A [tn."..."] or [tn_range.NAME] entry overrides them for its
# numbers; a [profile.NAME] overrides them for the calls it applies to.
private_key = {q("sp/sp.key")}  # the SP's P-256 key (PEM, mode 0600) that signs PASSporTs
x5u = {q(lab.x5u)}  # where verifiers fetch our chain (x5u and info=)
attest = "A"  # the level for numbers that have a [tn] or [tn_range] entry
unknown_tn_attest = "C"  # callers with no entry are still signed, at C (gateway)

[tn_range.lab]
# One entry for many numbers: `count` consecutive TNs from `start` (canonical: digits only,
# no '+'), here {s.tn_start} to {last}. It takes the keys of a [tn."..."] entry.
start = {q(s.tn_start)}
count = {s.tn_count}
attest = "A"  # full attestation: the lab SP serves these numbers

[brand.acme]
# Branded calling (RFC 9795): the vetted brand of one lab number. Its calls carry rcd (name,
# logo), rcdi (the logo's digest) and crn (call reason) inside the SHAKEN PASSporT, and
# verifiers that present verified brands show "(Verified) {BRAND_NAME}".
nam = {q(BRAND_NAME)}  # the display name (rcd nam)
icn = {q(s.repository_url + BRAND_LOGO)}  # the logo's URL, served by the lab repository
icn_file = {q("repo/" + BRAND_LOGO)}  # its local copy: rcdi is computed from it
crn = "Account security alert"  # the call reason signed by default
call_reasons = ["Appointment reminder"]  # other reasons a REST client may ask for

[tn.{q(s.brand_tn)}]
# A number with a vetted brand: signed at A (the range's level) and with [brand.acme].
brand = "acme"

[verification]
# Verification (STI-VS) defaults.
trust_anchors = [{q("ca/root.pem")}]  # the STI-CA roots to trust (PEM files or directories)
# trust_list = {q("ca/trust-list.jwt")}  # instead: the STI-PA's signed list of roots
sti_pa_certificate = {q("ca/sti-pa.pem")}  # the STI-PA: checks that list, signs the CRL
crl_files = [{q("ca/crl.pem")}]  # the SHAKEN CRL; `shaken ca crl --ca ca` renews it
x5u_allowed_hosts = [{q(s.host)}]  # LAB: hosts exempt from the special-address rule
x5u_allowed_ports = {json.dumps(ports)}  # ports an x5u URL may name (SHAKEN: 443, 8443)
tls_ca_file = {q("tls/ca.pem")}  # LAB: the CA of the repository's TLS certificate
cache_dir = {q("cache")}  # fetched certificates, kept across restarts
max_iat_age = 60  # seconds a PASSporT's iat may be old (ATIS-1000074)
rcd_display = "prefix"  # a verified brand becomes the display name, after the prefix
rcd_display_prefix = "(Verified) "
rcd_call_info = true  # and its logo and call reason go in an RFC 9796 Call-Info header

# What each verification outcome does to a call: the PBX guide's PASS / STOP / ALERT.
[verification.on.verified]
action = "alert"  # ALERT: the display name says the caller was verified
display_prefix = "(Verified) "  # "Alice" is shown as "(Verified) Alice"

[verification.on.missing]
action = "alert"  # ALERT: no Identity at all; through, marked
display_prefix = "[No ID] "  # "Alice" is shown as "[No ID] Alice"

[verification.on.failed]
action = "reject"  # STOP: the RFC 8224 code of what failed (438, 403, 436, 437)

[profile.lab]
# Calls from loopback addresses: sign and verify with the settings above.
behavior = "both"  # sign, verify, both or off
sources = {loopback}  # the source addresses (CIDR) this profile applies to

[api_key.lab]
# A REST client of the lab. The key itself is in secrets/rest-api-key (0600); only its
# SHA-256 is here.
sha256 = {q(api_key_sha256)}
spcs = [{q(s.spc)}]  # it may sign with certificates of this SPC
profiles = ["lab"]  # the profiles its requests use
may_verify = true  # it may call the verification API

[server]
# Listeners ("transport:address:port").
sip_sign = {listeners(s.sip_signing_port)}  # SIP redirect: 302 + Identity
sip_verify = {listeners(s.sip_verification_port)}  # SIP redirect: 302 + verstat
rest = [{q(f"http:{host}:{s.rest_port}")}]  # ATIS-1000082 REST API
# A lab runs on a laptop beside other work: a request may wait up to a second in the queue
# before it is shed with 503 (a carrier's server keeps the 100 ms default).
udp_max_age_ms = 1000

[repository]
# The lab's certificate repository (STI-CR), run by `shaken lab up`.
directory = {q("repo")}  # what it serves: sp.pem, crl.der, ...
listen = {q(f"https:{host}:{s.repository_port}")}  # where (x5u above points here)
tls_certificate = {q("tls/server.pem")}  # its TLS certificate (issued by tls/ca.pem)
tls_key = {q("tls/server.key")}  # and key
max_age = 86400  # Cache-Control max-age, seconds (ATIS: cache at least a day)
"""
    return base + render_acquisition_config(lab)


def _readme(lab: Lab) -> str:
    s = lab.settings
    return f"""\
{TEST_NOTICE}

This directory is a STIR/SHAKEN test lab made by 'shaken lab init'. Its CA, keys and
certificates are test material: no real verifier trusts them.

  shaken lab up .    serve the certificate repository on {s.repository_url}
                     and run the SIP and REST servers of shaken.toml
  shaken lab call .  (while it runs) a SIP call, signed then verified; --spoof TN
                     tampers with it, --no-identity sends it unsigned
  shaken calls --db calls.sqlite       what the servers decided
  shaken cert acquire --config shaken.toml   (while it runs) obtain the SP certificate
                     through the lab's test STI-PA and ACME STI-CA; then cert status

SP: SPC {s.spc}, key sp/sp.key, chain sp/sp.pem, x5u {lab.x5u}
TNs {s.tn_start} to {int(s.tn_start) + s.tn_count - 1} are signed at attestation A, others at C.
Configuration for the servers: shaken.toml (see the comments in it);
check it with:  shaken config check shaken.toml
Revoke the SP certificate:  shaken ca revoke --ca ca SERIAL   (publishes repo/crl.der)
"""
