"""``shaken config check FILE`` and ``shaken config show [--effective PROFILE] FILE``.

``check`` goes beyond the loader: it opens what the file names (private keys must load as P-256
keys and not be readable by group or others; trust anchors and CRLs must parse) so a broken
deployment is found before the service starts, with the key and line of each problem.

Revocation (issue 9 item 3: with ``crl_files`` and no STI-PA certificate, a revoked SP
certificate kept verifying while ``config check`` said OK): a revocation setup that cannot
work is a problem. The SHAKEN CRL is an indirect CRL signed by the STI-PA (ATIS-1000080
section 6.4.1), so ``revocation``, ``require_crl``, ``crl_unavailable`` or ``crl_files`` without
a CRL signer (``sti_pa_certificate``, or ``crl-signers/`` in a ``trust_anchors`` directory)
fail the check, and so does a CRL file that neither a signer nor an anchor verifies (it could
never apply), CRL files with ``revocation = "off"``, and revocation keys that contradict each
other. The old spellings are explained in a note; so is the default (``soft``) without a
signer, whose results then say ``warning:crl_unavailable``.
"""

from __future__ import annotations

import argparse
import json
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from shaken.adapters.cli import now_of
from shaken.adapters.trust_loader import CRL_SIGNERS_DIR, load_trust
from shaken.adapters.wiring import _trust_sources
from shaken.config import ConfigError, Problem, Settings, effective_profile, load_config
from shaken.config.schema import (
    REVOCATION_KEYS,
    revocation_conflict,
    revocation_of,
    revocation_spellings,
)
from shaken.core.certs import load_certificates
from shaken.core.errors import CertificateError, ConfigurationError
from shaken.core.jws import load_private_key
from shaken.services.crl import parse_crl

#: Keys whose values decide whether revocation can work in a table.
_REVOCATION_INPUTS = (*REVOCATION_KEYS, "crl_files", "sti_pa_certificate", "trust_anchors")


def register(commands: Any, cert_commands: Any) -> None:
    group = commands.add_parser("config", help="check and show configuration files")
    sub = group.add_subparsers(dest="config_command", required=True, parser_class=type(group))
    p = sub.add_parser("check", help="validate a configuration and the files it names")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("show", help="print the configuration, or one effective profile")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--effective", metavar="PROFILE", help="a profile name, or 'global'")
    p.set_defaults(func=cmd_show)


def _file_problems(settings: Settings) -> list[Problem]:
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
        for anchor in values.get("trust_anchors", []):
            check_certs((*path, "trust_anchors"), anchor)
        for key in ("sti_pa_certificate", "tls_ca_file"):
            if key in values:
                check_certs((*path, key), values[key])
    return problems


def _revocation_problems(settings: Settings, now: datetime) -> tuple[list[Problem], list[Problem]]:
    """Problems and notes about revocation, per ``[verification]`` and each profile that sets
    a key it depends on (see the module docstring)."""
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
            values = effective_profile(settings, name).verification
        except ConfigurationError:
            continue  # the loader's checks report it
        conflict = revocation_conflict(raw)
        if conflict is not None:
            at(problems, (*path, "revocation"), conflict)
        for key, explanation in revocation_spellings(raw):
            at(notes, (*path, key), f"note: {explanation}")
        mode = revocation_of(values)
        explicit = next((k for k in REVOCATION_KEYS if k in raw), None)
        crl_files = [Path(f) for f in values.get("crl_files", [])]
        files_key = (*path, "crl_files")
        if mode == "off":
            if "crl_files" in raw or (explicit and crl_files):
                at(problems, files_key, 'CRL files are given but revocation = "off" ignores them')
            continue
        anchors, signers = _trust_of(values, now)
        crls: list[tuple[Path, x509.CertificateRevocationList]] = []
        for file in crl_files:
            try:
                crls.append((file, parse_crl(file.read_bytes())))
            except OSError as exc:
                at(problems, files_key, f"cannot read {file}: {exc.strerror}")
            except ValueError as exc:
                at(problems, files_key, f"{file} is not a CRL: {exc}")
        for file, crl in crls:
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


