"""In-memory state of the sandbox: accepted records, deletions, the request log, the rate limiter
and injected faults.

Every class here guards its own state with a lock, so HTTP handler threads and the test thread can
use it at the same time. Nothing here knows about HTTP; ``routes`` turns requests into calls.

The sandbox applies writes immediately (the real API queues them) and does not enforce
referential integrity: a variation or image whose ``product_id`` names no stored product, or an
address whose ``customer_id`` names no stored customer, is accepted like any other valid item.
"""

from __future__ import annotations

import copy
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.registry import FieldError, Resource, check_item

JSONObject = dict[str, Any]


def id_text(value: object) -> str:
    """An id or key value as text: the sandbox compares ids as strings (``42`` == ``"42"``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def key_text(resource: Resource, item: Mapping[str, object]) -> str:
    """The record key as text: the key fields' values joined with ``|`` (``"42|fr"``)."""
    return "|".join(id_text(item.get(k)) for k in resource.key)


def json_copy(value: Any) -> Any:
    """A deep copy of parsed JSON (dicts, lists, scalars); anything else goes to ``deepcopy``.
    About 5x faster than ``copy.deepcopy`` on the items of a bulk write, which the sandbox
    copies on every request (a cost paid on the machine it shares with the connector)."""
    kind = type(value)
    if kind is dict:
        return {k: json_copy(v) for k, v in value.items()}
    if kind is list:
        return [json_copy(v) for v in value]
    if kind in _SCALARS:
        return value
    return copy.deepcopy(value)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def error_text(err: FieldError) -> str:
    return f"{err.path}: {err.message}" if err.path else err.message


@dataclass(frozen=True)
class RequestLog:
    """One request the sandbox answered (control routes under ``/_sandbox/`` are not logged)."""

    method: str
    path: str  # without the query string
    status: int
    item_count: int  # items in an array body, or ids in a bulk-delete body; 0 otherwise
    api_key_ok: bool
    time: float  # epoch seconds when the request arrived
    idempotency_key: str | None  # ``Idempotency-Key`` or ``X-Idempotency-Key`` header
    resource: str | None = None  # registry name of the route's resource ("contacts" for lookups)


@dataclass
class Rejected:
    index: int
    item: object
    errors: list[str]

    def as_json(self) -> JSONObject:
        return {"index": self.index, "item": self.item, "errors": self.errors}


@dataclass
class WriteResult:
    sent: int = 0
    rejected: list[Rejected] = field(default_factory=list)


class RateLimiter:
    """At most ``limit`` admitted requests per key in any sliding window of ``window`` seconds."""

    def __init__(
        self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ValueError("requests_per_minute must be at least 1")
        if window <= 0:
            raise ValueError("the rate-limit window must be positive")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, deque[float]] = {}

    def acquire(self, key: str) -> int | None:
        """Admit one request (None) or return whole seconds until a slot frees (at least 1).

        Refused requests do not take a slot.
        """
        now = self._clock()
        with self._lock:
            q = self._seen.setdefault(key, deque())
            while q and q[0] <= now - self.window:
                q.popleft()
            if len(q) < self.limit:
                q.append(now)
                return None
            return max(1, math.ceil(q[0] + self.window - now))

    def reset(self) -> None:
        with self._lock:
            self._seen.clear()


@dataclass
class FaultRule:
    status: int
    remaining: int
    path_prefix: str | None
    retry_after: int | None
    applied: bool = False  # the request is processed first, then answered with ``status``


