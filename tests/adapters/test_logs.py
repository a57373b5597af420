"""Logging: text or JSON lines, levels from the configuration, changed by SIGHUP."""

from __future__ import annotations

import io
import json
import logging
import signal
from pathlib import Path

import pytest

from shaken.adapters.logs import apply_levels, configure_logging, fields
from shaken.toolkit.lab import Lab
from tests.adapters.test_serve_processes import (
    Serve,
    free_port,
    lab,  # noqa: F401  (the module's lab fixture, shared)
    lab_config,
    serving,  # noqa: F401
    start,
    wait_until,
)


@pytest.fixture
def stream() -> io.StringIO:
    out = io.StringIO()
    yield out
    configure_logging()  # back to stderr for the tests after this one


def test_json_lines_carry_the_fields(stream: io.StringIO) -> None:
    configure_logging(log_format="json", stream=stream)
    log = logging.getLogger("shaken.test")
    log.warning("call log commit failed", extra=fields(path="/var/lib/shaken/calls.sqlite", n=3))
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("unexpected")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "warning" and first["logger"] == "shaken.test"
    assert first["message"] == "call log commit failed"
    assert (first["path"], first["n"]) == ("/var/lib/shaken/calls.sqlite", 3)
    assert first["time"].endswith("Z") and isinstance(first["pid"], int)
    assert "ValueError: boom" in second["exception"]


def test_text_lines_keep_what_a_peer_sent_on_one_line(stream: io.StringIO) -> None:
    configure_logging(stream=stream)
    logging.getLogger("shaken.sip").warning(
        "bad request from %s",
        "peer\r\nshaken.serve INFO: forged\x1b[2J",
        extra=fields(call_id="a\nb"),
    )
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "\\r\\nshaken.serve INFO: forged\\x1b[2J" in lines[0]
    assert lines[0].endswith("call_id=a\\nb")


def test_levels_per_logger(stream: io.StringIO) -> None:
    configure_logging(stream=stream, level="warning", levels={"shaken.sip": "debug"})
    logging.getLogger("shaken.sip").debug("sip detail")
    logging.getLogger("shaken.serve").info("serve detail")
    apply_levels("info", {})
    logging.getLogger("shaken.sip").debug("sip detail again")
    logging.getLogger("shaken.serve").info("serve detail again")
    text = stream.getvalue()
    assert "sip detail" in text and "serve detail again" in text
    assert "sip detail again" not in text and "serve detail\n" not in text


def test_serve_logs_json_and_sighup_changes_the_level(
    lab: Lab,  # noqa: F811
    tmp_path: Path,
    serving: list[Serve],  # noqa: F811
) -> None:
    rest = free_port()
    server = f'rest = ["http:127.0.0.1:{rest}"]\nlog_format = "json"\nlog_level = "warning"'
    config = lab_config(lab, server)
    served = start(serving, config, tmp_path / "serve.log")
    assert served.ready(), served.errors()
    # At warning the reload's "reloaded" line (info) is not written, its warning about a key
    # that takes effect at restart is: that says the reload is done.
    config.write_text(
        config.read_text().replace("[server]\n", "[server]\ndescriptor_reserve = 80\n")
    )
    served.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "descriptor_reserve changed" in served.errors(), 60, "the first reload")
    assert "reloaded" not in served.errors()
    config.write_text(config.read_text().replace('log_level = "warning"', 'log_level = "info"'))
    served.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded" in served.errors(), 60, "the reload line at info")
    lines = [json.loads(line) for line in served.errors().splitlines() if line.strip()]
    reloads = [line for line in lines if line["message"].startswith("reloaded")]
    assert len(reloads) == 1 and reloads[0]["level"] == "info"
    assert all({"time", "level", "logger", "pid", "message"} <= set(line) for line in lines)
