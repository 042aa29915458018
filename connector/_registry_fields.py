"""The registry's building blocks: the field types, :class:`Field` and :class:`Resource`, and the
check of one JSON item against a resource (:func:`check_item`, used by the connector and the
sandbox).

The field types are described in :mod:`connector.registry`, which re-exports every name here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, get_args

FieldType = Literal[
    "string",
    "integer",
    "number",
    "money",
    "money_string",
    "boolean",
    "timestamp",
    "date",
    "id_string",
    "id_number",
    "id_strings",
    "id_numbers",
    "lang",
    "currency",
    "enum",
    "object",
    "objects",
    "json",
]

LIST_TYPES: frozenset[str] = frozenset({"id_strings", "id_numbers"})
# every type but the lists and the objects (one list of type names: FieldType)
SCALAR_TYPES: frozenset[str] = frozenset(get_args(FieldType)) - LIST_TYPES - {"object", "objects"}

_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType
    required: bool = False
    fields: tuple[Field, ...] = ()
    choices: tuple[str, ...] = ()

    @property
    def nullable(self) -> bool:
        return not self.required

    def child(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


@dataclass(frozen=True)
class Resource:
    """One writable API resource.

    ``path`` may hold ``{field}`` placeholders filled from each item (and then the items are
    grouped by those fields); the same holds for ``delete_path``.
    """

    name: str
    path: str
    batch_limit: int
    key: tuple[str, ...]
    fields: tuple[Field, ...]
    rank: int
    method: Literal["POST", "PUT"] = "POST"
    delete_path: str | None = None
    delete_body_key: str | None = None
    delete_id_field: str | None = None
    delete_limit: int = 20
    kind: Literal["entity", "custom_data", "event"] = "entity"
    accepts_data_source: bool = True

    def field(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def required_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.required)

    @property
    def can_delete(self) -> bool:
        return self.delete_path is not None

    @property
    def localized(self) -> bool:
        return "lang" in self.key


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str


@dataclass
class ItemCheck:
    """Result of checking one item against a resource (used by the connector and the sandbox)."""

    errors: list[FieldError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def check_item(resource: Resource, item: object) -> ItemCheck:
    """Validate one JSON item: required fields present and non-null, values of the right type.

    Unknown fields are errors: the API's write controllers validate strictly.
    """
    result = ItemCheck()
    if not isinstance(item, dict):
        result.errors.append(FieldError("", "item must be a JSON object"))
        return result
    _check_object(resource.fields, item, "", result)
    return result


def _check_object(
    fields: tuple[Field, ...], item: dict[str, object], prefix: str, out: ItemCheck
) -> None:
    known = {f.name: f for f in fields}
    for name in item:
        if name not in known and name not in ("source_label", "label_source"):
            out.errors.append(FieldError(prefix + name, "unknown field"))
    for f in fields:
        path = prefix + f.name
        if f.name not in item or item[f.name] is None:
            if f.required:
                out.errors.append(FieldError(path, "is required"))
            continue
        _check_value(f, item[f.name], path, out)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_value(f: Field, v: object, path: str, out: ItemCheck) -> None:
    def bad(expected: str) -> None:
        out.errors.append(FieldError(path, f"must be {expected}, got {v!r}"))

    t = f.type
    if t in ("string", "money_string"):
        if not isinstance(v, str):
            bad("a string")
    elif t == "integer":
        if not (isinstance(v, int) and not isinstance(v, bool)):
            bad("an integer")
    elif t in ("number", "money"):
        if not _is_number(v):
            bad("a number")
        elif t == "money" and round(float(v), 2) != float(v):  # type: ignore[arg-type]
            bad("a number with at most 2 decimals")
    elif t == "boolean":
        if not isinstance(v, bool):
            bad("a boolean")
    elif t == "timestamp":
        if not (isinstance(v, str) and _TS.fullmatch(v)):
            bad("an ISO 8601 UTC timestamp like 2026-05-07T08:00:00.000Z")
    elif t == "date":
        if not (isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v)):
            bad("a date YYYY-MM-DD")
    elif t in ("id_string", "id_number"):
        if not (isinstance(v, str) and v != "") and not (
            isinstance(v, int) and not isinstance(v, bool)
        ):
            bad("an id (string or integer)")
    elif t in ("id_strings", "id_numbers"):
        if not isinstance(v, list) or not all(
            (isinstance(x, str) and x) or (isinstance(x, int) and not isinstance(x, bool))
            for x in v
        ):
            bad("an array of ids")
    elif t == "lang":
        if not (isinstance(v, str) and re.fullmatch(r"[a-z]{2}", v)):
            bad("an ISO 639-1 language code")
    elif t == "currency":
        if not (isinstance(v, str) and re.fullmatch(r"[A-Z]{3}", v)):
            bad("an ISO 4217 currency code")
    elif t == "enum":
        if v not in f.choices:
            bad("one of " + ", ".join(f.choices))
    elif t == "object":
        if not isinstance(v, dict):
            bad("an object")
        else:
            _check_object(f.fields, v, path + ".", out)
    elif t == "objects":
        if not isinstance(v, list):
            bad("an array of objects")
        else:
            for i, el in enumerate(v):
                if not isinstance(el, dict):
                    out.errors.append(FieldError(f"{path}[{i}]", "must be an object"))
                else:
                    _check_object(f.fields, el, f"{path}[{i}].", out)
