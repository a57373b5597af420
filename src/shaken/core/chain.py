"""Certificate path validation at an explicit time, CRL checks, and TN authority.

Pure: the caller passes the certificates, the trust anchors, the CRL bytes and ``at``; nothing
here reads a clock, a file or the network.

Why ``cryptography.x509.verification`` and not pyhanko-certvalidator. We already ship
cryptography for ES256, so its verifier costs no new dependency (certvalidator pulls asn1crypto,
oscrypto and uritools), it runs in Rust (the whole 12,800-leaf corpus validates in a few seconds),
and it is the RFC 5280 path builder the Python ecosystem maintains. Since cryptography 45 its
extension policies are configurable, which SHAKEN needs: the STI leaf has no subjectAltName and
no extendedKeyUsage (the Web PKI defaults demand both), it carries the TNAuthList extension the
verifier does not know, and some CAs mark CertificatePolicies critical. We therefore start from
``ExtensionPolicy.permit_all()`` and add only what path validation itself relies on
(BasicConstraints cA on issuers, keyCertSign when KeyUsage is present). The SHAKEN *profile*
(ATIS-1000080) is judged separately by :func:`shaken.core.certs.profile_findings`, so a policy
can report a deviation without breaking the chain.

One gap is filled by hand: certificates whose issuer signed the legacy NULL-parameter encoding of
``ecdsa-with-SHA256`` (see :mod:`shaken.core.certs`; T-Mobile's STI-CA among them) cannot be
checked by the verifier, so :func:`_legacy_path` verifies that single signature itself and lets
the verifier check the rest of the path.

The certificates are the attacker's (an x5u body of 64 KiB holds about 90), so the work of
one validation is bounded: every signature check it makes, the verifier's included, is charged
to a :class:`ValidationBudget`, which may also carry the caller's deadline.

Revocation is ours: cryptography's verifier does no CRL processing. SHAKEN uses one indirect CRL
published by the STI-PA (ATIS-1000080 section 6.4.1: the CRLDP names the STI-PA URL and, in
``cRLIssuer``, the STI-PA's name); a CA may also publish a direct CRL. See
:func:`validate_chain` for the rules.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from shaken.core.certs import (
    TNAuthList,
    crl_issuer_names,
    issued_over_legacy_encoding,
    load_certificates,
    tnauthlist_of,
)
from shaken.core.errors import CertificateError, ChainError, ConfigurationError
from shaken.core.reasons import Reason

__all__ = [
    "DEFAULT_SIGNATURE_CHECKS",
    "VERIFIER_SIGNATURE_CHECKS",
    "TnScope",
    "TrustAnchors",
    "ValidatedChain",
    "ValidationBudget",
    "check_delegation",
    "check_tn_scope",
    "find_revocation",
    "require_tnauthlist",
    "tn_scope",
    "unchecked_revocation",
    "validate_chain",
]

#: SHAKEN paths are root -> intermediate -> leaf; RFC 9060 delegation adds one or two levels.
MAX_CHAIN_DEPTH = 6

#: cryptography's path builder stops by itself after this many signature checks per
#: ``verify`` call (its ``DEFAULT_SIGNATURE_CHECK_LIMIT``, 2**7; Go and rustls-webpki use 100)
#: and then fails with "Exceeded maximum signature check limit".
VERIFIER_SIGNATURE_CHECKS = 128
#: What one validation may spend in all: the verifier's own limit once, and as much again for
#: the legacy-encoding path and the search that explains a failure. A SHAKEN chain needs 2 or 3.
DEFAULT_SIGNATURE_CHECKS = 2 * VERIFIER_SIGNATURE_CHECKS
#: Steps of the explanation search beyond its signature checks (each one a few list
#: operations): only simple-path conflicts can make it take dead ends.
_MAX_SEARCH_STEPS = 4096
_BUDGET_ERROR = "Exceeded maximum signature check limit"


class _BudgetExhausted(Exception):
    """Raised inside a validation when its :class:`ValidationBudget` is spent."""


class ValidationBudget:
    """The work one chain validation may do, in signature checks, and when it must stop.

    An x5u response of 64 KiB holds about 90 certificates, and certificates that share a name
    and a key all verify as each other's issuer, so a search that follows names and
    signatures without a bound can be made to run for minutes (issue 17 item 1). Everything
    :func:`validate_chain` does for one chain is charged here: each call of cryptography's
    verifier (which limits itself to :data:`VERIFIER_SIGNATURE_CHECKS`; that much is reserved
    before the call and what it did not use is given back, see :func:`_verifier_cost`), the
    signature checks of the legacy-encoding path, and those of the search that explains a
    failure. When the budget is spent the chain is ``cert_untrusted``: a chain that cannot be
    validated within it is not one SHAKEN issues.

    ``expired`` is the caller's deadline as a callable (the core reads no clock; a service
    passes a test of its monotonic clock); it is consulted at every charge and search step.

    One budget serves one validation; it is not thread-safe. ``spent`` is what was charged and
    never exceeds ``limit``; ``exhausted`` says why the validation stopped
    (``"signature_checks"`` or ``"deadline"``), or is None.
    """

    def __init__(
        self,
        signature_checks: int = DEFAULT_SIGNATURE_CHECKS,
        *,
        expired: Callable[[], bool] | None = None,
    ) -> None:
        if signature_checks < VERIFIER_SIGNATURE_CHECKS:
            raise ConfigurationError(
                f"a validation budget needs at least {VERIFIER_SIGNATURE_CHECKS} signature"
                " checks, what one call of the path builder may spend"
            )
        self.limit = signature_checks
        self.spent = 0
        self.exhausted: str | None = None
        self._expired = expired

    def charge(self, checks: int = 1) -> None:
        """Reserve ``checks`` signature checks before making them.

        :raises _BudgetExhausted: they do not fit, or the time is up; nothing more may be done.
        """
        if self.spent + checks > self.limit:
            self.exhausted = "signature_checks"
            raise _BudgetExhausted
        self.spent += checks
        self.step()

    def refund(self, checks: int) -> None:
        """Give back reserved checks that were not used."""
        self.spent -= min(max(checks, 0), self.spent)

    def step(self) -> None:
        """A unit of work that is no signature check: only the deadline is consulted."""
        if self._expired is not None and self._expired():
            self.exhausted = "deadline"
            raise _BudgetExhausted

    def describe(self) -> str:
        if self.exhausted == "deadline":
            return f"the validation time ran out after {self.spent} signature checks"
        return f"the budget of {self.limit} signature checks is spent"


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustAnchors:
    """The STI-CA roots a verifier trusts (the STI-PA trust list, ``GET /api/v1/ca-list``)."""

    certificates: tuple[x509.Certificate, ...]
    _store: Store = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.certificates, tuple) or not self.certificates:
            raise ConfigurationError("trust anchors: at least one CA certificate is needed")
        for cert in self.certificates:
            if not isinstance(cert, x509.Certificate):
                raise ConfigurationError(f"trust anchors: not a certificate: {cert!r}")
        object.__setattr__(self, "_store", Store(list(self.certificates)))

    @classmethod
    def from_pem(cls, data: bytes) -> TrustAnchors:
        """Every certificate of a PEM bundle (DER of one certificate also works)."""
        try:
            certificates = load_certificates(data)
        except CertificateError as exc:
            raise ConfigurationError(f"trust anchors: {exc}") from exc
        return cls(certificates=certificates)

    @property
    def store(self) -> Store:
        return self._store


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidatedChain:
    """A path that validated: the signer's leaf first, the trust anchor last."""

    certificates: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not self.certificates:
            raise ConfigurationError("a validated chain has at least the leaf")

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def anchor(self) -> x509.Certificate:
        return self.certificates[-1]


