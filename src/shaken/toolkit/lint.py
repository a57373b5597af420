"""ATIS-1000080 certificate lint for people and scripts, and a comparison with a lint corpus.

The rules live in :func:`shaken.core.certs.profile_findings` (pure, shared with the
verifier); this module reads files, pairs each certificate with its issuer when the file is a
chain (so the AKI can be matched), and formats the findings as text or JSON.

:func:`compare_with_corpus` measures how far our rules agree with another linter's recorded
codes: the ``pem-samples`` of the shaken-pki-reports corpus carry the zlint-based codes of the
"STIR/SHAKEN CA Ecosystem Compliance" report in ``index.csv``. Codes and rules do not map one
to one, so :data:`CORRESPONDENCES` pairs groups of them. A code is only compared on a
certificate issued on or after the code's effective date (``lint-codes.json``), and codes that
changed meaning between the report's two lint suites (marked ``@old``/``@new``) only when the
sample's test date is known from ``leaf-certs.jsonl.gz``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from shaken.core.certs import (
    CertRole,
    Finding,
    Severity,
    infer_role,
    load_certificates,
    profile_findings,
)
from shaken.core.errors import CertificateError

__all__ = [
    "CORRESPONDENCES",
    "CorpusComparison",
    "Correspondence",
    "LintedCertificate",
    "compare_with_corpus",
    "format_comparison",
    "format_text",
    "lint_certificates",
    "lint_file",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class LintedCertificate:
    """The findings for one certificate of one file."""

    source: str
    index: int
    subject: str
    role: CertRole
    sha256: str
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity is Severity.WARNING)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "index": self.index,
            "subject": self.subject,
            "role": self.role.value,
            "sha256": self.sha256,
            "findings": [
                {"rule": f.rule, "severity": f.severity.value, "message": f.message}
                for f in self.findings
            ],
        }


def _subject(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string()
    except ValueError:
        return repr(cert.subject)


def lint_certificates(
    certificates: Sequence[x509.Certificate], *, source: str, role: CertRole | None = None
) -> list[LintedCertificate]:
    """Lint each certificate; the next one in the sequence is its issuer when the names chain.

    ``role`` overrides :func:`shaken.core.certs.infer_role` for every certificate (useful for
    a CA certificate whose BasicConstraints are broken).
    """
    results = []
    for index, cert in enumerate(certificates):
        following = certificates[index + 1] if index + 1 < len(certificates) else None
        issuer = following if following is not None and following.subject == cert.issuer else None
        chosen = role if role is not None else infer_role(cert)
        results.append(
            LintedCertificate(
                source=source,
                index=index,
                subject=_subject(cert),
                role=chosen,
                sha256=hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
                findings=profile_findings(cert, role=chosen, issuer=issuer),
            )
        )
    return results


def lint_file(path: Path, *, role: CertRole | None = None) -> list[LintedCertificate]:
    """Lint every certificate of a PEM chain or DER file.

    :raises OSError: the file cannot be read.
    :raises CertificateError: it holds no parsable certificate.
    """
    return lint_certificates(load_certificates(path.read_bytes()), source=str(path), role=role)


def format_text(results: Iterable[LintedCertificate]) -> str:
    """Findings grouped by certificate, then a one-line summary."""
    lines: list[str] = []
    count = errors = warnings = 0
    for result in results:
        count += 1
        errors += result.errors
        warnings += result.warnings
        lines.append(f"{result.source} [{result.index}] {result.role.value}: {result.subject}")
        if not result.findings:
            lines.append("  ok: no ATIS-1000080 findings")
        for finding in result.findings:
            lines.append(f"  {finding.severity.value:7} {finding.rule}: {finding.message}")
    lines.append(
        f"{count} certificate{'s' if count != 1 else ''}: "
        f"{errors} error{'s' if errors != 1 else ''}, "
        f"{warnings} warning{'s' if warnings != 1 else ''}"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Agreement with a lint corpus (shaken-pki-reports pem-samples)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Correspondence:
    """Our rules on one side, the report's codes for the same requirement on the other.

    A code written ``code@old`` or ``code@new`` counts only in that lint suite (the report's
    lints changed meaning in November 2023).
    """

    ours: tuple[str, ...]
    codes: tuple[str, ...]


#: The same pairing the corpus test uses (tests/corpus/test_pki_reports.py), without floors.
CORRESPONDENCES: tuple[Correspondence, ...] = (
    Correspondence(("atis_version",), ("e_atis_version", "e_sti_version")),
    Correspondence(("atis_serial_number",), ("e_atis_serial_number",)),
    Correspondence(
        ("atis_serial_number", "atis_serial_number_size"), ("e_atis_serial_number_size",)
    ),
    Correspondence(("atis_signature_algorithm",), ("e_atis_signature_algorithm",)),
    Correspondence(("atis_subject_public_key",), ("e_atis_subject_public_key",)),
    Correspondence(("atis_subject_dn",), ("e_atis_subject_dn",)),
    Correspondence(("atis_subject_o_required",), ("e_atis_subject_o_required",)),
    Correspondence(("atis_subject_dn", "atis_subject_o_required"), ("e_atis_subject",)),
    Correspondence(("atis_subject_c_iso",), ("e_atis_subject_c_iso",)),
    Correspondence(("atis_issuer_dn",), ("e_atis_issuer_dn",)),
    Correspondence(("atis_subject_cn",), ("e_atis_subject_cn@new",)),
    Correspondence(
        ("atis_subject_cn_spc",),
        ("e_atis_subject_cn_spc", "e_atis_subject_cn@old", "e_sti_subject_cn"),
    ),
    Correspondence(
        ("shaken_subject_rdn_unknown",),
        ("w_shaken_subject_rdn_unknown", "w_pki_subject_rdn_unknown"),
    ),
    Correspondence(
        ("atis_ext_basic_constraints",),
        ("e_atis_ext_basic_constraints", "e_atis_basic_constraints"),
    ),
    Correspondence(("atis_ext_key_usage",), ("e_atis_ext_key_usage",)),
    Correspondence(("atis_ext_key_usage_value",), ("e_atis_ext_key_usage_ee", "e_atis_key_usage")),
    Correspondence(("rfc5280_key_usage_encoding",), ("e_incorrect_ku_encoding",)),
    Correspondence(
        ("atis_subject_key_identifier",),
        ("e_atis_subject_key_identifier", "w_ext_subject_key_identifier_missing_sub_cert"),
    ),
    Correspondence(
        ("atis_subject_key_identifier", "atis_subject_key_identifier_size"),
        ("e_atis_subject_key_identifier_size",),
    ),
    Correspondence(
        ("atis_ext_authority_key_identifier",),
        (
            "e_atis_ext_authority_key_identifier",
            "e_ext_authority_key_identifier_missing",
            "e_ext_authority_key_identifier_no_key_identifier",
        ),
    ),
    Correspondence(
        ("atis_ext_certificate_policies", "atis_certificate_policy_critical"),
        ("e_atis_ext_certificate_policies@new",),
    ),
    Correspondence(
        (
            "atis_ext_certificate_policies",
            "shaken_certificate_policies_id",
            "shaken_certificate_policies_version",
        ),
        (
            "e_shaken_certificate_policies_id",
            "e_atis_certificate_policies@old",
            "e_sti_certificate_policies",
        ),
    ),
    Correspondence(("atis_certificate_policy_critical",), ("n_atis_certificate_policy_critical",)),
    Correspondence(
        ("atis_ext_crl_distribution",), ("e_atis_ext_crl_distribution", "e_atis_crl_distribution")
    ),
    Correspondence(("atis_ext_crl_distribution_struct",), ("e_atis_ext_crl_distribution_struct",)),
    Correspondence(("atis_tn_auth_list",), ("e_atis_tn_auth_list",)),
    Correspondence(
        ("atis_tn_auth_list_spc_format", "atis_tn_auth_list"), ("e_atis_tn_auth_list_spc_format",)
    ),
    Correspondence(
        ("atis_ext_not_specified",), ("e_atis_ext_not_specified", "e_atis_extension_unknown")
    ),
)

#: The report's lints changed meaning from this date (tests/corpus/test_pki_reports.py).
SUITE_SPLIT = datetime(2023, 11, 1, tzinfo=UTC)


@dataclass(slots=True, kw_only=True)
class SampleComparison:
    """One sample certificate: which correspondences were compared and where we differ."""

    file: str
    subject: str
    compared: int = 0
    agreed: int = 0
    agreed_ever: int = 0
    ours_only: list[str] = field(default_factory=list)
    theirs_only: list[str] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class CorpusComparison:
    """Agreement of our findings with the corpus's recorded lint codes."""

    samples: list[SampleComparison]
    unmapped: Counter[str]
    unreadable: list[str]

    @property
    def compared(self) -> int:
        return sum(s.compared for s in self.samples)

    @property
    def agreed(self) -> int:
        return sum(s.agreed for s in self.samples)

    @property
    def agreement(self) -> float:
        """Agreement with the codes of the report's latest table for each sample."""
        return self.agreed / self.compared if self.compared else 1.0

    @property
    def agreement_ever(self) -> float:
        """Agreement with the codes a sample had in any report snapshot (lint_codes_ever)."""
        ever = sum(s.agreed_ever for s in self.samples)
        return ever / self.compared if self.compared else 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": len(self.samples),
            "compared": self.compared,
            "agreed": self.agreed,
            "agreement": round(self.agreement, 6),
            "agreement_ever": round(self.agreement_ever, 6),
            "disagreements": [
                {"file": s.file, "ours_only": s.ours_only, "theirs_only": s.theirs_only}
                for s in self.samples
                if s.ours_only or s.theirs_only
            ],
            "unmapped_codes": dict(self.unmapped.most_common()),
            "unreadable": self.unreadable,
        }


