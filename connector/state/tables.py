"""SQLAlchemy Core tables of the state database (the schema itself is created by migrations).

Every table name starts with ``connector_`` so the state database may share a database with
other applications. These definitions must describe exactly what the newest migration creates
(a unit test compares them). The statement helpers at the end are shared by the store and
run inside its transactions.

Conventions, chosen to behave the same on SQLite, PostgreSQL and MariaDB:

* identifiers (mapping names, record keys) are ``VARCHAR(255)`` compared byte-wise: collation
  ``"C"`` on PostgreSQL, ``utf8mb4_bin`` on MariaDB, SQLite's default ``BINARY``. So keys are
  case-sensitive everywhere and ``known_keys`` pages in the same order on every backend.
* a record key longer than 255 characters is stored as ``key_id = "sha256:<hex>"`` of the key,
  the full text kept in ``long_key`` (see :func:`key_id`). Key JSON always starts with ``[``, so
  a hashed id cannot collide with a real key.
* one open reject per (mapping, key) is enforced by the database: ``open_key`` is the key id
  while the reject is open and NULL once resolved, under a unique index (NULLs never clash).
* instants are stored as naive UTC (``DATETIME(6)`` on MariaDB for microseconds) and come back
  as aware UTC ``datetime`` values (:class:`UTCDateTime`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from connector.errors import StateError
from connector.state.model import Reject, RejectRecord, RunCounts, RunRecord
from connector.timeutil import utc_now

KEY_MAX = 255
STATUS_SENT = "sent"
STATUS_DELETED = "deleted"
STATUS_PENDING_DELETE = "pending_delete"

MYSQL_TABLE_ARGS: dict[str, Any] = {
    f"{dialect}_{option}": value
    for dialect in ("mysql", "mariadb")  # a mariadb:// URL ignores mysql_ options
    for option, value in (("engine", "InnoDB"), ("charset", "utf8mb4"), ("collate", "utf8mb4_bin"))
}


def key_id(key: str) -> str:
    """The indexed identity of a key: the key itself, or ``sha256:<hex>`` when it is too long."""
    if len(key) <= KEY_MAX:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def ident(length: int = KEY_MAX) -> TypeEngine[str]:
    """A byte-wise compared ``VARCHAR`` (MariaDB gets ``utf8mb4_bin`` from the table)."""
    return sa.String(length).with_variant(postgresql.VARCHAR(length, collation="C"), "postgresql")


def long_text() -> TypeEngine[str]:
    """Unbounded text (``LONGTEXT`` on MariaDB, whose ``TEXT`` stops at 64 KiB)."""
    return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


class UTCDateTime(TypeDecorator[datetime]):
    """Naive UTC in the database, aware UTC in Python."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the state database stores aware datetimes only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # pragma: no cover - drivers return datetimes
            raise TypeError(f"expected a datetime from the state database, got {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData()

cursors = sa.Table(
    "connector_cursors",
    metadata,
    sa.Column("mapping", ident(), primary_key=True),
    sa.Column("cursor_json", long_text(), nullable=False),
    sa.Column("saved_at", UTCDateTime(), nullable=False),
    **MYSQL_TABLE_ARGS,
)

records = sa.Table(
    "connector_records",
    metadata,
    sa.Column("mapping", ident(), primary_key=True),
    sa.Column("key_id", ident(), primary_key=True),
    sa.Column("long_key", long_text(), nullable=True),
    sa.Column("hash", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_connector_records_status", "mapping", "status", "key_id"),
    **MYSQL_TABLE_ARGS,
)

# ``open_key`` is ``key_id`` while the reject is open and NULL once resolved: the unique index
# on (mapping, open_key) allows one open reject per key (NULLs never collide) and gives the
# upsert its conflict target on every backend.
rejects = sa.Table(
    "connector_rejects",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("mapping", ident(), nullable=False),
    sa.Column("key_id", ident(), nullable=False),
    sa.Column("open_key", ident(), nullable=True),
    sa.Column("long_key", long_text(), nullable=True),
    sa.Column("payload_json", long_text(), nullable=False),
    sa.Column("errors_json", long_text(), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("first_seen", UTCDateTime(), nullable=False),
    sa.Column("last_seen", UTCDateTime(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Index("ux_connector_rejects_open", "mapping", "open_key", unique=True),
    sa.Index("ix_connector_rejects_key", "mapping", "key_id"),
    **MYSQL_TABLE_ARGS,
)

runs = sa.Table(
    "connector_runs",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("mapping", ident(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("message", long_text(), nullable=True),
    sa.Column("rows_read", sa.Integer(), nullable=False),
    sa.Column("items_sent", sa.Integer(), nullable=False),
    sa.Column("accepted", sa.Integer(), nullable=False),
    sa.Column("rejected", sa.Integer(), nullable=False),
    sa.Column("unchanged", sa.Integer(), nullable=False),
    sa.Column("deleted", sa.Integer(), nullable=False),
    sa.Column("requests", sa.Integer(), nullable=False),
    sa.Index("ix_connector_runs_mapping", "mapping", "id"),
    sa.Index("ix_connector_runs_outcome", "mapping", "outcome", "ended_at"),
    **MYSQL_TABLE_ARGS,
)

meta = sa.Table(
    "connector_meta",
    metadata,
    sa.Column("name", ident(), primary_key=True),
    sa.Column("value", long_text(), nullable=False),
    **MYSQL_TABLE_ARGS,
)

# ShopiMind's own id of a record, where the API deletes by it only (custom-data records): learnt
# from the records list when a delete first needs it (connector._custom_deletes)
remote_ids = sa.Table(
    "connector_remote_ids",
    metadata,
    sa.Column("mapping", ident(), primary_key=True),
    sa.Column("key_id", ident(), primary_key=True),
    sa.Column("remote_id", sa.String(64), nullable=False),
    sa.Column("learned_at", UTCDateTime(), nullable=False),
    **MYSQL_TABLE_ARGS,
)

RUN_COUNT_COLUMNS = (
    "rows_read",
    "items_sent",
    "accepted",
    "rejected",
    "unchanged",
    "deleted",
    "requests",
)


# -- statements shared by the store, run inside its transactions ---------------------------------


def _json(value: Any) -> str:
    """JSON for a reject's payload/errors; never fails (diagnostics must not block a batch)."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return json.dumps({"unserialisable": repr(value)})


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    conflict: Sequence[str],
    copy: Sequence[str],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Insert ``rows`` in one executemany; where a row clashes on the unique ``conflict``
    columns, update the ``copy`` columns from the new row and set ``extra``, whose expressions
    may refer to the existing row through ``table.c``. ``extra`` must not hold bound parameters
    (use ``sa.literal_column``): PyMySQL rewrites the executemany into one multi-row INSERT and
    cannot format parameters after ``VALUES``. Rows must not repeat a key (PostgreSQL refuses to
    update one row twice in a statement)."""
    if not rows:
        return
    name = conn.dialect.name
    stmt: Any
    if name in ("sqlite", "postgresql"):
        stmt = (sqlite.insert if name == "sqlite" else postgresql.insert)(table)
        set_ = {c: stmt.excluded[c] for c in copy} | dict(extra or {})
        stmt = stmt.on_conflict_do_update(index_elements=list(conflict), set_=set_)
    elif name in ("mysql", "mariadb"):
        stmt = mysql.insert(table)
        set_ = {c: stmt.inserted[c] for c in copy} | dict(extra or {})
        stmt = stmt.on_duplicate_key_update(set_)
    else:
        raise StateError(f"state database: unsupported database type {name!r}")
    # the same key order in every writer keeps concurrent batches from deadlocking
    ordered = sorted(rows, key=lambda r: tuple(str(r[c]) for c in conflict))
    conn.execute(stmt, [dict(r) for r in ordered])


def record_row(
    mapping: str, key: str, now: datetime, status: str, digest: str | None
) -> dict[str, Any]:
    kid = key_id(key)
    return {
        "mapping": mapping,
        "key_id": kid,
        "long_key": key if kid != key else None,
        "hash": digest,
        "status": status,
        "updated_at": now,
    }


def mark_records(conn: sa.Connection, rows: list[dict[str, Any]], copy: Sequence[str]) -> None:
    """Upsert record rows built by :func:`record_row`, updating the ``copy`` columns."""
    upsert(conn, records, rows, ("mapping", "key_id"), copy)


def resolve_rejects(conn: sa.Connection, mapping: str, keys: Iterable[str], now: datetime) -> None:
    """Close the open rejects of ``keys`` (they were accepted or deleted)."""
    params = [{"b_key": kid} for kid in sorted({key_id(k) for k in keys})]
    if not params:
        return
    c = rejects.c
    stmt = (
        sa.update(rejects)
        .where(c.mapping == mapping, c.open_key == sa.bindparam("b_key"))
        .values(open_key=None, resolved_at=now)
    )
    conn.execute(stmt, params)


def store_rejects(
    conn: sa.Connection, mapping: str, items: Sequence[Reject], now: datetime
) -> None:
    """Open a reject per key, or refresh the open one (one more attempt)."""
    rows = []
    for r in items:
        kid = key_id(r.key)
        rows.append(
            {
                "mapping": mapping,
                "key_id": kid,
                "open_key": kid,
                "long_key": r.key if kid != r.key else None,
                "payload_json": _json(r.payload),
                "errors_json": _json(r.errors),
                "source": r.source,
                "first_seen": now,
                "last_seen": now,
                "attempts": 1,
                "resolved_at": None,
            }
        )
    copy = ("payload_json", "errors_json", "source", "last_seen")
    upsert(
        conn,
        rejects,
        rows,
        ("mapping", "open_key"),
        copy,
        {"attempts": rejects.c.attempts + sa.literal_column("1")},
    )


def save_cursor(conn: sa.Connection, mapping: str, text: str) -> None:
    row = {"mapping": mapping, "cursor_json": text, "saved_at": utc_now()}
    upsert(conn, cursors, [row], ("mapping",), ("cursor_json", "saved_at"))


# -- rows read back -------------------------------------------------------------------------------


def run_record(row: sa.RowMapping) -> RunRecord:
    return RunRecord(
        id=row["id"],
        mapping=row["mapping"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        outcome=row["outcome"],
        message=row["message"],
        counts=RunCounts(**{name: row[name] for name in RUN_COUNT_COLUMNS}),
    )


def reject_record(row: sa.RowMapping) -> RejectRecord:
    return RejectRecord(
        id=row["id"],
        mapping=row["mapping"],
        key=row["long_key"] or row["key_id"],
        payload=json.loads(row["payload_json"]),
        errors=json.loads(row["errors_json"]),
        source=row["source"],
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        attempts=row["attempts"],
    )
