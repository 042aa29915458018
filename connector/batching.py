"""Deliver pages of transformed rows: batches to the API, several in flight, committed in order.

Units arrive in cursor order. Upserts are cut into full batches of the resource's batch limit;
deletes (soft-deleted rows, a few per page) are held across batches until the delete limit is
reached, so a bulk-delete request carries up to that many ids instead of the one or two met since
the previous upsert batch (each request costs the same share of the budget). Each batch is sent
on the shared send pool, so several requests can be in flight while the next page is read;
batches are *committed* strictly in order: a state transaction records a batch's accepted
hashes, its rejected items and a cursor position (up to ``GROUP_BATCHES`` consecutive delivered
batches share one transaction). That position is the latest one no unit still
held back precedes: the open upsert batch and the held deletes each remember the position just
before their first unit, and a batch submitted while the other queue holds units commits at most
that position (None: the cursor does not move). If a batch fails, nothing after it moves the
cursor (batches after it that were accepted still record their hashes, so they are not re-sent),
and the error is raised. A batch itself, and how it is sent, are in :mod:`connector._batch`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import Any

from connector._batch import Batch, BatchSender, Position, position_after
from connector.destination.client import ApiClient
from connector.mapping.compile import CompiledMapping
from connector.state.model import Cursor, Reject, RunCounts
from connector.state.store import StateStore
from connector.transform import Unit

__all__ = ["GROUP_BATCHES", "PageWriter", "Position", "position_after"]

log = logging.getLogger("connector.sync")

# delivered batches committed together in one state transaction: a transaction costs about as
# much as recording a hundred rows, so one per batch of 50 doubled the state store's share of a
# backfill. A crash loses at most this many delivered batches' records (re-sent on restart, as
# at-least-once allows: their keys were announced before sending).
GROUP_BATCHES = 10


class PageWriter:
    """Sends units and commits cursors; ``saved`` is the cursor position saved so far.

    Call ``write`` for each page, then ``finish`` (also on errors) to drain what is in flight.
    """

    def __init__(
        self,
        compiled: CompiledMapping,
        *,
        client: ApiClient,
        store: StateStore,
        counts: RunCounts,
        stop: threading.Event,
        saved: Position | None,
        move_cursor: bool = True,
        forced: Callable[[Unit], bool] = lambda u: False,
        pool: Executor | None = None,
        max_in_flight: int = 1,
        open_rejects: bool = True,
    ) -> None:
        self.compiled = compiled
        self.mapping = compiled.mapping
        self.client = client
        self._sender = BatchSender(compiled, client)  # runs on the send pool
        self.store = store
        self.counts = counts
        self.stop = stop
        self.saved = saved
        self.move_cursor = move_cursor
        self.forced = forced
        self.pool = pool
        self.max_in_flight = max_in_flight
        self.open_rejects = open_rejects  # False: no accepted key can have an open reject
        self._pending: deque[tuple[Batch, Future[Batch]]] = deque()
        self._failed: BaseException | None = None
        self._broken = False  # a failure was raised: nothing more is sent
        self._announcing: list[Future[None]] = []  # write-ahead of new keys, on the pool
        # not yet submitted: the open batch (upserts, local rejects, settled keys; sent when
        # full) and the held deletes (sent when they reach the delete limit); both span pages
        self._open = Batch()
        self._held: list[tuple[Unit, dict[str, Any]]] = []
        self._open_keys: set[str] = set()  # keys of the open batch's upserts
        self._held_keys: set[str] = set()
        self._seen: Position | None = None  # position of the latest unit written
        self._open_from: Position | None = None  # _seen before the open batch's first unit
        self._held_from: Position | None = None  # _seen before the first held delete

    # --- building batches ------------------------------------------------------------------------

    def write(self, units: Sequence[Unit], rows: Sequence[dict[str, Any]]) -> None:
        res = self.mapping.resource
        records = self.store.get_records(self.mapping.name, [u.key_text for u in units])
        known = {k: h for k, (status, h) in records.items() if status == "sent"}
        new = [u.key_text for u in units if u.kind == "send" and u.key_text not in records]
        if new:
            self._announce(new)
        for u, row in zip(units, rows, strict=True):
            if self.stop.is_set() or self._failed is not None:
                break  # what is pending is still delivered and committed by finish()
            key = u.key_text
            if u.kind == "delete":
                self._drop_send(key)  # read again since, now deleted: the delete supersedes it
                # deleted unless known as deleted already: a row accepted just before a crash
                # (so not recorded) must not survive its soft delete; unknown ids are skipped by
                # the API, so an old soft-deleted row costs one idempotent call, once
                if records.get(key, ("", None))[0] != "deleted":
                    if not self._held:
                        self._held_from = self._seen
                    self._held.append((u, row))
                    self._held_keys.add(key)
                else:
                    self.counts.unchanged += 1
                    self._open_batch().settled.append(key)
            else:
                self._drop_delete(key)  # back since it was read as deleted: not deleted
                if u.kind == "send":
                    if known.get(key) == u.hash and not self.forced(u):
                        self.counts.unchanged += 1
                    else:
                        self._open_batch().sends.append(u)
                        self._open_keys.add(key)
                else:
                    self._open_batch().rejects.append(
                        Reject(self.mapping.name, key, None, list(u.problems), "local")
                    )
                    log.warning(
                        "%s: row %s rejected before sending (kept in rejected items): %s",
                        self.mapping.file,
                        key,
                        "; ".join(u.problems),
                    )
            if u.position is not None:
                self._seen = u.position
            if len(self._open.sends) >= res.batch_limit:
                self._submit_open()
            if len(self._held) >= res.delete_limit:
                self._submit_held()
        self._raise_if_failed()

    def _announce(self, keys: list[str]) -> None:
        """Write-ahead, once a page: keys about to be sent for the first time are recorded
        before any request, so a crash after ShopiMind accepted them cannot hide them from the
        reconciliation of hard deletes (see StateStore.announce).

        With a send pool the state write runs there (it took about a tenth of the pass thread
        in a backfill), and every batch submitted later waits for it before sending: the pool
        runs tasks in submission order, so the write starts before any batch that waits on it.
        """
        if self.pool is None:
            self.store.announce(self.mapping.name, keys)
            return
        self._announcing = self._unsettled_announces()
        self._announcing.append(self.pool.submit(self.store.announce, self.mapping.name, keys))

    def _unsettled_announces(self) -> list[Future[None]]:
        """Write-aheads still running, or failed (a batch waiting on them fails too)."""
        return [f for f in self._announcing if not f.done() or f.exception()]

    def _open_busy(self) -> bool:
        b = self._open
        return bool(b.sends or b.rejects or b.settled)

    def _open_batch(self) -> Batch:
        """The open batch, about to get a unit (which the cursor must not pass unsent)."""
        if not self._open_busy():
            self._open_from = self._seen
        return self._open

    def _drop_send(self, key: str) -> None:
        """A row read twice by this writer: its later version wins (rare: a row changed while
        a pass ran). Without this, a held delete could reach the API before, or an upsert after,
        the version of the row it replaces."""
        if key in self._open_keys:
            self._open_keys.discard(key)
            self._open.sends = [u for u in self._open.sends if u.key_text != key]

    def _drop_delete(self, key: str) -> None:
        if key in self._held_keys:
            self._held_keys.discard(key)
            self._held = [(u, r) for u, r in self._held if u.key_text != key]

    def _submit_open(self) -> None:
        """Submit the open (full) batch: its cursor stops before the first held delete."""
        batch, self._open, self._open_keys = self._open, Batch(), set()
        batch.last = self._held_from if self._held else self._seen
        self._submit(batch)

    def _submit_held(self) -> None:
        """Submit the held deletes alone: the cursor stops before the open batch's first unit."""
        batch = Batch(deletes=self._held)
        batch.last = self._open_from if self._open_busy() else self._seen
        self._held, self._held_keys = [], set()
        self._submit(batch)

    def _submit(self, batch: Batch) -> None:
        batch.after = self._unsettled_announces()
        if not (batch.sends or batch.deletes):
            done: Future[Batch] = Future()
            done.set_result(batch)
            self._pending.append((batch, done))
        elif self.pool is None or self._target() <= 1:
            fut: Future[Batch] = Future()
            try:
                fut.set_result(self._sender.deliver(batch))
            except BaseException as exc:  # committed (or not) in order by _commit_ready
                fut.set_exception(exc)
            self._pending.append((batch, fut))
        else:
            self._wait_for_room()
            self._pending.append((batch, self.pool.submit(self._sender.deliver, batch)))
        self._commit_ready()

    def _target(self) -> int:
        """Requests to keep in flight, from the budget and the answer time seen so far (the
        first answers of a pass teach it the latency)."""
        return self.client.in_flight_target(self.max_in_flight)

    def _wait_for_room(self) -> None:
        """Block while ``_target()`` batches are in flight, until *any* of them ends: waiting
        for the oldest one only would idle the pipeline behind a slow (or retried) request.
        Batches done behind an unfinished one wait to be committed in order; at most
        ``4 x max_in_flight`` of them are kept (memory), then the oldest is waited for."""
        backlog = 4 * self.max_in_flight
        while True:
            running = [f for _, f in self._pending if not f.done()]
            if len(self._pending) >= backlog:
                wait([self._pending[0][1]])
                self._commit_ready(final=True)  # the head is done: commit it, group or not
                continue
            if len(running) >= self._target():
                wait(running, return_when=FIRST_COMPLETED)
            else:
                return
            self._commit_ready()

    # --- committing, in order ---------------------------------------------------------------------

    def _commit_ready(self, *, final: bool = False) -> None:
        """Commit the finished batches at the head of the queue; consecutive accepted batches
        go in one state transaction (the cursor of the last one). Unless ``final``, fewer than
        ``GROUP_BATCHES`` finished batches wait for the next ones (a failure never waits)."""
        if not final:
            ready = 0
            for _batch, fut in self._pending:
                if not fut.done():
                    break
                if fut.cancelled() or fut.exception() is not None or fut.result().error:
                    ready = GROUP_BATCHES  # a failure is committed (and raised) at once
                    break
                ready += 1
            if ready < GROUP_BATCHES:
                return
        group: list[Batch] = []
        while self._pending and self._pending[0][1].done():
            _batch, fut = self._pending.popleft()
            try:
                done = fut.result()
            except BaseException as exc:
                self._flush_group(group)
                if self._failed is None:
                    self._failed = exc
                continue
            if done.error is not None:  # its upserts count, its cursor not (deletes failed)
                self._flush_group(group)
                if self._failed is None:
                    self._failed = done.error
                self._flush_group([done])
                continue
            group.append(done)
        self._flush_group(group)

    def _flush_group(self, group: list[Batch]) -> None:
        if not group:
            return
        merged = group[0]
        for b in group[1:]:
            merged = merged.merge(b)
        self._commit(merged, move_cursor=self._failed is None)
        group.clear()

    def _commit_head(self, *, block: bool) -> None:
        """Wait for the oldest batch still in flight (when ``block``), then commit what is
        ready; once nothing is in flight any more, everything is committed."""
        if block:
            waiting = next((f for _b, f in self._pending if not f.done()), None)
            if waiting is not None:
                wait([waiting])
        self._commit_ready(final=block and all(f.done() for _b, f in self._pending))

    def _commit(self, batch: Batch, *, move_cursor: bool) -> None:
        cursor = None
        last = batch.last
        ahead = last is not None and (self.saved is None or position_after(last, self.saved))
        if self.move_cursor and move_cursor and ahead and last is not None:
            cursor = Cursor(last[0], last[1])
            self.saved = last
        if batch.deleted:
            self.store.commit_deleted(self.mapping.name, batch.deleted, None)
        rejects = batch.rejects if move_cursor else [r for r in batch.rejects if r.source == "api"]
        if batch.settled:
            self.store.settle(self.mapping.name, batch.settled)
        self.store.commit_batch(
            self.mapping.name,
            accepted=batch.accepted,
            rejects=rejects,
            cursor=cursor,
            resolve=self.open_rejects,
        )
        self.open_rejects = self.open_rejects or bool(rejects)
        c, b = self.counts, batch.counts
        c.requests += b.requests
        c.items_sent += b.items_sent
        c.accepted += b.accepted
        c.deleted += b.deleted
        c.rejected += len(rejects)

    def finish(self) -> None:
        """Send the last, partly filled batch with the held deletes (unless stopping or after a
        failure), wait for every batch in flight and commit in order; then raise the first
        failure."""
        batch, self._open, self._open_keys = self._open, Batch(), set()
        batch.deletes, self._held, self._held_keys = self._held, [], set()
        batch.last = self._seen  # nothing is held back any more
        if not (self._broken or self.stop.is_set() or batch.empty):
            self._submit(batch)
        while self._pending:
            self._commit_head(block=True)
        for f in self._announcing:  # nothing of this writer runs on after it
            if f.exception() is not None and self._failed is None and not self._broken:
                self._failed = f.exception()
        self._announcing = []
        self._raise_if_failed()

    def abandon(self) -> None:
        """After an error elsewhere: still commit what the API accepted, never raise."""
        try:
            self.finish()
        except BaseException as exc:  # already failing: the first error wins
            log.debug("%s: while draining: %s", self.mapping.file, exc)

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            exc, self._failed = self._failed, None
            self._broken = True
            # drain the rest so accepted batches record their hashes (without moving the cursor)
            while self._pending:
                _batch, fut = self._pending.popleft()
                try:
                    self._commit(fut.result(), move_cursor=False)
                except BaseException:
                    continue
            raise exc
