"""Alembic environment of the state database, run programmatically by ``connector.state.migrate``.

There is no ``alembic.ini``: the caller passes an open connection in
``config.attributes["connection"]`` (or, for ``alembic`` command-line use while developing, a
URL in the ``sqlalchemy.url`` main option). Offline (SQL script) mode is not supported.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from connector.state.migrate import VERSION_TABLE


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=None,
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection or sqlalchemy.url given to the migration environment")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline migrations are not supported; connect to the state database")
run_migrations_online()
