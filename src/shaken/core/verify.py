"""The STI-VS verification pipeline (docs/architecture.md section 3), as two pure steps.

:func:`prepare` runs every check that needs no certificate: Identity presence, caller identity,
header syntax, form, JWS structure, PASSporT header, claims, iat and Date freshness, orig/dest
binding and the x5u URL policy. It returns a :class:`Plan` that names the certificate URLs to
obtain, or a finished :class:`VerificationResult` when no certificate could change the answer.
:func:`complete` finishes with the certificate bytes (or certificates already validated by a
cache), the trust anchors and ``now``: chain, TNAuthList, TN scope, signature and replay.

Checks run in a fixed order and the first failure of an Identity header names its Reason. Cheap
syntax comes before the network, so attacker-controlled input never reaches the HTTP client
unchecked (docs/architecture.md section 3).

Several Identity headers (RFC 8224 section 6.2.1): headers whose ``ppt`` the profile does not
accept are ignored; every other header is checked; the request verifies when one ``shaken``
PASSporT verifies (and, when ``div`` PASSporTs are present, the diversion chain from it holds,
RFC 8946 section 4.2). When all fail, the failure of the header that got furthest through the
checks is reported, the first such header on ties.

Bounded work per request (issue 17 item 6: one INVITE with 100 Identity headers made 100 HTTPS
fetches): only the first ``max_identity_headers`` headers are examined, and only the first
``max_certificate_urls`` distinct x5u URLs among the headers still in the running are fetched.
A header past either bound fails with a detail saying so (``invalid_header``, or
``cert_fetch_failed`` for a URL not fetched), so the request still gets an answer.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, NamedTuple

from cryptography import x509

from shaken.core.branding import NOT_PRESENT, RcdVerdict
from shaken.core.certs import TNAuthList, load_certificates, profile_findings, tnauthlist_of
from shaken.core.chain import (
    TnScope,
    TrustAnchors,
    ValidatedChain,
    check_delegation,
    require_tnauthlist,
    tn_scope,
    validate_chain,
)
from shaken.core.claimconstraints import ClaimConstraintError, constraints_of
from shaken.core.context import (
    CALLED_SOURCES,
    CALLER_SOURCES,
    SipContext,
    called_identities,
    caller_identities,
    parse_sip_date,
)
from shaken.core.errors import (
    CertificateError,
    CertificateFetchError,
    ChainError,
    ConfigurationError,
    IdentityHeaderError,
    IdentityMismatch,
    PassportError,
    SignatureInvalid,
    StaleError,
    TNAuthListError,
    VerificationFailure,
    X5uRejected,
)
from shaken.core.identity import IdentityHeader
from shaken.core.jws import PublicKey, b64url_decode, is_es256_public_key, verify_es256
from shaken.core.passport import (
    ATTESTATION_LEVELS,
    DecodedToken,
    PassportClaims,
    PassportHeader,
    decode_json_segment,
    decode_token,
    is_uuid,
    rebuild_compact_signing_input,
)
from shaken.core.reasons import REASONS, Reason, Verstat
from shaken.core.result import (
    Check,
    CheckTrace,
    HeaderTrace,
    Outcome,
    VerificationResult,
    make_verification_result,
)
from shaken.core.tn import NumberingPlan, PartyIdentity, canonicalize_tn, normalize_uri
from shaken.core.x5u import STRICT, X5uPolicy, check_x5u

__all__ = [
    "DatePolicy",
    "Plan",
    "ReplayWindow",
    "ValidatedCertificate",
    "VerificationProfile",
    "begin",
    "certificate_of",
    "complete",
    "prepare",
    "validate_certificate",
    "verify",
]

_DIV_PPTS = ("div", "div-o")


class DatePolicy(enum.StrEnum):
    """What to do with the SIP Date header.

    iat is the truth in SHAKEN (docs/architecture.md section 3).
    """

    IGNORE = "ignore"
    CHECK_IF_PRESENT = "check_if_present"
    REQUIRE = "require"


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationProfile:
    """The knobs of verification.

    Defaults are the SHAKEN profile of docs/architecture.md section 3.
    """

    max_iat_age: int = 60
    max_future_skew: int = 10
    date_policy: DatePolicy = DatePolicy.CHECK_IF_PRESENT
    max_date_age: int = 60
    full_form_only: bool = True
    accepted_ppt: tuple[str, ...] = ("shaken", "div")
    caller_sources: tuple[str, ...] = CALLER_SOURCES
    called_sources: tuple[str, ...] = CALLED_SOURCES
    numbering_plan: NumberingPlan | None = None
    numeric_user_is_tn: bool = True
    check_dest: bool = True
    x5u_policy: X5uPolicy = STRICT
    require_tnauthlist: bool = True
    enforce_certificate_profile: bool = False
    require_crl: bool = False
    max_div_iat_age: int = 60
    #: Per request: Identity headers examined, and distinct x5u URLs fetched. A SHAKEN call
    #: carries one PASSporT, a diverted one (RFC 8946) one more per diversion.
    max_identity_headers: int = 10
    max_certificate_urls: int = 4

    def __post_init__(self) -> None:
        if self.max_iat_age <= 0 or self.max_future_skew < 0 or self.max_date_age <= 0:
            raise ConfigurationError("freshness windows must be positive")
        if self.max_identity_headers < 1 or self.max_certificate_urls < 1:
            raise ConfigurationError("per-request bounds must be positive")
        for source in self.caller_sources:
            if source not in CALLER_SOURCES:
                raise ConfigurationError(f"unknown caller source {source!r}")
        for source in self.called_sources:
            if source not in CALLED_SOURCES:
                raise ConfigurationError(f"unknown called source {source!r}")


SHAKEN = VerificationProfile()

#: tuple.__new__: a NamedTuple built without its generated __new__'s Python frame.
_new_tuple = tuple.__new__


def _require_aware(now: datetime) -> None:
    tz = now.tzinfo
    if tz is UTC:  # what every caller here passes; its offset is known without asking
        return
    if tz is None or now.utcoffset() is None:
        raise ConfigurationError("now must be a timezone-aware datetime")


# --------------------------------------------------------------------------------------------
# Candidates: one per Identity header that the profile accepts.


@dataclass(slots=True, kw_only=True)
class _Candidate:
    index: int
    raw: str
    stage: int = 0
    details: dict[int, str] = field(default_factory=dict)
    failure: VerificationFailure | None = None
    header: IdentityHeader | None = None
    token: DecodedToken | None = None
    passport_header: PassportHeader | None = None
    claims: PassportClaims | None = None
    ppt: str | None = None
    x5u: str | None = None
    signing_inputs: tuple[bytes, ...] = ()
    signature: bytes = b""
    scope_tn: str | None = None
    certificate: ValidatedCertificate | None = None

    def ok(self, name: str, detail: str = "") -> None:
        """Record that the check ``name`` passed; checks pass in the order of _STAGE_NAMES
        (a check out of order is a bug, refused in every mode, ``python -O`` included)."""
        if _STAGE_NAMES[self.stage] != name:
            raise RuntimeError(f"check {name!r} out of order: {_STAGE_NAMES[self.stage]!r} is next")
        if detail:
            self.details[self.stage] = detail
        self.stage += 1

    def copy(self) -> _Candidate:
        """A copy to finish: what complete() records goes there, never into the plan."""
        return replace(self, details=dict(self.details))

    def trace(self) -> HeaderTrace:
        failure = None if self.failure is None else self.failure.detail
        return HeaderTrace(self.index, self.stage, _STAGE_NAMES, self.details, failure)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What :func:`prepare` found; :attr:`urls` are the certificates to obtain."""

    context: SipContext
    profile: VerificationProfile
    now: datetime
    request_checks: tuple[Check, ...]
    candidates: tuple[_Candidate, ...]

    @property
    def urls(self) -> tuple[str, ...]:
        """The distinct x5u URLs of the headers still in the running, in order."""
        seen: dict[str, None] = {}
        for c in self.candidates:
            if c.failure is None and c.x5u is not None:
                seen.setdefault(c.x5u, None)
        return tuple(seen)


