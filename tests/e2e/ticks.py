"""A one-table shop for focused change-capture tests: ``ticks(id, name, ts, created)`` mapped to
ShopiMind order carriers (one row = one item, key ``carrier_id``), with the column type of ``ts``
chosen per test (second-precision, microsecond, ``timestamptz``, nullable)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from connector import timeutil
from tests.e2e.harness import TZ, Env

RESOURCE = "orders_carriers"

MAPPING = """resource = "orders_carriers"

[source]
table = "ticks"
key = ["id"]
cursor = "ts"
lookback = "{lookback}"
{extra}

[fields]
carrier_id = "id"
name = "name"
is_active = {{ const = true }}
created_at = "created"
updated_at = {{ coalesce = ["ts", "created"] }}
"""


def micro_ts() -> sa.types.TypeEngine[Any]:
    """Naive timestamps with microseconds on every backend."""
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def second_ts() -> sa.types.TypeEngine[Any]:
    """Whole-second timestamps: MariaDB's default ``DATETIME`` (no fsp), PostgreSQL
    ``timestamp(0)``; SQLite stores what it is given (the tests give whole seconds)."""
    return (
        sa.DateTime()
        .with_variant(mysql.DATETIME(), "mysql", "mariadb")
        .with_variant(postgresql.TIMESTAMP(precision=0), "postgresql")
    )


def aware_ts() -> sa.types.TypeEngine[Any]:
    """``timestamptz`` on PostgreSQL; naive microsecond timestamps elsewhere."""
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def create(env: Env, ts_type: sa.types.TypeEngine[Any], *, nullable: bool = False) -> sa.Table:
    md = sa.MetaData()
    table = sa.Table(
        "ticks",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("ts", ts_type, nullable=nullable),
        sa.Column("created", micro_ts(), nullable=False),
        sa.Index("ix_ticks_ts", "ts"),
    )
    md.create_all(env.engine)
    return table


def use(env: Env, *, lookback: str = "5m", extra: str = "") -> None:
    """Sync only the ticks mapping."""
    env.use_mappings([])
    env.add_mapping("ticks", MAPPING.format(lookback=lookback, extra=extra))


def insert(env: Env, table: sa.Table, rows: Sequence[tuple[int, Any]], name: str = "t") -> None:
    """Rows ``(id, ts)``; ``created`` is the ts (or a fixed old time when ts is NULL)."""
    old = datetime(2020, 1, 1)
    with env.engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "id": i,
                    "name": f"{name}{i}",
                    "ts": ts,
                    "created": old if ts is None else _naive(ts),
                }
                for i, ts in rows
            ],
        )


def _naive(ts: Any) -> datetime:
    if isinstance(ts, datetime) and ts.tzinfo is not None:
        return ts.astimezone(TZ).replace(tzinfo=None)
    assert isinstance(ts, datetime)
    return ts


def sent(env: Env) -> dict[str, dict[str, Any]]:
    return env.sandbox.records(RESOURCE)


def counts(env: Env) -> dict[str, int]:
    return env.sandbox.context.store.send_counts(RESOURCE)


def iso(ts: datetime) -> str:
    """The API form of a shop timestamp (naive = shop-local wall clock)."""
    return timeutil.iso_utc(timeutil.to_utc(ts, TZ))


def cursor_value(env: Env) -> Any:
    """The saved cursor value as a datetime (SQLite keeps it as text)."""
    with env.state() as st:
        cur = st.get_cursor("ticks")
    assert cur is not None
    value = cur.value
    return timeutil.parse_timestamp(value) if isinstance(value, str) else value
