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

The comparing (steps 2 and 3) is in :mod:`connector._reconcile_compare`, the deleting (step 4) in
:mod:`connector._reconcile_deletes`; ``_Reconciliation`` here runs the steps in order. Their
functions are importable from here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from connector import timeutil
from connector._reconcile_compare import (
    SAMPLE,
    CompareMixin,
    compare_pages,
    lookup_query,
    missing_keys,
    refusal,
)
from connector._reconcile_deletes import (
    DeletesMixin,
    Plan,
    Route,
    Routes,
    delete_columns,
    merge_routes,
    plan_deletes,
    take_chunks,
)
from connector.errors import ConnectorError, FatalError
from connector.mapping.compile import CompiledMapping
from connector.mapping.spec import Mapping
from connector.state.tables import STATUS_PENDING_DELETE, STATUS_SENT

if TYPE_CHECKING:
    from connector.runtime import Runtime

__all__ = [
    "DEFAULT_MAX_DELETE_SHARE",
    "META",
    "SAMPLE",
    "Plan",
    "ReconcileResult",
    "Route",
    "Routes",
    "compare_pages",
    "delete_columns",
    "format_results",
    "last_reconcile",
    "log_result",
    "lookup_query",
    "merge_routes",
    "missing_keys",
    "parse_meta",
    "plan_deletes",
    "reconcile_all",
    "reconcile_mapping",
    "refusal",
    "take_chunks",
]

log = logging.getLogger("connector.reconcile")

DEFAULT_MAX_DELETE_SHARE = 0.5
META = "reconcile:{}"


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


class _Reconciliation(CompareMixin, DeletesMixin):
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