_SIGNER_HINT = (
    "the SHAKEN CRL is an indirect CRL signed by the STI-PA (ATIS-1000080 section 6.4.1); set"
    f" sti_pa_certificate, or put the STI-PA certificate in {CRL_SIGNERS_DIR}/ of a"
    " trust_anchors directory"
)


def _trust_of(
    values: Any, now: datetime
) -> tuple[tuple[x509.Certificate, ...], tuple[x509.Certificate, ...]]:
    """The anchors and CRL signers a table names, as the server would load them."""
    sources = _trust_sources(dict(values))
    if sources.empty and sources.sti_pa_cert is None:
        return (), ()
    try:
        loaded = load_trust(sources, now=now)
    except ConfigurationError:
        # Unreadable files are reported by _file_problems; an empty set of anchors with
        # an STI-PA certificate still has its signer.
        try:
            signer = (
                load_certificates(sources.sti_pa_cert.read_bytes())[:1]
                if sources.sti_pa_cert
                else ()
            )
        except (OSError, CertificateError):
            signer = ()
        return (), tuple(signer)
    return loaded.anchors, loaded.crl_signers


def _signs(cert: x509.Certificate, crl: x509.CertificateRevocationList) -> bool:
    if crl.issuer != cert.subject:
        return False
    try:
        return crl.is_signature_valid(cert.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def cmd_check(args: argparse.Namespace) -> int:
    try:
        settings = load_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        return 1
    problems = _file_problems(settings)
    revocation, notes = _revocation_problems(settings, now_of(args))
    problems += revocation
    for problem in problems:
        print(problem)
    for note in notes:
        print(note)
    if problems:
        return 1
    names = ", ".join(sorted(settings.profiles)) or "none"
    print(f"{settings.source}: OK (profiles: {names})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        settings = load_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        return 1
    if args.effective is None:
        data: dict[str, Any] = {
            "attestation": dict(settings.attestation),
            "verification": dict(settings.verification),
            "verification.on": dict(settings.actions),
            "profile": {k: dict(v) for k, v in settings.profiles.items()},
            "tn": {k: dict(v) for k, v in settings.tns.items()},
            "tn_range": {k: dict(v) for k, v in settings.tn_ranges.items()},
            "api_key": {k: sorted(v) for k, v in settings.api_keys.items()},
            "server": dict(settings.server),
            "repository": dict(settings.repository),
        }
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    name = None if args.effective == "global" else args.effective
    try:
        effective = effective_profile(settings, name)
    except ConfigurationError as exc:
        print(f"{settings.source}: {exc}")
        return 1
    print(f"# effective profile {args.effective} (behavior: {effective.behavior})")
    for section, values in (
        ("attestation", effective.attestation),
        ("verification", effective.verification),
    ):
        for key in sorted(values):
            origin = effective.origin.get(f"{section}.{key}", "")
            print(f"{section}.{key} = {json.dumps(values[key])}    # {origin}")
    a = effective.actions
    for outcome in ("verified", "missing", "failed", "not_checked"):
        print(f"on.{outcome} = {_action(getattr(a, outcome))}")
    for attest, action in sorted(a.by_attest.items()):
        print(f"on.attest.{attest} = {_action(action)}")
    for reason, action in sorted(a.by_reason.items()):
        print(f"on.reason.{reason.value} = {_action(action)}")
    return 0


def _action(action: Any) -> str:
    parts = [action.action.value]
    if action.reject_code is not None:
        parts.append(f"code {action.reject_code}")
    if action.display_prefix or action.display_suffix:
        parts.append(f"display {action.display_prefix!r}+name+{action.display_suffix!r}")
    return ", ".join(parts)
