"""Suite-wide rules: tests of tools that read the real clock step aside under a shifted clock.

CI runs the suite twice: as is, and under ``faketime '+400 days'`` to prove that nothing depends
on today's date. libfaketime shifts the clock of every program that asks libc for the time,
which covers this project, OpenSSL, sipp and Kamailio; a Go program such as secsipidx reads the
clock through the kernel's vDSO itself and keeps the real time. A test that compares our dates
with such a tool is marked ``real_clock("why")`` and is skipped, with that reason, when the
clock is shifted.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "FAKETIME" not in os.environ:
        return
    for item in items:
        marker = item.get_closest_marker("real_clock")
        if marker is not None:
            why = marker.args[0] if marker.args else "a third-party tool reads the real clock"
            item.add_marker(pytest.mark.skip(reason=f"under faketime: {why}"))
