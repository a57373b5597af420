"""``shaken config check FILE`` and ``shaken config show [--effective PROFILE] FILE``.

``check`` goes beyond the loader: it opens what the file names (private keys must load as P-256
keys and not be readable by group or others; trust anchors and CRLs must parse; a revocation
setup must be able to work, see :func:`shaken.adapters.preflight.revocation_review`) so a
broken deployment is found before the service starts, with the key and line of each problem.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from shaken.adapters.cli import now_of
from shaken.adapters.preflight import check_files, revocation_review
from shaken.config import GLOBAL_PROFILE, ConfigError, Settings, effective_profile, load_config
from shaken.core.errors import ConfigurationError, SigningError
from shaken.core.tn import canonicalize_tn


def register(commands: Any, cert_commands: Any) -> None:
    group = commands.add_parser("config", help="check and show configuration files")
    sub = group.add_subparsers(dest="config_command", required=True, parser_class=type(group))
    p = sub.add_parser("check", help="validate a configuration and the files it names")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("show", help="print the configuration, or one effective profile")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--effective", metavar="PROFILE", help="a profile name, or 'global'")
    p.add_argument(
        "--tn",
        metavar="TN",
        help="with --effective: the attestation a call from TN gets under the profile, and why",
    )
    p.set_defaults(func=cmd_show)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        settings = load_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        return 1
    problems = check_files(settings)
    for problem in problems:
        print(problem)
    for note in revocation_review(settings)[1]:
        print(note)  # explanations (old spellings, the default), never a refusal
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
    if args.tn is not None and args.effective is None:
        print("--tn needs --effective PROFILE (or --effective global)")
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
            "sti_pa": dict(settings.sti_pa),
            "acme": dict(settings.acme),
            "lifecycle": dict(settings.lifecycle),
        }
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    name = None if args.effective == GLOBAL_PROFILE else args.effective
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
    if args.tn is not None:
        return _show_attestation(settings, name, args.tn, now_of(args))
    return 0


def _show_attestation(settings: Settings, name: str | None, tn: str, now: datetime) -> int:
    """The level a call from ``tn`` really gets, from the same policy the servers sign with."""
    # Imported here: the composition root pulls in the fetcher and the stores.
    from shaken.adapters.wiring import build_runtime  # noqa: PLC0415

    canonical = canonicalize_tn(tn)
    if not canonical:
        print(f"attestation for {tn!r}: not a telephone number")
        return 1
    try:
        runtime = build_runtime(settings, now=now)
    except ConfigurationError as exc:
        print(f"attestation for {canonical}: the configuration does not load: {exc}")
        return 1
    profile = runtime.profiles[name]
    label = GLOBAL_PROFILE if name is None else name
    if not profile.signs or profile.signer is None:
        print(f"attestation for {canonical}: not signed (profile {label} does not sign)")
        return 0
    try:
        chosen = profile.signer.policy.attestation(canonical)
    except SigningError as exc:
        print(f"attestation for {canonical}: not signed ({exc})")
        return 0
    print(f"attestation for {canonical} = {chosen.level}    # {chosen.why}")
    return 0


def _action(action: Any) -> str:
    parts = [action.action.value]
    if action.reject_code is not None:
        parts.append(f"code {action.reject_code}")
    if action.display_prefix or action.display_suffix:
        parts.append(f"display {action.display_prefix!r}+name+{action.display_suffix!r}")
    return ", ".join(parts)
