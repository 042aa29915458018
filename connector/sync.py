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
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, TypeVar

from connector.batching import PageWriter, Position
from connector.destination.client import ApiClient
from connector.errors import AuthError, ConnectorError, SchemaMismatchError
from connector.mapping.compile import CompiledMapping, MissingColumn
from connector.mapping.spec import ChildSpec, Mapping
from connector.source import query as q
from connector.source.reader import ShopReader
from connector.source.statements import Statements, key_of, named
from connector.state.model import Cursor, RunCounts, key_from_json, key_json
from connector.state.store import StateStore
from connector.timeutil import utc_now
from connector.transform import (
    Recent,
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
_T = TypeVar("_T")
_Page = tuple[list[dict[str, Any]], dict[str, Any]]  # rows, and child rows grouped by parent
CHILD_META = "child_cursor:{}:{}"
API_REJECT_ATTEMPTS = 3  # an item the API rejected is sent at most this many times unchanged
RUNNING_ROW_AFTER = 1.0  # seconds: a pass still running by then shows in the run history


@dataclass
class PassResult:
    mapping: str
    outcome: str  # "ok" | "failed" | "interrupted"
    counts: RunCounts
    message: str | None = None
    cursor: Cursor | None = None
    seconds: float = 0.0

    @property
    def idle(self) -> bool:
        """The pass ended well and had nothing to send, delete or reject."""
        return self.outcome == "ok" and not _active(self.counts)


def _active(c: RunCounts) -> bool:
    return bool(c.items_sent or c.accepted or c.rejected or c.deleted or c.requests)


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
        statements: Statements | None = None,
        recent: Recent | None = None,
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
        self.statements = statements or Statements()
        self.recent = recent or Recent()
        self._force_until: Any = None
        self._any_rejects = True  # until read at the start of a pass
        # per pass: see run_pass
        self._in_pass = False
        self._started = 0.0
        self._started_at: datetime = utc_now()
        self._run_id: int | None = None
        self._now: datetime | None = None
        self._meta: dict[str, str | None] = {}
        self._meta_out: dict[str, str] = {}
        self._saved_cursor: Cursor | None = None  # as the pass found it
        self._end: Position | None = None
        self._end_known = False

    # --- a pass ----------------------------------------------------------------------------------

    def run_pass(self) -> PassResult:
        """One pass. Its shop reads share one connection and one reading of the database clock;
        its run row is written when it ends (one statement), or when it has run for
        ``RUNNING_ROW_AFTER`` seconds, so that ``status`` shows a long pass as running."""
        name = self.mapping.name
        self._started, self._started_at = time.monotonic(), utc_now()
        self._run_id, self._now, self._meta_out, self._end_known = None, None, {}, False
        counts = RunCounts()
        result = PassResult(name, "ok", counts)
        try:
            self._in_pass = True
            self.recent.begin(self.compiled)
            with self.reader.session():
                self._work(counts)
            if self.stop.is_set():
                result.outcome = "interrupted"
                result.message = self.interrupted
        except AuthError:
            self._end_run(counts, "failed", "API key rejected (401/403)")
            raise
        except ConnectorError as exc:
            if self.stop.is_set():  # stopping: what was not sent is simply not sent yet
                result.outcome = "interrupted"
                result.message = f"{self.interrupted} ({exc})"
            else:
                result.outcome, result.message = "failed", str(exc)
        finally:
            self._in_pass = False
        result.seconds = time.monotonic() - self._started
        if result.outcome == "ok" and self._end_known:  # the scan knows where it left it
            result.cursor = None if self._end is None else Cursor(self._end[0], self._end[1])
        else:
            result.cursor = self.store.get_cursor(name)
        self._end_run(counts, result.outcome, result.message)
        return result

    interrupted = "stopped; the cursor is saved after the last accepted batch"

    def _end_run(self, counts: RunCounts, outcome: str, message: str | None) -> None:
        idle = outcome == "ok" and not _active(counts)
        self.store.end_run(
            self.mapping.name,
            self._run_id,
            self._started_at,
            counts,
            outcome,
            message,
            idle=idle,
            meta=self._meta_out,
        )

    def _running(self) -> None:
        """Called as a pass reads: once it has run long enough, write its running row."""
        if (
            self._in_pass
            and self._run_id is None
            and time.monotonic() - self._started >= RUNNING_ROW_AFTER
        ):
            self._run_id = self.store.start_run(self.mapping.name, self._started_at)

    def _clock(self) -> datetime:
        """The database clock, read once per pass: every upper bound of the pass comes from it
        (what changes after it is read by the next pass)."""
        if self._now is None:
            self._now = self.reader.db_now_utc()
        return self._now

    def _work(self, counts: RunCounts) -> None:
        """The phases of a pass; each one returns early once ``stop`` is set."""
        name = self.mapping.name
        metas = [FORCE_META.format(name), *(meta for meta, _child in self._watched())]
        state = self.store.pass_state(name, metas)
        self._saved_cursor, self._meta = state.cursor, state.meta
        self._any_rejects = state.open_rejects
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
        saved = self._saved_cursor
        self._end = (saved.value, saved.key) if saved else None
        sample = self.reader.sample_cursor(self.mapping)
        if sample is None:
            self._end_known = True
            return  # no row has a cursor value yet
        upper = q.upper_bound(self._clock(), self.lag, sample, self.tz)
        start: q.Position | None = None
        if saved is not None:
            start = q.Position(q.shift_back(saved.value, spec.lookback, self.tz), None)
        force_meta = FORCE_META.format(self.mapping.name)
        forced = self._meta.get(force_meta)
        self._force_until = Cursor.from_json(forced).value if forced else None
        writer = self._writer(counts, self._end, True)
        ahead: ThreadPoolExecutor | None = None  # reads the next page while this one is sent
        try:
            with drained(writer):
                self._running()
                rows, children = self._page_rows(start, upper), None
                while not self.stop.is_set():
                    if not rows:
                        break
                    counts.rows_read += len(rows)
                    last = rows[-1]
                    start = q.Position(last[q.CURSOR_LABEL], row_key(last, self.mapping))
                    following: Future[_Page] | None = None
                    if len(rows) == self.page_size:  # more to come: a backfill or a burst
                        if ahead is None:
                            ahead = ThreadPoolExecutor(1, f"read-{self.mapping.name}")
                        following = ahead.submit(self._read_page, start, upper)
                    self._deliver(rows, writer, children, self._reuse(rows))
                    if self.progress:
                        self.progress(self.mapping.name, len(rows))
                    if following is None:
                        break
                    self._running()
                    rows, children = self._translated(following.result)
        finally:
            if ahead is not None:
                ahead.shutdown(wait=True, cancel_futures=True)
            self._force_until = None
        self._end, self._end_known = writer.saved, True
        if forced and not self.stop.is_set():
            self.store.set_meta(force_meta, "")

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

    # --- a page ----------------------------------------------------------------------------------

    def _page(self, start: q.Position | None, upper: Any) -> tuple[Any, dict[str, Any]]:
        """The page query after ``start`` up to ``upper``, and its parameters."""

        def build(start: Any, upper: Any, **k: Any) -> Any:
            at = None if start is None else q.Position(start, key_of(k))
            return q.page_query(self.mapping.source, at, upper, self.page_size)

        if start is None:
            return self.statements.get("page", build, start=None, upper=upper)
        return self.statements.get(
            "page", build, start=start.value, upper=upper, **named("k", start.key)
        )

    def _read(
        self, stmt: Any, what: str, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        self._running()
        return self.reader.fetch(stmt, f"{self.mapping.file}: {what}", params)

    def _page_rows(self, start: q.Position | None, upper: Any) -> list[dict[str, Any]]:
        """The page after ``start``; touches only the shop database (the reader's connections
        are per thread), so it also runs on the read-ahead thread."""
        stmt, params = self._page(start, upper)
        return self.reader.fetch(stmt, f"{self.mapping.file}: reading a page", params)

    def _read_page(self, start: q.Position | None, upper: Any) -> _Page:
        """The page after ``start`` with its child rows, on the read-ahead thread."""
        rows = self._page_rows(start, upper)
        return rows, self._children(rows)

    def _children(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        children = {}
        for cname, child in self.mapping.children.items():
            links = list(dict.fromkeys(parent_link(r, child) for r in rows))
            kids = (
                self.reader.fetch(
                    q.children_query(child, links),
                    f"{self.mapping.file}: {child.path}: reading child rows",
                )
                if links
                else []
            )
            children[cname] = group_children(child, kids)
        return children

    def _translated(self, read: Callable[[], _T]) -> _T:
        """Run ``read`` (or a page building step); a column the mapping names but the rows lack
        is the mapping's problem, said as such."""
        try:
            return read()
        except MissingColumn as exc:
            raise SchemaMismatchError(
                f"{self.mapping.file}: {exc.path}: column {exc.column!r} is not in the rows read "
                f"from {self.mapping.source.label}; nothing of this page was sent and the cursor "
                "stays. Fix the mapping (`shopimind-connector check` lists such problems)."
            ) from None

    def _reuse(self, rows: Sequence[dict[str, Any]]) -> Recent | None:
        """Rows of a short page (the lookback window, NULL-cursor rows; not a backfill's full
        pages) are remembered for the next pass, which does not map them again if unchanged."""
        return self.recent if len(rows) < self.page_size else None

    def _deliver(
        self,
        rows: Sequence[dict[str, Any]],
        writer: PageWriter,
        children: dict[str, Any] | None = None,
        recent: Recent | None = None,
    ) -> None:
        """Map a page (reading its child rows unless given) and hand it to the writer."""
        kids = children if children is not None else self._translated(lambda: self._children(rows))
        units = self._translated(lambda: transform_page(self.compiled, rows, kids, recent))
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
