"""The ``shaken`` command line.

Exit codes: 0 success (for ``verify``: the call verified), 1 the call did not verify,
2 usage errors (bad flags, unreadable files, unusable keys).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import pkgutil
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from shaken import __version__
from shaken.adapters.fetch import LAB_POLICY, FetchLimits, HttpsFetcher
from shaken.adapters.store import DirectoryCertificateStore, default_cache_dir
from shaken.adapters.trust_loader import TrustSources, default_trust_dir, load_trust
from shaken.core.certs import (
    Spc,
    StirCertificate,
    Tn,
    TNEntry,
    TnRange,
    load_certificates,
    profile_findings,
)
from shaken.core.chain import TrustAnchors
from shaken.core.claimconstraints import ClaimConstraintError, constraints_of
from shaken.core.context import SipContext
from shaken.core.errors import (
    CertificateError,
    ConfigurationError,
    ShakenError,
    SigningError,
    VerificationFailure,
)
from shaken.core.identity import IdentityHeader
from shaken.core.jws import load_private_key
from shaken.core.passport import decode_token
from shaken.core.result import VerificationResult
from shaken.core.sign import sign_shaken
from shaken.core.verify import (
    SHAKEN,
    CertificateMaterial,
    Plan,
    VerificationProfile,
    complete,
    prepare,
)
from shaken.services.cert_cache import CacheSettings, CertificateCache, RevocationMode
from shaken.services.ports import Clock, SystemClock
from shaken.services.trust import TrustStore

EXIT_OK = 0
EXIT_NOT_VERIFIED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with the command line or its files: exit 2."""


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def now_of(args: argparse.Namespace) -> datetime:
    """The command's one clock read: the clock :func:`main` was given (the system clock)."""
    clock: Clock = args.clock
    return clock.now()


