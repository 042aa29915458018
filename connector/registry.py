"""The ShopiMind API's writable resources, as data.

One table describes every resource: its upsert route, batch limit, key fields, field names, types
and required flags, and its bulk-delete route. Mapping validation, value conversion, batching, the
sync order and the local sandbox all read this table, so a change in the API is a change here only.

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
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

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

SCALAR_TYPES: frozenset[str] = frozenset(
    {
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
        "lang",
        "currency",
        "enum",
        "json",
    }
)
LIST_TYPES: frozenset[str] = frozenset({"id_strings", "id_numbers"})

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


def _f(name: str, type_: FieldType, required: bool = False, **kw: object) -> Field:
    return Field(name, type_, required, **kw)  # type: ignore[arg-type]


_COMMON: tuple[Field, ...] = (
    _f("shop_id", "string"),
    _f("id_data_source", "id_number"),
)

_ORDER_LINE: tuple[Field, ...] = (
    _f("product_id", "id_number", True),
    _f("product_variation_id", "id_number"),
    _f("price", "money", True),
    _f("price_without_tax", "money", True),
    _f("manufacturer_id", "id_string"),
    _f("quantity", "integer", True),
)

_CUSTOMER_REF: tuple[Field, ...] = (
    _f("customer_id", "id_string", True),
    _f("email", "string", True),
    _f("created_at", "timestamp", True),
)


def _r(
    name: str,
    path: str,
    limit: int,
    key: tuple[str, ...],
    fields: tuple[Field, ...],
    rank: int,
    delete: tuple[str, str, str] | None,
    common: bool = True,
) -> Resource:
    return Resource(
        name=name,
        path=path,
        batch_limit=limit,
        key=key,
        fields=fields + (_COMMON if common else (_f("shop_id", "string"),)),
        rank=rank,
        delete_path=delete[0] if delete else None,
        delete_body_key=delete[1] if delete else None,
        delete_id_field=delete[2] if delete else None,
        accepts_data_source=common,
    )


RESOURCES: Mapping[str, Resource] = {
    r.name: r
    for r in (
        _r(
            "customers_groups",
            "/v1/customers-groups",
            100,
            ("group_id", "lang"),
            (
                _f("group_id", "id_string", True),
                _f("lang", "lang", True),
                _f("name", "string", True),
                _f("created_at", "timestamp", True),
                _f("updated_at", "timestamp", True),
            ),
            10,
            ("/v1/customers-groups/bulk-delete", "group_ids", "group_id"),
        ),
        _r(
            "orders_statuses",
            "/v1/orders-statuses",
            100,
            ("status_id", "lang"),
            (
                _f("status_id", "id_string", True),
                _f("lang", "lang", True),
                _f("name", "string", True),
                _f("is_deleted", "boolean", True),
                _f("created_at", "timestamp", True),
                _f("updated_at", "timestamp", True),
            ),
            10,
            ("/v1/orders-statuses/bulk-delete", "status_ids", "status_id"),
        ),
        _r(
            "orders_carriers",
            "/v1/orders-carriers",
            100,
            ("carrier_id",),
            (
                _f("carrier_id", "id_string", True),
                _f("name", "string", True),
                _f("is_active", "boolean", True),
                _f("created_at", "timestamp", True),
                _f("updated_at", "timestamp", True),
            ),
            10,
            ("/v1/orders-carriers/bulk-delete", "carrier_ids", "carrier_id"),
        ),
        _r(
            "products_categories",
            "/v1/products-categories",
            100,
            ("category_id", "lang"),
            (
                _f("category_id", "id_number", True),
                _f("lang", "lang", True),
                _f("name", "string", True),
                _f("description", "string", True),
                _f("parent_category_id", "id_number"),
                _f("link", "string", True),
                _f("is_active", "boolean", True),
                _f("created_at", "timestamp", True),
                _f("updated_at", "timestamp", True),
            ),
            10,
            ("/v1/products-categories/bulk-delete", "category_ids", "category_id"),
        ),
        _r(
            "products_manufacturers",
            "/v1/products-manufacturers",
            100,
            ("manufacturer_id",),
            (
                _f("manufacturer_id", "id_string", True),
                _f("name", "string", True),
                _f("is_active", "boolean", True),
                _f("created_at", "timestamp", True),
                _f("updated_at", "timestamp", True),
            ),
            10,
            ("/v1/products-manufacturers/bulk-delete", "manufacturer_ids", "manufacturer_id"),
        ),
        _r(
            "customers",
            "/v1/customers",
            50,
            ("customer_id",),
            (
                _f("customer_id", "id_string", True),
                _f("email", "string", True),
                _f("phone_number", "string"),
                _f("first_name", "string", True),
                _f("last_name", "string", True),
                _f("birth_date", "date"),
                _f("is_opt_in", "boolean", True),
                _f("is_newsletter_subscribed", "boolean", True),
                _f("lang", "lang", True),
                _f("group_ids", "id_strings"),
                _f("is_active", "boolean", True),
                _f("created_at", "timestamp", True),
                _f("updated_at", "timestamp", True),
            ),
            20,
            ("/v1/customers/bulk-delete", "customer_ids", "customer_id"),
        ),
        _r(
            "newsletter_subscribers",
            "/v1/newsletter-subscribers",
            50,
            ("email",),
            (
                _f("email", "string", True),
                _f("is_subscribed", "boolean", True),
                _f("first_name", "string", True),
                _f("last_name", "string", True),
                _f("postal_code", "string", True),
                _f("lang", "lang", True),
                _f("updated_at", "timestamp", True),
            ),
            20,
            None,
            common=False,
        ),
        _r(
            "customers_addresses",
            "/v1/customers/addresses/bulk",
            50,
            ("address_id",),
            (
                _f("address_id", "id_number", True),
                _f("customer_id", "id_string", True),
                _f("first_name", "string", True),
                _f("last_name", "string", True),
                _f("primary_phone", "string"),
                _f("secondary_phone", "string"),
                _f("company", "string"),
                _f("address_line_1", "string", True),
                _f("address_line_2", "string"),
                _f("postal_code", "string", True),
                _f("city", "string", True),
                _f("country", "string", True),
                _f("is_active", "boolean", True),
            ),
            30,
            (
                "/v1/customers/{customer_id}/addresses/bulk-delete",
                "address_ids",
                "address_id",
            ),
        ),
        _r(
            "products",
            "/v1/products",
            50,
            ("product_id", "lang"),
            (
                _f("product_id", "id_number", True),
                _f("lang", "lang", True),
                _f("name", "string", True),
                _f("reference", "string"),
                _f("ean13", "string"),
                _f("description", "string", True),
                _f("description_short", "string"),
                _f("link", "string", True),
                _f("image_link", "string"),
                _f("category_ids", "id_numbers"),
                _f("manufacturer_id", "id_string"),
                _f("currency", "currency", True),
                _f("price", "money", True),
                _f("price_discount", "money"),
                _f("quantity_remaining", "integer", True),
                _f("is_active", "boolean", True),
                _f("created_at", "timestamp", True),
                _f("updated_at", "timestamp", True),
            ),
            40,
            ("/v1/products/bulk-delete", "product_ids", "product_id"),
        ),
        _r(
            "products_variations",
            "/v1/products/variations/bulk",
            50,
            ("product_id", "variation_id", "lang"),
            (
                _f("variation_id", "id_number", True),
                _f("product_id", "id_string", True),
                _f("name", "string", True),
                _f("lang", "lang", True),
                _f("reference", "string"),
                _f("ean13", "string"),
                _f("link", "string", True),
                _f("image_link", "string"),
                _f("price", "money", True),
                _f("price_discount", "money"),
                _f("quantity_remaining", "integer", True),
                _f("is_default", "boolean", True),
            ),
            50,
            (
                "/v1/products/{product_id}/variations/bulk-delete",
                "variation_ids",
                "variation_id",
            ),
        ),
        _r(
            "products_images",
            "/v1/products/images/bulk",
            50,
            ("product_id", "image_id", "lang"),
            (
                _f("image_id", "id_string", True),
                _f("product_id", "id_string", True),
                _f("lang", "lang", True),
                _f("variation_id", "id_number"),
                _f("url", "string", True),
                _f("is_default", "boolean", True),
            ),
            50,
            ("/v1/products/{product_id}/images/bulk-delete", "image_ids", "image_id"),
        ),
        _r(
            "vouchers",
            "/v1/vouchers",
            50,
            ("voucher_id", "lang"),
            (
                _f("voucher_id", "id_string", True),
                _f("lang", "lang", True),
                _f("code", "string", True),
                _f("description", "string", True),
                _f("started_at", "timestamp", True),
                _f("ended_at", "timestamp"),
                _f("customer_id", "id_string"),
                _f(
                    "type_voucher",
                    "enum",
                    True,
                    choices=("free_shipping", "amount_reduction", "percentage_reduction"),
                ),
                _f("value", "money"),
                _f("minimum_amount", "money", True),
                _f("currency", "currency", True),
                _f("reduction_tax", "boolean", True),
                _f("is_used", "boolean", True),
                _f("is_active", "boolean", True),
                _f("created_at", "timestamp", True),
                _f("updated_at", "timestamp", True),
            ),
            60,
            ("/v1/vouchers/bulk-delete", "voucher_ids", "voucher_id"),
        ),
        _r(
            "orders",
            "/v1/orders",
            50,
            ("order_id",),
            (
                _f("order_id", "id_string", True),
                _f("lang", "lang", True),
                _f("reference", "string"),
                _f("carrier_id", "id_string"),
                _f("status_id", "id_string", True),
                _f("address_delivery_id", "id_string"),
                _f("address_invoice_id", "id_string"),
                _f("customer", "object", True, fields=_CUSTOMER_REF),
                _f("products", "objects", True, fields=_ORDER_LINE),
                _f("cart_id", "id_string", True),
                _f("cart_updated_at", "timestamp", True),
                _f("amount", "money", True),
                _f("amount_without_tax", "money", True),
                _f("shipping_costs", "money", True),
                _f("shipping_costs_without_tax", "money", True),
                _f("shipping_number", "string"),
                _f("currency", "currency", True),
                _f("voucher_used", "string"),
                _f("voucher_value", "money_string"),
                _f("is_confirmed", "boolean", True),
                _f("created_at", "timestamp", True),
                _f("updated_at", "timestamp", True),
            ),
            70,
            ("/v1/orders/bulk-delete", "order_ids", "order_id"),
        ),
        _r(
            "carts",
            "/v1/carts",
            50,
            ("cart_id",),
            (
                _f("cart_id", "id_string", True),
                _f(
                    "customer",
                    "object",
                    False,
                    fields=(
                        _f("customer_id", "id_string", True),
                        _f("email", "string", True),
                    ),
                ),
                _f("products", "objects", True, fields=_ORDER_LINE),
                _f("amount", "money", True),
                _f("currency", "currency", True),
                _f("lang", "lang", True),
                _f("order_id", "id_string"),
                _f("created_at", "timestamp", True),
                _f("updated_at", "timestamp", True),
            ),
            80,
            None,
        ),
    )
}


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
