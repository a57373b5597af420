"""The certificate lifecycle's adapters, composed from ``[sti_pa]``, ``[acme]``, ``[lifecycle]``.

* :class:`AcmeIssuer`: the STI-PA's SPC token and the STI-CA's ACME order (the ports of
  :class:`~shaken.services.lifecycle.CertificateLifecycle`), the CSR made by the same builder as
  ``shaken csr new``;
* :class:`DirectoryPublisher` (our STI-CR directory, served by ``shaken repo serve``) and
  :class:`CommandPublisher` (a command that uploads to the CA's hosted repository);
* :class:`FetchingX5uChecker`: fetches the x5u as a verifier would (the verification profile's
  URL policy and TLS trust) and applies the ``check_x5u_at_load`` check;
* :func:`build_lifecycle`: all of it from the settings; :func:`lifecycle_credential`: the
  manifest's key and x5u, which :func:`shaken.adapters.wiring.build_runtime` signs with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shaken.adapters.acme import AcmeClient, AcmeSettings
from shaken.adapters.fetch import HttpsFetcher
from shaken.adapters.stipa import (
    ENV_PASSWORD,
    ENV_USER,
    StiPaClient,
    StiPaCredentials,
    StiPaSettings,
    token_from_command,
)
from shaken.adapters.store.generations import (
    DirectoryGenerationStore,
    manifest_signature,
    read_manifest,
)
from shaken.adapters.trust_loader import load_trust, trust_sources
from shaken.config import Settings, effective_profile
from shaken.config.typed import AcmeConfig, LifecycleSettings, StiPaConfig
from shaken.core.certs import Spc, TNAuthList, crl_distribution_points, load_certificates
from shaken.core.chain import TrustAnchors, validate_chain
from shaken.core.errors import (
    AcquisitionError,
    CertificateError,
    ChainError,
    ConfigurationError,
    VerificationFailure,
)
from shaken.core.jws import PrivateKey, generate_private_key, load_private_key, private_key_pem
from shaken.core.reasons import Reason
from shaken.files import create_private, write_atomic
from shaken.services.lifecycle import (
    CertificateLifecycle,
    LifecycleStatus,
    RenewalPolicy,
    lifecycle_status,
)
from shaken.services.ports import Clock
from shaken.services.signing import Credential
from shaken.toolkit.x509build import build_csr

__all__ = [
    "AcmeIssuer",
    "CommandPublisher",
    "DirectoryPublisher",
    "FetchingX5uChecker",
    "Lifecycle",
    "build_lifecycle",
    "check_x5u",
    "lifecycle_credential",
    "load_account_key",
    "read_status",
    "renew_in_background",
    "renewal_policy",
    "serve_tasks",
    "watch_manifest",
    "with_lifecycle_credential",
]

log = logging.getLogger("shaken.lifecycle")


def load_account_key(path: Path, *, create: bool) -> PrivateKey:
    """The ACME account key; made (P-256, 0600) the first time when ``create``.

    :raises AcquisitionError: it cannot be read or written.
    """
    try:
        return load_private_key(path.read_bytes())
    except FileNotFoundError:
        if not create:
            raise AcquisitionError(f"no ACME account key at {path} yet") from None
    except OSError as exc:
        raise AcquisitionError(f"cannot read the ACME account key {path}: {exc.strerror}") from None
    key = generate_private_key()
    try:
        create_private(path, private_key_pem(key))
    except OSError as exc:
        raise AcquisitionError(
            f"cannot write the ACME account key {path}: {exc.strerror}"
        ) from None
    log.info("created the ACME account key %s", path)
    return key


def _given(settings: Any, *names: str) -> dict[str, Any]:
    """The fields of ``settings`` that are set (not None): an unset one keeps the default of
    the dataclass it feeds."""
    values = {name: getattr(settings, name) for name in names}
    return {name: value for name, value in values.items() if value is not None}


def acme_client_settings(acme: AcmeConfig) -> AcmeSettings:
    """What the ACME client takes of ``[acme]``."""
    given = _given(
        acme,
        "tnauthlist_encoding",
        "fingerprint",
        "fingerprint_case",
        "challenge_key",
        "post_as_get",
        "jwk_kid",
        "account_url",
        "tls_ca_file",
        "timeout",
        "poll_timeout",
    )
    return AcmeSettings(directory=acme.directory, contact=acme.contact, **given)


def sti_pa_client_settings(sti_pa: StiPaConfig) -> StiPaSettings:
    """What the STI-PA client takes of ``[sti_pa]``, the root it names loaded.

    :raises ConfigurationError: the root certificate does not load.
    """
    roots: tuple[Any, ...] = ()
    root = sti_pa.root_certificate
    if root:
        try:
            roots = load_certificates(Path(root).read_bytes())
        except (OSError, CertificateError) as exc:
            raise ConfigurationError(f"sti_pa.root_certificate {root}: {exc}") from None
    given = _given(
        sti_pa,
        "auth_header",
        "token_accept",
        "token_path",
        "tls_ca_file",
        "min_token_lifetime",
        "timeout",
    )
    return StiPaSettings(
        # Both unset only with a token_command: this host never asks the STI-PA then.
        url=sti_pa.url or "",
        account_id=sti_pa.account_id or "",
        roots=roots,
        **given,
    )


class AcmeIssuer:
    """SPC token from the STI-PA, certificate from the STI-CA's ACME server."""

    def __init__(
        self,
        acme: AcmeSettings,
        sti_pa: StiPaSettings,
        *,
        account_key: Path,
        credentials: Callable[[], StiPaCredentials],
        spc: str,
        org: str,
        country: str = "US",
        unique_cn: bool = False,
        csr_crl_url: str | None = None,
        validity_days: int | None = None,
        token_command: list[str] | None = None,
    ) -> None:
        self.token_command = token_command
        self.acme = acme
        self.sti_pa = sti_pa
        self.account_key = account_key
        self.credentials = credentials
        self.spc, self.org, self.country = spc, org, country
        self.unique_cn = unique_cn
        self.csr_crl_url = csr_crl_url
        self.validity_days = validity_days
        self.tnauthlist = TNAuthList(entries=(Spc(code=spc),))

    async def issue(self, key: PrivateKey, *, now: datetime) -> bytes:
        account = load_account_key(self.account_key, create=True)
        csr = build_csr(
            key,
            spc=self.spc,
            org=self.org,
            country=self.country,
            cn_suffix=now.strftime("%Y%m%d%H%M%S") if self.unique_cn else None,
            crl_url=self.csr_crl_url,
        )
        not_after = now + timedelta(days=self.validity_days) if self.validity_days else None
        if self.token_command is not None:
            command = self.token_command

            async def remote(tkvalue: str, fingerprint: str) -> str:
                return await token_from_command(
                    command,
                    settings=self.sti_pa,
                    tnauthlist=self.tnauthlist,
                    tkvalue=tkvalue,
                    fingerprint=fingerprint,
                    now=now,
                )

            async with AcmeClient(self.acme, account) as client:
                der = csr.public_bytes(Encoding.DER)
                return await client.obtain(self.tnauthlist, der, remote, not_after=not_after)
        try:
            credentials = self.credentials()
        except ConfigurationError as exc:
            raise AcquisitionError(str(exc)) from None
        async with StiPaClient(self.sti_pa, credentials) as pa:
            await pa.login()

            async def token(tkvalue: str, fingerprint: str) -> str:
                answer = await pa.spc_token(
                    tnauthlist=self.tnauthlist, tkvalue=tkvalue, fingerprint=fingerprint, now=now
                )
                return answer.token

            async with AcmeClient(self.acme, account) as client:
                return await client.obtain(
                    self.tnauthlist,
                    csr.public_bytes(Encoding.DER),
                    token,
                    not_after=not_after,
                )


