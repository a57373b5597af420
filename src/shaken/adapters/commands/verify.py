"""``shaken verify``: verify Identity header value(s) for one call, as the servers do.

The call goes through :class:`~shaken.services.verification.VerificationService` over a
:class:`~shaken.services.cert_cache.CertificateCache`, the same pair a server's profile uses:
the certificates come from the persisted cache when it is warm, else from one fetch under
the x5u URL policy, validated against the anchors given with CRLs as ``--crl`` says.
``--cert FILE`` stands for what every x5u would return (validated the same way, without
CRLs, and without the persisted cache).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from shaken.adapters.cli import (
    EXIT_NOT_VERIFIED,
    EXIT_OK,
    UsageError,
    now_of,
    parse_time,
    read_file,
)
from shaken.adapters.fetch import LAB_POLICY, HttpsFetcher
from shaken.adapters.store import DirectoryCertificateStore, default_cache_dir
from shaken.adapters.trust_loader import TrustSources, default_trust_dir, load_trust
from shaken.core.chain import TrustAnchors
from shaken.core.context import SipContext
from shaken.core.errors import ConfigurationError
from shaken.core.result import VerificationResult
from shaken.core.verify import SHAKEN, VerificationProfile, prepare
from shaken.services.cert_cache import CacheSettings, CertificateCache, RevocationMode
from shaken.services.ports import CertificateFetcher, Clock, FetchedDocument, FetchLimits
from shaken.services.trust import TrustStore
from shaken.services.verification import VerificationService

__all__ = ["cmd_verify", "register"]


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


def _trust_store(sources: TrustSources, now: datetime) -> TrustStore:
    try:
        loaded = load_trust(sources, now=now)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    return TrustStore(
        TrustAnchors(certificates=loaded.anchors), loaded.crl_signers, source=loaded.source
    )


class _ChainFile:
    """A :class:`CertificateFetcher` that answers every URL with one file (``--cert``)."""

    def __init__(self, body: bytes, clock: Clock) -> None:
        self.body = body
        self.clock = clock

    async def fetch(self, url: str, *, etag: str | None = None) -> FetchedDocument:
        return FetchedDocument(url=url, body=self.body, fetched_at=self.clock.now())

    async def aclose(self) -> None:
        return None


async def _verify(
    args: argparse.Namespace,
    context: SipContext,
    trust: TrustStore,
    profile: VerificationProfile,
    now: datetime,
) -> VerificationResult:
    fetcher: CertificateFetcher
    if args.cert is not None:
        fetcher, store, revocation = _ChainFile(read_file(args.cert), args.clock), None, "off"
    else:
        if args.fetch_timeout <= 0:
            raise UsageError("--fetch-timeout wants a positive number of seconds")
        fetcher = HttpsFetcher(
            policy=profile.x5u_policy,
            limits=FetchLimits(timeout=args.fetch_timeout),
            tls_ca_file=args.tls_ca,
            clock=args.clock,
        )
        store = None
        if not args.no_cache:
            store = DirectoryCertificateStore(args.cache_dir or default_cache_dir())
        revocation = args.crl
    cache = CertificateCache(
        fetcher,
        trust,
        store=store,
        clock=args.clock,
        settings=CacheSettings(revocation=RevocationMode(revocation)),
        profile=profile,
    )
    try:
        service = VerificationService(cache, clock=args.clock, profile=profile)
        return await service.verify(context, now=now)
    finally:
        await cache.aclose()
        await fetcher.aclose()


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
    sources = _trust_sources(args)
    if sources.empty:
        # A call that needs no certificate (no Identity, a malformed one) is answered anyway.
        early = prepare(context, now=now, profile=profile)
        if not isinstance(early, VerificationResult):
            raise UsageError("give the trust anchors with --ca FILE (or --trust-list, --trust-dir)")
        result = early
    else:
        trust = _trust_store(sources, now)
        result = asyncio.run(_verify(args, context, trust, profile, now))
    if args.json:
        print(json.dumps(result.to_dict(), sort_keys=True))
    else:
        _print_result(result)
    return EXIT_OK if result.verified else EXIT_NOT_VERIFIED


def register(commands: Any, cert_commands: Any) -> None:
    """Add ``shaken verify``."""
    p = commands.add_parser("verify", help="verify Identity header value(s) for a call")
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
    timeout = FetchLimits().timeout
    p.add_argument(
        "--fetch-timeout", type=float, default=timeout, help=f"seconds per fetch ({timeout:g})"
    )
    p.add_argument(
        "--lab", action="store_true", help="LAB ONLY: allow http, loopback hosts and any port"
    )
    p.add_argument("--tls-ca", metavar="FILE", help="CA file for the repositories' TLS")
    p.add_argument(
        "--at", help="verification time: epoch seconds or ISO 8601 (UTC default); now if omitted"
    )
    p.add_argument("--date", help="the SIP Date header of the request, if any")
    p.add_argument(
        "--max-iat-age",
        type=int,
        help=f"freshness window for iat in seconds ({SHAKEN.max_iat_age})",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_verify)
