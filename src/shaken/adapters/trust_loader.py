"""Trust anchors from files: a PEM bundle, a directory of PEM files, an STI-PA trust list.

Three sources, combined:

* a PEM file of STI-CA roots (a bundle; DER of one certificate also works);
* a directory of plain PEM files (``*.pem``, ``*.crt``, ``*.cer``), read file by file, so no
  OpenSSL hash links are needed (Asterisk's ``ca_path`` silently ignored anything but hash
  links). Certificates in its ``crl-signers/`` subdirectory are CRL signers, not anchors;
* an STI-PA style trust list (the signed JWT of ``GET /api/v1/ca-list``), verified with the
  STI-PA certificate when one is given, refused unsigned unless explicitly allowed.

The STI-PA certificate is also taken as a CRL signer: the SHAKEN CRL is the STI-PA's
(ATIS-1000080 section 6.4.1). CRL files (``crl_files``) are read here too, by
:func:`load_crl_files`, for the CRL cache. :func:`reload_trust` swaps a
:class:`~shaken.services.trust.TrustStore` only when everything loaded, so a broken new file
keeps the old anchors running.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from shaken.config.typed import VerificationSettings
from shaken.core.certs import load_certificates
from shaken.core.chain import TrustAnchors
from shaken.core.errors import CertificateError, ConfigurationError
from shaken.core.trustlist import read_trust_list
from shaken.services.crl import parse_crl
from shaken.services.trust import TrustMaterial, TrustStore

__all__ = [
    "CRL_SIGNERS_DIR",
    "LoadedTrust",
    "TrustSources",
    "default_trust_dir",
    "fingerprint",
    "import_into_directory",
    "load_crl_files",
    "load_directory",
    "load_pem_file",
    "load_trust",
    "reload_trust",
    "trust_sources",
]

CRL_SIGNERS_DIR = "crl-signers"
_SUFFIXES = (".pem", ".crt", ".cer")


def default_trust_dir() -> Path:
    """``$SHAKEN_TRUST_DIR``, else ``~/.local/share/shaken/trust``."""
    configured = os.environ.get("SHAKEN_TRUST_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".local" / "share" / "shaken" / "trust"


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 over the DER, lower-case hex: how anchors are named and listed."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustSources:
    """Where the anchors come from. Every field is optional; together they must yield one root.

    :param allow_unsigned_list: accept a trust list without checking its signature (labs).
    """

    pem_files: tuple[Path, ...] = ()
    directories: tuple[Path, ...] = ()
    trust_list: Path | None = None
    sti_pa_cert: Path | None = None
    crl_signer_files: tuple[Path, ...] = ()
    allow_unsigned_list: bool = False

    @property
    def empty(self) -> bool:
        return not (self.pem_files or self.directories or self.trust_list)


def trust_sources(verification: VerificationSettings) -> TrustSources:
    """Where an effective ``[verification]`` takes its anchors and CRL signers from."""
    files: list[Path] = []
    directories: list[Path] = []
    for entry in verification.trust_anchors:
        path = Path(entry)
        (directories if path.is_dir() else files).append(path)
    sti_pa = verification.sti_pa_certificate
    trust_list = verification.trust_list
    return TrustSources(
        pem_files=tuple(files),
        directories=tuple(directories),
        trust_list=Path(trust_list) if trust_list else None,
        sti_pa_cert=Path(sti_pa) if sti_pa else None,
        crl_signer_files=(Path(sti_pa),) if sti_pa else (),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedTrust:
    """What :func:`load_trust` read, before it becomes a :class:`TrustMaterial`."""

    anchors: tuple[x509.Certificate, ...]
    crl_signers: tuple[x509.Certificate, ...]
    source: str


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{what} {path}: {exc.strerror or exc}") from None


def load_pem_file(path: str | os.PathLike[str]) -> tuple[x509.Certificate, ...]:
    """Every certificate of a PEM bundle (or one DER certificate).

    :raises ConfigurationError: unreadable, or not certificates (naming the file).
    """
    file = Path(path)
    try:
        return load_certificates(_read(file, "trust anchors:"))
    except CertificateError as exc:
        raise ConfigurationError(f"trust anchors: {file}: {exc}") from None


def load_directory(
    path: str | os.PathLike[str],
) -> tuple[tuple[x509.Certificate, ...], tuple[x509.Certificate, ...]]:
    """(anchors, CRL signers) from a directory of PEM files and its ``crl-signers/``.

    Symbolic links are followed but a certificate found twice (a hash link beside its file)
    counts once. An absent directory holds nothing; a file that does not parse is an error.
    """
    directory = Path(path)

    def read_all(where: Path) -> tuple[x509.Certificate, ...]:
        if not where.is_dir():
            return ()
        found: dict[str, x509.Certificate] = {}
        for file in sorted(where.iterdir()):
            if file.name.startswith(".") or file.suffix.lower() not in _SUFFIXES:
                continue
            if not file.is_file():
                continue
            for cert in load_pem_file(file):
                found.setdefault(fingerprint(cert), cert)
        return tuple(found.values())

    return read_all(directory), read_all(directory / CRL_SIGNERS_DIR)


def load_trust(sources: TrustSources, *, now: datetime) -> LoadedTrust:
    """Read every source; ``now`` checks the trust list's ``exp``.

    :raises ConfigurationError: a source is unreadable or malformed, a trust list's signature
        fails (or it is unsigned and that is not allowed), or nothing at all was found.
    """
    anchors: dict[str, x509.Certificate] = {}
    signers: dict[str, x509.Certificate] = {}
    described: list[str] = []

    def add(into: dict[str, x509.Certificate], certs: Iterable[x509.Certificate]) -> int:
        count = 0
        for cert in certs:
            if into.setdefault(fingerprint(cert), cert) is cert:
                count += 1
        return count

    for file in sources.pem_files:
        n = add(anchors, load_pem_file(file))
        described.append(f"{file} ({n})")
    for directory in sources.directories:
        roots, crl_signers = load_directory(directory)
        add(anchors, roots)
        add(signers, crl_signers)
        described.append(f"{directory}/ ({len(roots)})")
    sti_pa: x509.Certificate | None = None
    if sources.sti_pa_cert is not None:
        certs = load_pem_file(sources.sti_pa_cert)
        sti_pa = certs[0]
        add(signers, certs[:1])
    if sources.trust_list is not None:
        if sti_pa is None and not sources.allow_unsigned_list:
            raise ConfigurationError(
                f"trust list {sources.trust_list}: give the STI-PA certificate to verify it"
            )
        data = _read(sources.trust_list, "trust list")
        try:
            listed = read_trust_list(data, signer=sti_pa, now=now)
        except CertificateError as exc:
            raise ConfigurationError(f"trust list {sources.trust_list}: {exc}") from None
        n = add(anchors, listed.certificates)
        state = "signature checked" if listed.signature_checked else "UNSIGNED"
        described.append(f"{sources.trust_list} ({n}, {state})")
    for file in sources.crl_signer_files:
        add(signers, load_pem_file(file))
    if not anchors:
        raise ConfigurationError(
            "no trust anchors found" + (f" in {', '.join(described)}" if described else "")
        )
    return LoadedTrust(
        anchors=tuple(anchors.values()),
        crl_signers=tuple(signers.values()),
        source="; ".join(described),
    )


def load_crl_files(paths: Sequence[Path]) -> dict[str, bytes]:
    """Each CRL file (PEM or DER) by the name the CRL cache keeps it under, ``file:PATH``.

    Blocking; the CRL cache calls it again (off its event loop) on every refresh.

    :raises ConfigurationError: a file is unreadable or not a CRL (naming it).
    """
    bodies: dict[str, bytes] = {}
    for path in paths:
        data = _read(path, "crl_files:")
        try:
            parse_crl(data)
        except ValueError as exc:
            raise ConfigurationError(f"crl_files: {path} is not a CRL: {exc}") from None
        bodies[f"file:{path}"] = data
    return bodies


def reload_trust(store: TrustStore, sources: TrustSources, *, now: datetime) -> TrustMaterial:
    """Load ``sources`` and swap them into ``store``; on any error the old material stays.

    :raises ConfigurationError: as :func:`load_trust` (and ``store`` is unchanged).
    """
    loaded = load_trust(sources, now=now)
    return store.replace(
        TrustAnchors(certificates=loaded.anchors), loaded.crl_signers, source=loaded.source
    )


def import_into_directory(
    directory: str | os.PathLike[str],
    certificates: Sequence[x509.Certificate],
    *,
    crl_signer: bool = False,
) -> list[Path]:
    """Write each certificate as ``<fingerprint>.pem`` (atomically) into a trust directory.

    Returns the paths written; a certificate already present is left as it is.
    """
    target = Path(directory) / (CRL_SIGNERS_DIR if crl_signer else "")
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    written: list[Path] = []
    for cert in certificates:
        path = target / f"{fingerprint(cert)}.pem"
        if path.exists():
            continue
        fd, tmp = tempfile.mkstemp(dir=target, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(cert.public_bytes(Encoding.PEM))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(path)
    return written