class DirectoryPublisher:
    """Publish into the directory our repository serves; x5u = ``x5u_base`` + file name."""

    def __init__(self, directory: Path, x5u_base: str) -> None:
        self.directory = directory
        self.x5u_base = x5u_base

    async def publish(self, name: str, chain_pem: bytes) -> str:
        try:
            await asyncio.to_thread(write_atomic, self.directory / name, chain_pem)
        except OSError as exc:
            raise AcquisitionError(
                f"cannot publish {name} in {self.directory}: {exc.strerror or exc}"
            ) from None
        return self.x5u_base + name

    async def unpublish(self, name: str) -> None:
        try:
            (self.directory / name).unlink(missing_ok=True)
        except OSError as exc:
            raise AcquisitionError(
                f"cannot remove {self.directory / name}: {exc.strerror}"
            ) from None


class CommandPublisher:
    """Run a command to publish (``{chain}``, ``{name}``, ``{x5u}`` replaced in its argv).

    The x5u is ``x5u_base`` + name, or, without a base, the last line the command prints (a CA
    that hosts the repository tells where it put the chain).
    """

    def __init__(
        self,
        command: list[str],
        *,
        x5u_base: str | None,
        unpublish: list[str] | None,
        staging: Path,
    ) -> None:
        self.command = command
        self.x5u_base = x5u_base
        self.unpublish_command = unpublish
        self.staging = staging

    async def _run(self, argv: list[str], what: str) -> str:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                # The hook gets our environment less the STI-PA credentials it has no use for.
                env={k: v for k, v in os.environ.items() if k not in (ENV_USER, ENV_PASSWORD)},
            )
            out, err = await asyncio.wait_for(process.communicate(), timeout=300)
        except (OSError, TimeoutError) as exc:
            raise AcquisitionError(f"{what} command {argv[0]} failed: {exc}") from None
        if process.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise AcquisitionError(
                f"{what} command {argv[0]} exited {process.returncode}: {tail[0][:200]}"
            )
        return out.decode(errors="replace")

    async def publish(self, name: str, chain_pem: bytes) -> str:
        chain = self.staging / name
        write_atomic(chain, chain_pem)
        x5u = self.x5u_base + name if self.x5u_base else ""
        argv = [
            a.replace("{chain}", str(chain)).replace("{name}", name).replace("{x5u}", x5u)
            for a in self.command
        ]
        out = await self._run(argv, "publish")
        if not x5u:
            lines = [line.strip() for line in out.splitlines() if line.strip()]
            if not lines or not lines[-1].startswith("https://"):
                raise AcquisitionError(
                    "the publish command printed no https URL and lifecycle.x5u_base is not set"
                )
            x5u = lines[-1]
        return x5u

    async def unpublish(self, name: str) -> None:
        if self.unpublish_command is None:
            return
        x5u = self.x5u_base + name if self.x5u_base else ""
        argv = [a.replace("{name}", name).replace("{x5u}", x5u) for a in self.unpublish_command]
        await self._run(argv, "unpublish")


