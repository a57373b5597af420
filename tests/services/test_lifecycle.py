"""The renewal and rollover engine over its ports, with a manual clock: nothing sleeps.

The store is the real directory store, the CA a real test CA; the publisher and the x5u
checker are in memory so a test can hold the new x5u back and see signing stay on the old one.
"""

from __future__ import annotations

import asyncio
import errno
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shaken.adapters.store import generations as generations_module
from shaken.adapters.store.generations import DirectoryGenerationStore, manifest_signature
from shaken.core.certs import Spc, TNAuthList
from shaken.core.chain import TrustAnchors
from shaken.core.errors import AcquisitionError
from shaken.core.jws import PrivateKey
from shaken.services.lifecycle import CertificateLifecycle, RenewalPolicy
from shaken.toolkit.ca import TestCa
from shaken.toolkit.x509build import build_csr
from tests.support.fakes import ManualClock

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SPC = TNAuthList(entries=(Spc(code="1234"),))


@dataclass
class CaIssuer:
    ca: TestCa
    clock: ManualClock
    days: int = 90
    fail: str | None = None
    calls: int = 0

    async def issue(self, key: PrivateKey, *, now: datetime) -> bytes:
        self.calls += 1
        if self.fail is not None:
            raise AcquisitionError(self.fail)
        csr = build_csr(key, spc="1234", org="Example SP (TEST ONLY)")
        return self.ca.issue(csr, now=now, days=self.days).chain_pem


@dataclass
class MemoryPublisher:
    files: dict[str, bytes] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)

    async def publish(self, name: str, chain_pem: bytes) -> str:
        self.files[name] = chain_pem
        return f"https://cr.example.test/{name}"

    async def unpublish(self, name: str) -> None:
        self.files.pop(name, None)
        self.removed.append(name)


@dataclass
class Checker:
    """Serves what the publisher holds, unless the URL is held back."""

    publisher: MemoryPublisher
    held: bool = False

    async def check(self, x5u: str, key: PrivateKey, *, now: datetime) -> str | None:
        if self.held:
            return f"{x5u} answered HTTP 404"
        return None if x5u.rsplit("/", 1)[1] in self.publisher.files else f"{x5u}: gone"


