"""One scrape returns the whole instance: every worker's counts added up.

Unit tests of the merge rules, then ``shaken serve`` with two workers behind shared sockets,
scraped over and over (each scrape lands on either worker): the totals are the same from both
and stay whole when a worker is killed and replaced.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from shaken.adapters.metrics import InstanceMetrics, merge_snapshots
from shaken.toolkit.lab import Lab
from tests.adapters.http.conftest import key_entry
from tests.adapters.test_serve_processes import (
    Serve,
    free_port,
    free_sip_port,
    lab,  # noqa: F401  (the module's lab fixture, shared)
    lab_config,
    serving,  # noqa: F401
    start,
    wait_until,
)


def _family(name: str, kind: str, samples: list[list[object]]) -> dict[str, object]:
    return {"name": name, "type": kind, "help": name, "unit": "", "samples": samples}


def test_counters_add_up_over_every_worker_gauges_do_not() -> None:
    one = [
        _family("shaken_requests", "counter", [["shaken_requests_total", {"e": "x"}, 3.0]]),
        _family(
            "shaken_certificate_cache_entries",
            "gauge",
            [["shaken_certificate_cache_entries", {}, 5.0]],
        ),
        _family(
            "shaken_signing_certificate_days_left",
            "gauge",
            [["shaken_signing_certificate_days_left", {"x5u": "u"}, 80.0]],
        ),
    ]
    two = [
        _family(
            "shaken_requests",
            "counter",
            [
                ["shaken_requests_total", {"e": "x"}, 4.0],
                ["shaken_requests_created", {"e": "x"}, 100.0],
            ],
        ),
        _family(
            "shaken_certificate_cache_entries",
            "gauge",
            [["shaken_certificate_cache_entries", {}, 7.0]],
        ),
        _family(
            "shaken_signing_certificate_days_left",
            "gauge",
            [["shaken_signing_certificate_days_left", {"x5u": "u"}, 80.0]],
        ),
    ]
    dead = [
        _family(
            "shaken_requests",
            "counter",
            [
                ["shaken_requests_total", {"e": "x"}, 10.0],
                ["shaken_requests_created", {"e": "x"}, 50.0],
            ],
        ),
        _family(
            "shaken_certificate_cache_entries",
            "gauge",
            [["shaken_certificate_cache_entries", {}, 100.0]],
        ),
    ]
    merged = {f.name: f for f in merge_snapshots([(one, True), (two, True), (dead, False)])}
    values = {
        (s.name, tuple(s.labels.items())): s.value for f in merged.values() for s in f.samples
    }
    # A counter counts what every worker did, the dead one's too: it never goes back.
    assert values[("shaken_requests_total", (("e", "x"),))] == 17.0
    assert values[("shaken_requests_created", (("e", "x"),))] == 50.0
    # What each worker holds is summed over the live ones; a fact of the instance is not.
    assert values[("shaken_certificate_cache_entries", ())] == 12.0
    assert values[("shaken_signing_certificate_days_left", (("x5u", "u"),))] == 80.0


def test_a_worker_alone_renders_its_own_registry(tmp_path: Path) -> None:
    metrics = InstanceMetrics(tmp_path)
    from prometheus_client import Counter

    Counter("shaken_things", "things", registry=metrics.registry).inc(2)
    metrics.write_snapshot()
    assert json.loads((tmp_path / f"{os.getpid()}.json").read_text())[0]["name"] == "shaken_things"
    text = metrics.render().decode()
    assert "shaken_things_total 2.0" in text  # live values, not the snapshot counted twice


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


SIGNED = ("shaken_requests_total", (("endpoint", "signing"), ("outcome", "signed"), ("reason", "")))


def _sign(port: int, key: str, n: int) -> None:
    body = json.dumps(
        {
            "signingRequest": {
                "orig": {"tn": "12025550123"},
                "dest": {"tn": ["13035550000"]},
                "attest": "A",
                "iat": int(time.time()),
            }
        }
    ).encode()
    for _ in range(n):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/stir/v1/signing",
            data=body,
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "X-API-Key": key,
            },
        )
        # A new connection each time, so the kernel spreads them over both workers.
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200


def test_every_scrape_returns_the_whole_instance(
    lab: Lab,  # noqa: F811
    tmp_path: Path,
    serving: list[Serve],  # noqa: F811
) -> None:
    rest = free_port()
    secret = "metrics-test-key"
    config = lab_config(
        lab,
        f'sip_verify = ["udp:127.0.0.1:{free_sip_port()}"]\nrest = ["http:127.0.0.1:{rest}"]\nworkers = 2',
    )
    config.write_text(config.read_text() + "\n" + key_entry("m", secret, tns=["12025550123"]))
    served = start(serving, config, tmp_path / "serve.log")
    assert served.ready(), served.errors()
    _sign(rest, secret, 30)
    # Within a snapshot interval (1 s) every worker's counts are in every scrape, whichever
    # worker answers it.
    wait_until(lambda: {_scrape(rest).get(SIGNED) for _ in range(12)} == {30.0}, 30, "30 in all")
    # A worker killed and replaced: what it counted stays in the totals.
    victim = served.workers()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: len(served.workers()) == 2 and victim not in served.workers(), 60, "a new worker"
    )
    _sign(rest, secret, 5)
    wait_until(lambda: {_scrape(rest).get(SIGNED) for _ in range(12)} == {35.0}, 30, "35 in all")
