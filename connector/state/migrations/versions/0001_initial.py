"""Initial state schema: cursors, records, rejects, runs, meta.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Self-contained on purpose (no import of ``connector.state.tables``): a migration describes the
schema as it was at this revision, whatever the tables module says later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.types import TypeEngine

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MYSQL: dict[str, Any] = {
    f"{dialect}_{option}": value
    for dialect in ("mysql", "mariadb")  # a mariadb:// URL ignores mysql_ options
    for option, value in (("engine", "InnoDB"), ("charset", "utf8mb4"), ("collate", "utf8mb4_bin"))
}


def _ident(length: int = 255) -> TypeEngine[str]:
    return sa.String(length).with_variant(postgresql.VARCHAR(length, collation="C"), "postgresql")


def _text() -> TypeEngine[str]:
    return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def _instant() -> TypeEngine[Any]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "connector_cursors",
        sa.Column("mapping", _ident(), primary_key=True),
        sa.Column("cursor_json", _text(), nullable=False),
        sa.Column("saved_at", _instant(), nullable=False),
        **_MYSQL,
    )
    op.create_table(
        "connector_records",
        sa.Column("mapping", _ident(), primary_key=True),
        sa.Column("key_id", _ident(), primary_key=True),
        sa.Column("long_key", _text(), nullable=True),
        sa.Column("hash", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("updated_at", _instant(), nullable=False),
        **_MYSQL,
    )
    op.create_index(
        "ix_connector_records_status", "connector_records", ["mapping", "status", "key_id"]
    )
    op.create_table(
        "connector_rejects",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("mapping", _ident(), nullable=False),
        sa.Column("key_id", _ident(), nullable=False),
        sa.Column("open_key", _ident(), nullable=True),
        sa.Column("long_key", _text(), nullable=True),
        sa.Column("payload_json", _text(), nullable=False),
        sa.Column("errors_json", _text(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("first_seen", _instant(), nullable=False),
        sa.Column("last_seen", _instant(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("resolved_at", _instant(), nullable=True),
        **_MYSQL,
    )
    op.create_index(
        "ux_connector_rejects_open", "connector_rejects", ["mapping", "open_key"], unique=True
    )
    op.create_index("ix_connector_rejects_key", "connector_rejects", ["mapping", "key_id"])
    op.create_table(
        "connector_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("mapping", _ident(), nullable=False),
        sa.Column("started_at", _instant(), nullable=False),
        sa.Column("ended_at", _instant(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("message", _text(), nullable=True),
        *(
            sa.Column(name, sa.Integer(), nullable=False)
            for name in (
                "rows_read",
                "items_sent",
                "accepted",
                "rejected",
                "unchanged",
                "deleted",
                "requests",
            )
        ),
        **_MYSQL,
    )
    op.create_index("ix_connector_runs_mapping", "connector_runs", ["mapping", "id"])
    op.create_index(
        "ix_connector_runs_outcome", "connector_runs", ["mapping", "outcome", "ended_at"]
    )
    op.create_table(
        "connector_meta",
        sa.Column("name", _ident(), primary_key=True),
        sa.Column("value", _text(), nullable=False),
        **_MYSQL,
    )


def downgrade() -> None:
    for table in (
        "connector_meta",
        "connector_runs",
        "connector_rejects",
        "connector_records",
        "connector_cursors",
    ):
        op.drop_table(table)
