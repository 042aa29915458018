"""Deliver one page of transformed rows: batches to the API, then one state commit per batch.

The order of units is the order of the rows in the page (cursor order). Each flush sends the
pending upserts and deletes, then commits — in one state transaction — the accepted hashes, the
rejected items and the cursor position of the last row handled. A row is therefore never behind
the saved cursor unless it was accepted, rejected (and kept), unchanged, or deleted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from connector.destination.client import ApiClient
from connector.mapping.compile import CompiledMapping
from connector.state.model import Accepted, Cursor, Reject, RunCounts
from connector.state.store import StateStore
from connector.transform import Unit, payload_hash

log = logging.getLogger("connector.sync")

Position = tuple[Any, tuple[Any, ...]]


def position_after(a: Position, b: Position) -> bool:
    try:
        return bool((a[0], a[1]) > (b[0], b[1]))
    except TypeError:  # values of different forms: the database's order is the truth
        return True


class PageWriter:
    """Sends units and commits cursors; ``saved`` is the cursor position saved so far."""

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
    ) -> None:
        self.compiled = compiled
        self.mapping = compiled.mapping
        self.client = client
        self.store = store
        self.counts = counts
        self.stop = stop
        self.saved = saved
        self.move_cursor = move_cursor
        self.forced = forced

    def write(self, units: Sequence[Unit], rows: Sequence[dict[str, Any]]) -> None:
        res = self.mapping.resource
        known = self.store.get_hashes(self.mapping.name, [u.key_text for u in units])
        sends: list[Unit] = []
        deletes: list[tuple[Unit, dict[str, Any]]] = []
        rejects: list[Reject] = []
        last: Position | None = None

        def flush() -> None:
            accepted: list[Accepted] = []
            if sends:
                accepted = self._send(sends, rejects)
            deleted = self._delete(deletes, rejects) if deletes else []
            cursor = None
            moved = last is not None and (self.saved is None or position_after(last, self.saved))
            if self.move_cursor and moved and last is not None:
                cursor = Cursor(last[0], last[1])
                self.saved = last
            if deleted:
                self.store.commit_deleted(self.mapping.name, deleted, None)
            self.store.commit_batch(
                self.mapping.name, accepted=accepted, rejects=rejects, cursor=cursor
            )
            self.counts.rejected += len(rejects)
            sends.clear()
            deletes.clear()
            rejects.clear()

        for u, row in zip(units, rows, strict=True):
            if self.stop.is_set():
                break  # what is pending is still delivered and committed below
            if u.kind == "send":
                if known.get(u.key_text) == u.hash and not self.forced(u):
                    self.counts.unchanged += 1
                else:
                    sends.append(u)
            elif u.kind == "delete":
                if u.key_text in known:
                    deletes.append((u, row))
                else:
                    self.counts.unchanged += 1
            else:
                rejects.append(
                    Reject(self.mapping.name, u.key_text, None, list(u.problems), "local")
                )
                log.warning(
                    "%s: row %s rejected before sending (kept in rejected items): %s",
                    self.mapping.file,
                    u.key_text,
                    "; ".join(u.problems),
                )
            if u.position is not None:
                last = u.position
            if len(sends) >= res.batch_limit or len(deletes) >= res.delete_limit:
                flush()
        flush()

    def _send(self, units: list[Unit], rejects: list[Reject]) -> list[Accepted]:
        res = self.mapping.resource
        items = [u.item for u in units]
        result = self.client.send_items(
            res.path, items, what=f"{self.mapping.name}: POST {res.path}"
        )
        self.counts.requests += result.requests
        self.counts.items_sent += len(items)
        refused = {i for i, _ in result.rejected if i >= 0}
        for i, entry in result.rejected:
            u = units[i] if 0 <= i < len(units) else None
            key = u.key_text if u else "unmatched:" + payload_hash(entry)[:16]
            rejects.append(Reject(self.mapping.name, key, u.item if u else None, entry, "api"))
            log.warning(
                "%s: ShopiMind rejected row %s (kept in rejected items): %s",
                self.mapping.file,
                key or "?",
                entry,
            )
        accepted = [Accepted(u.key_text, u.hash) for i, u in enumerate(units) if i not in refused]
        self.counts.accepted += len(accepted)
        return accepted

    def _delete(self, pairs: list[tuple[Unit, dict[str, Any]]], rejects: list[Reject]) -> list[str]:
        """Bulk-delete on ShopiMind, grouped by route, at most ``delete_limit`` ids a call."""
        res = self.mapping.resource
        assert res.delete_body_key is not None
        if not self.compiled.can_delete:
            for u, _row in pairs:
                rejects.append(
                    Reject(
                        self.mapping.name,
                        u.key_text,
                        None,
                        [f"{res.name}: cannot delete, {res.delete_id_field} is not mapped"],
                        "local",
                    )
                )
            return []
        groups: dict[str, dict[Any, list[str]]] = {}
        for u, row in pairs:
            try:
                path, ident = self.compiled.delete_ref(row)
            except ValueError as exc:
                rejects.append(
                    Reject(self.mapping.name, u.key_text, None, [f"cannot delete: {exc}"], "local")
                )
                continue
            groups.setdefault(path, {}).setdefault(ident, []).append(u.key_text)
        done: list[str] = []
        for path, by_id in groups.items():
            ids = list(by_id)
            for i in range(0, len(ids), res.delete_limit):
                chunk = ids[i : i + res.delete_limit]
                self.client.delete_ids(
                    path, res.delete_body_key, chunk, what=f"{self.mapping.name}: POST {path}"
                )
                self.counts.requests += 1
                self.counts.deleted += len(chunk)
                for ident in chunk:
                    done.extend(by_id[ident])
        return done
