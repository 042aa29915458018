"""One pass of one mapping: read changed rows, map them, send what changed, move the cursor.

Guarantees (see README, "What the connector guarantees"):

* Pages are read in ``(cursor, key)`` order up to an upper bound from the database clock minus a
  safety lag; each pass starts by re-reading a lookback window behind the saved cursor.
* A row is sent only if its payload hash differs from what ShopiMind last accepted for its key.
* The cursor is saved in the same state transaction as the accepted hashes and rejected items of
  the batch it covers, and only after the API accepted that batch; it never moves backwards.
* Rows rejected by the API or by local validation are stored as rejected items and do not block
  the cursor; a failed send (after retries) ends the pass with the cursor where it was.
* Rows whose cursor is NULL are walked by key each pass (hash-checked); children with their own
  cursor re-send their parent when they change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from connector.batching import PageWriter, Position
from connector.destination.client import ApiClient
from connector.errors import AuthError, ConnectorError, SchemaMismatchError
from connector.mapping.compile import CompiledMapping, MissingColumn
from connector.mapping.spec import Mapping
from connector.source import query as q
from connector.source.reader import ShopReader
from connector.state.model import Cursor, RunCounts, key_from_json, key_json
from connector.state.store import StateStore
from connector.transform import (
    Unit,
    get_column,
    group_children,
    parent_link,
    row_key,
    transform_page,
)

log = logging.getLogger("connector.sync")

ProgressFn = Callable[[str, int], None]
FORCE_META = "force_resend:{}"
CHILD_META = "child_cursor:{}:{}"
API_REJECT_ATTEMPTS = 3  # an item the API rejected is sent at most this many times unchanged


@dataclass
class PassResult:
    mapping: str
    outcome: str  # "ok" | "failed" | "interrupted"
    counts: RunCounts
    message: str | None = None
    cursor: Cursor | None = None
    seconds: float = 0.0


class MappingSync:
    """Runs passes of one mapping; holds no open resources of its own."""

    def __init__(
        self,
        compiled: CompiledMapping,
        *,
        reader: ShopReader,
        client: ApiClient,
        store: StateStore,
        shop_tz: tzinfo,
        safety_lag: float = 2.0,
        page_size: int = 500,
        stop: threading.Event | None = None,
        progress: ProgressFn | None = None,
        pool: Executor | None = None,
        max_in_flight: int = 1,
    ) -> None:
        self.compiled = compiled
        self.mapping: Mapping = compiled.mapping
        self.reader = reader
        self.client = client
        self.store = store
        self.tz = shop_tz
        self.lag = safety_lag
        self.page_size = max(
            self.mapping.source.page_size or page_size, self.mapping.resource.batch_limit
        )
        self.stop = stop or threading.Event()
        self.progress = progress
        self.pool = pool
        self.max_in_flight = max_in_flight
        self._force_until: Any = None
        self._any_rejects = True  # until counted at the start of a pass

    # --- a pass ----------------------------------------------------------------------------------

    def run_pass(self) -> PassResult:
        name = self.mapping.name
        started = time.monotonic()
        counts = RunCounts()
        run_id = self.store.start_run(name)
        result = PassResult(name, "ok", counts)
        try:
            self._work(counts)
            if self.stop.is_set():
                result.outcome = "interrupted"
                result.message = self.interrupted
        except AuthError:
            self.store.finish_run(run_id, counts, "failed", "API key rejected (401/403)")
            raise
        except ConnectorError as exc:
            if self.stop.is_set():  # stopping: what was not sent is simply not sent yet
                result.outcome = "interrupted"
                result.message = f"{self.interrupted} ({exc})"
            else:
                result.outcome, result.message = "failed", str(exc)
        result.seconds = time.monotonic() - started
        result.cursor = self.store.get_cursor(name)
        self.store.finish_run(run_id, counts, result.outcome, result.message)
        return result

    interrupted = "stopped; the cursor is saved after the last accepted batch"

    def _work(self, counts: RunCounts) -> None:
        """The phases of a pass; each one returns early once ``stop`` is set."""
        self._any_rejects = self.store.count_rejects(self.mapping.name) > 0
        self._mark_children()
        self._scan(counts)
        if not self.stop.is_set():
            self._null_cursor_sweep(counts)
        if not self.stop.is_set():
            self._child_changes(counts)
        if not self.stop.is_set():
            self._retry_api_rejects(counts)

    def _writer(self, counts: RunCounts, saved: Position | None, move_cursor: bool) -> PageWriter:
        return PageWriter(
            self.compiled,
            client=self.client,
            store=self.store,
            counts=counts,
            stop=self.stop,
            saved=saved,
            move_cursor=move_cursor,
            forced=self._forced,
            pool=self.pool,
            max_in_flight=self.max_in_flight,
            open_rejects=self._any_rejects,
        )

    def _scan(self, counts: RunCounts) -> None:
        """Rows after the saved cursor (minus the lookback window), page by page."""
        spec = self.mapping.source
        sample = self.reader.sample_cursor(self.mapping)
        if sample is None:
            return  # no row has a cursor value yet
        upper = q.upper_bound(self.reader.db_now_utc(), self.lag, sample, self.tz)
        saved = self.store.get_cursor(self.mapping.name)
        start: q.Position | None = None
        if saved is not None:
            start = q.Position(q.shift_back(saved.value, spec.lookback, self.tz), None)
        force_meta = FORCE_META.format(self.mapping.name)
        forced = self.store.get_meta(force_meta)
        self._force_until = Cursor.from_json(forced).value if forced else None
        writer = self._writer(counts, (saved.value, saved.key) if saved else None, True)
        try:
            with drained(writer):
                while not self.stop.is_set():
                    stmt = q.page_query(spec, start, upper, self.page_size)
                    rows = self._read(stmt, "reading a page")
                    if not rows:
                        break
                    counts.rows_read += len(rows)
                    self._deliver(rows, writer)
                    last = rows[-1]
                    start = q.Position(last[q.CURSOR_LABEL], row_key(last, self.mapping))
                    if self.progress:
                        self.progress(self.mapping.name, len(rows))
                    if len(rows) < self.page_size:
                        break
        finally:
            self._force_until = None
        if forced and not self.stop.is_set():
            self.store.set_meta(force_meta, "")

    def _null_cursor_sweep(self, counts: RunCounts) -> None:
        """Rows with no cursor value: walked by key, sent on first sight and when they change."""
        after: tuple[Any, ...] | None = None
        with drained(self._writer(counts, None, False)) as writer:
            while not self.stop.is_set():
                stmt = q.null_cursor_query(self.mapping.source, after, self.page_size)
                rows = self._read(stmt, "reading rows with a NULL cursor")
                if not rows:
                    return
                counts.rows_read += len(rows)
                self._deliver(rows, writer)
                after = row_key(rows[-1], self.mapping)
                if len(rows) < self.page_size:
                    return

    def _mark_children(self) -> None:
        """Before the first parent scan ever: note where each child cursor stands. Every child
        change after that moment is then re-checked by ``_child_changes``, even if the first
        backfill is interrupted and resumed days later; changes before it are read with their
        parent by the scan."""
        for cname, child in self.mapping.children.items():
            meta = CHILD_META.format(self.mapping.name, cname)
            if child.cursor is None or self.store.get_meta(meta):
                continue
            sample = self.reader.sample_child_cursor(self.mapping, child)
            mark: Any = None  # no child row yet: every future one counts
            if sample is not None:
                mark = q.upper_bound(self.reader.db_now_utc(), self.lag, sample, self.tz)
                if mark is None:  # not a time: the newest value
                    mark = self.reader.scalar(q.child_max_cursor_query(child), f"{child.path}")
            self.store.set_meta(meta, Cursor(mark, ()).to_json())

    def _child_changes(self, counts: RunCounts) -> None:
        """Children with their own cursor: a changed child re-sends its parent (hash-checked)."""
        for cname, child in self.mapping.children.items():
            if child.cursor is None or self.stop.is_set():
                continue
            meta = CHILD_META.format(self.mapping.name, cname)
            sample = self.reader.sample_child_cursor(self.mapping, child)
            if sample is None:
                continue
            upper = q.upper_bound(self.reader.db_now_utc(), self.lag, sample, self.tz)
            raw = self.store.get_meta(meta)
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
                    links = self._read(
                        q.changed_parents_query(child, since, upper, after, self.page_size),
                        f"{child.path}: reading changed child rows",
                    )
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
            if not self.stop.is_set():
                self.store.set_meta(
                    meta, Cursor(upper if upper is not None else newest, ()).to_json()
                )

    # --- a page ----------------------------------------------------------------------------------

    def _read(self, stmt: Any, what: str) -> list[dict[str, Any]]:
        return self.reader.fetch(stmt, f"{self.mapping.file}: {what}")

    def _deliver(self, rows: Sequence[dict[str, Any]], writer: PageWriter) -> None:
        try:
            children = {}
            for cname, child in self.mapping.children.items():
                links = list(dict.fromkeys(parent_link(r, child) for r in rows))
                kids = (
                    self._read(q.children_query(child, links), f"{child.path}: reading child rows")
                    if links
                    else []
                )
                children[cname] = group_children(child, kids)
            units = transform_page(self.compiled, rows, children)
        except MissingColumn as exc:
            raise SchemaMismatchError(
                f"{self.mapping.file}: {exc.path}: column {exc.column!r} is not in the rows read "
                f"from {self.mapping.source.label}; nothing of this page was sent and the cursor "
                "stays. Fix the mapping (`shopimind-connector check` lists such problems)."
            ) from None
        writer.write(units, rows)

    def _forced(self, u: Unit) -> bool:
        """Within a range that ``reset`` asked to re-send regardless of content."""
        if self._force_until is None or u.position is None:
            return False
        try:
            return bool(u.position[0] <= self._force_until)
        except TypeError:
            return True

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
        counts = RunCounts()
        spec = self.mapping.source
        with drained(self._writer(counts, None, False)) as writer:
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