# --------------------------------------------------------------------------------------------
# Certificates as a cache keeps them.


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidatedCertificate:
    """A certificate chain that validated at ``validated_at``; reusable until ``valid_until``.

    A cache can keep these so a warm verification costs one signature check. ``complete``
    re-checks ``valid_until`` against its own ``now``.
    """

    chain: ValidatedChain
    public_key: PublicKey
    tnauthlist: TNAuthList | None
    scope: TnScope | None
    spc: str | None
    subject: str
    findings: tuple[str, ...]
    validated_at: datetime
    valid_until: datetime
    #: The leaf's serial number in hex: what the call record names the signer's certificate by.
    serial: str = ""
    #: True when the leaf carries no claim constraints (RFC 8226 section 8, RFC 9118); then a
    #: PASSporT without Rich Call Data has nothing for them to check (a malformed extension
    #: is not "none": the branding verdict names it).
    unconstrained: bool = True

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain.leaf


def validate_certificate(
    data: bytes,
    anchors: TrustAnchors,
    *,
    now: datetime,
    profile: VerificationProfile = SHAKEN,
    crls: Sequence[bytes] = (),
    crl_signers: Sequence[x509.Certificate] = (),
) -> ValidatedCertificate:
    """Parse an x5u response and validate it (checks 13 to 15 of docs/architecture.md section 3).

    :raises ChainError: with the Reason of the first failing check.
    """
    _require_aware(now)
    try:
        certificates = load_certificates(data)
    except CertificateError as exc:
        raise ChainError(Reason.CERT_UNPARSEABLE, str(exc)) from None
    chain = validate_chain(
        certificates,
        anchors,
        at=now,
        crls=crls,
        crl_signers=crl_signers,
        require_crl=profile.require_crl,
    )
    return certificate_of(chain, now=now, profile=profile)


def certificate_of(
    chain: ValidatedChain, *, now: datetime, profile: VerificationProfile = SHAKEN
) -> ValidatedCertificate:
    """What a verifier keeps of a path :func:`~shaken.core.chain.validate_chain` built: the
    certificate profile (ATIS-1000080), delegation (RFC 9060), TNAuthList (RFC 8226) and
    the P-256 key (RFC 8588 section 3).

    :raises ChainError: with the Reason of the first failing check.
    """
    _require_aware(now)
    issuer = chain.certificates[1] if len(chain.certificates) > 1 else None
    findings = tuple(
        f"{f.severity.value}:{f.rule}: {f.message}"
        for f in profile_findings(chain.leaf, issuer=issuer)
    )
    if profile.enforce_certificate_profile:
        errors = [f for f in findings if f.startswith("error:")]
        if errors:
            raise ChainError(Reason.CERT_PROFILE, errors[0], findings=errors)
    check_delegation(chain)
    tnauthlist: TNAuthList | None
    if profile.require_tnauthlist:
        tnauthlist = require_tnauthlist(chain.leaf)
    else:
        # A lab or a non-SHAKEN STIR deployment may sign with certificates that carry no
        # usable TNAuthList; then there is no SPC to report and no TN scope to check.
        try:
            tnauthlist = tnauthlist_of(chain.leaf)
        except TNAuthListError:
            tnauthlist = None
    key = chain.leaf.public_key()
    if not is_es256_public_key(key):
        raise ChainError(Reason.CERT_PROFILE, "the certificate key is not a P-256 EC key")
    assert isinstance(key, PublicKey)
    valid_until = min(c.not_valid_after_utc for c in chain.certificates)
    try:
        unconstrained = constraints_of(chain.leaf) is None
    except ClaimConstraintError:
        unconstrained = False
    return ValidatedCertificate(
        chain=chain,
        public_key=key,
        tnauthlist=tnauthlist,
        scope=None if tnauthlist is None else tn_scope(chain),
        spc=None if tnauthlist is None else tnauthlist.spc,
        subject=chain.leaf.subject.rfc4514_string(),
        findings=findings,
        validated_at=now,
        valid_until=valid_until,
        serial=format(chain.leaf.serial_number, "x"),
        unconstrained=unconstrained,
    )


# --------------------------------------------------------------------------------------------
# Replay (check 17): optional, pure state that the caller keeps and passes in.


class ReplayWindow:
    """Signatures seen within the freshness window (RFC 8224 section 12.1, a MAY).

    Not thread-safe; one per event loop. Times come from the caller.
    """

    def __init__(self, window_seconds: int = 60, max_entries: int = 100_000) -> None:
        self._window = window_seconds
        self._max = max_entries
        self._seen: dict[bytes, float] = {}

    def seen(self, signature: bytes, now: datetime) -> bool:
        """Record ``signature`` and say whether it was already seen within the window."""
        t = now.timestamp()
        if len(self._seen) >= self._max:
            cutoff = t - self._window
            self._seen = {k: v for k, v in self._seen.items() if v >= cutoff}
        first = self._seen.get(signature)
        if first is not None and t - first <= self._window:
            return True
        self._seen[signature] = t
        return False


# --------------------------------------------------------------------------------------------
# Step 1: prepare


def _failed_result(
    reason: Reason,
    detail: str,
    checks: Sequence[Check],
    outcome: Outcome = Outcome.FAILED,
    orig: str | None = None,
    dest: tuple[str, ...] = (),
) -> VerificationResult:
    return VerificationResult(
        verstat=REASONS[reason].verstat,
        outcome=outcome,
        reason=reason,
        detail=detail,
        orig=orig,
        dest=dest,
        trace=CheckTrace(request=tuple(checks)),
    )


def _claimed_tn(tn: str, plan_: NumberingPlan | None) -> str:
    """A PASSporT TN as comparable with SIP: separators and '+' dropped (ATIS-1000082 E16)."""
    canonical = canonicalize_tn(tn)
    if plan_ is not None and not tn.startswith("+"):
        return plan_.to_e164(canonical)
    return canonical


def _party_matches(
    claimed: PartyIdentity, observed: Sequence[PartyIdentity], plan_: NumberingPlan | None
) -> bool:
    return _dest_matches(
        () if claimed.tn is None else (claimed.tn,),
        () if claimed.uri is None else (claimed.uri,),
        observed,
        plan_,
    )


def _dest_matches(
    dest_tn: Sequence[str],
    dest_uri: Sequence[str],
    observed: Sequence[PartyIdentity],
    plan_: NumberingPlan | None,
) -> bool:
    """True when any claimed TN or URI equals an observed one after canonicalization."""
    # Loops rather than any(generator): this runs twice on every warm verification.
    if dest_tn:
        seen_tns = {o.tn for o in observed}
        for tn in dest_tn:
            if _claimed_tn(tn, plan_) in seen_tns:
                return True
    if dest_uri:
        seen_uris = {o.uri for o in observed}
        for uri in dest_uri:
            if normalize_uri(uri) in seen_uris:
                return True
    return False


