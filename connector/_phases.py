"""The phases of a pass after the scan, and how a phase ends (:func:`drained`).

:class:`PhasesMixin` is part of :class:`~connector.sync.MappingSync`, whose ``_work`` runs them in
this order after the scan, each one only while ``stop`` is not set:

* rows whose cursor is NULL, walked by key (``_null_cursor_sweep``);
* children with their own cursor and ``[changes]`` tables: a changed child re-sends its parent
  (``_child_changes``; where each one was last read is noted before the first scan ever by
  ``_mark_children``);
* items the API rejected, tried again a few times (``_retry_api_rejects``, through
  ``retry_rejected``, which the CLI also calls after a mapping fix);
* after a change of the mapping's output, a slice of the re-read of every row
  (``_remap_rows``, see :mod:`connector._remap`).

None of them moves the cursor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from connector._remap import (
    FINGERPRINT_META,
    REMAP_META,
    REMAP_SECONDS,
    Remap,
    progress_text,
)
from connector.batching import PageWriter, Position
from connector.mapping.spec import ChildSpec, Mapping
from connector.source import query as q
from connector.source.reader import ShopReader
from connector.source.statements import Statements, key_of, named
from connector.state.model import Cursor, RunCounts, key_from_json, key_json
from connector.state.store import StateStore
from connector.transform import Recent, get_column, row_key

log = logging.getLogger("connector.sync")

CHILD_META = "child_cursor:{}:{}"
API_REJECT_ATTEMPTS = 3  # an item the API rejected is sent at most this many times unchanged


class PhasesMixin:
    """The secondary phases of :class:`~connector.sync.MappingSync`, which sets these attributes
    (``_meta`` and ``_any_rejects`` at the start of each pass) and defines the methods below."""

    mapping: Mapping
    reader: ShopReader
    store: StateStore
    statements: Statements
    page_size: int
    stop: threading.Event
    lag: float
    tz: tzinfo
    _meta: dict[str, str | None]
    _meta_out: dict[str, str]
    _any_rejects: bool
    _remap: Remap | None
    _started: float  # time.monotonic() at the start of the pass
    remap_pages: int | None

    if TYPE_CHECKING:  # defined by MappingSync (as far as the phases call them)

        def _clock(self) -> datetime: ...

        def _writer(
            self, counts: RunCounts, saved: Position | None, move_cursor: bool
        ) -> PageWriter: ...

        def _read(
            self, stmt: Any, what: str, params: dict[str, Any] | None = None
        ) -> list[dict[str, Any]]: ...

        def _reuse(self, rows: Sequence[dict[str, Any]]) -> Recent | None: ...

        def _deliver(
            self,
            rows: Sequence[dict[str, Any]],
            writer: PageWriter,
            *,
            recent: Recent | None = None,
        ) -> None: ...

    def _null_cursor_sweep(self, counts: RunCounts) -> None:
        """Rows with no cursor value: walked by key, sent on first sight and when they change
        (none to look for when the schema forbids them)."""
        if self.reader.cursor_never_null(self.mapping):
            return
        after: tuple[Any, ...] | None = None
        with drained(self._writer(counts, None, False)) as writer:
            while not self.stop.is_set():
                stmt, params = self.statements.get(
                    "null",
                    lambda **k: q.null_cursor_query(self.mapping.source, key_of(k), self.page_size),
                    **named("k", after),
                )
                rows = self._read(stmt, "reading rows with a NULL cursor", params)
                if not rows:
                    return
                counts.rows_read += len(rows)
                self._deliver(rows, writer, recent=self._reuse(rows))
                after = row_key(rows[-1], self.mapping)
                if len(rows) < self.page_size:
                    return

    def _watched(self) -> list[tuple[str, ChildSpec]]:
        """Children with their own cursor and ``[changes]`` tables, with the setting that
        holds where each one was last read."""
        name = self.mapping.name
        out = [(CHILD_META.format(name, c), ch) for c, ch in self.mapping.children.items()]
        out += [(CHILD_META.format(name, ch.path), ch) for ch in self.mapping.changes.values()]
        return [(meta, ch) for meta, ch in out if ch.cursor is not None]

    def _mark_children(self) -> None:
        """Before the first parent scan ever: note where each child cursor stands. Every child
        change after that moment is then re-checked by ``_child_changes``, even if the first
        backfill is interrupted and resumed days later; changes before it are read with their
        parent by the scan."""
        for meta, child in self._watched():
            if self._meta.get(meta):
                continue
            sample = self.reader.sample_child_cursor(self.mapping, child)
            mark: Any = None  # no child row yet: every future one counts
            if sample is not None:
                mark = q.upper_bound(self._clock(), self.lag, sample, self.tz)
                if mark is None:  # not a time: the newest value
                    mark = self.reader.scalar(q.child_max_cursor_query(child), f"{child.path}")
            text = self._meta[meta] = Cursor(mark, ()).to_json()
            self.store.set_meta(meta, text)

    def _child_changes(self, counts: RunCounts) -> None:
        """Children with their own cursor (and ``[changes]`` tables): a changed child re-sends
        its parent (hash-checked)."""
        for meta, child in self._watched():
            if self.stop.is_set():
                continue
            sample = self.reader.sample_child_cursor(self.mapping, child)
            if sample is None:
                continue
            upper = q.upper_bound(self._clock(), self.lag, sample, self.tz)
            raw = self._meta.get(meta)
            if not raw:  # marked at the start of the first pass; absent only after an upgrade
                continue
            mark = Cursor.from_json(raw).value
            since = (
                None if mark is None else q.shift_back(mark, self.mapping.source.lookback, self.tz)
            )
            after: tuple[Any, ...] | None = None
            newest = mark
            with drained(self._writer(counts, None, False)) as writer:
                while not self.stop.is_set():
                    stmt, params = self.statements.get(
                        f"changed:{meta}",
                        lambda since, upper, child=child, **k: q.changed_parents_query(
                            child, since, upper, key_of(k), self.page_size
                        ),
                        since=since,
                        upper=upper,
                        **named("k", after),
                    )
                    links = self._read(stmt, f"{child.path}: reading changed child rows", params)
                    if not links:
                        break
                    keys = [tuple(get_column(r, c) for c in child.child_columns) for r in links]
                    rows = self._read(
                        q.rows_by_key_query(self.mapping.source, child.parent_columns, keys),
                        "re-reading parents of changed child rows",
                    )
                    counts.rows_read += len(rows)
                    self._deliver(rows, writer)
                    after = (links[-1][q.CURSOR_LABEL], *keys[-1])
                    newest = _max(newest, links[-1][q.CURSOR_LABEL])
                    if len(links) < self.page_size:
                        break
            if not self.stop.is_set():  # saved with the pass's run row (an older mark is safe:
                # it only makes the next pass re-check more child rows)
                self._meta_out[meta] = Cursor(upper if upper is not None else newest, ()).to_json()

    def _remap_rows(self, counts: RunCounts) -> None:
        """Every row in key order after a change of the mapping's output, at most
        ``remap_pages`` pages per pass; where it stands is saved after each committed page
        (see :mod:`connector._remap`)."""
        st = self._remap
        if st is None:
            return
        name, spec = self.mapping.name, self.mapping.source
        if st.total is None:  # how many rows, for the progress in the log and ``status``
            rel = q.source_relation(spec)
            count = self._read(sa.select(sa.func.count().label("n")).select_from(rel), "counting")
            st.total = int(count[0]["n"] or 0) if count else 0
        pages = 0
        while not self.stop.is_set():
            if self.remap_pages is not None and (
                pages >= self.remap_pages or time.monotonic() - self._started > REMAP_SECONDS
            ):
                log.info("%s: %s; going on with the next pass", name, progress_text(st))
                return
            after = key_from_json(st.after) if st.after else None
            rows = self._read(
                q.all_rows_query(spec, after, self.page_size),
                "re-reading every row after a mapping change",
            )
            if rows:
                counts.rows_read += len(rows)
                with drained(self._writer(counts, None, False)) as writer:
                    self._deliver(rows, writer)
                if self.stop.is_set():  # what was not sent is read again on the next start
                    return
                st.after, st.read = key_json(row_key(rows[-1], self.mapping)), st.read + len(rows)
                pages += 1
            if len(rows) < self.page_size:
                self.store.set_meta(FINGERPRINT_META.format(name), st.fingerprint)
                self.store.set_meta(REMAP_META.format(name), "")
                self._remap = None
                log.info(
                    "%s: re-read after the mapping change done: %d rows read; every record "
                    "now reflects the current mapping",
                    name,
                    st.read,
                )
                return
            self.store.set_meta(REMAP_META.format(name), st.to_json())

    def _retry_api_rejects(self, counts: RunCounts) -> None:
        """Items the API rejected are tried again on the next passes (a few times): a rejection
        can be an ordering effect (a variation sent before its product) that fixes itself."""
        if not self._any_rejects:  # none were open when the pass started
            return
        rejects = self.store.list_rejects(self.mapping.name, limit=self.page_size)
        keys = [
            key_from_json(r.key)
            for r in rejects
            if r.source == "api" and r.attempts < API_REJECT_ATTEMPTS and r.key.startswith("[")
        ]
        if keys:
            again = self.retry_rejected(keys)
            for name in ("rows_read", "items_sent", "accepted", "rejected", "requests", "deleted"):
                setattr(counts, name, getattr(counts, name) + getattr(again, name))

    def retry_rejected(self, keys: Sequence[tuple[Any, ...]]) -> RunCounts:
        """Re-read rows by key and deliver them again (after a mapping fix); cursor untouched."""
        return self._redeliver(keys, force=False)

    def resend(self, keys: Sequence[tuple[Any, ...]]) -> RunCounts:
        """Like ``retry_rejected``, but rows are sent even when ShopiMind last accepted the same
        content (the audit's repair: ShopiMind lost or changed it)."""
        return self._redeliver(keys, force=True)

    def _redeliver(self, keys: Sequence[tuple[Any, ...]], *, force: bool) -> RunCounts:
        counts = RunCounts()
        spec = self.mapping.source
        writer = self._writer(counts, None, False)
        if force:
            writer.forced = lambda u: True
        with drained(writer):
            for i in range(0, len(keys), self.page_size):
                chunk = list(keys[i : i + self.page_size])
                stmt = q.rows_by_key_query(spec, spec.key, chunk)
                rows = self._read(stmt, "re-reading rejected rows")
                counts.rows_read += len(rows)
                if rows:
                    self._deliver(rows, writer)
                found = {key_json(row_key(r, self.mapping)) for r in rows}
                gone = [key_json(k) for k in chunk if key_json(k) not in found]
                if gone:  # the row no longer exists: nothing left to send; if an earlier
                    # version was accepted, the reconciliation deletes it on ShopiMind
                    self.store.settle(self.mapping.name, gone)
        return counts


@contextmanager
def drained(writer: PageWriter) -> Iterator[PageWriter]:
    """Commit everything in flight when a phase ends; on an error, commit what was accepted
    (without hiding the error)."""
    try:
        yield writer
    except BaseException:
        writer.abandon()
        raise
    writer.finish()


def _max(a: Any, b: Any) -> Any:
    try:
        return a if a >= b else b
    except TypeError:
        return b
