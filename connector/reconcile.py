"""Hard deletes: rows that vanished from the shop are deleted on ShopiMind (reconciliation).

A row deleted outright leaves nothing for a sync pass to read. The state database knows every key
the connector sent ('sent' records); what the shop no longer holds — or holds soft-deleted, should
the soft delete not have touched the cursor — is deleted through the resource's bulk-delete route.

Comparing: the state pages keys by key text (``[10]`` before ``[9]``), the shop orders them its
own way (numbers numerically, text by collation), and neither can produce the other's order
without holding everything. So the state drives: each page of known keys is looked up in the shop
with one ``key IN (...)`` query, and a key is present when a returned row has the same key text,
the identity sync gives it. Memory: one page; the order of either side does not matter
(:func:`compare_pages` is that loop, without I/O). :func:`reconcile_mapping`:

1. records left 'pending_delete' by an unfinished run go back to 'sent';
2. compare page by page; candidates become 'pending_delete' (nothing deleted yet);
3. guard: a failed read (even halfway), none of the known keys found, or more than
   ``max_delete_share`` (default half) gone: nothing is deleted, the candidates go back to
   'sent' and the result says why;
4. delete a page of pending keys at a time, each looked up again by its delete-route columns: a
   row that is back stays 'sent'; a key whose ShopiMind item lives on through another row (another
   language: ShopiMind deletes all languages of an id at once, there is no per-language delete)
   is only marked deleted here; the rest is bulk-deleted, grouped by route, at most
   ``delete_limit`` ids a call, each call's keys marked 'deleted' once accepted. What could not be
   deleted stays 'pending_delete' (shown by ``status``) and is compared again next time.

A vanished row's delete route must come from its key alone: the columns of the delete id and of
the route's placeholders must be in ``source.key`` (addresses: ``["customer_id", "id"]``).
"""

from __future__ import annotations

import json
import logging
import string
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from connector import timeutil
from connector.errors import ConnectorError, FatalError
from connector.mapping.compile import CompiledMapping, get_column
from connector.mapping.spec import Mapping, SourceSpec, ValueSpec
from connector.source import query as q
from connector.state.model import key_from_json, key_json
from connector.state.tables import STATUS_DELETED, STATUS_PENDING_DELETE, STATUS_SENT
from connector.transform import is_deleted, row_key

if TYPE_CHECKING:
    from connector.runtime import Runtime

log = logging.getLogger("connector.reconcile")

DEFAULT_MAX_DELETE_SHARE = 0.5
META = "reconcile:{}"
SAMPLE = 10


@dataclass
class ReconcileResult:
    """What one reconciliation of one mapping found and did (counts are record keys)."""

    mapping: str
    outcome: str = "ok"  # ok | dry-run | refused | failed | interrupted | skipped | unsupported
    known: int = 0  # keys known as sent that were compared
    found: int = 0  # of them, still in the shop (and not soft-deleted)
    missing: int = 0  # of them, gone from the shop: the candidates
    deleted: int = 0  # deleted on ShopiMind and marked deleted
    ids_deleted: int = 0  # ids sent in bulk-delete calls (one per product for all languages)
    back: int = 0  # candidates whose row was back at the second look: kept as sent
    kept: int = 0  # gone, but their ShopiMind record lives on through another row
    pending: int = 0  # still pending deletion afterwards
    stale: int = 0  # keys of another shape (sent before source.key changed): left alone
    requests: int = 0
    sample: list[str] = field(default_factory=list)  # a few candidate keys
    message: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome in ("ok", "dry-run", "skipped")


# --- pure parts -----------------------------------------------------------------------------------


def _placeholders(path: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(path) if name]


def delete_columns(mapping: Mapping) -> tuple[tuple[str, ...], str | None]:
    """The source key columns a vanished row's delete route is computed from, in key order, or
    ``((), why)`` when hard deletes cannot be routed for this mapping."""
    res = mapping.resource
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


def lookup_query(
    spec: SourceSpec, columns: Sequence[str], values: Sequence[tuple[Any, ...]]
) -> q.AnySelect:
    """Key columns (and the deleted-flag column) of the shop's rows whose ``columns`` equal one of
    ``values``; a NULL in a value matches NULL (parts of a query source's key may be NULL)."""
    rel = q.source_relation(spec)
    wanted = [*spec.key, *([spec.deleted.column] if spec.deleted else [])]
    out = [rel.c[c] for c in dict.fromkeys(wanted)]
    cols = [rel.c[c] for c in columns]
    distinct = list(dict.fromkeys(values))
    plain = [v for v in distinct if None not in v]
    conds: list[sa.ColumnElement[bool]] = []
    if plain:
        if len(cols) == 1:
            conds.append(cols[0].in_([v[0] for v in plain]))
        else:
            conds.append(sa.tuple_(*cols).in_(plain))
    for v in distinct:
        if None in v:
            conds.append(
                sa.and_(
                    *(c.is_(None) if x is None else c == x for c, x in zip(cols, v, strict=True))
                )
            )
    where = sa.or_(*conds) if conds else sa.false()
    return sa.select(*out).select_from(rel).where(where)


