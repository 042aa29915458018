"""How a pass reads a page: the page query after a position, its rows, and their child rows.

:class:`PagesMixin` is part of :class:`~connector.sync.MappingSync`. A page read touches only the
shop database (the reader's connections are per thread), so the scan also runs it on its
read-ahead thread; a column the mapping names but the rows lack is reported as the mapping's
problem (``_translated``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from connector.errors import SchemaMismatchError
from connector.mapping.compile import MissingColumn
from connector.mapping.spec import Mapping
from connector.source import query as q
from connector.source.reader import ShopReader
from connector.source.statements import Statements, key_of, named
from connector.transform import group_children, parent_link

_T = TypeVar("_T")
_Page = tuple[list[dict[str, Any]], dict[str, Any]]  # rows, and child rows grouped by parent


class PagesMixin:
    """The page reads of :class:`~connector.sync.MappingSync`, which sets these attributes."""

    mapping: Mapping
    reader: ShopReader
    statements: Statements
    page_size: int

    def _page(self, start: q.Position | None, upper: Any) -> tuple[Any, dict[str, Any]]:
        """The page query after ``start`` up to ``upper``, and its parameters."""

        def build(start: Any, upper: Any, **k: Any) -> Any:
            at = None if start is None else q.Position(start, key_of(k))
            return q.page_query(self.mapping.source, at, upper, self.page_size)

        if start is None:
            return self.statements.get("page", build, start=None, upper=upper)
        return self.statements.get(
            "page", build, start=start.value, upper=upper, **named("k", start.key)
        )

    def _page_rows(self, start: q.Position | None, upper: Any) -> list[dict[str, Any]]:
        """The page after ``start``; touches only the shop database (the reader's connections
        are per thread), so it also runs on the read-ahead thread."""
        stmt, params = self._page(start, upper)
        return self.reader.fetch(stmt, f"{self.mapping.file}: reading a page", params)

    def _read_page(self, start: q.Position | None, upper: Any) -> _Page:
        """The page after ``start`` with its child rows, on the read-ahead thread."""
        rows = self._page_rows(start, upper)
        return rows, self._children(rows)

    def _children(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        children = {}
        for cname, child in self.mapping.children.items():
            links = list(dict.fromkeys(parent_link(r, child) for r in rows))
            what = f"{self.mapping.file}: {child.path}: reading child rows"
            kids: list[dict[str, Any]] = []
            if links and len(child.child_columns) == 1:  # one statement for every page
                array = self.reader.dialect == "postgresql"
                stmt = self.statements.once(
                    f"children:{cname}", partial(q.children_query, child, None, array=array)
                )
                kids = self.reader.fetch(stmt, what, {q.LINKS: [k[0] for k in links]})
            elif links:
                kids = self.reader.fetch(q.children_query(child, links), what)
            children[cname] = group_children(child, kids)
        return children

    def _translated(self, read: Callable[[], _T]) -> _T:
        """Run ``read`` (or a page building step); a column the mapping names but the rows lack
        is the mapping's problem, said as such."""
        try:
            return read()
        except MissingColumn as exc:
            raise SchemaMismatchError(
                f"{self.mapping.file}: {exc.path}: column {exc.column!r} is not in the rows read "
                f"from {self.mapping.source.label}; nothing of this page was sent and the cursor "
                "stays. Fix the mapping (`shopimind-connector check` lists such problems)."
            ) from None