def parse_time(value: str, *, flag: str = "--at") -> datetime:
    """``value`` as seconds since the epoch or an ISO 8601 time (UTC when it names no zone).

    :raises UsageError: neither.
    """
    text = value.strip()
    try:
        return datetime.fromtimestamp(int(text), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{flag} wants seconds since the epoch or an ISO 8601 time, not {value!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------- sign


def cmd_sign(args: argparse.Namespace) -> int:
    key = load_private_key(_read(args.key))
    iat = None
    if args.iat is not None:
        try:
            iat = int(args.iat)
        except ValueError:
            raise UsageError(f"--iat wants an integer, not {args.iat!r}") from None
    value = sign_shaken(
        key=key,
        x5u=args.x5u,
        orig=args.orig,
        dest=args.dest,
        attest=args.attest,
        now=now_of(args) if iat is None else None,
        iat=iat,
        origid=args.origid,
    )
    print(value)
    return EXIT_OK


# -------------------------------------------------------------------------------- verify


def _print_result(result: VerificationResult, out: Any = None) -> None:
    out = out or sys.stdout
    for check in result.checks:
        print("  " + check.describe(), file=out)
    if result.verified:
        print(
            f"VERIFIED  verstat={result.verstat.value}  attest={result.attest}"
            f"  orig={result.orig}  dest={','.join(result.dest)}  spc={result.spc}",
            file=out,
        )
    else:
        assert result.reason is not None
        print(
            f"NOT VERIFIED  reason={result.reason.value}"
            f" ({result.sip_code} {result.phrase})  verstat={result.verstat.value}",
            file=out,
        )
        print(f"  {result.detail}", file=out)
    for finding in result.findings:
        print(f"  certificate finding: {finding}", file=out)


def _trust_sources(args: argparse.Namespace) -> TrustSources:
    """--ca files, --trust-list (+ --sti-pa-cert), --trust-dir.

    The default trust directory is read only when no anchors were named on the command line,
    so ``--ca FILE`` means exactly that file.
    """
    directories: tuple[Path, ...] = ()
    if args.trust_dir:
        directories = (Path(args.trust_dir),)
    elif not args.ca and not args.trust_list:
        default = default_trust_dir()
        directories = (default,) if default.is_dir() else ()
    return TrustSources(
        pem_files=tuple(Path(p) for p in args.ca),
        directories=directories,
        trust_list=Path(args.trust_list) if args.trust_list else None,
        sti_pa_cert=Path(args.sti_pa_cert) if args.sti_pa_cert else None,
    )


def _trust_store(args: argparse.Namespace, now: datetime) -> TrustStore:
    sources = _trust_sources(args)
    if sources.empty:
        raise UsageError("give the trust anchors with --ca FILE (or --trust-list, --trust-dir)")
    try:
        loaded = load_trust(sources, now=now)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    return TrustStore(
        TrustAnchors(certificates=loaded.anchors), loaded.crl_signers, source=loaded.source
    )


async def _through_cache(
    args: argparse.Namespace, plan: Plan, trust: TrustStore, profile: VerificationProfile
) -> dict[str, CertificateMaterial]:
    """Obtain the plan's certificates through the persisted cache and the HTTPS fetcher."""
    store = None
    if not args.no_cache:
        store = DirectoryCertificateStore(args.cache_dir or default_cache_dir())
    if args.fetch_timeout <= 0:
        raise UsageError("--fetch-timeout wants a positive number of seconds")
    limits = FetchLimits(timeout=args.fetch_timeout)
    async with HttpsFetcher(
        policy=profile.x5u_policy, limits=limits, tls_ca_file=args.tls_ca, clock=args.clock
    ) as fetcher:
        cache = CertificateCache(
            fetcher,
            trust,
            store=store,
            clock=args.clock,
            settings=CacheSettings(revocation=RevocationMode(args.crl)),
            profile=profile,
        )
        urls = plan.urls
        materials = await asyncio.gather(*(cache.get(u, now=plan.now) for u in urls))
    return dict(zip(urls, materials, strict=True))


def _certificates_for(
    args: argparse.Namespace, plan: Plan, profile: VerificationProfile
) -> tuple[dict[str, CertificateMaterial], TrustAnchors | None]:
    """The certificates of ``plan.urls`` and the anchors to validate raw bytes with.

    ``--cert FILE`` stands for every URL (validated in ``complete``, without CRLs, as before);
    otherwise the cache answers: from disk when warm, fetching and validating (CRLs included)
    when not.
    """
    trust = _trust_store(args, plan.now)
    if args.cert is not None:
        data = _read(args.cert)
        return dict.fromkeys(plan.urls, data), trust.current.anchors
    return asyncio.run(_through_cache(args, plan, trust, profile)), trust.current.anchors


def cmd_verify(args: argparse.Namespace) -> int:
    now = now_of(args) if args.at is None else parse_time(args.at)
    profile = SHAKEN
    if args.max_iat_age is not None:
        profile = replace(profile, max_iat_age=args.max_iat_age)
    if args.lab:
        profile = replace(profile, x5u_policy=LAB_POLICY)
    context = SipContext(
        identity=tuple(args.identity),
        from_header=args.orig if ":" in args.orig else f"<tel:{args.orig}>",
        to=args.dest if ":" in args.dest else f"<tel:{args.dest}>",
        date=args.date,
    )
    step = prepare(context, now=now, profile=profile)
    if isinstance(step, VerificationResult):
        result = step
    else:
        certificates, anchors = _certificates_for(args, step, profile)
        result = complete(step, certificates, anchors, now=now)
    if args.json:
        print(json.dumps(result.to_dict(), sort_keys=True))
    else:
        _print_result(result)
    return EXIT_OK if result.verified else EXIT_NOT_VERIFIED


# -------------------------------------------------------------------------------- decode


def cmd_decode(args: argparse.Namespace) -> int:
    try:
        header = IdentityHeader.parse(args.value)
    except VerificationFailure as failure:
        print(f"cannot parse: {failure.detail}", file=sys.stderr)
        return EXIT_NOT_VERIFIED
    params = {"info": header.info, "alg": header.alg, "ppt": header.ppt}
    params.update({name: value for name, value in header.extra})
    out: dict[str, Any] = {
        "parameters": params,
        "form": "compact" if header.is_compact_form else "full",
    }
    if not header.is_compact_form:
        try:
            token = decode_token(header.token)
        except VerificationFailure as failure:
            out["error"] = failure.detail
        else:
            out["header"] = dict(token.header)
            out["claims"] = dict(token.payload)
            out["signature_bytes"] = len(token.signature)
            iat = token.payload.get("iat")
            if isinstance(iat, int) and not isinstance(iat, bool):
                with contextlib.suppress(OverflowError, OSError, ValueError):
                    out["iat_utc"] = datetime.fromtimestamp(iat, UTC).isoformat()
    print(json.dumps(out, indent=2, sort_keys=True, ensure_ascii=False))
    return EXIT_OK if "error" not in out else EXIT_NOT_VERIFIED


# --------------------------------------------------------------------------- cert inspect


def _inspect_one(path: str, index: int, stir: StirCertificate) -> dict[str, Any]:
    cert = stir.certificate
    entries: Any
    if stir.tnauthlist is not None:
        entries = [_entry_json(e) for e in stir.tnauthlist.entries]
    elif stir.tnauthlist_error is not None:
        entries = {"error": stir.tnauthlist_error}
    else:
        entries = {"error": "absent: no TNAuthList extension"}
    constraints: Any
    try:
        found = constraints_of(cert)
        constraints = None if found is None else found.to_json()
    except ClaimConstraintError as exc:
        constraints = {"error": str(exc)}
    return {
        "file": path,
        "index": index,
        "subject": stir.subject,
        "issuer": stir.issuer,
        "serial": format(stir.serial, "x"),
        "not_before": stir.not_before.isoformat(),
        "not_after": stir.not_after.isoformat(),
        "spc": stir.spc,
        "tnauthlist": entries,
        "claim_constraints": constraints,
        "findings": [
            {"rule": f.rule, "severity": f.severity.value, "message": f.message}
            for f in profile_findings(cert)
        ],
    }


def _entry_json(entry: TNEntry) -> dict[str, Any]:
    if isinstance(entry, Spc):
        return {"spc": entry.code}
    if isinstance(entry, TnRange):
        return {"range": {"start": entry.start, "count": entry.count}}
    if isinstance(entry, Tn):
        return {"one": entry.number}
    raise TypeError(entry)


def cmd_cert_inspect(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.files:
        try:
            certificates = load_certificates(_read(path))
        except (CertificateError, UsageError) as exc:
            status = EXIT_USAGE
            if args.json:
                print(json.dumps({"file": path, "error": str(exc)}))
            else:
                print(f"{path}: {exc}", file=sys.stderr)
            continue
        for index, cert in enumerate(certificates):
            record = _inspect_one(path, index, StirCertificate.from_x509(cert))
            if args.json:
                print(json.dumps(record, sort_keys=True))
            else:
                _print_inspection(record)
    return status


def _print_inspection(record: dict[str, Any]) -> None:
    print(f"{record['file']} [{record['index']}]")
    print(f"  subject:  {record['subject']}")
    print(f"  issuer:   {record['issuer']}")
    print(f"  validity: {record['not_before']} .. {record['not_after']}")
    print(f"  SPC:      {record['spc']}")
    print(f"  TNAuthList: {json.dumps(record['tnauthlist'])}")
    constraints = record["claim_constraints"]
    if constraints is not None and "error" in constraints:
        print(f"  claim constraints: {constraints['error']}")
    elif constraints is not None:
        # Values are shown as JSON strings: a pinned rcd value is attacker-independent (the CA
        # wrote it) but may still hold characters a terminal would act on.
        print(f"  {constraints['extension']} (RFC 8226 8 / RFC 9118):")
        if constraints["mustInclude"]:
            print(f"    mustInclude:  {json.dumps(constraints['mustInclude'])}")
        for claim, values in constraints["permittedValues"].items():
            print(f"    permitted {json.dumps(claim)}: {json.dumps(values, ensure_ascii=True)}")
        if constraints["mustExclude"]:
            print(f"    mustExclude:  {json.dumps(constraints['mustExclude'])}")
    if not record["findings"]:
        print("  profile:  no findings")
    for f in record["findings"]:
        print(f"  {f['severity']:7} {f['rule']}: {f['message']}")


# ---------------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    # Imported here: the demo pulls in the test PKI kit, which other commands never need.
    from shaken.adapters.demo import run_demo  # noqa: PLC0415

    return run_demo(sys.stdout, args.clock)


# ---------------------------------------------------------------------------------- main


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shaken", description="STIR/SHAKEN signing and verification")
    parser.add_argument("--version", action="version", version=f"shaken {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="sign, verify, tamper and verify again with a throwaway PKI")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sign", help="print the Identity header value for a call")
    p.add_argument("--key", required=True, help="P-256 private key (PEM or DER)")
    p.add_argument("--x5u", required=True, help="URL of the signing certificate chain")
    p.add_argument("--orig", required=True, help="calling TN")
    p.add_argument("--dest", required=True, action="append", help="called TN (repeatable)")
    p.add_argument("--attest", default="A", choices=["A", "B", "C"])
    p.add_argument("--origid", help="origination identifier (UUID); random when omitted")
    p.add_argument("--iat", help="issued-at, seconds since the epoch; now when omitted")
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("verify", help="verify Identity header value(s) for a call")
    p.add_argument("--identity", required=True, action="append", help="Identity value (repeatable)")
    p.add_argument("--orig", required=True, help="calling TN, or a From/PAI header value")
    p.add_argument("--dest", required=True, help="called TN, or a To header value")
    p.add_argument("--cert", help="the certificate chain the x5u would return (PEM or DER)")
    p.add_argument("--ca", action="append", default=[], help="trust anchor PEM file (repeatable)")
    p.add_argument("--trust-dir", help="directory of trust anchor PEM files (see shaken trust)")
    p.add_argument("--trust-list", metavar="FILE", help="an STI-PA trust list (signed JWT)")
    p.add_argument("--sti-pa-cert", metavar="FILE", help="verifies --trust-list; signs CRLs")
    p.add_argument(
        "--cache-dir", help="certificate cache ($SHAKEN_CACHE_DIR, else ~/.cache/shaken/certs)"
    )
    p.add_argument("--no-cache", action="store_true", help="fetch without the persisted cache")
    p.add_argument(
        "--crl",
        choices=[m.value for m in RevocationMode],
        default=RevocationMode.SOFT.value,
        help="CRL checking: off, soft (report and pass when unavailable), hard (fail)",
    )
    p.add_argument("--fetch-timeout", type=float, default=2.0, help="seconds per fetch (2)")
    p.add_argument(
        "--lab", action="store_true", help="LAB ONLY: allow http, loopback hosts and any port"
    )
    p.add_argument("--tls-ca", metavar="FILE", help="CA file for the repositories' TLS")
    p.add_argument(
        "--at", help="verification time: epoch seconds or ISO 8601 (UTC default); now if omitted"
    )
    p.add_argument("--date", help="the SIP Date header of the request, if any")
    p.add_argument("--max-iat-age", type=int, help="freshness window for iat in seconds (60)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("decode", help="show an Identity value's header, claims and parameters")
    p.add_argument("value", help="the Identity header value")
    p.set_defaults(func=cmd_decode)

    cert = sub.add_parser("cert", help="certificate tools").add_subparsers(
        dest="cert_command", required=True, parser_class=_Parser
    )
    p = cert.add_parser("inspect", help="subject, SPC, TNAuthList, validity and profile findings")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per certificate per line")
    p.set_defaults(func=cmd_cert_inspect)
    for module in _command_modules():
        module.register(sub, cert)
    return parser


def _command_modules() -> list[Any]:
    """The modules of :mod:`shaken.adapters.commands`, in name order."""
    import shaken.adapters.commands as package  # noqa: PLC0415

    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__))
    return [importlib.import_module(f"{package.__name__}.{name}") for name in names]


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Run one command; ``clock`` is where every command reads the time (default: the system's)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.clock = clock or SystemClock()
    try:
        code: int = args.func(args)
    except UsageError as exc:
        print(f"shaken: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigurationError, SigningError) as exc:
        print(f"shaken: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ShakenError as exc:
        print(f"shaken: {exc}", file=sys.stderr)
        return EXIT_NOT_VERIFIED
    except BrokenPipeError:
        return EXIT_OK
    return code


if __name__ == "__main__":
    sys.exit(main())
