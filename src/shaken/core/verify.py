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
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509

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
    UUID_PATTERN,
    DecodedToken,
    PassportClaims,
    PassportHeader,
    decode_json_segment,
    decode_token,
    rebuild_compact_signing_input,
)
from shaken.core.reasons import REASONS, Reason, Verstat
from shaken.core.result import Check, CheckTrace, HeaderTrace, Outcome, VerificationResult
from shaken.core.tn import NumberingPlan, PartyIdentity, canonicalize_tn, normalize_uri
from shaken.core.x5u import STRICT, X5uPolicy, check_x5u

__all__ = [
    "DatePolicy",
    "Plan",
    "ReplayWindow",
    "ValidatedCertificate",
    "VerificationProfile",
    "complete",
    "prepare",
    "try_verify_common",
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


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
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
        """Record that the check ``name`` passed; checks pass in the order of _STAGE_NAMES."""
        assert _STAGE_NAMES[self.stage] == name, (name, self.stage)
        if detail:
            self.details[self.stage] = detail
        self.stage += 1

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
    if dest_tn:
        seen_tns = {o.tn for o in observed if o.tn is not None}
        if any(_claimed_tn(t, plan_) in seen_tns for t in dest_tn):
            return True
    if dest_uri:
        seen_uris = {o.uri for o in observed if o.uri is not None}
        return any(normalize_uri(u) in seen_uris for u in dest_uri)
    return False


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
    checks: list[Check] = []
    # Check 1: an Identity header is present (RFC 8224 section 6.2, 428).
    if not context.identity:
        checks.append(Check(name="identity_present", passed=False, detail="no Identity header"))
        return _failed_result(
            Reason.MISSING_IDENTITY, "no Identity header", checks, outcome=Outcome.MISSING
        )
    checks.append(
        Check(name="identity_present", passed=True, detail=f"{len(context.identity)} header(s)")
    )
    # Check 2: the caller's identity, from which orig is verified (RFC 8224 section 6.2 step 2).
    callers = caller_identities(
        context,
        sources=profile.caller_sources,
        plan=profile.numbering_plan,
        numeric_user_is_tn=profile.numeric_user_is_tn,
    )
    named = [c for c in callers if not c.anonymous]
    if not named:
        detail = "the caller is anonymous" if callers else "no P-Asserted-Identity or From"
        checks.append(Check(name="caller_id", passed=False, detail=detail))
        return _failed_result(Reason.NO_CALLER_ID, detail, checks)
    checks.append(Check(name="caller_id", passed=True, detail=", ".join(map(str, named))))
    called = called_identities(
        context,
        sources=profile.called_sources,
        plan=profile.numbering_plan,
        numeric_user_is_tn=profile.numeric_user_is_tn,
    )
    date_failure = _check_date(context, now, profile)

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
_STAGE_CERTIFICATE = _STAGE_NAMES.index("certificate_fetched")


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


def _check_date(
    context: SipContext, now: datetime, profile: VerificationProfile
) -> VerificationFailure | None:
    """Check 9: the Date header, past and future (OpenSIPS fixed a future-Date bypass)."""
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


def _prepare_candidate(
    cand: _Candidate,
    context: SipContext,
    now: datetime,
    profile: VerificationProfile,
    callers: Sequence[PartyIdentity],
    called: Sequence[PartyIdentity],
    date_failure: VerificationFailure | None,
) -> None:
    # Check 3: header syntax, info present, ppt supported.
    header = IdentityHeader.parse(cand.raw)
    cand.header = header
    cand.ok("header_syntax")
    if header.info is None:
        raise IdentityHeaderError(Reason.MISSING_INFO, "the Identity header has no info parameter")
    cand.ok("info_param", header.info)
    if header.ppt is not None and header.ppt not in profile.accepted_ppt:
        raise IdentityHeaderError(
            Reason.UNSUPPORTED_PPT,
            f"ppt {header.ppt!r} is not accepted (accepted: {', '.join(profile.accepted_ppt)})",
            ppt=header.ppt,
        )
    cand.ok("ppt", header.ppt or "(none)")
    # Check 4: the form.
    if header.is_compact_form:
        if profile.full_form_only:
            raise PassportError(
                Reason.COMPACT_FORM, "compact form Identity header; SHAKEN requires the full form"
            )
        _prepare_compact(cand, header, context, profile, callers, called, date_failure)
        return
    cand.ok("full_form")
    token = decode_token(header.token)
    cand.token = token
    cand.signature = token.signature
    cand.signing_inputs = (token.signing_input,)
    cand.ok("jws")
    # Check 5: header members and x5u == info (RFC 8224 section 4.1, ATIS-1000082 E9/E10).
    ph = PassportHeader.from_json(token.header, require_ppt=profile.full_form_only)
    cand.passport_header = ph
    cand.ok("passport_header")
    if ph.x5u != header.info:
        raise PassportError(
            Reason.X5U_INFO_MISMATCH,
            f"x5u {ph.x5u!r} differs from info {header.info!r}",
            x5u=ph.x5u,
            info=header.info,
        )
    cand.x5u = ph.x5u
    cand.ok("x5u_matches_info")
    # Check 6: typ and alg (437, E11/E12); alg must mirror the Identity alg parameter.
    if ph.typ != "passport":
        raise PassportError(Reason.UNSUPPORTED_TYP, f"typ is {ph.typ!r}, not 'passport'")
    cand.ok("typ")
    if ph.alg != "ES256" or (header.alg is not None and header.alg != ph.alg):
        raise PassportError(
            Reason.UNSUPPORTED_ALG,
            f"alg is {ph.alg!r} (Identity alg parameter {header.alg!r}); only ES256 is supported",
        )
    cand.ok("alg")
    ppt = ph.ppt
    if header.ppt is not None and ppt != header.ppt:
        raise PassportError(
            Reason.PPT_MISMATCH, f"header ppt {ppt!r} differs from the Identity ppt {header.ppt!r}"
        )
    if ppt is not None and ppt not in profile.accepted_ppt:
        raise PassportError(Reason.UNSUPPORTED_PPT, f"ppt {ppt!r} is not accepted", ppt=ppt)
    cand.ppt = ppt
    cand.ok("header_ppt", ppt or "(none)")
    # Check 7: claims present and well typed (E14, E19).
    claims = PassportClaims.from_json(token.payload, ppt=ppt)
    cand.claims = claims
    detail = "" if ppt != "shaken" or claims.origid_is_uuid else "warning: origid is not a UUID"
    cand.ok("claims", detail)
    # Check 8: iat freshness, both ways (E15). div PASSporTs may use their own window.
    max_age = profile.max_div_iat_age if ppt in _DIV_PPTS else profile.max_iat_age
    age = now.timestamp() - claims.iat
    if age > max_age or -age > profile.max_future_skew:
        raise StaleError(
            Reason.STALE_IAT,
            f"iat {claims.iat}{_utc_text(claims.iat)} is {describe_age(age)} (window {max_age} s,"
            f" future skew {profile.max_future_skew} s)",
            iat=claims.iat,
            now=now.isoformat(),
            max_age=max_age,
        )
    cand.ok("iat_fresh")
    # Check 9: the Date header (request-wide, computed once).
    if date_failure is not None:
        raise date_failure
    cand.ok("date_fresh")
    # Check 10: orig against the caller; dest against To/R-URI (E16). For div, the div claim
    # links to an earlier PASSporT and dest is the new target (RFC 8946 section 4.2).
    if not _party_matches(claims.orig, callers, profile.numbering_plan):
        raise IdentityMismatch(
            Reason.ORIG_MISMATCH,
            f"orig {claims.orig} does not match the caller {', '.join(map(str, callers))}",
        )
    cand.ok("orig_matches", str(claims.orig))
    if profile.check_dest and ppt not in _DIV_PPTS:
        if not _dest_matches(claims.dest_tn, claims.dest_uri, called, profile.numbering_plan):
            shown = ", ".join(claims.dest_tn + claims.dest_uri)
            raise IdentityMismatch(
                Reason.DEST_MISMATCH,
                f"dest {shown} does not match the called party {', '.join(map(str, called))}",
            )
        cand.ok("dest_matches", ", ".join(claims.dest_tn + claims.dest_uri))
    else:
        cand.ok(
            "dest_matches", "checked with the diversion chain" if ppt in _DIV_PPTS else "skipped"
        )
    # The TN whose authority the certificate must carry (RFC 8946: the div TN for div).
    scope = claims.div if ppt in _DIV_PPTS and claims.div is not None else claims.orig
    cand.scope_tn = canonicalize_tn(scope.tn) if scope.tn is not None else None
    # Check 11: the x5u URL policy, before any fetch.
    check_x5u(ph.x5u, profile.x5u_policy)
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
    assert header.info is not None
    cand.x5u = header.info
    for name in ("passport_header", "x5u_matches_info", "typ"):
        cand.ok(name, "rebuilt")
    if header.alg is not None and header.alg != "ES256":
        raise PassportError(Reason.UNSUPPORTED_ALG, f"alg is {header.alg!r}")
    cand.ok("alg")
    cand.ppt = header.ppt
    cand.ok("header_ppt", header.ppt or "(none)")
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
            alg=header.alg, ppt=header.ppt, x5u=header.info, orig=orig, dest=dest, iat=form
        )
        for form in (iat, str(iat))
    )
    cand.scope_tn = orig.tn
    check_x5u(header.info, profile.x5u_policy)
    cand.ok("x5u_policy")


