"""How ``shaken serve`` logs: one line per event, as text for a terminal or JSON for a collector.

``[server] log_format = "text"`` (the default) writes ``time pid LEVEL logger: message``;
``"json"`` writes one JSON object per line (``time``, ``level``, ``logger``, ``pid``,
``message``, and the event's fields), which journald, Loki and ELK take as they are.
``log_level`` sets the level of every ``shaken`` logger and ``log_levels`` the level of one
(``{"shaken.sip" = "debug"}``); both change with SIGHUP. Per-call lines are at debug only.

Fields: a call site passes ``extra={"fields": {...}}`` (see :func:`fields`); text lines show
them as ``key=value`` after the message, JSON lines as members. Values are rendered with
``repr``-style escaping in text (nothing a peer sent can start a new line or a terminal
sequence) and as JSON strings in JSON. Nothing secret is ever given to a logger: API keys,
private keys, passwords and tokens stay out of messages and fields (a test reads every log
line the suite writes, looking for them).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["LEVELS", "apply_levels", "configure_logging", "fields"]

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_ROOT = "shaken"


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call that carries fields: ``log.warning("...", extra=fields(...))``."""
    return {"fields": values}


def _safe(text: str) -> str:
    """``text`` on one line, without control characters (a peer's bytes stay inert)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class TextFormatter(logging.Formatter):
    """``time pid LEVEL logger: message key=value ...`` on one line; a traceback follows on
    lines of its own, indented, so no text from the wire can start a line that looks like a
    log line of ours."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        message = _safe(record.getMessage())
        extra: Mapping[str, Any] = getattr(record, "fields", None) or {}
        if extra:
            message += " " + " ".join(f"{k}={_safe(str(v))}" for k, v in extra.items())
        record.message = message
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            line += "\n" + "\n".join("  " + _safe(x) for x in trace.splitlines())
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in (getattr(record, "fields", None) or {}).items():
            out.setdefault(key, value if isinstance(value, int | float | bool) else str(value))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=True)


def configure_logging(
    *,
    log_format: str = "text",
    level: str = "info",
    levels: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """Send every ``shaken`` logger's records to ``stream`` (stderr) in ``log_format``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger(_ROOT)
    root.handlers[:] = [handler]
    root.propagate = False
    apply_levels(level, levels or {})


def apply_levels(level: str, levels: Mapping[str, str]) -> None:
    """Set the ``shaken`` loggers' levels (at start, and again on every reload)."""
    root = logging.getLogger(_ROOT)
    root.setLevel(LEVELS[level])
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith(_ROOT + ".") and name not in levels:
            logging.getLogger(name).setLevel(logging.NOTSET)  # back to inheriting
    for name, value in levels.items():
        logging.getLogger(name).setLevel(LEVELS[value])
