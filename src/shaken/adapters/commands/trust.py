"""``shaken trust``: list and import the STI-CA roots (and CRL signers) a verifier trusts.

The trust directory is ``--trust-dir``, else ``$SHAKEN_TRUST_DIR``, else
``~/.local/share/shaken/trust``: plain PEM files named by SHA-256 fingerprint (no OpenSSL hash
links), with CRL signers (the STI-PA) in ``crl-signers/``. ``shaken verify`` reads the same
directory. ``import`` takes a PEM/DER file of roots, or an STI-PA trust list (the signed JWT of
``GET /api/v1/ca-list``), verified with ``--sti-pa-cert``.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from shaken.adapters.cli import EXIT_OK, UsageError, now_of
from shaken.adapters.trust_loader import (
    default_trust_dir,
    fingerprint,
    import_into_directory,
    load_directory,
    load_pem_file,
)
from shaken.core.certs import load_certificates
from shaken.core.errors import CertificateError, ConfigurationError
from shaken.core.trustlist import read_trust_list

__all__ = ["register"]


def _directory(args: argparse.Namespace) -> Path:
    return Path(args.trust_dir) if args.trust_dir else default_trust_dir()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


def _record(cert: x509.Certificate, role: str, now: datetime) -> dict[str, Any]:
    return {
        "role": role,
        "fingerprint": fingerprint(cert),
        "subject": cert.subject.rfc4514_string(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "expired": cert.not_valid_after_utc < now,
        "ca": _is_ca(cert),
    }


def cmd_trust_list(args: argparse.Namespace) -> int:
    directory = _directory(args)
    try:
        anchors, signers = load_directory(directory)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    now = now_of(args)
    records = [_record(c, "anchor", now) for c in anchors]
    records += [_record(c, "crl_signer", now) for c in signers]
    if args.json:
        for record in records:
            print(json.dumps(record, sort_keys=True))
        return EXIT_OK
    if not records:
        print(f"no trust anchors in {directory}")
        return EXIT_OK
    for r in records:
        flag = "  EXPIRED" if r["expired"] else ""
        print(f"{r['role']:<10} {r['fingerprint'][:16]}  {r['subject']}")
        print(f"{'':<10} until {r['not_after']}{flag}")
    return EXIT_OK


def _certificates_of(args: argparse.Namespace, data: bytes) -> tuple[list[x509.Certificate], str]:
    """The certificates to import and a word on where they came from."""
    stripped = data.lstrip()
    if stripped.startswith(b"-----BEGIN") or stripped[:1] == b"\x30":
        try:
            return list(load_certificates(data)), "certificate file"
        except CertificateError as exc:
            raise UsageError(f"{args.file}: {exc}") from None
    # Otherwise it should be an STI-PA trust list (a JWS, or {"caList": "<JWS>"}).
    signer = None
    if args.sti_pa_cert:
        try:
            signer = load_pem_file(args.sti_pa_cert)[0]
        except ConfigurationError as exc:
            raise UsageError(f"--sti-pa-cert: {exc}") from None
    elif not args.allow_unsigned:
        raise UsageError(
            f"{args.file} looks like a trust list: give --sti-pa-cert FILE to verify it"
            " (or --allow-unsigned in a lab)"
        )
    try:
        listed = read_trust_list(data, signer=signer, now=now_of(args))
    except CertificateError as exc:
        raise UsageError(f"{args.file}: {exc}") from None
    state = "signature checked" if listed.signature_checked else "signature NOT checked"
    return list(listed.certificates), f"trust list, {state}"


def cmd_trust_import(args: argparse.Namespace) -> int:
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    certificates, origin = _certificates_of(args, data)
    directory = _directory(args)
    for cert in certificates:
        if not args.crl_signer and not _is_ca(cert):
            raise UsageError(
                f"{cert.subject.rfc4514_string()} is not a CA certificate; an STI-CA root is"
            )
    try:
        written = import_into_directory(directory, certificates, crl_signer=args.crl_signer)
        if args.sti_pa_cert and origin.startswith("trust list"):
            # The STI-PA that signs the list also signs the SHAKEN CRL (ATIS-1000080 6.4.1).
            written += import_into_directory(
                directory, load_pem_file(args.sti_pa_cert)[:1], crl_signer=True
            )
    except OSError as exc:
        raise UsageError(f"cannot write to {directory}: {exc.strerror or exc}") from None
    role = "CRL signer(s)" if args.crl_signer else "anchor(s)"
    print(
        f"{len(certificates)} {role} from {args.file} ({origin}); {len(written)} new file(s)"
        f" in {directory}"
    )
    return EXIT_OK


def register(commands: Any, cert_commands: Any) -> None:
    """Add ``shaken trust`` and its sub-commands."""
    group = commands.add_parser("trust", help="the STI-CA trust anchors")
    sub = group.add_subparsers(dest="trust_command", required=True, parser_class=type(group))

    p = sub.add_parser("list", help="the anchors and CRL signers in the trust directory")
    p.add_argument("--trust-dir", help="($SHAKEN_TRUST_DIR, else ~/.local/share/shaken/trust)")
    p.add_argument("--json", action="store_true", help="one JSON object per certificate")
    p.set_defaults(func=cmd_trust_list)

    p = sub.add_parser("import", help="add roots from a PEM/DER file or an STI-PA trust list")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--trust-dir", help="($SHAKEN_TRUST_DIR, else ~/.local/share/shaken/trust)")
    p.add_argument("--sti-pa-cert", metavar="FILE", help="verifies a trust list's signature")
    p.add_argument(
        "--allow-unsigned", action="store_true", help="import a trust list unverified (labs)"
    )
    p.add_argument(
        "--crl-signer", action="store_true", help="the certificates sign CRLs (the STI-PA)"
    )
    p.set_defaults(func=cmd_trust_import)
