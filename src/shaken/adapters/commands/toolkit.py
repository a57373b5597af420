"""CLI of the certificate toolkit: ``key``, ``csr``, ``ca``, ``cert lint``, ``repo``, ``lab``.

Exit codes as everywhere in the CLI: 0 done, 1 a lint found errors, 2 usage (bad flags,
unreadable or unsuitable files, a directory that is not a CA or a lab).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from shaken.adapters.cli import EXIT_NOT_VERIFIED, EXIT_OK, EXIT_USAGE, UsageError, now_of
from shaken.adapters.sip.client import SipResponse
from shaken.adapters.tour import CALLED, sign_call, verdict, verify_call
from shaken.core.certs import CertRole, Tn, TNEntry, TnRange, load_certificates
from shaken.core.claimconstraints import ClaimConstraints
from shaken.core.errors import CertificateError
from shaken.core.jws import generate_private_key, load_private_key, private_key_pem
from shaken.core.rcd import jcs
from shaken.files import create_private, write_atomic
from shaken.toolkit.acme_ca import AcmeStiCa
from shaken.toolkit.ca import CaSettings, TestCa, parse_serial
from shaken.toolkit.lab import LabSettings, init_lab, open_lab
from shaken.toolkit.lab_acquisition import start_acquisition
from shaken.toolkit.lint import (
    compare_with_corpus,
    format_comparison,
    format_text,
    lint_file,
)
from shaken.toolkit.repository import RepositoryServer, serve_repository
from shaken.toolkit.x509build import build_csr

__all__ = ["register"]


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _write_out(path: str | None, data: bytes) -> None:
    """``data`` to the file ``path``, or to stdout when there is none (or it is ``-``)."""
    if path is None or path == "-":
        sys.stdout.write(data.decode("utf-8"))
        sys.stdout.flush()
        return
    try:
        write_atomic(Path(path), data)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _open_ca(directory: str) -> TestCa:
    try:
        return TestCa.open(Path(directory))
    except OSError as exc:
        raise UsageError(f"{directory}: {exc.strerror or exc}") from None


# ----------------------------------------------------------------------------------- key, csr


def cmd_key_new(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        create_private(out, private_key_pem(generate_private_key()), overwrite=args.force)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"wrote {out}: a new P-256 private key (mode 0600)")
    return EXIT_OK


def cmd_csr_new(args: argparse.Namespace) -> int:
    key = load_private_key(_read(args.key))
    csr = build_csr(key, spc=args.spc, org=args.org, country=args.country)
    _write_out(args.out, csr.public_bytes(Encoding.PEM))
    if args.out not in (None, "-"):
        print(f"wrote {args.out}: CSR for CN=SHAKEN {args.spc}, O={args.org}, C={args.country}")
    return EXIT_OK


# ----------------------------------------------------------------------------------------- ca


def cmd_ca_init(args: argparse.Namespace) -> int:
    repository_url = args.repo_url if args.repo_url.endswith("/") else args.repo_url + "/"
    settings = CaSettings(
        org=args.org,
        country=args.country,
        repository_url=repository_url,
        crl_url=args.crl_url or repository_url + "crl.der",
        publish_dir=args.publish_dir,
        leaf_days=args.leaf_days,
        crl_days=args.crl_days,
    )
    try:
        ca = TestCa.init(
            Path(args.dir),
            now=now_of(args),
            settings=settings,
            root_days=args.root_days,
            intermediate_days=args.intermediate_days,
        )
    except OSError as exc:
        raise UsageError(f"{args.dir}: {exc.strerror or exc}") from None
    print(f"test STI-CA in {ca.directory} (TEST MATERIAL)")
    print(f"  root          {ca.directory / 'root.pem'}  {ca.root.subject.rfc4514_string()}")
    print(f"  intermediate  {ca.directory / 'intermediate.pem'}")
    print(f"  STI-PA        {ca.directory / 'sti-pa.pem'}  (signs the CRL and the trust list)")
    print(f"  CRL           {ca.directory / 'crl.der'}  served as {settings.crl_url}")
    return EXIT_OK


def _tn_entries(args: argparse.Namespace) -> tuple[TNEntry, ...]:
    entries: list[TNEntry] = [Tn(number=number) for number in args.tn]
    for text in args.tn_range:
        start, sep, rest = text.partition(":")
        if sep:
            count = int(rest) if rest.isdigit() else -1
        else:
            start, sep, last = text.partition("-")
            if not sep or not last.isdigit() or len(last) != len(start):
                raise UsageError(f"--tn-range wants START:COUNT or START-END, not {text!r}")
            count = int(last) - int(start) + 1 if start.isdigit() else -1
        if count < 2:
            raise UsageError(f"--tn-range {text!r}: a range holds at least 2 numbers")
        entries.append(TnRange(start=start, count=count))
    return tuple(entries)


def _claim_constraints(args: argparse.Namespace) -> ClaimConstraints | None:
    """``--must-include``, ``--permit CLAIM=VALUE``, ``--must-exclude``, ``--pin-rcd FILE``."""
    include = list(args.must_include)
    permitted: dict[str, list[str]] = {}
    for text in args.permit:
        claim, sep, value = text.partition("=")
        if not sep or not claim:
            raise UsageError(f"--permit wants CLAIM=VALUE, not {text!r}")
        permitted.setdefault(claim, []).append(value)
    if args.pin_rcd is not None:
        try:
            pinned = json.loads(_read(args.pin_rcd))
        except ValueError as exc:
            raise UsageError(f"{args.pin_rcd} is not JSON: {exc}") from None
        if not isinstance(pinned, dict):
            raise UsageError(f"{args.pin_rcd} must hold the rcd JSON object")
        # RFC 9795: the CA pins the vetted rcd; JCS makes the value comparable.
        permitted.setdefault("rcd", []).append(jcs(pinned).decode())
        if "rcd" not in include:
            include.append("rcd")
    if not (include or permitted or args.must_exclude):
        return None
    enhanced = args.claim_constraints == "enhanced"
    if args.must_exclude and not enhanced:
        raise UsageError("--must-exclude needs EnhancedJWTClaimConstraints (RFC 9118)")
    return ClaimConstraints(
        must_include=tuple(include),
        permitted={k: tuple(v) for k, v in permitted.items()},
        must_exclude=tuple(args.must_exclude),
        enhanced=enhanced,
    )


def cmd_ca_issue(args: argparse.Namespace) -> int:
    ca = _open_ca(args.ca)
    try:
        csr = x509.load_pem_x509_csr(_read(args.csr))
    except ValueError as exc:
        raise UsageError(f"{args.csr} is not a PEM CSR: {exc}") from None
    issued = ca.issue(
        csr,
        now=now_of(args),
        days=args.days,
        spc=args.spc,
        tn_entries=_tn_entries(args),
        claim_constraints=_claim_constraints(args),
    )
    if args.out is not None:
        _write_out(args.out, issued.chain_pem)
    kind = (
        "delegate certificate (RFC 9060)" if issued.delegation_ca is not None else "SP certificate"
    )
    print(f"issued {kind} {issued.serial_hex}: {issued.certificate.subject.rfc4514_string()}")
    print(f"  certificate  {issued.path}")
    print(f"  chain        {issued.chain_path}")
    if issued.published_url is not None:
        print(f"  published    {issued.published_url}")
    return EXIT_OK


def _serial_of(value: str) -> int:
    path = Path(value)
    if path.is_file():
        try:
            return load_certificates(path.read_bytes())[0].serial_number
        except (OSError, CertificateError) as exc:
            raise UsageError(f"{value}: {exc}") from None
    return parse_serial(value)


def cmd_ca_revoke(args: argparse.Namespace) -> int:
    ca = _open_ca(args.ca)
    serial = _serial_of(args.serial)
    crl = ca.revoke(serial, now=now_of(args), reason=args.reason)
    print(
        f"revoked {serial:x}; CRL number {_crl_number(crl)} written to {ca.directory / 'crl.der'}"
    )
    if ca.publish_dir is not None:
        print(f"  published in {ca.publish_dir} ({ca.settings.crl_url})")
    return EXIT_OK


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def cmd_ca_crl(args: argparse.Namespace) -> int:
    ca = _open_ca(args.ca)
    crl = ca.publish_crl(now=now_of(args), days=args.days)
    if args.out is not None:
        _write_out(args.out, crl.public_bytes(Encoding.DER))
    print(
        f"CRL number {_crl_number(crl)} ({len(crl)} revoked), next update "
        f"{crl.next_update_utc.isoformat() if crl.next_update_utc else '-'}: "
        f"{ca.directory / 'crl.der'}"
    )
    return EXIT_OK


def cmd_ca_trust_list(args: argparse.Namespace) -> int:
    ca = _open_ca(args.ca)
    path = Path(args.out) if args.out is not None else None
    ca.write_trust_list(now=now_of(args), days=args.days, path=path)
    print(f"trust list signed by the STI-PA: {path or ca.directory / 'trust-list.jwt'}")
    return EXIT_OK


# --------------------------------------------------------------------------------- cert lint


def cmd_cert_lint(args: argparse.Namespace) -> int:
    if not args.files and args.corpus is None:
        raise UsageError("name certificate files to lint, or --corpus DIR")
    role = CertRole(args.role) if args.role else None
    status = EXIT_OK
    results = []
    for name in args.files:
        try:
            results.extend(lint_file(Path(name), role=role))
        except OSError as exc:
            print(f"{name}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            status = EXIT_USAGE
        except CertificateError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            status = EXIT_USAGE
    if args.json:
        for result in results:
            print(json.dumps(result.to_json(), sort_keys=True))
    elif results:
        print(format_text(results))
    if status == EXIT_OK and any(result.errors for result in results):
        status = EXIT_NOT_VERIFIED
    if args.corpus is not None:
        samples = Path(args.corpus)
        if not (samples / "index.csv").is_file():
            raise UsageError(f"{samples} has no index.csv (a pem-samples directory)")
        comparison = compare_with_corpus(samples)
        if args.json:
            print(json.dumps({"corpus": comparison.to_json()}, sort_keys=True))
        else:
            print(format_comparison(comparison))
    return status


# -------------------------------------------------------------------------------------- repo


def _serve_until_interrupted(server: RepositoryServer, lines: list[str]) -> int:
    for line in lines:
        print(line, flush=True)
    print("Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.close()
    return EXIT_OK


def cmd_repo_serve(args: argparse.Namespace) -> int:
    try:
        server = serve_repository(
            Path(args.dir),
            host=args.host,
            port=args.port,
            tls_cert=Path(args.tls_cert) if args.tls_cert else None,
            tls_key=Path(args.tls_key) if args.tls_key else None,
            max_age=args.max_age,
            log=None if args.quiet else sys.stderr,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(
            f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    lines = [f"repository {server.base_url} serving {Path(args.dir).resolve()}"]
    if server.scheme == "http":
        lines.append("note: plain HTTP; verifiers fetch x5u over https (put TLS in front)")
    return _serve_until_interrupted(server, lines)


# --------------------------------------------------------------------------------------- lab


def cmd_lab_init(args: argparse.Namespace) -> int:
    settings = LabSettings(
        spc=args.spc,
        org=args.org,
        host=args.host,
        repository_port=args.repo_port,
        sip_signing_port=args.sip_signing_port,
        sip_verification_port=args.sip_verification_port,
        rest_port=args.rest_port,
        sti_pa_port=args.sti_pa_port,
        acme_port=args.acme_port,
        tn_start=args.tn_start,
        tn_count=args.tn_count,
    )
    try:
        lab = init_lab(Path(args.dir), now=now_of(args), settings=settings)
    except OSError as exc:
        raise UsageError(f"{args.dir}: {exc.strerror or exc}") from None
    last = int(settings.tn_start) + settings.tn_count - 1
    print(f"lab in {lab.directory} (TEST MATERIAL)")
    print(f"  CA            {lab.ca_dir}  (trust anchor {lab.root})")
    print(f"  SP            SPC {settings.spc}: key {lab.sp_key}, chain {lab.sp_chain}")
    print(f"  x5u           {lab.x5u}")
    print(f"  TNs           {settings.tn_start}..{last} at A, others at C")
    print(f"  configuration {lab.config}")
    print(f"next: shaken lab up {lab.directory}")
    return EXIT_OK


def cmd_lab_up(args: argparse.Namespace) -> int:
    lab = open_lab(Path(args.dir))
    configured = lab.repository()
    try:
        server = lab.serve(host=args.host, port=args.port, log=None if args.quiet else sys.stderr)
    except OSError as exc:
        raise UsageError(f"cannot serve the lab repository: {exc.strerror or exc}") from None
    lines = [f"lab {lab.directory} (TEST MATERIAL)"]
    lines += [f"repository {server.url(name)}" for name in ("sp.pem", "crl.der")]
    if (server.host, server.port) != (configured.host, configured.port):
        lines.append(
            f"note: shaken.toml and the certificates name {configured.host}:{configured.port}; "
            "x5u and CRL URLs pointing there are not served by this process"
        )
    # Imported here: the servers pull in asyncio transports, uvloop and uvicorn.
    from shaken.adapters.serve import run_lab  # noqa: PLC0415

    server.start()
    acquisition = []
    try:
        try:
            acquisition = start_acquisition(
                lab, now=args.clock.now, log=None if args.quiet else sys.stderr
            )
        except OSError as exc:
            lines.append(f"sti-pa, acme     not started: {exc.strerror or exc}")
        for running in acquisition:
            url = running.directory_url if isinstance(running, AcmeStiCa) else running.base_url
            lines.append(f"{running.name:16} {url}")
        return run_lab(
            lab.config, lines, call_log=(lab.directory / "calls.sqlite").resolve(), clock=args.clock
        )
    finally:
        for running in acquisition:
            running.close()
        server.close()


def cmd_lab_call(args: argparse.Namespace) -> int:
    """One SIP call into a running lab (``shaken lab up``): signed by its STI-AS unless
    ``--no-identity``, then verified by its STI-VS, each answer printed. Exit 0 when the lab
    let the call through, 1 when it rejected it."""
    lab = open_lab(Path(args.dir))
    caller = args.caller or lab.settings.tn_start
    who = {"caller": caller, "called": args.called, "name": args.name}

    async def call() -> tuple[SipResponse | None, SipResponse]:
        signed = None
        if not args.no_identity:
            signed = await sign_call(lab, **who, timeout=args.timeout)
        verified = await verify_call(
            lab, signed, **who, spoof=args.spoof, clock=args.clock, timeout=args.timeout
        )
        return signed, verified

    try:
        signed, verified = asyncio.run(call())
    except TimeoutError as exc:
        raise UsageError(str(exc)) from None
    if signed is not None:
        attest = signed.first("x-shaken-attest") or "-"
        print(f"sign    {signed.code} {signed.phrase}, attestation {attest}")
        identity = signed.first("identity")
        if identity:
            print(f"        Identity: {identity}")
        else:
            print(f"        X-Shaken-Reason: {signed.first('x-shaken-reason')}")
    if args.spoof is not None:
        print(f"spoof   the caller rewritten to {args.spoof}, in From and in the PASSporT")
    print(f"verify  {verdict(verified, indent=8)}")
    return EXIT_OK if verified.code < 400 else EXIT_NOT_VERIFIED


# ---------------------------------------------------------------------------------- register


def register(commands: Any, cert_commands: Any) -> None:
    """Add the toolkit's command groups to the ``shaken`` parser (see the package docs)."""
    key = commands.add_parser("key", help="private keys").add_subparsers(
        dest="key_command", required=True
    )
    p = key.add_parser("new", help="a new P-256 private key (PEM, mode 0600)")
    p.add_argument("out", metavar="OUT", help="file to create")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_key_new)

    csr = commands.add_parser("csr", help="certificate signing requests").add_subparsers(
        dest="csr_command", required=True
    )
    p = csr.add_parser("new", help="a CSR with a TNAuthList SPC (CN 'SHAKEN <SPC>', O, C)")
    p.add_argument("--key", required=True, help="the P-256 private key (PEM)")
    p.add_argument("--spc", required=True, help="Service Provider Code (digits, uppercase)")
    p.add_argument("--org", required=True, help="legal name of the service provider (O)")
    p.add_argument("--country", default="US", help="ISO 3166-1 alpha-2 country (C), default US")
    p.add_argument("--out", help="file to write (default: standard output)")
    p.set_defaults(func=cmd_csr_new)

    ca = commands.add_parser("ca", help="a test STI-PA/STI-CA (TEST MATERIAL)").add_subparsers(
        dest="ca_command", required=True
    )
    ca_defaults = CaSettings()
    p = ca.add_parser("init", help="create a root, intermediate and STI-PA in DIR")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--org", default=ca_defaults.org, help="the STI-CA's name (O)")
    p.add_argument("--country", default="US")
    p.add_argument(
        "--repo-url",
        default=ca_defaults.repository_url,
        help="base URL the repository serves published files under",
    )
    p.add_argument("--crl-url", help="CRL distribution point URL (default: REPO_URL/crl.der)")
    p.add_argument("--publish-dir", help="directory the repository serves (relative to DIR)")
    p.add_argument("--root-days", type=int, default=3650)
    p.add_argument("--intermediate-days", type=int, default=1825)
    p.add_argument("--leaf-days", type=int, default=ca_defaults.leaf_days)
    p.add_argument("--crl-days", type=int, default=ca_defaults.crl_days)
    p.set_defaults(func=cmd_ca_init)

    p = ca.add_parser("issue", help="issue an SP (or, with TNs, a delegate) certificate")
    p.add_argument("csr", metavar="CSR", help="PEM CSR (from 'shaken csr new')")
    p.add_argument("--ca", default=".", help="the CA directory (default: .)")
    p.add_argument("--days", type=int, help="validity in days (default: the CA's leaf-days)")
    p.add_argument("--spc", help="the SPC, when the CSR has no TNAuthList")
    p.add_argument("--tn", action="append", default=[], help="delegate: one TN (repeatable)")
    p.add_argument(
        "--tn-range",
        action="append",
        default=[],
        metavar="START:COUNT",
        help="delegate: a TN range, START:COUNT or START-END (repeatable)",
    )
    p.add_argument(
        "--must-include",
        action="append",
        default=[],
        metavar="CLAIM",
        help="claim constraints: a claim the PASSporT must carry (repeatable)",
    )
    p.add_argument(
        "--permit",
        action="append",
        default=[],
        metavar="CLAIM=VALUE",
        help="claim constraints: a permitted value of CLAIM (repeatable; JSON for objects)",
    )
    p.add_argument(
        "--must-exclude",
        action="append",
        default=[],
        metavar="CLAIM",
        help="claim constraints: a claim the PASSporT must not carry (RFC 9118; repeatable)",
    )
    p.add_argument(
        "--pin-rcd",
        metavar="FILE",
        help="branded calling: pin this rcd JSON object (mustInclude rcd, permittedValues)",
    )
    p.add_argument(
        "--claim-constraints",
        choices=["enhanced", "rfc8226"],
        default="enhanced",
        help="which extension carries them: RFC 9118 (default) or RFC 8226 section 8",
    )
    p.add_argument("--out", help="also write the chain (leaf first) to this file")
    p.set_defaults(func=cmd_ca_issue)

    p = ca.add_parser("revoke", help="revoke a certificate and publish a new CRL")
    p.add_argument("serial", metavar="SERIAL|CERT", help="hex serial, or the certificate file")
    p.add_argument("--ca", default=".", help="the CA directory (default: .)")
    p.add_argument("--reason", help="RFC 5280 reason, e.g. keyCompromise, superseded")
    p.set_defaults(func=cmd_ca_revoke)

    p = ca.add_parser("crl", help="sign and publish a fresh CRL")
    p.add_argument("--ca", default=".", help="the CA directory (default: .)")
    p.add_argument("--days", type=int, help="until nextUpdate (default: the CA's crl-days)")
    p.add_argument("--out", help="also write the DER CRL to this file")
    p.set_defaults(func=cmd_ca_crl)

    p = ca.add_parser("trust-list", help="sign the STI-PA trust list of approved roots")
    p.add_argument("--ca", default=".", help="the CA directory (default: .)")
    p.add_argument("--days", type=int, help="until exp (default 30)")
    p.add_argument("--out", help="file to write (default: DIR/trust-list.jwt)")
    p.set_defaults(func=cmd_ca_trust_list)

    p = cert_commands.add_parser("lint", help="ATIS-1000080 findings for certificates")
    p.add_argument("files", nargs="*", metavar="FILE", help="PEM chains or DER certificates")
    p.add_argument("--json", action="store_true", help="one JSON object per certificate")
    p.add_argument("--role", choices=[r.value for r in CertRole], help="instead of inferring it")
    p.add_argument(
        "--corpus", metavar="DIR", help="lint a pem-samples directory and compare with index.csv"
    )
    p.set_defaults(func=cmd_cert_lint)

    repo = commands.add_parser("repo", help="certificate repository (STI-CR)").add_subparsers(
        dest="repo_command", required=True
    )
    p = repo.add_parser("serve", help="serve DIR's chains and CRLs over HTTPS")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="port (default 8443; 0 picks one)")
    p.add_argument("--tls-cert", help="server certificate chain (PEM)")
    p.add_argument("--tls-key", help="its private key (PEM)")
    p.add_argument("--max-age", type=int, default=86400, help="Cache-Control max-age (seconds)")
    p.add_argument("--quiet", action="store_true", help="no request log")
    p.set_defaults(func=cmd_repo_serve)

    lab = commands.add_parser("lab", help="a one-command test lab").add_subparsers(
        dest="lab_command", required=True
    )
    defaults = LabSettings()
    p = lab.add_parser("init", help="CA, SP certificate, repository, TLS and shaken.toml in DIR")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--spc", default=defaults.spc, help=f"the SP's SPC (default {defaults.spc})")
    p.add_argument("--org", default=defaults.org, help="the SP's name (O)")
    p.add_argument("--host", default=defaults.host, help="loopback address of every listener")
    p.add_argument("--repo-port", type=int, default=defaults.repository_port)
    p.add_argument("--sip-signing-port", type=int, default=defaults.sip_signing_port)
    p.add_argument("--sip-verification-port", type=int, default=defaults.sip_verification_port)
    p.add_argument("--rest-port", type=int, default=defaults.rest_port)
    p.add_argument("--sti-pa-port", type=int, default=defaults.sti_pa_port, help="test STI-PA")
    p.add_argument("--acme-port", type=int, default=defaults.acme_port, help="test ACME STI-CA")
    p.add_argument("--tn-start", default=defaults.tn_start, help="first TN signed at A")
    p.add_argument("--tn-count", type=int, default=defaults.tn_count, help="how many TNs")
    p.set_defaults(func=cmd_lab_init)

    p = lab.add_parser("up", help="run the lab: its repository, SIP and REST servers")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--host", help="address to bind (default: the lab's)")
    p.add_argument("--port", type=int, help="repository port (default: the lab's; 0 picks one)")
    p.add_argument("--quiet", action="store_true", help="no request log")
    p.set_defaults(func=cmd_lab_up)

    p = lab.add_parser(
        "call", help="place a SIP call into a running lab: signed, then verified (UDP)"
    )
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--from", dest="caller", help="the caller's TN (default: the lab's first TN)")
    p.add_argument("--to", dest="called", default=CALLED, help=f"the called TN (default {CALLED})")
    p.add_argument("--name", default="Alice", help="the caller's display name")
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--spoof", metavar="TN", help="tamper: rewrite the signed caller to TN, as a spoofer"
    )
    how.add_argument("--no-identity", action="store_true", help="send it without Identity")
    p.add_argument("--timeout", type=float, default=10, help="seconds to wait for each answer")
    p.set_defaults(func=cmd_lab_call)
