"""shaken: STIR/SHAKEN caller-ID authentication.

The recipes are two calls::

    value = shaken.sign_identity(key=key_pem, x5u=url, orig="12025550100",
                                 dest="12025550101", attest="A", now=now)
    result = shaken.verify_identity(value, orig="12025550100", dest="12025550101",
                                    certificate=chain_pem, trust_anchors=root_pem, now=now)
    result.verified, result.verstat, result.reason, result.sip_code

Everything under :mod:`shaken.core` is importable for finer control (the two-step
``prepare``/``complete`` pipeline, value objects, codecs), and documented as the sharp end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from cryptography import x509

from shaken.core.chain import TrustAnchors
from shaken.core.context import SipContext, make_context
from shaken.core.errors import (
    CertificateError,
    ConfigurationError,
    ShakenError,
    SigningError,
    VerificationFailure,
)
from shaken.core.jws import PrivateKey, load_private_key
from shaken.core.reasons import REASONS, Reason, ReasonInfo, Verstat
from shaken.core.result import Check, Outcome, VerificationResult
from shaken.core.sign import sign_shaken
from shaken.core.verify import (
    SHAKEN,
    CertificateMaterial,
    DatePolicy,
    ValidatedCertificate,
    VerificationProfile,
    begin,
    complete,
)

__version__ = "0.1.0"

__all__ = [
    "REASONS",
    "CertificateError",
    "Check",
    "ConfigurationError",
    "DatePolicy",
    "Outcome",
    "Reason",
    "ReasonInfo",
    "ShakenError",
    "SigningError",
    "SipContext",
    "TrustAnchors",
    "ValidatedCertificate",
    "VerificationFailure",
    "VerificationProfile",
    "VerificationResult",
    "Verstat",
    "__version__",
    "sign_identity",
    "verify_identity",
]


def sign_identity(
    *,
    key: PrivateKey | bytes,
    x5u: str,
    orig: str,
    dest: str | Sequence[str],
    attest: str,
    now: datetime | None = None,
    iat: int | None = None,
    origid: str | None = None,
) -> str:
    """Sign a SHAKEN PASSporT and return the Identity header value.

    :param key: a P-256 private key, or its PEM/DER bytes.
    :param x5u: the HTTPS URL where verifiers fetch the signing certificate chain.
    :param orig: the calling TN; punctuation and ``+`` are dropped (RFC 8224 section 8.3).
    :param dest: the called TN, or several.
    :param attest: ``A``, ``B`` or ``C``.
    :param now: the signing time; ``iat`` overrides it.
    :param origid: a UUID; a fresh UUIDv4 when omitted.
    :raises SigningError: the claims cannot be signed as given.
    :raises ConfigurationError: unusable key or naive ``now``.
    """
    private_key = load_private_key(key) if isinstance(key, bytes) else key
    return sign_shaken(
        key=private_key,
        x5u=x5u,
        orig=orig,
        dest=dest,
        attest=attest,
        now=now,
        iat=iat,
        origid=origid,
    )


def _as_header(value: str) -> str:
    """A bare TN becomes a tel URI; anything with a scheme is taken as a SIP header value."""
    return value if ":" in value else f"<tel:{value}>"


def _anchors(
    trust_anchors: TrustAnchors | bytes | Sequence[x509.Certificate] | None,
) -> TrustAnchors | None:
    if trust_anchors is None or isinstance(trust_anchors, TrustAnchors):
        return trust_anchors
    if isinstance(trust_anchors, bytes):
        return TrustAnchors.from_pem(trust_anchors)
    return TrustAnchors(certificates=tuple(trust_anchors))


def verify_identity(
    identity: str | Sequence[str],
    *,
    orig: str,
    dest: str,
    certificate: CertificateMaterial | Mapping[str, CertificateMaterial],
    trust_anchors: TrustAnchors | bytes | Sequence[x509.Certificate] | None,
    now: datetime,
    date: str | None = None,
    profile: VerificationProfile = SHAKEN,
    crls: Sequence[bytes] = (),
    crl_signers: Sequence[x509.Certificate] = (),
) -> VerificationResult:
    """Verify one or several Identity header values for a call from ``orig`` to ``dest``.

    A bad token is a result, never an exception: whatever the ``identity`` strings hold, this
    returns a :class:`VerificationResult` naming the :class:`Reason`.

    :param identity: the Identity header value(s), in request order.
    :param orig: the caller as a TN or a From/P-Asserted-Identity header value.
    :param dest: the called party as a TN or a To header value.
    :param certificate: what the x5u URL returns (PEM chain or DER bytes), a
        :class:`ValidatedCertificate`, or a mapping from x5u URL to either.
    :param trust_anchors: STI-CA roots (PEM bytes, certificates or :class:`TrustAnchors`).
    :param now: the verification time, timezone-aware.
    :param date: the SIP Date header value, if the request had one.
    :param crls: CRLs (PEM or DER) to check the chain against.
    :param crl_signers: certificates that sign indirect CRLs (the STI-PA for the SHAKEN CRL).
    :raises ConfigurationError: naive ``now``, no trust anchors for raw certificate bytes.
    """
    values = (identity,) if isinstance(identity, str) else tuple(identity)
    # SipContext(identity=, from_header=, to=, date=), positionally in field order.
    context = make_context(values, _as_header(orig), (), _as_header(dest), None, date, None)
    lookup: Callable[[str], CertificateMaterial | None]
    if isinstance(certificate, (bytes, ValidatedCertificate, VerificationFailure)):

        def lookup(url: str) -> CertificateMaterial:
            return certificate

    else:
        lookup = certificate.get

    step = begin(context, lookup, now=now, profile=profile)
    if isinstance(step, VerificationResult):
        return step
    certificates = {url: material for url in step.urls if (material := lookup(url)) is not None}
    anchors = _anchors(trust_anchors)
    return complete(step, certificates, anchors, now=now, crls=crls, crl_signers=crl_signers)
