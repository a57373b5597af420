"""Revocation end to end in a real lab (issue 9 item 3).

A lab from ``shaken lab init``; its repository served over HTTPS by ``shaken repo serve`` in a
subprocess; the runtime ``build_runtime`` makes of its ``shaken.toml`` (the HTTPS fetcher, the
certificate and CRL caches, the verification and signing services); the SP certificate revoked
with ``shaken ca revoke``, which publishes the new CRL to the repository. The verdict flips
within the refresh schedule: by the refresh pass the servers run (triggered here), or, with no
refresh at all, once the clock has moved one refresh interval. Nobody sleeps for a day: the
runtime's clock is a :class:`ManualClock`.

The issue's own case is here too: ``crl_files`` and no ``sti_pa_certificate``. ``config check``
refuses it; ``shaken verify --no-cache --crl hard`` fails closed; ``--crl soft`` and the running
verifier pass and say so in the result and the metrics.
"""

from __future__ import annotations

import errno
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import shaken
from shaken.adapters.cli import main
from shaken.adapters.http.app import RestApplication
from shaken.adapters.runtime import Runtime
from shaken.adapters.serve import check_settings
from shaken.adapters.wiring import build_runtime
from shaken.config import load_config
from shaken.core.certs import load_certificates
from shaken.core.context import SipContext
from shaken.core.reasons import Reason
from shaken.core.result import VerificationResult
from shaken.toolkit.lab import Lab, LabSettings, init_lab
from tests.support.fakes import ManualClock

