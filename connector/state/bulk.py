"""Precompiled bulk upserts for the state store's hot path (records of every page and batch).

:func:`connector.state.tables.upsert` builds and compiles a SQLAlchemy statement and lets
SQLAlchemy bind every parameter of every row (type processors, parameter dicts), which costs
about ten microseconds a row: more than the database's own work. A backfill records each row
twice (announced, then accepted), so that overhead was a large part of the pass. Here the
statement is compiled once per dialect, its SQL text kept, and the rows go to the driver's
``executemany`` as plain tuples (or dicts, for named parameter styles). The SQL is exactly what
``tables.upsert`` runs, and type processors (e.g. the UTC timestamp columns) are still applied,
once per distinct value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from connector.errors import StateError
from connector.state import tables as t

_IN_CHUNK = 500


@dataclass(frozen=True)
class _Compiled:
    sql: str
    order: list[int] | None  # positional styles: column index of each placeholder
    names: list[str] | None  # named styles: parameter names, in ``columns`` order
    procs: list[tuple[int, Callable[[Any], Any]]]  # columns with a bind processor


class BulkUpsert:
    """``INSERT ... ON CONFLICT (conflict) DO UPDATE SET copy = new`` of rows given as tuples in
    ``columns`` order; on MariaDB/MySQL ``ON DUPLICATE KEY UPDATE``. The ``conflict`` columns
    must hold text (rows are sorted by them, as ``tables.upsert`` sorts by their text).
    Thread-safe: the cache is only ever added to, with values that do not change."""

    def __init__(
        self,
        table: sa.Table,
        columns: Sequence[str],
        conflict: Sequence[str],
        copy: Sequence[str],
    ) -> None:
        self.table = table
        self.columns = list(columns)
        self.conflict = list(conflict)
        self.copy = list(copy)
        self._sort = itemgetter(*[self.columns.index(c) for c in conflict])
        self._cache: dict[str, _Compiled] = {}

    def _compile(self, dialect: sa.Dialect) -> _Compiled:
        name = dialect.name
        stmt: Any
        if name in ("sqlite", "postgresql"):
            stmt = (sqlite.insert if name == "sqlite" else postgresql.insert)(self.table)
            stmt = stmt.on_conflict_do_update(
                index_elements=self.conflict, set_={c: stmt.excluded[c] for c in self.copy}
            )
        elif name in ("mysql", "mariadb"):
            stmt = mysql.insert(self.table)
            stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in self.copy})
        else:
            raise StateError(f"state database: unsupported database type {name!r}")
        compiled = stmt.compile(dialect=dialect, column_keys=self.columns)
        procs: list[tuple[int, Callable[[Any], Any]]] = []
        for i, col in enumerate(self.columns):
            proc = self.table.c[col].type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                procs.append((i, proc))
        if compiled.positional:
            order = [self.columns.index(p) for p in compiled.positiontup or ()]
            return _Compiled(str(compiled), order, None, procs)
        return _Compiled(str(compiled), None, self.columns, procs)

    def run(self, conn: sa.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Upsert ``rows`` in one ``executemany``, in conflict-key order (the same order in every
        writer keeps concurrent transactions from deadlocking). Rows must not repeat a key."""
        if not rows:
            return
        dialect = conn.dialect
        c = self._cache.get(dialect.name)
        if c is None:
            c = self._cache[dialect.name] = self._compile(dialect)
        ordered = sorted(rows, key=self._sort)  # conflict columns hold text (names, key ids)
        if c.procs:
            done: dict[tuple[int, Any], Any] = {}  # e.g. one timestamp shared by every row
            fixed = []
            for r in ordered:
                values = list(r)
                for i, proc in c.procs:
                    v = values[i]
                    got = done.get((i, v), done)
                    if got is done:
                        got = done[i, v] = proc(v)
                    values[i] = got
                fixed.append(values)
        else:
            fixed = [list(r) for r in ordered]
        params: Any
        if c.order is not None:
            o = c.order
            identity = o == list(range(len(self.columns)))
            params = [tuple(v) if identity else tuple(v[i] for i in o) for v in fixed]
        else:
            names = c.names or []
            params = [dict(zip(names, v, strict=True)) for v in fixed]
        conn.exec_driver_sql(c.sql, params)


def resolve_rejects(conn: sa.Connection, mapping: str, keys: Iterable[str], now: datetime) -> None:
    """What :func:`connector.state.tables.resolve_rejects` does (close the open rejects of
    ``keys``), as one ``UPDATE ... WHERE open_key IN (...)`` per 500 keys instead of an
    executemany of one UPDATE per key: a mapping with any open reject runs this for every
    accepted batch, and most keys have no reject to close."""
    ids = sorted({t.key_id(k) for k in keys})
    c = t.rejects.c
    for i in range(0, len(ids), _IN_CHUNK):
        conn.execute(
            sa.update(t.rejects)
            .where(c.mapping == mapping, c.open_key.in_(ids[i : i + _IN_CHUNK]))
            .values(open_key=None, resolved_at=now)
        )
