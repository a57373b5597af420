"""What ``shaken config check`` proves beyond the loader, and ``shaken serve`` before it binds.

The loader checks the file's text; this opens what the file names: private keys must load as
P-256 keys and not be readable by group or others, trust anchors and CRLs must parse. ``serve``
runs the same function as ``config check`` before it binds a socket, so a configuration that
``config check`` refuses never starts.

Revocation (issue 9 item 3: with ``crl_files`` and no STI-PA certificate, a revoked SP
certificate kept verifying while ``config check`` said OK): :func:`revocation_review` refuses a
revocation setup that cannot work. The SHAKEN CRL is an indirect CRL signed by the STI-PA
(ATIS-1000080 section 6.4.1), so ``revocation``, ``require_crl``, ``crl_unavailable`` or
``crl_files`` without a CRL signer (``sti_pa_certificate``, or ``crl-signers/`` in a
``trust_anchors`` directory) is a problem, and so is a CRL file that is no CRL or that neither a
signer nor an anchor verifies (it could never apply), CRL files with ``revocation = "off"``,
and revocation keys that contradict each other. The old spellings get a note; so does the
default (``soft``) without a signer, whose results then say ``warning:crl_unavailable``.
"""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path
from typing import Any

from cryptography import x509

from shaken.adapters.trust_loader import CRL_SIGNERS_DIR, load_directory, load_pem_file
from shaken.config import (
    ConfigError,
    Problem,
    Settings,
    VerificationSettings,
    effective_profile,
    load_config,
)
from shaken.config.schema import (
    REVOCATION_KEYS,
    revocation_conflict,
    revocation_spellings,
)
from shaken.core.certs import load_certificates
from shaken.core.errors import CertificateError, ConfigurationError
from shaken.core.jws import load_private_key
from shaken.services.crl import parse_crl

__all__ = ["check_files", "load_checked", "revocation_review"]


