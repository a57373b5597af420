"""``shaken cert inspect``: subject, SPC, TNAuthList, claim constraints, validity, findings."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shaken.adapters.cli import EXIT_OK, EXIT_USAGE, UsageError, read_file
from shaken.core.certs import (
    Spc,
    StirCertificate,
    Tn,
    TNEntry,
    TnRange,
    load_certificates,
    profile_findings,
)
from shaken.core.claimconstraints import ClaimConstraintError, constraints_of
from shaken.core.errors import CertificateError

__all__ = ["cmd_cert_inspect", "register"]


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
            certificates = load_certificates(read_file(path))
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


def register(commands: Any, cert_commands: Any) -> None:
    """Add ``shaken cert inspect``."""
    p = cert_commands.add_parser(
        "inspect", help="subject, SPC, TNAuthList, validity and profile findings"
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per certificate per line")
    p.set_defaults(func=cmd_cert_inspect)
