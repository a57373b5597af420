"""``make run``: a lab with its real servers and five SIP calls, verdicts as the seeds say."""

from __future__ import annotations

import io
from pathlib import Path

from shaken.adapters.tour import run_tour


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