ORIG, DEST = "12025550100", "12025550101"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    lab: Lab
    now: datetime
    process: subprocess.Popen[str]

    @property
    def serial(self) -> int:
        return load_certificates(self.lab.sp_chain.read_bytes())[0].serial_number

    def identity(self, now: datetime) -> str:
        return shaken.sign_identity(
            key=self.lab.sp_key.read_bytes(),
            x5u=self.lab.x5u,
            orig=ORIG,
            dest=DEST,
            attest="A",
            now=now,
        )

    def context(self, now: datetime) -> SipContext:
        return SipContext(
            identity=(self.identity(now),), from_header=f"<tel:+{ORIG}>", to=f"<tel:+{DEST}>"
        )

    def edit_config(self, old: str, new: str) -> None:
        text = self.lab.config.read_text()
        assert old in text
        self.lab.config.write_text(text.replace(old, new))

    def revoke(self, now: datetime) -> str:
        """``shaken ca revoke``: the CA writes ca/crl.pem and publishes repo/crl.der."""
        code = main(
            ["ca", "revoke", "--ca", str(self.lab.ca_dir), format(self.serial, "x")],
            clock=ManualClock(now),
        )
        assert code == 0
        return format(self.serial, "x")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A lab whose repository ``shaken repo serve`` serves on the port its configuration names."""
    now = datetime.now(UTC).replace(microsecond=0)  # TLS checks the lab's certificates by libc
    for attempt in range(5):
        port = _free_port()
        lab = init_lab(
            tmp_path / f"lab{attempt}", now=now, settings=LabSettings(repository_port=port)
        )
        command = [
            sys.executable,
            "-m",
            "shaken.adapters.cli",
            "repo",
            "serve",
            str(lab.repo_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--quiet",
            "--tls-cert",
            str(lab.tls_cert),
            "--tls-key",
            str(lab.tls_key),
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        first = process.stdout.readline()
        if not first.startswith("repository "):
            _, err = process.communicate(timeout=20)
            if "in use" in err or str(errno.EADDRINUSE) in err:
                continue  # the probed port was taken in between: try another
            pytest.fail(f"shaken repo serve did not start: {first}{err}")
        try:
            yield Served(lab=lab, now=now, process=process)
        finally:
            process.terminate()
            process.communicate(timeout=20)
        return
    pytest.fail("no free loopback port for the lab repository")


async def _runtime(served: Served, clock: ManualClock) -> Runtime:
    settings = load_config(served.lab.config)
    return build_runtime(settings, clock=clock, now=clock.now())


async def _verify(runtime: Runtime, served: Served, now: datetime) -> VerificationResult:
    verifier = runtime.profiles[None].verifier
    assert verifier is not None
    return await verifier.verify(served.context(now), now=now, source="127.0.0.1")


@pytest.mark.anyio
async def test_9_3_a_revoked_sp_certificate_fails_after_the_scheduled_refresh(
    served: Served,
) -> None:
    clock = ManualClock(served.now)
    runtime = await _runtime(served, clock)
    try:
        assert (await _verify(runtime, served, clock.now())).verified
        clock.advance(minutes=10)
        serial = served.revoke(clock.now())
        # Until the CRL is fetched again the cached verdict stands (before: for a week).
        assert (await _verify(runtime, served, clock.now())).verified
        problems = await runtime.cache.refresh_revocation()  # the pass the servers run
        assert problems == []
        result = await _verify(runtime, served, clock.now())
        assert not result.verified and result.reason is Reason.CERT_REVOKED
        assert result.sip_code == 437 and f"serial {serial}" in (result.detail or "")
    finally:
        await runtime.aclose()


@pytest.mark.anyio
async def test_9_3_without_a_refresh_the_verdict_flips_within_one_interval(
    served: Served,
) -> None:
    """No background task at all: a CRL is never used longer than crl_refresh unfetched."""
    served.edit_config("crl_files = [", "# crl_files = [")  # only the CRL at the URL
    served.edit_config("max_iat_age = 60", "max_iat_age = 60\ncrl_refresh = 3600")
    clock = ManualClock(served.now)
    runtime = await _runtime(served, clock)
    try:
        assert (await _verify(runtime, served, clock.now())).verified
        clock.advance(minutes=20)
        served.revoke(clock.now())
        assert (await _verify(runtime, served, clock.now())).verified
        clock.advance(minutes=41)  # one hour after the CRL was fetched; its nextUpdate is a week
        result = await _verify(runtime, served, clock.now())
        assert result.reason is Reason.CERT_REVOKED
    finally:
        await runtime.aclose()


@pytest.mark.anyio
async def test_9_3_readyz_and_metrics_report_our_own_certificate_revoked(served: Served) -> None:
    clock = ManualClock(served.now)
    runtime = await _runtime(served, clock)
    try:
        app = RestApplication(runtime, clock=clock)
        ready, checks = await app.readiness()
        assert ready, checks
        assert checks["signing_certificates"]["ok"] and checks["revocation"]["ok"]
        clock.advance(minutes=2)  # past the REST app's one-minute recheck
        served.revoke(clock.now())
        await runtime.cache.refresh_revocation()
        ready, checks = await app.readiness()
        assert not ready
        assert not checks["signing_certificates"]["ok"]
        assert "revoked" in checks["signing_certificates"]["detail"]
        metrics = app.metrics.render().decode()
        x5u = served.lab.x5u
        assert f'shaken_signing_certificate_revoked{{x5u="{x5u}"}} 1.0' in metrics
        assert f'shaken_signing_certificate_expired{{x5u="{x5u}"}} 0.0' in metrics
        assert 'shaken_revocation_mode{mode="soft"} 1.0' in metrics
        assert re.search(r"^shaken_crl_refreshes_total 1\.0$", metrics, re.M)
    finally:
        await runtime.aclose()


@pytest.mark.anyio
async def test_9_3_readyz_reports_our_own_certificate_expired_and_stale_crls(
    served: Served,
) -> None:
    served.edit_config("max_iat_age = 60", 'max_iat_age = 60\nrevocation = "hard"')
    clock = ManualClock(served.now)
    runtime = await _runtime(served, clock)
    try:
        app = RestApplication(runtime, clock=clock)
        assert (await app.readiness())[0]
        served.process.terminate()  # the repository goes away
        served.process.communicate(timeout=20)
        clock.advance(days=8)  # the CRL's nextUpdate (7 days) has passed
        await runtime.cache.refresh_revocation()
        ready, checks = await app.readiness()
        assert not ready and not checks["revocation"]["ok"]
        assert "stale" in checks["revocation"]["detail"]
        assert "past its nextUpdate" in checks["revocation"]["detail"]
        clock.advance(days=400)  # the SP certificate (365 days) has expired
        ready, checks = await app.readiness()
        assert not checks["signing_certificates"]["ok"]
        assert "expired" in checks["signing_certificates"]["detail"]
        metrics = app.metrics.render().decode()
        assert f'shaken_signing_certificate_expired{{x5u="{served.lab.x5u}"}} 1.0' in metrics
        assert re.search(r"^shaken_crls_stale [1-9]", metrics, re.M)
        age = re.search(r"^shaken_crl_age_seconds (\S+)$", metrics, re.M)
        assert age is not None and float(age.group(1)) >= 408 * 86400  # 8 + 400 days on
    finally:
        await runtime.aclose()


@pytest.mark.anyio
async def test_9_3_the_servers_start_the_refresh_and_stop_it(served: Served) -> None:
    """``check_settings`` (start and every reload of ``shaken serve``) starts the refresh."""
    runtime = await check_settings(load_config(served.lab.config), ManualClock(served.now))
    task = runtime.cache._refresh_task
    assert task is not None and not task.done()
    await runtime.aclose()
    assert task.done()


# ------------------------------------------------------- crl_files and no STI-PA certificate


def test_9_3_config_check_refuses_crl_files_without_the_sti_pa_certificate(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "check", str(served.lab.config)]) == 0
    served.edit_config("sti_pa_certificate = ", "# sti_pa_certificate = ")
    capsys.readouterr()
    assert main(["config", "check", str(served.lab.config)]) == 1
    out = capsys.readouterr().out
    assert "verification.crl_files:" in out and "could never apply" in out
    assert "sti_pa_certificate" in out and "OK" not in out


def _cli_verify(served: Served, now: datetime, *extra: str) -> tuple[int, str]:
    lab = served.lab
    argv = [
        "verify",
        "--identity",
        served.identity(now),
        "--orig",
        ORIG,
        "--dest",
        DEST,
        "--ca",
        str(lab.root),
        "--lab",
        "--tls-ca",
        str(lab.tls_ca),
        "--no-cache",
        *extra,
    ]
    return main(argv, clock=ManualClock(now)), ""


def test_9_3_shaken_verify_crl_hard_fails_closed_without_a_crl_signer(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    now = served.now
    served.revoke(now)
    capsys.readouterr()
    code, _ = _cli_verify(served, now, "--crl", "hard")
    out = capsys.readouterr().out
    assert code == 1 and "NOT VERIFIED" in out and "cert_untrusted" in out
    assert "revocation status cannot be checked" in out
    code, _ = _cli_verify(served, now, "--crl", "soft")
    out = capsys.readouterr().out
    assert code == 0 and "warning:crl_unavailable" in out
    # With the STI-PA certificate the CRL is checked: the certificate is revoked.
    sti_pa = str(served.lab.ca_dir / "sti-pa.pem")
    for mode in ("soft", "hard"):
        code, _ = _cli_verify(served, now, "--crl", mode, "--sti-pa-cert", sti_pa)
        out = capsys.readouterr().out
        assert code == 1 and "cert_revoked" in out, out


@pytest.mark.anyio
async def test_9_3_soft_verifier_says_so_in_the_result_and_the_metrics(served: Served) -> None:
    served.edit_config("sti_pa_certificate = ", "# sti_pa_certificate = ")
    clock = ManualClock(served.now)
    runtime = await _runtime(served, clock)
    try:
        result = await _verify(runtime, served, clock.now())
        assert result.verified
        assert any(f.startswith("warning:crl_unavailable:") for f in result.findings)
        app = RestApplication(runtime, clock=clock)
        metrics = app.metrics.render().decode()
        assert re.search(r"^shaken_revocation_unchecked_total 1\.0$", metrics, re.M)
        assert re.search(r"^shaken_certificates_revocation_unchecked 1\.0$", metrics, re.M)
        _, checks = await app.readiness()
        assert "accepted without a status" in checks["revocation"]["detail"]
    finally:
        await runtime.aclose()
    assert clock.now() - served.now < timedelta(seconds=1)
