"""The state store's connection: the engine, its transactions, and errors as :class:`StateError`.

Every part of :class:`~connector.state.store.StateStore` builds on :class:`StoreBase`: it opens a
transaction with ``_tx`` or a read with ``_read``, and both turn SQLAlchemy's exceptions into
``StateError`` with a message that names the database without its password.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa

from connector.drivers import require_driver
from connector.errors import StateError, StateUnusableError
from connector.files import create_private_file, make_private_dir, user_name
from connector.state.unusable import unusable

_TIMEOUT_DRIVERS = {"psycopg", "psycopg2", "pymysql", "mysqldb"}


class StoreBase:
    """The engine of the state database. Creating it connects lazily and does not check the
    schema."""

    def __init__(self, url: str | sa.URL, *, busy_timeout: float = 30.0) -> None:
        try:
            self._url = sa.make_url(url)
        except (sa.exc.ArgumentError, ValueError) as exc:
            raise StateError(
                "state database: the URL is not valid (e.g. sqlite:///var/lib/connector/state.db)"
            ) from exc
        self._display = self._url.render_as_string(hide_password=True)
        require_driver(self._url, "state database")
        backend = self._url.get_backend_name()
        options: dict[str, Any] = {}
        if backend == "sqlite":
            self._prepare_sqlite_dir()
        else:
            options["pool_pre_ping"] = True
            if backend in ("mysql", "mariadb"):
                options["pool_recycle"] = 3600
            if self._url.get_driver_name() in _TIMEOUT_DRIVERS and (
                "connect_timeout" not in self._url.query
            ):
                options["connect_args"] = {"connect_timeout": 10}
        try:
            self._engine = sa.create_engine(self._url, **options)
        except (sa.exc.SQLAlchemyError, ImportError) as exc:
            raise StateError(f"state database {self._display}: {self._cause(exc)}") from exc
        if backend == "sqlite":
            memory = self._url.database in (None, "", ":memory:")
            sa.event.listen(self._engine, "connect", _sqlite_pragmas(busy_timeout, not memory))

    @property
    def url_for_display(self) -> str:
        return self._display

    def _prepare_sqlite_dir(self) -> None:
        db = self._url.database
        if not db or db == ":memory:" or db.startswith("file:"):
            return
        parent = Path(db).parent
        try:
            make_private_dir(parent)
            create_private_file(Path(db))  # SQLite gives its -wal and -shm files the same mode
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            if isinstance(exc, FileExistsError | NotADirectoryError):
                reason = "a file stands where a folder is needed"
            raise StateUnusableError(
                f"state database {self._display}: cannot create {db} or its folder: {reason} "
                f"(the user running the connector is {user_name()})"
            ) from exc

    def _cause(self, exc: BaseException) -> str:
        source = getattr(exc, "orig", None) or exc
        lines = str(source).strip().splitlines()
        text = f"{type(source).__name__}: {lines[0].strip()}" if lines else type(source).__name__
        if self._url.password:
            text = text.replace(str(self._url.password), "***")
        return text[:500]

    def _error(self, exc: BaseException) -> StateError | StateUnusableError:
        return unusable(self._url, exc) or StateError(
            f"state database {self._display}: {self._cause(exc)}"
        )

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        """One transaction: committed at the end of the block, rolled back on any exception."""
        with self._state_errors(), self._engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self._state_errors(), self._engine.connect() as conn:
            yield conn

    @contextmanager
    def _state_errors(self) -> Iterator[None]:
        """SQLAlchemy's exceptions raised in the block (its commit included) as StateError."""
        try:
            yield
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _sqlite_pragmas(busy_timeout: float, wal: bool) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cur = dbapi_connection.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if wal:
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")
        finally:
            cur.close()

    return on_connect
