"""A mapping file, parsed and validated: plain frozen data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from connector.registry import Resource


class _NoDefault:
    """The "no default" marker: one object, also after a trip through pickle (mappings are
    sent to the mapping worker processes), where it is compared by identity."""

    def __reduce__(self) -> str:
        return "NO_DEFAULT"

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


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

    @cached_property  # read for every row of a page
    def child_columns(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.parent_key)

    @cached_property
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


# --- custom data definitions and external events (``kind = "custom_data"`` / ``"event"``) ------

CUSTOM_TYPES = (
    "bool",
    "text",
    "longtext",
    "number",
    "decimal",
    "list",
    "date",
    "datetime",
    "json",
    "geolocation",
)
EVENT_TYPES = ("bool", "text", "longtext", "number", "decimal", "date", "json")
CONTACT_RESOLVERS = ("id_contact", "email", "id_customer")
RELATION_TARGETS = ("contacts", "products")
Delivery = Literal["at-least-once", "at-most-once"]


@dataclass(frozen=True)
class CustomField:
    """One field of a custom data definition, as declared in the mapping file."""

    name: str
    type: str  # one of CUSTOM_TYPES
    required: bool = False
    label: str | None = None
    description: str | None = None
    options: tuple[str | int | float, ...] = ()

    def api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "label": self.label or self.name,
            "type": self.type,
            "required": self.required,
        }
        if self.description:
            out["description"] = self.description
        if self.options:
            out["options"] = list(self.options)
        return out


@dataclass(frozen=True)
class Relationship:
    """A definition field that points at a system schema; ``by`` is the contact resolver."""

    field: str
    to: str  # one of RELATION_TARGETS
    by: str | None = None  # contacts: one of CONTACT_RESOLVERS; records carry {"by", "value"}

    def api(self) -> dict[str, Any]:
        return {"sourceField": self.field, "targetSchemaType": "system", "targetSchema": self.to}


@dataclass(frozen=True)
class DefinitionSpec:
    name: str
    description: str | None
    fields: tuple[CustomField, ...]
    unique_keys: tuple[str, ...]
    relationships: tuple[Relationship, ...] = ()

    def field(self, name: str) -> CustomField | None:
        return next((f for f in self.fields if f.name == name), None)

    def api(self) -> dict[str, Any]:
        """The body of ``POST /v1/custom-data-definitions``."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["unique_keys"] = list(self.unique_keys)
        out["fields"] = [f.api() for f in self.fields]
        out["relationships"] = [r.api() for r in self.relationships]
        return out


@dataclass(frozen=True)
class EventProperty:
    name: str
    type: str  # one of EVENT_TYPES
    required: bool = False
    description: str | None = None

    def api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class EventSpec:
    code_name: str
    name: str | dict[str, str]  # a plain name or an i18n map {"en": ..., "fr": ...}
    properties: dict[str, tuple[EventProperty, ...]]  # "metaData" / "customData" → schema
    delivery: Delivery = "at-least-once"

    def api(self) -> dict[str, Any]:
        """The body of ``POST /v1/events``."""
        props = {slot: [p.api() for p in ps] for slot, ps in self.properties.items() if ps}
        return {"name": self.name, "code_name": self.code_name, "properties": props}


@dataclass(frozen=True)
class Mapping:
    name: str  # file stem: "orders"
    file: str
    resource: Resource
    source: SourceSpec
    fields: dict[str, ValueSpec | ObjectSpec]
    children: dict[str, ChildSpec]
    enabled: bool = True
    kind: Literal["resource", "custom_data", "event"] = "resource"
    definition: DefinitionSpec | None = None  # kind "custom_data"
    event: EventSpec | None = None  # kind "event"
    # [changes.NAME]: other tables whose changes re-send their parent rows (no field of their own)
    changes: dict[str, ChildSpec] = field(default_factory=dict)

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
        for ch in [*self.children.values(), *self.changes.values()]:
            uses.extend((f"{ch.path}.parent_key", c) for c in ch.parent_columns)
        return uses
