"""The ShopiMind API's writable resources, as data.

One table describes every resource: its upsert route, batch limit, key fields, field names, types
and required flags, and its bulk-delete route. Mapping validation, value conversion, batching, the
sync order and the local sandbox all read this table, so a change in the API is a change in the
registry only.

Field types (``FieldType``):

``string``       JSON string (numbers are stringified)
``integer``      JSON integer
``number``       JSON number
``money``        JSON number rounded to 2 decimals
``money_string`` amount or percentage sent as a string (order ``voucher_value``)
``boolean``      JSON boolean, read from 0/1, 'Y'/'N', true/false, ...
``timestamp``    ISO 8601 UTC with milliseconds and ``Z``
``date``         ``YYYY-MM-DD``
``id_string``    an id the API types as a string
``id_number``    an id the API types as a number (a non-numeric id is sent as a string)
``id_strings``   array of ``id_string``
``id_numbers``   array of ``id_number``
``lang``         ISO 639-1 code, lower-cased
``currency``     ISO 4217 code, upper-cased
``enum``         one of ``Field.choices``
``object``       nested object with ``Field.fields``
``objects``      array of nested objects with ``Field.fields``
``json``         any JSON value, sent as it is

The types, :class:`Field`, :class:`Resource` and the item check (:func:`check_item`) are in
:mod:`connector._registry_fields`, the table (:data:`RESOURCES`) in
:mod:`connector._registry_resources`; every name is importable from here.
"""

from __future__ import annotations

from connector._registry_fields import (
    LIST_TYPES,
    SCALAR_TYPES,
    Field,
    FieldError,
    FieldType,
    ItemCheck,
    Resource,
    check_item,
)
from connector._registry_reads import LIST_LIMIT, READ_ROUTES, ReadRoutes
from connector._registry_resources import RESOURCES

__all__ = [
    "LIST_LIMIT",
    "LIST_TYPES",
    "READ_ROUTES",
    "RESOURCES",
    "SCALAR_TYPES",
    "Field",
    "FieldError",
    "FieldType",
    "ItemCheck",
    "ReadRoutes",
    "Resource",
    "check_item",
    "field_at",
    "get",
    "names",
]


def get(name: str) -> Resource | None:
    return RESOURCES.get(name)


def names() -> list[str]:
    return sorted(RESOURCES, key=lambda n: (RESOURCES[n].rank, n))


def field_at(resource: Resource, path: tuple[str, ...]) -> Field | None:
    """The field at a dotted path (``("customer", "email")``), or None."""
    fields = resource.fields
    found: Field | None = None
    for part in path:
        found = next((f for f in fields if f.name == part), None)
        if found is None:
            return None
        fields = found.fields
    return found