@dataclass
class World:
    clock: ManualClock
    store: DirectoryGenerationStore
    issuer: CaIssuer
    publisher: MemoryPublisher
    checker: Checker
    engine: CertificateLifecycle

    def run(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run(coroutine)


@pytest.fixture
def world(tmp_path: Path) -> World:
    clock = ManualClock(T0)
    ca = TestCa.init(tmp_path / "ca", now=T0 - timedelta(days=1))
    store = DirectoryGenerationStore(tmp_path / "lifecycle")
    issuer = CaIssuer(ca, clock)
    publisher = MemoryPublisher()
    checker = Checker(publisher)
    engine = CertificateLifecycle(
        store,
        issuer=issuer,
        publisher=publisher,
        checker=checker,
        tnauthlist=SPC,
        anchors=lambda: TrustAnchors(certificates=(ca.root,)),
        clock=clock,
        policy=RenewalPolicy(retire_after=timedelta(minutes=5), x5u_wait=timedelta(minutes=10)),
    )
    return World(clock, store, issuer, publisher, checker, engine)


def test_renewal_point_is_two_thirds_or_30_days_whichever_first() -> None:
    policy = RenewalPolicy()
    start = T0
    year = policy.renew_at(start, start + timedelta(days=365))
    assert year == start + timedelta(days=365) * (2 / 3)
    # 72 days (TransNexus): 30 days before notAfter comes first (day 42, not 48).
    assert policy.renew_at(start, start + timedelta(days=72)) == start + timedelta(days=42)
    # A day-long certificate is not renewed the moment it arrives: half its life at least.
    assert policy.renew_at(start, start + timedelta(days=1)) == start + timedelta(hours=12)
    assert policy.renew_at(start, start + timedelta(days=40)) == start + timedelta(days=20)


def test_first_acquisition_switches_once_the_x5u_serves(world: World) -> None:
    outcome = world.run(world.engine.renew(T0))
    assert outcome.action == "switched"
    manifest = world.store.manifest()
    assert manifest is not None and manifest.x5u == outcome.generation.x5u
    assert Path(manifest.key_file).stat().st_mode & 0o777 == 0o600
    link = world.store.directory / "current"
    assert (link / "key.pem").read_bytes() == Path(manifest.key_file).read_bytes()
    assert (link / "chain.pem").read_bytes() == Path(manifest.chain_file).read_bytes()
    # The test CA backdates an hour: two thirds of 90 days and an hour comes before day 60.
    life = timedelta(days=90, hours=1)
    assert world.engine.status(T0).renew_at == T0 - timedelta(hours=1) + life * (2 / 3)


def test_signing_stays_on_the_old_certificate_until_the_new_x5u_serves(world: World) -> None:
    first = world.run(world.engine.renew(T0)).generation
    world.checker.held = True
    world.clock.advance(seconds=60)
    outcome = world.run(world.engine.renew(world.clock.now()))
    assert outcome.action == "pending"
    assert outcome.message.endswith(
        f"is published but {outcome.generation.x5u} does not serve it yet "
        f"({outcome.generation.x5u} answered HTTP 404); signing stays on the current certificate"
    )
    assert world.store.manifest().current == first.id  # type: ignore[union-attr]
    world.clock.advance(seconds=30)
    assert world.run(world.engine.advance(world.clock.now())) == []
    assert world.store.manifest().current == first.id  # type: ignore[union-attr]
    world.checker.held = False
    world.clock.advance(seconds=30)
    events = world.run(world.engine.advance(world.clock.now()))
    assert events == [
        f"signing with certificate {outcome.generation.serial} (x5u {outcome.generation.x5u})"
    ]
    manifest = world.store.manifest()
    assert manifest is not None and manifest.current == outcome.generation.id
    assert manifest.previous == first.id


def test_a_new_x5u_that_never_serves_is_given_up_and_retried_later(world: World) -> None:
    first = world.run(world.engine.renew(T0)).generation
    world.checker.held = True
    pending = world.run(world.engine.renew(T0 + timedelta(seconds=1))).generation
    world.clock.advance(minutes=11)
    events = world.run(world.engine.advance(world.clock.now()))
    assert events == [
        f"gave up on certificate {pending.serial}: {pending.x5u} did not serve it within 600 s"
    ]
    state = world.store.state()
    assert state.pending is None and state.failures == 1
    assert state.next_attempt == world.clock.now() + timedelta(minutes=1)
    assert pending.published_name not in world.publisher.files
    assert world.store.manifest().current == first.id  # type: ignore[union-attr]


def test_the_old_certificate_stays_published_past_the_iat_window(world: World) -> None:
    first = world.run(world.engine.renew(T0)).generation
    world.clock.advance(days=61)
    world.run(world.engine.step(world.clock.now()))
    assert world.issuer.calls == 2
    assert first.published_name in world.publisher.files  # still served: signatures in flight
    world.clock.advance(minutes=4)
    world.run(world.engine.advance(world.clock.now()))
    assert first.published_name in world.publisher.files
    world.clock.advance(minutes=2)
    events = world.run(world.engine.advance(world.clock.now()))
    assert events == [f"took down certificate {first.serial} ({first.x5u})"]
    assert world.publisher.removed == [first.published_name]


def test_step_renews_only_when_due_and_backs_off_on_failure(world: World) -> None:
    world.run(world.engine.renew(T0))
    wake = world.run(world.engine.step(T0 + timedelta(days=1)))
    assert world.issuer.calls == 1 and wake == timedelta(hours=1)
    world.issuer.fail = "ACME newOrder: urn:ietf:params:acme:error:serverInternal"
    due = world.engine.status(T0).renew_at
    assert due is not None
    world.run(world.engine.step(due))
    assert world.issuer.calls == 2
    state = world.store.state()
    assert state.failures == 1 and state.last_error == world.issuer.fail
    world.run(world.engine.step(due + timedelta(seconds=30)))  # within the backoff: no attempt
    assert world.issuer.calls == 2
    world.run(world.engine.step(due + timedelta(seconds=61)))
    assert world.issuer.calls == 3
    assert world.store.state().next_attempt == due + timedelta(seconds=61 + 120)
    world.issuer.fail = None
    world.run(world.engine.step(due + timedelta(seconds=200)))
    assert world.store.state().failures == 0
    status = world.engine.status(due + timedelta(seconds=200))
    assert status.problems == ()


def test_disk_full_while_writing_the_new_key_keeps_the_old_generation(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = world.run(world.engine.renew(T0)).generation
    before = manifest_signature(world.store.directory)

    def full(path: Path, data: bytes, *, overwrite: bool = False) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(generations_module, "create_private", full)
    with pytest.raises(AcquisitionError) as caught:
        world.run(world.engine.renew(T0 + timedelta(days=1)))
    assert str(caught.value) == (
        "cannot write the new key: No space left on device; the current certificate stays"
    )
    assert manifest_signature(world.store.directory) == before
    assert world.store.manifest().current == first.id  # type: ignore[union-attr]
    assert [g.id for g in world.store.generations()] == [first.id]  # nothing half-made left
    assert world.issuer.calls == 1  # the CA was never asked
    assert world.store.state().failures == 1


def test_a_failed_issue_leaves_no_generation_behind(world: World) -> None:
    world.issuer.fail = "the CA refused the CSR: ACME finalize: urn:ietf:params:acme:error:badCSR"
    with pytest.raises(AcquisitionError):
        world.run(world.engine.renew(T0))
    assert world.store.generations() == []
    assert world.store.manifest() is None


def test_rollback_makes_the_previous_generation_current_again(world: World) -> None:
    first = world.run(world.engine.renew(T0)).generation
    second = world.run(world.engine.renew(T0 + timedelta(days=1))).generation
    world.clock.advance(days=2)
    world.run(world.engine.advance(world.clock.now()))  # the first is taken down
    assert first.published_name not in world.publisher.files
    outcome = world.run(world.engine.rollback(world.clock.now()))
    assert outcome.generation.id == first.id
    assert first.published_name in world.publisher.files  # published again before the switch
    manifest = world.store.manifest()
    assert manifest is not None and manifest.current == first.id and manifest.previous == second.id
    with pytest.raises(AcquisitionError, match=f"generation {first.id} is already current"):
        world.run(world.engine.rollback(world.clock.now(), to=first.id))


def test_rollback_refuses_an_expired_generation(world: World) -> None:
    world.run(world.engine.renew(T0))
    world.run(world.engine.renew(T0 + timedelta(days=1)))
    with pytest.raises(AcquisitionError, match=r"expired at .*; it cannot sign"):
        world.run(world.engine.rollback(T0 + timedelta(days=95)))


def test_status_warns_within_warning_days(world: World) -> None:
    world.run(world.engine.renew(T0))
    status = world.engine.status(T0 + timedelta(days=80))
    assert status.warning and not status.expired
    assert status.problems[0].startswith("the signing certificate expires in 10.0")
    assert world.engine.status(T0 + timedelta(days=91)).expired


def test_retired_generations_beyond_keep_are_pruned(world: World) -> None:
    engine = CertificateLifecycle(
        world.store,
        issuer=world.issuer,
        publisher=world.publisher,
        checker=world.checker,
        tnauthlist=SPC,
        anchors=world.engine.anchors,
        clock=world.clock,
        policy=RenewalPolicy(retire_after=timedelta(seconds=0), keep=2),
    )
    made = [world.run(engine.renew(T0 + timedelta(hours=i))).generation.id for i in range(6)]
    world.run(engine.advance(T0 + timedelta(days=1)))
    kept = [g.id for g in world.store.generations()]
    manifest = world.store.manifest()
    assert manifest is not None and manifest.current == made[-1]
    # current, previous (for rollback), and the two newest retired ones
    assert kept == made[-4:]


@dataclass
class Crl:
    revoked: str | None = None
    asked: int = 0

    async def revoked_check(self, chain_pem: bytes, *, now: datetime) -> str | None:
        self.asked += 1
        return self.revoked


def test_a_revoked_certificate_is_renewed_at_once(world: World) -> None:
    crl = Crl()

    class Checker:
        async def revoked(self, chain_pem: bytes, *, now: datetime) -> str | None:
            return await crl.revoked_check(chain_pem, now=now)

    world.engine.revocation = Checker()
    first = world.run(world.engine.renew(T0)).generation
    world.run(world.engine.step(T0 + timedelta(minutes=1)))
    assert world.issuer.calls == 1 and crl.asked == 1
    world.run(world.engine.step(T0 + timedelta(minutes=2)))
    assert crl.asked == 1  # asked again only after crl_check (an hour)
    crl.revoked = "serial 1 revoked on ... by the CRL of CN=STI-PA"
    world.run(world.engine.step(T0 + timedelta(hours=1, minutes=2)))
    assert crl.asked == 2 and world.issuer.calls == 2  # long before the renewal point
    manifest = world.store.manifest()
    assert manifest is not None and manifest.current != first.id
    assert world.store.state().revoked is None  # the new certificate is not (yet) known revoked
