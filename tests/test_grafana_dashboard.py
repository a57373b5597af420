"""``examples/grafana/shaken.json``: a Grafana dashboard that cannot drift from the metrics.

Every series name its queries read is exposed by a real ``shaken serve`` that signed and
verified over SIP and REST (the scrape of ``tests/test_alert_rules.py``); promtool, where
installed, parses every query (as recording rules, Grafana's ``$__range`` variables given a
value); the layout is a Grafana dashboard (panels with ids, positions and targets, the data
source and instance chosen by variables).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.test_alert_rules import live_metrics

DASHBOARD = Path(__file__).resolve().parents[1] / "examples" / "grafana" / "shaken.json"
PROMTOOL = shutil.which("promtool")


def expressions() -> list[str]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in document["panels"] for t in p["targets"]]


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert document["uid"] and document["title"]
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in document["panels"]]
    assert len(ids) == len(set(ids))
    for panel in document["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], target["expr"]


@pytest.mark.skipif(PROMTOOL is None, reason="needs promtool (Debian package prometheus)")
def test_promtool_parses_every_query(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    rules = []
    for i, expr in enumerate(expressions()):
        concrete = expr.replace("$__rate_interval", "5m").replace("$__range", "1d")
        concrete = concrete.replace("$instance", ".*")
        rules.append({"record": f"shaken:panel_{i}", "expr": concrete})
    path = tmp_path / "panels.yml"
    path.write_text(json.dumps({"groups": [{"name": "panels", "rules": rules}]}))
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_the_dashboard_reads_is_exposed(tmp_path: Path) -> None:
    names = {name for expr in expressions() for name in re.findall(r"\bshaken_[a-z0-9_]+", expr)}
    assert "shaken_sip_requests_total" in names
    exposed, _ = live_metrics(tmp_path)
    assert names - exposed == set()