# --------------------------------------------------------------------------------------------
# Extension policies for the cryptography verifier
# --------------------------------------------------------------------------------------------


def _issuer_is_ca(_policy: Policy, cert: x509.Certificate, value: x509.BasicConstraints) -> None:
    # RFC 5280 section 6.1.4 (k): an issuing certificate must assert cA.
    if not value.ca:
        raise ValueError(f"issuer {cert.subject.rfc4514_string()} is not a CA (cA FALSE)")


def _issuer_may_sign_certs(
    _policy: Policy, cert: x509.Certificate, value: x509.KeyUsage | None
) -> None:
    # RFC 5280 section 4.2.1.3: a KeyUsage on an issuer must include keyCertSign.
    if value is not None and not value.key_cert_sign:
        raise ValueError(f"issuer {cert.subject.rfc4514_string()} lacks keyCertSign")


_CA_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _issuer_is_ca)
    .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _issuer_may_sign_certs)
    .may_be_present(x509.CertificatePolicies, Criticality.AGNOSTIC, None)
)
# The leaf: no SAN or EKU requirement (SHAKEN leaves have neither); a critical
# CertificatePolicies (seen in real STI leaves) is accepted; the profile reports it.
_EE_POLICY = ExtensionPolicy.permit_all().may_be_present(
    x509.CertificatePolicies, Criticality.AGNOSTIC, None
)


# --------------------------------------------------------------------------------------------
# Path validation
# --------------------------------------------------------------------------------------------