@functools.lru_cache(maxsize=16)
def _present(count: int) -> Check:
    """Check 1 passed, for ``count`` headers (a value: the same few on every call)."""
    return Check(name="identity_present", passed=True, detail=f"{count} header(s)")


def _parties(
    context: SipContext, profile: VerificationProfile
) -> tuple[tuple[Check, ...], list[PartyIdentity], Sequence[PartyIdentity]] | VerificationResult:
    """Checks 1 and 2, request-wide: an Identity header is present (RFC 8224 section 6.2,
    428) and the caller is named (section 6.2 step 2); with the request's checks, the named
    callers and the called parties, or the failed result."""
    if not context.identity:
        check = Check(name="identity_present", passed=False, detail="no Identity header")
        return _failed_result(
            Reason.MISSING_IDENTITY, "no Identity header", (check,), outcome=Outcome.MISSING
        )
    present = _present(len(context.identity))
    callers = caller_identities(
        context,
        sources=profile.caller_sources,
        plan=profile.numbering_plan,
        numeric_user_is_tn=profile.numeric_user_is_tn,
    )
    named = [c for c in callers if not c.anonymous]
    if not named:
        detail = "the caller is anonymous" if callers else "no P-Asserted-Identity or From"
        failed = Check(name="caller_id", passed=False, detail=detail)
        return _failed_result(Reason.NO_CALLER_ID, detail, (present, failed))
    detail = str(named[0]) if len(named) == 1 else ", ".join(map(str, named))
    caller = _new_tuple(Check, ("caller_id", True, detail, None))  # Check(...), without a frame
    called = called_identities(
        context,
        sources=profile.called_sources,
        plan=profile.numbering_plan,
        numeric_user_is_tn=profile.numeric_user_is_tn,
    )
    return (present, caller), named, called


def prepare(
    context: SipContext,
    *,
    now: datetime,
    profile: VerificationProfile = SHAKEN,
) -> Plan | VerificationResult:
    """Run checks 1 to 11 (everything that needs no certificate).

    :returns: a finished result when the request already fails (or has nothing to verify);
        otherwise a :class:`Plan` whose :attr:`Plan.urls` name the certificates to obtain.
    :raises ConfigurationError: ``now`` is naive.
    """
    _require_aware(now)
    parties = _parties(context, profile)
    if isinstance(parties, VerificationResult):
        return parties
    checks, named, called = parties
    date_failure = check_date(context, now, profile)

    candidates: list[_Candidate] = []
    for index, raw in enumerate(context.identity):
        cand = _Candidate(index=index, raw=raw)
        if index >= profile.max_identity_headers:
            cand.failure = IdentityHeaderError(
                Reason.INVALID_HEADER,
                f"Identity header {index + 1} not examined: only the first"
                f" {profile.max_identity_headers} of the {len(context.identity)} headers are",
            )
            candidates.append(cand)
            continue
        try:
            _prepare_candidate(cand, context, now, profile, named, called, date_failure)
        except VerificationFailure as failure:
            # A header whose ppt is not accepted fails here too; _finish ignores it
            # (RFC 8224 section 6.2 step 1).
            cand.failure = failure
        candidates.append(cand)
    _bound_certificate_urls(candidates, profile.max_certificate_urls)

    return _plan_or_result(
        Plan(
            context=context,
            profile=profile,
            now=now,
            request_checks=tuple(checks),
            candidates=tuple(candidates),
        )
    )


def _bound_certificate_urls(candidates: Sequence[_Candidate], limit: int) -> None:
    """Fail the headers whose x5u is past the first ``limit`` distinct ones still running."""
    urls: dict[str, None] = {}
    for cand in candidates:
        if cand.failure is not None or cand.x5u is None:
            continue
        if cand.x5u not in urls and len(urls) >= limit:
            cand.failure = CertificateFetchError(
                Reason.CERT_FETCH_FAILED,
                f"{cand.x5u} not fetched: this request names more than {limit} distinct"
                " certificate URLs",
                url=cand.x5u,
                limit=limit,
            )
            continue
        urls.setdefault(cand.x5u, None)


# The names of the per-header checks, in order; a candidate's ``stage`` indexes it.
_STAGE_NAMES = (
    "header_syntax",
    "info_param",
    "ppt",
    "full_form",
    "jws",
    "passport_header",
    "x5u_matches_info",
    "typ",
    "alg",
    "header_ppt",
    "claims",
    "iat_fresh",
    "date_fresh",
    "orig_matches",
    "dest_matches",
    "x5u_policy",
    "certificate_fetched",
    "chain_trusted",
    "tn_scope",
    "signature",
    "replay",
)


def describe_age(seconds: float) -> str:
    """How old a moment ``seconds`` before now is, in the unit a person reads at a glance:
    ``"75 s old"``, ``"3.0 h old"``, ``"4.0 years old"``, ``"12 s in the future"``."""
    size = abs(seconds)
    if size < 120:
        text = f"{size:.0f} s"
    elif size < 2 * 3600:
        text = f"{size / 60:.0f} min"
    elif size < 2 * 86400:
        text = f"{size / 3600:.1f} h"
    elif size < 730 * 86400:
        text = f"{size / 86400:.0f} days"
    else:
        text = f"{size / (365.25 * 86400):.1f} years"
    return f"{text} old" if seconds >= 0 else f"{text} in the future"


def _utc_text(epoch: int) -> str:
    """`` (2021-01-07T06:13:20Z)`` for an epoch time, or nothing when it is out of range."""
    try:
        moment = datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, OSError, ValueError):
        return ""
    return f" ({moment.isoformat().replace('+00:00', 'Z')})"


def check_date(
    context: SipContext, now: datetime, profile: VerificationProfile
) -> VerificationFailure | None:
    """Check 9: the Date header, past and future (RFC 8224 section 6.2 step 3; OpenSIPS fixed
    a future-Date bypass)."""
    if profile.date_policy is DatePolicy.IGNORE:
        return None
    if context.date is None:
        if profile.date_policy is DatePolicy.REQUIRE:
            return StaleError(Reason.MISSING_DATE, "the request has no Date header")
        return None
    moment = parse_sip_date(context.date)
    if moment is None:
        return StaleError(Reason.STALE_DATE, f"the Date header {context.date!r} is not a SIP-date")
    age = (now - moment).total_seconds()
    if age > profile.max_date_age or -age > profile.max_future_skew:
        return StaleError(
            Reason.STALE_DATE,
            f"the Date header is {describe_age(age)} (window {profile.max_date_age} s,"
            f" future skew {profile.max_future_skew} s)",
            date=context.date,
            now=now.isoformat(),
            max_age=profile.max_date_age,
        )
    return None


# --------------------------------------------------------------------------------------------
# The per-header checks, each written once: prepare() runs them on what it parsed, whether
# the strict parsers or the recognizer of the common shape (below) produced it.


def check_info(info: str | None) -> VerificationFailure | None:
    """Check 3: the Identity info parameter is present (RFC 8224 section 4.1)."""
    if info is None:
        return IdentityHeaderError(Reason.MISSING_INFO, "the Identity header has no info parameter")
    return None


