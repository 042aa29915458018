"""Alembic, run programmatically: the migration scripts live in ``connector/state/migrations``.

There is no ``alembic.ini``. :func:`alembic_config` builds the configuration in code; the open
connection is handed to ``migrations/env.py`` through ``config.attributes["connection"]``, so
a password never goes through Alembic's ``configparser`` (where ``%`` would need escaping).

To write a new revision while developing::

    python -c "from connector.state.migrate import alembic_config; from alembic import command;\
 command.revision(alembic_config(url='sqlite:///dev.sqlite'), 'message', rev_id='0002')"

then edit ``versions/0002_*.py`` by hand (keep it self-contained) and update ``tables.py``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

VERSION_TABLE = "connector_alembic_version"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Config:
    """An Alembic configuration for the state migrations, bound to a connection or a URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this version of the connector ships."""
    head = _scripts().get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def known_revision(revision: str) -> bool:
    """Whether ``revision`` is one of the shipped revisions (False: made by a newer version)."""
    return any(script.revision == revision for script in _scripts().walk_revisions())


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database behind ``connection`` is at (None: no connector schema)."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def schema_gaps(connection: sa.Connection) -> tuple[list[str], list[str]]:
    """The connector tables the database holds, and what of the newest schema it lacks
    (``table`` or ``table.column``)."""
    from connector.state import tables

    inspector = sa.inspect(connection)
    existing = set(inspector.get_table_names())
    present = sorted(name for name in tables.metadata.tables if name in existing)
    missing: list[str] = []
    for name, table in sorted(tables.metadata.tables.items()):
        if name not in existing:
            missing.append(name)
            continue
        columns = {c["name"] for c in inspector.get_columns(name)}
        missing += [f"{name}.{c.name}" for c in table.columns if c.name not in columns]
    return present, missing


def stamp_head(connection: sa.Connection) -> None:
    """Record the newest revision without running any migration."""
    command.stamp(alembic_config(connection=connection), "head")


def upgrade_connection(connection: sa.Connection) -> tuple[str | None, str]:
    """Upgrade to head on an open connection; returns the revisions (before, after)."""
    before = current_revision(connection)
    if before != head_revision():
        command.upgrade(alembic_config(connection=connection), "head")
    after = current_revision(connection)
    if after is None:  # pragma: no cover - Alembic always stamps the version table
        raise RuntimeError("the upgrade did not record a revision")
    return before, after


def upgrade(url: str) -> tuple[str | None, str]:
    """Open the state database at ``url``, upgrade it to head; returns (before, after)."""
    from connector.state.store import StateStore

    with StateStore(url) as store:
        return store.upgrade()