def _require_aware(at: datetime) -> None:
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ConfigurationError("'at' must be a timezone-aware datetime")


def _subject(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string()
    except ValueError:
        return repr(cert.subject)


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _paths_ignoring_time(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: TrustAnchors,
    budget: ValidationBudget,
) -> list[list[x509.Certificate]]:
    """Up to 8 name-and-signature paths from ``leaf`` to an anchor, validity not considered.

    Only used to explain a failure: when the verifier rejects a chain, we look for a path that
    would exist at another time, so the caller hears "expired" instead of "untrusted". The
    paths are those a depth-first search over issuers (anchors before intermediates) finds
    first, at most ``MAX_CHAIN_DEPTH + 1`` certificates long and ending at the first anchor.

    The search is bounded, because the certificates are the attacker's: which certificates
    can reach an anchor by names alone is worked out first, without any signature check; the
    signature of each (child, issuer) pair is checked at most once, against ``budget``; and
    the depth-first search only enters a certificate from which a checked path of the length
    left reaches an anchor. Look-alike CAs that never name an anchor therefore cost nothing,
    and any others at most one check per pair, within the budget.

    :raises _BudgetExhausted: from ``budget``.
    """
    max_len = MAX_CHAIN_DEPTH + 1
    certs: list[x509.Certificate] = []
    index: dict[x509.Certificate, int] = {}
    for cert in (leaf, *anchors.certificates, *intermediates):
        if cert not in index:
            index[cert] = len(certs)
            certs.append(cert)
    anchor_ids = {index[a] for a in anchors.certificates}
    by_subject: dict[x509.Name, list[int]] = {}
    # Candidate issuers in the order the search tries them: anchors, then intermediates.
    for cert in (*anchors.certificates, *intermediates):
        ids = by_subject.setdefault(cert.subject, [])
        if index[cert] not in ids:
            ids.append(index[cert])
    parents = [[p for p in by_subject.get(c.issuer, ()) if p != i] for i, c in enumerate(certs)]
    # Which certificates the search can meet: forward from the leaf by names (no signatures).
    reachable = {0: 0}
    queue = deque([0])
    while queue:
        child = queue.popleft()
        if child in anchor_ids or reachable[child] >= max_len - 1:
            continue
        for parent in parents[child]:
            if parent not in reachable:
                reachable[parent] = reachable[child] + 1
                queue.append(parent)
    children: dict[int, list[int]] = {}
    for child in reachable:
        for parent in parents[child]:
            if parent in reachable:
                children.setdefault(parent, []).append(child)
    checked: dict[tuple[int, int], bool] = {}

    def issued(child: int, parent: int) -> bool:
        known = checked.get((child, parent))
        if known is None:
            budget.charge()
            known = checked[child, parent] = _issued_by(certs[child], certs[parent])
        return known

    # How far each certificate is from an anchor by checked signatures: backward from the
    # anchors, each pair checked once.
    distance = {a: 0 for a in anchor_ids if a in reachable}
    frontier = deque(distance)
    while frontier:
        parent = frontier.popleft()
        if distance[parent] >= max_len - 1:
            continue
        for child in children.get(parent, ()):
            if child in distance or child in anchor_ids:
                continue
            if issued(child, parent):
                distance[child] = distance[parent] + 1
                frontier.append(child)
    found: list[list[x509.Certificate]] = []
    if 0 not in distance:
        return found
    steps = 0

    def extend(path: list[int]) -> None:
        nonlocal steps
        steps += 1
        budget.step()
        if len(found) >= 8 or steps > _MAX_SEARCH_STEPS:
            return
        tip = path[-1]
        if tip in anchor_ids:
            found.append([certs[i] for i in path])
            return
        for candidate in parents[tip]:
            left = distance.get(candidate)
            if candidate in path or left is None or len(path) + 1 + left > max_len:
                continue
            if issued(tip, candidate):
                extend([*path, candidate])

    extend([0])
    return found


def _verifier_cost(
    error: str,
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    issuers: Sequence[x509.Certificate],
) -> int:
    """What a failed ``verify`` call may have spent, in signature checks.

    Its own limit when it says it reached it; otherwise the number of (certificate, issuer by
    name) pairs it could have tried, at most that limit (cryptography does not report its
    count).
    """
    if _BUDGET_ERROR in error:
        return VERIFIER_SIGNATURE_CHECKS
    subjects: dict[x509.Name, int] = {}
    for cert in (*issuers, *intermediates):
        subjects[cert.subject] = subjects.get(cert.subject, 0) + 1
    pairs = sum(subjects.get(cert.issuer, 0) for cert in (leaf, *intermediates))
    return min(pairs, VERIFIER_SIGNATURE_CHECKS)


def _outside_validity(
    path: Sequence[x509.Certificate], at: datetime
) -> tuple[int, x509.Certificate] | None:
    for depth, cert in enumerate(path):
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            return depth, cert
    return None


def _expired_error(depth: int, cert: x509.Certificate, at: datetime) -> ChainError:
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    state = "not yet valid" if at < not_before else "expired"
    return ChainError(
        Reason.CERT_EXPIRED,
        f"certificate at depth {depth} ({_subject(cert)}) is {state} at {at.isoformat()}: "
        f"valid {not_before.isoformat()} to {not_after.isoformat()}",
        depth=depth,
        subject=_subject(cert),
        not_before=not_before,
        not_after=not_after,
        at=at,
    )


def validate_chain(
    chain: Sequence[x509.Certificate],
    anchors: TrustAnchors,
    *,
    at: datetime,
    crls: Sequence[bytes] = (),
    crl_signers: Sequence[x509.Certificate] = (),
    require_crl: bool = False,
    budget: ValidationBudget | None = None,
) -> ValidatedChain:
    """Build and check the path from ``chain[0]`` (the signer) to one of ``anchors`` at ``at``.

    ``chain[1:]`` are untrusted intermediates from the x5u response, in any order. The
    verifier checks names, signatures, validity (anchors included), BasicConstraints and key
    usage of issuers, and path length.

    Revocation (RFC 5280 section 6.3, simplified to what SHAKEN publishes). Each of ``crls`` is
    PEM or DER. A CRL *applies* to a certificate of the path when either

    * it is signed by that certificate's issuer and names it as issuer (a direct CRL), or
    * the certificate's CRL Distribution Point names a ``cRLIssuer`` equal to the CRL issuer and
      the CRL verifies with the key of an anchor or of one of ``crl_signers`` bearing that name
      (the SHAKEN CRL, signed by the STI-PA: an indirect CRL).

    An applicable CRL that lists the serial revokes the certificate, even after its nextUpdate
    (revocation is permanent; RFC 5280 section 3.3). An applicable CRL is *current* when ``at``
    is not after its nextUpdate; with ``require_crl`` every certificate of the path below the
    anchor needs a current applicable CRL. No cRLSign check is made on the CRL signer: ATIS v005
    limits CA KeyUsage to exactly keyCertSign, so a direct CRL could never pass it.

    A CRL that does not parse is ignored, unless ``require_crl``: then it is a
    ``CERT_UNTRUSTED`` failure, because an unreadable CRL cannot prove anything current (an
    unknown revocation status is not "revoked", but it is not trusted either).

    Expired or untrusted: ``CERT_EXPIRED`` needs a path to a trusted anchor (by names and
    signatures) on which some certificate is outside its validity at ``at``; a chain that leads
    to no trusted anchor is ``CERT_UNTRUSTED`` whatever its dates. Certificates signed over the
    legacy NULL-parameter ECDSA encoding are validated through :func:`_legacy_path`.

    Work: everything done for one chain is charged to ``budget`` (a fresh
    :class:`ValidationBudget` when None), so a chain built to make path building search costs
    at most its signature checks (and stops at its deadline) and is then ``CERT_UNTRUSTED``.

    :raises ConfigurationError: ``at`` is naive or ``chain`` is empty.
    :raises ChainError: ``CERT_EXPIRED`` (fields depth, subject, not_before, not_after, at),
        ``CERT_UNTRUSTED`` (fields subject, cause; a spent budget also has ``exhausted``,
        ``"signature_checks"`` or ``"deadline"``, and ``spent``) or ``CERT_REVOKED`` (fields
        depth, subject, serial, cause). ``cause`` is the underlying explanation (the
        exception's ``detail`` attribute is already its full sentence).
    """
    _require_aware(at)
    if not chain:
        raise ConfigurationError("validate_chain needs at least the signer's certificate")
    work = budget if budget is not None else ValidationBudget()
    leaf, intermediates = chain[0], list(chain[1:])
    try:
        path = _verify(work, anchors.store, at, leaf, intermediates, anchors.certificates)
    except _BudgetExhausted:
        raise _exhausted_error(leaf, work, "") from None
    except VerificationError as exc:
        detail = str(exc)
        try:
            legacy = _legacy_path(leaf, intermediates, anchors, at, work)
            if legacy is not None:
                return _finish(legacy, anchors, at, crls, crl_signers, require_crl)
            candidates = _paths_ignoring_time(leaf, intermediates, anchors, work)
        except _BudgetExhausted:
            raise _exhausted_error(leaf, work, detail) from None
        expired = [found for p in candidates if (found := _outside_validity(p, at)) is not None]
        if candidates and len(expired) == len(candidates):
            raise _expired_error(*expired[0], at) from None
        raise ChainError(
            Reason.CERT_UNTRUSTED,
            f"no valid path from {_subject(leaf)} to a trusted STI-CA: {detail}",
            subject=_subject(leaf),
            cause=detail,
        ) from None
    return _finish(path, anchors, at, crls, crl_signers, require_crl)


def _verify(
    budget: ValidationBudget,
    store: Store,
    at: datetime,
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    issuers: Sequence[x509.Certificate],
) -> list[x509.Certificate]:
    """One call of cryptography's verifier, its worst case reserved from ``budget``.

    ``issuers`` are the certificates of ``store``, for the estimate of a failed call's work.

    :raises VerificationError: from the verifier (what it may have spent stays charged).
    :raises _BudgetExhausted: its worst case does not fit in what is left.
    """
    budget.charge(VERIFIER_SIGNATURE_CHECKS)
    try:
        path = list(_verifier(store, at).verify(leaf, list(intermediates)).chain)
    except VerificationError as exc:
        budget.refund(
            VERIFIER_SIGNATURE_CHECKS - _verifier_cost(str(exc), leaf, intermediates, issuers)
        )
        raise
    budget.refund(VERIFIER_SIGNATURE_CHECKS - (len(path) - 1))
    return path


def _exhausted_error(leaf: x509.Certificate, budget: ValidationBudget, detail: str) -> ChainError:
    spent = budget.describe()
    return ChainError(
        Reason.CERT_UNTRUSTED,
        f"no valid path from {_subject(leaf)} to a trusted STI-CA: validation stopped, {spent}"
        + (f" ({detail})" if detail else ""),
        subject=_subject(leaf),
        cause=f"validation stopped: {spent}",
        exhausted=budget.exhausted,
        spent=budget.spent,
    )


def _finish(
    path: list[x509.Certificate],
    anchors: TrustAnchors,
    at: datetime,
    crls: Sequence[bytes],
    crl_signers: Sequence[x509.Certificate],
    require_crl: bool,
) -> ValidatedChain:
    located = _outside_validity(path, at)
    if located is not None:  # the verifier checks this too; the legacy path relies on it
        raise _expired_error(*located, at)
    _check_revocation(
        path, anchors=anchors, at=at, crls=crls, crl_signers=crl_signers, require_crl=require_crl
    )
    return ValidatedChain(certificates=tuple(path))


def _verifier(store: Store, at: datetime) -> ClientVerifier:
    return (
        PolicyBuilder()
        .store(store)
        .time(at)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )


# --------------------------------------------------------------------------------------------
# Certificates signed over a legacy encoding (explicit NULL ECDSA parameters)
# --------------------------------------------------------------------------------------------


def _can_issue(cert: x509.Certificate) -> bool:
    """RFC 5280 section 6.1.4 (k) and (n) for an issuer the verifier did not check itself."""
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True  # no KeyUsage: unrestricted; no BasicConstraints was caught above
    except ValueError:
        return False
    return usage.key_cert_sign


def _legacy_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: TrustAnchors,
    at: datetime,
    budget: ValidationBudget,
) -> list[x509.Certificate] | None:
    """A path through one certificate whose issuer signed the NULL-parameter encoding.

    cryptography rejects ``ecdsa-with-SHA256`` AlgorithmIdentifiers with explicit NULL
    parameters (RFC 5758 section 3.2), so :func:`shaken.core.certs.load_certificates` hands us
    a re-encoded copy whose signature no longer matches. We check that one signature ourselves
    over the restored bytes and let the verifier do everything else:

    * an intermediate signed this way by an anchor (T-Mobile's issuing CA under its root) is
      checked to be a CA that may sign certificates and is then given to the verifier as an
      extra anchor; the real anchor is appended to the path;
    * a leaf signed this way (a Ribbon-issued leaf) has its issuer validated as the start of a
      path, and the leaf is prepended; its validity is checked by :func:`_finish`.

    Path-length and name constraints of the skipped link are not evaluated (SHAKEN uses
    neither). Anything else returns None and the normal failure is reported.

    Each signature check over the legacy bytes (a pair whose names chain) and each verifier
    call is charged to ``budget``.

    :raises _BudgetExhausted: from ``budget``.
    """
    anchor_list = list(anchors.certificates)

    def legacy_issued(child: x509.Certificate, parent: x509.Certificate) -> bool:
        if child.issuer != parent.subject:
            return False  # no signature check is made
        budget.charge()
        return issued_over_legacy_encoding(child, parent)

    for intermediate in intermediates:
        for anchor in anchor_list:
            if not (legacy_issued(intermediate, anchor) and _can_issue(intermediate)):
                continue
            others = [c for c in intermediates if c is not intermediate]
            issuers = [*anchor_list, intermediate]
            try:
                path = _verify(budget, Store(issuers), at, leaf, others, issuers)
            except VerificationError:
                continue
            if path[-1] == intermediate:
                return [*path, anchor]
    for issuer in (*intermediates, *anchor_list):
        if not (legacy_issued(leaf, issuer) and _can_issue(issuer)):
            continue
        if issuer in anchor_list:
            return [leaf, issuer]
        others = [c for c in intermediates if c is not issuer]
        try:
            return [leaf, *_verify(budget, anchors.store, at, issuer, others, anchor_list)]
        except VerificationError:
            continue
    return None