def check_ppt_param(ppt: str | None, profile: VerificationProfile) -> VerificationFailure | None:
    """Check 3: the Identity ppt parameter names an accepted PASSporT type (RFC 8224 6.2.1)."""
    if ppt is not None and ppt not in profile.accepted_ppt:
        return IdentityHeaderError(
            Reason.UNSUPPORTED_PPT,
            f"ppt {ppt!r} is not accepted (accepted: {', '.join(profile.accepted_ppt)})",
            ppt=ppt,
        )
    return None


def check_x5u_matches_info(ph: PassportHeader, info: str | None) -> VerificationFailure | None:
    """Check 5: x5u equals the info parameter (RFC 8224 section 4.1, ATIS-1000082 E9/E10)."""
    if ph.x5u != info:
        return PassportError(
            Reason.X5U_INFO_MISMATCH,
            f"x5u {ph.x5u!r} differs from info {info!r}",
            x5u=ph.x5u,
            info=info,
        )
    return None


def check_typ(ph: PassportHeader) -> VerificationFailure | None:
    """Check 6: typ is ``passport`` (RFC 8225 section 4.1, ATIS-1000082 E11)."""
    if ph.typ != "passport":
        return PassportError(Reason.UNSUPPORTED_TYP, f"typ is {ph.typ!r}, not 'passport'")
    return None


def check_alg(ph: PassportHeader, alg: str | None) -> VerificationFailure | None:
    """Check 6: alg is ES256 and mirrors the Identity alg parameter ``alg`` (RFC 8588 3)."""
    if ph.alg != "ES256" or (alg is not None and alg != ph.alg):
        return PassportError(
            Reason.UNSUPPORTED_ALG,
            f"alg is {ph.alg!r} (Identity alg parameter {alg!r}); only ES256 is supported",
        )
    return None


def check_header_ppt(
    ph: PassportHeader, ppt_param: str | None, profile: VerificationProfile
) -> VerificationFailure | None:
    """Check 6: the header ppt equals the Identity ppt parameter and is accepted
    (RFC 8225 section 8, RFC 8224 section 4.1)."""
    ppt = ph.ppt
    if ppt_param is not None and ppt != ppt_param:
        return PassportError(
            Reason.PPT_MISMATCH, f"header ppt {ppt!r} differs from the Identity ppt {ppt_param!r}"
        )
    if ppt is not None and ppt not in profile.accepted_ppt:
        return PassportError(Reason.UNSUPPORTED_PPT, f"ppt {ppt!r} is not accepted", ppt=ppt)
    return None


def check_iat(
    iat: int, ppt: str | None, now: datetime, profile: VerificationProfile
) -> VerificationFailure | None:
    """Check 8: iat freshness, both ways (RFC 8224 section 6.2 step 3, ATIS-1000082 E15);
    ``div`` PASSporTs may use their own window (RFC 8946)."""
    max_age = profile.max_div_iat_age if ppt in _DIV_PPTS else profile.max_iat_age
    age = now.timestamp() - iat
    if age > max_age or -age > profile.max_future_skew:
        return StaleError(
            Reason.STALE_IAT,
            f"iat {iat}{_utc_text(iat)} is {describe_age(age)} (window {max_age} s,"
            f" future skew {profile.max_future_skew} s)",
            iat=iat,
            now=now.isoformat(),
            max_age=max_age,
        )
    return None


def check_orig(
    orig: PartyIdentity, callers: Sequence[PartyIdentity], profile: VerificationProfile
) -> VerificationFailure | None:
    """Check 10: orig matches the caller (RFC 8224 section 6.2 step 2, ATIS-1000082 E16)."""
    if not _party_matches(orig, callers, profile.numbering_plan):
        return IdentityMismatch(
            Reason.ORIG_MISMATCH,
            f"orig {orig} does not match the caller {', '.join(map(str, callers))}",
        )
    return None


def check_dest(
    dest_tn: Sequence[str],
    dest_uri: Sequence[str],
    called: Sequence[PartyIdentity],
    profile: VerificationProfile,
) -> VerificationFailure | None:
    """Check 10: dest matches To or the Request-URI (ATIS-1000082 E16)."""
    if not _dest_matches(dest_tn, dest_uri, called, profile.numbering_plan):
        shown = ", ".join((*dest_tn, *dest_uri))
        return IdentityMismatch(
            Reason.DEST_MISMATCH,
            f"dest {shown} does not match the called party {', '.join(map(str, called))}",
        )
    return None


def check_x5u_policy(url: str, profile: VerificationProfile) -> VerificationFailure | None:
    """Check 11: the x5u URL policy, before any fetch (ATIS-1000074 section 5.3.1)."""
    try:
        check_x5u(url, profile.x5u_policy)
    except X5uRejected as failure:
        return failure
    return None


def check_tn_scope(cert: ValidatedCertificate, scope_tn: str | None) -> VerificationFailure | None:
    """Check 15: the TN is within the certificate's TNAuthList (RFC 8226, RFC 9060)."""
    if scope_tn is not None and cert.scope is not None:
        try:
            cert.scope.check(scope_tn)
        except ChainError as failure:
            return failure
    return None


def check_signature(
    cert: ValidatedCertificate, signing_inputs: Sequence[bytes], signature: bytes
) -> VerificationFailure | None:
    """Check 16: ES256 over the segments as received, or as rebuilt for the compact form
    (RFC 8224 section 6.2 step 4, RFC 7515 section 5.2)."""
    for data in signing_inputs:
        if verify_es256(cert.public_key, data, signature):
            return None
    return SignatureInvalid(Reason.BAD_SIGNATURE, "signature validation failed")


def check_replay(
    replay: ReplayWindow, signature: bytes, now: datetime
) -> VerificationFailure | None:
    """Check 17: the PASSporT was not seen within the window (RFC 8224 section 12.1)."""
    if replay.seen(signature, now):
        return SignatureInvalid(Reason.REPLAYED, "this PASSporT was already seen")
    return None


def check_current(
    cert: ValidatedCertificate, url: str, now: datetime
) -> VerificationFailure | None:
    """Check 13: a certificate validated earlier (by a cache) is still within its validity."""
    if cert.valid_until < now:
        return ChainError(
            Reason.CERT_EXPIRED,
            f"the certificate expired at {cert.valid_until.isoformat()}",
            url=url,
        )
    return None


# What the trace says of a check that passed, for the checks whose detail is not constant.


def _ppt_detail(ppt: str | None) -> str:
    return ppt or "(none)"


def _claims_detail(ppt: str | None, origid: str | None) -> str:
    return "" if ppt != "shaken" or is_uuid(origid) else "warning: origid is not a UUID"


def _dest_detail(dest_tn: Sequence[str], dest_uri: Sequence[str]) -> str:
    return ", ".join((*dest_tn, *dest_uri))


def _chain_detail(cert: ValidatedCertificate) -> str:
    return (cert.spc and f"SPC {cert.spc}") or ""


def _scope_tn(ppt: str | None, orig: PartyIdentity, div: PartyIdentity | None) -> str | None:
    """The TN whose authority the certificate must carry (RFC 8946: the div TN for div)."""
    scope = div if ppt in _DIV_PPTS and div is not None else orig
    return canonicalize_tn(scope.tn) if scope.tn is not None else None


