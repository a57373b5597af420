"""The one-command lab, end to end: a call signed with the lab key, its chain fetched from the lab
repository over HTTPS, verified by us and by secsipidx, then refused once the SP certificate is
revoked and the CRL published."""

from __future__ import annotations

import errno
import hashlib
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import shaken
from shaken.adapters.cli import main
from shaken.adapters.fetch import fetch_certificate
from shaken.adapters.tour import free_port
from shaken.core.certs import CertRole, crl_distribution_points, load_certificates, profile_findings
from shaken.core.chain import TrustAnchors
from shaken.core.context import SipContext
from shaken.core.errors import ConfigurationError
from shaken.core.reasons import Reason
from shaken.core.result import VerificationResult
from shaken.core.verify import SHAKEN, VerificationProfile, complete, prepare
from shaken.core.x5u import X5uPolicy
from shaken.toolkit.ca import TestCa
from shaken.toolkit.lab import Lab, LabSettings, init_lab, open_lab
from shaken.toolkit.repository import RepositoryServer

SECSIPIDX = shutil.which("secsipidx")
ORIG, DEST, UNKNOWN = "12025550100", "12025550101", "13035550100"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Running:
    lab: Lab
    server: RepositoryServer
    config: dict[str, Any]
    now: datetime

    def path(self, relative: str) -> Path:
        return self.lab.config.parent / relative

    def policy(self) -> X5uPolicy:
        verification = self.config["verification"]
        return X5uPolicy(
            allowed_hosts=tuple(verification["x5u_allowed_hosts"]),
            allowed_ports=tuple(verification["x5u_allowed_ports"]),
        )

    def profile(self) -> VerificationProfile:
        """The SHAKEN profile with the configuration's x5u relaxations (the lab host, its port)."""
        return replace(SHAKEN, x5u_policy=self.policy())

    def fetch(self, url: str) -> bytes:
        tls_ca = self.path(self.config["verification"]["tls_ca_file"])
        return fetch_certificate(url, policy=self.policy(), verify_tls=str(tls_ca))


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A lab whose repository listens on the port its configuration names."""
    now = datetime.now(UTC).replace(microsecond=0)  # secsipidx checks with the real clock
    for attempt in range(5):
        directory = tmp_path_factory.mktemp(f"lab{attempt}")
        lab = init_lab(directory, now=now, settings=LabSettings(repository_port=_free_port()))
        try:
            server = lab.serve().start()
        except OSError as exc:  # the probed port was taken in between: try another
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        config = tomllib.loads(lab.config.read_text(encoding="utf-8"))
        try:
            yield Running(lab=lab, server=server, config=config, now=now)
        finally:
            server.close()
        return
    pytest.fail("no free loopback port for the lab repository")


def _verify_with_crl(
    running: Running, value: str, chain: bytes, crl: bytes, *, orig: str = ORIG
) -> VerificationResult:
    """The pipeline with the SHAKEN CRL and its STI-PA signer (the recipe API takes no signer)."""
    verification = running.config["verification"]
    context = SipContext(identity=(value,), from_header=f"<tel:{orig}>", to=f"<tel:{DEST}>")
    plan = prepare(context, now=running.now, profile=running.profile())
    assert not isinstance(plan, VerificationResult), plan
    anchors = TrustAnchors.from_pem(running.path(verification["trust_anchors"][0]).read_bytes())
    signer = load_certificates(running.path(verification["sti_pa_certificate"]).read_bytes())
    return complete(
        plan,
        dict.fromkeys(plan.urls, chain),
        anchors,
        now=running.now,
        crls=[crl],
        crl_signers=signer,
    )


def _secsipidx_check(
    tmp_path: Path, value: str, chain: bytes, *ca_args: str
) -> subprocess.CompletedProcess[str]:
    """``secsipidx -check`` as tests/interop/test_secsipidx.py drives it (1.2.0)."""
    assert SECSIPIDX is not None
    identity, pubkey = tmp_path / "identity.txt", tmp_path / "fetched.pem"
    identity.write_text(value)
    pubkey.write_bytes(chain)
    args = ["-check", "-fidentity", str(identity), "-fpubkey", str(pubkey), *ca_args]
    return subprocess.run(
        [SECSIPIDX, *args, "-cert-verify", "12", "-expire", "300"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _sign(running: Running, orig: str) -> tuple[str, str]:
    """Sign as the configuration says: a number of the TN range at its level, others at C."""
    attestation = running.config["attestation"]
    tn_range = running.config["tn_range"]["lab"]
    in_range = int(tn_range["start"]) <= int(orig) < int(tn_range["start"]) + tn_range["count"]
    attest = tn_range["attest"] if in_range else attestation["unknown_tn_attest"]
    value = shaken.sign_identity(
        key=running.path(attestation["private_key"]).read_bytes(),
        x5u=attestation["x5u"],
        orig=orig,
        dest=DEST,
        attest=attest,
        now=running.now,
    )
    return value, attest


@pytest.mark.real_clock(
    "secsipidx checks our chain at the kernel's time, which faketime does not shift"
)
def test_end_to_end_sign_fetch_verify_revoke(running: Running, tmp_path: Path) -> None:
    lab = running.lab
    x5u = running.config["attestation"]["x5u"]
    assert x5u == lab.x5u == f"https://127.0.0.1:{lab.settings.repository_port}/sp.pem"
    value, attest = _sign(running, ORIG)
    assert attest == "A"
    fetched = running.fetch(x5u)
    assert fetched == lab.sp_chain.read_bytes()
    root_pem = running.path(running.config["verification"]["trust_anchors"][0]).read_bytes()
    result = shaken.verify_identity(
        value,
        orig=ORIG,
        dest=DEST,
        certificate=fetched,
        trust_anchors=root_pem,
        now=running.now,
        profile=running.profile(),
    )
    assert result.verified, result.detail
    assert result.attest == "A" and result.spc == lab.settings.spc

    unknown, level = _sign(running, UNKNOWN)
    assert level == "C"
    other = shaken.verify_identity(
        unknown,
        orig=UNKNOWN,
        dest=DEST,
        certificate=fetched,
        trust_anchors=root_pem,
        now=running.now,
        profile=running.profile(),
    )
    assert other.verified and other.attest == "C"

    if SECSIPIDX is not None:
        intermediate = lab.ca_dir / "intermediate.pem"
        proc = _secsipidx_check(
            tmp_path, value, fetched, "-ca-file", str(lab.root), "-ca-inter", str(intermediate)
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.split() == ["ok"], proc.stdout + proc.stderr

    # The CRL URL comes from the certificate itself and is served by the lab repository.
    leaf = load_certificates(fetched)[0]
    (crl_url,) = crl_distribution_points(leaf)
    assert crl_url == lab.crl_url
    crl_before = running.fetch(crl_url)
    assert _verify_with_crl(running, value, fetched, crl_before).verified

    TestCa.open(lab.ca_dir).revoke(leaf.serial_number, now=running.now, reason="keyCompromise")
    crl_after = running.fetch(crl_url)
    assert crl_after != crl_before  # the repository noticed the new CRL without a restart
    refused = _verify_with_crl(running, value, fetched, crl_after)
    assert not refused.verified
    assert refused.reason is Reason.CERT_REVOKED
    assert refused.sip_code == 437


@pytest.mark.skipif(SECSIPIDX is None, reason="secsipidx is not installed")
def test_secsipidx_refuses_a_foreign_root(running: Running, tmp_path: Path) -> None:
    """The check above can fail: another lab's root does not anchor this lab's chain."""
    value, _ = _sign(running, ORIG)
    stranger = init_lab(tmp_path / "other", now=running.now)
    chain = running.lab.sp_chain.read_bytes()
    proc = _secsipidx_check(tmp_path, value, chain, "-ca-file", str(stranger.root))
    assert proc.returncode != 0
    assert "not-ok" in proc.stdout


def test_layout_modes_and_test_markings(running: Running) -> None:
    lab = running.lab
    for relative in ("sp/sp.key", "tls/ca.key", "tls/server.key", "secrets/rest-api-key"):
        assert stat.S_IMODE((lab.directory / relative).stat().st_mode) == 0o600, relative
    for relative in ("ca/root.pem", "sp/sp.pem", "repo/sp.pem", "repo/crl.der", "tls/ca.pem"):
        assert (lab.directory / relative).is_file(), relative
    assert "TEST MATERIAL" in (lab.directory / "README.txt").read_text()
    assert "TEST MATERIAL ONLY" in lab.config.read_text().splitlines()[2]
    chain = load_certificates(lab.sp_chain.read_bytes())
    assert profile_findings(chain[0], role=CertRole.LEAF, issuer=chain[1]) == ()
    assert all("TEST" in c.issuer.rfc4514_string() for c in chain)
    assert "TEST" in chain[0].subject.rfc4514_string()  # O says "(TEST ONLY)"
    tls = load_certificates((lab.directory / "tls" / "server.pem").read_bytes())[0]
    assert "TEST" in tls.subject.rfc4514_string() + tls.issuer.rfc4514_string()
    assert open_lab(lab.directory).settings == lab.settings


def test_configuration(running: Running) -> None:
    config, lab = running.config, running.lab
    assert set(config) == {
        "attestation",
        "tn_range",
        "brand",
        "tn",
        "verification",
        "profile",
        "api_key",
        "server",
        "repository",
        "sti_pa",
        "acme",
        "lifecycle",
    }
    assert config["brand"]["acme"]["nam"] == "Acme Bank"
    assert running.path(config["brand"]["acme"]["icn_file"]).read_bytes().startswith(b"\x89PNG")
    assert config["tn"][lab.settings.brand_tn] == {"brand": "acme"}
    attestation = config["attestation"]
    assert running.path(attestation["private_key"]) == lab.sp_key
    assert (attestation["attest"], attestation["unknown_tn_attest"]) == ("A", "C")
    assert config["tn_range"]["lab"] == {"start": ORIG, "count": 100, "attest": "A"}
    verification = config["verification"]
    assert verification["x5u_allowed_hosts"] == ["127.0.0.1"]
    assert lab.settings.repository_port in verification["x5u_allowed_ports"]
    for key in ("sti_pa_certificate", "tls_ca_file"):
        assert running.path(verification[key]).is_file(), key
    for key in ("trust_anchors", "crl_files"):
        assert all(running.path(item).is_file() for item in verification[key]), key
    assert config["server"] == {
        "sip_sign": ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"],
        "sip_verify": ["udp:127.0.0.1:5062", "tcp:127.0.0.1:5062"],
        "rest": ["http:127.0.0.1:8080"],
        "udp_max_age_ms": 1000,
    }
    port = lab.settings.repository_port
    assert config["repository"]["listen"] == f"https:127.0.0.1:{port}"
    assert running.path(config["repository"]["directory"]) == lab.repo_dir
    api_key = config["api_key"]["lab"]
    assert set(api_key["profiles"]) <= set(config["profile"])
    secret = (lab.directory / "secrets" / "rest-api-key").read_text().strip()
    assert api_key["sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in lab.config.read_text()


def test_the_strict_loader_accepts_the_configuration(running: Running) -> None:
    """When the configuration loader is present, the lab's file passes it and its checks."""
    loader = pytest.importorskip("shaken.config.loader")
    settings = loader.load_config(running.lab.config)
    assert settings.attestation["x5u"] == running.lab.x5u
    assert settings.tn_ranges["lab"]["count"] == 100
    assert main(["config", "check", str(running.lab.config)]) == 0


