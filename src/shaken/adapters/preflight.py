"""What ``shaken config check`` proves beyond the loader, and ``shaken serve`` before it binds.

The loader checks the file's text; this opens what the file names: private keys must load as
P-256 keys and not be readable by group or others, trust anchors and CRLs must parse. ``serve``
runs the same function as ``config check`` before it binds a socket, so a configuration that
``config check`` refuses never starts.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from shaken.config import ConfigError, Problem, Settings, load_config
from shaken.core.certs import load_certificates
from shaken.core.errors import CertificateError, ConfigurationError
from shaken.core.jws import load_private_key

__all__ = ["check_files", "load_checked"]


def load_checked(path: str | Path) -> Settings:
    """The configuration file, proven as ``shaken config check`` proves it.

    :raises ConfigError: the text or a file it names has problems, each with its line.
    """
    settings = load_config(path)
    problems = check_files(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def check_files(settings: Settings) -> list[Problem]:
    """Every problem with the files ``settings`` name, each with its file, key and line."""
    problems: list[Problem] = []

    def add(path: tuple[str, ...], message: str) -> None:
        problems.append(Problem(settings.source, settings.line_of(*path), ".".join(path), message))

    def check_key(path: tuple[str, ...], file: str) -> None:
        try:
            mode = Path(file).stat().st_mode
            load_private_key(Path(file).read_bytes())
        except OSError as exc:
            add(path, f"cannot read {file}: {exc.strerror}")
            return
        except ConfigurationError as exc:
            add(path, f"{file}: {exc}")
            return
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            add(path, f"{file} is readable by group or others; chmod 600 it")

    def check_certs(path: tuple[str, ...], file: str) -> None:
        target = Path(file)
        files = sorted(target.glob("*.pem")) if target.is_dir() else [target]
        if target.is_dir() and not files:
            add(path, f"{file} holds no .pem files")
        for one in files:
            try:
                load_certificates(one.read_bytes())
            except OSError as exc:
                add(path, f"cannot read {one}: {exc.strerror}")
            except CertificateError as exc:
                add(path, f"{one}: {exc}")

    sections: list[tuple[tuple[str, ...], Any]] = [(("attestation",), settings.attestation)]
    sections += [(("profile", n), v) for n, v in settings.profiles.items()]
    sections += [(("tn", n), v) for n, v in settings.tns.items()]
    sections += [(("tn_range", n), v) for n, v in settings.tn_ranges.items()]
    for path, values in sections:
        if "private_key" in values:
            check_key((*path, "private_key"), values["private_key"])
    vsections: list[tuple[tuple[str, ...], Any]] = [(("verification",), settings.verification)]
    vsections += [(("profile", n), v) for n, v in settings.profiles.items()]
    for path, values in vsections:
        for anchor in values.get("trust_anchors", []):
            check_certs((*path, "trust_anchors"), anchor)
        for key in ("sti_pa_certificate", "tls_ca_file"):
            if key in values:
                check_certs((*path, key), values[key])
        for crl in values.get("crl_files", []):
            if not Path(crl).is_file():
                add((*path, "crl_files"), f"cannot read {crl}")
    _lifecycle_problems(settings, add, check_key, check_certs)
    return problems


def _lifecycle_problems(settings: Settings, add: Any, check_key: Any, check_certs: Any) -> None:
    """The files of ``[sti_pa]``, ``[acme]`` and ``[lifecycle]`` (reported through ``add``)."""
    # Imported here: the STI-PA client pulls in httpx, which config check otherwise never needs.
    from shaken.adapters.stipa import StiPaCredentials  # noqa: PLC0415
    from shaken.adapters.store.generations import read_manifest  # noqa: PLC0415

    sti_pa, acme, lifecycle = settings.sti_pa, settings.acme, settings.lifecycle
    if sti_pa:
        try:
            StiPaCredentials.load(sti_pa.get("credentials_file"))
        except ConfigurationError as exc:
            add(("sti_pa", "credentials_file"), str(exc))
        for key in ("root_certificate", "tls_ca_file"):
            if key in sti_pa:
                check_certs(("sti_pa", key), sti_pa[key])
    if acme:
        if Path(acme["account_key"]).exists():
            check_key(("acme", "account_key"), acme["account_key"])
        elif not Path(acme["account_key"]).parent.is_dir():
            add(("acme", "account_key"), f"{Path(acme['account_key']).parent} does not exist")
        if "tls_ca_file" in acme:
            check_certs(("acme", "tls_ca_file"), acme["tls_ca_file"])
    if lifecycle:
        directory = Path(lifecycle["directory"])
        try:
            manifest = read_manifest(directory)
        except ConfigurationError as exc:
            add(("lifecycle", "directory"), str(exc))
        else:
            if manifest is not None:
                check_key(("lifecycle", "directory"), manifest.key_file)
        publish_dir = lifecycle.get("publish_dir")
        if publish_dir is not None and not Path(publish_dir).is_dir():
            add(("lifecycle", "publish_dir"), f"{publish_dir} is not a directory")
