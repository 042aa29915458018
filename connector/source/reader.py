"""Reading the shop database: thin I/O around the pure queries of ``source.query``.

This is the one place where SQLAlchemy errors from the shop database become ``SourceError``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa

from connector import timeutil
from connector.errors import Problem, SourceError
from connector.mapping.spec import ChildSpec, Mapping
from connector.source import query as q
from connector.source.indexes import cursor_index_problems

Row = dict[str, Any]
T = TypeVar("T")
# the database clock (built once: a statement object is reused from SQLAlchemy's cache)
_CLOCK = {
    "postgresql": sa.text("SELECT clock_timestamp()"),
    "mysql": sa.text("SELECT UTC_TIMESTAMP(6)"),
    "mariadb": sa.text("SELECT UTC_TIMESTAMP(6)"),
    "sqlite": sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"),
}
_NOW = sa.text("SELECT CURRENT_TIMESTAMP")
NOT_NULL_RECHECK = 600.0  # seconds between two readings of a cursor column's NOT NULL
CLOCK_REREAD = 30.0  # seconds during which a reading of the database clock is carried forward


def _connect_args(url: sa.URL, timeout: float) -> dict[str, Any]:
    backend = url.get_backend_name()
    if backend == "postgresql":
        return {"connect_timeout": max(1, int(timeout))}
    if backend in ("mysql", "mariadb"):
        return {"connect_timeout": max(1, int(timeout)), "read_timeout": 300}
    if backend == "sqlite":
        return {"timeout": timeout}
    return {}


def short_cause(exc: BaseException) -> str:
    """The first line of a driver error, without SQL text or parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return text[:300]


class _Pin:
    """The connection the reads of one thread share inside :meth:`ShopReader.session`."""

    conn: sa.Connection | None = None