# --------------------------------------------------------------------------------------------
# CRLs
# --------------------------------------------------------------------------------------------


def _load_crl(data: bytes) -> x509.CertificateRevocationList:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def _crl_signed_by(crl: x509.CertificateRevocationList, signer: x509.Certificate) -> bool:
    if crl.issuer != signer.subject:
        return False
    try:
        key = signer.public_key()
        return crl.is_signature_valid(key)  # type: ignore[arg-type]
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False


def _revocation_error(depth: int, cert: x509.Certificate, detail: str) -> ChainError:
    return ChainError(
        Reason.CERT_REVOKED,
        f"certificate at depth {depth} ({_subject(cert)}): {detail}",
        depth=depth,
        subject=_subject(cert),
        serial=cert.serial_number,
        cause=detail,
    )


def _parse_crls(crls: Sequence[bytes], require_crl: bool) -> list[x509.CertificateRevocationList]:
    parsed: list[x509.CertificateRevocationList] = []
    for index, data in enumerate(crls):
        try:
            parsed.append(_load_crl(bytes(data)))
        except (ValueError, TypeError) as exc:
            if require_crl:
                raise ChainError(
                    Reason.CERT_UNTRUSTED,
                    f"CRL #{index} does not parse, so revocation cannot be checked: {exc}",
                    cause=str(exc),
                    unchecked=True,
                ) from None
    return parsed


