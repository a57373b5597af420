"""The signing certificate's lifecycle: when to renew, and a rollover no verifier notices.

A certificate that expires (or is revoked) silently turns every outbound call into a failed
verification downstream, so renewal is part of the service. The order of a rollover is what
keeps every call verifiable:

1. a **new key** for each certificate, written (0600) before anything is asked of the CA;
   a failure to write it (a full disk) leaves the current generation untouched;
2. the **certificate** from the STI-CA (:class:`Issuer`: the STI-PA's SPC token, ACME), then
   validated: SHAKEN profile, a TNAuthList equal to the one requested, a path to a trusted
   STI-CA, the public half of the new key, valid now;
3. **published** under a URL of its own (:class:`Publisher`). The URL changes with every
   certificate because verifiers cache an x5u for a day or more (ATIS-1000074): a new chain
   under the old URL would fail every verifier holding the old one;
4. **switched to** only once the new URL serves a chain whose public key is the new key
   (:class:`X5uChecker`, the ``check_x5u_at_load`` check). Until then signing stays on the
   old certificate, and the attempt is retried; the switch itself is one atomic write of the
   generation manifest, which every worker process watches;
5. the **old certificate stays published** until its last signature has aged past the
   verifiers' iat window (``retire_after`` after the switch), then is taken down.

Generations are kept (``archive/<id>``), so ``rollback`` can make the previous one current
again (re-published and checked the same way).

When to renew (:meth:`RenewalPolicy.renew_at`): when ``fraction`` of the lifetime has passed
or ``before`` ahead of notAfter, whichever comes first, but never before half the lifetime:
without that floor a certificate shorter-lived than ``before`` (TransNexus and Sansay issue
for 72 to 96 days, some CAs daily) would be renewed again the moment it is obtained. A failed
attempt is retried with exponential backoff from ``retry_min`` to ``retry_max``.

Everything outside is a port (the store of generations, the CA, the publisher, the x5u
checker, the clock), so the whole sequence is tested without a network and without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from cryptography import x509

from shaken.core.certs import TNAuthList, load_certificates, profile_findings, tnauthlist_of
from shaken.core.chain import TrustAnchors, validate_chain
from shaken.core.errors import AcquisitionError, CertificateError, ChainError, ConfigurationError
from shaken.core.jws import PrivateKey, PublicKey, generate_private_key, same_public_key
from shaken.services.ports import Clock

__all__ = [
    "CertificateLifecycle",
    "Generation",
    "GenerationStore",
    "Issuer",
    "LifecycleStatus",
    "Manifest",
    "Publisher",
    "RenewalPolicy",
    "RenewalState",
    "RevocationChecker",
    "X5uChecker",
    "lifecycle_status",
    "validate_issued",
]

log = logging.getLogger("shaken.lifecycle")


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewalPolicy:
    """When to renew, warn, retry and retire (the ``[lifecycle]`` keys)."""

    fraction: float = 2 / 3
    before: timedelta = timedelta(days=30)
    warning: timedelta = timedelta(days=14)
    retire_after: timedelta = timedelta(minutes=5)
    retry_min: timedelta = timedelta(minutes=1)
    retry_max: timedelta = timedelta(hours=1)
    x5u_wait: timedelta = timedelta(minutes=10)
    x5u_recheck: timedelta = timedelta(seconds=5)
    check_interval: timedelta = timedelta(hours=1)
    crl_check: timedelta = timedelta(hours=1)
    keep: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1:
            raise ConfigurationError("the renewal fraction must be between 0 and 1")

    def renew_at(self, not_before: datetime, not_after: datetime) -> datetime:
        life = not_after - not_before
        point = min(not_before + life * self.fraction, not_after - self.before)
        return max(point, not_before + life / 2)

    def backoff(self, failures: int) -> timedelta:
        if failures <= 0:
            return timedelta(0)
        delay: timedelta = self.retry_min * (2 ** min(failures - 1, 30))
        return min(self.retry_max, delay)


@dataclass(frozen=True, slots=True, kw_only=True)
class Generation:
    """One key and (once issued) its certificate, as the store keeps it."""

    id: str
    created: datetime
    key_file: str
    chain_file: str | None = None
    serial: str | None = None
    spc: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    published_name: str | None = None
    x5u: str | None = None
    #: issuing -> issued -> published -> current -> retired (or failed)
    state: str = "issuing"
    published_at: datetime | None = None
    note: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """``current.json``: the generation that signs, and those still published for a while."""

    current: str
    key_file: str
    x5u: str
    chain_file: str
    activated_at: datetime
    previous: str | None = None
    #: (generation id, when its certificate is taken down)
    retiring: tuple[tuple[str, datetime], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewalState:
    """``state.json``: failures, backoff, and a generation waiting for its x5u."""

    failures: int = 0
    last_error: str | None = None
    last_attempt: datetime | None = None
    next_attempt: datetime | None = None
    pending: str | None = None
    last_success: datetime | None = None
    #: Why the current certificate is revoked (its CRL lists it), and when that was checked.
    revoked: str | None = None
    revocation_checked: datetime | None = None


class GenerationStore(Protocol):
    """Where generations live (a directory: :mod:`shaken.adapters.store.generations`).

    Writes are atomic; :meth:`activate` is the switch every worker sees.

    :raises OSError: from the writes (a full disk), which the lifecycle reports.
    """

    def new_generation(self, key: PrivateKey, now: datetime) -> Generation: ...

    def save_chain(self, generation: Generation, chain_pem: bytes) -> Generation: ...

    def update(self, generation: Generation) -> None: ...

    def get(self, generation_id: str) -> Generation | None: ...

    def generations(self) -> Sequence[Generation]: ...

    def discard(self, generation: Generation) -> None: ...

    def load_key(self, generation: Generation) -> PrivateKey: ...

    def load_chain(self, generation: Generation) -> bytes: ...

    def manifest(self) -> Manifest | None: ...

    def activate(self, manifest: Manifest) -> None: ...

    def state(self) -> RenewalState: ...

    def save_state(self, state: RenewalState) -> None: ...


class Issuer(Protocol):
    """Obtains a certificate chain (PEM, leaf first) for ``key`` from the STI-CA."""

    async def issue(self, key: PrivateKey, *, now: datetime) -> bytes: ...


class Publisher(Protocol):
    """Makes a chain available to verifiers; returns its x5u URL."""

    async def publish(self, name: str, chain_pem: bytes) -> str: ...

    async def unpublish(self, name: str) -> None: ...


class RevocationChecker(Protocol):
    """Why the CRL revokes ``chain_pem``'s certificate, or None (not revoked, or unknown:
    a CRL that cannot be had is no reason to renew)."""

    async def revoked(self, chain_pem: bytes, *, now: datetime) -> str | None: ...


class X5uChecker(Protocol):
    """What is wrong with what ``x5u`` serves for ``key`` now, or None (it is ready)."""

    async def check(self, x5u: str, key: PrivateKey, *, now: datetime) -> str | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecycleStatus:
    """What ``shaken cert status``, ``/readyz`` and the metrics report."""

    current: Generation | None
    manifest: Manifest | None
    state: RenewalState
    renew_at: datetime | None
    warning: bool
    expired: bool
    pending: Generation | None = None
    revoked: str | None = None
    problems: tuple[str, ...] = field(default_factory=tuple)

    def days_left(self, now: datetime) -> float | None:
        if self.current is None or self.current.not_after is None:
            return None
        return (self.current.not_after - now).total_seconds() / 86400.0


def validate_issued(
    chain_pem: bytes,
    key: PrivateKey,
    *,
    tnauthlist: TNAuthList,
    anchors: TrustAnchors | None,
    now: datetime,
    enforce_profile: bool = True,
) -> tuple[x509.Certificate, ...]:
    """What the CA returned must be a SHAKEN chain for ``key`` and ``tnauthlist``, valid now.

    :raises AcquisitionError: the first thing wrong, in the operator's words.
    """
    try:
        chain = load_certificates(chain_pem)
    except CertificateError as exc:
        raise AcquisitionError(f"the CA's certificate chain does not parse: {exc}") from None
    leaf = chain[0]
    public = leaf.public_key()
    if not isinstance(public, PublicKey) or not same_public_key(public, key.public_key()):
        raise AcquisitionError(
            "the CA returned a certificate for another key (its public key is not the one of "
            "our CSR); not using it"
        )
    granted = tnauthlist_of(leaf)
    if granted is None or granted.to_der() != tnauthlist.to_der():
        spc = granted.spc if granted is not None else "none"
        raise AcquisitionError(
            f"the CA's certificate has TNAuthList SPC {spc}, we asked for {tnauthlist.spc}"
        )
    if enforce_profile:
        errors = [f for f in profile_findings(leaf) if f.severity.value == "error"]
        if errors:
            listed = "; ".join(f"{f.rule}: {f.message}" for f in errors)
            raise AcquisitionError(
                f"the CA's certificate breaks the SHAKEN profile (ATIS-1000080): {listed}"
            )
    if anchors is None or not anchors.certificates:
        raise AcquisitionError(
            "no STI-CA trust anchors to validate the issued chain with ([verification] "
            "trust_anchors or trust_list)"
        )
    try:
        validate_chain(chain, anchors, at=now)
    except ChainError as exc:
        raise AcquisitionError(
            f"the CA's certificate chain does not validate: {exc.detail}"
        ) from None
    return chain


def lifecycle_status(
    store: GenerationStore, policy: RenewalPolicy, now: datetime
) -> LifecycleStatus:
    """The status from the store alone (no I/O beyond it): what ``/readyz`` and the metrics
    of every worker read, whichever process renews."""
    manifest = store.manifest()
    state = store.state()
    current = store.get(manifest.current) if manifest is not None else None
    pending = store.get(state.pending) if state.pending else None
    renew_at = None
    warning = expired = False
    problems: list[str] = []
    if current is not None and current.not_before and current.not_after:
        renew_at = policy.renew_at(current.not_before, current.not_after)
        expired = now >= current.not_after
        warning = current.not_after - now <= policy.warning
        if expired:
            problems.append(f"the signing certificate expired at {current.not_after}")
        elif warning:
            days = (current.not_after - now).total_seconds() / 86400
            problems.append(f"the signing certificate expires in {days:.1f} days")
    if current is not None and state.revoked:
        problems.insert(0, f"the signing certificate is revoked: {state.revoked}")
    if state.last_error and state.failures:
        problems.append(f"renewal failing ({state.failures}x): {state.last_error}")
    return LifecycleStatus(
        current=current,
        manifest=manifest,
        state=state,
        renew_at=renew_at,
        warning=warning,
        expired=expired,
        pending=pending,
        revoked=state.revoked if current is not None else None,
        problems=tuple(problems),
    )


def _name_for(generation: Generation) -> str:
    """The file name a generation's chain is published under: unique per certificate."""
    return f"shaken-{generation.spc or 'sp'}-{generation.serial}.pem"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a renewal did: ``switched`` (the new certificate signs) or ``pending`` (waiting
    for its x5u; the old one signs), with the generation and a sentence."""

    action: str
    generation: Generation | None
    message: str


class CertificateLifecycle:
    """Renew, roll over, retire and roll back the signing certificate (module docstring)."""

    def __init__(
        self,
        store: GenerationStore,
        *,
        issuer: Issuer | None,
        publisher: Publisher,
        checker: X5uChecker,
        tnauthlist: TNAuthList | None,
        anchors: Callable[[], TrustAnchors | None],
        clock: Clock,
        policy: RenewalPolicy = RenewalPolicy(),
        enforce_profile: bool = True,
        new_key: Callable[[], PrivateKey] = generate_private_key,
        revocation: RevocationChecker | None = None,
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.publisher = publisher
        self.checker = checker
        self.tnauthlist = tnauthlist
        self.anchors = anchors
        self.clock = clock
        self.policy = policy
        self.enforce_profile = enforce_profile
        self.new_key = new_key
        self.revocation = revocation

    # ----------------------------------------------------------------------------- status

    def status(self, now: datetime) -> LifecycleStatus:
        return lifecycle_status(self.store, self.policy, now)

    def due(self, now: datetime) -> bool:
        """Renewal is due: no current certificate, its renewal point has come, or it is
        revoked."""
        status = self.status(now)
        return status.renew_at is None or now >= status.renew_at or status.revoked is not None

    async def check_revocation(self, now: datetime, *, force: bool = False) -> str | None:
        """Ask the CRL whether the current certificate is revoked (at most every
        ``crl_check`` unless ``force``); the answer is kept in the state."""
        if self.revocation is None:
            return None
        manifest = self.store.manifest()
        current = self.store.get(manifest.current) if manifest is not None else None
        if current is None or current.chain_file is None:
            return None
        state = self.store.state()
        last = state.revocation_checked
        if not force and last is not None and timedelta(0) <= now - last < self.policy.crl_check:
            return state.revoked
        why = await self.revocation.revoked(self.store.load_chain(current), now=now)
        if why is not None and why != state.revoked:
            log.error("the signing certificate %s is revoked: %s", current.serial, why)
        self.store.save_state(replace(self.store.state(), revoked=why, revocation_checked=now))
        return why

    # ---------------------------------------------------------------------------- renewal

    def _failed(self, now: datetime, error: str) -> None:
        state = self.store.state()
        failures = state.failures + 1
        self.store.save_state(
            replace(
                state,
                failures=failures,
                last_error=error,
                last_attempt=now,
                next_attempt=now + self.policy.backoff(failures),
            )
        )

    async def renew(self, now: datetime | None = None) -> Outcome:
        """Obtain, validate and publish a new certificate, and switch to it if its x5u serves.

        :raises AcquisitionError: any step failed (recorded for the backoff); the current
            generation is unchanged.
        """
        when = now if now is not None else self.clock.now()
        try:
            outcome = await self._renew(when)
        except AcquisitionError as exc:
            self._failed(when, str(exc))
            log.error("certificate renewal failed: %s", exc)
            raise
        return outcome

    async def _renew(self, now: datetime) -> Outcome:
        if self.issuer is None or self.tnauthlist is None:
            raise AcquisitionError("no [acme] and [sti_pa] configured: cannot obtain a certificate")
        tnauthlist = self.tnauthlist
        state = self.store.state()
        if state.pending:
            stale = self.store.get(state.pending)
            if stale is not None and stale.state != "current":
                await self._abandon(stale, "superseded by a new renewal")
        key = self.new_key()
        try:
            generation = self.store.new_generation(key, now)
        except OSError as exc:
            raise AcquisitionError(
                f"cannot write the new key: {exc.strerror or exc}; the current certificate stays"
            ) from None
        try:
            chain_pem = await self.issuer.issue(key, now=now)
            chain = validate_issued(
                chain_pem,
                key,
                tnauthlist=tnauthlist,
                anchors=self.anchors(),
                now=now,
                enforce_profile=self.enforce_profile,
            )
            leaf = chain[0]
            tn = tnauthlist_of(leaf)
            generation = replace(
                generation,
                serial=format(leaf.serial_number, "x"),
                spc=tn.spc if tn is not None else None,
                not_before=leaf.not_valid_before_utc,
                not_after=leaf.not_valid_after_utc,
            )
            try:
                generation = self.store.save_chain(generation, chain_pem)
            except OSError as exc:
                raise AcquisitionError(
                    f"cannot write the new certificate: {exc.strerror or exc}; the current "
                    "certificate stays"
                ) from None
            name = _name_for(generation)
            x5u = await self.publisher.publish(name, chain_pem)
        except BaseException:
            self.store.discard(generation)
            raise
        generation = replace(
            generation, published_name=name, x5u=x5u, state="published", published_at=now
        )
        self.store.update(generation)
        self.store.save_state(replace(self.store.state(), pending=generation.id, last_attempt=now))
        log.info("certificate %s issued and published at %s", generation.serial, x5u)
        return await self._try_switch(generation, key, now)

    async def _try_switch(self, generation: Generation, key: PrivateKey, now: datetime) -> Outcome:
        assert generation.x5u is not None
        problem = await self.checker.check(generation.x5u, key, now=now)
        if problem is not None:
            message = (
                f"the new certificate {generation.serial} is published but {generation.x5u} does "
                f"not serve it yet ({problem}); signing stays on the current certificate"
            )
            log.warning("%s", message)
            return Outcome("pending", generation, message)
        self._activate(generation, now)
        return Outcome(
            "switched",
            generation,
            f"signing with certificate {generation.serial} (x5u {generation.x5u})",
        )

    def _activate(self, generation: Generation, now: datetime) -> None:
        assert generation.x5u is not None and generation.chain_file is not None
        old = self.store.manifest()
        retiring = list(old.retiring) if old is not None else []
        retiring = [(gid, at) for gid, at in retiring if gid != generation.id]
        if old is not None and old.current != generation.id:
            retiring.append((old.current, now + self.policy.retire_after))
            previous = self.store.get(old.current)
            if previous is not None:
                self.store.update(replace(previous, state="published"))
        manifest = Manifest(
            current=generation.id,
            key_file=generation.key_file,
            x5u=generation.x5u,
            chain_file=generation.chain_file,
            activated_at=now,
            previous=old.current
            if old is not None and old.current != generation.id
            else (old.previous if old is not None else None),
            retiring=tuple(retiring),
        )
        self.store.activate(manifest)
        self.store.update(replace(generation, state="current"))
        state = self.store.state()
        self.store.save_state(
            replace(
                state,
                pending=None,
                failures=0,
                last_error=None,
                next_attempt=None,
                last_success=now,
                revoked=None,
                revocation_checked=None,
            )
        )
        log.info("switched signing to certificate %s (x5u %s)", generation.serial, generation.x5u)

    async def _abandon(self, generation: Generation, why: str) -> None:
        if generation.published_name is not None:
            try:
                await self.publisher.unpublish(generation.published_name)
            except AcquisitionError as exc:
                log.warning("could not take down %s: %s", generation.published_name, exc)
        self.store.update(replace(generation, state="failed", note=why))
        state = self.store.state()
        if state.pending == generation.id:
            self.store.save_state(replace(state, pending=None))

    # ----------------------------------------------------------------------------- advance

    async def advance(self, now: datetime | None = None) -> list[str]:
        """Finish what is under way: switch to a pending generation whose x5u now serves (or
        give it up after ``x5u_wait``), and take down retired certificates that are due."""
        when = now if now is not None else self.clock.now()
        events: list[str] = []
        state = self.store.state()
        if state.pending:
            generation = self.store.get(state.pending)
            if generation is None or generation.x5u is None:
                self.store.save_state(replace(state, pending=None))
            else:
                outcome = await self._try_switch(generation, self.store.load_key(generation), when)
                if outcome.action == "switched":
                    events.append(outcome.message)
                elif (
                    generation.published_at
                    and when - generation.published_at > self.policy.x5u_wait
                ):
                    message = (
                        f"gave up on certificate {generation.serial}: {generation.x5u} did not "
                        f"serve it within {self.policy.x5u_wait.total_seconds():.0f} s"
                    )
                    await self._abandon(generation, message)
                    self._failed(when, message)
                    events.append(message)
        manifest = self.store.manifest()
        if manifest is not None and manifest.retiring:
            keep: list[tuple[str, datetime]] = []
            for gid, at in manifest.retiring:
                if at > when:
                    keep.append((gid, at))
                    continue
                generation = self.store.get(gid)
                if generation is not None and generation.published_name is not None:
                    try:
                        await self.publisher.unpublish(generation.published_name)
                    except AcquisitionError as exc:
                        log.warning("could not take down %s: %s", generation.published_name, exc)
                        keep.append((gid, at))
                        continue
                    self.store.update(replace(generation, state="retired"))
                    events.append(f"took down certificate {generation.serial} ({generation.x5u})")
            if len(keep) != len(manifest.retiring):
                self.store.activate(replace(manifest, retiring=tuple(keep)))
        self._prune()
        return events

    def _prune(self) -> None:
        """Keep the newest ``keep`` retired or failed generations (and every live one)."""
        manifest = self.store.manifest()
        live = {manifest.current, manifest.previous} if manifest else set()
        if manifest:
            live.update(gid for gid, _ in manifest.retiring)
        pending = self.store.state().pending
        dead = [
            g
            for g in self.store.generations()
            if g.id not in live and g.id != pending and g.state in ("retired", "failed")
        ]
        dead.sort(key=lambda g: g.created, reverse=True)
        for generation in dead[self.policy.keep :]:
            self.store.discard(generation)

    # ---------------------------------------------------------------------------- rollback

    async def rollback(self, now: datetime | None = None, to: str | None = None) -> Outcome:
        """Make the previous generation (or ``to``) current again, once its x5u serves it.

        :raises AcquisitionError: no such generation, or it is expired.
        """
        when = now if now is not None else self.clock.now()
        manifest = self.store.manifest()
        target_id = to or (manifest.previous if manifest is not None else None)
        if target_id is None:
            raise AcquisitionError("there is no previous certificate to roll back to")
        if manifest is not None and target_id == manifest.current:
            raise AcquisitionError(f"generation {target_id} is already current")
        target = self.store.get(target_id)
        if target is None or target.chain_file is None:
            raise AcquisitionError(f"no issued generation {target_id} in the archive")
        if target.not_after is not None and target.not_after <= when:
            raise AcquisitionError(
                f"generation {target_id} (certificate {target.serial}) expired at "
                f"{target.not_after}; it cannot sign"
            )
        name = target.published_name or _name_for(target)
        x5u = await self.publisher.publish(name, self.store.load_chain(target))
        target = replace(target, published_name=name, x5u=x5u, published_at=when)
        self.store.update(target)
        outcome = await self._try_switch(target, self.store.load_key(target), when)
        if outcome.action != "switched":
            raise AcquisitionError(f"rollback not done: {outcome.message}")
        return Outcome("switched", target, f"rolled back: {outcome.message}")

    # -------------------------------------------------------------------------- the loop

    async def step(self, now: datetime | None = None, *, acquire: bool = True) -> timedelta:
        """One pass of the background task; returns how long to sleep until the next one.

        ``acquire`` False: renew what the lifecycle manages, but do not obtain a first
        certificate (something else signs until ``shaken cert acquire`` is run).
        """
        when = now if now is not None else self.clock.now()
        await self.advance(when)
        await self.check_revocation(when)
        status = self.status(when)
        state = status.state
        if state.pending is None and self.issuer is not None:
            due = (status.renew_at is None and acquire) or (
                status.renew_at is not None
                and (when >= status.renew_at or status.revoked is not None)
            )
            backing_off = state.next_attempt is not None and when < state.next_attempt
            if due and not backing_off:
                # A failure is recorded and logged by renew, and retried after the backoff.
                with contextlib.suppress(AcquisitionError):
                    await self.renew(when)
        return self._next_wake(when)

    def _next_wake(self, now: datetime) -> timedelta:
        status = self.status(now)
        candidates = [now + self.policy.check_interval]
        if status.state.pending:
            candidates.append(now + self.policy.x5u_recheck)
        if status.renew_at is not None:
            candidates.append(status.renew_at)
        if status.state.next_attempt is not None:
            candidates.append(status.state.next_attempt)
        if self.revocation is not None and status.current is not None:
            checked = status.state.revocation_checked or now
            candidates.append(checked + self.policy.crl_check)
        if status.manifest is not None:
            candidates += [at for _, at in status.manifest.retiring]
        wake = min(candidates) - now
        return max(wake, timedelta(seconds=1))

    async def run(
        self,
        stop: asyncio.Event,
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        lock: Callable[[], AbstractContextManager[bool]] | None = None,
        acquire: bool = True,
    ) -> None:
        """Until ``stop`` is set: :meth:`step`, sleep until the next event, again.

        ``lock`` is entered around each pass (the adapters' lock file, so only one process
        renews at a time); a pass whose lock yields False (held elsewhere) is skipped.
        """
        while not stop.is_set():
            delay = self.policy.x5u_recheck
            try:
                with lock() if lock is not None else contextlib.nullcontext(True) as held:
                    if held:
                        delay = await self.step(acquire=acquire)
            except Exception:
                log.exception("certificate lifecycle pass failed")
                delay = self.policy.retry_min
            if sleep is not None:
                await sleep(delay.total_seconds())
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay.total_seconds())