def test_every_configuration_key_is_explained(running: Running) -> None:
    """Each key line carries a comment, or sits in a table whose comment explains it."""
    undocumented = []
    table_comment = False
    for line in running.lab.config.read_text().splitlines():
        if line.startswith("["):
            table_comment = False
        elif line.startswith("#"):
            table_comment = True
        elif "=" in line and "#" not in line and not table_comment:
            undocumented.append(line)
    assert undocumented == []


def test_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        LabSettings(spc="12a4")
    with pytest.raises(ConfigurationError):
        LabSettings(rest_port=70000)
    with pytest.raises(ConfigurationError):
        LabSettings(tn_start="12025550100", tn_count=100_000_000_000)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(ConfigurationError, match="not empty"):
        init_lab(tmp_path / "busy", now=datetime.now(UTC))
    with pytest.raises(ConfigurationError, match="not a lab"):
        open_lab(tmp_path)


def test_issue9_item7_the_lab_carries_pass_stop_alert(running: Running) -> None:
    """The actions of ``make run`` are the lab's own: nothing appends them."""
    on = running.config["verification"]["on"]
    assert on == {
        "verified": {"action": "alert", "display_prefix": "(Verified) "},
        "missing": {"action": "alert", "display_prefix": "[No ID] "},
        "failed": {"action": "reject"},
    }