def _raise(failure: VerificationFailure | None) -> None:
    if failure is not None:
        raise failure


# --------------------------------------------------------------------------------------------
# The common shape, recognized without the strict parsers.
#
# Nearly all SHAKEN traffic is one full-form Identity header in the exact shape signers emit:
# a plain SHAKEN header segment (the same few per signer, so its parse is cached), claims
# attest/dest/iat/orig/origid with TN parties. For that shape _recognize produces the very
# objects the strict parsers would (IdentityHeader, DecodedToken, PassportHeader,
# PassportClaims) in a fraction of the time; prepare() then runs every check on them as on
# any other header, so no check is written twice. Anything else goes to the strict parsers.
# tests/core/test_fast_path.py proves over generated inputs that the recognizer either
# declines or agrees with them.


class _Common(NamedTuple):
    """An Identity header of the common shape, read: the Identity parameters, the segments
    as received, the (cached) header and the claims' values. :meth:`parsed` gives the
    objects the strict parsers would; the fast path checks the values as they are."""

    token: str
    info: str
    header_b64: str
    payload_b64: str
    signature_b64: str
    signature: bytes
    header_json: Mapping[str, object]
    passport_header: PassportHeader
    payload: dict[str, Any]
    attest: str
    iat: int
    origid: str
    orig: PartyIdentity
    dest_tn: tuple[str, ...]

    @property
    def signing_input(self) -> bytes:
        return f"{self.header_b64}.{self.payload_b64}".encode("ascii")

    def parsed(self) -> tuple[IdentityHeader, DecodedToken, PassportClaims]:
        header = IdentityHeader(token=self.token, info=self.info, alg="ES256", ppt="shaken")
        token = DecodedToken(
            header_b64=self.header_b64,
            payload_b64=self.payload_b64,
            signature_b64=self.signature_b64,
            header=self.header_json,
            payload=MappingProxyType(self.payload),
            signature=self.signature,
        )
        claims = PassportClaims(
            orig=self.orig,
            dest_tn=self.dest_tn,
            iat=self.iat,
            attest=self.attest,
            origid=self.origid,
            extra=_NO_EXTRA,
        )
        return header, token, claims


_SHAKEN_CLAIMS = frozenset(("attest", "dest", "iat", "orig", "origid"))
_COMMON_TAILS = frozenset((";alg=ES256;ppt=shaken", ';alg=ES256;ppt="shaken"'))
#: The C scanner json.loads runs (an undocumented attribute of JSONDecoder, present since 2.6).
_SCAN_JSON: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_NOT_IN_URL = frozenset(' \t\r\n<>"')
_NO_EXTRA: Mapping[str, object] = MappingProxyType({})
_CACHED_HEADER_B64_CHARS = 1024


def _header_x5u(header_b64: str) -> tuple[Mapping[str, object], PassportHeader] | None:
    """:func:`_common_header_x5u`, cached only for segments of a real header's size (an x5u
    within the default x5u length limit), so the cache is bounded in bytes as well."""
    if len(header_b64) > _CACHED_HEADER_B64_CHARS:
        return _common_header_x5u.__wrapped__(header_b64)
    return _common_header_x5u(header_b64)


@functools.lru_cache(maxsize=1024)
def _common_header_x5u(header_b64: str) -> tuple[Mapping[str, object], PassportHeader] | None:
    """A header segment that is exactly a plain SHAKEN header, decoded and read, else None.

    Cached: a verifier sees the same few signers' header segments on almost every call.
    """
    try:
        header = decode_json_segment(header_b64, "header")
    except PassportError:
        return None
    x5u = header.get("x5u")
    if (
        len(header) == 4
        and header.get("alg") == "ES256"
        and header.get("typ") == "passport"
        and header.get("ppt") == "shaken"
        and isinstance(x5u, str)
        and x5u.isascii()
        and x5u
        and not _NOT_IN_URL.intersection(x5u)
    ):
        return MappingProxyType(header), PassportHeader(x5u=x5u, extra=_NO_EXTRA)
    return None


def _recognize(raw: str) -> _Common | None:
    """The parsed objects of an Identity header of the common shape, or None."""
    # <header>.<payload>.<signature>;info=<x5u>;alg=ES256;ppt=shaken (ppt possibly quoted),
    # split with str methods: the header segment must be one already validated in full (and
    # its x5u the info), the other two go through strict base64url decoding below; so this
    # is the shape IdentityHeader.parse reads in one match.
    token, _, params = raw.strip().partition(";info=<")
    info, _, tail = params.partition(">")
    if tail not in _COMMON_TAILS:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    header_b64, payload_b64, signature_b64 = parts
    cached = _header_x5u(header_b64)
    if cached is None or cached[1].x5u != info:
        return None
    try:
        text = b64url_decode(payload_b64).decode("utf-8")
        # The C scanner itself (what json.loads runs, without its two Python frames and the
        # whitespace skipping, there being no whitespace below); it must read all of it.
        claims, end = _SCAN_JSON(text, 0)
        signature = b64url_decode(signature_b64)
    except (ValueError, StopIteration, RecursionError):  # ValueError: Unicode, JSON errors
        return None
    if end != len(text):
        return None
    # Duplicate member names (RFC 8225 section 9) without a per-object hook: the shape checks
    # below admit exactly 7 member names, and with no whitespace every member name ends in
    # '":'. Seven such pairs therefore mean no name was repeated (a repeat or a '":' inside
    # a string would make more); anything else goes to the strict general decoder.
    if text.count('":') != 7 or " " in text or "\n" in text or "\t" in text or "\r" in text:
        return None
    if not isinstance(claims, dict) or claims.keys() != _SHAKEN_CLAIMS:
        return None
    attest, iat, origid = claims["attest"], claims["iat"], claims["origid"]
    orig, dest = claims["orig"], claims["dest"]
    if (
        attest not in ATTESTATION_LEVELS
        or type(iat) is not int
        or not isinstance(origid, str)
        or not isinstance(orig, dict)
        or orig.keys() != {"tn"}
        or not isinstance(orig["tn"], str)
        or not orig["tn"]
        or not isinstance(dest, dict)
        or dest.keys() != {"tn"}
        or not isinstance(dest["tn"], list)
        or not dest["tn"]
        or not all(isinstance(t, str) and t for t in dest["tn"])
    ):
        return None
    header_json, passport_header = cached
    # _Common(...) in field order, without the NamedTuple's own __new__ frame.
    return _new_tuple(
        _Common,
        (
            token,
            info,
            header_b64,
            payload_b64,
            signature_b64,
            signature,
            header_json,
            passport_header,
            claims,  # payload
            attest,
            iat,
            origid,
            PartyIdentity(tn=orig["tn"]),  # orig
            tuple(dest["tn"]),  # dest_tn
        ),
    )


