"""Run history and status: a row per pass (or one per mapping for idle passes), and the report
of every mapping's state that ``status`` and ``health`` read."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from connector.errors import StateError
from connector.state import tables as t
from connector.state._base import StoreBase
from connector.state.model import Cursor, MappingStatus, RunCounts, RunRecord
from connector.timeutil import utc_now

log = logging.getLogger("connector.state")


class RunsMixin(StoreBase):
    """The ``runs`` table, and ``status``: the state of each mapping in a few queries."""

    def __init__(self, url: str | sa.URL, *, busy_timeout: float = 30.0) -> None:
        super().__init__(url, busy_timeout=busy_timeout)
        # mapping -> id of its newest run row when that row is an idle pass of this process,
        # which the next idle pass of the mapping overwrites (see ``end_run``)
        self._idle_runs: dict[str, int] = {}
        # seconds: an idle pass's rewrite of its run row waits up to this long to share the
        # transaction of another pass's end (0: every pass ends in its own transaction; the
        # service sets it, see ``end_run``)
        self.idle_rows_every = 0.0
        self._deferred: dict[str, _Deferred] = {}
        self._deferred_lock = threading.Lock()
        self._written_at = 0.0  # monotonic time of the last end_run transaction

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
        previous = self._idle_runs.pop(mapping, None)
        with self._deferred_lock:
            self._deferred.pop(mapping, None)  # this end is newer
            if (
                idle
                and run_id is None
                and previous is not None
                and time.monotonic() - self._written_at < self.idle_rows_every
            ):
                self._deferred[mapping] = _Deferred(previous, started_at, values, meta or {})
                self._idle_runs[mapping] = previous
                return
            deferred, self._deferred = self._deferred, {}
        try:
            with self._tx() as conn:
                if run_id is not None:
                    conn.execute(_FINISH_RUN, {"run_id": run_id, **_bound(values)})
                elif previous is not None and idle:
                    run_id = self._rewrite_or_insert(conn, mapping, previous, started_at, values)
                else:
                    run_id = self._insert_run(conn, mapping, started_at, values)
                if meta:
                    _set_meta(conn, meta)
                rewritten = self._write_deferred(conn, deferred)
        except BaseException:
            self._requeue(deferred)
            raise
        self._written_at = time.monotonic()
        if idle:  # committed: the next idle pass of the mapping may overwrite it
            self._idle_runs[mapping] = run_id
        self._idle_runs.update(rewritten)

    def flush_idle_runs(self, older_than: float = 0.0) -> None:
        """Write the idle passes' run rows still waiting (see ``end_run``), when the last end
        was written ``older_than`` seconds ago or more. The service calls it every second and
        when it stops; closing the store does too."""
        with self._deferred_lock:
            if not self._deferred or time.monotonic() - self._written_at < older_than:
                return
            deferred, self._deferred = self._deferred, {}
        try:
            with self._tx() as conn:
                rewritten = self._write_deferred(conn, deferred)
        except BaseException:
            self._requeue(deferred)
            raise
        self._written_at = time.monotonic()
        self._idle_runs.update(rewritten)

    def _write_deferred(
        self, conn: sa.Connection, deferred: dict[str, _Deferred]
    ) -> dict[str, int]:
        """Write idle ends that waited; each mapping's run row id afterwards."""
        ids: dict[str, int] = {}
        for name, d in deferred.items():
            ids[name] = self._rewrite_or_insert(conn, name, d.run_id, d.started_at, d.values)
            if d.meta:
                _set_meta(conn, d.meta)
        return ids

    def _requeue(self, deferred: dict[str, _Deferred]) -> None:
        """Ends not written (the transaction failed): kept for the next one, unless newer."""
        with self._deferred_lock:
            for name, d in deferred.items():
                self._deferred.setdefault(name, d)

    def close(self) -> None:
        try:
            self.flush_idle_runs()
        except StateError as exc:  # closing: the run rows of idle passes are all that is lost
            log.warning("%s; the last idle passes' run rows were not written", exc)
        super().close()

    def _rewrite_or_insert(
        self,
        conn: sa.Connection,
        mapping: str,
        run_id: int,
        started_at: datetime,
        values: dict[str, Any],
    ) -> int:
        """Overwrite the idle run row ``run_id`` if it is still the mapping's newest row, else
        add a row; the id of the row written."""
        bound = {"run_id": run_id, "run_mapping": mapping, "v_started_at": started_at}
        done = conn.execute(_REWRITE_RUN, {**_bound(values), **bound})
        if done.rowcount == 1:
            return run_id
        return self._insert_run(conn, mapping, started_at, values)

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


# Statements of every pass, built once: building a statement costs SQLAlchemy several times
# more than executing it once it is built (its compiled form is then cached too).


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


class _Deferred(NamedTuple):
    """An idle pass's end, not written yet (see ``RunsMixin.end_run``)."""

    run_id: int
    started_at: datetime
    values: dict[str, Any]
    meta: dict[str, str]


def _bound(values: dict[str, Any]) -> dict[str, Any]:
    return {f"v_{k}": v for k, v in values.items()}


def _set_meta(conn: sa.Connection, meta: dict[str, str]) -> None:
    rows = [{"name": k, "value": v} for k, v in meta.items()]
    t.upsert(conn, t.meta, rows, ("name",), ("value",))


def _last_ok(conn: sa.Connection, mappings: Sequence[str]) -> dict[str, datetime]:
    c = t.runs.c
    query = (
        sa.select(c.mapping, sa.func.max(c.ended_at))
        .where(c.mapping.in_(mappings), c.outcome == "ok")
        .group_by(c.mapping)
    )
    return {m: at for m, at in conn.execute(query) if at is not None}
