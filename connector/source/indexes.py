"""``check``'s index warnings: every cursor a pass filters on should lead an index.

A pass reads ``WHERE cursor >= …`` on the mapping's source (rows without a cursor value in the
order of its ``cursor_fallback``) and on each child collection or ``[changes]`` table that has a
cursor of its own; without an index starting with that column, every pass scans the whole table.
For a table the schema answers; a query's columns carry no index information, so ``check`` says
plainly that it cannot tell.
"""

from __future__ import annotations

import sqlalchemy as sa

from connector.errors import Problem
from connector.mapping.spec import Mapping


def cursor_index_problems(insp: sa.Inspector, mapping: Mapping) -> list[Problem]:
    """One warning per cursor of ``mapping`` that no index starts with (or may not)."""
    src = mapping.source
    cursors = [("source.cursor", src.table, src.cursor)]
    if src.cursor_fallback:  # rows without a cursor are read in the fallback's order
        cursors.append(("source.cursor_fallback", src.table, src.cursor_fallback))
    cursors += [
        (f"{child.path}.cursor", child.table, child.cursor)
        for child in [*mapping.children.values(), *mapping.changes.values()]
        if child.cursor
    ]
    problems: list[Problem] = []
    for path, table, column in cursors:
        message = _table_message(insp, table, column) if table else _query_message(column)
        if message:
            problems.append(Problem(mapping.file, path, message, warning=True))
    return problems


def _table_message(insp: sa.Inspector, table: str, column: str) -> str | None:
    schema, _, name = table.rpartition(".")
    try:
        indexes = insp.get_indexes(name, schema=schema or None)
        pk = insp.get_pk_constraint(name, schema=schema or None)
    except sa.exc.SQLAlchemyError:
        return None  # a missing table is reported by the column check
    leading = [ix["column_names"][0] for ix in indexes if ix.get("column_names")]
    if pk and pk.get("constrained_columns"):
        leading.append(pk["constrained_columns"][0])
    if column.lower() in {c.lower() for c in leading if c}:
        return None
    return (
        f"no index starts with {column!r} on {table}: every pass will scan the whole table; "
        f"create one (CREATE INDEX ix_{name}_{column} ON {table} ({column}))"
    )


def _query_message(column: str) -> str:
    return (
        f"cannot tell whether {column!r} is indexed (it comes from a query): an index must start "
        "with the table column it is, or every pass scans the whole table"
    )
