"""A test STI-PA / STI-CA in a directory: root, intermediate, SP and delegate issuance, CRLs.

TEST MATERIAL. Every CA certificate's subject says TEST, the keys sit unencrypted (mode 0600)
next to the certificates, and nothing a :class:`TestCa` issues should sign a real call. It
exists so operators can try the product before a real STI-CA issues them a certificate, and
so tests meet the same PKI shape real verifiers meet.

Layout of a CA directory::

    root.pem  root.key                  self-signed STI-CA root ("TEST SHAKEN ROOT CA")
    intermediate.pem  intermediate.key  the issuing STI-CA, signed by the root
    sti-pa.pem  sti-pa.key              the STI-PA: signs the SHAKEN CRL and the trust list
    index.json                          settings, the CRL number, every issued serial
    crl.der  crl.pem                    the current SHAKEN CRL (signed by the STI-PA)
    trust-list.jwt                      an STI-PA style signed list of the approved roots
    issued/<serial>.pem                 each issued certificate
    issued/<serial>-chain.pem           its x5u body: the certificate, then its CAs up to
                                        (not including) the root

The CRL is the SHAKEN one (ATIS-1000080 section 6.4.1): every certificate below the root names
the STI-PA's CRL URL (``crl_url``) and, as ``cRLIssuer``, the STI-PA's name; the STI-PA signs
an *indirect* CRL that can revoke the intermediate and any SP certificate. When the settings
name a ``publish_dir`` (the directory a certificate repository serves), the CRL, the trust
list and each issued chain (as ``<serial>.pem``, a stable URL per certificate, RFC 8224
section 7.4) are copied there too.

One writer at a time: the index is replaced atomically, but two concurrent ``issue`` calls
could each miss the other's record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from shaken.core.certs import TNAUTHLIST_OID, Spc, TNAuthList, TNEntry, load_certificates
from shaken.core.claimconstraints import ClaimConstraints
from shaken.core.errors import CertificateError, ConfigurationError
from shaken.core.jws import (
    PrivateKey,
    PublicKey,
    generate_private_key,
    is_es256_public_key,
    load_private_key,
    private_key_pem,
)
from shaken.core.trustlist import make_trust_list
from shaken.files import create_private, write_atomic
from shaken.toolkit.x509build import (
    SHAKEN_CP_1_4,
    RevokedEntry,
    build_certificate,
    build_crl,
    certificates_pem,
    check_spc,
    key_usage,
    shaken_name,
)

__all__ = ["CaSettings", "IssuedCertificate", "TestCa", "parse_serial"]

FORMAT = "shaken-test-ca/1"
TEST_NOTICE = "TEST MATERIAL: a throwaway test STI-PA/STI-CA. Never use it for real calls."

_REASONS = {flag.value: flag for flag in x509.ReasonFlags}
# RFC 5280 section 5.3.1: "unspecified" is better left out, removeFromCRL is for delta CRLs.
del _REASONS["unspecified"], _REASONS["removeFromCRL"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CaSettings:
    """What a CA directory remembers about itself (stored in ``index.json``).

    ``repository_url`` is the base URL the published files are served under (with a trailing
    slash); ``crl_url`` is what every CRL Distribution Point names; ``publish_dir`` (relative
    to the CA directory, or absolute) is where the served copies go, or None.
    """

    org: str = "Example STI-CA (TEST ONLY)"
    country: str = "US"
    repository_url: str = "https://127.0.0.1:8443/"
    crl_url: str = "https://127.0.0.1:8443/crl.der"
    publish_dir: str | None = None
    policy: str = SHAKEN_CP_1_4
    leaf_days: int = 365
    crl_days: int = 7
    trust_list_days: int = 30

    def __post_init__(self) -> None:
        shaken_name("SHAKEN", self.org, self.country)  # validates org and country
        if not self.repository_url.endswith("/"):
            raise ConfigurationError(
                f"repository URL {self.repository_url!r} must end with '/' (a base URL)"
            )
        for name in ("leaf_days", "crl_days", "trust_list_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive number of days")

    @classmethod
    def from_json(cls, data: object) -> CaSettings:
        if not isinstance(data, dict):
            raise ConfigurationError("index.json: 'settings' is not an object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigurationError(f"index.json: unknown settings {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedCertificate:
    """What :meth:`TestCa.issue` made: the certificate, its chain and where they were written."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    path: Path
    chain_path: Path
    published_url: str | None = None
    delegation_ca: x509.Certificate | None = field(default=None, repr=False)

    @property
    def serial_hex(self) -> str:
        return format(self.certificate.serial_number, "x")

    @property
    def chain_pem(self) -> bytes:
        return certificates_pem(*self.chain)


