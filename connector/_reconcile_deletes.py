"""Deleting, step 4 of a reconciliation (see :mod:`connector.reconcile`). Without I/O: the key
columns a vanished row's delete route is computed from (:func:`delete_columns`), what to do with a
page of pending keys (:func:`plan_deletes`), and their ids grouped into bulk-delete calls
(:func:`merge_routes`, :func:`take_chunks`); ``DeletesMixin._delete`` runs them against the shop
and the API.

:class:`DeletesMixin` is part of the reconciliation in :mod:`connector.reconcile`.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connector._custom_deletes import CustomDeletes, delete_problem
from connector._reconcile_compare import lookup_query
from connector.errors import ConnectorError, FatalError
from connector.mapping.compile import CompiledMapping, get_column
from connector.mapping.spec import Mapping, SourceSpec, ValueSpec
from connector.source.reader import ShopReader
from connector.state.model import key_from_json, key_json
from connector.state.store import StateStore
from connector.state.tables import STATUS_DELETED, STATUS_PENDING_DELETE, STATUS_SENT
from connector.transform import is_deleted, row_key

if TYPE_CHECKING:
    from connector.reconcile import ReconcileResult
    from connector.runtime import Runtime

log = logging.getLogger("connector.reconcile")


def _placeholders(path: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(path) if name]


def delete_columns(mapping: Mapping) -> tuple[tuple[str, ...], str | None]:
    """The source key columns a vanished row's delete route is computed from, in key order, or
    ``((), why)`` when hard deletes cannot be routed for this mapping."""
    res = mapping.resource
    if mapping.kind == "custom_data":  # deleted by record id (connector._custom_deletes)
        problem = delete_problem(mapping)
        return (() if problem else tuple(mapping.source.key)), problem
    if not res.delete_path or not res.delete_id_field:
        return (), f"{res.name} has no bulk delete in the API: hard deletes are not reconciled"
    keys = {k.lower(): k for k in mapping.source.key}
    used: set[str] = set()
    for fname in [res.delete_id_field, *_placeholders(res.delete_path)]:
        spec = mapping.fields.get(fname)
        if not isinstance(spec, ValueSpec):
            return (), f"{mapping.file}: fields.{fname} is not mapped; the bulk delete needs it"
        for col in spec.referenced_columns:
            if col.lower() not in keys:
                return (), (
                    f"{mapping.file}: fields.{fname} reads column {col!r}, which is not part of "
                    f"source.key {list(mapping.source.key)}; a row that no longer exists cannot "
                    f"tell it, so its delete route is unknown: add {col!r} to source.key"
                )
            used.add(keys[col.lower()])
    return tuple(k for k in mapping.source.key if k in used), None


Route = tuple[str, Any]  # (bulk-delete path with its placeholders filled, id to delete)


@dataclass
class Plan:
    """What to do with a page of pending keys."""

    back: list[str] = field(default_factory=list)  # the row exists again: back to 'sent'
    kept: list[str] = field(default_factory=list)  # record lives on through another row
    routes: dict[str, dict[Any, list[str]]] = field(default_factory=dict)  # path → id → keys
    unroutable: list[tuple[str, str]] = field(default_factory=list)  # (key, why)


def plan_deletes(
    candidates: Sequence[tuple[str, str, Route | str]], alive: Collection[tuple[str, str]]
) -> Plan:
    """``candidates``: (key, text of its delete-route columns, route or why it has none);
    ``alive``: (key, route-columns text) of the shop's live rows sharing those columns."""
    alive_keys = {k for k, _ in alive}
    alive_refs = {r for _, r in alive}
    plan = Plan()
    for key, ref, route in candidates:
        if key in alive_keys:
            plan.back.append(key)
        elif ref in alive_refs:
            plan.kept.append(key)
        elif isinstance(route, str):
            plan.unroutable.append((key, route))
        else:
            path, ident = route
            plan.routes.setdefault(path, {}).setdefault(ident, []).append(key)
    return plan


Routes = dict[str, dict[Any, list[str]]]


def merge_routes(into: Routes, routes: Routes) -> int:
    """Add ``routes`` to ``into`` (an id seen again gains keys: another language); returns how
    many ids ``into`` holds."""
    for path, by_id in routes.items():
        for ident, keys in by_id.items():
            into.setdefault(path, {}).setdefault(ident, []).extend(keys)
    return sum(len(by_id) for by_id in into.values())


def take_chunks(
    routes: Routes, limit: int, *, everything: bool
) -> list[tuple[str, list[Any], list[str]]]:
    """Remove from ``routes`` and return its full calls — (path, ``limit`` ids, the record keys
    they delete) — and, when ``everything``, the partial ones too."""
    out = []
    for path in list(routes):
        by_id = routes[path]
        while len(by_id) >= limit or (everything and by_id):
            chunk = list(by_id)[:limit]
            out.append((path, chunk, [k for ident in chunk for k in by_id.pop(ident)]))
        if not by_id:
            del routes[path]
    return out