class FetchingX5uChecker:
    """The ``check_x5u_at_load`` check through a fetcher configured like our verifiers."""

    def __init__(self, fetcher: HttpsFetcher) -> None:
        self.fetcher = fetcher

    async def check(self, x5u: str, key: PrivateKey, *, now: datetime) -> str | None:
        return await check_x5u(self.fetcher, Credential(key=key, x5u=x5u), now=now)


class CrlRevocationChecker:
    """Is our own certificate on the CRL its distribution point names (the STI-PA's)?

    The same CRL verifiers check (through the same fetcher policy), so a revoked certificate
    is replaced before every call it signs fails as ``cert_revoked`` downstream.
    """

    def __init__(
        self,
        fetcher: HttpsFetcher,
        trust: Callable[[], tuple[TrustAnchors | None, tuple[Any, ...]]],
    ) -> None:
        self.fetcher = fetcher
        self.trust = trust

    async def revoked(self, chain_pem: bytes, *, now: datetime) -> str | None:
        try:
            chain = load_certificates(chain_pem)
        except CertificateError:
            return None
        anchors, signers = self.trust()
        if anchors is None:
            return None
        bodies: list[bytes] = []
        for url in dict.fromkeys(u for c in chain for u in crl_distribution_points(c)):
            try:
                bodies.append((await self.fetcher.fetch(url)).body)
            except VerificationFailure as exc:
                log.warning("cannot check our certificate's revocation at %s: %s", url, exc)
        if not bodies:
            return None
        try:
            validate_chain(chain, anchors, at=now, crls=bodies, crl_signers=signers)
        except ChainError as exc:
            if exc.reason is Reason.CERT_REVOKED:
                return exc.detail
        return None