@dataclass(frozen=True, slots=True)
class _Status:
    """What the CRLs say about one certificate of a path."""

    revoked: ChainError | None
    #: Why its revocation status is not established by a current applicable CRL, or None.
    unknown: str | None


def _status(
    depth: int,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    parsed: Sequence[x509.CertificateRevocationList],
    trusted_signers: Sequence[x509.Certificate],
    at: datetime,
) -> _Status:
    """Which CRLs apply to ``cert`` (see :func:`validate_chain`), and what they say."""
    indirect_names = _crl_issuer_names(cert)
    applicable: list[x509.CertificateRevocationList] = []
    unverified: list[x509.CertificateRevocationList] = []
    for crl in parsed:
        named = crl.issuer == cert.issuer or crl.issuer in indirect_names
        direct = crl.issuer == cert.issuer and _crl_signed_by(crl, issuer)
        indirect = crl.issuer in indirect_names and any(
            _crl_signed_by(crl, signer) for signer in trusted_signers
        )
        if direct or indirect:
            applicable.append(crl)
        elif named:
            unverified.append(crl)
    for crl in applicable:
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            detail = (
                f"serial {cert.serial_number:x} revoked on "
                f"{entry.revocation_date_utc.isoformat()} by the CRL of "
                f"{crl.issuer.rfc4514_string()}"
            )
            return _Status(revoked=_revocation_error(depth, cert, detail), unknown=None)
    if any(crl.next_update_utc is not None and at <= crl.next_update_utc for crl in applicable):
        return _Status(revoked=None, unknown=None)
    if applicable:
        why = "every applicable CRL is past its nextUpdate"
    elif unverified:
        signers = ", ".join(sorted({crl.issuer.rfc4514_string() for crl in unverified}))
        why = (
            f"no CRL from its issuer or its cRLIssuer could be verified: the CRL of {signers} is"
            " signed by neither its issuer nor a configured CRL signer (for the SHAKEN CRL, the"
            " STI-PA certificate: ATIS-1000080 section 6.4.1)"
        )
    else:
        why = "no CRL from its issuer or its cRLIssuer was supplied"
    return _Status(revoked=None, unknown=why)


