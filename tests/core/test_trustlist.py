from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shaken.core.errors import CertificateError, ConfigurationError
from shaken.core.jws import generate_private_key
from shaken.core.trustlist import make_trust_list, read_trust_list
from shaken.testing import make_sti_pki

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
PKI = make_sti_pki(NOW)
OTHER = make_sti_pki(NOW)
IAT = int(NOW.timestamp())


def test_round_trip_verified_by_the_sti_pa() -> None:
    token = make_trust_list([PKI.root, OTHER.root], PKI.sti_pa_key, iat=IAT, exp=IAT + 86400)
    result = read_trust_list(token, signer=PKI.sti_pa, now=NOW)
    assert result.certificates == (PKI.root, OTHER.root)
    assert result.signature_checked and result.issued_at == IAT


def test_ca_list_json_wrapper_and_unverified_read() -> None:
    token = make_trust_list([PKI.root], PKI.sti_pa_key, iat=IAT)
    wrapped = json.dumps({"caList": token}).encode()
    result = read_trust_list(wrapped, signer=None, now=NOW)
    assert result.certificates == (PKI.root,) and not result.signature_checked


def test_wrong_signer_expired_and_garbage_are_refused() -> None:
    token = make_trust_list([PKI.root], PKI.sti_pa_key, iat=IAT, exp=IAT + 10)
    with pytest.raises(CertificateError, match="signature"):
        read_trust_list(token, signer=OTHER.sti_pa, now=NOW)
    with pytest.raises(CertificateError, match="expired"):
        read_trust_list(token, signer=PKI.sti_pa, now=NOW + timedelta(seconds=11))
    for junk in (b"", b"not a jwt", b'{"caList": 5}', b"{oops"):
        with pytest.raises(CertificateError):
            read_trust_list(junk, signer=None, now=NOW)
    with pytest.raises(ConfigurationError):
        make_trust_list([], generate_private_key(), iat=IAT)
    with pytest.raises(ConfigurationError):
        read_trust_list(token, signer=None, now=datetime(2026, 1, 1))