def parse_serial(text: str) -> int:
    """A serial number given as hex (``1a2b``, ``0x1a2b``, ``1A:2B``), as openssl prints it."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    if not cleaned or not re.fullmatch(r"[0-9a-f]+", cleaned):
        raise ConfigurationError(f"{text!r} is not a hexadecimal serial number")
    return int(cleaned, 16)


def _write_key(path: Path, key: PrivateKey) -> None:
    create_private(path, private_key_pem(key))


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return load_certificates(path.read_bytes())[0]
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from None
    except CertificateError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None


def _load_key(path: Path) -> PrivateKey:
    try:
        return load_private_key(path.read_bytes())
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from None


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ConfigurationError("the CA needs a timezone-aware 'now'")
    return now.replace(microsecond=0)


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else bytes(value).decode("latin-1")


# Notes on time: certificates start an hour before "now" so a verifier whose clock is a little
# behind ours still accepts them; CRLs start at "now" (thisUpdate is a statement of fact).
_BACKDATE = timedelta(hours=1)


class TestCa:
    """A CA directory (see the module docstring). Open one with :meth:`open`, make one with
    :meth:`init`."""

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(self, directory: Path, index: dict[str, Any]) -> None:
        self.directory = directory
        self._index = index
        self.settings = CaSettings.from_json(index.get("settings"))
        self.root = _load_cert(directory / "root.pem")
        self.intermediate = _load_cert(directory / "intermediate.pem")
        self.sti_pa = _load_cert(directory / "sti-pa.pem")

    # ------------------------------------------------------------------ creating and opening

    @classmethod
    def init(
        cls,
        directory: Path,
        *,
        now: datetime,
        settings: CaSettings = CaSettings(),
        root_days: int = 3650,
        intermediate_days: int = 1825,
    ) -> TestCa:
        """Create the hierarchy in ``directory`` (new, or empty) and publish the first CRL."""
        now = _aware(now)
        if directory.exists() and any(directory.iterdir()):
            raise ConfigurationError(f"{directory} is not empty; a CA needs a directory of its own")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        root_key, intermediate_key, pa_key = (generate_private_key() for _ in range(3))
        start = now - _BACKDATE
        org, country = settings.org, settings.country
        sti_pa = build_certificate(
            # Like the real "CN=STI-PA CRL,O=STI-PA,C=US": its own self-signed name, not an STI-CA.
            subject=shaken_name("TEST STI-PA CRL", "Example STI-PA (TEST ONLY)", country),
            public_key=pa_key.public_key(),
            issuer=None,
            issuer_key=pa_key,
            not_before=start,
            not_after=now + timedelta(days=root_days),
            # It signs CRLs (cRLSign) and the trust list JWT (digitalSignature) but never a
            # certificate, so cA FALSE; it is no STI-CA, and the SHAKEN profile does not apply.
            ca=False,
            usage=key_usage(digital_signature=True, crl_sign=True),
        )
        root = build_certificate(
            subject=shaken_name("TEST SHAKEN ROOT CA", org, country),
            public_key=root_key.public_key(),
            issuer=None,
            issuer_key=root_key,
            not_before=start,
            not_after=now + timedelta(days=root_days),
            ca=True,
        )
        intermediate = build_certificate(
            subject=shaken_name("TEST SHAKEN Intermediate CA", org, country),
            public_key=intermediate_key.public_key(),
            issuer=root,
            issuer_key=root_key,
            not_before=start,
            not_after=min(now + timedelta(days=intermediate_days), root.not_valid_after_utc),
            ca=True,
            policy=settings.policy,
            crl_url=settings.crl_url,
            crl_issuer=sti_pa.subject,
        )
        for name, key in (
            ("root", root_key),
            ("intermediate", intermediate_key),
            ("sti-pa", pa_key),
        ):
            _write_key(directory / f"{name}.key", key)
        for name, cert in (("root", root), ("intermediate", intermediate), ("sti-pa", sti_pa)):
            write_atomic(directory / f"{name}.pem", certificates_pem(cert))
        (directory / "issued").mkdir(exist_ok=True)
        index: dict[str, Any] = {
            "format": FORMAT,
            "notice": TEST_NOTICE,
            "settings": asdict(settings),
            "crl_number": 0,
            "certificates": {},
        }
        write_atomic(directory / "README.txt", _readme(settings).encode())
        ca = cls(directory, index)
        ca._record(intermediate, kind="intermediate", path=directory / "intermediate.pem")
        ca._save()
        ca.publish_crl(now=now)
        ca.write_trust_list(now=now)
        if ca.publish_dir is not None:
            write_atomic(ca.publish_dir / "sti-pa.pem", certificates_pem(sti_pa))
        return ca

    @classmethod
    def open(cls, directory: Path) -> TestCa:
        """Open an existing CA directory."""
        path = directory / "index.json"
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(
                f"{directory} is not a CA directory (no index.json; make one with 'shaken ca init')"
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read {path}: {exc}") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise ConfigurationError(f"{path} is not a {FORMAT} index")
        return cls(directory, index)

    @property
    def publish_dir(self) -> Path | None:
        if self.settings.publish_dir is None:
            return None
        return (self.directory / self.settings.publish_dir).resolve()

    def _key(self, name: str) -> PrivateKey:
        return _load_key(self.directory / f"{name}.key")

    def _save(self) -> None:
        data = json.dumps(self._index, indent=2, sort_keys=True) + "\n"
        write_atomic(self.directory / "index.json", data.encode())

    def _record(self, cert: x509.Certificate, *, kind: str, path: Path) -> None:
        self._index["certificates"][format(cert.serial_number, "x")] = {
            "kind": kind,
            "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(),
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "file": path.relative_to(self.directory).as_posix(),
            "revoked": None,
        }

    @property
    def records(self) -> dict[str, dict[str, Any]]:
        """Serial (hex) -> record, as stored in ``index.json`` (a copy)."""
        return json.loads(json.dumps(self._index["certificates"]))  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------------- issuing

    def issue(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        now: datetime,
        days: int | None = None,
        spc: str | None = None,
        tn_entries: Sequence[TNEntry] = (),
        subject_cn: str | None = None,
        claim_constraints: ClaimConstraints | None = None,
    ) -> IssuedCertificate:
        """Issue an SP certificate for ``csr``, or an RFC 9060 delegate when TNs are asked for.

        The SPC comes from the CSR's TNAuthList or ``spc`` (they must agree when both are
        given); the subject is ``CN=SHAKEN <SPC>`` with the CSR's O and C. TN entries come
        from ``tn_entries`` or, failing that, from TN entries in the CSR's TNAuthList.

        Without TN entries the result is the profile's SP certificate (TNAuthList = the SPC).
        With them, the CA first issues a delegation CA (cA TRUE, pathLen 0, TNAuthList = the
        SPC plus the TNs) under the intermediate and, under it, the delegate end-entity
        certificate whose TNAuthList is the TNs: RFC 9060 section 4, the parent's list
        encompasses the child's. The delegation CA's key signs that one certificate and is
        then discarded, so nothing else can ever be issued under it.

        ``subject_cn`` keeps the CSR's CN when it is ``SHAKEN <SPC>`` followed by a suffix (a
        unique CN per certificate, which CAs such as Peeringhub require).

        ``claim_constraints`` go into the end-entity certificate (RFC 8226 section 8 or, when
        enhanced, RFC 9118): a branded-calling certificate that pins the ``rcd`` it vetted.
        """
        now = _aware(now)
        if not csr.is_signature_valid:
            raise ConfigurationError("the CSR's signature does not verify")
        public_key = csr.public_key()
        if not isinstance(public_key, PublicKey) or not is_es256_public_key(public_key):
            raise ConfigurationError("the CSR's key is not a P-256 EC key (ATIS-1000080)")
        requested = _csr_tnauthlist(csr)
        csr_spc = requested.spc if requested is not None else None
        if spc is not None and csr_spc is not None and spc != csr_spc:
            raise ConfigurationError(f"--spc {spc} differs from the CSR's TNAuthList SPC {csr_spc}")
        chosen = spc if spc is not None else csr_spc
        if chosen is None:
            raise ConfigurationError("the CSR has no TNAuthList SPC; name one with --spc")
        check_spc(chosen)
        entries = tuple(tn_entries)
        if not entries and requested is not None:
            entries = tuple(e for e in requested.entries if not isinstance(e, Spc))
        org = _attr(csr.subject, NameOID.ORGANIZATION_NAME)
        if org is None:
            raise ConfigurationError("the CSR subject has no O (ATIS-1000080 v004 requires one)")
        country = _attr(csr.subject, NameOID.COUNTRY_NAME) or self.settings.country
        cn = f"SHAKEN {chosen}"
        if subject_cn is not None and subject_cn != cn:
            if not subject_cn.startswith(cn + " ") or len(subject_cn) > 64:
                raise ConfigurationError(
                    f"the CSR's CN {subject_cn!r} is not 'SHAKEN {chosen}' (ATIS-1000080 6.4.1)"
                )
            cn = subject_cn
        subject = shaken_name(cn, org, country)
        start = now - _BACKDATE
        end = now + timedelta(days=days if days is not None else self.settings.leaf_days)
        end = min(end, self.intermediate.not_valid_after_utc)
        pa_name = self.sti_pa.subject
        common: dict[str, Any] = {
            "not_before": start,
            "not_after": end,
            "policy": self.settings.policy,
            "crl_url": self.settings.crl_url,
            "crl_issuer": pa_name,
        }
        intermediate_key = self._key("intermediate")
        delegation_ca: x509.Certificate | None = None
        if not entries:
            cert = build_certificate(
                subject=subject,
                public_key=public_key,
                issuer=self.intermediate,
                issuer_key=intermediate_key,
                ca=False,
                tnauthlist=TNAuthList(entries=(Spc(code=chosen),)),
                claim_constraints=claim_constraints,
                **common,
            )
            chain: tuple[x509.Certificate, ...] = (cert, self.intermediate)
            kind = "sp"
        else:
            delegation_key = generate_private_key()
            delegation_ca = build_certificate(
                subject=shaken_name(f"SHAKEN {chosen} TEST Delegation CA", org, country),
                public_key=delegation_key.public_key(),
                issuer=self.intermediate,
                issuer_key=intermediate_key,
                ca=True,
                path_length=0,
                tnauthlist=TNAuthList(entries=(Spc(code=chosen), *entries)),
                **common,
            )
            cert = build_certificate(
                subject=subject,
                public_key=public_key,
                issuer=delegation_ca,
                issuer_key=delegation_key,
                ca=False,
                tnauthlist=TNAuthList(entries=entries),
                claim_constraints=claim_constraints,
                **common,
            )
            del delegation_key
            chain = (cert, delegation_ca, self.intermediate)
            kind = "delegate"
            ca_path = self.directory / "issued" / f"{format(delegation_ca.serial_number, 'x')}.pem"
            write_atomic(ca_path, certificates_pem(delegation_ca))
            self._record(delegation_ca, kind="delegation-ca", path=ca_path)
        serial = format(cert.serial_number, "x")
        path = self.directory / "issued" / f"{serial}.pem"
        chain_path = self.directory / "issued" / f"{serial}-chain.pem"
        write_atomic(path, certificates_pem(cert))
        write_atomic(chain_path, certificates_pem(*chain))
        self._record(cert, kind=kind, path=path)
        self._index["certificates"][serial]["chain"] = chain_path.relative_to(
            self.directory
        ).as_posix()
        published_url = None
        if self.publish_dir is not None:
            write_atomic(self.publish_dir / f"{serial}.pem", certificates_pem(*chain))
            published_url = f"{self.settings.repository_url}{serial}.pem"
            self._index["certificates"][serial]["url"] = published_url
        self._save()
        return IssuedCertificate(
            certificate=cert,
            chain=chain,
            path=path,
            chain_path=chain_path,
            published_url=published_url,
            delegation_ca=delegation_ca,
        )

    # ---------------------------------------------------------------------------- revocation

    def revoke(
        self, serial: int, *, now: datetime, reason: str | None = None
    ) -> x509.CertificateRevocationList:
        """Mark ``serial`` revoked and publish a new CRL (which this returns).

        :raises ConfigurationError: the serial is not one this CA issued, or already revoked,
            or ``reason`` is not an RFC 5280 reason name (keyCompromise, superseded, ...).
        """
        now = _aware(now)
        key = format(serial, "x")
        record = self._index["certificates"].get(key)
        if record is None:
            raise ConfigurationError(f"serial {key} was not issued by this CA (see index.json)")
        if record["revoked"] is not None:
            raise ConfigurationError(f"serial {key} is already revoked")
        if reason is not None and reason not in _REASONS:
            raise ConfigurationError(
                f"unknown revocation reason {reason!r}; one of {', '.join(sorted(_REASONS))}"
            )
        record["revoked"] = {"at": now.isoformat(), "reason": reason}
        self._save()
        return self.publish_crl(now=now)

    def publish_crl(
        self, *, now: datetime, days: int | None = None
    ) -> x509.CertificateRevocationList:
        """Sign a new SHAKEN CRL with the STI-PA key; write ``crl.der``/``crl.pem`` (and publish).

        The CRL number goes up by one each time (RFC 5280 section 5.2.3).
        """
        now = _aware(now)
        entries = []
        for serial_hex, record in sorted(self._index["certificates"].items()):
            if record["revoked"] is None:
                continue
            issuer = _load_cert(self.directory / record["file"]).issuer
            reason = record["revoked"]["reason"]
            entries.append(
                RevokedEntry(
                    serial=int(serial_hex, 16),
                    revoked_at=datetime.fromisoformat(record["revoked"]["at"]),
                    reason=_REASONS[reason] if reason is not None else None,
                    certificate_issuer=issuer,
                )
            )
        number = int(self._index["crl_number"]) + 1
        crl = build_crl(
            issuer=self.sti_pa,
            issuer_key=self._key("sti-pa"),
            revoked=entries,
            this_update=now,
            next_update=now + timedelta(days=days if days is not None else self.settings.crl_days),
            crl_number=number,
            indirect_url=self.settings.crl_url,
        )
        self._index["crl_number"] = number
        self._save()
        der = crl.public_bytes(serialization.Encoding.DER)
        write_atomic(self.directory / "crl.der", der)
        write_atomic(self.directory / "crl.pem", crl.public_bytes(serialization.Encoding.PEM))
        if self.publish_dir is not None:
            name = self.settings.crl_url.rstrip("/").rsplit("/", 1)[-1] or "crl.der"
            write_atomic(self.publish_dir / name, der)
        return crl

    # ---------------------------------------------------------------------------- trust list

    def write_trust_list(
        self, *, now: datetime, days: int | None = None, path: Path | None = None
    ) -> str:
        """Sign the trust list (the approved STI-CA roots) with the STI-PA key and write it.

        The JWS header's ``x5u`` points at ``sti-pa.pem`` under the repository URL, where
        :meth:`init` publishes the STI-PA certificate when there is a ``publish_dir``.
        """
        now = _aware(now)
        lifetime = timedelta(days=days if days is not None else self.settings.trust_list_days)
        token = make_trust_list(
            [self.root],
            self._key("sti-pa"),
            iat=int(now.timestamp()),
            exp=int((now + lifetime).timestamp()),
            x5u=f"{self.settings.repository_url}sti-pa.pem",
        )
        data = (token + "\n").encode("ascii")
        write_atomic(path if path is not None else self.directory / "trust-list.jwt", data)
        if self.publish_dir is not None:
            write_atomic(self.publish_dir / "trust-list.jwt", data)
        return token


def _csr_tnauthlist(csr: x509.CertificateSigningRequest) -> TNAuthList | None:
    """The TNAuthList a CSR requests, read like a certificate's (None when absent)."""
    try:
        extension = csr.extensions.get_extension_for_oid(TNAUTHLIST_OID)
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise ConfigurationError(f"the CSR's extensions do not parse: {exc}") from None
    value = extension.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else value.public_bytes()
    try:
        return TNAuthList.from_der(raw)
    except CertificateError as exc:
        raise ConfigurationError(f"the CSR's TNAuthList is malformed: {exc}") from None


def _readme(settings: CaSettings) -> str:
    return (
        f"{TEST_NOTICE}\n\n"
        "This directory is a test STI-PA/STI-CA made by 'shaken ca init'. Its keys are\n"
        "unencrypted. Certificates it issues chain to root.pem, which no real verifier trusts.\n\n"
        f"CRL distribution point: {settings.crl_url}\n"
        f"Repository base URL:    {settings.repository_url}\n"
    )