def _prepare_candidate(
    cand: _Candidate,
    context: SipContext,
    now: datetime,
    profile: VerificationProfile,
    callers: Sequence[PartyIdentity],
    called: Sequence[PartyIdentity],
    date_failure: VerificationFailure | None,
) -> None:
    common = _recognize(cand.raw)
    recognized = common.parsed() if common is not None else None
    # Check 3: header syntax, info present, ppt supported.
    header = recognized[0] if recognized is not None else IdentityHeader.parse(cand.raw)
    cand.header = header
    cand.ok("header_syntax")
    _raise(check_info(header.info))
    cand.ok("info_param", header.info or "")
    _raise(check_ppt_param(header.ppt, profile))
    cand.ok("ppt", _ppt_detail(header.ppt))
    # Check 4: the form.
    if header.is_compact_form:
        if profile.full_form_only:
            raise PassportError(
                Reason.COMPACT_FORM, "compact form Identity header; SHAKEN requires the full form"
            )
        _prepare_compact(cand, header, context, profile, callers, called, date_failure)
        return
    cand.ok("full_form")
    token = recognized[1] if recognized is not None else decode_token(header.token)
    cand.token = token
    cand.signature = token.signature
    cand.signing_inputs = (token.signing_input,)
    cand.ok("jws")
    # Check 5: header members and x5u == info.
    if common is not None:
        ph = common.passport_header
    else:
        ph = PassportHeader.from_json(token.header, require_ppt=profile.full_form_only)
    cand.passport_header = ph
    cand.ok("passport_header")
    _raise(check_x5u_matches_info(ph, header.info))
    cand.x5u = ph.x5u
    cand.ok("x5u_matches_info")
    # Check 6: typ and alg; alg must mirror the Identity alg parameter.
    _raise(check_typ(ph))
    cand.ok("typ")
    _raise(check_alg(ph, header.alg))
    cand.ok("alg")
    ppt = ph.ppt
    _raise(check_header_ppt(ph, header.ppt, profile))
    cand.ppt = ppt
    cand.ok("header_ppt", _ppt_detail(ppt))
    # Check 7: claims present and well typed (ATIS-1000082 E14, E19).
    if recognized is not None:
        claims = recognized[2]
    else:
        claims = PassportClaims.from_json(token.payload, ppt=ppt)
    cand.claims = claims
    cand.ok("claims", _claims_detail(ppt, claims.origid))
    _raise(check_iat(claims.iat, ppt, now, profile))
    cand.ok("iat_fresh")
    # Check 9: the Date header (request-wide, computed once).
    _raise(date_failure)
    cand.ok("date_fresh")
    # Check 10: orig against the caller; dest against To/R-URI. For div, the div claim links
    # to an earlier PASSporT and dest is the new target (RFC 8946 section 4.2).
    _raise(check_orig(claims.orig, callers, profile))
    cand.ok("orig_matches", str(claims.orig))
    if profile.check_dest and ppt not in _DIV_PPTS:
        _raise(check_dest(claims.dest_tn, claims.dest_uri, called, profile))
        cand.ok("dest_matches", _dest_detail(claims.dest_tn, claims.dest_uri))
    else:
        cand.ok(
            "dest_matches", "checked with the diversion chain" if ppt in _DIV_PPTS else "skipped"
        )
    # The TN whose authority the certificate must carry (RFC 8946: the div TN for div).
    cand.scope_tn = _scope_tn(ppt, claims.orig, claims.div)
    _raise(check_x5u_policy(ph.x5u, profile))
    cand.ok("x5u_policy")


def _prepare_compact(
    cand: _Candidate,
    header: IdentityHeader,
    context: SipContext,
    profile: VerificationProfile,
    callers: Sequence[PartyIdentity],
    called: Sequence[PartyIdentity],
    date_failure: VerificationFailure | None,
) -> None:
    """STIR baseline: rebuild the signed data from SIP (RFC 8224 section 5.1)."""
    cand.ok("full_form", "compact form: rebuilding from SIP")
    parts = header.token.split(".")
    if len(parts) != 3:
        raise PassportError(Reason.INVALID_TOKEN, "the compact form is not '..signature'")
    try:
        cand.signature = b64url_decode(parts[2])
    except ValueError as exc:
        raise PassportError(Reason.INVALID_TOKEN, f"the signature is {exc}") from None
    cand.ok("jws")
    info = header.info or ""  # check_info passed
    cand.x5u = info
    for name in ("passport_header", "x5u_matches_info", "typ"):
        cand.ok(name, "rebuilt")
    if header.alg is not None and header.alg != "ES256":
        raise PassportError(Reason.UNSUPPORTED_ALG, f"alg is {header.alg!r}")
    cand.ok("alg")
    cand.ppt = header.ppt
    cand.ok("header_ppt", _ppt_detail(header.ppt))
    if context.date is None:
        raise StaleError(Reason.MISSING_DATE, "the compact form needs a Date header for iat")
    moment = parse_sip_date(context.date)
    if moment is None:
        raise StaleError(Reason.STALE_DATE, f"the Date header {context.date!r} is not a SIP-date")
    if not called:
        raise IdentityMismatch(Reason.DEST_MISMATCH, "no To header to rebuild dest from")
    iat = int(moment.timestamp())
    orig, dest = callers[0], called[0]
    cand.ok("claims", "rebuilt from From/To/Date")
    if date_failure is not None:
        cand.ok("iat_fresh", "from Date")
        raise date_failure
    for name in ("iat_fresh", "date_fresh", "orig_matches", "dest_matches"):
        cand.ok(name, "rebuilt")
    # RFC 8224 section 5.1's own example only verifies with iat as a JSON string; both forms
    # describe the same Date, so both are tried.
    cand.signing_inputs = tuple(
        rebuild_compact_signing_input(
            alg=header.alg, ppt=header.ppt, x5u=info, orig=orig, dest=dest, iat=form
        )
        for form in (iat, str(iat))
    )
    cand.scope_tn = orig.tn
    _raise(check_x5u_policy(info, profile))
    cand.ok("x5u_policy")


def _plan_or_result(plan: Plan) -> Plan | VerificationResult:
    if any(c.failure is None for c in plan.candidates):
        return plan
    return _finish(plan, plan.candidates)


# --------------------------------------------------------------------------------------------
# Step 2: complete

CertificateMaterial = bytes | ValidatedCertificate | VerificationFailure


def complete(
    plan: Plan,
    certificates: Mapping[str, CertificateMaterial],
    anchors: TrustAnchors | None,
    *,
    now: datetime | None = None,
    crls: Sequence[bytes] = (),
    crl_signers: Sequence[x509.Certificate] = (),
    replay: ReplayWindow | None = None,
) -> VerificationResult:
    """Finish verification with the certificates of :attr:`Plan.urls`.

    ``certificates`` maps each URL to the x5u response body, to a
    :class:`ValidatedCertificate` from a cache, or to the failure that prevented fetching it
    (a URL that is absent counts as a fetch failure). ``anchors`` may be ``None`` only when
    every certificate is already validated. ``now`` defaults to the plan's.
    """
    when = plan.now if now is None else now
    _require_aware(when)
    validated: dict[str, ValidatedCertificate | VerificationFailure] = {}
    # The plan is never written: the headers still in the running are finished on copies,
    # so a plan completes again (a retry after a fetch failure, a replay re-check) afresh.
    candidates = tuple(c if c.failure is not None else c.copy() for c in plan.candidates)
    for cand in candidates:
        url = cand.x5u
        if cand.failure is not None or url is None:
            continue
        try:
            _complete_candidate(
                cand,
                url,
                certificates,
                anchors,
                when,
                plan.profile,
                crls,
                crl_signers,
                validated,
                replay,
            )
        except VerificationFailure as failure:
            cand.failure = failure
    return _finish(plan, candidates)


