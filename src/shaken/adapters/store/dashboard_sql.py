"""The dashboard's aggregates in SQL, on the SQLite call log and on the PostgreSQL one.

Each panel is one ``GROUP BY`` over the rows of a window, run by the database, never rows
pulled into Python. The statements are the same for both engines except for two
expressions spelled per dialect (:class:`_Spelling`): the start of a time bucket and the
host of an x5u URL. Schema version 4 (:mod:`.callschema`) adds the indexes they read:
``(direction, time, profile, outcome, attest, allowed)`` covers the time series and the
mix, so those never touch the table; ``(direction, reason, time)`` ranks failure reasons.
``bench/dashboard.py`` measures each panel on a day of a busy site.

Values are returned as stored, decoded from each backend's lossless form of text that was
not UTF-8 on the wire (:func:`.calllog._from_storage`, :func:`.pgcalllog._untext`); escaping
them is the page's business (it sets text, never markup).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shaken.adapters.store.calllog import _from_storage, read_calls
from shaken.adapters.store.callschema import POSTGRES, SQLITE, Dialect
from shaken.adapters.store.pgcalllog import (
    _untext,
    connect,
    is_postgres_url,
    read_postgres_calls,
)
from shaken.services.calllog import CallQuery
from shaken.services.dashboard import Window

__all__ = ["SqlDashboard", "open_store"]


@dataclass(frozen=True, slots=True)
class _Spelling:
    dialect: Dialect
    bucket: Callable[[int], str]
    host: str
    decode: Callable[[Any], Any]


def _sqlite_host() -> str:
    rest = "substr(x5u, instr(x5u, '://') + 3)"
    return (
        f"CASE WHEN x5u IS NULL THEN NULL WHEN instr(x5u, '://') = 0 THEN x5u"
        f" WHEN instr({rest}, '/') = 0 THEN {rest}"
        f" ELSE substr({rest}, 1, instr({rest}, '/') - 1) END"
    )


_SQLITE = _Spelling(
    SQLITE,
    # time is positive, so truncation is floor.
    lambda step: f"CAST(time / {step} AS INTEGER) * {step}",
    _sqlite_host(),
    _from_storage,
)
_POSTGRES = _Spelling(
    POSTGRES,
    lambda step: f"(floor(time / {step}) * {step})::bigint",
    "NULLIF(split_part(split_part(x5u, '://', 2), '/', 1), '')",
    _untext,
)


def _count_if(condition: str) -> str:
    return f"sum(CASE WHEN {condition} THEN 1 ELSE 0 END)"


class SqlDashboard:
    """A :class:`~shaken.services.dashboard.DashboardStore` on a call log: a SQLite file, or
    a ``postgresql://`` URL."""

    def __init__(self, target: str | Path) -> None:
        self.target = target
        self._postgres = is_postgres_url(target)
        self._spell = _POSTGRES if self._postgres else _SQLITE

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        if self._postgres:
            with connect(str(self.target), timeout=30.0) as pg, pg.cursor() as cursor:
                yield cursor
            return
        path = Path(self.target)
        if not path.is_file():
            raise FileNotFoundError(f"no call log at {path}")
        lite = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        try:
            yield lite.cursor()
        finally:
            lite.close()

    def _rows(self, select: str, where: str, window: Window, tail: str, *args: Any) -> list[Any]:
        """``SELECT select FROM calls WHERE <window> AND where tail`` (rows as tuples)."""
        mark = self._spell.dialect.placeholder
        clause = f"time >= {mark} AND time < {mark}"
        bound: list[Any] = [window.since, window.until]
        if window.profile is not None:
            clause += f" AND profile = {mark}"
            bound.append(window.profile)
        sql = f"SELECT {select} FROM calls WHERE {where} AND {clause} {tail}"
        with self._cursor() as cursor:
            cursor.execute(sql, [*bound, *args])
            rows = cursor.fetchall()
        decode = self._spell.decode
        return [tuple(decode(v) for v in row) for row in rows]

    _INBOUND = "direction = 'verify' AND outcome <> 'not_processed'"

    def outcomes_by_bucket(self, window: Window) -> list[tuple[float, str, str | None, int]]:
        bucket = self._spell.bucket(window.step)
        rows = self._rows(
            f"{bucket} AS t, outcome, attest, count(*)",
            self._INBOUND,
            window,
            "GROUP BY t, outcome, attest ORDER BY t",
        )
        return [(float(t), o, a, int(n)) for t, o, a, n in rows]

    def inbound_mix(self, window: Window) -> list[tuple[str, str | None, int, int]]:
        rows = self._rows(
            f"outcome, attest, count(*), {_count_if('NOT allowed')}",
            self._INBOUND,
            window,
            "GROUP BY outcome, attest",
        )
        return [(o, a, int(n), int(r or 0)) for o, a, n, r in rows]

    def failure_reasons(self, window: Window) -> list[tuple[str, int, int]]:
        rows = self._rows(
            f"reason, count(*) AS n, {_count_if('NOT allowed')}",
            "direction = 'verify' AND reason IS NOT NULL AND outcome IN ('failed', 'missing')",
            window,
            "GROUP BY reason ORDER BY n DESC, reason",
        )
        return [(str(r), int(n), int(x or 0)) for r, n, x in rows]

    def upstreams(self, window: Window, by: str, limit: int) -> list[dict[str, Any]]:
        names: tuple[str, ...]
        if by == "source":
            keys, names = "source_ip", ("source",)
        else:
            keys, names = f"spc, {self._spell.host}", ("spc", "x5u_host")
        counts = ", ".join(
            [
                "count(*) AS n",
                _count_if("outcome = 'missing'"),
                _count_if("outcome = 'failed'"),
                _count_if("outcome = 'verified'"),
                _count_if("NOT allowed"),
                *(_count_if(f"attest = '{a}'") for a in ("A", "B", "C")),
            ]
        )
        mark = self._spell.dialect.placeholder
        group = ", ".join(str(i + 1) for i in range(len(names)))
        rows = self._rows(
            f"{keys}, {counts}",
            self._INBOUND,
            window,
            f"GROUP BY {group} ORDER BY n DESC, {group} LIMIT {mark}",
            limit,
        )
        out = []
        fields = ("calls", "missing", "failed", "verified", "rejected", "A", "B", "C")
        for row in rows:
            key = dict(zip(names, row[: len(names)], strict=True))
            values = {f: int(v or 0) for f, v in zip(fields, row[len(names) :], strict=True)}
            out.append({"key": key, **values})
        return out

    def signed_by_bucket(self, window: Window) -> list[tuple[float, str | None, int]]:
        bucket = self._spell.bucket(window.step)
        rows = self._rows(
            f"{bucket} AS t, attest, count(*)",
            "direction = 'sign' AND outcome = 'signed'",
            window,
            "GROUP BY t, attest ORDER BY t",
        )
        return [(float(t), a, int(n)) for t, a, n in rows]

    def not_signed(self, window: Window) -> list[tuple[str, str | None, int]]:
        rows = self._rows(
            "action, reason, count(*) AS n",
            "direction = 'sign' AND outcome = 'not_signed'",
            window,
            "GROUP BY action, reason ORDER BY n DESC",
        )
        return [(str(a), r, int(n)) for a, r, n in rows]

    def fetch_failures(self, window: Window) -> list[tuple[str, int]]:
        rows = self._rows(
            f"{self._spell.host} AS host, count(*) AS n",
            "direction = 'verify' AND reason = 'cert_fetch_failed'",
            window,
            "GROUP BY host ORDER BY n DESC",
        )
        return [(str(h), int(n)) for h, n in rows]

    def search(self, query: CallQuery) -> list[dict[str, Any]]:
        if self._postgres:
            rows = read_postgres_calls(str(self.target), query)
        else:
            rows = read_calls(self.target, query)
        rows.reverse()
        for row in rows:
            row["allowed"] = bool(row["allowed"])
        return rows


def open_store(target: str | Path) -> SqlDashboard:
    """The dashboard's store on ``[server] call_log`` (a path or a PostgreSQL URL)."""
    return SqlDashboard(target)