def renewal_policy(lifecycle: LifecycleSettings, settings: Settings) -> RenewalPolicy:
    """The ``[lifecycle]`` timings, ``retire_after`` raised to what the iat window needs."""
    verification = effective_profile(settings, None).verification_settings
    # The old chain must outlive its last signature's iat window, whatever retire_after says:
    # the last worker signs with the old key up to watch_interval (and a reload) after the
    # switch, and verifiers accept that signature for max_iat_age (plus the skew) after it.
    reload_margin = 30
    floor = timedelta(
        seconds=verification.max_iat_age
        + verification.max_future_skew
        + math.ceil(lifecycle.watch_interval)
        + reload_margin
    )
    policy = lifecycle.renewal_policy
    return replace(policy, retire_after=max(policy.retire_after, floor))


@dataclass(slots=True)
class Lifecycle:
    """A configured lifecycle: the engine, its store, and the fetcher to close."""

    engine: CertificateLifecycle
    store: DirectoryGenerationStore
    fetcher: HttpsFetcher
    settings: Settings

    async def aclose(self) -> None:
        await self.fetcher.aclose()


def build_lifecycle(
    settings: Settings,
    *,
    clock: Clock,
    credentials: Callable[[], StiPaCredentials] | None = None,
) -> Lifecycle:
    """The lifecycle of ``settings`` (which has a ``[lifecycle]``).

    :raises ConfigurationError: no ``[lifecycle]``, or a file it names does not load.
    """
    lifecycle = settings.lifecycle_settings
    if lifecycle is None:
        raise ConfigurationError(f"{settings.source} has no [lifecycle] section")
    directory = Path(lifecycle.directory)
    store = DirectoryGenerationStore(directory)
    glob = effective_profile(settings, None)
    verification = glob.verification_settings
    fetcher = HttpsFetcher(
        policy=glob.verification_profile.x5u_policy,
        limits=verification.fetch_limits,
        tls_ca_file=verification.tls_ca_file,
        clock=clock,
    )
    sources = trust_sources(verification)

    def trust() -> tuple[TrustAnchors | None, tuple[Any, ...]]:
        if sources.empty:
            return None, ()
        loaded = load_trust(sources, now=clock.now())
        return TrustAnchors(certificates=loaded.anchors), loaded.crl_signers

    def anchors() -> TrustAnchors | None:
        return trust()[0]

    # The loader requires what each publishing mode needs (publish_dir and x5u_base, or
    # publish_command).
    if lifecycle.publish == "directory":
        publisher: Any = DirectoryPublisher(
            Path(str(lifecycle.publish_dir)), str(lifecycle.x5u_base)
        )
    else:
        publisher = CommandPublisher(
            list(lifecycle.publish_command or ()),
            x5u_base=lifecycle.x5u_base,
            unpublish=list(lifecycle.unpublish_command) if lifecycle.unpublish_command else None,
            staging=directory / "outbox",
        )
    issuer = None
    acme, sti_pa = settings.acme_settings, settings.sti_pa_settings
    if acme is not None and sti_pa is not None:
        credentials_file = sti_pa.credentials_file
        issuer = AcmeIssuer(
            acme_client_settings(acme),
            sti_pa_client_settings(sti_pa),
            account_key=Path(acme.account_key),
            credentials=credentials or (lambda: StiPaCredentials.load(credentials_file)),
            spc=acme.spc,
            org=acme.org,
            csr_crl_url=acme.csr_crl_url,
            validity_days=acme.validity_days,
            token_command=list(sti_pa.token_command) if sti_pa.token_command else None,
            **_given(acme, "country", "unique_cn"),
        )
    tnauthlist = TNAuthList(entries=(Spc(code=acme.spc),)) if acme is not None else None
    engine = CertificateLifecycle(
        store,
        issuer=issuer,
        publisher=publisher,
        checker=FetchingX5uChecker(fetcher),
        tnauthlist=tnauthlist,
        anchors=anchors,
        clock=clock,
        policy=renewal_policy(lifecycle, settings),
        revocation=CrlRevocationChecker(fetcher, trust),
        **(_given(acme, "enforce_profile") if acme is not None else {}),
    )
    return Lifecycle(engine=engine, store=store, fetcher=fetcher, settings=settings)


