"""The state database: sync cursors, what was sent, rejects, run history, small settings.

One :class:`StateStore` per process. It is the boundary for SQLAlchemy and Alembic: every
public method raises :class:`~connector.errors.StateError` (or ``StateSchemaError``) instead of
their exceptions, with messages that name the database without its password.

Works on SQLite, PostgreSQL (``postgresql+psycopg://``) and MariaDB/MySQL
(``mysql+pymysql://``). Upserts use each dialect's insert-on-conflict, so they are race-free.
Keys longer than 255 characters are stored under a hash (see :mod:`connector.state.tables`).
"""

from __future__ import annotations

import shlex

from alembic.util import CommandError

from connector.errors import StateSchemaError
from connector.state import migrate
from connector.state._cursors import CursorsMixin, PassState
from connector.state._records import CHUNK, RecordsMixin
from connector.state._runs import RunsMixin

__all__ = ["CHUNK", "PassState", "StateStore"]


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
            try:
                return migrate.upgrade_connection(conn)
            except CommandError as exc:
                raise StateSchemaError(f"state database {self._display}: {exc}") from exc

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
            return
        if current is not None and not migrate.known_revision(current):
            raise self._ahead(current)
        command = "shopimind-connector db upgrade"
        if hint:
            command += " " + (hint if hint.startswith("-") else f"--config {shlex.quote(hint)}")
        where = "has no connector schema yet" if current is None else f"is at revision {current}"
        raise StateSchemaError(
            f"state database {self._display} {where}; this version needs revision {head}: "
            f"run `{command}`"
        )