def _effective_dates(path: Path) -> dict[str, datetime]:
    if not path.is_file():
        return {}
    dates: dict[str, datetime] = {}
    for code, info in json.loads(path.read_text(encoding="utf-8")).items():
        text = info.get("effective_date") if isinstance(info, dict) else None
        if text:
            dates[code] = datetime.strptime(text, "%d %b %y %H:%M %Z").replace(tzinfo=UTC)
    return dates


def _tested_at(text: str) -> datetime | None:
    for pattern in ("%d %b %y %H:%M %Z", "%Y-%m-%d %H:%M:%S +0000 UTC"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


@dataclass(slots=True)
class _CorpusFacts:
    """What ``leaf-certs.jsonl.gz`` adds: when each sample was last linted, the codes it ever
    had, and the window of report dates in which each (code, suite) was seen at all."""

    tested: dict[str, datetime] = field(default_factory=dict)
    ever: dict[str, set[str]] = field(default_factory=dict)
    windows: dict[tuple[str, str], tuple[datetime, datetime]] = field(default_factory=dict)


def _suite(when: datetime) -> str:
    return "new" if when >= SUITE_SPLIT else "old"


def _corpus_facts(path: Path, wanted: set[str]) -> _CorpusFacts | None:
    if not path.is_file():
        return None
    facts = _CorpusFacts()
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            lint = record.get("lint") or {}
            when = _tested_at(str(lint.get("tested_at", "")))
            if when is None:
                continue
            for issue in lint.get("issues", ()):
                key = (str(issue.get("code")), _suite(when))
                first, last = facts.windows.get(key, (when, when))
                facts.windows[key] = (min(first, when), max(last, when))
            if record.get("sha256") in wanted:
                facts.tested[record["sha256"]] = when
                facts.ever[record["sha256"]] = set(record.get("lint_codes_ever") or ())
    return facts


def compare_with_corpus(samples: Path) -> CorpusComparison:
    """Lint every sample listed in ``samples/index.csv`` and compare with its lint codes.

    ``lint-codes.json`` (effective dates) and ``leaf-certs.jsonl.gz`` (when each sample was
    linted, the codes it ever had, when each code was in use) are read from the parent
    directory when present; without them fewer codes are compared. A code is compared on a
    sample only if the sample was issued on or after the code's effective date and, when the
    report dates are known, was linted by the suite and in the period in which the report
    emitted that code at all (the report dropped and renamed lints over time).
    """
    index = samples / "index.csv"
    with index.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    effective = _effective_dates(samples.parent / "lint-codes.json")
    facts = _corpus_facts(samples.parent / "leaf-certs.jsonl.gz", {r["sha256"] for r in rows})
    mapped = {code.partition("@")[0] for c in CORRESPONDENCES for code in c.codes}
    results: list[SampleComparison] = []
    unmapped: Counter[str] = Counter()
    unreadable: list[str] = []
    for row in rows:
        path = samples / row["file"]
        try:
            linted = lint_file(path, role=CertRole.LEAF)[0]
        except (OSError, CertificateError, ValueError, IndexError) as exc:
            unreadable.append(f"{row['file']}: {exc}")
            continue
        ours = {f.rule for f in linted.findings}
        theirs = {code for code in row["latest_lint_codes"].split(";") if code}
        unmapped.update(theirs - mapped)
        issued = datetime.fromisoformat(row["not_before"])
        when = facts.tested.get(row["sha256"]) if facts is not None else None
        suite = _suite(when) if when is not None else None
        ever = facts.ever.get(row["sha256"], theirs) if facts is not None else theirs
        sample = SampleComparison(file=row["file"], subject=row["subject"])
        for pair in CORRESPONDENCES:
            active = []
            for code in pair.codes:
                name, _, only = code.partition("@")
                if only and only != suite:
                    continue
                if name in effective and issued < effective[name]:
                    continue
                if facts is not None and when is not None and suite is not None:
                    window = facts.windows.get((name, suite))
                    if window is None or not window[0] <= when <= window[1]:
                        continue
                active.append(name)
            if not active:
                continue
            flagged_by_them = any(code in theirs for code in active)
            flagged_by_us = any(rule in ours for rule in pair.ours)
            sample.compared += 1
            sample.agreed += flagged_by_them == flagged_by_us
            sample.agreed_ever += any(code in ever for code in active) == flagged_by_us
            if flagged_by_us and not flagged_by_them:
                sample.ours_only.append("+".join(r for r in pair.ours if r in ours))
            elif flagged_by_them and not flagged_by_us:
                sample.theirs_only.append("+".join(c for c in active if c in theirs))
        results.append(sample)
    return CorpusComparison(samples=results, unmapped=unmapped, unreadable=unreadable)


def format_comparison(comparison: CorpusComparison) -> str:
    lines = [
        f"corpus agreement: {comparison.agreed}/{comparison.compared} comparisons "
        f"({comparison.agreement:.2%}; {comparison.agreement_ever:.2%} against the codes of any "
        f"snapshot) over {len(comparison.samples)} samples"
    ]
    for sample in comparison.samples:
        if sample.ours_only or sample.theirs_only:
            parts = [f"ours only: {', '.join(sample.ours_only)}"] if sample.ours_only else []
            if sample.theirs_only:
                parts.append(f"theirs only: {', '.join(sample.theirs_only)}")
            lines.append(f"  {sample.file} {sample.subject}: {'; '.join(parts)}")
    if comparison.unmapped:
        codes = ", ".join(f"{code} ({n})" for code, n in comparison.unmapped.most_common())
        lines.append(f"report codes with no counterpart here: {codes}")
    lines.extend(f"  unreadable: {item}" for item in comparison.unreadable)
    return "\n".join(lines)
