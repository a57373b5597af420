"""A cold chain is validated off the event loop and within a budget (issue 17 item 1).

"With n = 8 (4.2 KB) a verification took 7.2 s and a normal INVITE sent meanwhile waited
6.9 s, because validation runs on the worker's event loop." Here the x5u body holds look-alike
CAs built with ``cryptography``; the proof is in the work, not the clock: the validation runs
on a thread other than the loop's (it is held there until the loop has answered a normal
call, which could never happen if it ran on the loop), and it stops within its budget.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shaken.core import chain as chain_module
from shaken.core.chain import DEFAULT_SIGNATURE_CHECKS
from shaken.core.context import SipContext
from shaken.core.errors import ConfigurationError, VerificationFailure
from shaken.core.reasons import Reason
from shaken.core.sign import sign_shaken
from shaken.core.verify import ValidatedCertificate
from shaken.services.cert_cache import CacheSettings, CertificateCache, RevocationMode
from shaken.services.trust import TrustStore
from shaken.services.verification import VerificationService
from shaken.testing import StiPki, make_sti_pki
from tests.support.fakes import FakeFetcher, ManualClock, Reply
from tests.support.lookalikes import lookalike_chain

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
GOOD = "https://cr.example.test/sp.pem"
EVIL = "https://cr.example.test/lookalike.pem"
ORIG, DEST = "12025550100", "12025550101"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def pki() -> StiPki:
    return make_sti_pki(NOW)


def _call(url: str, key: Any) -> SipContext:
    value = sign_shaken(
        key=key, x5u=url, orig=ORIG, dest=DEST, attest="A", iat=int(NOW.timestamp())
    )
    return SipContext(identity=(value,), from_header=f"<tel:+{ORIG}>", to=f"<tel:+{DEST}>")


class _Held:
    """Once armed, holds the next chain validation on its thread until the loop answered."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = asyncio.Event()
        self.answered = threading.Event()
        self.threads: set[int] = set()
        self.loop_was_free: bool | None = None
        self.checks = 0

    def arm(self) -> None:
        self.loop = asyncio.get_running_loop()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Held]:
    watch = _Held()
    verifier, issued_by = chain_module._verifier, chain_module._issued_by

    def holding_verifier(*args: Any) -> Any:
        if watch.loop is not None:
            watch.threads.add(threading.get_ident())
            if watch.loop_was_free is None:
                watch.loop_was_free = False
                watch.loop.call_soon_threadsafe(watch.started.set)
                # On the loop's own thread this wait could only time out: the loop cannot
                # answer anything while it waits.
                watch.loop_was_free = watch.answered.wait(10)
        return verifier(*args)

    def counting(*args: Any) -> bool:
        watch.checks += 1
        return issued_by(*args)

    monkeypatch.setattr(chain_module, "_verifier", holding_verifier)
    monkeypatch.setattr(chain_module, "_issued_by", counting)
    yield watch


@pytest.mark.anyio
@pytest.mark.parametrize("shape", ["own name", "root's name"])
async def test_17_1_a_normal_invite_is_answered_while_lookalikes_are_validated(
    pki: StiPki, held: _Held, shape: str
) -> None:
    name = pki.root.subject if shape == "root's name" else "Look-alike STI-CA (TEST ONLY)"
    built = lookalike_chain(90, NOW, name=name, leaf_key=pki.leaf_key)
    fetcher = FakeFetcher({GOOD: Reply(body=pki.chain_pem), EVIL: Reply(body=built.pem)})
    cache = CertificateCache(
        fetcher,
        TrustStore(pki.trust_anchors, (pki.sti_pa,)),
        settings=CacheSettings(revocation=RevocationMode.OFF),
        clock=ManualClock(NOW),
    )
    service = VerificationService(cache)
    normal = _call(GOOD, pki.leaf_key)
    assert (await service.verify(normal, now=NOW)).verified  # the normal signer, warm

    held.arm()
    loop_thread = threading.get_ident()
    cold = asyncio.ensure_future(service.verify(_call(EVIL, pki.leaf_key), now=NOW))
    await asyncio.wait_for(held.started.wait(), 30)
    # The look-alike chain is being validated right now; the warm path answers meanwhile.
    answer = service.verify_warm(normal, now=NOW)
    assert answer is not None and answer.verified
    held.answered.set()
    result = await asyncio.wait_for(cold, 30)

    assert held.loop_was_free is True
    assert loop_thread not in held.threads and held.threads
    assert not result.verified and result.reason is Reason.CERT_UNTRUSTED
    assert held.checks <= DEFAULT_SIGNATURE_CHECKS
    await cache.aclose()


@pytest.mark.anyio
async def test_17_1_the_cache_stops_a_validation_at_its_budget(pki: StiPki) -> None:
    built = lookalike_chain(90, NOW, name=pki.root.subject)
    fetcher = FakeFetcher({EVIL: Reply(body=built.pem)})
    cache = CertificateCache(
        fetcher,
        TrustStore(pki.trust_anchors, (pki.sti_pa,)),
        settings=CacheSettings(revocation=RevocationMode.SOFT),
        clock=ManualClock(NOW),
    )
    result = await cache.get(EVIL, now=NOW)
    assert isinstance(result, VerificationFailure) and result.reason is Reason.CERT_UNTRUSTED
    assert result.fields["exhausted"] == "signature_checks"
    assert result.fields["spent"] <= DEFAULT_SIGNATURE_CHECKS
    assert fetcher.urls() == [EVIL]  # no CRL is fetched for a chain that never validated
    # The failure is remembered: the same body is not validated again for negative_ttl.
    again = await cache.get(EVIL, now=NOW + timedelta(seconds=1))
    assert again is result or (
        isinstance(again, VerificationFailure) and again.detail == result.detail
    )
    assert fetcher.urls() == [EVIL]
    await cache.aclose()


@pytest.mark.anyio
async def test_17_1_a_good_chain_still_validates_off_the_loop(pki: StiPki) -> None:
    fetcher = FakeFetcher({GOOD: Reply(body=pki.chain_pem)})
    cache = CertificateCache(
        fetcher,
        TrustStore(pki.trust_anchors, (pki.sti_pa,)),
        settings=CacheSettings(revocation=RevocationMode.OFF),
        clock=ManualClock(NOW),
    )
    result = await cache.get(GOOD, now=NOW)
    assert isinstance(result, ValidatedCertificate)
    assert cache.lookup(GOOD, NOW) is result
    await cache.aclose()
    await cache.aclose()  # idempotent


def test_17_1_validation_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        CacheSettings(validation_signature_checks=10)
    with pytest.raises(ConfigurationError):
        CacheSettings(validation_timeout=timedelta(0))
    with pytest.raises(ConfigurationError):
        CacheSettings(validation_threads=0)
