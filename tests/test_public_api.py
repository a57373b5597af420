"""The recipe surface is pinned: changing it is a deliberate act."""

from __future__ import annotations

import shaken

EXPECTED = {
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
}


def test_all_is_pinned() -> None:
    assert set(shaken.__all__) == EXPECTED


def test_every_name_in_all_exists() -> None:
    for name in shaken.__all__:
        assert hasattr(shaken, name), name
