"""Comparing what ShopiMind holds with what the shop implies, by the API's types (no I/O).

Values are compared as the API means them, not as they were written: ids as strings (``42`` ==
``"42"``), money to 2 decimals (``10.5`` == ``10.50``), timestamps as instants (``...08:00:00Z`` ==
``...10:00:00+02:00``), unordered id lists as sets, arrays of objects (order lines) as multisets.
Only the fields the mapping sends are compared; what ShopiMind adds on its own (its ``id``,
``data_source_id``, ...) is ignored and reported once as such.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC
from decimal import Decimal, InvalidOperation
from typing import Any

from connector import timeutil
from connector.mapping.spec import Mapping as MappingSpec
from connector.registry import Field, Resource

Item = Mapping[str, Any]


def id_text(value: object) -> str:
    """An id as text (``42`` and ``"42"`` are the same id; ``"000123"`` stays that string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def api_key(resource: Resource, item: Item) -> str:
    """The record's key as the API matches it: key field values as strings joined with ``|``."""
    return "|".join(id_text(item.get(k)) for k in resource.key)


def compared_fields(mapping: MappingSpec, id_data_source: int | None = None) -> tuple[str, ...]:
    """The top-level API fields a mapping sends: the only ones compared."""
    names = [*mapping.fields, *mapping.children]
    if id_data_source is not None and mapping.resource.accepts_data_source:
        names.append("id_data_source")
    return tuple(dict.fromkeys(names))


def normalize(value: Any, field: Field | None) -> Any:
    """``value`` in a form where equal API values are equal Python values (JSON-encodable)."""
    if value is None or field is None:
        return value
    t = field.type
    try:
        if t in ("id_string", "id_number"):
            return id_text(value)
        if t in ("id_strings", "id_numbers"):
            return sorted({id_text(v) for v in value}) if isinstance(value, list) else value
        if t == "money" and not isinstance(value, bool):
            return str(Decimal(str(value)).quantize(Decimal("0.01")))
        if t in ("number", "integer") and not isinstance(value, bool):
            return str(Decimal(str(value)).normalize())
        if t == "timestamp" and isinstance(value, str):
            return timeutil.iso_utc(timeutil.to_utc(timeutil.parse_timestamp(value), UTC))
        if t == "object" and isinstance(value, dict):
            return {f.name: normalize(value.get(f.name), f) for f in field.fields}
        if t == "objects" and isinstance(value, list):
            parts = [normalize(v, _as_object(field)) for v in value]
            return sorted(parts, key=lambda p: json.dumps(p, sort_keys=True, default=str))
    except (InvalidOperation, ValueError, TypeError):
        return value  # not of its type: compared as it is (and then differs)
    return value


def _as_object(field: Field) -> Field:
    return Field(field.name, "object", field.required, fields=field.fields)


def _field(resource: Resource, name: str) -> Field | None:
    return resource.field(name)


def digest(resource: Resource, item: Item, names: Iterable[str]) -> str:
    """A short fingerprint of the compared fields of ``item``: equal items, equal digests."""
    data = {n: normalize(item.get(n), _field(resource, n)) for n in names}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()[:20]


def differences(
    resource: Resource, expected: Item, actual: Item, names: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """The compared fields whose values differ: ``{field: {"expected": ..., "actual": ...}}``
    with the values as sent and as read back."""
    out: dict[str, dict[str, Any]] = {}
    for n in names:
        f = _field(resource, n)
        want, got = expected.get(n), actual.get(n)
        if normalize(want, f) != normalize(got, f):
            out[n] = {"expected": want, "actual": got}
    return out


def ignored_fields(records: Iterable[Item], names: Collection[str]) -> set[str]:
    """Fields ShopiMind shows that the mapping does not send (not compared)."""
    return {k for r in records for k in r if k not in names}