def _plan_or_result(plan: Plan) -> Plan | VerificationResult:
    if any(c.failure is None for c in plan.candidates):
        return plan
    return _finish(plan)


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
    for cand in plan.candidates:
        if cand.failure is not None or cand.x5u is None:
            continue
        try:
            _complete_candidate(
                cand,
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
    return _finish(plan)


def _complete_candidate(
    cand: _Candidate,
    certificates: Mapping[str, CertificateMaterial],
    anchors: TrustAnchors | None,
    now: datetime,
    profile: VerificationProfile,
    crls: Sequence[bytes],
    crl_signers: Sequence[x509.Certificate],
    validated: dict[str, ValidatedCertificate | VerificationFailure],
    replay: ReplayWindow | None,
) -> None:
    assert cand.x5u is not None
    # Check 12: the certificate was obtained.
    assert cand.stage == _STAGE_CERTIFICATE
    cert = validated.get(cand.x5u)
    if cert is None:
        material = certificates.get(cand.x5u)
        if material is None:
            cert = CertificateFetchError(
                Reason.CERT_FETCH_FAILED, f"no certificate for {cand.x5u}", url=cand.x5u
            )
        elif isinstance(material, VerificationFailure):
            cert = material
        elif isinstance(material, ValidatedCertificate):
            cert = material
            if material.valid_until < now:
                cert = ChainError(
                    Reason.CERT_EXPIRED,
                    f"the certificate expired at {material.valid_until.isoformat()}",
                    url=cand.x5u,
                )
        else:
            if anchors is None:
                raise ConfigurationError("trust anchors are needed to validate certificates")
            try:
                cert = validate_certificate(
                    material, anchors, now=now, profile=profile, crls=crls, crl_signers=crl_signers
                )
            except ChainError as exc:
                cert = exc
        validated[cand.x5u] = cert
    if isinstance(cert, VerificationFailure):
        if cert.reason not in (Reason.CERT_FETCH_FAILED, Reason.X5U_REJECTED):
            cand.ok("certificate_fetched")
        raise cert
    cand.ok("certificate_fetched", cert.subject)
    cand.certificate = cert
    cand.ok("chain_trusted", (cert.spc and f"SPC {cert.spc}") or "")
    # Check 15: TN scope for TN-scoped and delegate certificates (RFC 8226, RFC 9060).
    if cand.scope_tn is not None and cert.scope is not None:
        cert.scope.check(cand.scope_tn)
    cand.ok("tn_scope")
    # Check 16: ES256 over the segments as received (or as rebuilt for the compact form).
    if not any(verify_es256(cert.public_key, data, cand.signature) for data in cand.signing_inputs):
        raise SignatureInvalid(Reason.BAD_SIGNATURE, "signature validation failed")
    cand.ok("signature")
    # Check 17: replay, when the caller keeps a window.
    if replay is not None:
        if replay.seen(cand.signature, now):
            raise SignatureInvalid(Reason.REPLAYED, "this PASSporT was already seen")
        cand.ok("replay")


def _finish(plan: Plan) -> VerificationResult:
    """Combine the headers' outcomes (RFC 8224 section 6.2.1, RFC 8946 section 4.2)."""
    headers = tuple(cand.trace() for cand in plan.candidates)
    trace = CheckTrace(request=plan.request_checks, headers=headers)
    considered = [
        c
        for c in plan.candidates
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
                return _candidate_result(winner, chain_failure, trace, plan)
            diversions = tuple(
                str(d.claims.div) for d in divs if d.claims is not None and d.claims.div is not None
            )
            tail = Check(name="div_chain", passed=True, detail=" -> ".join(diversions))
            trace = CheckTrace(request=plan.request_checks, headers=headers, tail=(tail,))
        return _candidate_result(winner, None, trace, plan, diversions=diversions)
    if not considered:
        # Every header carried a ppt we do not support: ATIS-1000082 E5 (438).
        first = plan.candidates[0]
        assert first.failure is not None
        return _candidate_result(first, first.failure, trace, plan)
    failed = [c for c in considered if c.failure is not None]
    if not failed:
        # Only div PASSporTs passed: there is no shaken PASSporT to divert from.
        first = considered[0]
        failure = PassportError(
            Reason.INVALID_DIV_CHAIN, "div PASSporT without a verified shaken PASSporT"
        )
        return _candidate_result(first, failure, trace, plan)
    furthest = max(failed, key=lambda c: (c.stage, -c.index))
    assert furthest.failure is not None
    return _candidate_result(furthest, furthest.failure, trace, plan)


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
    plan: Plan,
    diversions: tuple[str, ...] = (),
) -> VerificationResult:
    claims = cand.claims
    cert = cand.certificate
    if claims is not None:
        orig: str | None = str(claims.orig)
        dest = claims.dest_tn + claims.dest_uri
    else:
        callers = caller_identities(
            plan.context, sources=plan.profile.caller_sources, plan=plan.profile.numbering_plan
        )
        orig = str(callers[0]) if callers else None
        dest = tuple(str(c) for c in called_identities(plan.context, sources=("to",)))
    common = {
        "attest": claims.attest if claims is not None else None,
        "orig": orig,
        "dest": dest,
        "origid": claims.origid if claims is not None else None,
        "iat": claims.iat if claims is not None else None,
        "ppt": cand.ppt,
        "spc": cert.spc if cert is not None else None,
        "x5u": cand.x5u or (cand.header.info if cand.header is not None else None),
        "certificate_subject": cert.subject if cert is not None else None,
        "identity_index": cand.index,
        "findings": cert.findings if cert is not None else (),
        "trace": trace,
    }
    if failure is None:
        return VerificationResult(
            verstat=Verstat.PASSED,
            outcome=Outcome.VERIFIED,
            diversions=diversions,
            **common,  # type: ignore[arg-type]
        )
    return VerificationResult(
        verstat=failure.info.verstat,
        outcome=Outcome.FAILED,
        reason=failure.reason,
        detail=failure.detail,
        **common,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------------------------
# The common case, checked without the bookkeeping.
#
# Nearly all SHAKEN traffic is one full-form Identity header in the exact shape signers emit,
# TN parties, no Date to check, and a signer certificate the cache already validated. For that
# shape, try_verify_common runs the same checks as prepare() + complete() in one pass and
# builds the same result; on anything else, and on any failure, it returns None and the
# general pipeline runs (and names the Reason). tests/core/test_fast_path.py proves both paths
# give identical results over generated inputs.

_SHAKEN_CLAIMS = frozenset(("attest", "dest", "iat", "orig", "origid"))
_ONE_HEADER = Check(name="identity_present", passed=True, detail="1 header(s)")
_PLAIN_JSON = json.JSONDecoder()
_COMMON_TAILS = frozenset((";alg=ES256;ppt=shaken", ';alg=ES256;ppt="shaken"'))
_NOT_IN_URL = frozenset(' \t\r\n<>"')
_STAGE_SIGNATURE = _STAGE_NAMES.index("signature") + 1
_I_INFO = _STAGE_NAMES.index("info_param")
_I_PPT = _STAGE_NAMES.index("ppt")
_I_HEADER_PPT = _STAGE_NAMES.index("header_ppt")
_I_CLAIMS = _STAGE_NAMES.index("claims")
_I_ORIG = _STAGE_NAMES.index("orig_matches")
_I_DEST = _STAGE_NAMES.index("dest_matches")
_I_FETCHED = _STAGE_NAMES.index("certificate_fetched")
_I_CHAIN = _STAGE_NAMES.index("chain_trusted")


def _header_x5u(header_b64: str) -> str | None:
    """:func:`_common_header_x5u`, cached only for segments of a real header's size (an x5u
    within the default x5u length limit), so the cache is bounded in bytes as well."""
    if len(header_b64) > _CACHED_HEADER_B64_CHARS:
        return _common_header_x5u.__wrapped__(header_b64)
    return _common_header_x5u(header_b64)


_CACHED_HEADER_B64_CHARS = 1024


@functools.lru_cache(maxsize=1024)
def _common_header_x5u(header_b64: str) -> str | None:
    """The x5u of a header segment that is exactly a plain SHAKEN header, else None.

    Cached: a verifier sees the same few signers' header segments on almost every call.
    """
    try:
        header = decode_json_segment(header_b64, "header")
    except PassportError:
        return None
    if (
        len(header) == 4
        and header.get("alg") == "ES256"
        and header.get("typ") == "passport"
        and header.get("ppt") == "shaken"
        and isinstance(header.get("x5u"), str)
        and header["x5u"].isascii()
        and header["x5u"]
        and not _NOT_IN_URL.intersection(header["x5u"])
    ):
        return str(header["x5u"])
    return None


def try_verify_common(
    context: SipContext,
    certificate_for: Callable[[str], CertificateMaterial | None],
    *,
    now: datetime,
    profile: VerificationProfile = SHAKEN,
) -> VerificationResult | None:
    """Verify the common case in one pass, or return None to let the pipeline decide.

    Only a verification that passes every check returns a result here.
    """
    if (
        len(context.identity) != 1
        or not profile.full_form_only
        or not profile.check_dest
        or "shaken" not in profile.accepted_ppt
        or (profile.date_policy is DatePolicy.REQUIRE and context.date is None)
    ):
        return None
    if now.tzinfo is None:
        return None  # prepare() names the caller's mistake
    # <header>.<payload>.<signature>;info=<x5u>;alg=ES256;ppt=shaken (ppt possibly quoted),
    # split with str methods: the header segment must be one already validated in full, and
    # the other two go through strict base64url decoding below.
    token, _, params = context.identity[0].strip().partition(";info=<")
    x5u, _, tail = params.partition(">")
    if tail not in _COMMON_TAILS:
        return None
    parts = token.split(".")
    if len(parts) != 3 or _header_x5u(parts[0]) != x5u:
        return None
    try:
        text = b64url_decode(parts[1]).decode("utf-8")
        claims = _PLAIN_JSON.decode(text)
        signature = b64url_decode(parts[2])
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
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
        or not isinstance(orig, Mapping)
        or orig.keys() != {"tn"}
        or not isinstance(orig["tn"], str)
        or not orig["tn"]
        or not isinstance(dest, Mapping)
        or dest.keys() != {"tn"}
        or not isinstance(dest["tn"], list)
        or not dest["tn"]
        or not all(isinstance(t, str) and t for t in dest["tn"])
    ):
        return None
    age = now.timestamp() - iat
    if age > profile.max_iat_age or -age > profile.max_future_skew:
        return None
    # Check 9 as the pipeline runs it: SBCs put a Date on nearly every INVITE.
    date_checked = context.date is not None and profile.date_policy is not DatePolicy.IGNORE
    if date_checked and _check_date(context, now, profile) is not None:
        return None
    callers = caller_identities(
        context,
        sources=profile.caller_sources,
        plan=profile.numbering_plan,
        numeric_user_is_tn=profile.numeric_user_is_tn,
    )
    named = [c for c in callers if not c.anonymous]
    plan_ = profile.numbering_plan
    if _claimed_tn(orig["tn"], plan_) not in {c.tn for c in named}:
        return None
    called = called_identities(
        context,
        sources=profile.called_sources,
        plan=profile.numbering_plan,
        numeric_user_is_tn=profile.numeric_user_is_tn,
    )
    dest_tn = tuple(dest["tn"])
    called_tns = {c.tn for c in called}
    if not any(_claimed_tn(t, plan_) in called_tns for t in dest_tn):
        return None
    try:
        check_x5u(x5u, profile.x5u_policy)
    except X5uRejected:
        return None
    cert = certificate_for(x5u)
    if not isinstance(cert, ValidatedCertificate) or cert.valid_until < now:
        return None
    if cert.scope is not None:
        try:
            cert.scope.check(canonicalize_tn(orig["tn"]))
        except ChainError:
            return None
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    if not verify_es256(cert.public_key, signing_input, signature):
        return None
    details = {
        _I_INFO: x5u,
        _I_PPT: "shaken",
        _I_HEADER_PPT: "shaken",
        _I_ORIG: orig["tn"],
        _I_DEST: ", ".join(dest_tn),
        _I_FETCHED: cert.subject,
    }
    if UUID_PATTERN.fullmatch(origid) is None:
        details[_I_CLAIMS] = "warning: origid is not a UUID"
    if cert.spc:
        details[_I_CHAIN] = f"SPC {cert.spc}"
    request = (_ONE_HEADER, Check(name="caller_id", passed=True, detail=", ".join(map(str, named))))
    trace = CheckTrace(
        request=request,
        headers=(HeaderTrace(0, _STAGE_SIGNATURE, _STAGE_NAMES, details, None),),
    )
    return VerificationResult(
        verstat=Verstat.PASSED,
        outcome=Outcome.VERIFIED,
        attest=attest,
        orig=orig["tn"],
        dest=dest_tn,
        origid=origid,
        iat=iat,
        ppt="shaken",
        spc=cert.spc,
        x5u=x5u,
        certificate_subject=cert.subject,
        identity_index=0,
        findings=cert.findings,
        trace=trace,
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
    """:func:`prepare` then :func:`complete`, with the certificates already in hand."""
    if replay is None and not crls:
        common = try_verify_common(context, certificates.get, now=now, profile=profile)
        if common is not None:
            return common
    step = prepare(context, now=now, profile=profile)
    if isinstance(step, VerificationResult):
        return step
    return complete(
        step, certificates, anchors, now=now, crls=crls, crl_signers=crl_signers, replay=replay
    )
