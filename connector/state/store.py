"""The state database: sync cursors, what was sent, rejects, run history, small settings.

One :class:`StateStore` per process. It is the boundary for SQLAlchemy and Alembic: every
public method raises :class:`~connector.errors.StateError` (or ``StateSchemaError``) instead of
their exceptions, with messages that name the database without its password.

Works on SQLite, PostgreSQL (``postgresql+psycopg://``) and MariaDB/MySQL
(``mysql+pymysql://``). Upserts use each dialect's insert-on-conflict, so they are race-free.
Keys longer than 255 characters are stored under a hash (see :mod:`connector.state.tables`).
"""

from __future__ import annotations

import logging
import shlex

import sqlalchemy as sa
from alembic.util import CommandError

from connector.errors import StateSchemaError, StateUnusableError
from connector.state import migrate
from connector.state._cursors import CursorsMixin, PassState
from connector.state._records import CHUNK, RecordsMixin
from connector.state._runs import RunsMixin

__all__ = ["CHUNK", "PassState", "StateStore"]

log = logging.getLogger("connector")


class StateStore(CursorsMixin, RecordsMixin, RunsMixin):
    """The connector's own database. Creating it connects lazily and does not check the schema.

    Its parts, each in a private module of this package on top of the engine and transactions
    of :class:`~connector.state._base.StoreBase`: cursors and settings (``_cursors``), records
    and rejects (``_records``), run history and status (``_runs``); the schema is here.
    """

    # -- schema -------------------------------------------------------------------------------

    @staticmethod
    def head_revision() -> str:
        return migrate.head_revision()

    def schema_revision(self) -> str | None:
        with self._read() as conn:
            return migrate.current_revision(conn)

    def upgrade(self) -> tuple[str | None, str]:
        """Bring the schema to the newest revision (a no-op when it already is)."""
        with self._tx() as conn:
            before = migrate.current_revision(conn)
            if before is not None and not migrate.known_revision(before):
                raise self._ahead(before)
            if before is None:
                self._adopt_unversioned(conn)
            try:
                after = migrate.upgrade_connection(conn)[1]
            except CommandError as exc:
                raise StateSchemaError(f"state database {self._display}: {exc}") from exc
            self._ensure_complete(conn, after)
            return before, after

    def _ensure_complete(self, conn: sa.Connection, revision: str) -> None:
        """A database at the newest revision lacking some of its tables or columns (dropped by
        hand) fails every pass: say so once, with what to do, instead."""
        missing = migrate.schema_gaps(conn)[1]
        if missing:
            raise StateUnusableError(
                f"state database {self._display} records schema revision {revision} but lacks "
                f"{', '.join(missing[:10])}: restore it from a backup, or drop the connector's "
                "tables (for SQLite: delete the file) and run `shopimind-connector db upgrade` "
                "to start an empty one (every mapping then sends all its rows again)"
            )

    def _adopt_unversioned(self, conn: sa.Connection) -> None:
        """Tables without a schema version (an interrupted first upgrade, a version table
        dropped by hand): recorded as the newest revision when they match it; else no guess."""
        present, missing = migrate.schema_gaps(conn)
        if not present:
            return
        head = self.head_revision()
        if missing:
            raise StateUnusableError(
                f"state database {self._display} holds connector tables ({', '.join(present)}) "
                f"but no schema version, and they do not match revision {head} (missing: "
                f"{', '.join(missing[:10])}): it was left half-created. If it holds nothing you "
                "need, drop those tables (for SQLite: delete the file) and run `shopimind-"
                "connector db upgrade` again; otherwise restore it from a backup"
            )
        migrate.stamp_head(conn)
        log.warning(
            "state database %s had the connector's tables but no schema version; they match "
            "revision %s, which is now recorded",
            self._display,
            head,
        )

    def _ahead(self, revision: str) -> StateSchemaError:
        return StateSchemaError(
            f"state database {self._display} is at schema revision {revision}, which this "
            f"version of the connector does not know (it ships up to {self.head_revision()}); "
            "it was upgraded by a newer version: run that version"
        )

    def ensure_current(self, hint: str | None = None) -> None:
        """Raise :class:`StateSchemaError` unless the schema is at the newest revision.

        ``hint`` is the config file the command was given (shown as ``--config <hint>`` in the
        advice), or extra command-line text when it starts with ``-``.
        """
        current = self.schema_revision()
        head = self.head_revision()
        if current == head:
            with self._read() as conn:
                self._ensure_complete(conn, head)
            return
        if current is not None and not migrate.known_revision(current):
            raise self._ahead(current)
        command = "shopimind-connector db upgrade"
        if hint:
            command += " " + (hint if hint.startswith("-") else f"--config {shlex.quote(hint)}")
        where = f"is at revision {current}"
        if current is None:
            with self._read() as conn:
                present = migrate.schema_gaps(conn)[0]
            where = (
                "has no connector schema yet"
                if not present
                else "holds the connector's tables but no schema version (an interrupted upgrade?)"
            )
        raise StateSchemaError(
            f"state database {self._display} {where}; this version needs revision {head}: "
            f"run `{command}`"
        )
