"""A test STI-PA and an ACME STI-CA on loopback HTTPS, for the acquisition tests.

Everything real: a :class:`TestCa`, a :class:`TestStiPa` with one account, a lab TLS CA and
server certificate, both servers on free ports. ``client_settings`` give the clients' view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shaken.adapters.acme import AcmeSettings
from shaken.adapters.stipa import StiPaCredentials, StiPaSettings
from shaken.core.certs import Spc, TNAuthList
from shaken.core.jws import generate_private_key, private_key_pem
from shaken.toolkit.acme_ca import AcmeStiCa
from shaken.toolkit.ca import CaSettings, TestCa
from shaken.toolkit.sti_pa import StiPaServer, TestStiPa
from shaken.toolkit.x509build import build_tls_ca, build_tls_server_certificate, certificates_pem

SPC = "1234"
USER = "alice"


@dataclass
class Sti:
    directory: Path
    ca: TestCa
    pa: TestStiPa
    pa_server: StiPaServer
    acme: AcmeStiCa
    password: str
    tls_ca: Path

    @property
    def tnauthlist(self) -> TNAuthList:
        return TNAuthList(entries=(Spc(code=SPC),))

    def sti_pa_settings(self, **changes: Any) -> StiPaSettings:
        values: dict[str, Any] = {
            "url": self.pa_server.base_url,
            "account_id": SPC,
            "tls_ca_file": str(self.tls_ca),
            "roots": (self.pa.root,),
        }
        values.update(changes)
        return StiPaSettings(**values)

    def credentials(self, password: str | None = None) -> StiPaCredentials:
        return StiPaCredentials(USER, password if password is not None else self.password)

    def acme_settings(self, **changes: Any) -> AcmeSettings:
        values: dict[str, Any] = {
            "directory": self.acme.directory_url,
            "tls_ca_file": str(self.tls_ca),
            "poll_interval": 0.0,
        }
        values.update(changes)
        return AcmeSettings(**values)


def write_tls(directory: Path, now: datetime) -> tuple[Path, Path, Path]:
    """A TLS CA and a loopback server certificate: (ca.pem, server.pem, server.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, server_key = generate_private_key(), generate_private_key()
    ca = build_tls_ca(
        ca_key,
        cn="TEST TLS CA",
        org="Example (TEST ONLY)",
        not_before=now - timedelta(hours=1),
        not_after=now + timedelta(days=3650),
    )
    server = build_tls_server_certificate(
        server_key.public_key(),
        hosts=["127.0.0.1", "localhost"],
        org="Example (TEST ONLY)",
        ca=ca,
        ca_key=ca_key,
        not_before=now - timedelta(hours=1),
        not_after=now + timedelta(days=3650),
    )
    (directory / "ca.pem").write_bytes(certificates_pem(ca))
    (directory / "server.pem").write_bytes(certificates_pem(server))
    (directory / "server.key").write_bytes(private_key_pem(server_key))
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


@contextmanager
def running_sti(
    directory: Path,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    pa_options: dict[str, Any] | None = None,
    acme_options: dict[str, Any] | None = None,
    ca_settings: CaSettings | None = None,
    tls: tuple[Path, Path, Path] | None = None,
) -> Iterator[Sti]:
    start = now()
    ca = TestCa.init(directory / "ca", now=start, settings=ca_settings or CaSettings())
    pa = TestStiPa.init(directory / "sti-pa", now=start)
    password = pa.add_account(USER, account_id=SPC, spcs=[SPC])
    tls_ca, cert, key = tls or write_tls(directory / "tls", start)
    pa_server = StiPaServer(
        pa, now=now, tls_cert=cert, tls_key=key, ca_roots=[ca.root], **(pa_options or {})
    ).start()
    acme = AcmeStiCa(
        ca,
        now=now,
        sti_pa_roots=[pa.root],
        token_authority=pa_server.base_url,
        tls_ca_file=tls_ca,
        tls_cert=cert,
        tls_key=key,
        **(acme_options or {}),
    ).start()
    try:
        yield Sti(directory, ca, pa, pa_server, acme, password, tls_ca)
    finally:
        acme.close()
        pa_server.close()


def write_config(
    sti: Sti,
    directory: Path,
    *,
    repository_url: str,
    repo_dir: Path,
    extra: dict[str, str] | None = None,
) -> Path:
    """A shaken.toml whose [sti_pa], [acme] and [lifecycle] use ``sti`` and publish into
    ``repo_dir`` (served at ``repository_url``). ``extra`` adds keys per section."""
    (directory / "secrets").mkdir(parents=True, exist_ok=True)
    credentials = directory / "secrets" / "sti-pa.toml"
    credentials.write_text(f'user_id = "{USER}"\npassword = "{sti.password}"\n')
    credentials.chmod(0o600)
    port = repository_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0]
    sections = {
        "verification": [
            f'trust_anchors = ["{sti.ca.directory / "root.pem"}"]',
            f'sti_pa_certificate = "{sti.ca.directory / "sti-pa.pem"}"',
            f'tls_ca_file = "{sti.tls_ca}"',
            'x5u_allowed_hosts = ["127.0.0.1"]',
            f"x5u_allowed_ports = [{port}]",
        ],
        "sti_pa": [
            f'url = "{sti.pa_server.base_url}"',
            f'account_id = "{SPC}"',
            f'credentials_file = "{credentials}"',
            f'root_certificate = "{sti.pa.directory / "root.pem"}"',
            f'tls_ca_file = "{sti.tls_ca}"',
        ],
        "acme": [
            f'directory = "{sti.acme.directory_url}"',
            'account_key = "acme/account.key"',
            f'spc = "{SPC}"',
            'org = "Example SP (TEST ONLY)"',
            f'tls_ca_file = "{sti.tls_ca}"',
            "poll_timeout = 30",
        ],
        "lifecycle": [
            'directory = "lifecycle"',
            f'publish_dir = "{repo_dir}"',
            f'x5u_base = "{repository_url}"',
            "retire_after = 0",
            "x5u_wait = 20",
        ],
    }
    for section, lines in (extra or {}).items():
        sections.setdefault(section, []).extend(lines.splitlines())
    (directory / "acme").mkdir(exist_ok=True)
    text = "\n".join(f"[{name}]\n" + "\n".join(lines) + "\n" for name, lines in sections.items())
    path = directory / "shaken.toml"
    path.write_text(text)
    return path
