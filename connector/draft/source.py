"""The rows a draft's source yields: the base table's columns, a translations join and columns
looked up through foreign keys (scalar subqueries), and the SQL query that makes them."""

from __future__ import annotations

from connector.draft.match import Avail
from connector.draft.schema import Table
from connector.draft.tables import fk_table, single_pk, usable


class Source:
    """The columns a draft's source rows carry and the SQL that makes them."""

    def __init__(self, base: Table, tables: dict[str, Table]) -> None:
        self.base, self.tables = base, tables
        self.avail: list[Avail] = [
            Avail(c.name, c, base.name, fk_table=fk_table(base, c.name))
            for c in base.columns.values()
            if usable(c.name)
        ]
        self.joins: list[str] = []
        self.extra: list[str] = []  # select-list entries beyond m.*
        self.where: list[str] = []
        self.notes: list[str] = []  # for the file's header

    @property
    def joined(self) -> bool:
        return bool(self.joins or self.extra or self.where)

    def names(self) -> set[str]:
        return {a.name for a in self.avail}

    def join(self, other: Table, alias: str, on: str) -> None:
        self.joins.append(f"JOIN {other.name} {alias} ON {on}")
        for c in other.columns.values():
            if not usable(c.name):
                continue
            name = c.name if c.name not in self.names() else f"{alias}_{c.name}"
            self.extra.append(f"{alias}.{c.name}" + (f" AS {name}" if name != c.name else ""))
            self.avail.append(
                Avail(
                    name, c, other.name, expr=f"{alias}.{c.name}", fk_table=fk_table(other, c.name)
                )
            )

    def lookups(self, fk_col: str, prefix: str) -> list[Avail]:
        """Columns of the table ``fk_col`` refers to, as ``prefix_<column>`` (not yet added)."""
        target = self.tables.get(fk_table(self.base, fk_col) or "")
        pk = single_pk(target) if target else None
        if target is None or pk is None:
            return []
        return [
            Avail(
                f"{prefix}_{c.name}",
                c,
                target.name,
                expr=f"(SELECT x.{c.name} FROM {target.name} x WHERE x.{pk} = m.{fk_col})",
                fk_table=fk_table(target, c.name),
                lookup=True,
            )
            for c in target.columns.values()
            if c.name != pk and usable(c.name)
        ]

    def use(self, a: Avail) -> None:
        if a.expr is not None and a.name not in self.names():
            self.avail.append(a)
            self.extra.append(f"{a.expr} AS {a.name}")

    def sql(self) -> str | None:
        if not self.joined:
            return None
        lines = ["SELECT m.*"]
        for e in self.extra:
            lines[-1] += ","
            lines.append(f"       {e}")
        lines.append(f"FROM {self.base.name} m")
        lines += self.joins
        if self.where:
            lines.append("WHERE " + " AND ".join(self.where))
        return "\n".join(lines)
