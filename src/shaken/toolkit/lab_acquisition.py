"""The lab's certificate acquisition: its test STI-PA and ACME STI-CA, and their configuration.

TEST MATERIAL. ``shaken lab init`` adds to a lab::

    DIR/sti-pa/...               a test STI-PA (shaken.toolkit.sti_pa): root, token signer,
                                 one account (user "lab", account id = the SPC)
    DIR/secrets/sti-pa.toml      that account's user id and password (0600)
    DIR/acme/                    where the ACME account key is created on first use

and the ``[sti_pa]``, ``[acme]`` and ``[lifecycle]`` sections of ``shaken.toml``, which point at
the servers ``shaken lab up`` runs: the STI-PA on ``sti_pa_port`` and the ACME STI-CA (issuing
from the lab's CA in ``DIR/ca``) on ``acme_port``, both over HTTPS with the lab's TLS
certificate. ``shaken cert acquire --config DIR/shaken.toml`` then obtains the SP certificate
the way a provider obtains a real one; until it has, the lab signs with ``sp/sp.key``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from shaken.files import create_private
from shaken.toolkit.acme_ca import AcmeStiCa
from shaken.toolkit.ca import TestCa
from shaken.toolkit.httpjson import JsonServer
from shaken.toolkit.sti_pa import StiPaServer, TestStiPa

if TYPE_CHECKING:
    from shaken.toolkit.lab import Lab

__all__ = ["init_acquisition", "render_acquisition_config", "start_acquisition"]

LAB_USER = "lab"


def _sti_pa_dir(lab: Lab) -> Path:
    return lab.directory / "sti-pa"


def init_acquisition(lab: Lab, *, now: datetime) -> None:
    """Make the lab's test STI-PA, its account and the credentials file."""
    pa = TestStiPa.init(_sti_pa_dir(lab), now=now)
    password = pa.add_account(LAB_USER, account_id=lab.settings.spc, spcs=[lab.settings.spc])
    text = f"user_id = {json.dumps(LAB_USER)}\npassword = {json.dumps(password)}\n"
    create_private(lab.directory / "secrets" / "sti-pa.toml", text.encode())
    (lab.directory / "acme").mkdir(mode=0o700, exist_ok=True)


def _base(lab: Lab, port: int) -> str:
    return f"https://{lab.settings.url_host}:{port}"


def render_acquisition_config(lab: Lab) -> str:
    """The ``[sti_pa]``, ``[acme]`` and ``[lifecycle]`` sections of the lab's ``shaken.toml``."""
    s = lab.settings
    q = json.dumps
    return f"""
[sti_pa]
# The STI-PA that issues our SPC token (LAB: the test STI-PA `shaken lab up` runs; the real
# one is https://authenticate-api.iconectiv.com, staging authenticate-api-stg).
url = {q(_base(lab, s.sti_pa_port))}
account_id = {q(s.spc)}  # the STI-PA account id in /api/v1/account/{{id}}/token
credentials_file = "secrets/sti-pa.toml"  # user_id and password, mode 0600
root_certificate = "sti-pa/root.pem"  # check the SPC token's signer against this root
tls_ca_file = "tls/ca.pem"  # LAB: the CA of the STI-PA's TLS certificate

[acme]
# The STI-CA we obtain the certificate from (LAB: the test ACME STI-CA `shaken lab up` runs).
directory = {q(_base(lab, s.acme_port) + "/acme/directory")}
account_key = "acme/account.key"  # created once (P-256, 0600)
spc = {q(s.spc)}  # the certificate's TNAuthList
org = {q(s.org)}  # its subject O
tls_ca_file = "tls/ca.pem"  # LAB: the CA of the ACME server's TLS certificate
# Per-CA settings (RFC behaviour by default): tnauthlist_encoding, fingerprint,
# challenge_key, post_as_get, jwk_kid, unique_cn; see the README.

[lifecycle]
# Certificates obtained with `shaken cert acquire` and renewed by `shaken serve`.
directory = "lifecycle"  # generations (archive/), current.json, state.json
publish_dir = "repo"  # new chains go where the repository serves them
x5u_base = {q(s.repository_url)}  # x5u = this + the chain's file name
retire_after = 300  # seconds the previous chain stays published after a switch
"""


def start_acquisition(
    lab: Lab, *, now: Callable[[], datetime], log: TextIO | None = None
) -> list[JsonServer]:
    """Start the lab's test STI-PA and ACME STI-CA (threads); close each when done.

    A lab made before these existed (no ``sti-pa`` directory) gets none.

    :raises OSError: a port cannot be bound.
    """
    directory = _sti_pa_dir(lab)
    if not directory.is_dir():
        return []
    s = lab.settings
    pa = TestStiPa(directory)
    ca = TestCa.open(lab.ca_dir)
    pa_server = StiPaServer(
        pa,
        now=now,
        host=s.host,
        port=s.sti_pa_port,
        ca_roots=[ca.root],
        crl_file=lab.ca_dir / "crl.der",
        log=log,
        tls_cert=lab.tls_cert,
        tls_key=lab.tls_key,
    )
    try:
        acme = AcmeStiCa(
            ca,
            now=now,
            sti_pa_roots=[pa.root],
            token_authority=pa_server.base_url,
            tls_ca_file=lab.tls_ca,
            host=s.host,
            port=s.acme_port,
            log=log,
            tls_cert=lab.tls_cert,
            tls_key=lab.tls_key,
        )
    except BaseException:
        pa_server.close()
        raise
    return [pa_server.start(), acme.start()]
