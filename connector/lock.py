"""One instance per state database: ``run`` and ``sync`` hold a lock that the OS or the database
releases when the holder dies (even by SIGKILL or a power cut of its host's connection).

* SQLite: ``fcntl.flock`` on ``<state file>.lock`` beside the database; the holder (host, pid,
  command, since) is written into that file.
* PostgreSQL: ``pg_try_advisory_lock`` on a dedicated connection kept open for the lifetime of
  the process; MariaDB/MySQL: ``GET_LOCK(name, 0)`` likewise. The holder is written to the state
  database's meta table (when its schema exists).

A refused lock raises :class:`~connector.errors.LockedError` (exit code 1) naming the holder.
Long-running holders call :meth:`InstanceLock.check` now and then: it keeps the dedicated
connection alive (MariaDB closes idle connections after ``wait_timeout``) and takes the lock
again after the connection was lost, or raises ``LockedError`` when someone else took it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connector.drivers import require_driver
from connector.errors import LockedError, StateError, StateUnusableError
from connector.files import make_private_dir, user_name
from connector.state.unusable import unusable

META_NAME = "instance_lock"
LOCK_NAME = "shopimind-connector"


def holder_info(command: str) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": command,
        "since": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
    }


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "holder unknown"
    return (
        f"`{holder.get('command', '?')}` with pid {holder.get('pid', '?')} on host "
        f"{holder.get('host', '?')}, running since {holder.get('since', '?')}"
    )


class InstanceLock:
    """Held from :func:`acquire` until :meth:`release` (or process death)."""

    def __init__(self, where: str, command: str) -> None:
        self.where = where
        self.info = holder_info(command)

    def check(self) -> None:  # pragma: no cover - overridden
        pass

    def release(self) -> None:  # pragma: no cover - overridden
        pass

    def __enter__(self) -> InstanceLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def refused(self, holder: dict[str, Any] | None) -> LockedError:
        return LockedError(
            f"another connector instance is using the state database {self.where}: "
            f"{describe(holder)}. Two instances would send the same changes twice; stop the "
            "other one first (e.g. `systemctl stop shopimind-connector`) or wait for it to end."
        )


class NoLock(InstanceLock):
    """An in-memory SQLite state database belongs to this process alone."""

    def check(self) -> None:
        pass

    def release(self) -> None:
        pass


class FileLock(InstanceLock):
    def __init__(self, path: Path, where: str, command: str) -> None:
        super().__init__(where, command)
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> FileLock:
        try:
            make_private_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateUnusableError(
                f"state database {self.where}: cannot open the lock file {self.path}: "
                f"{exc.strerror} (the user running the connector, {user_name()}, needs read "
                f"and write access to the folder {self.path.parent})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise self.refused(holder) from None
        except OSError as exc:
            os.close(fd)
            raise StateError(
                f"state database {self.where}: cannot lock {self.path}: {exc.strerror}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(self.info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def check(self) -> None:
        pass

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor drops the flock


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class ServerLock(InstanceLock):
    """Advisory lock of PostgreSQL or MariaDB/MySQL on a dedicated connection."""

    def __init__(self, url: sa.URL, where: str, command: str) -> None:
        super().__init__(where, command)
        self.url = url
        self.dialect = url.get_backend_name()
        database = url.database or ""
        digest = hashlib.sha256(f"{LOCK_NAME}:{database}".encode()).digest()
        self.pg_key = int.from_bytes(digest[:8], "big", signed=True)
        self.my_name = f"{LOCK_NAME}:{database}"[:64]
        options: dict[str, Any] = {}
        if url.get_driver_name() in ("psycopg", "psycopg2", "pymysql", "mysqldb"):
            options["connect_args"] = {"connect_timeout": 10}
        self._engine = sa.create_engine(url, poolclass=sa.pool.NullPool, **options)
        self._conn: sa.Connection | None = None

    def _try(self, conn: sa.Connection) -> bool:
        if self.dialect == "postgresql":
            got = conn.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.pg_key})
        else:
            got = conn.scalar(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": self.my_name})
        conn.commit()
        return bool(got)

    def acquire(self) -> ServerLock:
        try:
            conn = self._engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            self._engine.dispose()
            raise self._error("cannot connect to take the instance lock", exc) from None
        try:
            got = self._try(conn)
        except sa.exc.SQLAlchemyError as exc:
            conn.close()
            self._engine.dispose()
            raise self._error("cannot take the instance lock", exc) from None
        if not got:
            conn.close()
            holder = self._read_holder()
            self._engine.dispose()
            raise self.refused(holder)
        self._conn = conn
        self._write_holder()
        return self

    def check(self) -> None:
        """Keep the lock connection alive; take the lock again if the connection was lost."""
        conn = self._conn
        if conn is None:
            return
        try:
            conn.scalar(sa.text("SELECT 1"))
            conn.commit()
            return
        except sa.exc.SQLAlchemyError:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.invalidate()
                conn.close()
            self._conn = None
        try:
            conn = self._engine.connect()
            got = self._try(conn)
        except sa.exc.SQLAlchemyError:
            return  # the server is away; the next check tries again (passes fail meanwhile)
        if not got:
            conn.close()
            raise self.refused(self._read_holder())
        self._conn = conn
        self._write_holder()

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                if self.dialect == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.pg_key})
                else:
                    conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": self.my_name})
                conn.commit()
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.close()
        self._engine.dispose()

    def _write_holder(self) -> None:
        """Best effort: the meta table exists once `db upgrade` ran."""
        from connector.state import tables as t

        try:
            with self._engine.begin() as conn:
                t.upsert(
                    conn, t.meta, [{"name": META_NAME, "value": json.dumps(self.info)}],
                    ("name",), ("value",),
                )  # fmt: skip
        except sa.exc.SQLAlchemyError:
            pass

    def _read_holder(self) -> dict[str, Any] | None:
        from connector.state import tables as t

        try:
            with self._engine.connect() as conn:
                raw = conn.scalar(sa.select(t.meta.c.value).where(t.meta.c.name == META_NAME))
            data = json.loads(raw) if raw else None
        except (sa.exc.SQLAlchemyError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _error(self, what: str, exc: BaseException) -> StateError | StateUnusableError:
        refused = unusable(self.url, exc)
        if refused is not None:
            return refused
        source = getattr(exc, "orig", None) or exc
        first = (str(source).strip().splitlines() or [""])[0]
        if self.url.password:
            first = first.replace(str(self.url.password), "***")
        return StateError(f"state database {self.where}: {what}: {type(source).__name__}: {first}")


def acquire(state_url: str | sa.URL, command: str) -> InstanceLock:
    """Take the instance lock of the state database at ``state_url`` or raise LockedError."""
    url = sa.make_url(state_url)
    where = url.render_as_string(hide_password=True)
    backend = url.get_backend_name()
    if backend == "sqlite":
        db = url.database or ""
        if db in ("", ":memory:") or db.startswith("file:"):
            return NoLock(where, command)
        return FileLock(Path(db + ".lock"), where, command).acquire()
    if backend in ("postgresql", "mysql", "mariadb"):
        require_driver(url, "state database")
        return ServerLock(url, where, command).acquire()
    raise StateError(f"state database {where}: no instance lock for the {backend} dialect")
