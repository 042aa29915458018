"""A mapping file, parsed and validated: plain frozen data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from connector.registry import Resource

NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class ValueSpec:
    """How one API value is made from a row."""

    path: str  # key path in the file, for messages: "fields.customer.email"
    kind: Literal["column", "const", "concat", "coalesce", "template"]
    column: str | None = None
    const: Any = None
    columns: tuple[str, ...] = ()
    sep: str = ""
    template: str | None = None
    default: Any = NO_DEFAULT
    value_map: dict[str, Any] | None = None
    map_default: Any = NO_DEFAULT
    converts: tuple[str, ...] = ()
    timezone: str | None = None

    @property
    def referenced_columns(self) -> tuple[str, ...]:
        if self.kind == "column" and self.column:
            return (self.column,)
        if self.kind in ("concat", "coalesce"):
            return self.columns
        if self.kind == "template" and self.template:
            import string

            return tuple(
                name.split(".")[0].split("[")[0]
                for _, name, _, _ in string.Formatter().parse(self.template)
                if name
            )
        return ()


@dataclass(frozen=True)
class ObjectSpec:
    path: str
    fields: dict[str, ValueSpec]


@dataclass(frozen=True)
class ChildSpec:
    """A child collection: rows of another table attached to each parent row."""

    name: str  # the API field it fills
    path: str
    table: str | None
    query: str | None
    parent_key: tuple[tuple[str, str], ...]  # (child column, parent column)
    order_by: tuple[str, ...] = ()
    cursor: str | None = None
    fields: dict[str, ValueSpec] = field(default_factory=dict)  # for arrays of objects
    value: ValueSpec | None = None  # for arrays of ids

    @property
    def child_columns(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.parent_key)

    @property
    def parent_columns(self) -> tuple[str, ...]:
        return tuple(p for _, p in self.parent_key)


@dataclass(frozen=True)
class DeletedSpec:
    column: str
    when: Literal["not_null", "true", "equals"]
    value: Any = None


@dataclass(frozen=True)
class SourceSpec:
    table: str | None
    query: str | None
    key: tuple[str, ...]
    cursor: str
    cursor_fallback: str | None = None
    lookback: float = 300.0
    page_size: int | None = None
    deleted: DeletedSpec | None = None

    @property
    def label(self) -> str:
        return f"table {self.table}" if self.table else "query"


@dataclass(frozen=True)
class Mapping:
    name: str  # file stem: "orders"
    file: str
    resource: Resource
    source: SourceSpec
    fields: dict[str, ValueSpec | ObjectSpec]
    children: dict[str, ChildSpec]
    enabled: bool = True

    def column_uses(self) -> list[tuple[str, str]]:
        """(key path in the file, column) for every source column the mapping reads."""
        src = self.source
        uses = [("source.key", k) for k in src.key] + [("source.cursor", src.cursor)]
        if src.cursor_fallback:
            uses.append(("source.cursor_fallback", src.cursor_fallback))
        if src.deleted:
            uses.append(("source.deleted", src.deleted.column))
        for spec in self.fields.values():
            inner = spec.fields.values() if isinstance(spec, ObjectSpec) else [spec]
            uses.extend((v.path, c) for v in inner for c in v.referenced_columns)
        for ch in self.children.values():
            uses.extend((f"{ch.path}.parent_key", c) for c in ch.parent_columns)
        return uses
