"""The STI-PA and ACME clients against the toolkit's strict test STI-PA and ACME STI-CA.

Real HTTPS on loopback, real tokens, real certificates. Each failure mode is checked for the
exact sentence an operator sees.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from shaken.adapters.acme import AcmeClient
from shaken.adapters.stipa import StiPaClient
from shaken.core.acme import encode_tnauthlist, fingerprint, make_atc_token
from shaken.core.certs import Spc, TNAuthList, load_certificates, tnauthlist_of
from shaken.core.chain import TrustAnchors
from shaken.core.errors import AcquisitionError
from shaken.core.jws import generate_private_key, load_private_key, same_public_key
from shaken.services.lifecycle import validate_issued
from shaken.toolkit.x509build import build_csr
from tests.support.sti import SPC, Sti, running_sti


@pytest.fixture
def sti(tmp_path: Path) -> Iterator[Sti]:
    with running_sti(tmp_path) as found:
        yield found


def _obtain(sti: Sti, *, csr_spc: str = SPC, token_spc: str | None = None, **acme: Any) -> bytes:
    async def run() -> bytes:
        account, key = generate_private_key(), generate_private_key()
        pa = StiPaClient(sti.sti_pa_settings(), sti.credentials())
        await pa.login()
        wanted = TNAuthList(entries=(Spc(code=token_spc or SPC),))

        async def tokens(tkvalue: str, fp: str) -> str:
            value = tkvalue if token_spc is None else encode_tnauthlist(wanted)
            return (
                await pa.spc_token(
                    tnauthlist=wanted, tkvalue=value, fingerprint=fp, now=datetime.now(UTC)
                )
            ).token

        csr = build_csr(key, spc=csr_spc, org="Example SP (TEST ONLY)")
        try:
            async with AcmeClient(sti.acme_settings(**acme), account) as client:
                pem = await client.obtain(sti.tnauthlist, csr.public_bytes(Encoding.DER), tokens)
        finally:
            await pa.aclose()
        validate_issued(
            pem,
            key,
            tnauthlist=sti.tnauthlist,
            anchors=TrustAnchors(certificates=(sti.ca.root,)),
            now=datetime.now(UTC),
        )
        return pem

    return asyncio.run(run())


def test_rfc_defaults_obtain_a_shaken_certificate(sti: Sti) -> None:
    pem = _obtain(sti)
    leaf = load_certificates(pem)[0]
    assert tnauthlist_of(leaf) == sti.tnauthlist
    assert {
        "tnauthlist=base64url",
        "fingerprint=jwk_thumbprint",
        "challenge=atc",
        "post_as_get=rfc",
    } <= sti.acme.variants


def test_every_deployed_variant_is_accepted(sti: Sti) -> None:
    _obtain(
        sti,
        tnauthlist_encoding="base64",
        fingerprint="spki",
        fingerprint_case="lower",
        challenge_key="tkauth",
        post_as_get="protected_only",
        jwk_kid="Example Co",
    )
    assert {
        "tnauthlist=base64",
        "fingerprint=spki",
        "challenge=tkauth",
        "post_as_get=protected_only",
        "jwk_kid",
    } <= sti.acme.variants


def test_bad_nonce_and_processing_are_waited_out(tmp_path: Path) -> None:
    with running_sti(tmp_path, acme_options={"bad_nonce_every": 2, "processing_polls": 3}) as sti:
        _obtain(sti)


def test_wrong_sti_pa_password_names_the_user_not_the_password(
    sti: Sti, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> None:
        async with StiPaClient(sti.sti_pa_settings(), sti.credentials("hunter2-wrong")) as pa:
            await pa.login()

    caplog.set_level(logging.DEBUG)
    with pytest.raises(AcquisitionError) as caught:
        asyncio.run(run())
    assert str(caught.value) == (
        f"the STI-PA refused the login of user 'alice' at {sti.pa_server.base_url}"
        "/api/v1/auth/login (HTTP 401: 'Invalid userId or password'): wrong user id or password?"
    )
    assert "hunter2" not in caplog.text


def test_a_token_for_another_spc_is_refused_by_the_sti_pa(sti: Sti) -> None:
    with pytest.raises(AcquisitionError) as caught:
        _obtain(sti, token_spc="5678")
    assert str(caught.value) == (
        "STI-PA SPC token request for SPC 5678 at /api/v1/account/1234/token: HTTP 403: "
        "'SPC 5678 is not assigned to account 1234'"
    )


def test_a_token_about_to_expire_is_refused_before_it_reaches_the_ca(tmp_path: Path) -> None:
    with (
        running_sti(tmp_path, pa_options={"token_lifetime": timedelta(seconds=60)}) as sti,
        pytest.raises(
            AcquisitionError,
            # 60 s from the STI-PA's whole-second iat, read by our clock a moment later or,
            # both rounding, a second either way.
            match=r"^the SPC token expires in (59|60|61) s \(at \d+\); at least 180 s",
        ),
    ):
        _obtain(sti)
    assert sti.acme.seen_jti == {}


def _order_with_token(sti: Sti, make_token: Any) -> str:
    """Run an order whose challenge is answered with ``make_token(account_key)``; the error."""

    async def run() -> None:
        account = generate_private_key()

        async def tokens(tkvalue: str, fp: str) -> str:
            token: str = make_token(account, tkvalue, fp)
            return token

        csr = build_csr(generate_private_key(), spc=SPC, org="Example SP (TEST ONLY)")
        async with AcmeClient(sti.acme_settings(), account) as client:
            await client.obtain(sti.tnauthlist, csr.public_bytes(Encoding.DER), tokens)

    with pytest.raises(AcquisitionError) as caught:
        asyncio.run(run())
    return str(caught.value)


def _signed(sti: Sti, tkvalue: str, fp: str, *, exp: int | None = None, jti: str = "j1") -> str:
    key = load_private_key((sti.pa.directory / "signer.key").read_bytes())
    when = exp if exp is not None else int(datetime.now(UTC).timestamp()) + 3600
    return make_atc_token(
        key, x5u=sti.pa_server.x5u, tkvalue=tkvalue, fingerprint=fp, exp=when, jti=jti
    )


def test_the_ca_refuses_an_expired_token(sti: Sti) -> None:
    past = int(datetime.now(UTC).timestamp()) - 10
    error = _order_with_token(sti, lambda _a, v, f: _signed(sti, v, f, exp=past))
    assert re.fullmatch(
        r"ACME tkauth-01 challenge https://127\.0\.0\.1:\d+/acme/chall/\d+ failed: "
        r"urn:ietf:params:acme:error:unauthorized: the SPC token expired at "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
        error,
    ), error


def test_the_ca_refuses_a_token_bound_to_another_account_key(sti: Sti) -> None:
    other = fingerprint(generate_private_key().public_key())
    error = _order_with_token(sti, lambda _a, v, _f: _signed(sti, v, other))
    assert error.endswith(
        " failed: urn:ietf:params:acme:error:unauthorized: the SPC token's fingerprint "
        "is not that of this ACME account's key"
    )


def test_the_ca_refuses_a_token_for_another_tnauthlist(sti: Sti) -> None:
    other = encode_tnauthlist(TNAuthList(entries=(Spc(code="5678"),)))
    error = _order_with_token(sti, lambda _a, _v, f: _signed(sti, other, f))
    assert error.endswith("the SPC token is for SPC 5678, the order for 1234")


def test_the_ca_refuses_a_replayed_token(sti: Sti) -> None:
    _order_ok = _signed  # the first use of jti "r" succeeds through a full order
    tokens: dict[str, str] = {}

    def once(_account: Any, tkvalue: str, fp: str) -> str:
        tokens.setdefault(fp, _order_ok(sti, tkvalue, fp, jti="r"))
        return tokens[fp]

    async def first() -> None:
        account = generate_private_key()

        async def source(tkvalue: str, fp: str) -> str:
            return once(account, tkvalue, fp)

        async with AcmeClient(sti.acme_settings(), account) as client:
            csr = build_csr(generate_private_key(), spc=SPC, org="Example SP (TEST ONLY)")
            await client.obtain(sti.tnauthlist, csr.public_bytes(Encoding.DER), source)
            # The same token again, for a second order of the same account.
            order = await client.new_order(sti.tnauthlist)
            with pytest.raises(AcquisitionError, match="jti r\\) was already used: replay refused"):
                await client.authorize(order, source)

    asyncio.run(first())


def test_the_ca_refuses_a_token_signed_by_someone_else(sti: Sti) -> None:
    stranger = generate_private_key()

    def forged(_a: Any, v: str, f: str) -> str:
        exp = int(datetime.now(UTC).timestamp()) + 3600
        return make_atc_token(
            stranger, x5u=sti.pa_server.x5u, tkvalue=v, fingerprint=f, exp=exp, jti="f"
        )

    error = _order_with_token(sti, forged)
    assert error.endswith(
        "the SPC token's signature does not verify with the certificate at its x5u"
    )


def test_a_csr_the_ca_refuses_names_the_acme_problem(tmp_path: Path) -> None:
    with (
        running_sti(
            tmp_path, acme_options={"refuse_csr": "subject O is not the account holder"}
        ) as sti,
        pytest.raises(AcquisitionError) as caught,
    ):
        _obtain(sti)
    assert str(caught.value).startswith("the CA refused the CSR: ACME finalize (https://127.0.0.1:")
    assert str(caught.value).endswith(
        "urn:ietf:params:acme:error:badCSR: subject O is not the account holder"
    )


def test_a_csr_for_another_tnauthlist_is_bad_csr(sti: Sti) -> None:
    with pytest.raises(AcquisitionError) as caught:
        _obtain(sti, csr_spc="5678")
    assert str(caught.value).endswith(
        "badCSR: the CSR's TNAuthList (SPC 5678) is not the order's (SPC 1234)"
    )


def test_a_chain_for_another_key_is_refused(tmp_path: Path) -> None:
    with (
        running_sti(tmp_path, acme_options={"issue_for_other_key": True}) as sti,
        pytest.raises(AcquisitionError) as caught,
    ):
        _obtain(sti)
    assert str(caught.value) == (
        "the CA returned a certificate for another key (its public key is not the one of our "
        "CSR); not using it"
    )


def test_unique_subject_cas_get_a_unique_cn(tmp_path: Path) -> None:
    with running_sti(tmp_path, acme_options={"unique_subject": True}) as sti:
        key = generate_private_key()
        first = build_csr(key, spc=SPC, org="O", cn_suffix="20260101000000")
        again = build_csr(key, spc=SPC, org="O", cn_suffix="20260101000001")
        assert first.subject != again.subject
        pem = _obtain_with(sti, first, key)
        leaf = load_certificates(pem)[0]
        assert leaf.subject.rfc4514_string().startswith("CN=SHAKEN 1234 20260101000000")
        assert same_public_key(leaf.public_key(), key.public_key())  # type: ignore[arg-type]
        with pytest.raises(AcquisitionError, match="badCSR: a certificate with subject"):
            _obtain_with(sti, first, key)


def _obtain_with(sti: Sti, csr: Any, key: Any) -> bytes:
    async def run() -> bytes:
        async with StiPaClient(sti.sti_pa_settings(), sti.credentials()) as pa:
            await pa.login()

            async def tokens(tkvalue: str, fp: str) -> str:
                now = datetime.now(UTC)
                return (
                    await pa.spc_token(
                        tnauthlist=sti.tnauthlist, tkvalue=tkvalue, fingerprint=fp, now=now
                    )
                ).token

            async with AcmeClient(sti.acme_settings(), generate_private_key()) as client:
                return await client.obtain(sti.tnauthlist, csr.public_bytes(Encoding.DER), tokens)

    return asyncio.run(run())


def test_the_ca_list_names_the_approved_roots(sti: Sti) -> None:
    async def run() -> tuple[Any, ...]:
        async with StiPaClient(sti.sti_pa_settings(), sti.credentials()) as pa:
            await pa.login()
            return await pa.ca_list(now=datetime.now(UTC))

    assert asyncio.run(run()) == (sti.ca.root,)


def test_neither_password_nor_token_is_logged(sti: Sti, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _obtain(sti)
    issued = sti.pa_server.issued
    assert issued
    assert sti.password not in caplog.text
    for record in caplog.records:
        assert "eyJ" not in record.getMessage()  # no JWT (base64url of '{"') in any log line


def _pa_token(sti: Sti, *, spc: str = SPC, fp: str = "", exp_in: int = 3600) -> Any:
    from shaken.core.acme import read_atc_token

    key = load_private_key((sti.pa.directory / "signer.key").read_bytes())
    value = encode_tnauthlist(TNAuthList(entries=(Spc(code=spc),)))
    exp = int(datetime.now(UTC).timestamp()) + exp_in
    token = make_atc_token(
        key, x5u=sti.pa_server.x5u, tkvalue=value, fingerprint=fp, exp=exp, jti="x"
    )
    return read_atc_token(token)


def test_a_token_the_sti_pa_made_for_another_spc_or_key_never_reaches_the_ca(sti: Sti) -> None:
    from shaken.adapters.stipa import check_spc_token

    ours = fingerprint(generate_private_key().public_key())
    kwargs: dict[str, Any] = {
        "tnauthlist": sti.tnauthlist,
        "fingerprint": ours,
        "ca": False,
        "now": datetime.now(UTC),
        "min_lifetime": 180,
    }
    with pytest.raises(AcquisitionError) as caught:
        check_spc_token(_pa_token(sti, spc="5678", fp=ours), **kwargs)
    assert str(caught.value) == (
        "the SPC token is for SPC 5678, not 1234: the STI-PA account is not authorized for this "
        "SPC (check sti_pa.account_id and acme.spc)"
    )
    other = fingerprint(generate_private_key().public_key())
    with pytest.raises(AcquisitionError) as caught:
        check_spc_token(_pa_token(sti, fp=other), **kwargs)
    assert str(caught.value) == (
        "the SPC token is bound to another account key (atc.fingerprint differs from our ACME "
        "account key's)"
    )
    stranger = make_atc_token(
        generate_private_key(),
        x5u=sti.pa_server.x5u,
        tkvalue=encode_tnauthlist(sti.tnauthlist),
        fingerprint=ours,
        exp=int(datetime.now(UTC).timestamp()) + 3600,
        jti="y",
    )
    from shaken.core.acme import read_atc_token

    with pytest.raises(AcquisitionError, match="signature does not verify with the certificate"):
        check_spc_token(
            read_atc_token(stranger), signer=sti.pa.signer, roots=(sti.pa.root,), **kwargs
        )
    check_spc_token(_pa_token(sti, fp=ours), signer=sti.pa.signer, roots=(sti.pa.root,), **kwargs)