def lifecycle_credential(settings: Settings) -> tuple[str, str] | None:
    """The (key file, x5u) of the current generation, or None before the first one."""
    if settings.lifecycle_settings is None:
        return None
    manifest = read_manifest(Path(settings.lifecycle_settings.directory))
    if manifest is None:
        return None
    return manifest.key_file, manifest.x5u


def with_lifecycle_credential(settings: Settings) -> Settings:
    """``settings`` whose ``[attestation]`` signs with the current generation, when there is
    one: the lifecycle owns the global signing credential (a static ``private_key``/``x5u``
    there is only what signs until the first certificate is obtained)."""
    found = lifecycle_credential(settings)
    if found is None:
        return settings
    key_file, x5u = found
    return replace(
        settings, attestation={**settings.attestation, "private_key": key_file, "x5u": x5u}
    )


# --------------------------------------------------------------------------- inside serve


def read_status(settings: Settings, now: datetime) -> LifecycleStatus | None:
    """The lifecycle's status from its directory (no network), or None without [lifecycle]."""
    lifecycle = settings.lifecycle_settings
    if lifecycle is None:
        return None
    store = DirectoryGenerationStore(Path(lifecycle.directory))
    return lifecycle_status(store, renewal_policy(lifecycle, settings), now)


async def watch_manifest(
    directory: Path, interval: float, changed: Callable[[], None], stop: asyncio.Event
) -> None:
    """Call ``changed`` whenever ``current.json`` is replaced (every worker runs this).

    The manifest is replaced by a rename, so its inode changes with every switch: each worker
    sees the new generation within ``interval`` and reloads onto it. Both generations are
    published across the switch, so whatever a worker signs with in that interval verifies.
    """
    seen = manifest_signature(directory)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        now = manifest_signature(directory)
        if now != seen and now is not None:
            seen = now
            log.info("the signing certificate changed (%s); reloading", directory / "current.json")
            changed()


async def renew_in_background(settings: Settings, clock: Clock, stop: asyncio.Event) -> None:
    """The renewal task of ``shaken serve`` (one worker runs it; the lock file keeps any
    other process, a ``shaken cert renew`` included, from renewing at the same time).

    Without a current generation it obtains the first certificate only when nothing else
    signs (no ``[attestation] private_key``); otherwise that is ``shaken cert acquire``'s.
    """
    try:
        lifecycle = build_lifecycle(settings, clock=clock)
    except ConfigurationError as exc:
        log.error("certificate renewal is off in this process: %s", exc)
        return
    try:
        await lifecycle.engine.run(
            stop,
            lock=lambda: lifecycle.store.lock(wait=False),
            acquire="private_key" not in settings.attestation,
        )
    finally:
        await lifecycle.aclose()