class ShopReader:
    """Read-only access to the shop database. Whoever creates it closes it.

    Reads run on pooled connections, each checked out for one statement, or for a whole
    :meth:`session` (a pass), so a pass pays for one checkout, not one per statement.
    ``pool_size`` is how many idle connections the pool keeps for the threads that read at the
    same time (the service's passes).

    A pooled connection is not pinged before use (``pool_pre_ping`` costs a round trip per
    checkout, more than an idle pass's own statements on a warm connection): a read that finds
    its connection dead (the server restarted, a firewall dropped it while idle) runs once
    more on a new connection, which is safe since every statement here only reads."""

    def __init__(self, url: sa.URL, *, connect_timeout: float = 10.0, pool_size: int = 2) -> None:
        self.url = url
        self.display_url = url.render_as_string(hide_password=True)
        # every read is one statement on a connection of its own (no transaction spans two),
        # so the driver's BEGIN and the pool's ROLLBACK on return are two round trips per
        # statement for nothing: autocommit reads see the same committed data without them
        self.engine = (
            sa.create_engine(
                url,
                pool_size=max(1, pool_size),
                isolation_level="AUTOCOMMIT",
                connect_args=_connect_args(url, connect_timeout),
            )
            if url.get_backend_name() != "sqlite"
            else sa.create_engine(url, connect_args=_connect_args(url, connect_timeout))
        )
        self._samples: dict[str, Any] = {}
        # (table, cursor, fallback) -> (answer, when): see cursor_never_null
        self._not_null: dict[tuple[str, str, str | None], tuple[bool, float]] = {}
        self._local = threading.local()
        self._clock: tuple[datetime, float] | None = None  # see db_clock

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ShopReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(
                f"shop database {self.display_url}: {what} failed: {short_cause(exc)}"
            ) from exc

    @contextmanager
    def session(self) -> Iterator[None]:
        """Reads of this thread inside the block share one connection, checked out at the first
        read and returned at the end. Every read is still a statement of its own in autocommit
        (PostgreSQL, MariaDB) or outside any transaction (SQLite's driver opens none for a
        SELECT), so it sees what was committed before it, as on a connection of its own. A
        connection lost meanwhile is replaced (see the class). Nested sessions share the outer
        one."""
        if getattr(self._local, "pin", None) is not None:
            yield
            return
        pin = self._local.pin = _Pin()
        try:
            yield
        finally:
            self._local.pin = None
            if pin.conn is not None:
                pin.conn.close()

    @contextmanager
    def _connection(self) -> Iterator[sa.Connection]:
        pin: _Pin | None = getattr(self._local, "pin", None)
        if pin is None:
            with self.engine.connect() as conn:
                yield conn
            return
        if pin.conn is not None and pin.conn.invalidated:
            pin.conn.close()
            pin.conn = None
        if pin.conn is None:
            pin.conn = self.engine.connect()
        yield pin.conn

    def _run(self, what: str, read: Callable[[sa.Connection], T]) -> T:
        with self._errors(what):
            try:
                with self._connection() as conn:
                    return read(conn)
            except sa.exc.DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
            # the connection was dead (SQLAlchemy invalidated it, and the pool's connections
            # older than it): once more on a new one
            with self._connection() as conn:
                return read(conn)

    def fetch(
        self, stmt: sa.Executable, what: str = "query", params: dict[str, Any] | None = None
    ) -> list[Row]:
        def read(conn: sa.Connection) -> list[Row]:
            result = conn.execute(stmt, params)
            names = list(result.keys())  # as dict(row mapping): a repeated name keeps the last
            return [dict(zip(names, r, strict=True)) for r in result.fetchall()]

        return self._run(what, read)

    def scalar(self, stmt: sa.Executable, what: str = "query") -> Any:
        return self._run(what, lambda conn: conn.execute(stmt).scalar())

    def db_now_utc(self) -> datetime:
        """The database server's clock (not this machine's), as an aware UTC datetime."""
        value = self.scalar(_CLOCK.get(self.dialect, _NOW), "reading the database clock")
        if isinstance(value, str):
            value = timeutil.parse_timestamp(value)
        if not isinstance(value, datetime):
            raise SourceError(f"shop database {self.display_url}: unexpected clock value {value!r}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def db_clock(self, reread: float = CLOCK_REREAD) -> datetime:
        """The database server's clock, read again once the last reading is ``reread`` seconds
        old and carried forward by this machine's monotonic clock in between (a pass's upper
        bound). The estimate never runs ahead of the server: it counts from when the answer
        arrived, not from when the server read its clock; two clocks drift by milliseconds a
        minute at most, far inside the safety lag. An idle service polling a dozen mappings
        every few seconds so reads it once in ``reread`` seconds instead of once a pass."""
        got = self._clock
        now = time.monotonic()
        if got is not None and now - got[1] < reread:
            return got[0] + timedelta(seconds=now - got[1])
        value = self.db_now_utc()
        self._clock = (value, time.monotonic())
        return value

    def sample_cursor(self, mapping: Mapping) -> Any:
        """One non-NULL cursor value, to learn its form (naive/aware/text/number); cached."""
        if mapping.name in self._samples:
            return self._samples[mapping.name]
        rel = q.source_relation(mapping.source)
        cur = q.cursor_expr(mapping.source, rel)
        stmt = sa.select(cur).select_from(rel).where(cur.is_not(None)).limit(1)
        value = self.scalar(stmt, f"{mapping.file}: reading a cursor value")
        if value is not None:
            self._samples[mapping.name] = value
        return value

    def sample_child_cursor(self, mapping: Mapping, child: ChildSpec) -> Any:
        """One non-NULL value of a child collection's own cursor column; cached."""
        assert child.cursor is not None
        name = f"{mapping.name}/{child.path}"
        if name in self._samples:
            return self._samples[name]
        rel = q.relation(child.table, child.query, [child.cursor])
        cur = rel.c[child.cursor]
        stmt = sa.select(cur).select_from(rel).where(cur.is_not(None)).limit(1)
        value = self.scalar(stmt, f"{mapping.file}: {child.path}: reading a cursor value")
        if value is not None:
            self._samples[name] = value
        return value

    def cursor_never_null(self, mapping: Mapping) -> bool:
        """Whether the schema rules out rows without a cursor value (the cursor column, or its
        fallback, is declared NOT NULL), so that no pass has to look for them.

        Only for a table source on PostgreSQL or SQLite: a query's columns carry no such
        promise, and MariaDB/MySQL's ``IS NULL`` also finds the zero dates a NOT NULL date
        column can hold. Read from the schema, again after ``NOT_NULL_RECHECK`` seconds (a
        column altered meanwhile is seen by then); a schema that cannot be read answers False,
        and the rows are looked for as before."""
        src = mapping.source
        if not src.table or self.dialect not in ("postgresql", "sqlite"):
            return False
        what = (src.table, src.cursor, src.cursor_fallback)
        known = self._not_null.get(what)
        now = time.monotonic()
        if known is not None and now - known[1] < NOT_NULL_RECHECK:
            return known[0]
        schema, _, name = src.table.rpartition(".")
        wanted = {c.lower() for c in (src.cursor, src.cursor_fallback) if c}
        try:
            columns = self._run(
                f"{mapping.file}: reading the cursor column's definition",
                lambda conn: sa.inspect(conn).get_columns(name, schema=schema or None),
            )
            answer = any(
                c["name"].lower() in wanted and c.get("nullable") is False for c in columns
            )
        except SourceError:
            answer = False
        self._not_null[what] = (answer, now)
        return answer

    def check(self, mapping: Mapping) -> list[Problem]:
        """Problems a mapping has against the live schema: missing tables or columns, no index."""
        problems: list[Problem] = []
        f = mapping.file
        try:
            insp = sa.inspect(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(
                f"shop database {self.display_url}: cannot connect: {short_cause(exc)}"
            ) from exc
        src = mapping.source
        cols = self._columns(insp, src.table, src.query, f, "source", problems)
        if cols is not None:
            for path, c in mapping.column_uses():
                if c not in cols and c.lower() not in cols:
                    problems.append(Problem(f, path, f"unknown column {c!r} in {src.label}"))
        for child in [*mapping.children.values(), *mapping.changes.values()]:
            path = child.path
            ccols = self._columns(insp, child.table, child.query, f, path, problems)
            if ccols is None:
                continue
            used = [(f"{path}.parent_key", c) for c in child.child_columns]
            used += [(f"{path}.order_by", c) for c in child.order_by]
            if child.cursor:
                used.append((f"{path}.cursor", child.cursor))
            for spec in [*child.fields.values(), *([child.value] if child.value else [])]:
                used += [(spec.path, c) for c in spec.referenced_columns]
            for where, c in used:
                if c not in ccols and c.lower() not in ccols:
                    problems.append(Problem(f, where, f"unknown column {c!r} in the child rows"))
        return problems + cursor_index_problems(insp, mapping)

    def _columns(
        self,
        insp: sa.Inspector,
        table: str | None,
        query: str | None,
        file: str,
        path: str,
        problems: list[Problem],
    ) -> set[str] | None:
        try:
            if table:
                schema, _, name = table.rpartition(".")
                if not insp.has_table(name, schema=schema or None):
                    problems.append(
                        Problem(file, f"{path}.table", f"table {table!r} does not exist")
                    )
                    return None
                return {c["name"] for c in insp.get_columns(name, schema=schema or None)}
            assert query is not None
            with self.engine.connect() as conn:
                result = conn.execute(sa.text(f"SELECT * FROM ({query}) AS src WHERE 1 = 0"))
                return set(result.keys())
        except sa.exc.SQLAlchemyError as exc:
            problems.append(Problem(file, f"{path}.query", f"the query fails: {short_cause(exc)}"))
            return None