def _complete_candidate(
    cand: _Candidate,
    url: str,
    certificates: Mapping[str, CertificateMaterial],
    anchors: TrustAnchors | None,
    now: datetime,
    profile: VerificationProfile,
    crls: Sequence[bytes],
    crl_signers: Sequence[x509.Certificate],
    validated: dict[str, ValidatedCertificate | VerificationFailure],
    replay: ReplayWindow | None,
) -> None:
    # Check 12: the certificate was obtained. ``cand`` is a copy of a header that passed
    # every check of prepare (complete() finishes only those), so its next check is this one.
    cert = validated.get(url)
    if cert is None:
        material = certificates.get(url)
        if material is None:
            cert = CertificateFetchError(
                Reason.CERT_FETCH_FAILED, f"no certificate for {url}", url=url
            )
        elif isinstance(material, VerificationFailure):
            cert = material
        elif isinstance(material, ValidatedCertificate):
            cert = check_current(material, url, now) or material
        else:
            if anchors is None:
                raise ConfigurationError("trust anchors are needed to validate certificates")
            try:
                cert = validate_certificate(
                    material, anchors, now=now, profile=profile, crls=crls, crl_signers=crl_signers
                )
            except ChainError as exc:
                cert = exc
        validated[url] = cert
    if isinstance(cert, VerificationFailure):
        if cert.reason not in (Reason.CERT_FETCH_FAILED, Reason.X5U_REJECTED):
            cand.ok("certificate_fetched")
        raise cert
    cand.ok("certificate_fetched", cert.subject)
    cand.certificate = cert
    cand.ok("chain_trusted", _chain_detail(cert))
    _raise(check_tn_scope(cert, cand.scope_tn))
    cand.ok("tn_scope")
    _raise(check_signature(cert, cand.signing_inputs, cand.signature))
    cand.ok("signature")
    if replay is not None:
        _raise(check_replay(replay, cand.signature, now))
        cand.ok("replay")


def _finish(plan: Plan, candidates: Sequence[_Candidate]) -> VerificationResult:
    """Combine the headers' outcomes (RFC 8224 section 6.2.1, RFC 8946 section 4.2)."""
    headers = tuple(cand.trace() for cand in candidates)
    trace = CheckTrace(request=plan.request_checks, headers=headers)
    considered = [
        c
        for c in candidates
        if not (c.failure is not None and c.failure.reason is Reason.UNSUPPORTED_PPT)
    ]
    passed = [c for c in considered if c.failure is None and c.certificate is not None]
    shaken = [c for c in passed if c.ppt not in _DIV_PPTS]
    divs = [c for c in considered if c.ppt in _DIV_PPTS]
    if shaken:
        winner = shaken[0]
        diversions: tuple[str, ...] = ()
        if divs:
            chain_failure = _check_div_chain(winner, divs, plan)
            if chain_failure is not None:
                tail = Check(name="div_chain", passed=False, detail=chain_failure.detail)
                trace = CheckTrace(request=plan.request_checks, headers=headers, tail=(tail,))
                return _candidate_result(winner, chain_failure, trace, plan.context, plan.profile)
            diversions = tuple(
                str(d.claims.div) for d in divs if d.claims is not None and d.claims.div is not None
            )
            tail = Check(name="div_chain", passed=True, detail=" -> ".join(diversions))
            trace = CheckTrace(request=plan.request_checks, headers=headers, tail=(tail,))
        return _candidate_result(
            winner, None, trace, plan.context, plan.profile, diversions=diversions
        )
    if not considered:
        # Every header carried a ppt we do not support: ATIS-1000082 E5 (438).
        first = candidates[0]
        failure = first.failure or PassportError(Reason.UNSUPPORTED_PPT, "no accepted ppt")
        return _candidate_result(first, failure, trace, plan.context, plan.profile)
    failed = [c for c in considered if c.failure is not None]
    if not failed:
        # Only div PASSporTs passed: there is no shaken PASSporT to divert from.
        first = considered[0]
        failure = PassportError(
            Reason.INVALID_DIV_CHAIN, "div PASSporT without a verified shaken PASSporT"
        )
        return _candidate_result(first, failure, trace, plan.context, plan.profile)
    furthest = max(failed, key=lambda c: (c.stage, -c.index))
    assert furthest.failure is not None
    return _candidate_result(furthest, furthest.failure, trace, plan.context, plan.profile)


def _check_div_chain(
    origin: _Candidate, divs: Sequence[_Candidate], plan: Plan
) -> VerificationFailure | None:
    """RFC 8946 section 4.2: link each div to an earlier dest, same orig, outermost dest = R-URI."""
    assert origin.claims is not None
    for d in divs:
        if d.failure is not None:
            return d.failure
    dests = {canonicalize_tn(t) for t in origin.claims.dest_tn} | set(origin.claims.dest_uri)
    remaining = list(divs)
    outermost: _Candidate | None = None
    while remaining:
        link = next(
            (
                d
                for d in remaining
                if d.claims is not None
                and d.claims.div is not None
                and (
                    (d.claims.div.tn is not None and canonicalize_tn(d.claims.div.tn) in dests)
                    or (d.claims.div.uri is not None and d.claims.div.uri in dests)
                )
            ),
            None,
        )
        if link is None:
            return PassportError(
                Reason.INVALID_DIV_CHAIN, "a div PASSporT does not link to an earlier dest"
            )
        assert link.claims is not None
        if link.claims.orig != origin.claims.orig:
            return PassportError(
                Reason.INVALID_DIV_CHAIN, "a div PASSporT changes orig (RFC 8946 section 4.2)"
            )
        dests = {canonicalize_tn(t) for t in link.claims.dest_tn} | set(link.claims.dest_uri)
        outermost = link
        remaining.remove(link)
    assert outermost is not None and outermost.claims is not None
    if plan.profile.check_dest:
        targets = called_identities(
            plan.context,
            sources=("request_uri",),
            plan=plan.profile.numbering_plan,
            numeric_user_is_tn=plan.profile.numeric_user_is_tn,
        )
        claims = outermost.claims
        if targets and not _dest_matches(
            claims.dest_tn, claims.dest_uri, targets, plan.profile.numbering_plan
        ):
            return IdentityMismatch(
                Reason.DEST_MISMATCH, "the outermost div dest does not match the Request-URI"
            )
    return None


def _candidate_result(
    cand: _Candidate,
    failure: VerificationFailure | None,
    trace: CheckTrace,
    context: SipContext,
    profile: VerificationProfile,
    diversions: tuple[str, ...] = (),
) -> VerificationResult:
    claims = cand.claims
    if claims is not None:
        orig: str | None = str(claims.orig)
        dest = claims.dest_tn + claims.dest_uri
    else:
        callers = caller_identities(
            context, sources=profile.caller_sources, plan=profile.numbering_plan
        )
        orig = str(callers[0]) if callers else None
        dest = tuple(str(c) for c in called_identities(context, sources=("to",)))
    return _result(
        failure,
        trace,
        index=cand.index,
        ppt=cand.ppt,
        x5u=cand.x5u or (cand.header.info if cand.header is not None else None),
        attest=claims.attest if claims is not None else None,
        orig=orig,
        dest=dest,
        origid=claims.origid if claims is not None else None,
        iat=claims.iat if claims is not None else None,
        cert=cand.certificate,
        diversions=diversions,
    )


