"""The state database: sync cursors, what was sent, rejects, run history, small settings.

One :class:`StateStore` per process. It is the boundary for SQLAlchemy and Alembic: every
public method raises :class:`~connector.errors.StateError` (or ``StateSchemaError``) instead of
their exceptions, with messages that name the database without its password.

Works on SQLite, PostgreSQL (``postgresql+psycopg://``) and MariaDB/MySQL
(``mysql+pymysql://``). Upserts use each dialect's insert-on-conflict, so they are race-free.
Keys longer than 255 characters are stored under a hash (see :mod:`connector.state.tables`).
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from alembic.util import CommandError

from connector.errors import StateError, StateSchemaError
from connector.state import bulk, migrate
from connector.state import tables as t
from connector.state.bulk import BulkUpsert
from connector.state.model import (
    Accepted,
    Cursor,
    MappingStatus,
    Reject,
    RejectRecord,
    RunCounts,
    RunRecord,
)
from connector.timeutil import utc_now

CHUNK = 500
_TIMEOUT_DRIVERS = {"psycopg", "psycopg2", "pymysql", "mysqldb"}

# the two upserts of every row of a pass (announced, then accepted), precompiled: see bulk.py
_RECORD_COLUMNS = ("mapping", "key_id", "long_key", "hash", "status", "updated_at")
_RECORD_KEY = ("mapping", "key_id")
_MARK_SENT = BulkUpsert(
    t.records, _RECORD_COLUMNS, _RECORD_KEY, ("hash", "status", "updated_at", "long_key")
)
_ANNOUNCE = BulkUpsert(t.records, _RECORD_COLUMNS, _RECORD_KEY, ("mapping",))


def _record(mapping: str, key: str, now: datetime, status: str, digest: str | None) -> Any:
    """A records row in ``_RECORD_COLUMNS`` order (as ``tables.record_row``)."""
    kid = t.key_id(key)
    return (mapping, kid, key if kid != key else None, digest, status, now)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


@dataclass(frozen=True)
class PassState:
    """What a pass of one mapping reads from the state database before it starts."""

    cursor: Cursor | None
    meta: dict[str, str | None]  # the settings asked for (None: not set)
    open_rejects: bool  # the mapping has open rejected items


class StateStore:
    """The connector's own database. Creating it connects lazily and does not check the schema."""

    def __init__(self, url: str | sa.URL, *, busy_timeout: float = 30.0) -> None:
        try:
            self._url = sa.make_url(url)
        except (sa.exc.ArgumentError, ValueError) as exc:
            raise StateError(
                "state database: the URL is not valid (e.g. sqlite:///var/lib/connector/state.db)"
            ) from exc
        self._display = self._url.render_as_string(hide_password=True)
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
        # mapping -> id of its newest run row when that row is an idle pass of this process,
        # which the next idle pass of the mapping overwrites (see ``end_run``)
        self._idle_runs: dict[str, int] = {}

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def url_for_display(self) -> str:
        return self._display

    def _prepare_sqlite_dir(self) -> None:
        db = self._url.database
        if not db or db == ":memory:" or db.startswith("file:"):
            return
        parent = Path(db).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise StateError(
                f"state database {self._display}: cannot create directory {parent}: {reason}"
            ) from exc

    def _cause(self, exc: BaseException) -> str:
        source = getattr(exc, "orig", None) or exc
        lines = str(source).strip().splitlines()
        text = f"{type(source).__name__}: {lines[0].strip()}" if lines else type(source).__name__
        if self._url.password:
            text = text.replace(str(self._url.password), "***")
        return text[:500]

    def _error(self, exc: BaseException) -> StateError:
        return StateError(f"state database {self._display}: {self._cause(exc)}")

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        """One transaction: committed at the end of the block, rolled back on any exception."""
        try:
            with self._engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc) from exc

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        try:
            with self._engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

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

    # -- cursors ------------------------------------------------------------------------------

    def get_cursor(self, mapping: str) -> Cursor | None:
        with self._read() as conn:
            text = conn.scalar(
                sa.select(t.cursors.c.cursor_json).where(t.cursors.c.mapping == mapping)
            )
        return None if text is None else Cursor.from_json(text)

    def pass_state(self, mapping: str, meta: Sequence[str] = ()) -> PassState:
        """The cursor of ``mapping``, the settings named in ``meta`` and whether the mapping has
        open rejects, in one statement (a pass that finds nothing runs a few statements in all;
        this saves it one per value)."""
        names = list(dict.fromkeys(meta))
        params = {"mapping": mapping, **{f"meta{i}": n for i, n in enumerate(names)}}
        with self._read() as conn:
            text, rejects, *values = conn.execute(_pass_state_query(len(names)), params).one()
        return PassState(
            cursor=None if text is None else Cursor.from_json(text),
            meta={n: None if v is None else str(v) for n, v in zip(names, values, strict=True)},
            open_rejects=bool(rejects),
        )

    def set_cursor(self, mapping: str, cursor: Cursor | None) -> None:
        """Save the cursor of ``mapping``; ``None`` deletes it (the next pass starts over)."""
        text = None if cursor is None else cursor.to_json()
        with self._tx() as conn:
            if text is None:
                conn.execute(sa.delete(t.cursors).where(t.cursors.c.mapping == mapping))
            else:
                t.save_cursor(conn, mapping, text)

    # -- records and rejects ------------------------------------------------------------------

    def get_hashes(self, mapping: str, keys: Sequence[str]) -> dict[str, str]:
        """Hash of the last accepted payload of each key currently 'sent' (others omitted)."""
        return {
            k: h
            for k, (status, h) in self.get_records(mapping, keys).items()
            if status == t.STATUS_SENT and h is not None
        }

    def get_records(self, mapping: str, keys: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """(status, hash) of each known key; unknown keys are omitted."""
        ids = {t.key_id(k): k for k in keys}
        found: dict[str, tuple[str, str | None]] = {}
        r = t.records.c
        with self._read() as conn:
            for chunk in _chunks(list(ids)):
                rows = conn.execute(
                    sa.select(r.key_id, r.status, r.hash).where(
                        r.mapping == mapping, r.key_id.in_(chunk)
                    )
                )
                found.update((ids[kid], (status, h)) for kid, status, h in rows)
        return found

    def commit_batch(
        self,
        mapping: str,
        *,
        accepted: Sequence[Accepted],
        rejects: Sequence[Reject],
        cursor: Cursor | None,
        resolve: bool = True,
    ) -> None:
        """Record one delivered batch in a single transaction: all of it or nothing.

        ``resolve=False`` skips closing open rejects of the accepted keys (the caller knows the
        mapping has none)."""
        hashes = {a.key: a.hash for a in accepted}  # the last of duplicate keys wins
        for key, digest in hashes.items():
            if len(digest) > 64:
                raise ValueError(f"hash of {key} is longer than 64 characters")
        latest = {r.key: r for r in rejects}
        for r in latest.values():
            if r.mapping != mapping:
                raise ValueError(f"reject of mapping {r.mapping!r} in a batch of {mapping!r}")
        if not (hashes or latest or cursor is not None):
            return  # e.g. an idle pass's re-read window, all unchanged: no empty transaction
        text = None if cursor is None else cursor.to_json()
        now = utc_now()
        records = [
            _record(mapping, key, now, t.STATUS_SENT, digest) for key, digest in hashes.items()
        ]
        with self._tx() as conn:
            _MARK_SENT.run(conn, records)
            if resolve:
                bulk.resolve_rejects(conn, mapping, hashes, now)
            t.store_rejects(conn, mapping, list(latest.values()), now)
            if text is not None:
                t.save_cursor(conn, mapping, text)

    def commit_deleted(self, mapping: str, keys: Sequence[str], cursor: Cursor | None) -> None:
        """Mark ``keys`` deleted (recording them if unknown), resolve their rejects, save cursor."""
        text = None if cursor is None else cursor.to_json()
        now = utc_now()
        unique = list(dict.fromkeys(keys))
        records = [t.record_row(mapping, key, now, t.STATUS_DELETED, None) for key in unique]
        with self._tx() as conn:
            t.mark_records(conn, records, ("status", "updated_at"))
            t.resolve_rejects(conn, mapping, unique, now)
            if text is not None:
                t.save_cursor(conn, mapping, text)

    def announce(self, mapping: str, keys: Sequence[str]) -> None:
        """Write-ahead before a batch is sent: keys not known yet are recorded as 'sent' without
        a hash. If the process dies after ShopiMind accepted the batch but before its commit, the
        reconciliation still knows the keys (and deletes the record if the row disappears),
        while the missing hash makes the next pass send the row again. Known keys are untouched.
        """
        now = utc_now()
        rows = [_record(mapping, k, now, t.STATUS_SENT, None) for k in dict.fromkeys(keys)]
        with self._tx() as conn:
            _ANNOUNCE.run(conn, rows)

    def settle(self, mapping: str, keys: Sequence[str]) -> None:
        """Resolve the open rejects of ``keys``: nothing is left to deliver (the rows were
        soft-deleted before ShopiMind ever accepted them)."""
        with self._tx() as conn:
            t.resolve_rejects(conn, mapping, keys, utc_now())

    def known_keys(
        self, mapping: str, after: str | None, limit: int, status: str = t.STATUS_SENT
    ) -> list[tuple[str, str]]:
        """A page of ``(key, status)`` of records in ``status`` (default 'sent'), by key id,
        after the key ``after``.

        Keys are ordered byte-wise; a key longer than 255 characters sorts by its hash id.
        """
        r = t.records.c
        query = sa.select(r.key_id, r.long_key, r.status).where(
            r.mapping == mapping, r.status == status
        )
        if after is not None:
            query = query.where(r.key_id > t.key_id(after))
        query = query.order_by(r.key_id).limit(limit)
        with self._read() as conn:
            return [(long or kid, st) for kid, long, st in conn.execute(query)]

    def move_records(self, mapping: str, keys: Sequence[str] | None, old: str, new: str) -> int:
        """Records of ``mapping`` in status ``old`` go to ``new``: those of ``keys``, or all of
        them when ``keys`` is None; a record in another status (e.g. re-sent meanwhile) is left
        alone. Hashes are kept; moving to 'deleted' also resolves the keys' open rejects.
        Returns how many records changed (reconciliation: sent → pending_delete → deleted)."""
        r = t.records.c
        now = utc_now()
        stmt = (
            sa.update(t.records)
            .where(r.mapping == mapping, r.status == old)
            .values(status=new, updated_at=now)
        )
        changed = 0
        with self._tx() as conn:
            if keys is None:
                return int(conn.execute(stmt).rowcount or 0)
            unique = list(dict.fromkeys(keys))
            for chunk in _chunks(sorted({t.key_id(k) for k in unique})):
                changed += int(conn.execute(stmt.where(r.key_id.in_(chunk))).rowcount or 0)
            if new == t.STATUS_DELETED:
                t.resolve_rejects(conn, mapping, unique, now)
        return changed

    def list_rejects(
        self, mapping: str | None = None, limit: int = 100, include_resolved: bool = False
    ) -> list[RejectRecord]:
        """Rejects, most recently seen first."""
        c = t.rejects.c
        query = sa.select(t.rejects).order_by(c.last_seen.desc(), c.id.desc()).limit(limit)
        if mapping is not None:
            query = query.where(c.mapping == mapping)
        if not include_resolved:
            query = query.where(c.open_key.is_not(None))
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return [t.reject_record(row) for row in rows]

    def count_rejects(self, mapping: str) -> int:
        c = t.rejects.c
        query = sa.select(sa.func.count()).where(c.mapping == mapping, c.open_key.is_not(None))
        with self._read() as conn:
            return int(conn.scalar(query) or 0)

    def forget(self, mapping: str) -> None:
        """Drop the cursor, records and rejects of ``mapping`` (run history is kept)."""
        with self._tx() as conn:
            for table in (t.cursors, t.records, t.rejects):
                conn.execute(sa.delete(table).where(table.c.mapping == mapping))

    # -- runs and status ----------------------------------------------------------------------

    def start_run(self, mapping: str, started_at: datetime | None = None) -> int:
        """A run row for a pass that is running (outcome and end unset until ``finish_run``)."""
        values = dict.fromkeys(t.RUN_COUNT_COLUMNS, 0)
        self._idle_runs.pop(mapping, None)
        with self._tx() as conn:
            return self._insert_run(conn, mapping, started_at or utc_now(), values)

    def _insert_run(
        self, conn: sa.Connection, mapping: str, started_at: datetime, values: dict[str, Any]
    ) -> int:
        row = {"mapping": mapping, "started_at": started_at, **values}
        result = conn.execute(t.runs.insert(), row)
        key = result.inserted_primary_key
        if key is None:  # pragma: no cover - every backend reports the new id
            raise StateError(f"state database {self._display}: no id for the new run")
        return int(key[0])

    def finish_run(self, run_id: int, counts: RunCounts, outcome: str, message: str | None) -> None:
        self.end_run("", run_id, None, counts, outcome, message)

    def end_run(
        self,
        mapping: str,
        run_id: int | None,
        started_at: datetime | None,
        counts: RunCounts,
        outcome: str,
        message: str | None,
        *,
        idle: bool = False,
        meta: dict[str, str] | None = None,
    ) -> None:
        """Record the end of a pass, and the settings in ``meta``, in one transaction.

        ``run_id`` is the pass's running row (``start_run``), or None when it has none: then
        the row is written whole now (``started_at``: when the pass started). A pass that found
        nothing to do (``idle``) overwrites the row of the previous pass of ``mapping`` when
        that one was idle too and is still the newest row of the mapping, so a service polling
        an unchanged shop keeps one run row per mapping, always the latest pass, instead of
        adding one every poll interval: ``status`` and ``health`` read the same last run and
        last success time as with a row per pass.
        """
        values: dict[str, Any] = {name: getattr(counts, name) for name in t.RUN_COUNT_COLUMNS}
        values.update(ended_at=utc_now(), outcome=outcome, message=message)
        started_at = started_at or values["ended_at"]
        with self._tx() as conn:
            bound = {f"v_{k}": v for k, v in values.items()}
            if run_id is not None:
                conn.execute(_FINISH_RUN, {"run_id": run_id, **bound})
            else:
                previous = self._idle_runs.pop(mapping, None)
                if previous is not None and idle:
                    bound.update(run_id=previous, run_mapping=mapping, v_started_at=started_at)
                    done = conn.execute(_REWRITE_RUN, bound)
                    run_id = previous if done.rowcount == 1 else None
                if run_id is None:
                    run_id = self._insert_run(conn, mapping, started_at, values)
            if meta:
                rows = [{"name": k, "value": v} for k, v in meta.items()]
                t.upsert(conn, t.meta, rows, ("name",), ("value",))
        if idle:  # committed: the next idle pass of the mapping may overwrite it
            self._idle_runs[mapping] = run_id

    def last_run(self, mapping: str) -> RunRecord | None:
        query = sa.select(t.runs).where(t.runs.c.mapping == mapping).order_by(t.runs.c.id.desc())
        with self._read() as conn:
            row = conn.execute(query.limit(1)).mappings().first()
        return None if row is None else t.run_record(row)

    def last_ok_at(self, mapping: str) -> datetime | None:
        """When the last successful run of ``mapping`` ended."""
        with self._read() as conn:
            return _last_ok(conn, [mapping]).get(mapping)

    def status(self, mappings: Sequence[str]) -> list[MappingStatus]:
        """The state of each mapping, in the order given, in a fixed number of queries."""
        names = list(dict.fromkeys(mappings))
        if not names:
            return []
        cu, ru, rj, rc = t.cursors.c, t.runs.c, t.rejects.c, t.records.c
        last_ids = sa.select(sa.func.max(ru.id)).where(ru.mapping.in_(names)).group_by(ru.mapping)
        with self._read() as conn:
            cursors = {
                m: (Cursor.from_json(text), at)
                for m, text, at in conn.execute(
                    sa.select(cu.mapping, cu.cursor_json, cu.saved_at).where(cu.mapping.in_(names))
                )
            }
            runs = {
                row["mapping"]: t.run_record(row)
                for row in conn.execute(sa.select(t.runs).where(ru.id.in_(last_ids))).mappings()
            }
            open_rejects: dict[str, int] = dict(
                conn.execute(
                    sa.select(rj.mapping, sa.func.count())
                    .where(rj.mapping.in_(names), rj.open_key.is_not(None))
                    .group_by(rj.mapping)
                ).all()
            )
            known: dict[tuple[str, str], int] = {
                (m, s): n
                for m, s, n in conn.execute(
                    sa.select(rc.mapping, rc.status, sa.func.count())
                    .where(rc.mapping.in_(names))
                    # a 'sent' record without hash is only announced (see ``announce``)
                    .where(sa.or_(rc.status != t.STATUS_SENT, rc.hash.is_not(None)))
                    .group_by(rc.mapping, rc.status)
                )
            }
            last_ok = _last_ok(conn, names)
        return [
            MappingStatus(
                mapping=m,
                cursor=cursors[m][0] if m in cursors else None,
                cursor_saved_at=cursors[m][1] if m in cursors else None,
                last_run=runs.get(m),
                last_ok_at=last_ok.get(m),
                rejected=open_rejects.get(m, 0),
                known_sent=known.get((m, t.STATUS_SENT), 0),
                known_deleted=known.get((m, t.STATUS_DELETED), 0),
                known_pending=known.get((m, t.STATUS_PENDING_DELETE), 0),
            )
            for m in names
        ]

    # -- meta ---------------------------------------------------------------------------------

    def get_meta(self, name: str) -> str | None:
        with self._read() as conn:
            value = conn.scalar(sa.select(t.meta.c.value).where(t.meta.c.name == name))
        return None if value is None else str(value)

    def set_meta(self, name: str, value: str) -> None:
        with self._tx() as conn:
            t.upsert(conn, t.meta, [{"name": name, "value": value}], ("name",), ("value",))


# -- helpers ------------------------------------------------------------------------------------

# Statements of every pass, built once: building a statement costs SQLAlchemy several times
# more than executing it once it is built (its compiled form is then cached too).


@functools.cache
def _pass_state_query(metas: int) -> sa.Select[Any]:
    cu, me, rj = t.cursors.c, t.meta.c, t.rejects.c
    mapping = sa.bindparam("mapping", type_=cu.mapping.type)
    columns: list[Any] = [
        sa.select(cu.cursor_json).where(cu.mapping == mapping).scalar_subquery(),
        sa.exists().where(rj.mapping == mapping, rj.open_key.is_not(None)),
        *(
            sa.select(me.value).where(me.name == sa.bindparam(f"meta{i}")).scalar_subquery()
            for i in range(metas)
        ),
    ]
    return sa.select(*(c.label(f"v{i}") for i, c in enumerate(columns)))


def _run_update() -> sa.Update:
    columns = ("ended_at", "outcome", "message", *t.RUN_COUNT_COLUMNS)
    return sa.update(t.runs).values(
        {c: sa.bindparam(f"v_{c}", type_=t.runs.c[c].type) for c in columns}
    )


_FINISH_RUN = _run_update().where(t.runs.c.id == sa.bindparam("run_id"))
# the newest row of the mapping only; through a derived table, as MariaDB/MySQL refuse a
# subquery on the table being updated otherwise
_NEWEST_RUN = (
    sa.select(sa.func.max(t.runs.c.id).label("id"))
    .where(t.runs.c.mapping == sa.bindparam("run_mapping"))
    .subquery()
)
_REWRITE_RUN = (
    _run_update()
    .values(started_at=sa.bindparam("v_started_at", type_=t.runs.c.started_at.type))
    .where(
        t.runs.c.id == sa.bindparam("run_id"),
        t.runs.c.id == sa.select(_NEWEST_RUN.c.id).scalar_subquery(),
    )
)


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


def _last_ok(conn: sa.Connection, mappings: Sequence[str]) -> dict[str, datetime]:
    c = t.runs.c
    query = (
        sa.select(c.mapping, sa.func.max(c.ended_at))
        .where(c.mapping.in_(mappings), c.outcome == "ok")
        .group_by(c.mapping)
    )
    return {m: at for m, at in conn.execute(query) if at is not None}
