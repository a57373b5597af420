"""The composition root over a real lab directory and its configuration."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from shaken.adapters.wiring import build_runtime
from shaken.config import load_config
from shaken.core.context import SipContext
from shaken.core.errors import ConfigurationError
from shaken.toolkit.lab import init_lab


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("lab")
    init_lab(directory, now=datetime.now(UTC))
    return directory


@pytest.mark.anyio
async def test_lab_configuration_signs_and_verifies(lab_dir: Path) -> None:
    runtime = build_runtime(load_config(lab_dir / "shaken.toml"))
    try:
        lab = runtime.profiles["lab"]
        assert lab.signs and lab.verifies
        assert runtime.profile_for_source("127.0.0.1") is lab
        assert runtime.profile_for_source("192.0.2.1") is None
        context = SipContext(
            from_header="<sip:+12025550123@lab.test;user=phone>;tag=x",
            to="<sip:+13035550000@lab.test;user=phone>",
        )
        assert lab.signer is not None and lab.verifier is not None
        signed = lab.signer.sign_request(context)
        assert signed.attest == "A"
        chain = (lab_dir / "sp" / "sp.pem").read_bytes()
        runtime.cache.import_chain(signed.x5u, chain)
        result = await lab.verifier.verify(
            SipContext(
                identity=(signed.identity,),
                from_header=context.from_header,
                to=context.to,
                date=signed.date,
            )
        )
        assert result.verified, result.detail
        assert result.attest == "A" and result.spc == "1234"
        unknown = lab.signer.sign(orig="14155550100", dest="13035550000")
        assert unknown.attest == "C"
    finally:
        await runtime.aclose()


def test_missing_key_file_is_named(lab_dir: Path, tmp_path: Path) -> None:
    text = (lab_dir / "shaken.toml").read_text().replace('"sp/sp.key"', '"sp/nope.key"')
    config = tmp_path / "shaken.toml"
    text = text.replace('"repo/', f'"{lab_dir}/repo/')
    config.write_text(text.replace('"ca/', f'"{lab_dir}/ca/').replace('"tls/', f'"{lab_dir}/tls/'))
    with pytest.raises(ConfigurationError, match=r"nope\.key"):
        build_runtime(load_config(config))