def _check_revocation(
    path: list[x509.Certificate],
    *,
    anchors: TrustAnchors,
    at: datetime,
    crls: Sequence[bytes],
    crl_signers: Sequence[x509.Certificate],
    require_crl: bool,
) -> None:
    parsed = _parse_crls(crls, require_crl)
    trusted_signers = (*anchors.certificates, *crl_signers)
    # The anchor itself is trusted a priori and has no issuer to revoke it.
    for depth, cert in enumerate(path[:-1]):
        status = _status(depth, cert, path[depth + 1], parsed, trusted_signers, at)
        if status.revoked is not None:
            raise status.revoked
        if require_crl and status.unknown is not None:
            # Unknown status is not "revoked": the issue's rule is to fail as untrusted.
            raise ChainError(
                Reason.CERT_UNTRUSTED,
                f"certificate at depth {depth} ({_subject(cert)}): revocation not"
                f" checkable: {status.unknown}",
                depth=depth,
                subject=_subject(cert),
                cause=status.unknown,
                unchecked=True,
            )


def check_revocation(
    chain: ValidatedChain,
    anchors: TrustAnchors,
    *,
    at: datetime,
    crls: Sequence[bytes] = (),
    crl_signers: Sequence[x509.Certificate] = (),
    require_crl: bool = False,
) -> None:
    """The revocation rules of :func:`validate_chain`, applied to a path it already built.

    A verifier that validates the path first (within a budget, without CRLs, so that only a
    chain leading to a trusted STI-CA makes it fetch the CRLs the chain names) then applies
    the CRLs here, instead of validating the same chain a second time.

    :raises ChainError: ``CERT_REVOKED``, or ``CERT_UNTRUSTED`` (field ``unchecked``) when
        ``require_crl`` and a status cannot be established.
    """
    _require_aware(at)
    _check_revocation(
        list(chain.certificates),
        anchors=anchors,
        at=at,
        crls=crls,
        crl_signers=crl_signers,
        require_crl=require_crl,
    )


