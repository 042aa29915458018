"""Records and rejects: what was sent (a hash per key), what was refused, and the batch commits.

A batch is recorded in one transaction (accepted hashes, rejects, the cursor); keys are
announced (write-ahead) before their batch is sent; reconciliation pages through the records and
moves them between statuses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from connector.state import bulk
from connector.state import tables as t
from connector.state._base import StoreBase
from connector.state.bulk import BulkUpsert
from connector.state.model import Accepted, Cursor, Reject, RejectRecord
from connector.timeutil import utc_now

CHUNK = 500

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


# (status, hash) of some keys of a mapping: built once, its compiled form cached by SQLAlchemy
_RECORDS_OF = sa.select(t.records.c.key_id, t.records.c.status, t.records.c.hash).where(
    t.records.c.mapping == sa.bindparam("mapping"),
    t.records.c.key_id.in_(sa.bindparam("ids", expanding=True)),
)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


class RecordsMixin(StoreBase):
    """Hashes of what was sent, batch commits, write-aheads, rejects; ``forget``."""

    # -- records ------------------------------------------------------------------------------

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
        with self._read() as conn:
            for chunk in _chunks(list(ids)):
                rows = conn.execute(_RECORDS_OF, {"mapping": mapping, "ids": chunk})
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

    # -- rejects ------------------------------------------------------------------------------

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

    # -- ShopiMind's own record ids ---------------------------------------------------------------

    def remote_ids(self, mapping: str, keys: Sequence[str]) -> dict[str, str]:
        """ShopiMind's id of each key's record, where it was learnt (others omitted)."""
        c = t.remote_ids.c
        by_id = {t.key_id(k): k for k in keys}
        out: dict[str, str] = {}
        with self._read() as conn:
            for chunk in _chunks(list(by_id)):
                query = sa.select(c.key_id, c.remote_id).where(
                    c.mapping == mapping, c.key_id.in_(chunk)
                )
                for kid, rid in conn.execute(query):
                    out[by_id[kid]] = str(rid)
        return out

    def keep_remote_ids(self, mapping: str, ids: dict[str, str]) -> None:
        """Remember ShopiMind's id of each key's record (replacing what was kept)."""
        now = utc_now()
        rows = [
            {"mapping": mapping, "key_id": t.key_id(k), "remote_id": v, "learned_at": now}
            for k, v in ids.items()
        ]
        with self._tx() as conn:
            for i in range(0, len(rows), CHUNK):
                t.upsert(
                    conn,
                    t.remote_ids,
                    rows[i : i + CHUNK],
                    ("mapping", "key_id"),
                    ("remote_id", "learned_at"),
                )

    def forget(self, mapping: str) -> None:
        """Drop the cursor, records, rejects and learnt record ids of ``mapping`` (run history is
        kept)."""
        with self._tx() as conn:
            for table in (t.cursors, t.records, t.rejects, t.remote_ids):
                conn.execute(sa.delete(table).where(table.c.mapping == mapping))
