"""Deleting custom-data records whose rows left the shop, by ShopiMind's own record ids.

ShopiMind deletes custom-data records only by its auto-increment record id
(``POST /v1/custom-data-records/{id_definition}/bulk-delete`` with a raw array of up to 20 ids),
which no upsert answer tells. So when the reconciliation (:mod:`connector.reconcile`) finds rows
gone from the shop, their records' ids are learnt from the definition's records list
(``GET /v1/custom-data-records/{id_definition}``, 100 a page): a listed record is matched to a
row by the values of the definition's ``unique_keys`` (a contact resolver ``{"by", "value"}``
compares by its value), computed from the vanished row's key with the mapping's own conversions.
The ids learnt are kept in the state database (``connector_remote_ids``) so a delete that fails
halfway does not list again. A vanished row whose record is not in the complete list has no
record on ShopiMind: it is marked deleted. When the list holds records but none of them matches
a row the connector sent (ShopiMind shows the unique keys another way), nothing is deleted and
the records stay pending deletion, with the reason, in ``status`` and the log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from connector.destination.client import ApiClient
from connector.errors import DeliveryError
from connector.mapping.compile import CompiledMapping, FieldProblem, compile_value
from connector.mapping.spec import Mapping, ObjectSpec, ValueSpec
from connector.registry import Field
from connector.source import query as q
from connector.source.reader import ShopReader
from connector.state.model import key_from_json, key_json
from connector.state.store import StateStore
from connector.state.tables import STATUS_DELETED, STATUS_PENDING_DELETE, STATUS_SENT
from connector.transform import row_key

if TYPE_CHECKING:
    from connector.reconcile import ReconcileResult

log = logging.getLogger("connector.reconcile")

DEFINITION_META = "custom_data_definition:{}"  # as connector.customdata keeps it
LIST_LIMIT = 100
MAX_PAGES = 100_000
DELETE_LIMIT = 20


def _unique_specs(mapping: Mapping) -> list[tuple[str, ValueSpec, Field]] | str:
    """(unique key field, its value spec, its API field) or why a vanished row cannot tell it."""
    out = []
    keys = {k.lower() for k in mapping.source.key}
    for name in mapping.resource.key:
        spec = mapping.fields.get(name)
        fdef = mapping.resource.field(name)
        if isinstance(spec, ObjectSpec):  # a contact resolver {"by": const, "value": spec}
            spec = spec.fields.get("value")
            fdef = fdef.child("value") if fdef is not None else None
        if not isinstance(spec, ValueSpec) or fdef is None:
            return f"{mapping.file}: unique key {name!r} is not mapped from a column"
        for col in spec.referenced_columns:
            if col.lower() not in keys:
                return (
                    f"{mapping.file}: unique key {name!r} reads column {col!r}, which is not part "
                    f"of source.key {list(mapping.source.key)}: a row that no longer exists "
                    "cannot tell which record was its own; add it to source.key"
                )
        out.append((name, spec, fdef))
    if not out:
        return f"{mapping.file}: the definition has no unique_keys: records cannot be matched"
    return out


def delete_problem(mapping: Mapping) -> str | None:
    """Why the records of vanished rows of a custom-data mapping cannot be deleted, or None."""
    specs = _unique_specs(mapping)
    return specs if isinstance(specs, str) else None


def _text(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "" if value is None else str(value)


@dataclass
class CustomDeletes:
    """Deletes the records of a custom-data mapping's pending keys (one reconciliation)."""

    client: ApiClient
    store: StateStore
    reader: ShopReader
    mapping: Mapping
    compiled: CompiledMapping
    page: int
    stopping: Callable[[], bool]
    listed: dict[str, str] | None = None  # unique text → record id, once read
    unmatched: str | None = None  # why the list cannot be matched to rows, once read
    stale: list[tuple[str, str]] = field(default_factory=list)  # (key, why) left pending

    def __post_init__(self) -> None:
        specs = _unique_specs(self.mapping)
        assert not isinstance(specs, str)
        tz = self.compiled.shop_tz
        self._fns = [(name, compile_value(spec, fdef, tz)) for name, spec, fdef in specs]
        raw = self.store.get_meta(DEFINITION_META.format(self.mapping.name))
        ident = json.loads(raw).get("id") if raw else None
        self.ident = None if ident is None else str(ident)

    def unique_text(self, key: str) -> str | None:
        row = dict(zip(self.mapping.source.key, key_from_json(key), strict=True))
        try:
            return json.dumps([_text(fn(row)) for _, fn in self._fns])
        except (FieldProblem, ValueError, TypeError):
            return None

    def run(self, res: ReconcileResult) -> None:
        name = self.mapping.name
        if self.ident is None:
            res.outcome = "failed"
            res.message = "the custom data definition id is not known yet (run a sync first)"
            return
        after: str | None = None
        while not self.stopping():
            page = [
                k
                for k, _ in self.store.known_keys(
                    name, after, self.page, status=STATUS_PENDING_DELETE
                )
            ]
            if not page:
                break
            after = page[-1]
            spec = self.mapping.source
            rows = self.reader.fetch(
                q.rows_by_key_query(spec, spec.key, [key_from_json(k) for k in page]),
                f"{self.mapping.file}: reconciliation: checking {len(page)} candidate(s) again",
            )
            alive = {key_json(row_key(r, self.mapping)) for r in rows}
            back = [k for k in page if k in alive]
            if back:
                res.back += self.store.move_records(name, back, STATUS_PENDING_DELETE, STATUS_SENT)
            self._delete([k for k in page if k not in alive], res)
        if self.stale:
            res.outcome = "failed"
            shown = "; ".join(f"{k}: {why}" for k, why in self.stale[:3])
            res.message = (
                f"{len(self.stale)} stale record(s) stay on ShopiMind (pending deletion): {shown}"
            )
            log.warning("%s: %s", self.mapping.file, res.message)

    def _delete(self, gone: list[str], res: ReconcileResult) -> None:
        name = self.mapping.name
        known = self.store.remote_ids(name, gone)
        ids: dict[str, str] = dict(known)
        missing = [k for k in gone if k not in ids]
        if missing:
            listed = self._list(res)
            if listed is None:  # known ids can still be deleted below
                assert self.unmatched is not None
                self.stale += [(k, self.unmatched) for k in missing]
                missing, listed = [], {}
            learned: dict[str, str] = {}
            absent: list[str] = []
            for k in missing:
                text = self.unique_text(k)
                if text is None:
                    self.stale.append((k, "its unique key cannot be computed from the row key"))
                elif text in listed:
                    learned[k] = listed[text]
                else:
                    absent.append(k)
            self.store.keep_remote_ids(name, learned)
            ids.update(learned)
            if absent:  # not in the complete list: ShopiMind holds no record for them
                res.deleted += self.store.move_records(
                    name, absent, STATUS_PENDING_DELETE, STATUS_DELETED
                )
        path = f"/v1/custom-data-records/{quote(self.ident or '', safe='')}/bulk-delete"
        keys = [k for k in gone if k in ids]
        for i in range(0, len(keys), DELETE_LIMIT):
            chunk = keys[i : i + DELETE_LIMIT]
            body = [_id_value(ids[k]) for k in chunk]
            resp = self.client.request("POST", path, body, what=f"{name}: POST {path}")
            res.requests += 1
            if resp.status_code >= 400:
                raise DeliveryError(
                    f"{name}: POST {path}: HTTP {resp.status_code}: {resp.text[:300]}"
                )
            res.ids_deleted += len(chunk)
            res.deleted += self.store.move_records(
                name, chunk, STATUS_PENDING_DELETE, STATUS_DELETED
            )

    def _list(self, res: ReconcileResult) -> dict[str, str] | None:
        """Unique text → record id of every record of the definition (read once), or None when
        the list cannot be matched to the rows (then every candidate stays pending)."""
        if self.listed is not None or self.unmatched is not None:
            return self.listed
        path = f"/v1/custom-data-records/{quote(self.ident or '', safe='')}"
        listed: dict[str, str] = {}
        offset = 0
        uniques = [u for u, _ in self._fns]
        for _ in range(MAX_PAGES):
            what = f"{self.mapping.name}: GET {path} (offset {offset})"
            resp = self.client.request(
                "GET", path, params={"limit": LIST_LIMIT, "offset": offset}, what=what
            )
            res.requests += 1
            if resp.status_code >= 400:
                raise DeliveryError(f"{what}: HTTP {resp.status_code}: {resp.text[:300]}")
            try:
                body = resp.json()
            except ValueError:
                raise DeliveryError(f"{what}: the answer is not JSON") from None
            rows = body.get("data") if isinstance(body, dict) else None
            if not isinstance(rows, list) or not rows:
                break
            for rec in rows:
                rid = rec.get("id") if isinstance(rec, dict) else None
                if isinstance(rid, (int, str)) and not isinstance(rid, bool):
                    listed[json.dumps([_text(rec.get(u)) for u in uniques])] = str(rid)
            pages = (body.get("meta") or {}).get("pagination") or {}
            if pages.get("has_next_page") is False or len(rows) < LIST_LIMIT:
                break
            offset += len(rows)
        if listed and not self._matches(listed):
            self.unmatched = (
                "ShopiMind's records list shows the unique keys "
                f"{uniques} in another form than the connector sends them (a relation resolved "
                "to ShopiMind's contact id?), so a record cannot be told from another; nothing "
                "was deleted"
            )
            return None
        self.listed = listed
        return listed

    def _matches(self, listed: dict[str, str]) -> bool:
        """Whether records the connector sent (a page of them) are found in the list."""
        sent = [k for k, _ in self.store.known_keys(self.mapping.name, None, self.page)]
        texts = [self.unique_text(k) for k in sent]
        return not sent or any(t in listed for t in texts if t is not None)


def _id_value(ident: str) -> Any:
    return int(ident) if ident.isdigit() else ident
