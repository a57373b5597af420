"""The dashboard's aggregates in SQL, on the SQLite call log and on the PostgreSQL one.

Each panel is one ``GROUP BY`` run by the database, never rows pulled into Python, over the
summary tables the database keeps (:mod:`.rollups`) and, for the seconds at a window's edges,
over the call log itself: the same statements for both engines but for two expressions
spelled per dialect (a time bucket, the host of an x5u URL). ``bench/dashboard.py`` measures
each panel on a day of a busy site.

Values are returned as stored, decoded from each backend's lossless form of text that was
not UTF-8 on the wire (:func:`.calllog._from_storage`, :func:`.pgcalllog._untext`); escaping
them is the page's business (it sets text, never markup).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shaken.adapters.store.calllog import _from_storage, read_calls, schema_version
from shaken.adapters.store.callschema import LATEST, POSTGRES, SQLITE
from shaken.adapters.store.pgcalllog import (
    _untext,
    connect,
    is_postgres_url,
    read_postgres_calls,
)
from shaken.adapters.store.pgcalllog import schema_version as postgres_schema_version
from shaken.adapters.store.rollups import ROLLUPS
from shaken.services.calllog import CallQuery
from shaken.services.dashboard import Window

__all__ = ["OutdatedCallLog", "SqlDashboard", "open_store"]


def _count_if(condition: str) -> str:
    return f"sum(CASE WHEN {condition} THEN n ELSE 0 END)"


def _none(value: Any) -> Any:
    """A rollup key back as the call log holds it: ``''`` was NULL."""
    return None if value == "" else value


_INBOUND = "direction = 'verify' AND outcome <> 'not_processed'"
_BY_NAME = {r.table: r for r in ROLLUPS}
#: A table and its hourly twin (schema version 5): the rollup that counts the same records
#: by the same keys in hour-long buckets.
_HOURLY = {
    r.table: h.table
    for r in ROLLUPS
    for h in ROLLUPS
    if h.seconds == 3600 > r.seconds and (h.keys, h.counts_only) == (r.keys, r.counts_only)
}


class SqlDashboard:
    """A :class:`~shaken.services.dashboard.DashboardStore` on a call log: a SQLite file, or
    a ``postgresql://`` URL.

    Each panel reads a summary table (:mod:`.rollups`) for the buckets the window covers
    whole, and the call log itself for the seconds at its edges (under one bucket at each
    end, found by the ``time`` index), both in one statement: ``UNION ALL`` of the two, then
    the panel's ``GROUP BY``. The answer is exact for any window.
    """

    def __init__(self, target: str | Path) -> None:
        self.target = target
        self._postgres = is_postgres_url(target)
        self._dialect = POSTGRES if self._postgres else SQLITE
        self._decode: Callable[[Any], Any] = _untext if self._postgres else _from_storage

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        if self._postgres:
            with connect(str(self.target), timeout=30.0) as pg:
                _check_version(postgres_schema_version(pg), "the PostgreSQL database")
                with pg.cursor() as cursor:
                    yield cursor
            return
        path = Path(self.target)
        if not path.is_file():
            raise FileNotFoundError(f"no call log at {path}")
        lite = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        try:
            _check_version(schema_version(lite), str(path))
            yield lite.cursor()
        finally:
            lite.close()

    def _union(self, table: str, window: Window) -> tuple[str, list[Any]]:
        """The rows of ``table`` for ``window``: its whole buckets, and the call log's rows
        at the edges in the same shape (``bucket``, the keys, ``n``, ``rejected``).

        A table with an hourly twin (:data:`_HOURLY`) is read for the partial hours at the
        window's edges only, the twin for the whole hours between them: the same counts,
        a twelfth of the rows."""
        rollup = _BY_NAME[table]
        mark = self._dialect.placeholder
        width = rollup.seconds
        first = math.ceil(window.since / width) * width
        last = math.floor(window.until / width) * width
        names = rollup.key_names()
        if first < last:
            edges = f"(time >= {mark} AND time < {mark}) OR (time >= {mark} AND time < {mark})"
            edge_args: list[Any] = [window.since, first, last, window.until]
        else:  # no whole bucket: the call log for all of it
            first = last = 0
            edges = f"time >= {mark} AND time < {mark}"
            edge_args = [window.since, window.until]
        profile = ""
        profile_args: list[Any] = []
        if window.profile is not None:
            profile = f" AND profile = {mark}"
            profile_args = [window.profile]
        keys = zip(rollup.expressions(self._dialect), names, strict=True)
        raw = (
            f"SELECT {', '.join(f'{e} AS {n}' for e, n in keys)},"
            f" 1 AS n, CASE WHEN allowed THEN 0 ELSE 1 END AS rejected FROM calls"
            f" WHERE ({edges}) AND {rollup.where()}{profile}"
        )
        columns = f"{', '.join(names)}, n, rejected"
        hourly = _HOURLY.get(table)
        hours = 0 if hourly is None else _BY_NAME[hourly].seconds
        start = math.ceil(first / hours) * hours if hours else 0
        stop = math.floor(last / hours) * hours if hours else 0
        if hourly is not None and start < stop:  # whole hours: from the twin
            summed = (
                f"SELECT {columns} FROM {hourly}"
                f" WHERE bucket >= {mark} AND bucket < {mark}{profile}"
                f" UNION ALL SELECT {columns} FROM {table}"
                f" WHERE bucket >= {mark} AND bucket < {mark}{profile}"
                f" UNION ALL SELECT {columns} FROM {table}"
                f" WHERE bucket >= {mark} AND bucket < {mark}{profile}"
            )
            summed_args = [start, stop, *profile_args, first, start, *profile_args]
            summed_args += [stop, last, *profile_args]
        else:
            summed = (
                f"SELECT {columns} FROM {table} WHERE bucket >= {mark} AND bucket < {mark}{profile}"
            )
            summed_args = [first, last, *profile_args]
        sql = f"({summed} UNION ALL {raw}) AS u"
        return sql, [*summed_args, *edge_args, *profile_args]

    def _rows(
        self, select: str, table: str, window: Window, tail: str, *args: Any
    ) -> list[tuple[Any, ...]]:
        source, bound = self._union(table, window)
        with self._cursor() as cursor:
            cursor.execute(f"SELECT {select} FROM {source} {tail}", [*bound, *args])
            rows = cursor.fetchall()
        decode = self._decode
        return [tuple(_none(decode(v)) for v in row) for row in rows]

    def outcomes_by_bucket(self, window: Window) -> list[tuple[float, str, str | None, int]]:
        step = window.step  # whole minutes: a minute bucket lies in one step
        rows = self._rows(
            f"(bucket / {step}) * {step} AS t, outcome, attest, sum(n) AS calls",
            "calls_by_minute",
            window,
            f"WHERE {_INBOUND} GROUP BY t, outcome, attest HAVING sum(n) > 0 ORDER BY t",
        )
        return [(float(t), o, a, int(n)) for t, o, a, n in rows]

    def inbound_mix(self, window: Window) -> list[tuple[str, str | None, int, int]]:
        rows = self._rows(
            "outcome, attest, sum(n), sum(rejected)",
            "calls_by_minute",
            window,
            f"WHERE {_INBOUND} GROUP BY outcome, attest HAVING sum(n) > 0",
        )
        return [(o, a, int(n), int(r or 0)) for o, a, n, r in rows]

    def failure_reasons(self, window: Window) -> list[tuple[str, int, int]]:
        rows = self._rows(
            "reason, sum(n) AS calls, sum(rejected)",
            "calls_by_minute",
            window,
            "WHERE direction = 'verify' AND reason <> '' AND outcome IN ('failed', 'missing')"
            " GROUP BY reason HAVING sum(n) > 0 ORDER BY calls DESC, reason",
        )
        return [(str(r), int(n), int(x or 0)) for r, n, x in rows]

    def upstreams(self, window: Window, by: str, limit: int) -> list[dict[str, Any]]:
        names: tuple[str, ...]
        if by == "source":
            table, names, keys = "calls_by_source", ("source",), "source_ip"
        else:
            table, names, keys = "calls_by_signer", ("spc", "x5u_host"), "spc, x5u_host"
        counts = ", ".join(
            [
                "sum(n) AS calls",
                _count_if("outcome = 'missing'"),
                _count_if("outcome = 'failed'"),
                _count_if("outcome = 'verified'"),
                "sum(rejected)",
                *(_count_if(f"attest = '{a}'") for a in ("A", "B", "C")),
            ]
        )
        group = ", ".join(str(i + 1) for i in range(len(names)))
        rows = self._rows(
            f"{keys}, {counts}",
            table,
            window,
            f"GROUP BY {group} HAVING sum(n) > 0 ORDER BY calls DESC, {group}"
            f" LIMIT {self._dialect.placeholder}",
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
        step = window.step
        rows = self._rows(
            f"(bucket / {step}) * {step} AS t, attest, sum(n)",
            "calls_by_minute",
            window,
            "WHERE direction = 'sign' AND outcome = 'signed'"
            " GROUP BY t, attest HAVING sum(n) > 0 ORDER BY t",
        )
        return [(float(t), a, int(n)) for t, a, n in rows]

    def not_signed(self, window: Window) -> list[tuple[str, str | None, int]]:
        rows = self._rows(
            "action, reason, sum(n) AS calls",
            "calls_by_minute",
            window,
            "WHERE direction = 'sign' AND outcome = 'not_signed'"
            " GROUP BY action, reason HAVING sum(n) > 0 ORDER BY calls DESC, reason",
        )
        return [(str(a), r, int(n)) for a, r, n in rows]

    def fetch_failures(self, window: Window) -> list[tuple[str, int]]:
        rows = self._rows(
            "x5u_host, sum(n) AS calls",
            "calls_by_signer",
            window,
            "WHERE reason = 'cert_fetch_failed'"
            " GROUP BY x5u_host HAVING sum(n) > 0 ORDER BY calls DESC, x5u_host",
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


class OutdatedCallLog(Exception):
    """The call log predates this release's schema: its summary tables are not there yet.

    The dashboard only reads; a writer (``shaken serve``) or ``shaken calls migrate`` brings
    the log forward, in one transaction.
    """

    def __init__(self, version: int) -> None:
        super().__init__(
            f"the call log has schema version {version}; this release reads version {LATEST}:"
            " run `shaken calls migrate` (or start `shaken serve`, whose writer migrates it)"
        )
        self.version = version


def _check_version(version: int, where: str) -> None:
    if version == 0:
        raise FileNotFoundError(f"no call log in {where}")
    if version < LATEST:
        raise OutdatedCallLog(version)


def open_store(target: str | Path) -> SqlDashboard:
    """The dashboard's store on ``[server] call_log`` (a path or a PostgreSQL URL)."""
    return SqlDashboard(target)