class DeletesMixin:
    """Deleting the pending keys a page at a time; the reconciliation sets these attributes
    (``spec`` when it starts)."""

    rt: Runtime
    mapping: Mapping
    compiled: CompiledMapping | None
    spec: SourceSpec
    name: str
    page: int
    store: StateStore
    reader: ShopReader

    def _delete(self, res: ReconcileResult, cols: tuple[str, ...]) -> None:
        client = self.rt.client
        assert client is not None
        if self.mapping.kind == "custom_data":
            compiled = self.compiled or CompiledMapping(self.mapping, self.rt.config.shop_tz)
            deletes = CustomDeletes(
                client,
                self.store,
                self.reader,
                self.mapping,
                compiled,
                self.page,
                self.rt.stop.is_set,
            )
            try:
                deletes.run(res)
            except FatalError:
                raise
            except ConnectorError as exc:
                res.outcome = "failed"
                res.message = (
                    f"{res.deleted} record(s) deleted, then: {exc}; the rest stays pending"
                )
            return
        resource = self.mapping.resource
        assert resource.delete_body_key is not None
        unroutable: list[tuple[str, str]] = []
        buffer: Routes = {}  # ids wait for a full call, up to about a page of them
        after: str | None = None

        def send(calls: list[tuple[str, list[Any], list[str]]]) -> None:
            assert client is not None and resource.delete_body_key is not None
            for path, ids, keys in calls:
                what = f"{self.name}: POST {path}"
                client.delete_ids(path, resource.delete_body_key, ids, what=what)
                res.requests += 1
                res.ids_deleted += len(ids)
                res.deleted += self.store.move_records(
                    self.name, keys, STATUS_PENDING_DELETE, STATUS_DELETED
                )

        try:
            while not self.rt.stop.is_set():
                page = [
                    k
                    for k, _ in self.store.known_keys(
                        self.name, after, self.page, status=STATUS_PENDING_DELETE
                    )
                ]
                if not page:
                    send(take_chunks(buffer, resource.delete_limit, everything=True))
                    break
                after = page[-1]
                plan = self._plan(page, cols)
                unroutable += plan.unroutable
                if plan.back:
                    res.back += self.store.move_records(
                        self.name, plan.back, STATUS_PENDING_DELETE, STATUS_SENT
                    )
                if plan.kept:
                    res.kept += self.store.move_records(
                        self.name, plan.kept, STATUS_PENDING_DELETE, STATUS_DELETED
                    )
                full = merge_routes(buffer, plan.routes) > self.page
                send(take_chunks(buffer, resource.delete_limit, everything=full))
        except FatalError:
            raise
        except ConnectorError as exc:
            res.outcome = "failed"
            res.message = f"{res.deleted} record(s) deleted, then: {exc}; the rest stays pending"
        if self.rt.stop.is_set() and res.outcome == "ok":
            res.outcome, res.message = "interrupted", "stopped; the rest stays pending"
        if res.kept:
            log.warning(
                "%s: %d record(s) gone from the shop while their ShopiMind item still exists "
                "through another row (e.g. another language); ShopiMind deletes all languages of "
                "an id at once, so they were left on ShopiMind",
                self.mapping.file,
                res.kept,
            )
        if unroutable and res.outcome == "ok":
            res.outcome = "failed"
            shown = "; ".join(f"{k}: {why}" for k, why in unroutable[:3])
            res.message = (
                f"{len(unroutable)} record(s) cannot be deleted (they stay pending): {shown}"
            )

    def _plan(self, page: list[str], cols: tuple[str, ...]) -> Plan:
        values = {k: dict(zip(self.spec.key, key_from_json(k), strict=True)) for k in page}
        refs = {k: tuple(v[c] for c in cols) for k, v in values.items()}
        rows = self.reader.fetch(
            lookup_query(self.spec, cols, list(refs.values())),
            f"{self.mapping.file}: reconciliation: checking {len(page)} candidate(s) again",
        )
        alive = [
            (key_json(row_key(r, self.mapping)), key_json(tuple(get_column(r, c) for c in cols)))
            for r in rows
            if not is_deleted(r, self.spec.deleted)
        ]
        candidates: list[tuple[str, str, Route | str]] = []
        compiled = self.compiled or CompiledMapping(self.mapping, self.rt.config.shop_tz)
        for k in page:
            route: Route | str
            try:
                route = compiled.delete_ref(values[k])
            except ValueError as exc:
                route = str(exc)
            candidates.append((k, key_json(refs[k]), route))
        return plan_deletes(candidates, alive)
