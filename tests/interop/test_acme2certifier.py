"""Interop: our ACME client against acme2certifier, an ACME server nobody here wrote.

acme2certifier (PyPI) runs with ``[Order] tnauthlist_support`` and its openssl CA handler
signing with a test STI-CA's intermediate, over HTTPS on loopback, in its own virtual
environment (``.ci/run`` makes ``.venv-a2c``; ``SHAKEN_ACME2CERTIFIER_PYTHON`` names another
interpreter). Its tkauth-01 validator does not check the SPC token (it accepts any token once
``ACME2CERTIFIER_I_KNOW_THE_RISK`` is set), so the token here is a real one from our test
STI-PA, and strict validation is the test STI-CA's job (``tests/adapters/test_acquisition``).

What it proves: account, nonces, newOrder with a TNAuthList identifier, the tkauth-01
challenge and its ``atc`` answer, finalize with our CSR, polling and the chain download all
work with an independent server. And what our validation is for: acme2certifier's openssl
handler copies no TNAuthList into the certificate it issues, and our client refuses that
certificate with the operator's sentence instead of signing calls no verifier would accept.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from shaken.adapters.acme import AcmeClient
from shaken.adapters.stipa import StiPaClient
from shaken.core.certs import load_certificates, tnauthlist_of
from shaken.core.chain import TrustAnchors
from shaken.core.errors import AcquisitionError
from shaken.core.jws import generate_private_key, same_public_key
from shaken.services.lifecycle import validate_issued
from shaken.toolkit.x509build import build_csr
from tests.support.sti import SPC, Sti, running_sti

ROOT = Path(__file__).resolve().parents[2]


def _interpreter() -> str | None:
    named = os.environ.get("SHAKEN_ACME2CERTIFIER_PYTHON")
    candidates = [named] if named else [str(ROOT / ".venv-a2c" / "bin" / "python")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            probe = subprocess.run(
                [candidate, "-c", "import acme2certifier.acme_srv.order"],
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                return candidate
    return None


PYTHON = _interpreter()
if PYTHON is None:
    pytest.skip(
        "acme2certifier is not installed (.ci/run makes .venv-a2c; or set "
        "SHAKEN_ACME2CERTIFIER_PYTHON to an interpreter that has it)",
        allow_module_level=True,
    )

RUNNER = """\
import os, ssl, sys
from wsgiref.simple_server import make_server

os.environ["ACME_SRV_CONFIGFILE"] = sys.argv[1]
from acme2certifier.share import acme2certifier_wsgi as a2c


def application(environ, start_response):
    environ["HTTPS"] = "on"
    environ["wsgi.url_scheme"] = "https"
    return a2c.application(environ, start_response)


server = make_server("127.0.0.1", 0, application, handler_class=a2c.get_handler_cls())
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2], sys.argv[3])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_port, flush=True)
server.serve_forever()
"""


@pytest.fixture(scope="module")
def a2c(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sti, str]]:
    work = tmp_path_factory.mktemp("a2c")
    with running_sti(work / "sti") as sti:
        ca = sti.ca.directory
        (work / "certs").mkdir()
        config = work / "acme_srv.cfg"
        config.write_text(
            textwrap.dedent(
                f"""\
                [DEFAULT]
                debug: False

                [Nonce]
                nonce_check_disable: False

                [CAhandler]
                handler_module: acme2certifier.cahandlers.openssl_ca_handler
                issuing_ca_key: {ca / "intermediate.key"}
                issuing_ca_cert: {ca / "intermediate.pem"}
                issuing_ca_crl: {work / "a2c-crl.pem"}
                ca_cert_chain_list: ["{ca / "root.pem"}"]
                cert_save_path: {work / "certs"}
                cert_validity_days: 30

                [DBhandler]
                handler_module: acme2certifier.dbhandlers.wsgi_handler
                dbfile: {work / "a2c.db"}

                [Order]
                tnauthlist_support: True

                [Challenge]
                challenge_validation_timeout: 5
                """
            )
        )
        (work / "runner.py").write_text(RUNNER)
        tls = sti.tls_ca.parent
        env = {**os.environ, "ACME2CERTIFIER_I_KNOW_THE_RISK": "1"}
        log = (work / "a2c.log").open("w")
        assert PYTHON is not None
        process = subprocess.Popen(
            [
                PYTHON,
                str(work / "runner.py"),
                str(config),
                str(tls / "server.pem"),
                str(tls / "server.key"),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=work,
            env=env,
        )
        assert process.stdout is not None
        port = process.stdout.readline().strip()
        if not port.isdigit():
            process.kill()
            log.close()
            pytest.fail(f"acme2certifier did not start: {(work / 'a2c.log').read_text()[-2000:]}")
        try:
            yield sti, f"https://127.0.0.1:{port}/directory"
        finally:
            process.terminate()
            process.wait(timeout=20)
            log.close()


def _obtain(sti: Sti, directory: str, **settings: object) -> tuple[bytes, object]:
    async def run() -> tuple[bytes, object]:
        account, key = generate_private_key(), generate_private_key()
        async with StiPaClient(sti.sti_pa_settings(), sti.credentials()) as pa:
            await pa.login()

            async def tokens(tkvalue: str, fingerprint: str) -> str:
                now = datetime.now(UTC)
                answer = await pa.spc_token(
                    tnauthlist=sti.tnauthlist, tkvalue=tkvalue, fingerprint=fingerprint, now=now
                )
                return answer.token

            csr = build_csr(key, spc=SPC, org="Example SP (TEST ONLY)")
            acme = sti.acme_settings(
                directory=directory,
                poll_interval=0.5,
                contact=("mailto:noc@example.com",),  # acme2certifier requires one
                **settings,
            )
            async with AcmeClient(acme, account) as client:
                pem = await client.obtain(sti.tnauthlist, csr.public_bytes(Encoding.DER), tokens)
        return pem, key

    return asyncio.run(run())


def test_our_client_obtains_a_certificate_from_acme2certifier(a2c: tuple[Sti, str]) -> None:
    sti, directory = a2c
    # acme2certifier compares the identifier with the padded standard base64 of the CSR's
    # extension, as iconectiv and Peeringhub encode it: the per-CA setting for it.
    pem, key = _obtain(sti, directory, tnauthlist_encoding="base64")
    chain = load_certificates(pem)
    leaf = chain[0]
    assert same_public_key(leaf.public_key(), key.public_key())  # type: ignore[arg-type, attr-defined]
    assert leaf.issuer == sti.ca.intermediate.subject
    # acme2certifier's openssl handler drops the TNAuthList: our validation says so.
    assert tnauthlist_of(leaf) is None
    with pytest.raises(AcquisitionError) as caught:
        validate_issued(
            pem,
            key,  # type: ignore[arg-type]
            tnauthlist=sti.tnauthlist,
            anchors=TrustAnchors(certificates=(sti.ca.root,)),
            now=datetime.now(UTC),
        )
    assert str(caught.value) == "the CA's certificate has TNAuthList SPC none, we asked for 1234"


def test_acme2certifier_needs_the_base64_identifier(a2c: tuple[Sti, str]) -> None:
    sti, directory = a2c
    with pytest.raises(AcquisitionError) as caught:
        _obtain(sti, directory)  # RFC 9448's base64url
    assert str(caught.value).startswith("the CA refused the CSR: ACME finalize (https://127.0.0.1:")
    assert str(caught.value).endswith("urn:ietf:params:acme:error:badCSR: CSR validation failed")
