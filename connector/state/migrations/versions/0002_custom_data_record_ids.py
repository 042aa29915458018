"""Custom-data record ids: ShopiMind's own id of each record, learnt to delete it.

ShopiMind deletes custom-data records by its auto-increment record ids only; the connector learns
them from the definition's records list when it first needs to delete (see
:mod:`connector._custom_deletes`) and keeps them here, one row per record key.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Self-contained on purpose (no import of ``connector.state.tables``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MYSQL: dict[str, Any] = {
    f"{dialect}_{option}": value
    for dialect in ("mysql", "mariadb")
    for option, value in (("engine", "InnoDB"), ("charset", "utf8mb4"), ("collate", "utf8mb4_bin"))
}


def _ident() -> Any:
    return sa.String(255).with_variant(postgresql.VARCHAR(255, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "connector_remote_ids",
        sa.Column("mapping", _ident(), primary_key=True),
        sa.Column("key_id", _ident(), primary_key=True),
        sa.Column("remote_id", sa.String(64), nullable=False),
        sa.Column(
            "learned_at",
            sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
            nullable=False,
        ),
        **_MYSQL,
    )


def downgrade() -> None:
    op.drop_table("connector_remote_ids")
