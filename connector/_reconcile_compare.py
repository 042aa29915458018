"""Comparing, steps 2 and 3 of a reconciliation (see :mod:`connector.reconcile`): which of the
known keys the shop still holds, a page at a time (:func:`compare_pages`, the loop without I/O;
``CompareMixin._present``, the look-up in the shop), and the guard that refuses to delete too many
of them (:func:`refusal`). ``CompareMixin`` also marks the candidates 'pending_delete' and puts
them back to 'sent' when nothing is deleted; :func:`lookup_query` serves step 4 as well.

:class:`CompareMixin` is part of the reconciliation in :mod:`connector.reconcile`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from connector.errors import ConnectorError
from connector.mapping.spec import Mapping, SourceSpec
from connector.source import query as q
from connector.source.reader import ShopReader
from connector.state.model import key_from_json, key_json
from connector.state.store import StateStore
from connector.state.tables import STATUS_PENDING_DELETE, STATUS_SENT
from connector.transform import is_deleted, row_key

if TYPE_CHECKING:
    from connector.reconcile import ReconcileResult

SAMPLE = 10


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


class CompareMixin:
    """Looking the known keys up in the shop, and marking or restoring the candidates; the
    reconciliation sets these attributes (``spec`` when it starts)."""

    mapping: Mapping
    spec: SourceSpec
    name: str
    dry_run: bool
    store: StateStore
    reader: ShopReader
    stale: int

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