def load_checked(path: str | Path) -> Settings:
    """The configuration file, proven as ``shaken config check`` proves it.

    :raises ConfigError: the text or a file it names has problems, each with its line.
    """
    settings = load_config(path)
    problems = check_files(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def check_files(settings: Settings) -> list[Problem]:
    """Every problem with the files ``settings`` name, each with its file, key and line."""
    problems: list[Problem] = []

    def add(path: tuple[str, ...], message: str) -> None:
        problems.append(Problem(settings.source, settings.line_of(*path), ".".join(path), message))

    def check_key(path: tuple[str, ...], file: str) -> None:
        try:
            mode = Path(file).stat().st_mode
            load_private_key(Path(file).read_bytes())
        except OSError as exc:
            add(path, f"cannot read {file}: {exc.strerror}")
            return
        except ConfigurationError as exc:
            add(path, f"{file}: {exc}")
            return
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            add(path, f"{file} is readable by group or others; chmod 600 it")

    def check_certs(path: tuple[str, ...], file: str) -> None:
        target = Path(file)
        files = sorted(target.glob("*.pem")) if target.is_dir() else [target]
        if target.is_dir() and not files:
            add(path, f"{file} holds no .pem files")
        for one in files:
            try:
                load_certificates(one.read_bytes())
            except OSError as exc:
                add(path, f"cannot read {one}: {exc.strerror}")
            except CertificateError as exc:
                add(path, f"{one}: {exc}")

    sections: list[tuple[tuple[str, ...], Any]] = [(("attestation",), settings.attestation)]
    sections += [(("profile", n), v) for n, v in settings.profiles.items()]
    sections += [(("tn", n), v) for n, v in settings.tns.items()]
    sections += [(("tn_range", n), v) for n, v in settings.tn_ranges.items()]
    for path, values in sections:
        if "private_key" in values:
            check_key((*path, "private_key"), values["private_key"])
    vsections: list[tuple[tuple[str, ...], Any]] = [(("verification",), settings.verification)]
    vsections += [(("profile", n), v) for n, v in settings.profiles.items()]
    for path, values in vsections:
        # What this layer itself names (unset: none), so a file is checked where it is given.
        given = VerificationSettings.of(values)
        for anchor in given.trust_anchors:
            check_certs((*path, "trust_anchors"), anchor)
        for key, file in (
            ("sti_pa_certificate", given.sti_pa_certificate),
            ("tls_ca_file", given.tls_ca_file),
        ):
            if file is not None:
                check_certs((*path, key), file)
        for crl in given.crl_files:
            if not Path(crl).is_file():
                add((*path, "crl_files"), f"cannot read {crl}")
    _lifecycle_problems(settings, add, check_key, check_certs)
    problems += revocation_review(settings)[0]
    return problems


def revocation_review(settings: Settings) -> tuple[list[Problem], list[Problem]]:
    """Problems and notes about revocation (see the module docstring).

    ``[verification]`` and each profile that sets a key revocation depends on are looked at
    with their effective values. Notes are for ``config check`` to print; they refuse nothing.
    """
    problems: list[Problem] = []
    notes: list[Problem] = []

    def at(into: list[Problem], path: tuple[str, ...], message: str) -> None:
        into.append(Problem(settings.source, settings.line_of(*path), ".".join(path), message))

    tables: list[tuple[tuple[str, ...], str | None, Any]] = [
        (("verification",), None, settings.verification)
    ]
    tables += [
        (("profile", n), n, v)
        for n, v in settings.profiles.items()
        if any(k in v for k in _REVOCATION_INPUTS)
    ]
    for path, name, raw in tables:
        try:
            values = effective_profile(settings, name).verification_settings
        except ConfigurationError:
            continue  # the loader's checks report it
        conflict = revocation_conflict(raw)
        if conflict is not None:
            at(problems, (*path, "revocation"), conflict)
        for key, explanation in revocation_spellings(raw):
            at(notes, (*path, key), f"note: {explanation}")
        mode = values.revocation
        explicit = next((k for k in REVOCATION_KEYS if k in raw), None)
        crl_files = [Path(f) for f in values.crl_files]
        files_key = (*path, "crl_files")
        if mode == "off":
            if crl_files:
                at(problems, files_key, 'CRL files are given but revocation = "off" ignores them')
            continue
        anchors, signers = _trust_of(values)
        for file in crl_files:
            try:
                crl = parse_crl(file.read_bytes())
            except OSError:
                continue  # check_files says it cannot be read
            except ValueError as exc:
                at(problems, files_key, f"{file} is not a CRL: {exc}")
                continue
            if not any(_signs(cert, crl) for cert in (*signers, *anchors)):
                at(
                    problems,
                    files_key,
                    f"{file} is signed by {crl.issuer.rfc4514_string()}, which no trust anchor"
                    " or CRL signer verifies, so it could never apply: " + _SIGNER_HINT,
                )
        if signers:
            continue
        if explicit is not None:
            at(
                problems,
                (*path, explicit),
                f'revocation = "{mode}" cannot check SHAKEN CRLs without the STI-PA'
                f' certificate: {_SIGNER_HINT} (or set revocation = "off" to say so)',
            )
        elif not crl_files:
            at(
                notes,
                path if name is None else (*path, "revocation"),
                'note: revocation is "soft" by default, but SHAKEN CRLs cannot be checked'
                " without the STI-PA certificate: every verification will say"
                f" warning:crl_unavailable; {_SIGNER_HINT}",
            )
    return problems, notes


#: Keys whose values decide whether revocation can work in a table.
_REVOCATION_INPUTS = (*REVOCATION_KEYS, "crl_files", "sti_pa_certificate", "trust_anchors")

_SIGNER_HINT = (
    "the SHAKEN CRL is an indirect CRL signed by the STI-PA (ATIS-1000080 section 6.4.1); set"
    f" sti_pa_certificate, or put the STI-PA certificate in {CRL_SIGNERS_DIR}/ of a"
    " trust_anchors directory"
)


def _trust_of(
    values: VerificationSettings,
) -> tuple[tuple[x509.Certificate, ...], tuple[x509.Certificate, ...]]:
    """The anchors (files and directories) and CRL signers a profile has, as the server
    loads them; what does not load is left out (:func:`check_files` reports it)."""
    anchors: list[x509.Certificate] = []
    signers: list[x509.Certificate] = []
    for entry in values.trust_anchors:
        try:
            if Path(entry).is_dir():
                roots, crl_signers = load_directory(entry)
                anchors += roots
                signers += crl_signers
            else:
                anchors += load_pem_file(entry)
        except ConfigurationError:
            continue
    sti_pa = values.sti_pa_certificate
    if sti_pa:
        with contextlib.suppress(ConfigurationError):
            signers += load_pem_file(sti_pa)[:1]
    return tuple(anchors), tuple(signers)


def _signs(cert: x509.Certificate, crl: x509.CertificateRevocationList) -> bool:
    if crl.issuer != cert.subject:
        return False
    try:
        return crl.is_signature_valid(cert.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _lifecycle_problems(settings: Settings, add: Any, check_key: Any, check_certs: Any) -> None:
    """The files of ``[sti_pa]``, ``[acme]`` and ``[lifecycle]`` (reported through ``add``)."""
    # Imported here: the STI-PA client pulls in httpx, which config check otherwise never needs.
    from shaken.adapters.stipa import StiPaCredentials  # noqa: PLC0415
    from shaken.adapters.store.generations import read_manifest  # noqa: PLC0415

    sti_pa, acme = settings.sti_pa_settings, settings.acme_settings
    lifecycle = settings.lifecycle_settings
    if sti_pa is not None and sti_pa.token_command is None:
        try:
            StiPaCredentials.load(sti_pa.credentials_file)
        except ConfigurationError as exc:
            add(("sti_pa", "credentials_file"), str(exc))
        for key, file in (
            ("root_certificate", sti_pa.root_certificate),
            ("tls_ca_file", sti_pa.tls_ca_file),
        ):
            if file is not None:
                check_certs(("sti_pa", key), file)
    if acme is not None:
        account_key = Path(acme.account_key)
        if account_key.exists():
            check_key(("acme", "account_key"), acme.account_key)
        elif not account_key.parent.is_dir():
            add(("acme", "account_key"), f"{account_key.parent} does not exist")
        if acme.tls_ca_file is not None:
            check_certs(("acme", "tls_ca_file"), acme.tls_ca_file)
    if lifecycle is not None:
        directory = Path(lifecycle.directory)
        try:
            manifest = read_manifest(directory)
        except ConfigurationError as exc:
            add(("lifecycle", "directory"), str(exc))
        else:
            if manifest is not None:
                check_key(("lifecycle", "directory"), manifest.key_file)
        publish_dir = lifecycle.publish_dir
        if publish_dir is not None and not Path(publish_dir).is_dir():
            add(("lifecycle", "publish_dir"), f"{publish_dir} is not a directory")