def _result(
    failure: VerificationFailure | None,
    trace: CheckTrace,
    *,
    index: int,
    ppt: str | None,
    x5u: str | None,
    attest: str | None,
    orig: str | None,
    dest: tuple[str, ...],
    origid: str | None,
    iat: int | None,
    cert: ValidatedCertificate | None,
    diversions: tuple[str, ...] = (),
    rcd: RcdVerdict | None = None,
) -> VerificationResult:
    """The result for the header at ``index``: verified, or failed with ``failure``."""
    # Positionally, in VerificationResult's field order (tests/core/test_fastinit.py).
    return make_verification_result(
        Verstat.PASSED if failure is None else failure.info.verstat,  # verstat
        Outcome.VERIFIED if failure is None else Outcome.FAILED,  # outcome
        None if failure is None else failure.reason,  # reason
        "" if failure is None else failure.detail,  # detail
        attest,
        orig,
        dest,
        origid,
        iat,
        ppt,
        None if cert is None else cert.spc,  # spc
        None if cert is None else cert.serial or None,  # cert_serial
        x5u,
        None if cert is None else cert.subject,  # certificate_subject
        index,  # identity_index
        diversions if failure is None else (),  # diversions
        () if cert is None else cert.findings,  # findings
        rcd,
        trace,
    )


# --------------------------------------------------------------------------------------------
# The one driver: the common case at once, else prepare (and the caller completes the plan).

_INFO_STAGE = _STAGE_NAMES.index("info_param")
_PPT_STAGE = _STAGE_NAMES.index("ppt")
_HEADER_PPT_STAGE = _STAGE_NAMES.index("header_ppt")
_CLAIMS_STAGE = _STAGE_NAMES.index("claims")
_ORIG_STAGE = _STAGE_NAMES.index("orig_matches")
_DEST_STAGE = _STAGE_NAMES.index("dest_matches")
_FETCHED_STAGE = _STAGE_NAMES.index("certificate_fetched")
_TRUSTED_STAGE = _STAGE_NAMES.index("chain_trusted")
_PASSED = _STAGE_NAMES.index("signature") + 1
_SHAKEN_PPT_DETAIL = _ppt_detail("shaken")  # the ppt and header_ppt of a recognized header
_PASSED_WITH_REPLAY = _STAGE_NAMES.index("replay") + 1


def begin(
    context: SipContext,
    certificate_for: Callable[[str], CertificateMaterial | None],
    *,
    now: datetime,
    profile: VerificationProfile = SHAKEN,
    replay: ReplayWindow | None = None,
    branding: bool = False,
) -> Plan | VerificationResult:
    """The result when it needs nothing but ``certificate_for``'s answer, else the plan.

    The common case (one header of the recognized shape whose certificate ``certificate_for``
    returns already validated, every check passing) is finished here in one pass; anything
    else is :func:`prepare`'s, whose :class:`Plan` the caller completes with the certificates
    of :attr:`Plan.urls` (or whose failed result it returns). Every caller goes through this:
    :func:`verify`, ``shaken.verify_identity`` and the verification service.

    ``branding``: the caller runs the branding step (RFC 9795) on verified results. The
    common shape carries exactly the five SHAKEN claims and is the request's only Identity
    header, so it has no Rich Call Data, in the PASSporT or beside it; under a certificate
    without claim constraints its verdict is then not-present, given here so that the
    branding step has nothing to do for nearly every call.

    :raises ConfigurationError: ``now`` is naive.
    """
    _require_aware(now)
    common = _verify_common(context, certificate_for, now, profile, replay, branding)
    if common is not None:
        return common
    return prepare(context, now=now, profile=profile)


def _verify_common(
    context: SipContext,
    certificate_for: Callable[[str], CertificateMaterial | None],
    now: datetime,
    profile: VerificationProfile,
    replay: ReplayWindow | None,
    branding: bool = False,
) -> VerificationResult | None:
    """The common case through the same checks as :func:`prepare` and :func:`complete`,
    without their per-header bookkeeping; None when it is not the common case or a check
    fails (then the general pipeline decides, and names the Reason)."""
    if len(context.identity) != 1 or not profile.check_dest:
        return None
    common = _recognize(context.identity[0])
    if common is None:
        return None
    parties = _parties(context, profile)
    if isinstance(parties, VerificationResult):
        return None
    checks, named, called = parties
    ph, info = common.passport_header, common.info
    ppt, x5u = ph.ppt, ph.x5u  # a recognized header is a SHAKEN one: never div
    if (
        check_info(info)
        or check_ppt_param("shaken", profile)
        or check_x5u_matches_info(ph, info)
        or check_typ(ph)
        or check_alg(ph, "ES256")
        or check_header_ppt(ph, "shaken", profile)
        or check_iat(common.iat, ppt, now, profile)
        or check_date(context, now, profile)
        or check_orig(common.orig, named, profile)
        or check_dest(common.dest_tn, (), called, profile)
        or check_x5u_policy(x5u, profile)
    ):
        return None
    cert = certificate_for(x5u)
    if (
        not isinstance(cert, ValidatedCertificate)
        or check_current(cert, x5u, now)
        or check_tn_scope(cert, _scope_tn(ppt, common.orig, None))
        or check_signature(cert, (common.signing_input,), common.signature)
        or (replay is not None and check_replay(replay, common.signature, now))
    ):
        return None
    # What prepare and complete record for the checks with a detail (empty ones are not);
    # the info (a recognized x5u is never empty), the ppt and the parties always have one.
    details = {
        _INFO_STAGE: info,
        _PPT_STAGE: _SHAKEN_PPT_DETAIL,
        _HEADER_PPT_STAGE: _SHAKEN_PPT_DETAIL,
        _ORIG_STAGE: str(common.orig),
        _DEST_STAGE: _dest_detail(common.dest_tn, ()),
    }
    if claims_detail := _claims_detail(ppt, common.origid):
        details[_CLAIMS_STAGE] = claims_detail
    if cert.subject:
        details[_FETCHED_STAGE] = cert.subject
    if chain_detail := _chain_detail(cert):
        details[_TRUSTED_STAGE] = chain_detail
    # The NamedTuples' own __new__ is a Python frame; tuple's is the same object, in C.
    header = _new_tuple(
        HeaderTrace,
        (0, _PASSED_WITH_REPLAY if replay is not None else _PASSED, _STAGE_NAMES, details, None),
    )
    return _result(
        None,
        _new_tuple(CheckTrace, (checks, (header,), ())),
        index=0,
        ppt=ppt,
        x5u=x5u,
        attest=common.attest,
        orig=str(common.orig),
        dest=common.dest_tn,
        origid=common.origid,
        iat=common.iat,
        cert=cert,
        rcd=NOT_PRESENT if branding and cert.unconstrained else None,
    )


def verify(
    context: SipContext,
    certificates: Mapping[str, CertificateMaterial],
    anchors: TrustAnchors | None,
    *,
    now: datetime,
    profile: VerificationProfile = SHAKEN,
    crls: Sequence[bytes] = (),
    crl_signers: Sequence[x509.Certificate] = (),
    replay: ReplayWindow | None = None,
) -> VerificationResult:
    """:func:`begin` then :func:`complete`, with the certificates already in hand."""
    step = begin(context, certificates.get, now=now, profile=profile, replay=replay)
    if isinstance(step, VerificationResult):
        return step
    return complete(
        step, certificates, anchors, now=now, crls=crls, crl_signers=crl_signers, replay=replay
    )
