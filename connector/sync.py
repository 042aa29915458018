"""One pass of one mapping: read changed rows, map them, send what changed, move the cursor.

Guarantees (see README, "What the connector guarantees"):

* Pages are read in ``(cursor, key)`` order up to an upper bound from the database clock minus a
  safety lag; each pass first re-reads a lookback window behind the saved cursor.
* A row is sent only if its payload hash differs from what ShopiMind last accepted for its key.
* The cursor is saved in the same state transaction as the accepted hashes and rejected items of
  the batch it covers, and only after the API accepted that batch; it never moves backwards.
* Rows rejected by the API or by local validation are stored as rejected items and do not block
  the cursor; a failed send (after retries) ends the pass with the cursor where it was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from connector.destination.client import ApiClient
from connector.errors import AuthError, ConnectorError, RetriableError
from connector.mapping.compile import CompiledMapping
from connector.mapping.spec import Mapping, SourceSpec
from connector.source import query as q
from connector.source.reader import ShopReader
from connector.state.model import Accepted, Cursor, Reject, RunCounts
from connector.state.store import StateStore
from connector.transform import Unit, group_children, transform_page

log = logging.getLogger("connector.sync")

ProgressFn = Callable[[str, int], None]
FORCE_META = "force_resend:{}"


@dataclass
class PassResult:
    mapping: str
    outcome: str  # "ok" | "failed" | "interrupted"
    counts: RunCounts
    message: str | None = None
    cursor: Cursor | None = None
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def _after(a: tuple[Any, tuple[Any, ...]], b: tuple[Any, tuple[Any, ...]]) -> bool:
    try:
        return bool((a[0], a[1]) > (b[0], b[1]))
    except TypeError:  # values of different forms: trust the database's order (newer wins)
        return True


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
    ) -> None:
        self.compiled = compiled
        self.mapping: Mapping = compiled.mapping
        self.reader = reader
        self.client = client
        self.store = store
        self.tz = shop_tz
        self.lag = safety_lag
        res = self.mapping.resource
        limit = self.mapping.source.page_size or page_size
        self.page_size = max(limit, res.batch_limit)
        self.stop = stop or threading.Event()
        self.progress = progress
        self._force_until: Any = None

    # --- a pass ----------------------------------------------------------------------------------

    def run_pass(self) -> PassResult:
        name = self.mapping.name
        started = time.monotonic()
        counts = RunCounts()
        run_id = self.store.start_run(name)
        result = PassResult(name, "ok", counts)
        try:
            self._scan(counts, result)
            if not self.stop.is_set():
                self._null_cursor_sweep(counts)
            if not self.stop.is_set():
                self._child_changes(counts)
            if self.stop.is_set():
                result.outcome = "interrupted"
                result.message = "stopped by signal; cursor saved after the last accepted batch"
        except AuthError:
            result.outcome, result.message = "failed", "API key rejected (401/403)"
            self.store.finish_run(run_id, counts, result.outcome, result.message)
            raise
        except (RetriableError, ConnectorError) as exc:
            result.outcome, result.message = "failed", str(exc)
        result.seconds = time.monotonic() - started
        result.cursor = self.store.get_cursor(name)
        self.store.finish_run(run_id, counts, result.outcome, result.message)
        return result

    def _scan(self, counts: RunCounts, result: PassResult) -> None:
        spec = self.mapping.source
        sample = self.reader.sample_cursor(self.mapping)
        if sample is None:
            return  # no row with a cursor value yet
        upper = q.upper_bound(self.reader.db_now_utc(), self.lag, sample, self.tz)
        saved = self.store.get_cursor(self.mapping.name)
        saved_pos = (saved.value, saved.key) if saved else None
        start: q.Position | None = None
        if saved is not None:
            start = q.Position(q.shift_back(saved.value, spec.lookback, self.tz), None)
        force_meta = FORCE_META.format(self.mapping.name)
        forced = self.store.get_meta(force_meta)
        self._force_until = Cursor.from_json(forced).value if forced else None
        try:
            self._scan_pages(spec, start, upper, saved_pos, counts)
        finally:
            self._force_until = None
        if forced and not self.stop.is_set():
            self.store.set_meta(force_meta, "")

    def _scan_pages(
        self,
        spec: SourceSpec,
        start: q.Position | None,
        upper: Any,
        saved_pos: tuple[Any, tuple[Any, ...]] | None,
        counts: RunCounts,
    ) -> None:
        while not self.stop.is_set():
            rows = self.reader.fetch(
                q.page_query(spec, start, upper, self.page_size),
                f"{self.mapping.file}: reading a page",
            )
            if not rows:
                return
            counts.rows_read += len(rows)
            saved_pos = self._process(rows, counts, saved_pos)
            last = rows[-1]
            start = q.Position(
                last[q.CURSOR_LABEL],
                tuple(last[k] if k in last else last[k.lower()] for k in spec.key),
            )
            if self.progress:
                self.progress(self.mapping.name, len(rows))
            if len(rows) < self.page_size:
                return

    def _null_cursor_sweep(self, counts: RunCounts) -> None:
        spec = self.mapping.source
        after: tuple[Any, ...] | None = None
        while not self.stop.is_set():
            rows = self.reader.fetch(
                q.null_cursor_query(spec, after, self.page_size),
                f"{self.mapping.file}: reading rows with a NULL cursor",
            )
            if not rows:
                return
            counts.rows_read += len(rows)
            self._process(rows, counts, None)
            last = rows[-1]
            after = tuple(last[k] if k in last else last[k.lower()] for k in spec.key)
            if len(rows) < self.page_size:
                return

    def _child_changes(self, counts: RunCounts) -> None:
        """Children with their own cursor: a changed child re-sends its parent (hash-checked)."""
        for cname, child in self.mapping.children.items():
            if child.cursor is None:
                continue
            meta = f"child_cursor:{self.mapping.name}:{cname}"
            raw = self.store.get_meta(meta)
            sample = self.reader.sample_cursor(self.mapping)
            upper = (
                q.upper_bound(self.reader.db_now_utc(), self.lag, sample, self.tz)
                if sample is not None
                else None
            )
            if raw is None:
                # first sight: the parent scan delivered everything up to now
                if upper is not None:
                    self.store.set_meta(meta, Cursor(upper, ()).to_json())
                continue
            after = q.shift_back(Cursor.from_json(raw).value, self.mapping.source.lookback, self.tz)
            newest = Cursor.from_json(raw).value
            while not self.stop.is_set():
                links = self.reader.fetch(
                    q.changed_parents_query(child, after, upper, self.page_size),
                    f"{self.mapping.file}: {child.path}: reading changed child rows",
                )
                if not links:
                    break
                keys = [
                    tuple(r[c] if c in r else r[c.lower()] for c in child.child_columns)
                    for r in links
                ]
                rows = self.reader.fetch(
                    q.rows_by_key_query(self.mapping.source, child.parent_columns, keys),
                    f"{self.mapping.file}: re-reading parents of changed child rows",
                )
                counts.rows_read += len(rows)
                self._process(rows, counts, None)
                after = links[-1][q.CURSOR_LABEL]
                newest = after
                if len(links) < self.page_size:
                    break
            if not self.stop.is_set() and upper is not None:
                self.store.set_meta(
                    meta,
                    Cursor(upper if newest is None else max_value(newest, upper), ()).to_json(),
                )

    # --- a page ----------------------------------------------------------------------------------

    def _process(
        self,
        rows: Sequence[dict[str, Any]],
        counts: RunCounts,
        saved_pos: tuple[Any, tuple[Any, ...]] | None,
    ) -> tuple[Any, tuple[Any, ...]] | None:
        """Send a page in batches; returns the cursor position saved so far."""
        children = {}
        if self.mapping.children:
            keyed = [r for r in rows]
            for cname, child in self.mapping.children.items():
                links = list(
                    dict.fromkeys(
                        tuple(r[c] if c in r else r[c.lower()] for c in child.parent_columns)
                        for r in keyed
                    )
                )
                kid_rows = (
                    self.reader.fetch(
                        q.children_query(child, links),
                        f"{self.mapping.file}: {child.path}: reading child rows",
                    )
                    if links
                    else []
                )
                children[cname] = group_children(child, kid_rows)
        units = transform_page(self.compiled, rows, children)
        known = self.store.get_hashes(self.mapping.name, [u.key_text for u in units])
        res = self.mapping.resource
        sends: list[Unit] = []
        deletes: list[Unit] = []
        rejects: list[Reject] = []
        last_pos: tuple[Any, tuple[Any, ...]] | None = None

        def flush() -> None:
            nonlocal sends, deletes, rejects, saved_pos
            accepted: list[Accepted] = []
            if sends:
                accepted, api_rejects = self._send(sends, counts)
                rejects.extend(api_rejects)
            deleted_keys: list[str] = []
            if deletes:
                deleted_keys = self._delete(deletes, counts)
            cursor = None
            if last_pos is not None and (saved_pos is None or _after(last_pos, saved_pos)):
                cursor = Cursor(last_pos[0], last_pos[1])
                saved_pos = last_pos
            if deleted_keys:
                self.store.commit_deleted(self.mapping.name, deleted_keys, None)
            self.store.commit_batch(
                self.mapping.name, accepted=accepted, rejects=rejects, cursor=cursor
            )
            counts.rejected += len(rejects)
            sends, deletes, rejects = [], [], []

        for u in units:
            if self.stop.is_set():
                break
            if u.kind == "send":
                if known.get(u.key_text) == u.hash and not self._forced(u):
                    counts.unchanged += 1
                else:
                    sends.append(u)
            elif u.kind == "delete":
                if u.key_text in known:
                    deletes.append(u)
                else:
                    counts.unchanged += 1
            else:
                rejects.append(
                    Reject(self.mapping.name, u.key_text, None, list(u.problems), "local")
                )
                log.warning(
                    "%s: row %s rejected before sending: %s",
                    self.mapping.file,
                    u.key_text,
                    "; ".join(u.problems),
                )
            if u.position is not None:
                last_pos = u.position
            if len(sends) >= res.batch_limit or len(deletes) >= res.delete_limit:
                flush()
        else:
            flush()
            return saved_pos
        # stopped mid-page: deliver what is pending for rows already handled, then stop
        flush()
        return saved_pos

    def _forced(self, u: Unit) -> bool:
        """Within a range that ``reset`` asked to re-send regardless of content."""
        if self._force_until is None or u.position is None:
            return False
        try:
            return bool(u.position[0] <= self._force_until)
        except TypeError:
            return True

    def _send(self, units: list[Unit], counts: RunCounts) -> tuple[list[Accepted], list[Reject]]:
        res = self.mapping.resource
        items = [u.item for u in units]
        result = self.client.send_items(
            res.path, items, what=f"{self.mapping.name}: POST {res.path}"
        )
        counts.requests += result.requests
        counts.items_sent += len(items)
        rejected_idx = {i for i, _ in result.rejected if i >= 0}
        rejects = []
        for i, entry in result.rejected:
            u = units[i] if 0 <= i < len(units) else None
            rejects.append(
                Reject(
                    self.mapping.name, u.key_text if u else "", u.item if u else None, entry, "api"
                )
            )
            log.warning(
                "%s: ShopiMind rejected %s: %s",
                self.mapping.file,
                u.key_text if u else "an item",
                entry,
            )
        accepted = [
            Accepted(u.key_text, u.hash) for i, u in enumerate(units) if i not in rejected_idx
        ]
        counts.accepted += len(accepted)
        return accepted, rejects

    def _delete(self, units: list[Unit], counts: RunCounts) -> list[str]:
        res = self.mapping.resource
        assert res.delete_path and res.delete_body_key and res.delete_id_field
        groups: dict[str, list[Unit]] = {}
        for u in units:
            path = res.delete_path
            if "{" in path:
                raise NotImplementedError("nested delete paths")
            groups.setdefault(path, []).append(u)
        done: list[str] = []
        for path, us in groups.items():
            for i in range(0, len(us), res.delete_limit):
                chunk = us[i : i + res.delete_limit]
                ids = [self._delete_id(u) for u in chunk]
                self.client.delete_ids(
                    path, res.delete_body_key, ids, what=f"{self.mapping.name}: delete"
                )
                counts.requests += 1
                counts.deleted += len(chunk)
                done.extend(u.key_text for u in chunk)
        return done

    def _delete_id(self, u: Unit) -> Any:
        return u.key[0]


def max_value(a: Any, b: Any) -> Any:
    try:
        return a if a > b else b
    except TypeError:
        return b