def missing_keys(known: Sequence[str], present: Collection[str]) -> list[str]:
    """The known keys the shop does not hold, in the order given."""
    return [k for k in known if k not in present]


def compare_pages(
    next_page: Callable[[str | None], list[str]],
    present: Callable[[list[str]], Collection[str]],
    on_missing: Callable[[list[str]], None],
    result: ReconcileResult,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Walk the known keys a page at a time (``next_page(after)``, any order), ask the shop which
    of each page it holds (``present(page)``) and hand the others to ``on_missing``; counts go to
    ``result``. Memory: one page."""
    after: str | None = None
    while not should_stop():
        page = next_page(after)
        if not page:
            return
        after = page[-1]
        gone = missing_keys(page, present(page))
        result.known += len(page)
        result.found += len(page) - len(gone)
        result.missing += len(gone)
        result.sample.extend(gone[: max(0, SAMPLE - len(result.sample))])
        if gone:
            on_missing(gone)


def refusal(known: int, found: int, missing: int, max_share: float) -> str | None:
    """Why deleting ``missing`` of ``known`` records must not happen, or None when it may."""
    if known == 0 or missing == 0 or max_share >= 1:
        return None
    if found == 0:
        return (
            f"the shop returned none of the {known} keys the connector has sent (an empty table, "
            "another database, or a query that returns nothing?)"
        )
    if missing > max_share * known:
        return (
            f"{missing} of {known} known records ({missing / known:.0%}) are gone from the shop, "
            f"more than the {max_share:.0%} a reconciliation may delete"
        )
    return None


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


# --- I/O ------------------------------------------------------------------------------------------


class _Reconciliation:
    def __init__(self, runtime: Runtime, name: str, dry_run: bool, max_share: float) -> None:
        self.rt = runtime
        found = [m for m in runtime.mappings if m.name == name]
        if not found:
            raise KeyError(f"no mapping named {name!r} is loaded")
        self.mapping: Mapping = found[0]
        self.compiled: CompiledMapping | None = runtime.compiled.get(name)
        self.name = name
        self.dry_run = dry_run
        self.max_share = max_share
        self.page = max(1, runtime.config.sync.page_size)
        self.store = runtime.store
        self.reader = runtime.reader
        self.stale = 0

    def run(self, res: ReconcileResult) -> None:
        cols, problem = delete_columns(self.mapping)
        if not self.mapping.enabled:
            res.outcome, res.message = "skipped", "mapping disabled"
            return
        if problem is not None:
            res.outcome = "unsupported" if self.mapping.resource.can_delete else "skipped"
            res.message = problem
            return
        self.spec = self.mapping.source
        if not self.dry_run and self.rt.client is None:
            raise ValueError("reconcile_mapping needs a runtime opened with the API client")
        try:
            if not self.dry_run:
                self.store.move_records(self.name, None, STATUS_PENDING_DELETE, STATUS_SENT)
            compare_pages(
                lambda after: [k for k, _ in self.store.known_keys(self.name, after, self.page)],
                self._present,
                self._mark,
                res,
                self.rt.stop.is_set,
            )
        except FatalError:
            raise
        except ConnectorError as exc:
            res.outcome = "failed"
            res.message = (
                f"comparing failed after {res.known} known key(s): {exc}; nothing was deleted"
                + self._restore()
            )
            return
        if self.rt.stop.is_set():
            res.outcome = "interrupted"
            res.message = "stopped; nothing was deleted" + self._restore()
            return
        res.stale, res.found = self.stale, res.found - self.stale
        why = refusal(res.known - res.stale, res.found, res.missing, self.max_share)
        if why is not None:
            res.outcome = "refused"
            res.message = (
                f"{why}; nothing was deleted. If these rows really are gone, run "
                f"`shopimind-connector reconcile --mapping {self.name} --max-delete-share 1`"
                + self._restore()
            )
            return
        if self.dry_run:
            res.outcome = "dry-run"
            res.message = f"would delete up to {res.missing} record(s)" if res.missing else None
        elif res.missing:
            self._delete(res, cols)
        if res.stale:
            note = (
                f"{res.stale} record(s) were sent under an earlier source.key and are left alone "
                "(their items were sent again under the current key)"
            )
            res.message = f"{res.message}; {note}" if res.message else note

    def _restore(self) -> str:
        if self.dry_run:
            return ""
        try:
            self.store.move_records(self.name, None, STATUS_PENDING_DELETE, STATUS_SENT)
        except ConnectorError as exc:
            return f" (the candidates stay pending deletion until the next run: {exc})"
        return ""

    def _present(self, page: list[str]) -> set[str]:
        """The keys of ``page`` the shop holds (not soft-deleted). A key of another shape was
        sent under an earlier ``source.key``: its item was re-sent under the new key, so it
        counts as present (never deleted)."""
        keys = {k: key_from_json(k) for k in page}
        stale = {k for k, key in keys.items() if len(key) != len(self.spec.key)}
        self.stale += len(stale)
        wanted = [key for k, key in keys.items() if k not in stale]
        rows = self.reader.fetch(
            lookup_query(self.spec, self.spec.key, wanted),
            f"{self.mapping.file}: reconciliation: looking up {len(wanted)} known key(s)",
        )
        return stale | {
            key_json(row_key(r, self.mapping)) for r in rows if not is_deleted(r, self.spec.deleted)
        }

    def _mark(self, gone: list[str]) -> None:
        if not self.dry_run:
            self.store.move_records(self.name, gone, STATUS_SENT, STATUS_PENDING_DELETE)

    def _delete(self, res: ReconcileResult, cols: tuple[str, ...]) -> None:
        client = self.rt.client
        assert client is not None
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


def reconcile_mapping(
    runtime: Runtime,
    name: str,
    *,
    dry_run: bool = False,
    max_delete_share: float = DEFAULT_MAX_DELETE_SHARE,
) -> ReconcileResult:
    """Reconcile one mapping (see the module doc). Raises only FatalError (e.g. the API key was
    refused); every other failure is in the result, and then nothing more was deleted."""
    started = time.monotonic()
    res = ReconcileResult(name)
    _Reconciliation(runtime, name, dry_run, max_delete_share).run(res)
    if not dry_run and res.outcome not in ("skipped", "unsupported"):
        try:
            res.pending = next((s.known_pending for s in runtime.store.status([name])), 0)
            at = timeutil.iso_utc(timeutil.utc_now())
            summary = {"at": at, "outcome": res.outcome, "deleted": res.deleted}
            summary |= {"pending": res.pending, "message": res.message}
            runtime.store.set_meta(META.format(name), json.dumps(summary))
        except ConnectorError as exc:
            log.warning("%s: cannot record the reconciliation: %s", name, exc)
    res.seconds = time.monotonic() - started
    return res


def reconcile_all(
    runtime: Runtime,
    names: Sequence[str] | None = None,
    *,
    dry_run: bool = False,
    max_delete_share: float = DEFAULT_MAX_DELETE_SHARE,
) -> list[ReconcileResult]:
    """Reconcile the runtime's mappings (or ``names``), dependents first (orders before
    customers), each logged."""
    out = []
    for m in sorted(runtime.mappings, key=lambda m: (-m.resource.rank, m.name)):
        if (names and m.name not in names) or runtime.stop.is_set():
            continue
        res = reconcile_mapping(runtime, m.name, dry_run=dry_run, max_delete_share=max_delete_share)
        log_result(res)
        out.append(res)
    return out


def format_results(results: Sequence[ReconcileResult]) -> str:
    lines = [
        f"{'mapping':<24} {'outcome':<12} {'known':>7} {'missing':>7} {'deleted':>7} "
        f"{'kept':>5} {'pending':>7}"
    ]
    for r in results:
        lines.append(
            f"{r.mapping:<24} {r.outcome:<12} {r.known:>7} {r.missing:>7} {r.deleted:>7} "
            f"{r.kept:>5} {r.pending:>7}"
        )
        if r.message:
            lines.append(f"    {r.message}")
        if r.outcome == "dry-run" and r.sample:
            lines.append("    e.g. " + ", ".join(r.sample))
    return "\n".join(lines)


def last_reconcile(runtime: Runtime, name: str) -> tuple[datetime, dict[str, Any]] | None:
    """When the last (non-dry-run) reconciliation of ``name`` ended, and its summary."""
    return parse_meta(runtime.store.get_meta(META.format(name)))


def parse_meta(raw: str | None) -> tuple[datetime, dict[str, Any]] | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return timeutil.parse_timestamp(str(data["at"])), data
    except (ValueError, KeyError, TypeError):
        return None


def log_result(res: ReconcileResult) -> None:
    line = (
        f"{res.mapping}: reconcile {res.outcome} known={res.known} missing={res.missing} "
        f"deleted={res.deleted} kept={res.kept} back={res.back} pending={res.pending} "
        f"requests={res.requests} took={res.seconds:.2f}s"
    )
    if res.message:
        line += f"; {res.message}"
    if res.outcome in ("ok", "dry-run", "skipped"):
        log.info(line)
    elif res.outcome in ("refused", "interrupted", "unsupported"):
        log.warning(line)
    else:
        log.error(line)
