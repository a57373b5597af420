"""``examples/prometheus/shaken-alerts.yml``: promtool accepts the rules and its own unit tests
of them pass (each alert fires on the series it is about, with the annotations it says)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "prometheus"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="needs promtool (Debian package prometheus; .ci/run installs it)"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=EXAMPLES, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_accepts_the_rules() -> None:
    done = _promtool("check", "rules", "shaken-alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_rules_fire_as_their_unit_tests_say() -> None:
    done = _promtool("test", "rules", "shaken-alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