def serve_tasks(
    settings: Settings, clock: Clock, *, renew: bool, on_switch: Callable[[], None]
) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
    """Start what a worker runs for the lifecycle: the manifest watcher and, when ``renew``
    (and ``lifecycle.renew_in_serve``), the renewal task. Set the event to stop them."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    lifecycle = settings.lifecycle_settings
    if lifecycle is None:
        return stop, tasks
    loop = asyncio.get_running_loop()
    directory = Path(lifecycle.directory)
    tasks.append(
        loop.create_task(watch_manifest(directory, lifecycle.watch_interval, on_switch, stop))
    )
    if renew and lifecycle.renew_in_serve:
        tasks.append(loop.create_task(renew_in_background(settings, clock, stop)))
    return stop, tasks


def readiness(settings: Settings, now: datetime) -> tuple[bool, str] | None:
    """The ``/readyz`` check of the signing certificate, or None without ``[lifecycle]``.

    Not ready (degraded) once the current certificate is within ``warning_days`` of notAfter
    (renewal should have happened long before: something is failing), expired or revoked
    (until the renewal that revocation starts has succeeded); before the
    first certificate, ready only when a static ``[attestation]`` key signs meanwhile.
    """
    status = read_status(settings, now)
    if status is None:
        return None
    current = status.current
    if current is None:
        if "private_key" in settings.attestation:
            return True, "no certificate obtained yet; signing with [attestation] private_key"
        return False, "no signing certificate: run shaken cert acquire"
    left = status.days_left(now) or 0.0
    if status.expired or status.warning or status.revoked:
        return False, "; ".join(status.problems)
    detail = f"certificate {current.serial}, {left:.1f} days left"
    if status.renew_at is not None:
        detail += f", renews at {status.renew_at.isoformat()}"
    if status.state.failures:
        detail += f"; renewal failing ({status.state.failures}x): {status.state.last_error}"
    return True, detail


def lifecycle_gauges(settings: Settings, now: datetime) -> list[tuple[str, str, float]]:
    """(name, help, value) of the lifecycle's gauges for ``/metrics`` (none without it)."""
    status = read_status(settings, now)
    if status is None:
        return []
    gauges = [
        (
            "shaken_certificate_renewal_failures",
            "consecutive failed renewal attempts of the signing certificate",
            float(status.state.failures),
        ),
        (
            "shaken_certificate_rollover_pending",
            "1 while a new certificate is published but its x5u does not serve it yet",
            1.0 if status.state.pending else 0.0,
        ),
    ]
    left = status.days_left(now)
    if left is not None:
        gauges.append(
            ("shaken_certificate_days_left", "days until the current certificate expires", left)
        )
    if status.renew_at is not None:
        gauges.append(
            (
                "shaken_certificate_renewal_timestamp_seconds",
                "when the current certificate is due for renewal (Unix time)",
                status.renew_at.timestamp(),
            )
        )
    return gauges


async def check_x5u(fetcher: HttpsFetcher, credential: Credential, *, now: datetime) -> str | None:
    """What is wrong with what ``credential.x5u`` serves for its key now, or None.

    The ``check_x5u_at_load`` check, also the certificate lifecycle's switch condition: a
    chain with no private key in it, valid now, whose leaf is the public half of the key.
    """
    url = credential.x5u
    spki = credential.key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    try:
        document = await fetcher.fetch(url)
    except VerificationFailure as exc:
        return f"{url}: {exc}"
    if b"PRIVATE KEY" in document.body:
        return f"{url} serves a private key: take it down"
    try:
        chain = load_certificates(document.body)
    except CertificateError as exc:
        return f"{url}: {exc}"
    leaf = chain[0]
    if leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) != spki:
        name = credential.name or "the private key"
        return f"{url}: the certificate is not for {name} (public keys differ)"
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        return (
            f"{url}: the certificate is not valid now "
            f"({leaf.not_valid_before_utc.isoformat()} .. {leaf.not_valid_after_utc.isoformat()})"
        )
    return None
