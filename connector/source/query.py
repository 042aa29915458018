"""Pure query building for change capture: no connection, no I/O.

A pass reads pages ordered by ``(cursor, key...)``. The first page starts at a position (inclusive
of the lookback window), every following page starts strictly after the last row read, compared as
a tuple — never ``>=`` on the cursor alone — so rows sharing one timestamp across a page boundary
are neither lost nor read twice. The pass stops at an upper bound taken once from the database's
own clock minus a safety lag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

import sqlalchemy as sa

from connector.mapping.spec import ChildSpec, SourceSpec

CURSOR_LABEL = "__connector_cursor"
AnySelect = sa.Select[*tuple[Any, ...]]


@dataclass(frozen=True)
class Position:
    """Where a page starts: rows with (cursor, key) strictly after (value, key).

    ``key=None`` means "every row whose cursor is >= value" (the start of a lookback window).
    """

    value: Any
    key: tuple[Any, ...] | None


def relation(table: str | None, query: str | None, columns: Sequence[str]) -> sa.FromClause:
    """A selectable for a table name or a user SELECT, exposing ``columns`` as ``.c``."""
    cols: list[sa.ColumnClause[Any]] = [sa.column(c) for c in dict.fromkeys(columns)]
    if table is not None:
        schema, _, name = table.rpartition(".")
        return sa.table(name, *cols, schema=schema or None)
    assert query is not None
    return sa.text(query).columns(*cols).subquery("src")


def source_relation(spec: SourceSpec, extra: Sequence[str] = ()) -> sa.FromClause:
    cols = [*spec.key, spec.cursor]
    if spec.cursor_fallback:
        cols.append(spec.cursor_fallback)
    if spec.deleted:
        cols.append(spec.deleted.column)
    return relation(spec.table, spec.query, [*cols, *extra])


def cursor_expr(spec: SourceSpec, rel: sa.FromClause) -> sa.ColumnElement[Any]:
    c = rel.c[spec.cursor]
    if spec.cursor_fallback:
        return sa.func.coalesce(c, rel.c[spec.cursor_fallback])
    return c


def tuple_after(
    cols: Sequence[sa.ColumnElement[Any]], values: Sequence[Any]
) -> sa.ColumnElement[bool]:
    """``(c1, c2, ...) > (v1, v2, ...)`` lexicographically, written with AND/OR so every
    database (and its index on c1) handles it: ``c1 >= v1 AND (c1 > v1 OR (c1 = v1 AND ...))``."""
    assert cols and len(cols) == len(values)
    expr: sa.ColumnElement[bool] = cols[-1] > values[-1]
    for c, v in zip(reversed(cols[:-1]), reversed(values[:-1]), strict=True):
        expr = sa.or_(c > v, sa.and_(c == v, expr))
    return sa.and_(cols[0] >= values[0], expr)


def page_query(
    spec: SourceSpec,
    start: Position | None,
    upper: Any | None,
    limit: int,
) -> AnySelect:
    """``SELECT *`` of the next page after ``start`` up to ``upper`` (inclusive).

    With a ``cursor_fallback`` the effective cursor is ``COALESCE(cursor, fallback)``, which no
    index on either column can serve (every page would sort the whole table). The page is then
    the first ``limit`` rows of two index-ordered branches — rows with a cursor, ordered by it,
    and rows without one, ordered by the fallback — merged: the same rows in the same order.
    """
    rel = source_relation(spec)
    if not spec.cursor_fallback:
        return _page_branch(spec, rel, rel.c[spec.cursor], [], start, upper, limit)
    by_cursor = _page_branch(spec, rel, rel.c[spec.cursor], [], start, upper, limit)
    # COALESCE(cursor, NULL) IS NULL is cursor IS NULL, written so that no planner (SQLite's
    # guesses few NULLs) reads this branch through the cursor's index and sorts all its rows
    # instead of walking the fallback's index in order
    no_cursor = sa.func.coalesce(rel.c[spec.cursor], sa.null()).is_(None)
    by_fallback = _page_branch(
        spec, rel, rel.c[spec.cursor_fallback], [no_cursor], start, upper, limit
    )
    merged = sa.union_all(
        sa.select(sa.text("*")).select_from(by_cursor.subquery("by_cursor")),
        sa.select(sa.text("*")).select_from(by_fallback.subquery("by_fallback")),
    ).subquery("page")
    return (
        sa.select(sa.text("*"))
        .select_from(merged)
        .order_by(sa.column(CURSOR_LABEL), *(sa.column(k) for k in spec.key))
        .limit(limit)
    )


def _page_branch(
    spec: SourceSpec,
    rel: sa.FromClause,
    cur: sa.ColumnElement[Any],
    extra: list[sa.ColumnElement[bool]],
    start: Position | None,
    upper: Any | None,
    limit: int,
) -> AnySelect:
    keys = [rel.c[k] for k in spec.key]
    conds: list[sa.ColumnElement[bool]] = [cur.is_not(None), *extra]
    if start is not None:
        if start.key is None:
            conds.append(cur >= start.value)
        else:
            conds.append(tuple_after([cur, *keys], [start.value, *start.key]))
    if upper is not None:
        conds.append(cur <= upper)
    return (
        sa.select(sa.text("*"), cur.label(CURSOR_LABEL))
        .select_from(rel)
        .where(*conds)
        .order_by(cur, *keys)
        .limit(limit)
    )


def null_cursor_query(spec: SourceSpec, after_key: tuple[Any, ...] | None, limit: int) -> AnySelect:
    """Rows whose effective cursor is NULL (no fallback, or both NULL), paged by key.

    They cannot be ordered by time, so every pass walks them by key and the content hash decides
    what is sent: a NULL-cursor row is delivered on first sight and whenever it changes.
    (``cursor IS NULL AND fallback IS NULL`` rather than ``COALESCE(...) IS NULL``: an index on
    either column can find them.)
    """
    rel = source_relation(spec)
    keys = [rel.c[k] for k in spec.key]
    conds: list[sa.ColumnElement[bool]] = [rel.c[spec.cursor].is_(None)]
    if spec.cursor_fallback:
        conds.append(rel.c[spec.cursor_fallback].is_(None))
    if after_key is not None:
        conds.append(tuple_after(keys, after_key))
    return (
        sa.select(sa.text("*"), sa.null().label(CURSOR_LABEL))
        .select_from(rel)
        .where(*conds)
        .order_by(*keys)
        .limit(limit)
    )


def pending_count_query(spec: SourceSpec, start: Position | None, upper: Any | None) -> AnySelect:
    """How many rows lie after ``start`` (for ``status``'s "rows behind" and progress); a start
    without a key (a cursor set by ``reset --to``) counts the rows from its value on."""
    rel = source_relation(spec)
    cur = cursor_expr(spec, rel)
    keys = [rel.c[k] for k in spec.key]
    conds: list[sa.ColumnElement[bool]] = [cur.is_not(None)]
    if start is not None and start.key is not None:
        conds.append(tuple_after([cur, *keys], [start.value, *start.key]))
    elif start is not None:
        conds.append(cur >= start.value)
    if upper is not None:
        conds.append(cur <= upper)
    return sa.select(sa.func.count()).select_from(rel).where(*conds)


LINKS = "links"  # the expanding parameter of ``children_query(child, None)``


def children_query(
    child: ChildSpec, parent_keys: Sequence[tuple[Any, ...]] | None, *, array: bool = False
) -> AnySelect:
    """All child rows of a page of parents in one query. With ``parent_keys`` None (a
    one-column link only), the links are the parameter ``LINKS``: the statement is built once
    and run for every page. It is an expanding ``IN``, or with ``array`` (PostgreSQL) one
    array parameter, ``= ANY(:links)``: the SQL text is then the same for every page, so the
    driver parses it once and the server plans it once, instead of a statement with a
    placeholder per parent each time."""
    cols = [*child.child_columns, *child.order_by]
    rel = relation(child.table, child.query, cols)
    ccols = [rel.c[c] for c in child.child_columns]
    if parent_keys is None:
        assert len(ccols) == 1
        links: sa.BindParameter[Any] = sa.bindparam(LINKS, expanding=not array)
        cond: sa.ColumnElement[bool] = ccols[0] == sa.any_(links) if array else ccols[0].in_(links)
    elif len(ccols) == 1:
        cond = ccols[0].in_([k[0] for k in dict.fromkeys(parent_keys)])
    else:
        cond = sa.tuple_(*ccols).in_(list(dict.fromkeys(parent_keys)))
    order = [*ccols, *(rel.c[c] for c in child.order_by)]
    return sa.select(sa.text("*")).select_from(rel).where(cond).order_by(*order)


def changed_parents_query(
    child: ChildSpec,
    since: Any,
    upper: Any | None,
    after: tuple[Any, ...] | None,
    limit: int,
) -> AnySelect:
    """Parents of child rows changed after ``since`` (up to ``upper``), one row per parent with
    its newest child change, paged by ``(newest change, parent link)`` — a child-only change
    re-sends its parent."""
    assert child.cursor is not None
    rel = relation(child.table, child.query, [*child.child_columns, child.cursor])
    cur = rel.c[child.cursor]
    conds = [cur > since] if since is not None else []
    if upper is not None:
        conds.append(cur <= upper)
    ccols = [rel.c[c] for c in child.child_columns]
    grouped = (
        sa.select(*ccols, sa.func.max(cur).label(CURSOR_LABEL))
        .where(*conds)
        .group_by(*ccols)
        .subquery("changed")
    )
    gcols = [grouped.c[c] for c in child.child_columns]
    newest = grouped.c[CURSOR_LABEL]
    stmt = sa.select(grouped)
    if after is not None:
        stmt = stmt.where(tuple_after([newest, *gcols], list(after)))
    return stmt.order_by(newest, *gcols).limit(limit)


def child_max_cursor_query(child: ChildSpec) -> AnySelect:
    """The newest value of a child collection's cursor column."""
    assert child.cursor is not None
    rel = relation(child.table, child.query, [child.cursor])
    return sa.select(sa.func.max(rel.c[child.cursor])).select_from(rel)


def rows_by_key_query(
    spec: SourceSpec, parent_cols: Sequence[str], keys: Sequence[tuple[Any, ...]]
) -> AnySelect:
    rel = source_relation(spec, parent_cols)
    cols = [rel.c[c] for c in parent_cols]
    cur = cursor_expr(spec, rel)
    if len(cols) == 1:
        cond: sa.ColumnElement[bool] = cols[0].in_([k[0] for k in keys])
    else:
        cond = sa.tuple_(*cols).in_(list(keys))
    return (
        sa.select(sa.text("*"), cur.label(CURSOR_LABEL))
        .select_from(rel)
        .where(cond)
        .order_by(*(rel.c[k] for k in spec.key))
    )


def all_rows_query(spec: SourceSpec, after_key: tuple[Any, ...] | None, limit: int) -> AnySelect:
    """Every row (deleted ones too) in key order, a page at a time, with its cursor value: the
    re-read after a mapping change."""
    rel = source_relation(spec)
    keys = [rel.c[k] for k in spec.key]
    stmt = sa.select(sa.text("*"), cursor_expr(spec, rel).label(CURSOR_LABEL)).select_from(rel)
    if after_key is not None:
        stmt = stmt.where(tuple_after(keys, after_key))
    return stmt.order_by(*keys).limit(limit)


def keys_query(spec: SourceSpec, after_key: tuple[Any, ...] | None, limit: int) -> AnySelect:
    """The shop's keys in key order, a page at a time (hard-delete reconciliation)."""
    rel = source_relation(spec)
    keys = [rel.c[k] for k in spec.key]
    q = sa.select(*keys).select_from(rel)
    if after_key is not None:
        q = q.where(tuple_after(keys, after_key))
    return q.order_by(*keys).limit(limit)


# --- time arithmetic on cursor values (pure) -----------------------------------------------------

_SQLITE_FMT = "%Y-%m-%d %H:%M:%S.%f"


def _text_format(like: str) -> str:
    """The format of text timestamps written like ``like``: ISO 8601 with a 'T' or with a space
    between date and time. Compared as text, '2026-05-01T10:00' sorts after every
    '2026-05-01 ...', so a bound in the other form would hold back a whole day of rows."""
    return _SQLITE_FMT.replace(" ", "T") if like[10:11] == "T" else _SQLITE_FMT


def shift_back(value: Any, seconds: float, tz: tzinfo | None = None) -> Any:
    """``value`` minus a lookback window, for datetime cursors (also SQLite's text timestamps).

    For naive wall-clock values, if the window touches the repeated hour of a daylight-saving
    change in ``tz``, it is widened by that hour, so rows written in the second pass through the
    repeated hour (whose wall-clock times sort before the cursor) are re-read — also with no
    lookback at all, as those rows were written after the cursor was saved.
    Non-time cursors (integers) are returned unchanged.
    """
    seconds = max(seconds, 0.0)
    if seconds == 0 and tz is None:
        return value
    as_text = isinstance(value, str)
    if as_text:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return value
    elif isinstance(value, datetime):
        dt = value
    else:
        return value
    start = dt - timedelta(seconds=seconds)
    if dt.tzinfo is None and tz is not None and _touches_fold(start, dt, tz):
        start -= timedelta(hours=1)
    if start == dt:
        return value  # nothing to shift: keep the value exactly as the database gave it
    if as_text:
        return start.strftime(_text_format(value))
    return start


def _touches_fold(start: datetime, end: datetime, tz: tzinfo) -> bool:
    """Whether a wall-clock interval (naive) contains an ambiguous (repeated) local time."""
    probe = start.replace(minute=0, second=0, microsecond=0)
    while probe <= end + timedelta(hours=1):
        a = probe.replace(tzinfo=tz, fold=0).utcoffset()
        b = probe.replace(tzinfo=tz, fold=1).utcoffset()
        if a != b:
            return True
        probe += timedelta(minutes=30)
    return False


def upper_bound(db_now_utc: datetime, lag: float, like: Any, tz: tzinfo) -> Any:
    """The pass's upper bound in the same form as the cursor column's values.

    ``like`` is a sample cursor value: a naive datetime (shop wall clock in ``tz``), an aware
    datetime, SQLite text, or a non-time value (integers: no time bound, returns None).
    """
    bound = db_now_utc - timedelta(seconds=lag)
    if isinstance(like, datetime):
        if like.tzinfo is not None:
            return bound
        return bound.astimezone(tz).replace(tzinfo=None)
    if isinstance(like, str):
        return bound.astimezone(tz).replace(tzinfo=None).strftime(_text_format(like))
    if like is None:
        return bound.astimezone(tz).replace(tzinfo=None)
    return None
