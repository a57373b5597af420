"""``make run``: a lab with its real servers and five SIP calls, verdicts as the seeds say."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

from shaken.adapters.tour import run_tour
from shaken.toolkit.lab import open_lab, render_config


def test_the_tour(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_tour(tmp_path / "lab", out) == 0
    text = out.getvalue()
    lines = text.splitlines()
    verdicts = {
        line.split()[1]: line for line in lines if line[:2] in {"1.", "2.", "3.", "4.", "5."}
    }
    assert "302 Moved Temporarily, attestation A" in verdicts["signed"]
    assert "302" in verdicts["verified"]
    assert '"(Verified) Alice"' in text and "verstat=TN-Validation-Passed" in text
    assert "438 Invalid Identity Header" in verdicts["tampered"]
    assert "302" in verdicts["no"] and '"[No ID] Alice"' in text
    assert "403 Stale Date" in verdicts["stale"]
    assert f"call log: {tmp_path / 'lab' / 'calls.sqlite'}" in text
    log = [line for line in lines if "sip/" in line]
    assert len(log) == 5
    assert sum("NOT ALLOWED" in line for line in log) == 2


def test_issue9_item7_the_tour_uses_the_lab_as_it_is(tmp_path: Path) -> None:
    """The PASS / STOP / ALERT of the tour are the lab's own configuration, not appended."""
    assert run_tour(tmp_path / "lab", io.StringIO()) == 0
    lab = open_lab(tmp_path / "lab")
    text = lab.config.read_text(encoding="utf-8")
    digest = tomllib.loads(text)["api_key"]["lab"]["sha256"]
    assert text == render_config(lab, api_key_sha256=digest)