def unchecked_revocation(
    chain: ValidatedChain,
    anchors: TrustAnchors,
    *,
    at: datetime,
    crls: Sequence[bytes] = (),
    crl_signers: Sequence[x509.Certificate] = (),
) -> tuple[str, ...]:
    """Why the revocation status of each certificate of a validated path is unknown.

    One sentence per certificate below the anchor that no current applicable CRL covers (the
    rules of :func:`validate_chain`): what a verifier that passes such a chain anyway must
    say. Empty when every certificate's status is established.
    """
    parsed = _parse_crls(crls, False)
    trusted_signers = (*anchors.certificates, *crl_signers)
    path = chain.certificates
    notes: list[str] = []
    for depth, cert in enumerate(path[:-1]):
        status = _status(depth, cert, path[depth + 1], parsed, trusted_signers, at)
        if status.unknown is not None:
            notes.append(f"certificate at depth {depth} ({_subject(cert)}): {status.unknown}")
    return tuple(notes)


def find_revocation(
    path: Sequence[x509.Certificate],
    *,
    crls: Sequence[bytes],
    crl_signers: Sequence[x509.Certificate],
    at: datetime,
) -> ChainError | None:
    """The ``CERT_REVOKED`` failure the CRLs give for a path that was not validated, or None.

    For a chain that could not be validated here (our own signing chain, on a server with no
    anchors for it): each certificate is looked up in the CRLs that apply to it by the same
    rules, its issuer being the next certificate of ``path`` (a direct CRL) or one of
    ``crl_signers`` (the STI-PA). A CRL can only say "revoked" when its issuer's key signed it.
    """
    parsed = _parse_crls(crls, False)
    for depth, cert in enumerate(path[:-1]):
        status = _status(depth, cert, path[depth + 1], parsed, tuple(crl_signers), at)
        if status.revoked is not None:
            return status.revoked
    return None


def _crl_issuer_names(cert: x509.Certificate) -> tuple[x509.Name, ...]:
    """The cRLIssuer names of ``cert``, or none when its extensions cannot be read."""
    try:
        return crl_issuer_names(cert)
    except CertificateError:
        return ()


# --------------------------------------------------------------------------------------------
# TN authority (RFC 8226, RFC 9060)
# --------------------------------------------------------------------------------------------


def require_tnauthlist(cert: x509.Certificate) -> TNAuthList:
    """The leaf's TNAuthList, or ``CERT_NO_TNAUTHLIST`` when absent or malformed."""
    try:
        tnauthlist = tnauthlist_of(cert)
    except CertificateError as exc:
        raise ChainError(
            Reason.CERT_NO_TNAUTHLIST,
            f"the TNAuthList of {_subject(cert)} is malformed: {exc}",
            subject=_subject(cert),
            cause=str(exc),
        ) from None
    if tnauthlist is None:
        raise ChainError(
            Reason.CERT_NO_TNAUTHLIST,
            f"{_subject(cert)} has no TNAuthList extension (RFC 8226 section 9)",
            subject=_subject(cert),
        )
    return tnauthlist


