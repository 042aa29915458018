"""A draft mapping as data: :class:`Plan` (source, key, cursor, soft delete, fields) and its
:class:`Child` tables (``[children.NAME]`` and ``[changes.NAME]``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from connector.draft.match import Choice, Matched, Todo
from connector.registry import Resource


@dataclass
class Child:
    """A ``[children.NAME]`` or ``[changes.NAME]`` table."""

    name: str
    note: str
    parent_key: dict[str, str]
    table: str | None = None
    query: str | None = None
    order_by: list[str] = field(default_factory=list)
    cursor: str | None = None
    value: str | None = None
    fields: Matched | None = None
    source_table: str | None = None  # the child rows' table (also when read by a query)


@dataclass
class Plan:
    resource: Resource
    table: str
    header: list[str]
    key: list[str]
    key_note: str
    cursor: str
    cursor_note: str
    fallback: str | None = None
    query: str | None = None
    deleted: tuple[str, str] | None = None
    deleted_note: str = ""
    warnings: list[str] = field(default_factory=list)
    fields: Matched = field(default_factory=Matched)
    objects: dict[str, Matched] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    changes: list[Child] = field(default_factory=list)

    @property
    def todos(self) -> list[Todo]:
        out = list(self.fields.todos)
        for name, m in self.objects.items():
            out += [Todo(f"{name}.{t.field}", t.required, t.note) for t in m.todos]
        for c in self.children:
            if c.fields is not None:
                out += [Todo(f"{c.name}.{t.field}", t.required, t.note) for t in c.fields.todos]
        return out

    @property
    def choices(self) -> list[Choice]:
        out = list(self.fields.choices)
        for name, m in self.objects.items():
            out += [_renamed(c, f"{name}.{c.field}") for c in m.choices]
        for c in self.children:
            if c.fields is not None:
                out += [_renamed(x, f"{c.name}.{x.field}") for x in c.fields.choices]
        return out


def _renamed(c: Choice, name: str) -> Choice:
    return Choice(name, c.spec, c.note, c.confidence, c.columns)
