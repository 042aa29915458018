"""A batch of units and its delivery to the API: what :mod:`connector.batching` builds, sends on
the send pool and commits. Sending touches nothing but the batch: upserts first, then the bulk
deletes, and a delete that fails after the upserts were accepted is kept on the batch (``error``)
for the commit, which keeps the upserts and stops the cursor."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, overload

from connector.destination.client import ApiClient
from connector.mapping.compile import CompiledMapping
from connector.state.model import Accepted, Reject, RunCounts
from connector.transform import Unit, payload_hash

log = logging.getLogger("connector.sync")

Position = tuple[Any, tuple[Any, ...]]


def position_after(a: Position, b: Position) -> bool:
    try:
        return bool((a[0], a[1]) > (b[0], b[1]))
    except TypeError:  # values of different forms: the database's order is the truth
        return True


@dataclass
class Batch:
    sends: list[Unit] = field(default_factory=list)
    deletes: list[tuple[Unit, dict[str, Any]]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)  # deleted before ever accepted
    last: Position | None = None
    # filled by the send
    accepted: list[Accepted] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    counts: RunCounts = field(default_factory=RunCounts)
    error: Exception | None = None  # a delete failed after the upserts were accepted
    after: list[Future[None]] = field(default_factory=list)  # write-ahead to wait for first

    def merge(self, later: Batch) -> Batch:
        """Two consecutive, delivered batches as one commit."""
        out = Batch(
            rejects=[*self.rejects, *later.rejects],
            settled=[*self.settled, *later.settled],
            last=later.last if later.last is not None else self.last,
            accepted=[*self.accepted, *later.accepted],
            deleted=[*self.deleted, *later.deleted],
        )
        for name in ("requests", "items_sent", "accepted", "deleted"):
            setattr(out.counts, name, getattr(self.counts, name) + getattr(later.counts, name))
        return out

    @property
    def empty(self) -> bool:
        return not (self.sends or self.deletes or self.rejects or self.settled or self.last)


class _Payloads(Sequence[Any]):
    """The items of a batch, read from their units when asked for: a unit mapped in a worker
    process carries only its JSON, and the items are needed only when ShopiMind rejects some
    (or the batch is split)."""

    def __init__(self, units: Sequence[Unit]) -> None:
        self._units = units

    def __len__(self) -> int:
        return len(self._units)

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [u.payload for u in self._units[i]]
        return self._units[i].payload


class BatchSender:
    """Sends batches of one mapping; thread-safe (it keeps nothing of a batch)."""

    def __init__(self, compiled: CompiledMapping, client: ApiClient) -> None:
        self.compiled = compiled
        self.mapping = compiled.mapping
        self.client = client

    def deliver(self, batch: Batch) -> Batch:
        """Send ``batch`` once its write-aheads are done; it comes back filled in."""
        for announced in batch.after:
            announced.result()  # failing: nothing of the batch is sent
        if batch.sends:
            self._send(batch)  # failing here: nothing of the batch was accepted
        if batch.deletes:
            try:
                self._delete(batch)
            except Exception as exc:  # the upserts were accepted: keep them, stop the cursor
                batch.error = exc
        return batch

    def _send(self, batch: Batch) -> None:
        res = self.mapping.resource
        units = batch.sends
        what = f"{self.mapping.name}: POST {res.path}"
        # each unit's canonical JSON (what its hash hashes) is the request body: not encoded again
        bodies = [u.body for u in units] if all(u.body for u in units) else None
        items: Sequence[Any] = _Payloads(units) if bodies else [u.payload for u in units]
        result = self.client.send_items(res.path, items, what=what, encoded=bodies)
        batch.counts.requests += result.requests
        batch.counts.items_sent += len(items)
        refused = {i for i, _ in result.rejected if i >= 0}
        for i, entry in result.rejected:
            u = units[i] if 0 <= i < len(units) else None
            key = u.key_text if u else "unmatched:" + payload_hash(entry)[:16]
            batch.rejects.append(
                Reject(self.mapping.name, key, items[i] if u else None, entry, "api")
            )
            log.warning(
                "%s: ShopiMind rejected row %s (kept in rejected items): %s",
                self.mapping.file,
                key,
                entry,
            )
        batch.accepted = [
            Accepted(u.key_text, u.hash) for i, u in enumerate(units) if i not in refused
        ]
        batch.counts.accepted += len(batch.accepted)

    def _delete(self, batch: Batch) -> None:
        """Bulk-delete on ShopiMind, grouped by route, at most ``delete_limit`` ids a call."""
        res = self.mapping.resource
        assert res.delete_body_key is not None
        if not self.compiled.can_delete:
            for u, _row in batch.deletes:
                why = f"{res.name}: cannot delete, {res.delete_id_field} is not mapped"
                batch.rejects.append(Reject(self.mapping.name, u.key_text, None, [why], "local"))
            return
        groups: dict[str, dict[Any, list[str]]] = {}
        for u, row in batch.deletes:
            try:
                path, ident = self.compiled.delete_ref(row)
            except ValueError as exc:
                batch.rejects.append(
                    Reject(self.mapping.name, u.key_text, None, [f"cannot delete: {exc}"], "local")
                )
                continue
            groups.setdefault(path, {}).setdefault(ident, []).append(u.key_text)
        for path, by_id in groups.items():
            ids = list(by_id)
            for i in range(0, len(ids), res.delete_limit):
                chunk = ids[i : i + res.delete_limit]
                what = f"{self.mapping.name}: POST {path}"
                self.client.delete_ids(path, res.delete_body_key, chunk, what=what)
                batch.counts.requests += 1
                batch.counts.deleted += len(chunk)
                for ident in chunk:
                    batch.deleted.extend(by_id[ident])
