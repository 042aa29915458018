"""One pass of one mapping: read changed rows, map them, send what changed, move the cursor.

Guarantees (see README, "What the connector guarantees"):

* Pages are read in ``(cursor, key)`` order up to an upper bound from the database clock minus a
  safety lag; each pass starts by re-reading a lookback window behind the saved cursor, until
  that window is settled (see :mod:`connector._window`).
* A row is sent only if its payload hash differs from what ShopiMind last accepted for its key.
* The cursor is saved in the same state transaction as the accepted hashes and rejected items of
  the batch it covers, and only after the API accepted that batch; it never moves backwards.
* Rows rejected by the API or by local validation are stored as rejected items and do not block
  the cursor; a failed send (after retries) ends the pass with the cursor where it was.
* Rows whose cursor is NULL are walked by key each pass (hash-checked); children with their own
  cursor re-send their parent when they change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, tzinfo
from functools import partial
from typing import Any

from connector._feed import PageFeed
from connector._pages import PagesMixin
from connector._phases import API_REJECT_ATTEMPTS, CHILD_META, PhasesMixin, drained
from connector._remap import FINGERPRINT_META, REMAP_META, REMAP_PAGES, Remap, decide
from connector._window import Window
from connector.batching import PageWriter, Position
from connector.destination.client import ApiClient
from connector.errors import AuthError, ConnectorError
from connector.mapping.compile import CompiledMapping
from connector.mapping.fingerprint import fingerprint
from connector.mapping.spec import Mapping
from connector.mapworkers import MapPool
from connector.source import query as q
from connector.source.reader import ShopReader
from connector.source.statements import Statements
from connector.state.model import Cursor, RunCounts
from connector.state.store import StateStore
from connector.timeutil import utc_now
from connector.transform import Recent, Unit, row_key, transform_page

__all__ = [
    "API_REJECT_ATTEMPTS",
    "CHILD_META",
    "FORCE_META",
    "RUNNING_ROW_AFTER",
    "MappingSync",
    "PassResult",
    "ProgressFn",
    "drained",
]

ProgressFn = Callable[[str, int], None]
FORCE_META = "force_resend:{}"
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


class MappingSync(PagesMixin, PhasesMixin):
    """Runs passes of one mapping; holds no open resources of its own. Its page reads are in
    :mod:`connector._pages`, the phases after the scan in :mod:`connector._phases`."""

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
        map_pool: MapPool | None = None,
        window: Window | None = None,
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
        self.window = window or Window()  # the runtime keeps one per mapping across passes
        self.map_pool = map_pool
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
        self._remap: Remap | None = None  # the re-read this pass goes on with, if any
        self.remap_pages: int | None = REMAP_PAGES  # None: the whole re-read in one pass

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
        """The database clock, taken once per pass: every upper bound of the pass comes from it
        (what changes after it is read by the next pass). See ``ShopReader.db_clock``."""
        if self._now is None:
            self._now = self.reader.db_clock()
        return self._now

    def _work(self, counts: RunCounts) -> None:
        """The phases of a pass; each one returns early once ``stop`` is set."""
        name = self.mapping.name
        remap_metas = [FINGERPRINT_META.format(name), REMAP_META.format(name)]
        metas = [FORCE_META.format(name), *(meta for meta, _child in self._watched())]
        state = self.store.pass_state(name, metas + remap_metas)
        self._saved_cursor, self._meta = state.cursor, state.meta
        self._any_rejects = state.open_rejects
        self._plan_remap(state.cursor is not None)
        self._mark_children()
        self._scan(counts)
        if not self.stop.is_set():
            self._null_cursor_sweep(counts)
        if not self.stop.is_set():
            self._child_changes(counts)
        if not self.stop.is_set():
            self._retry_api_rejects(counts)
        if not self.stop.is_set():
            self._remap_rows(counts)

    def _plan_remap(self, has_cursor: bool) -> None:
        """Whether this pass goes on with (or starts) a re-read of every row (see
        :mod:`connector._remap`)."""
        name = self.mapping.name
        self._remap, writes = decide(
            name,
            fingerprint(self.compiled),
            self._meta.get(FINGERPRINT_META.format(name)),
            self._meta.get(REMAP_META.format(name)),
            has_cursor,
        )
        for meta, value in writes.items():
            self.store.set_meta(meta, value)

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
        force_meta = FORCE_META.format(self.mapping.name)
        forced = self._meta.get(force_meta)
        self._force_until = Cursor.from_json(forced).value if forced else None
        start: q.Position | None = None
        if saved is not None:
            start = self.window.start(saved, spec.lookback, self.tz, forced=bool(forced))
        writer = self._writer(counts, self._end, True)
        feed: PageFeed | None = None  # the pages after a full first one, read ahead
        try:
            with drained(writer), self._mapping_workers() as workers:
                try:  # the feed stops before the writer drains and the workers are let go
                    self._running()
                    rows = self._page_rows(start, upper)
                    children: dict[str, Any] | None = None
                    mapped: Future[list[Unit]] | None = None
                    while not self.stop.is_set() and rows:
                        counts.rows_read += len(rows)
                        if feed is None and len(rows) == self.page_size:  # a backfill, a burst
                            after = self._translated(partial(self._position, rows[-1]))
                            feed = self._feed(upper, workers, after).start()
                        if mapped is not None:
                            writer.write(self._mapped(mapped), rows)
                        else:
                            self._deliver(rows, writer, children, self._reuse(rows))
                        if self.progress:
                            self.progress(self.mapping.name, len(rows))
                        if feed is None:
                            break
                        self._running()
                        fed = self._translated(feed.next)
                        if fed is None:
                            break
                        rows, children, mapped = fed
                finally:
                    if feed is not None:
                        feed.close()
        finally:
            self._force_until = None
        self._end, self._end_known = writer.saved, True
        if self.stop.is_set():
            return
        # every page up to the upper bound was read and written
        self.window.scanned(
            saved,
            writer.saved,
            started=self._started,
            ended=time.monotonic(),
            lookback=spec.lookback,
            tz=self.tz,
            forced=bool(forced),
        )
        if forced:
            self.store.set_meta(force_meta, "")

    def _mapped(self, future: Future[list[Unit]]) -> list[Unit]:
        """A page's units from a mapping worker."""
        assert self.map_pool is not None
        pool = self.map_pool
        return self._translated(lambda: pool.units(self.compiled, future))

    def _position(self, row: dict[str, Any]) -> q.Position:
        return q.Position(row[q.CURSOR_LABEL], row_key(row, self.mapping))

    def _mapping_workers(self) -> AbstractContextManager[MapPool | None]:
        """The worker processes that may map this pass's full pages (none for mappings that
        map rows their own way, or with ``sync.map_workers = 0``)."""
        return self.map_pool.using() if self.map_pool is not None else nullcontext()

    def _feed(self, upper: Any, workers: MapPool | None, after: q.Position) -> PageFeed:
        """Pages after the first, read ahead: one waiting page, or with workers enough to keep
        each of them busy while this thread writes."""
        submit = None
        if workers is not None:
            compiled = self.compiled

            def submit(
                rows: list[dict[str, Any]], kids: dict[str, Any]
            ) -> Future[list[Unit]] | None:
                return workers.submit(compiled, rows, kids)

        return PageFeed(
            self.mapping.name,
            lambda start: self._read_page(start, upper),
            self._position,
            self.page_size,
            submit,
            1 if workers is None else workers.workers + 1,
            after,
        )

    # --- a page ----------------------------------------------------------------------------------

    def _read(
        self, stmt: Any, what: str, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        self._running()
        return self.reader.fetch(stmt, f"{self.mapping.file}: {what}", params)

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

    def map_rows(self, rows: Sequence[dict[str, Any]]) -> list[Unit]:
        """Map rows exactly as a pass would (their child rows read); nothing is sent. The
        audit compares ShopiMind's records with these."""
        kids = self._translated(lambda: self._children(rows))
        return self._translated(lambda: transform_page(self.compiled, rows, kids))

    def _forced(self, u: Unit) -> bool:
        """Within a range that ``reset`` asked to re-send regardless of content."""
        if self._force_until is None or u.position is None:
            return False
        try:
            return bool(u.position[0] <= self._force_until)
        except TypeError:
            return True
