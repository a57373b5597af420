"""``shaken cert acquire|renew|status|rollback --config FILE``: the signing certificate's lifecycle.

``acquire`` obtains the first certificate (the STI-PA's SPC token, the STI-CA's ACME order),
publishes it and switches signing to it once its x5u serves it; with a current certificate
that is not due it only says so. ``renew`` does the same when renewal is due (``--force``: now).
Both wait (up to ``lifecycle.x5u_wait``) for the new x5u to serve the new certificate, then
switch; ``--no-wait`` leaves the switch to ``shaken serve``. ``rollback`` makes the previous
generation current again. A running ``shaken serve`` picks every switch up by itself.

``spc-token`` prints an SPC token, for a deployment where only one host may call the STI-PA
(it whitelists addresses): the renewing host's ``[sti_pa] token_command`` runs it there.

``ca-list`` writes the STI-PA's list of approved STI-CA roots as PEM, for ``trust_anchors``.

``status`` prints what an operator (or a monitoring check) needs: the current certificate's
serial, SPC, days left, x5u and what that URL serves right now, when it renews, and any
failure. Its exit status follows the Nagios plugin convention: 0 OK, 1 WARNING (expires within
``warning_days``, renewal failing, a new certificate waiting for its x5u), 2 CRITICAL (no
certificate, expired, or the x5u does not serve it), 3 UNKNOWN (the configuration is unusable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from shaken.adapters.cli import EXIT_OK, EXIT_USAGE, now_of
from shaken.adapters.lifecycle import Lifecycle, build_lifecycle, sti_pa_client_settings
from shaken.adapters.preflight import load_checked
from shaken.adapters.stipa import StiPaClient, StiPaCredentials
from shaken.config import ConfigError, load_config
from shaken.core.acme import decode_tnauthlist_value
from shaken.core.errors import AcquisitionError, CertificateError, ConfigurationError
from shaken.core.jws import certificate_pem
from shaken.files import write_atomic
from shaken.services.lifecycle import Generation, LifecycleStatus, Outcome

__all__ = ["register"]

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
EXIT_FAILED = 1


def _open(args: argparse.Namespace) -> Lifecycle:
    settings = load_checked(args.config)
    return build_lifecycle(settings, clock=args.clock)


def _print_outcome(outcome: Outcome, lifecycle: Lifecycle) -> None:
    print(outcome.message)
    manifest = lifecycle.store.manifest()
    if outcome.action == "switched" and manifest is not None:
        for gid, at in manifest.retiring:
            old = lifecycle.store.get(gid)
            serial = old.serial if old is not None else gid
            print(
                f"  the previous certificate {serial} stays published until {at.isoformat()} "
                "(shaken serve, or the next cert renew, takes it down)"
            )


async def _wait_for_switch(
    lifecycle: Lifecycle, outcome: Outcome, args: argparse.Namespace
) -> Outcome:
    """Re-check the new x5u until it serves the new certificate (bounded by x5u_wait)."""
    engine = lifecycle.engine
    deadline = time.monotonic() + engine.policy.x5u_wait.total_seconds()
    while outcome.action == "pending" and not args.no_wait and time.monotonic() < deadline:
        await asyncio.sleep(min(engine.policy.x5u_recheck.total_seconds(), 2.0))
        await engine.advance(now_of(args))
        state = lifecycle.store.state()
        manifest = lifecycle.store.manifest()
        if state.pending is None:
            generation = outcome.generation
            if (
                manifest is not None
                and generation is not None
                and manifest.current == generation.id
            ):
                return Outcome(
                    "switched",
                    generation,
                    f"signing with certificate {generation.serial} (x5u {generation.x5u})",
                )
            return Outcome(
                "failed", generation, state.last_error or "the new certificate was given up"
            )
    return outcome


async def _renew(args: argparse.Namespace, *, force: bool, first: bool) -> int:
    lifecycle = _open(args)
    try:
        with lifecycle.store.lock() as _held:
            engine = lifecycle.engine
            now = now_of(args)
            for event in await engine.advance(now):
                print(event)
            revoked = await engine.check_revocation(now, force=True)
            if revoked is not None:
                print(f"the current certificate is revoked ({revoked}): renewing")
            status = engine.status(now)
            if status.state.pending and not force:
                outcome = Outcome(
                    "pending", status.pending, "a new certificate is waiting for its x5u"
                )
            elif status.current is not None and not force and not engine.due(now):
                assert status.renew_at is not None
                verb = "a current certificate exists" if first else "renewal is not due"
                print(
                    f"{verb}: {status.current.serial} (SPC {status.current.spc}) valid until "
                    f"{status.current.not_after}; renews at {status.renew_at.isoformat()}"
                    + (" (cert renew --force for a new one now)" if first else "")
                )
                return EXIT_OK
            else:
                outcome = await engine.renew(now)
            if outcome.action == "pending" and not args.no_wait:
                wait = engine.policy.x5u_wait.total_seconds()
                print(f"{outcome.message}; waiting up to {wait:.0f} s for it", flush=True)
            outcome = await _wait_for_switch(lifecycle, outcome, args)
            _print_outcome(outcome, lifecycle)
            if outcome.action == "failed":
                return EXIT_FAILED
            if outcome.action == "pending" and not args.no_wait:
                return EXIT_FAILED
            return EXIT_OK
    finally:
        await lifecycle.aclose()


def _run(coroutine: Any) -> int:
    try:
        result: int = asyncio.run(coroutine)
    except AcquisitionError as exc:
        print(f"shaken: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ConfigurationError as exc:
        print(f"shaken: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return result


def cmd_acquire(args: argparse.Namespace) -> int:
    return _run(_renew(args, force=False, first=True))


def cmd_renew(args: argparse.Namespace) -> int:
    return _run(_renew(args, force=args.force, first=False))


async def _rollback(args: argparse.Namespace) -> int:
    lifecycle = _open(args)
    try:
        with lifecycle.store.lock():
            outcome = await lifecycle.engine.rollback(now_of(args), to=args.to)
            _print_outcome(outcome, lifecycle)
            return EXIT_OK
    finally:
        await lifecycle.aclose()


def cmd_rollback(args: argparse.Namespace) -> int:
    return _run(_rollback(args))


# ------------------------------------------------------------------------------------ status


def _generation_json(generation: Generation | None) -> dict[str, Any] | None:
    if generation is None:
        return None
    return {
        "id": generation.id,
        "serial": generation.serial,
        "spc": generation.spc,
        "not_before": generation.not_before.isoformat() if generation.not_before else None,
        "not_after": generation.not_after.isoformat() if generation.not_after else None,
        "x5u": generation.x5u,
        "state": generation.state,
    }


async def _status(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    lifecycle = _open(args)
    try:
        now = now_of(args)
        with lifecycle.store.lock(wait=False) as held:
            if held:  # else a renewal is under way: report what is on disk
                await lifecycle.engine.check_revocation(now, force=True)
        status: LifecycleStatus = lifecycle.engine.status(now)
        current = status.current
        serves: str | None = None
        code = OK
        problems = list(status.problems)
        if current is None or current.x5u is None:
            code = CRITICAL
            problems.insert(0, "no certificate obtained yet: run shaken cert acquire")
        else:
            key = lifecycle.store.load_key(current)
            problem = await lifecycle.engine.checker.check(current.x5u, key, now=now)
            serves = "the current certificate" if problem is None else problem
            if status.expired or status.revoked or problem is not None:
                code = CRITICAL
                if problem is not None:
                    problems.insert(0, f"the x5u does not serve the current certificate: {problem}")
            elif status.warning or status.state.failures or status.state.pending:
                code = WARNING
        if status.state.pending and status.pending is not None:
            problems.append(f"certificate {status.pending.serial} is waiting for its x5u")
        left = status.days_left(now)
        report = {
            "status": ["OK", "WARNING", "CRITICAL"][code],
            "now": now.isoformat(),
            "current": _generation_json(current),
            "days_left": None if left is None else round(left, 2),
            "x5u_serves": serves,
            "renew_at": status.renew_at.isoformat() if status.renew_at else None,
            "failures": status.state.failures,
            "last_error": status.state.last_error,
            "next_attempt": status.state.next_attempt.isoformat()
            if status.state.next_attempt
            else None,
            "pending": _generation_json(status.pending),
            "revoked": status.revoked,
            "previous": status.manifest.previous if status.manifest else None,
            "retiring": [
                {"id": gid, "at": at.isoformat()}
                for gid, at in (status.manifest.retiring if status.manifest else ())
            ],
            "generations": [_generation_json(g) for g in lifecycle.store.generations()],
            "problems": problems,
        }
        return code, report
    finally:
        await lifecycle.aclose()


def _print_status(report: dict[str, Any]) -> None:
    current = report["current"]
    days = report["days_left"]
    if current is None:
        print(f"CERTIFICATE {report['status']}: no certificate yet")
    else:
        print(
            f"CERTIFICATE {report['status']}: {current['serial']} SPC {current['spc']}, "
            f"{days:.1f} days left | days_left={days:.2f}"
        )
        print(f"  valid         {current['not_before']} .. {current['not_after']}")
        print(f"  x5u           {current['x5u']}")
        print(f"  x5u serves    {report['x5u_serves']}")
        print(f"  renews at     {report['renew_at']}")
    if report["previous"]:
        print(f"  previous      {report['previous']} (shaken cert rollback)")
    for item in report["retiring"]:
        print(f"  retiring      {item['id']} at {item['at']}")
    if report["failures"]:
        print(f"  failures      {report['failures']}, next attempt {report['next_attempt']}")
    for problem in report["problems"]:
        print(f"  problem       {problem}")


def cmd_status(args: argparse.Namespace) -> int:
    try:
        code, report = asyncio.run(_status(args))
    except ConfigError as exc:
        print(f"CERTIFICATE UNKNOWN: {exc}")
        return UNKNOWN
    except (ConfigurationError, AcquisitionError) as exc:
        print(f"CERTIFICATE UNKNOWN: {exc}")
        return UNKNOWN
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        _print_status(report)
    return code


async def _spc_token(args: argparse.Namespace) -> int:
    settings = load_checked(args.config)
    sti_pa = settings.sti_pa_settings
    if sti_pa is None or sti_pa.url is None:
        raise AcquisitionError(f"{args.config} has no [sti_pa] url: it cannot ask the STI-PA")
    try:
        tnauthlist = decode_tnauthlist_value(args.tkvalue)
    except CertificateError as exc:
        raise AcquisitionError(f"--tkvalue: {exc}") from None
    credentials = StiPaCredentials.load(sti_pa.credentials_file)
    async with StiPaClient(sti_pa_client_settings(sti_pa), credentials) as pa:
        await pa.login()
        token = await pa.spc_token(
            tnauthlist=tnauthlist,
            tkvalue=args.tkvalue,
            fingerprint=args.fingerprint,
            now=now_of(args),
            ca=args.ca,
        )
    print(token.token, flush=True)
    return EXIT_OK


def cmd_spc_token(args: argparse.Namespace) -> int:
    return _run(_spc_token(args))


async def _ca_list(args: argparse.Namespace) -> int:
    # Not load_checked: the file's trust_anchors may be what this command is about to write.
    settings = load_config(args.config)
    sti_pa = settings.sti_pa_settings
    if sti_pa is None or sti_pa.url is None:
        raise AcquisitionError(f"{args.config} has no [sti_pa] url: it cannot ask the STI-PA")
    credentials = StiPaCredentials.load(sti_pa.credentials_file)
    async with StiPaClient(sti_pa_client_settings(sti_pa), credentials) as pa:
        await pa.login()
        roots = await pa.ca_list(now=now_of(args))
    pem = b"".join(certificate_pem(root) for root in roots)
    if args.out is None:
        sys.stdout.write(pem.decode("ascii"))
    else:
        write_atomic(Path(args.out), pem)
        print(f"wrote {args.out}: {len(roots)} approved STI-CA root(s)")
    return EXIT_OK


def cmd_ca_list(args: argparse.Namespace) -> int:
    return _run(_ca_list(args))


def register(commands: Any, cert_commands: Any) -> None:
    """``shaken cert acquire``, ``renew``, ``status`` and ``rollback``."""
    p = cert_commands.add_parser("acquire", help="obtain the signing certificate (STI-PA + ACME)")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--no-wait", action="store_true", help="publish, and leave the switch to serve")
    p.set_defaults(func=cmd_acquire)

    p = cert_commands.add_parser("renew", help="renew the signing certificate when due")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--force", action="store_true", help="renew now, due or not")
    p.add_argument("--no-wait", action="store_true", help="publish, and leave the switch to serve")
    p.set_defaults(func=cmd_renew)

    p = cert_commands.add_parser(
        "status", help="days left, x5u, next renewal (exit 0/1/2/3: Nagios OK/WARN/CRIT/UNKNOWN)"
    )
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_status)

    p = cert_commands.add_parser(
        "spc-token", help="print an SPC token from the STI-PA (for [sti_pa] token_command)"
    )
    p.add_argument("--config", required=True, metavar="FILE", help="with [sti_pa] url and login")
    p.add_argument("--tkvalue", required=True, help="the TNAuthList value (base64 or base64url)")
    p.add_argument("--fingerprint", required=True, help="the ACME account key's, 'SHA256 AA:..'")
    p.add_argument("--ca", action="store_true", help="a token for a CA certificate (atc.ca)")
    p.set_defaults(func=cmd_spc_token)

    p = cert_commands.add_parser(
        "ca-list", help="the STI-PA's approved STI-CA roots, as PEM (for trust_anchors)"
    )
    p.add_argument("--config", required=True, metavar="FILE", help="with [sti_pa] url and login")
    p.add_argument("--out", metavar="FILE", help="write them here (default: standard output)")
    p.set_defaults(func=cmd_ca_list)

    p = cert_commands.add_parser("rollback", help="make the previous certificate current again")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--to", metavar="ID", help="this generation instead of the previous one")
    p.set_defaults(func=cmd_rollback)