class Faults:
    """Injected failures: statuses answered instead of processing (or after it, ``applied``),
    and added latency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._delay = 0.0
        self._delay_left: int | None = None
        self._delay_prefix: str | None = None

    def inject(
        self,
        status: int = 503,
        count: int = 2,
        path_prefix: str | None = None,
        retry_after: int | None = None,
        applied: bool = False,
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError("an injected status must be between 400 and 599")
        if count < 1:
            raise ValueError("count must be at least 1")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must not be negative")
        with self._lock:
            self._rules.append(FaultRule(status, count, path_prefix, retry_after, applied))

    def inject_delay(
        self, seconds: float, count: int | None = None, path_prefix: str | None = None
    ) -> None:
        if seconds < 0:
            raise ValueError("a delay must not be negative")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or None for 'until cleared')")
        with self._lock:
            self._delay = seconds
            self._delay_left = count
            self._delay_prefix = path_prefix

    def take_fault(self, path: str) -> FaultRule | None:
        """The first rule matching ``path``, consumed once; None when no fault applies."""
        with self._lock:
            for rule in self._rules:
                if rule.path_prefix is None or path.startswith(rule.path_prefix):
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                    return FaultRule(
                        rule.status, 1, rule.path_prefix, rule.retry_after, rule.applied
                    )
            return None

    def take_delay(self, path: str = "") -> float:
        with self._lock:
            if self._delay <= 0:
                return 0.0
            if self._delay_prefix is not None and not path.startswith(self._delay_prefix):
                return 0.0
            delay = self._delay
            if self._delay_left is not None:
                self._delay_left -= 1
                if self._delay_left <= 0:
                    self._delay, self._delay_left = 0.0, None
            return delay

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._delay, self._delay_left = 0.0, None


class Store:
    """Accepted records per resource (key text → last item), deletions and the request log."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._records: dict[str, dict[str, JSONObject]] = {}
        # resource → delete-id text → keys of its stored records: a bulk delete looks up its ids
        # instead of scanning every record under the lock (with 100k records stored, a scan per
        # delete slowed every answer of a backfill down)
        self._by_id: dict[str, dict[str, set[str]]] = {}
        self._deleted: dict[str, set[str]] = {}
        self._requests: list[RequestLog] = []
        self._sends: dict[str, dict[str, int]] = {}  # resource → key text → times stored
        # resource → key text → message: items the "server" refuses for reasons the connector
        # cannot check itself (an unknown product_id, a server-side rule)
        self._refuse: dict[str, dict[str, str]] = {}
        # silent drops (an accepted item the "queue" loses): share of items, its random source,
        # and the keys lost so far per resource
        self._drop_share = 0.0
        self._drop_rng = random.Random(0)
        self._dropped: dict[str, set[str]] = {}
        self._rowids: dict[str, dict[str, int]] = {}  # resource → key text → ShopiMind's own id

    def refuse(self, name: str, keys: dict[str, str]) -> None:
        with self._lock:
            self._refuse.setdefault(name, {}).update(keys)

    def drop(self, share: float, seed: int = 0) -> None:
        """From now on, answer ``share`` (0..1) of the valid upserted items as accepted without
        storing them (the asynchronous queue losing them); ``dropped`` names them."""
        if not 0.0 <= share <= 1.0:
            raise ValueError("the drop share must be between 0 and 1")
        with self._lock:
            self._drop_share, self._drop_rng = share, random.Random(seed)

    def dropped(self, name: str) -> set[str]:
        with self._lock:
            return set(self._dropped.get(name, set()))

    def edit(self, resource: Resource, key: str, changes: Mapping[str, object]) -> None:
        """Change fields of a stored record behind the connector's back (KeyError if unknown)."""
        with self._lock:
            item = self._records.get(resource.name, {})[key]
            old = dict(item)
            item.update(json_copy(dict(changes)))
            self._index(resource, key, old, item)

    def remove(self, resource: Resource, key: str) -> None:
        """Delete a stored record behind the connector's back (KeyError if unknown)."""
        with self._lock:
            item = self._records.get(resource.name, {}).pop(key)
            self._unindex(resource, key, item)

    def add(self, resource: Resource, item: Mapping[str, object]) -> str:
        """Store a record the connector never sent (not validated); returns its key text."""
        with self._lock:
            key = key_text(resource, item)
            table = self._records.setdefault(resource.name, {})
            old = table.get(key)
            table[key] = json_copy(dict(item))
            self._index(resource, key, old, table[key])
            return key

    def page(self, name: str, offset: int, limit: int) -> tuple[list[JSONObject], int]:
        """Stored records in creation order, as the read routes show them (with ShopiMind's own
        ``id``): ``limit`` of them after ``offset``, and how many there are."""
        with self._lock:
            table = self._records.get(name, {})
            keys = list(table)[offset : offset + limit]
            return [self._read_model(name, k, table[k]) for k in keys], len(table)

    def find(self, resource: Resource, key: str) -> JSONObject | None:
        with self._lock:
            item = self._records.get(resource.name, {}).get(key)
            return None if item is None else self._read_model(resource.name, key, item)

    def _read_model(self, name: str, key: str, item: JSONObject) -> JSONObject:
        ids = self._rowids.setdefault(name, {})
        rowid = ids.setdefault(key, len(ids) + 1)
        return {"id": rowid, **json_copy(item)}

    def clear_refusals(self) -> None:
        with self._lock:
            self._refuse.clear()

    # --- reading -------------------------------------------------------------------------------

    def records(self, name: str) -> dict[str, JSONObject]:
        with self._lock:
            return copy.deepcopy(self._records.get(name, {}))

    def deleted(self, name: str) -> set[str]:
        with self._lock:
            return set(self._deleted.get(name, set()))

    def requests(self) -> list[RequestLog]:
        with self._lock:
            return list(self._requests)

    def send_counts(self, name: str) -> dict[str, int]:
        """How many times each key of a resource was stored by a POST or PUT (a history: deletes
        and later writes do not lower it; ``reset`` clears it)."""
        with self._lock:
            return dict(self._sends.get(name, {}))

    def _count_send(self, name: str, key: str) -> None:
        counts = self._sends.setdefault(name, {})
        counts[key] = counts.get(key, 0) + 1

    def log(self, entry: RequestLog) -> None:
        with self._lock:
            self._requests.append(entry)

    def stats(self) -> JSONObject:
        with self._lock:
            by_status: dict[str, int] = {}
            by_resource: dict[str, int] = {}
            for r in self._requests:
                by_status[str(r.status)] = by_status.get(str(r.status), 0) + 1
                if r.resource is not None:
                    by_resource[r.resource] = by_resource.get(r.resource, 0) + 1
            return {
                "requests": len(self._requests),
                "by_status": by_status,
                "by_resource": by_resource,
                "records": {n: len(v) for n, v in self._records.items() if v},
                "deleted": {n: len(v) for n, v in self._deleted.items() if v},
            }

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
            self._by_id.clear()
            self._deleted.clear()
            self._requests.clear()
            self._sends.clear()
            self._dropped.clear()
            self._rowids.clear()
            self._drop_share = 0.0

    # --- writing -------------------------------------------------------------------------------

    def upsert(self, resource: Resource, items: list[object]) -> WriteResult:
        """POST: store each valid item under its key, replacing any earlier item with that key."""
        result = WriteResult()
        with self._lock:
            table = self._records.setdefault(resource.name, {})
            for i, item in enumerate(items):
                errors = [error_text(e) for e in check_item(resource, item).errors]
                refused = self._refuse.get(resource.name, {})
                if not errors and isinstance(item, dict) and refused:
                    why = refused.get(key_text(resource, item))
                    errors = [why] if why else []
                if errors or not isinstance(item, dict):
                    result.rejected.append(Rejected(i, item, errors))
                    continue
                key = key_text(resource, item)
                if self._drop_share and self._drop_rng.random() < self._drop_share:
                    self._dropped.setdefault(resource.name, set()).add(key)
                    result.sent += 1  # accepted, then lost by the queue
                    continue
                self._dropped.get(resource.name, set()).discard(key)
                old = table.get(key)
                table[key] = json_copy(item)
                self._index(resource, key, old, item)
                self._count_send(resource.name, key)
                result.sent += 1
        return result

    def update(self, resource: Resource, items: list[object]) -> WriteResult:
        """PUT: merge each item's fields into the stored record with the same key.

        Fields absent from an item keep their stored value; an item whose key is not stored is
        rejected. A null sent for an optional field clears it; for a required field it is an error.
        """
        result = WriteResult()
        with self._lock:
            table = self._records.setdefault(resource.name, {})
            for i, item in enumerate(items):
                errors = _partial_errors(resource, item)
                if not errors and isinstance(item, dict):
                    key = key_text(resource, item)
                    if key in table:
                        old = dict(table[key]) if resource.delete_id_field in item else None
                        table[key].update(copy.deepcopy(item))
                        if old is not None:
                            self._index(resource, key, old, table[key])
                        self._count_send(resource.name, key)
                        result.sent += 1
                        continue
                    errors = [
                        f"{'+'.join(resource.key)}: no stored record with key {key!r} "
                        "(PUT only updates existing records; POST creates them)"
                    ]
                result.rejected.append(Rejected(i, item, errors))
        return result

    def delete(self, resource: Resource, ids: Iterable[str], parent: Mapping[str, str]) -> None:
        """Bulk delete: remove every record whose delete-id field is in ``ids`` and whose fields
        named in ``parent`` (the path's placeholders) match, across all its language rows.

        Unknown ids are skipped. ``deleted(resource)`` gains, for every requested id (known or
        not), the key text without ``lang`` (``"42"`` for a product, ``"42|7"`` for variation 7 of
        product 42); it is a history and a later upsert does not remove it.
        """
        id_field = resource.delete_id_field
        if id_field is None:
            raise ValueError(f"{resource.name} has no bulk delete")
        wanted = set(ids)
        with self._lock:
            table = self._records.setdefault(resource.name, {})
            index = self._by_id.setdefault(resource.name, {})
            for id_ in wanted:
                keys = index.get(id_)
                for key in list(keys or ()):
                    item = table[key]
                    if all(id_text(item.get(f)) == v for f, v in parent.items()):
                        del table[key]
                        self._unindex(resource, key, item)
            gone = self._deleted.setdefault(resource.name, set())
            key_fields = [k for k in resource.key if k != "lang"]
            for id_ in wanted:
                values = {**parent, id_field: id_}
                if all(k in values for k in key_fields):
                    gone.add("|".join(values[k] for k in key_fields))
                else:
                    gone.add(id_)

    def _index(self, resource: Resource, key: str, old: JSONObject | None, new: JSONObject) -> None:
        """Keep ``_by_id`` in step when the record ``key`` goes from ``old`` (None: new) to
        ``new`` (under the lock)."""
        id_field = resource.delete_id_field
        if id_field is None:
            return
        new_id = id_text(new.get(id_field))
        if old is not None:
            if id_text(old.get(id_field)) == new_id:
                return
            self._unindex(resource, key, old)
        self._by_id.setdefault(resource.name, {}).setdefault(new_id, set()).add(key)

    def _unindex(self, resource: Resource, key: str, item: JSONObject) -> None:
        assert resource.delete_id_field is not None
        index = self._by_id.get(resource.name, {})
        id_ = id_text(item.get(resource.delete_id_field))
        keys = index.get(id_)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del index[id_]

    def find_customers(
        self, field_name: str, value: str, casefold: bool = False
    ) -> list[JSONObject]:
        with self._lock:
            found = []
            for item in self._records.get("customers", {}).values():
                got = id_text(item.get(field_name))
                if got == value or (casefold and got.casefold() == value.casefold()):
                    found.append(copy.deepcopy(item))
            return found


def _partial_errors(resource: Resource, item: object) -> list[str]:
    """Errors of a PUT item: like ``check_item`` but required non-key fields may be absent."""
    errors = check_item(resource, item).errors
    if isinstance(item, dict):
        errors = [
            e
            for e in errors
            if not (
                e.message == "is required"
                and e.path not in item
                and e.path not in resource.key
                and resource.field(e.path) is not None
            )
        ]
    return [error_text(e) for e in errors]