@pytest.fixture
def lab_up(tmp_path: Path) -> Iterator[Path]:
    """``shaken lab up`` of a fresh lab on free ports, in a child process, until the test ends."""
    settings = LabSettings(
        repository_port=free_port(),
        sip_signing_port=free_port(),
        sip_verification_port=free_port(),
        rest_port=free_port(),
    )
    lab = init_lab(tmp_path / "lab", now=datetime.now(UTC), settings=settings)
    command = [sys.executable, "-m", "shaken.adapters.cli", "lab", "up", str(lab.directory)]
    with (tmp_path / "lab-up.log").open("w") as log:
        process = subprocess.Popen(
            [*command, "--quiet"], stdout=subprocess.PIPE, stderr=log, text=True
        )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        assert not any("(not started" in line for line in lines), lines
        assert lines and lines[-1].startswith("Ctrl-C"), (tmp_path / "lab-up.log").read_text()
        yield lab.directory
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_issue9_item7_lab_up_rejects_a_tampered_call_and_alerts_a_missing_identity(
    lab_up: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``shaken lab call`` against the real servers of ``shaken lab up``, as the tour does."""
    directory = str(lab_up)
    assert main(["lab", "call", directory]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sign    302 Moved Temporarily, attestation A\n")
    assert '"(Verified) Alice" <sip:12025550100;verstat=TN-Validation-Passed@127.0.0.1>' in out
    assert "X-Shaken-Reason: verified" in out

    assert main(["lab", "call", directory, "--spoof", "12025550142", "--name", "Bank"]) == 1
    out = capsys.readouterr().out
    assert "verify  438 Invalid Identity Header" in out
    assert 'bad_signature;cause=438;text="Invalid Identity Header"' in out

    assert main(["lab", "call", directory, "--no-identity"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("verify  302 Moved Temporarily\n")
    assert '"[No ID] Alice" <sip:12025550100;verstat=No-TN-Validation@127.0.0.1>' in out


def test_lab_call_says_when_the_lab_is_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = LabSettings(sip_signing_port=free_port(), sip_verification_port=free_port())
    lab = init_lab(tmp_path / "lab", now=datetime.now(UTC), settings=settings)
    assert main(["lab", "call", str(lab.directory), "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert (
        f"no answer from the lab's sip_sign listener 127.0.0.1:{settings.sip_signing_port}" in err
    )
    assert "shaken lab up" in err
