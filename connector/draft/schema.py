"""Read the shop's schema for ``draft``: tables, columns, keys, foreign keys, indexes (SQLAlchemy
inspection) and a small sample of each table's rows. Only ``SELECT`` statements are run, each in
a transaction that is rolled back."""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from connector.errors import SourceError
from connector.source.reader import short_cause

SAMPLE_ROWS = 500
# text flags the boolean conversion reads (connector.mapping.convert.to_bool)
_FLAG_TEXT = frozenset({"Y", "N", "O", "T", "F", "YES", "NO", "OUI", "NON", "TRUE", "FALSE"})

# column kinds: what the draft needs to know of a SQL type
Kind = str  # "int" | "decimal" | "str" | "ts" | "date" | "bool" | "other"


@dataclass
class Column:
    name: str
    kind: Kind
    nullable: bool
    length: int | None = None
    samples: list[Any] = field(default_factory=list)

    @property
    def values(self) -> list[Any]:
        """The sampled values that are not NULL."""
        return [v for v in self.samples if v is not None]

    @property
    def has_nulls(self) -> bool:
        return any(v is None for v in self.samples)

    def flag_like(self) -> bool:
        """0/1, 'Y'/'N', true/false values (a boolean stored its own way)."""
        if self.kind == "bool":
            return True
        vals = {str(v).strip().upper() for v in self.values}
        if self.kind == "int":
            return bool(vals) and vals <= {"0", "1"}
        if self.kind == "str" and (self.length or 99) <= 5:
            return bool(vals) and vals <= _FLAG_TEXT
        return False


@dataclass
class ForeignKey:
    columns: tuple[str, ...]
    table: str
    ref_columns: tuple[str, ...]


@dataclass
class Table:
    name: str
    columns: dict[str, Column]
    pk: tuple[str, ...]
    fks: list[ForeignKey]
    indexed: set[str]  # columns that lead an index (or the primary key)
    unique: list[tuple[str, ...]]
    row_count_sampled: int = 0
    memo: dict[str, Any] = field(default_factory=dict)  # what the draft derived once

    def fk_of(self, column: str) -> ForeignKey | None:
        for fk in self.fks:
            if fk.columns == (column,):
                return fk
        return None


def _kind(type_: Any) -> tuple[Kind, int | None]:
    length = getattr(type_, "length", None)
    try:
        py = type_.python_type
    except (NotImplementedError, AttributeError):
        return "other", length
    if py is bool:
        return "bool", None
    if py is int:
        return "int", None
    if py in (float, decimal.Decimal):
        return "decimal", None
    if py is dt.datetime:
        return "ts", None
    if py is dt.date:
        return "date", None
    if py is str:
        return "str", length
    return "other", length


def read_schema(engine: sa.Engine, sample_rows: int = SAMPLE_ROWS) -> dict[str, Table]:
    """Every table of the shop database, with up to ``sample_rows`` rows sampled per table."""
    try:
        insp = sa.inspect(engine)
        tables: dict[str, Table] = {}
        for name in insp.get_table_names():
            cols = {}
            for c in insp.get_columns(name):
                kind, length = _kind(c["type"])
                cols[c["name"]] = Column(c["name"], kind, bool(c.get("nullable", True)), length)
            pk = tuple(insp.get_pk_constraint(name).get("constrained_columns") or ())
            fks = [
                ForeignKey(
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                )
                for fk in insp.get_foreign_keys(name)
                if fk.get("referred_table")
            ]
            indexed = {pk[0]} if pk else set()
            unique = [pk] if pk else []
            for ix in insp.get_indexes(name):
                names = [c for c in ix.get("column_names") or [] if c]
                if names:
                    indexed.add(names[0])
                    if ix.get("unique"):
                        unique.append(tuple(names))
            for uc in insp.get_unique_constraints(name):
                names = [c for c in uc.get("column_names") or [] if c]
                if names:
                    indexed.add(names[0])
                    unique.append(tuple(names))
            tables[name] = Table(name, cols, pk, fks, indexed, unique)
        with engine.connect() as conn:
            for t in tables.values():
                _sample(conn, t, sample_rows)
            conn.rollback()
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"shop database: cannot read the schema: {short_cause(exc)}") from exc
    return tables


def _sample(conn: sa.Connection, t: Table, n: int) -> None:
    tbl = sa.table(t.name, *[sa.column(c) for c in t.columns])
    query = sa.select(tbl).limit(n)
    if t.pk:
        query = query.order_by(*[tbl.c[c] for c in t.pk])
    rows = conn.execute(query).all()
    t.row_count_sampled = len(rows)
    for i, name in enumerate(t.columns):
        col = t.columns[name]
        col.samples = [r[i] for r in rows]
        if col.kind == "other" and col.values:  # SQLite without declared types and the like
            first = col.values[0]
            for kind, types in (
                ("int", (int,)),
                ("decimal", (float, decimal.Decimal)),
                ("ts", (dt.datetime,)),
                ("date", (dt.date,)),
                ("str", (str,)),
            ):
                if isinstance(first, types) and not isinstance(first, bool):
                    col.kind = kind
                    break