@dataclass(frozen=True, slots=True)
class TnScope:
    """The TN limits along a validated path, decoded once so a certificate cache can keep them.

    ``limits`` holds each TN-scoped TNAuthList with its depth and subject; SPC-only
    certificates impose nothing (a verifier cannot map a TN to an SPC, standards.md V15).
    ``unreadable`` names the first certificate whose TNAuthList does not decode: it cannot
    prove scope, so every TN fails closed.
    """

    limits: tuple[tuple[int, str, TNAuthList], ...] = ()
    unreadable: tuple[int, str, str] | None = None

    def check(self, tn: str) -> None:
        """:raises ChainError: ``TN_OUT_OF_SCOPE`` with fields tn, depth, subject."""
        if self.unreadable is not None:
            depth, subject, cause = self.unreadable
            raise ChainError(
                Reason.TN_OUT_OF_SCOPE,
                f"cannot establish the TN scope at depth {depth}: {cause}",
                tn=tn,
                depth=depth,
                subject=subject,
            )
        for depth, subject, tnauthlist in self.limits:
            if not tnauthlist.covers(tn):
                raise ChainError(
                    Reason.TN_OUT_OF_SCOPE,
                    f"TN {tn} is outside the TNAuthList of {subject} (depth {depth})",
                    tn=tn,
                    depth=depth,
                    subject=subject,
                )


def tn_scope(chain: ValidatedChain) -> TnScope:
    """Read the TN limits of every certificate of the path (RFC 8226 section 9: a TN-scoped
    list, as in RFC 9060 delegate certificates, limits every path through it)."""
    limits: list[tuple[int, str, TNAuthList]] = []
    for depth, cert in enumerate(chain.certificates):
        try:
            tnauthlist = tnauthlist_of(cert)
        except CertificateError as exc:
            return TnScope(unreadable=(depth, _subject(cert), str(exc)))
        if tnauthlist is not None and tnauthlist.tn_scoped:
            limits.append((depth, _subject(cert), tnauthlist))
    return TnScope(limits=tuple(limits))


def check_tn_scope(chain: ValidatedChain, tn: str) -> None:
    """Every certificate of the path with a TN-scoped TNAuthList must cover ``tn``.

    :raises ChainError: ``TN_OUT_OF_SCOPE`` with fields tn, depth, subject.
    """
    tn_scope(chain).check(tn)


def check_delegation(chain: ValidatedChain) -> None:
    """RFC 9060 sections 4 and 7: delegation narrows scope and pairs AKI with SKI.

    For each certificate whose issuer in the path carries a TNAuthList, the child must carry a
    TNAuthList encompassed by the parent's, and the child's AKI keyIdentifier must equal the
    parent's SKI. Parents without a TNAuthList (the usual STI-CA) impose nothing.

    :raises ChainError: ``CERT_UNTRUSTED`` with fields depth, subject, cause.
    """
    certs = chain.certificates
    for depth in range(len(certs) - 1):
        child, parent = certs[depth], certs[depth + 1]

        def fail(detail: str, depth: int = depth, child: x509.Certificate = child) -> ChainError:
            return ChainError(
                Reason.CERT_UNTRUSTED,
                f"delegation broken at depth {depth} ({_subject(child)}): {detail}",
                depth=depth,
                subject=_subject(child),
                cause=detail,
            )

        try:
            parent_list = tnauthlist_of(parent)
        except CertificateError as exc:
            raise fail(f"the issuer's TNAuthList is malformed: {exc}") from None
        if parent_list is None:
            continue
        try:
            child_list = tnauthlist_of(child)
        except CertificateError as exc:
            raise fail(f"the TNAuthList is malformed: {exc}") from None
        if child_list is None:
            raise fail("the issuer is TN-authorized but this certificate has no TNAuthList")
        if not parent_list.encompasses(child_list):
            raise fail("the TNAuthList is not encompassed by the issuer's (RFC 9060 section 4)")
        aki = _key_identifier(child, x509.AuthorityKeyIdentifier)
        if aki is None or aki != _key_identifier(parent, x509.SubjectKeyIdentifier):
            raise fail("AKI does not match the issuer's SKI (RFC 9060 section 7)")


def _key_identifier(
    cert: x509.Certificate,
    kind: type[x509.AuthorityKeyIdentifier] | type[x509.SubjectKeyIdentifier],
) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_class(kind).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return value.key_identifier
    return value.digest
